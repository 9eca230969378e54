"""Evolution strategies over PPO objectives: the fitness of a population is one complete PPO
training per member (× seeds), all vmapped into one compiled program per environment.

The population axis is just the run axis of :class:`purejaxrl.trainer.Trainer`: member ``m`` and
seed ``s`` are run ``m · S + s``, whose traced ``hp["objective"]`` holds member ``m``'s parameters;
with ``mesh.devices`` that axis is split over devices like any other run axis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from purejaxrl import objectives
from purejaxrl.config import run_grid
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm


def make_strategy(es_cfg: dict, solution):
    """The evosax strategy ``es.strategy`` over pytrees shaped like ``solution`` (it minimises:
    pass −fitness).  OpenAI-ES gets Adam with an exponentially decayed learning rate, a decayed σ
    and antithetic sampling; centred-rank fitness shaping is evosax's default for it."""
    from evosax import algorithms

    name = es_cfg["strategy"]
    cls = getattr(algorithms, name)
    lr = _decay(es_cfg["lr_init"], es_cfg["lr_decay"], es_cfg["lr_limit"])
    sigma = _decay(es_cfg["sigma_init"], es_cfg["sigma_decay"], es_cfg["sigma_limit"])
    if name == "Open_ES":
        return cls(es_cfg["population"], solution, use_antithetic_sampling=bool(es_cfg["antithetic"]),
                   optimizer=optax.adam(lr), std_schedule=sigma)
    try:  # other distribution-based strategies: their defaults, our σ when they take one
        return cls(es_cfg["population"], solution, std_schedule=sigma)
    except TypeError:
        return cls(es_cfg["population"], solution)


def _decay(init: float, rate: float, limit: float):
    """``max(init · rate^t, limit)``, constant when ``rate == 1`` (optax reads ``end_value`` as an
    upper bound for rates ≥ 1)."""
    if rate >= 1.0:
        return optax.constant_schedule(init)
    return optax.exponential_decay(init, 1, rate, end_value=limit)


@dataclass
class EnvFitness:
    """One inner environment: its compiled population trainer and its normalisation baselines."""

    name: str
    algo: object
    trainer: Trainer
    base_hp: dict
    cfg: dict
    r_untrained: float | None = None
    r_clip: float | None = None


class PopulationFitness:
    """``fitness(population, key) -> [P]``: the final greedy return of PPO trained with each member's
    objective, averaged over ``seeds_per_member`` seeds (the same seeds for every member), and over
    environments (each normalised to 0 = untrained, 1 = PPO-clip when ``normalize_fitness``)."""

    def __init__(self, cfg: dict, objective: objectives.Objective, mesh=None):
        es = cfg["es"]
        self.population = int(es["population"])
        self.seeds = int(es["seeds_per_member"])
        self.normalize = bool(es["normalize_fitness"])
        self.objective = objective
        names = es.get("envs") or [cfg["env"]["name"]]
        self.envs = []
        runs = self.population * self.seeds
        for name in names:
            env_cfg = cfg["env"] if name == cfg["env"]["name"] else {"name": name, "kwargs": {}}
            inner = {**cfg, "env": env_cfg, "num_seeds": 1, "vmap": {}, "algo": {**cfg["algo"], "num_evals": 1}}
            algo = build_algorithm(inner, objective=objective)
            _, hp, _ = run_grid(inner, algo.HPARAMS)
            self.envs.append(EnvFitness(name, algo, Trainer(algo, runs, chunks=1, num_evals=1, mesh=mesh), hp, inner))
        self.inner_env_steps = sum(e.algo.num_updates * e.algo.steps_per_update for e in self.envs) * runs
        self.seconds = 0.0

    def _hparams(self, env: EnvFitness, population) -> dict:
        runs = self.population * self.seeds
        hp = {k: np.repeat(v, runs) for k, v in env.base_hp.items()}
        hp = batch_hparams(env.algo, hp, runs)
        hp["objective"] = jax.tree.map(lambda x: jnp.repeat(x, self.seeds, axis=0), population)
        return hp

    def returns(self, env: EnvFitness, population, key: jax.Array) -> np.ndarray:
        """Final greedy returns ``[P, S]`` of one env."""
        hp = self._hparams(env, population)
        seed_keys = jax.random.split(key, self.seeds)
        keys = jnp.tile(seed_keys, (self.population, 1))  # run m·S + s: member m, seed s
        state = env.trainer.init(keys, hp)
        _, metrics, finite = env.trainer.chunk(state, hp, 0, with_finite=True)
        r = np.where(finite, metrics["eval_return"][:, -1], np.nan)  # a diverged member ranks worst
        return r.reshape(self.population, self.seeds)

    def baselines(self, key: jax.Array) -> None:
        """PPO-clip's and the untrained policy's (lr = 0) mean final returns per env over
        ``seeds_per_member`` seeds: the 0 and 1 of the normalised fitness."""
        from purejaxrl.errors import ConfigError

        seeds = max(self.seeds, 4)
        for i, env in enumerate(self.envs):
            algo = build_algorithm(env.cfg, objective=objectives.BUILTIN["clip"])
            tr = Trainer(algo, seeds, chunks=1, num_evals=1)
            keys = jax.random.split(jax.random.fold_in(key, i), seeds)
            out = []
            for lr_scale in (1.0, 0.0):
                hp = {k: np.repeat(v, seeds) * (lr_scale if k == "lr" else 1.0) for k, v in env.base_hp.items()}
                _, m = tr.chunk(tr.init(keys, hp), hp, 0)
                out.append(float(m["eval_return"][:, -1].mean()))
            env.r_clip, env.r_untrained = out
            if not env.r_clip - env.r_untrained > 1e-3 * max(abs(env.r_clip), abs(env.r_untrained), 1.0):
                raise ConfigError(
                    f"es.normalize_fitness: on {env.name} PPO-clip ({env.r_clip:.2f}) does not beat the untrained "
                    f"policy ({env.r_untrained:.2f}) at this budget, so its normalised fitness is meaningless; "
                    "raise algo.total_timesteps or drop that env from es.envs")

    def __call__(self, population, key: jax.Array) -> tuple[np.ndarray, dict]:
        t = time.perf_counter()
        per_env, total = {}, np.zeros(self.population)
        for i, env in enumerate(self.envs):
            r = self.returns(env, population, jax.random.fold_in(key, i)).mean(1)
            per_env[env.name] = r
            if self.normalize:
                r = (r - env.r_untrained) / (env.r_clip - env.r_untrained)
            total += r / len(self.envs)
        self.seconds = time.perf_counter() - t
        return total, per_env
