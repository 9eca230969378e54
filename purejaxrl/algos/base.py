"""The contract between an algorithm and the shared training loop."""

from __future__ import annotations

import abc
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import envs as _envs
from purejaxrl import schedules

Params = dict[str, jax.Array]  # traced hyperparameters, one scalar each


class Algorithm(abc.ABC):
    """One RL algorithm as pure functions of (state, hyperparameters).

    * ``HPARAMS``: the continuous hyperparameters, passed as traced scalars in ``hp`` so that a list
      of values vmaps in one compile.  Everything else in the config is static (shapes, counts).
    * ``init(key, hp) -> state`` and ``update(state, hp, i) -> (state, metrics)`` (one update; ``i``
      the update index, an unbatched traced int) are what the trainer scans over.
    * ``greedy_action(state, obs)`` acts for evaluation; :meth:`evaluate` runs greedy episodes.
    """

    name: str = "algorithm"
    HPARAMS: tuple[str, ...] = ()
    NETWORK_DEFAULTS: dict[str, Any] = {}

    def __init__(self, algo_cfg: dict, env_cfg: dict, network_cfg: dict):
        self.cfg = dict(algo_cfg)
        self.env = _envs.make(env_cfg["name"], **dict(env_cfg.get("kwargs") or {}))
        self.num_envs = int(self.cfg["num_envs"])
        self.num_steps = int(self.cfg["num_steps"])
        self.steps_per_update = self.num_envs * self.num_steps
        self.num_updates = int(self.cfg["total_timesteps"]) // self.steps_per_update
        decay = self.cfg.get("total_timesteps_decay") or self.cfg["total_timesteps"]
        self.num_updates_decay = max(int(decay) // self.steps_per_update, 1)
        self.num_eval_envs = int(self.cfg.get("num_eval_envs", 16))

    # ---- config checks (run before anything is compiled) ----
    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        """Problems with a config, each one line naming the fix."""
        errs = []
        for key in ("num_envs", "num_steps", "num_epochs", "num_minibatches", "total_timesteps"):
            if key in cfg and int(cfg[key]) < 1:
                errs.append(f"algo.{key}={cfg[key]} must be >= 1")
        if errs:
            return errs
        batch = int(cfg["num_envs"]) * int(cfg["num_steps"])
        if batch % int(cfg["num_minibatches"]):
            divisors = [d for d in range(1, min(batch, 256) + 1) if batch % d == 0]
            errs.append(
                f"algo.num_minibatches={cfg['num_minibatches']} does not divide the batch "
                f"num_envs*num_steps={batch}; use one of {divisors[-8:]} or change num_envs/num_steps"
            )
        if int(cfg["total_timesteps"]) < batch:
            errs.append(
                f"algo.total_timesteps={cfg['total_timesteps']} is smaller than one update "
                f"(num_envs*num_steps={batch}); raise total_timesteps"
            )
        return errs

    # ---- the functions the trainer composes ----
    @abc.abstractmethod
    def init(self, key: jax.Array, hp: Params) -> Any:
        """Fresh training state for one run."""

    @abc.abstractmethod
    def update(self, state: Any, hp: Params, i: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        """One rollout + learning update; returns scalar metrics."""

    @abc.abstractmethod
    def greedy_action(self, state: Any, obs: jax.Array) -> jax.Array:
        """The deterministic action of the current policy, for evaluation."""

    def eval_key(self, state: Any) -> jax.Array:
        return state.rng

    def evaluate(self, state: Any, hp: Params, i: jax.Array) -> dict[str, jax.Array]:
        """Mean return of one greedy episode in each of ``num_eval_envs`` fresh environments."""
        key = jax.random.fold_in(self.eval_key(state), i)
        return {"eval_return": greedy_episode_returns(
            self.env, lambda obs: self.greedy_action(state, obs), key, self.num_eval_envs
        ).mean()}

    # ---- helpers shared by subclasses ----
    def make_optimizer(self, hp: Params, grad_steps_per_update: int, base: Callable[..., Any]):
        """``clip_by_global_norm(max_grad_norm) → base(lr)`` with an optionally linearly decayed,
        traced learning rate."""
        total = grad_steps_per_update * self.num_updates_decay
        if self.cfg.get("lr_linear_decay", True):
            lr = lambda count: schedules.linear_decay(hp["lr"], total, count)  # noqa: E731
        else:
            lr = hp["lr"]
        return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), base(learning_rate=lr))


def episode_fields(info: dict) -> dict[str, jax.Array]:
    """The per-step episode statistics worth keeping from a rollout (not the observations)."""
    return {k: info[k] for k in ("episode_return", "episode_length", "episode_done")}


def episode_metrics(info: dict) -> dict[str, jax.Array]:
    """Mean return/length of the episodes that ended inside a rollout (NaN if none did)."""
    done = info["episode_done"]
    n = done.sum()
    safe = jnp.maximum(n, 1)
    nan = jnp.float32(jnp.nan)
    return {
        "episode_return": jnp.where(n > 0, jnp.sum(info["episode_return"] * done) / safe, nan),
        "episode_length": jnp.where(n > 0, jnp.sum(info["episode_length"] * done) / safe, nan),
        "episodes": n.astype(jnp.float32),
    }


def greedy_episode_returns(env, act: Callable, key: jax.Array, num_envs: int) -> jax.Array:
    """Return of the first episode of each of ``num_envs`` environments under ``act``.

    Stops as soon as every environment has finished one episode (at most the time limit).
    """
    venv = _envs.EpisodeStats(_envs.VecEnv(env, num_envs))
    k_reset, key = jax.random.split(key)
    obs, st = venv.reset(k_reset)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    carry = (obs, st, key, jnp.int32(0), jnp.zeros((num_envs,), bool), zeros)

    def cond(c):
        return jnp.logical_and(c[3] < env.max_episode_steps, jnp.logical_not(jnp.all(c[4])))

    def body(c):
        obs, st, key, t, done_once, ret = c
        key, k = jax.random.split(key)
        obs, st, _, _, _, info = venv.step(k, st, act(obs))
        first = jnp.logical_and(info["episode_done"], jnp.logical_not(done_once))
        ret = jnp.where(first, info["episode_return"], ret)
        return obs, st, key, t + 1, jnp.logical_or(done_once, info["episode_done"]), ret

    _, st, _, _, done_once, ret = jax.lax.while_loop(cond, body, carry)
    return jnp.where(done_once, ret, st.episode_return)
