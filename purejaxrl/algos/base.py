"""The contract between an algorithm and the shared training loop."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import envs as _envs
from purejaxrl import evalkeys, schedules

Params = dict[str, Any]  # traced hyperparameters: scalars, or pytrees (e.g. an objective's weights)

INF = float("inf")


class Algorithm(abc.ABC):
    """One RL algorithm as pure functions of (state, hyperparameters).

    * ``HPARAMS``: the continuous hyperparameters, passed as traced scalars in ``hp`` so that a list
      of values vmaps in one compile; ``HPARAM_BOUNDS`` their valid ranges (checked for config and
      vmapped values before compiling).  :meth:`extra_hparams` adds pytree-valued ones (an
      objective's parameters).  Everything else in the config is static (shapes, counts).
    * ``init(key, hp, data)`` and ``update(state, hp, i, data) -> (state, metrics)`` (one update;
      ``i`` the update index, an unbatched traced int) are what the trainer scans over.  ``data`` is
      what :meth:`load_data` returned (``None`` for algorithms that collect their own experience):
      an offline dataset enters the compiled program as an argument, shared by every vmapped run,
      never as a constant baked into it.  A replay buffer lives in the state.
    * ``greedy_action(state, obs)`` acts for evaluation; :meth:`evaluate` runs greedy episodes in
      the same env stack as training (:meth:`make_venv`).
    * ``unit`` names what ``units_per_update`` counts for progress bars and logs: env steps
      (``"step"``) for online algorithms, gradient steps (``"update"``) for offline ones.
    """

    name: str = "algorithm"
    HPARAMS: tuple[str, ...] = ()
    HPARAM_BOUNDS: dict[str, tuple[float, float, bool]] = {}  # name -> (low, high, low is exclusive)
    NETWORK_DEFAULTS: dict[str, Any] = {}
    MULTI_TASK = False  # whether env.kwargs.task=all (one run per task) is supported
    DISCRETE_ONLY = False
    HOST_ENVS = False  # can train with an env stepped on the host (OGBench's MuJoCo tasks): offline algorithms
    unit = "step"
    host_eval = False  # True: evaluated between chunks on the host (host_evaluate), chunks end at evaluations

    def __init__(self, algo_cfg: dict, env_cfg: dict, network_cfg: dict):
        self.cfg = dict(algo_cfg)
        self.env = _envs.make(env_cfg["name"], **dict(env_cfg.get("kwargs") or {}))
        self.num_eval_envs = int(self.cfg.get("num_eval_envs", 16))
        self.num_updates = 1
        self.units_per_update = 1

    # ---- config checks (run before anything is compiled) ----
    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        """Problems with an algorithm config, each one line naming the fix."""
        return [e for k in cls.HPARAMS if k in cfg for e in cls.hparam_errors(f"algo.{k}", k, [cfg[k]])]

    @classmethod
    def hparam_errors(cls, label: str, name: str, values) -> list[str]:
        """Values of hyperparameter ``name`` outside ``HPARAM_BOUNDS`` (or not finite)."""
        lo, hi, strict = cls.HPARAM_BOUNDS.get(name, (-INF, INF, False))
        bad = [v for v in values if not math.isfinite(float(v)) or float(v) > hi or float(v) < lo or (strict and float(v) == lo)]
        if not bad:
            return []
        rng = f"{'(' if strict else '['}{lo:g}, {hi:g}{']' if hi < INF else ')'}"
        return [f"{label}={bad[0]!r} is outside its valid range {rng}; choose a value in it"]

    @classmethod
    def env_errors(cls, env) -> list[str]:
        """Problems with running this algorithm on ``env`` (e.g. a continuous action space)."""
        if getattr(env, "host", False) and not cls.HOST_ENVS:
            return [f"{env.name} is a MuJoCo env stepped on the host, for offline algorithms (algo=qgf, algo=fql) that "
                    f"train from its dataset; algo={cls.name} needs a JAX env (e.g. env=pendulum, env=brax_hopper)"]
        if cls.DISCRETE_ONLY and not isinstance(env.action_space, _envs.Discrete):
            return [f"algo={cls.name} needs discrete actions; {env.name} has {env.action_space}. Use algo=ppo or a discrete env"]
        if len(getattr(env.unwrapped, "tasks", None) or ()) > 1 and not cls.MULTI_TASK:
            return [f"env.kwargs.task=all (one run per task) is for the offline algorithms (algo=qgf, algo=fql); "
                    f"algo={cls.name} trains on one task: set env.kwargs.task to 1-5"]
        return []

    # ---- inputs besides the config ----
    def extra_hparams(self) -> dict[str, Any]:
        """Pytree-valued traced hyperparameters (added to ``hp`` and broadcast over runs)."""
        return {}

    def load_data(self) -> Any:
        """The dataset an offline algorithm trains from (passed to ``init``/``update``), or None."""
        return None

    # ---- the functions the trainer composes ----
    @abc.abstractmethod
    def init(self, key: jax.Array, hp: Params, data: Any = None) -> Any:
        """Fresh training state for one run."""

    @abc.abstractmethod
    def update(self, state: Any, hp: Params, i: jax.Array, data: Any = None) -> tuple[Any, dict[str, jax.Array]]:
        """One learning update; returns scalar metrics."""

    @abc.abstractmethod
    def greedy_action(self, state: Any, obs: jax.Array) -> jax.Array:
        """The deterministic action of the current policy, for evaluation."""

    def params(self, state: Any) -> Any:
        """The learned parameters (checked for NaN/inf after every chunk)."""
        return state.params

    def eval_key(self, state: Any) -> jax.Array:
        """The run's evaluation base key (:mod:`purejaxrl.evalkeys`): set at ``init`` from the run's
        seed key alone, so seeds are evaluated on independent episodes and arms on one seed on the
        same ones."""
        if not hasattr(state, "eval_rng"):
            raise TypeError(f"{type(state).__name__} has no eval_rng field: an algorithm's state keeps "
                            "eval_rng=purejaxrl.evalkeys.run_key(key) from init (or overrides eval_key)")
        return state.eval_rng

    def progress_key(self, state: Any, i: jax.Array) -> jax.Array:
        """The key of the greedy test after update ``i`` (the final one shared by every budget)."""
        return evalkeys.progress(self.eval_key(state), i, self.num_updates)

    def make_venv(self, num_envs: int, hp: Params, evaluation: bool = False):
        """The env stack for training and (``evaluation=True``) for greedy evaluation: the same
        wrappers, so both step the env with the same actions; reward normalisation, which only
        shapes the learning signal, is left out of evaluation (returns are raw either way)."""
        normalize = bool(self.cfg.get("normalize_reward", False)) and not evaluation
        env = self.env.for_evaluation() if evaluation else self.env  # no training-only domain randomisation
        return _envs.make_stack(env, num_envs, normalize_reward=normalize, gamma=hp.get("gamma", 0.99))

    def grid_axes(self) -> dict[str, list]:
        """Run axes this algorithm adds to the run grid from settings outside ``vmap`` (traced, in
        ``hp`` like hyperparameters): default none."""
        return {}

    # ---- what the host loop asks of an algorithm (defaults: nothing beyond the compiled program) ----
    def host_evaluate(self, state: Any, batched: bool, update: int, hparams: Params | None = None) -> dict[str, Any]:
        """Evaluations made on the host after the chunk that ends at ``update`` (envs that are not
        JAX programs): ``{metric: [runs]}``; ``hparams``: the runs' traced values (``[runs]`` each).
        Default: none (``evaluate`` runs inside the program)."""
        return {}

    def host_evaluation_keys(self) -> list[str]:
        """The metrics :meth:`host_evaluate` returns (logged as NaN after chunks that end between
        evaluations, so that every log has their columns)."""
        return []

    def evaluation_label(self, num_runs: int = 1) -> str:
        """What the progress bar says while :meth:`host_evaluate` runs (for ``num_runs`` runs)."""
        return "evaluating"

    def scale_errors(self, process_count: int) -> list[str]:
        """Problems with running this algorithm across ``process_count`` processes (one line each)."""
        return []

    def summary_fields(self, updates: int, evaluations: int, num_runs: int, run_seconds: float) -> dict[str, Any]:
        """Keys the summary adds or replaces for this algorithm: an offline one (``unit == "update"``)
        counts gradient steps, not env steps."""
        if self.unit != "update":
            return {}
        return {"env_steps": 0, "total_env_steps": 0, "env_steps_per_second": None, "gradient_steps": updates,
                "gradient_steps_per_second": updates * num_runs / run_seconds if run_seconds > 0 else None,
                "evaluation_episodes_per_run": evaluations * self.episodes_per_evaluation}

    @property
    def episodes_per_evaluation(self) -> int:
        """Episodes one :meth:`evaluate` call runs (for the summary)."""
        return self.num_eval_envs

    def evaluate(self, state: Any, hp: Params, i: jax.Array) -> dict[str, jax.Array]:
        """Mean return of one greedy episode in each of ``num_eval_envs`` fresh environments."""
        key = self.progress_key(state, i)
        return {"eval_return": self.greedy_returns(state, hp, key, self.num_eval_envs).mean()}

    def greedy_returns(self, state: Any, hp: Params, key: jax.Array, num_envs: int) -> jax.Array:
        venv = self.make_venv(num_envs, hp, evaluation=True)
        return greedy_episode_returns(venv, lambda obs: self.greedy_action(state, obs), key)

    # ---- helpers shared by subclasses ----
    def make_optimizer(self, hp: Params, grad_steps_per_update: int, base: Callable[..., Any]):
        """``clip_by_global_norm(max_grad_norm) → base(lr)`` with an optionally linearly decayed,
        traced learning rate (decayed over ``num_updates_decay`` updates)."""
        total = grad_steps_per_update * getattr(self, "num_updates_decay", self.num_updates)
        if self.cfg.get("lr_linear_decay", True):
            lr = lambda count: schedules.linear_decay(hp["lr"], total, count)  # noqa: E731
        else:
            lr = hp["lr"]
        return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), base(learning_rate=lr))


class RolloutAlgorithm(Algorithm):
    """An on-policy algorithm: each update rolls out ``num_steps`` × ``num_envs`` env steps
    (:func:`purejaxrl.rollout.rollout`) and learns from them with ``num_epochs`` ×
    ``num_minibatches`` SGD steps (:func:`purejaxrl.rollout.minibatch_sgd`)."""

    def __init__(self, algo_cfg: dict, env_cfg: dict, network_cfg: dict):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        self.num_envs = int(self.cfg["num_envs"])
        self.num_steps = int(self.cfg["num_steps"])
        self.num_epochs = int(self.cfg["num_epochs"])
        self.num_minibatches = int(self.cfg["num_minibatches"])
        self.steps_per_update = self.units_per_update = self.num_envs * self.num_steps
        self.num_updates = int(self.cfg["total_timesteps"]) // self.steps_per_update
        decay = self.cfg.get("total_timesteps_decay") or self.cfg["total_timesteps"]
        self.num_updates_decay = max(int(decay) // self.steps_per_update, 1)

    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        errs = []
        for key in ("num_envs", "num_steps", "num_epochs", "num_minibatches", "total_timesteps", "num_eval_envs", "num_evals"):
            if key in cfg and int(cfg[key]) < 1:
                errs.append(f"algo.{key}={cfg[key]} must be >= 1")
        if cfg.get("total_timesteps_decay") is not None and int(cfg["total_timesteps_decay"]) < 1:
            errs.append(f"algo.total_timesteps_decay={cfg['total_timesteps_decay']} must be null or >= 1")
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
        return errs + super().config_errors(cfg)


def greedy_episode_returns(venv, act: Callable, key: jax.Array, prepare: Callable | None = None) -> jax.Array:
    """Return of the first episode of each env of ``venv`` (a :func:`envs.make_stack` stack) under
    ``act``.  Stops as soon as every environment has finished one episode (at most the time limit).
    ``prepare(state) -> state`` changes the freshly reset stack first (e.g. per-env physics), or
    ``-> (obs, state)`` when the change also changes the first observation (e.g. another level).
    """
    k_reset, key = jax.random.split(key)
    obs, st = venv.reset(k_reset)
    if prepare is not None:
        res = prepare(st)
        obs, st = res if isinstance(res, tuple) else (obs, res)
    num_envs = obs.shape[0]
    zeros = jnp.zeros((num_envs,), jnp.float32)
    carry = (obs, st, key, jnp.int32(0), jnp.zeros((num_envs,), bool), zeros)

    def cond(c):
        return jnp.logical_and(c[3] < venv.max_episode_steps, jnp.logical_not(jnp.all(c[4])))

    def body(c):
        obs, st, key, t, done_once, ret = c
        key, k = jax.random.split(key)
        obs, st, _, _, _, info = venv.step(k, st, act(obs))
        first = jnp.logical_and(info["episode_done"], jnp.logical_not(done_once))
        ret = jnp.where(first, info["episode_return"], ret)
        return obs, st, key, t + 1, jnp.logical_or(done_once, info["episode_done"]), ret

    _, st, _, _, done_once, ret = jax.lax.while_loop(cond, body, carry)
    return jnp.where(done_once, ret, _episode_stats_state(st).episode_return)


def _episode_stats_state(state):
    """The :class:`envs.wrappers.EpisodeStatsState` inside a stack's state."""
    while not hasattr(state, "episode_return"):
        state = state.env_state
    return state
