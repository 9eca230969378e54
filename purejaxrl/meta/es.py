"""Evolution strategies over PPO objectives and LPG update rules: the fitness of a population is one
complete training per member (× seeds), all vmapped into one compiled program per environment.

The population axis is just the run axis of :class:`purejaxrl.trainer.Trainer`: member ``m`` and
seed ``s`` are run ``m · S + s``, whose traced ``hp["objective"]`` (``hp["update_rule"]``) holds
member ``m``'s parameters; with ``mesh.devices`` that axis is split over devices like any other run
axis.  ``es.tasks`` says which seeds (and so which grid-world levels and lifetimes) the runs get:
``shared``, the same ``seeds_per_member`` seeds for every member, or ``per_pair``, one draw per
antithetic pair (members m and m + P/2, evosax's ±ε), as TA-LPG's reference samples tasks.
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

FITNESS_KINDS = ("greedy", "training")
SHAPINGS = ("centered_rank", "z_score", "pairwise")
TASKS = ("shared", "per_pair")


def pairwise_shaping(population, fitness, state, params):
    """Within each antithetic pair (members i and i + P/2): the better one −½, the worse +½ (evosax
    minimises ``fitness``), a tie 0 each; a NaN (diverged) member loses.  Returns on different tasks
    are never compared, only the two members that shared one (TA-LPG's reference: winner 1, loser 0,
    which gives the same ES gradient since the pair's noises are ±ε)."""
    del population, state, params
    half = fitness.shape[0] // 2
    f = jnp.where(jnp.isfinite(fitness), fitness, jnp.inf)
    a, b = f[:half], f[half:]
    s = jnp.where(a < b, -0.5, jnp.where(a > b, 0.5, 0.0))
    return jnp.concatenate([s, -s])


def z_score_shaping(population, fitness, state, params):
    """``(f − mean) / std`` over the population (evosax minimises, so a NaN — a diverged member —
    is first set to the worst finite value: it ranks last, as under centred ranks)."""
    del population, state, params
    finite = jnp.isfinite(fitness)
    worst = jnp.max(jnp.where(finite, fitness, -jnp.inf))
    f = jnp.where(finite, fitness, worst)
    z = (f - f.mean()) / (f.std() + 1e-8)
    return jnp.where(jnp.any(finite), z, jnp.zeros_like(fitness))  # nothing finite: no step


def make_strategy(es_cfg: dict, solution):
    """The evosax strategy ``es.strategy`` over pytrees shaped like ``solution`` (it minimises:
    pass −fitness).  OpenAI-ES gets Adam with an exponentially decayed learning rate, a decayed σ,
    antithetic sampling and ``es.fitness_shaping`` (centred ranks, the references' choice, or z-scores)."""
    from evosax import algorithms
    from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn

    name = es_cfg["strategy"]
    cls = getattr(algorithms, name)
    lr = _decay(es_cfg["lr_init"], es_cfg["lr_decay"], es_cfg["lr_limit"])
    sigma = _decay(es_cfg["sigma_init"], es_cfg["sigma_decay"], es_cfg["sigma_limit"])
    shaping = {"centered_rank": centered_rank_fitness_shaping_fn, "z_score": z_score_shaping,
               "pairwise": pairwise_shaping}[
        es_cfg.get("fitness_shaping", "centered_rank")]
    if name == "Open_ES":
        return cls(es_cfg["population"], solution, use_antithetic_sampling=bool(es_cfg["antithetic"]),
                   optimizer=optax.adam(lr), std_schedule=sigma, fitness_shaping_fn=shaping)
    try:  # other distribution-based strategies: their defaults, our σ and shaping when they take them
        return cls(es_cfg["population"], solution, std_schedule=sigma, fitness_shaping_fn=shaping)
    except TypeError:
        return cls(es_cfg["population"], solution)


def training_return(metrics: dict, fraction: float = 0.1) -> np.ndarray:
    """Per run, the mean return of the training episodes (the stochastic policy's) that ended in the
    last ``fraction`` of updates (at least the last update); where none ended there, the episodes of
    the last update in which any did (NaN if none ever did).  LPO's fitness on gymnax is the final
    training return; its wrapper holds each env's last finished return, which this reads the same way
    whenever an episode ends near the end of training."""
    ret = np.nan_to_num(np.asarray(metrics["episode_return"], float))
    eps = np.asarray(metrics["episodes"], float)
    n = ret.shape[1]
    w = max(1, int(round(n * fraction)))
    tot, cnt = (ret * eps)[:, -w:].sum(1), eps[:, -w:].sum(1)
    out = np.full(ret.shape[0], np.nan)
    for i in range(ret.shape[0]):
        if cnt[i] > 0:
            out[i] = tot[i] / cnt[i]
        elif (eps[i] > 0).any():
            j = np.nonzero(eps[i] > 0)[0][-1]
            out[i] = ret[i, j]  # the mean return of that update's episodes
    return out


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
    """``fitness(population, key) -> [P]``: the final return of PPO (LPG) trained with each member's
    objective (update rule) — greedy (``es.fitness=greedy``) or the stochastic policy's training return
    (``training``, LPO's) — averaged over ``seeds_per_member`` seeds (``es.tasks``: the same seeds for
    every member, or per antithetic pair), and over environments (each normalised to 0 = untrained,
    1 = PPO-clip when ``normalize_fitness``)."""

    def __init__(self, cfg: dict, evolved, mesh=None):
        from purejaxrl.meta.evolved import Evolved, from_objective

        es = cfg["es"]
        self.population = int(es["population"])
        self.seeds = int(es["seeds_per_member"])
        self.normalize = bool(es["normalize_fitness"])
        self.kind = es.get("fitness", "greedy")
        self.tasks = es.get("tasks", "shared")
        self.evolved = evolved if isinstance(evolved, Evolved) else from_objective(evolved)
        names = es.get("envs") or [cfg["env"]["name"]]
        self.envs = []
        runs = self.population * self.seeds
        for name in names:
            env_cfg = cfg["env"] if name == cfg["env"]["name"] else {"name": name, "kwargs": {}}
            inner = {**cfg, "env": env_cfg, "num_seeds": 1, "vmap": {}, "algo": {**cfg["algo"], "num_evals": 1}}
            algo = build_algorithm(inner, **self.evolved.algo_kwargs())
            _, hp, _ = run_grid(inner, algo.HPARAMS)
            self.envs.append(EnvFitness(name, algo, Trainer(algo, runs, chunks=1, num_evals=1, mesh=mesh), hp, inner))
        self.inner_env_steps = sum(e.algo.num_updates * e.algo.steps_per_update for e in self.envs) * runs
        self.work = ("inner_env_steps", self.inner_env_steps)  # what one generation computes (the summary's throughput)
        self.seconds = 0.0
        self._eval_trainers: dict[str, Trainer] = {}

    def _hparams(self, env: EnvFitness, population) -> dict:
        runs = self.population * self.seeds
        hp = {k: np.repeat(v, runs) for k, v in env.base_hp.items()}
        hp = batch_hparams(env.algo, hp, runs)
        hp[self.evolved.hp_key] = jax.tree.map(lambda x: jnp.repeat(x, self.seeds, axis=0), population)
        return hp

    def run_keys(self, key: jax.Array) -> jax.Array:
        """Run ``m · S + s``'s key: seed ``s`` of the generation (``shared``), or of member m's antithetic
        pair (``per_pair``: members m and m + P/2 share their seeds, so their level and lifetime)."""
        seed_keys = jax.random.split(key, self.seeds)
        if self.tasks == "shared":
            return jnp.tile(seed_keys, (self.population, 1))
        pair = jnp.arange(self.population) % (self.population // 2)
        keys = jax.vmap(lambda p: jax.vmap(jax.random.fold_in, (0, None))(seed_keys, p))(pair)  # [P, S, ...]
        return keys.reshape((-1,) + seed_keys.shape[1:])

    def score(self, metrics: dict, finite: np.ndarray) -> np.ndarray:
        """Per run: the final greedy return or the final training return (``es.fitness``); NaN for a
        run whose parameters diverged (it ranks worst)."""
        r = metrics["eval_return"][:, -1] if self.kind == "greedy" else training_return(metrics)
        return np.where(finite, r, np.nan)

    def returns(self, env: EnvFitness, population, key: jax.Array) -> np.ndarray:
        """Final returns ``[P, S]`` of one env (``es.fitness``)."""
        hp = self._hparams(env, population)
        state = env.trainer.init(self.run_keys(key), hp)
        _, metrics, finite = env.trainer.chunk(state, hp, 0, with_finite=True)
        return self.score(metrics, finite).reshape(self.population, self.seeds)

    def held_out(self, params, key: jax.Array, seeds: int) -> tuple[float, dict, dict]:
        """The ES mean ``params`` trained on ``seeds`` held-out seeds per env (keys from ``key``, a
        stream the ES never draws from): ``(fitness, {env: fitness}, {env: per-seed greedy returns})``,
        the fitness as the ES scores its members (normalised when ``normalize_fitness``)."""
        total, per_env, greedy = 0.0, {}, {}
        for i, env in enumerate(self.envs):
            if env.name not in self._eval_trainers:
                self._eval_trainers[env.name] = Trainer(env.algo, seeds, chunks=1, num_evals=1)
            tr = self._eval_trainers[env.name]
            hp = batch_hparams(env.algo, {k: np.repeat(v, seeds) for k, v in env.base_hp.items()}, seeds)
            hp[self.evolved.hp_key] = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], seeds, axis=0), params)
            keys = jax.random.split(jax.random.fold_in(key, i), seeds)
            _, metrics, finite = tr.chunk(tr.init(keys, hp), hp, 0, with_finite=True)
            per_seed = self.score(metrics, finite)
            # a seed that diverged (or ended no episode to score) makes the evaluation NaN: such a mean is
            # never selected, as a diverged member ranks last in the ES
            r = float(np.mean(per_seed)) if np.isfinite(per_seed).all() else float("nan")
            per_env[env.name] = r
            greedy[env.name] = [float(x) for x in np.where(finite, metrics["eval_return"][:, -1], np.nan)]
            if self.normalize:
                r = (r - env.r_untrained) / (env.r_clip - env.r_untrained)
            total += r / len(self.envs)
        return total, per_env, greedy

    def baselines(self, key: jax.Array) -> None:
        """PPO-clip's and the untrained policy's (lr = 0) mean final returns (``es.fitness``) per env
        over ``seeds_per_member`` seeds (at least 4): the 0 and 1 of the normalised fitness."""
        from purejaxrl.errors import ConfigError

        seeds = max(self.seeds, 4)
        for i, env in enumerate(self.envs):
            algo = build_algorithm(env.cfg, objective=objectives.BUILTIN["clip"])
            tr = Trainer(algo, seeds, chunks=1, num_evals=1)
            keys = jax.random.split(jax.random.fold_in(key, i), seeds)
            out = []
            for lr_scale in (1.0, 0.0):
                hp = {k: np.repeat(v, seeds) * (lr_scale if k == "lr" else 1.0) for k, v in env.base_hp.items()}
                _, m, finite = tr.chunk(tr.init(keys, hp), hp, 0, with_finite=True)
                out.append(float(np.nanmean(self.score(m, finite))))
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
