"""QGF (test-time Q-gradient guidance of a behaviour-cloned flow policy) and FQL, offline.

Training (``QGF.update``, one gradient step on a minibatch of the dataset, three Adam optimisers):

1. flow actor by flow matching: ``a_t = (1 − t)·a₀ + t·a₁``, ``a₀ ~ N(0, I)``, ``a₁`` the dataset
   action chunk, ``t`` on the grid ``{0, 1/T, …, 1}``; loss ``‖v_θ(s, a_t, t) − (a₁ − a₀)‖²``;
2. IQL critic: ``L_V = E[|τ_e − 1(u < 0)|·u²]``, ``u = agg_i Q̄_i(s, a) − V(s)`` (``q_agg``: min, or
   mean); ``L_Q = mean_i E[(Q_i(s, a) − (R_H + γ^H·m·V(s')))²]``; Polyak target
   ``Q̄ ← (1 − τ)Q̄ + τQ`` with the critic before this step's update (as the references).

Per-network learning rates (``actor_lr``, ``critic_lr``, ``value_lr``), an n-step ``horizon`` apart
from the chunk, and ``best_of`` guided samples ranked by Q are the reference's options.

The actor never sees the critic during training.  At test time (:func:`guided_sample`) each of the
``T`` Euler steps adds ``w·∇Q`` to the flow's velocity, with the gradient taken at the one-step
denoised estimate ``â = clip(a_k + (1 − t_k)·sg(v))`` (``guidance=denoised``, the method), at the
noisy ``a_k`` (``noisy``: the QFQL baseline), or through the one-step map (``jacobian``); ``w = 0``
is plain flow BC; ``best_of_n`` samples ``num_candidates`` unguided actions and keeps the best by Q.
A list of weights is evaluated in one compile (vmapped over ``w``).

FQL (``algo=fql``, the train-time baseline, see :class:`FQL`): the same flow BC, plus a one-step
policy ``μ(s, z)`` trained on ``α·‖μ_raw(s, z) − flow(s, z)‖² − mean_i Q_i(s, clip(μ_raw(s, z)))``
(the distillation on the unclipped output) and FQL's own critic (``critic=fql``) or QGF's IQL
critic (``critic=iql``); it acts with ``clip(μ)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from purejaxrl import evalkeys
from purejaxrl.algos.base import Algorithm

sg = jax.lax.stop_gradient
GUIDANCE = ("denoised", "noisy", "jacobian", "best_of_n")
Q_AGG = ("min", "mean")
CRITICS = ("iql", "fql")
NETWORK_LRS = ("actor_lr", "critic_lr", "value_lr")


def aggregate(qs, how: str):
    """The ensemble's ``min`` or ``mean`` over its leading axis."""
    return qs.min(0) if how == "min" else qs.mean(0)


def expectile_loss(u, expectile):
    """IQL's asymmetric square ``|τ_e − 1(u < 0)|·u²`` (mean), ``u = Q − V``."""
    return jnp.mean(jnp.abs(expectile - (u < 0).astype(u.dtype)) * u**2)


def guided_sample(velocity, q, a0, steps: int, w=0.0, guidance: str = "denoised", clip: bool = True):
    """Euler integration of the flow with Q-gradient guidance, for ``k = 0 … T−1``, ``t_k = k/T``:

    ``v = v(a_k, t_k)``; ``g = ∇_â Q(â)`` at ``â = clip(a_k + (1 − t_k)·sg(v), −1, 1)`` (``denoised``),
    at ``a_k`` (``noisy``), or ``∇_{a_k} Q(clip(a_k + (1 − t_k)·v(a_k, t_k)))`` (``jacobian``);
    ``a_{k+1} = a_k + (v + w·g)/T``; the result is ``clip(a_T, −1, 1)``.  ``velocity(a, t)`` and
    ``q(a)`` act on a batch ``[..., A]`` (``q`` returns ``[...]``; gradients of its sum are per sample).
    ``w = 0`` (or ``guidance="none"``) is exactly the unguided sampler; ``clip=False`` returns
    ``a_T`` unclipped (what diagnostics look at)."""
    dt = 1.0 / steps
    q_sum = lambda a: jnp.sum(q(a))  # noqa: E731

    def body(k, a):
        t = k * dt
        v = velocity(a, t)
        if guidance == "denoised":
            g = jax.grad(q_sum)(jnp.clip(a + (1 - t) * sg(v), -1.0, 1.0))
        elif guidance == "noisy":
            g = jax.grad(q_sum)(a)
        elif guidance == "jacobian":
            g = jax.grad(lambda a_: q_sum(jnp.clip(a_ + (1 - t) * velocity(a_, t), -1.0, 1.0)))(a)
        else:
            return a + dt * v
        return a + dt * (v + w * g)

    a = jax.lax.fori_loop(0, steps, body, a0)
    return jnp.clip(a, -1.0, 1.0) if clip else a


def flow_matching_loss(velocity, a1, key, steps: int, continuous: bool = False):
    """``E‖v(a_t, t) − (a₁ − a₀)‖²`` with ``a_t = (1 − t)·a₀ + t·a₁``, ``a₀ ~ N(0, I)``, ``t`` uniform on
    ``{0, 1/T, …, 1}`` (or on ``[0, 1]``, ``continuous``); ``velocity(a, t)`` on a batch ``[B, A]``."""
    k0, kt = jax.random.split(key)
    a0 = jax.random.normal(k0, a1.shape)
    if continuous:
        t = jax.random.uniform(kt, a1.shape[:1])
    else:
        t = jax.random.randint(kt, a1.shape[:1], 0, steps + 1) / steps
    at = (1 - t[:, None]) * a0 + t[:, None] * a1
    return jnp.mean(jnp.sum((velocity(at, t) - (a1 - a0)) ** 2, -1))


class MLP(nn.Module):
    """GELU MLP with LayerNorm after each hidden layer (``last_norm=False``: not after the last)."""

    hidden: Sequence[int]
    out: int
    last_norm: bool = True

    @nn.compact
    def __call__(self, x):
        for k, h in enumerate(self.hidden):
            x = nn.gelu(nn.Dense(h)(x))
            if self.last_norm or k < len(self.hidden) - 1:
                x = nn.LayerNorm()(x)
        return nn.Dense(self.out)(x)


def time_embedding(t, dim: int = 16):
    """Sinusoidal embedding of ``t ∈ [0, 1]`` (scaled to [0, 1000]): ``[cos(ω_k·t), sin(ω_k·t)]``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
    ang = 1000.0 * jnp.asarray(t)[..., None] * freqs
    return jnp.concatenate([jnp.cos(ang), jnp.sin(ang)], -1)


class Velocity(nn.Module):
    hidden: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs, a, t):
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), a.shape[:-1])
        return MLP(self.hidden, self.act_dim, last_norm=False)(jnp.concatenate([obs, a, time_embedding(t)], -1))


class Scalar(nn.Module):
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, *xs):
        return MLP(self.hidden, 1)(jnp.concatenate(xs, -1))[..., 0]


@struct.dataclass
class OfflineState:
    actor: Any
    critic: Any          # two Q-networks' parameters, stacked on a leading axis
    target: Any
    value: Any           # QGF: V(s); FQL: the one-step policy μ(s, z)
    actor_opt: Any
    critic_opt: Any
    value_opt: Any
    rng: jax.Array
    eval_rng: jax.Array  # evaluation base key: a function of the run's seed only (purejaxrl.evalkeys)


class QGF(Algorithm):
    name = "qgf"
    HPARAMS = ("lr", "gamma", "tau", "expectile")
    HPARAM_BOUNDS = {"lr": (0.0, math.inf, False), "gamma": (0.0, 1.0, False), "tau": (0.0, 1.0, True),
                     "expectile": (0.0, 1.0, True)}
    NEEDS_DATASET = True
    HOST_ENVS = True  # OGBench's MuJoCo tasks: trained in the compiled loop, evaluated in a host loop
    MULTI_TASK = True  # env.kwargs.task=all: runs × the five tasks in one program
    unit = "update"

    def __init__(self, algo_cfg: dict, env_cfg: dict, network_cfg: dict, dataset: dict | None = None):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        c = self.cfg
        self.dataset_path = (dataset or {}).get("path")
        self.num_updates = int(c["num_updates"])
        self.units_per_update = 1
        self.batch_size = int(c["batch_size"])
        self.flow_steps = int(c["flow_steps"])
        self.chunk = int(c["chunk"])
        self.horizon = int(c.get("horizon") or self.chunk)  # n-step horizon of the critic (null: the chunk)
        self.q_agg = str(c.get("q_agg", "min"))
        self.best_of = int(c.get("best_of", 1))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.low, self.high = float(self.env.action_space.low), float(self.env.action_space.high)
        self.chunk_dim = self.chunk * self.act_dim
        self.guidance = str(c.get("guidance", "denoised"))
        self.weights = [float(w) for w in c.get("guidance_weights", [0.0])]
        self.guidance_weight = float(c.get("guidance_weight", self.weights[0]))
        self.num_candidates = int(c.get("num_candidates", 32))
        self.velocity = Velocity(tuple(c["actor_hidden"]), self.chunk_dim)
        self.q = Scalar(tuple(c["critic_hidden"]))
        self.v = Scalar(tuple(c["critic_hidden"]))
        self.on_host = bool(getattr(self.env, "host", False))  # MuJoCo envs stepped outside JAX (OGBench)
        # every env is evaluated between compiled chunks, in its own compiled call: its time is apart
        # from training's, and the progress bar says when it is evaluating
        self.host_eval = True
        if c.get("num_evals") is None:  # one per 10,000 gradient steps, between 1 (the final one) and 10
            self.cfg["num_evals"] = max(1, min(10, self.num_updates // 10_000))
        self._host = None  # the host evaluator (envs and compiled policy), built on first use
        self._eval_fns: dict = {}  # compiled in-JAX evaluations, by (batched, episodes, stream)
        self.eval_env_steps, self.eval_seconds, self.eval_compile_seconds = 0, 0.0, 0.0  # for the summary

    # ---- config checks ----
    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        errs = []
        for k in ("num_updates", "batch_size", "flow_steps", "chunk", "num_evals", "num_eval_envs", "num_candidates"):
            if k == "num_evals" and cfg.get(k, 0) is None:
                continue  # null: one per 10,000 gradient steps, between 1 and 10
            if k in cfg and (isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < 1):
                errs.append(f"algo.{k}={cfg[k]!r} must be an integer >= 1" + (" (or null: one per 10,000 gradient steps, "
                                                                              "at most 10)" if k == "num_evals" else ""))
        for k in ("actor_hidden", "critic_hidden"):
            v = cfg.get(k)
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(h, int) and h >= 1 for h in v):
                errs.append(f"algo.{k}={v!r} must be a non-empty list of layer widths, e.g. [256, 256, 256]")
        if cfg.get("guidance", "denoised") not in GUIDANCE:
            errs.append(f"algo.guidance={cfg.get('guidance')!r}; valid: {', '.join(GUIDANCE)}")
        if cfg.get("q_agg", "min") not in Q_AGG:
            errs.append(f"algo.q_agg={cfg.get('q_agg')!r}; valid: {', '.join(Q_AGG)}")
        for k in NETWORK_LRS:
            v = cfg.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
                errs.append(f"algo.{k}={v!r} must be null (use algo.lr) or a learning rate > 0, e.g. 0.0003")
        h = cfg.get("horizon")
        if h is not None:
            if isinstance(h, bool) or not isinstance(h, int) or h < 1:
                errs.append(f"algo.horizon={h!r} must be null (the chunk length) or an integer >= 1")
            elif isinstance(cfg.get("chunk"), int) and cfg["chunk"] not in (1, h):
                errs.append(f"algo.horizon={h} with algo.chunk={cfg['chunk']}: the critic either scores a whole chunk "
                            f"(algo.chunk={h}) or one action with an n-step return (algo.chunk=1)")
        b = cfg.get("best_of", 1)
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            errs.append(f"algo.best_of={b!r} must be an integer >= 1 (1: one sample per decision)")
        elif b > 1 and cfg.get("guidance") == "best_of_n":
            errs.append(f"algo.best_of={b} with algo.guidance=best_of_n: best_of_n already ranks algo.num_candidates "
                        "unguided samples; use algo.best_of with denoised/noisy/jacobian guidance")
        ws = cfg.get("guidance_weights")
        if not isinstance(ws, (list, tuple)) or not ws or not all(isinstance(w, (int, float)) and w >= 0 for w in ws):
            errs.append(f"algo.guidance_weights={ws!r} must be a non-empty list of numbers >= 0, e.g. [0, 0.01, 0.02]")
        elif "guidance_weight" in cfg and float(cfg["guidance_weight"]) not in [float(w) for w in ws]:
            errs.append(f"algo.guidance_weight={cfg['guidance_weight']} must be one of algo.guidance_weights={list(ws)} "
                        "(it is the weight eval_return reports)")
        return errs + super().config_errors(cfg)

    @classmethod
    def env_errors(cls, env) -> list[str]:
        if not hasattr(env.action_space, "shape"):
            return [f"algo={cls.name} needs continuous actions; {env.name} has {env.action_space}"]
        return super().env_errors(env)

    @classmethod
    def dataset_errors(cls, cfg: dict, env) -> list[str]:
        from envs.datasets import DatasetError, load

        path = (cfg.get("dataset") or {}).get("path")
        if not path:
            return [f"algo={cls.name} trains from a dataset: set dataset.path=FILE.npz "
                    "(make one with `purejaxrl dataset pointmaze_medium_navigate --out FILE.npz`)"]
        try:
            load(path, env, cls.sample_span(cfg["algo"]))
        except DatasetError as e:
            return [str(e)]
        return []

    # ---- tasks (env.kwargs.task=all: one run per task, in one program) ----
    @property
    def tasks(self) -> tuple[int, ...]:
        return tuple(getattr(self.env.unwrapped, "tasks", None) or ())

    def grid_axes(self) -> dict[str, list]:
        """``{"task": [1, …, 5]}`` for ``env.kwargs.task=all`` (runs × tasks in one program); none otherwise."""
        return {"task": list(self.tasks)} if len(self.tasks) > 1 else {}

    def task_row(self, hp):
        """The row of a multi-task dataset's rewards this run learns from (None: a single task)."""
        task = self.task_of(hp)
        return None if task is None else task - 1

    def task_of(self, hp):
        """This run's task (traced) under ``env.kwargs.task=all``; None for a single task."""
        if len(self.tasks) < 2:
            return None
        if "task" not in hp:
            raise ValueError("env.kwargs.task=all: hp needs each run's task (hp['task'] in 1..5); "
                             "default_hparams(cfg, algo) gives task 1, run_grid(cfg, algo.HPARAMS, algo.grid_axes()) all five")
        return jnp.asarray(hp["task"], jnp.int32)

    def load_data(self):
        from envs.datasets import load

        return load(self.dataset_path, self.env, self.sample_span(self.cfg))

    @staticmethod
    def sample_span(algo_cfg: dict) -> int:
        """Steps one training sample spans inside its episode: the chunk or the n-step horizon."""
        chunk = int(algo_cfg.get("chunk", 1))
        return max(chunk, int(algo_cfg.get("horizon") or chunk))

    # ---- networks ----
    def _q_all(self, critic, obs, a):
        return jax.vmap(lambda p: self.q.apply(p, obs, a))(critic)  # [2, B]

    def init(self, key, hp, data=None):
        seed_key = key
        k_a, k_q, k_v, key = jax.random.split(key, 4)
        obs = jnp.zeros((1,) + tuple(self.env.observation_shape))
        act = jnp.zeros((1, self.chunk_dim))
        actor = self.velocity.init(k_a, obs, act, 0.0)
        critic = jax.vmap(lambda k: self.q.init(k, obs, act))(jax.random.split(k_q, 2))
        value = self._init_value(k_v, obs, act)
        return OfflineState(actor, critic, critic, value, self.optimizer(hp, "actor").init(actor),
                            self.optimizer(hp, "critic").init(critic), self.optimizer(hp, "value").init(value), key,
                            evalkeys.run_key(seed_key))

    def _init_value(self, key, obs, act):
        return self.v.init(key, obs)

    def optimizer(self, hp, network: str = "actor"):
        """Adam for ``network`` (actor, critic, value): at ``algo.<network>_lr`` when set, else at the
        traced ``lr``; each network keeps its own Adam state (as the reference's three optimisers)."""
        lr = self.cfg.get(f"{network}_lr")
        return optax.adam(hp["lr"] if lr is None else lr)

    def to_env(self, a):
        """Actions learned in [−1, 1] → the env's action box."""
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    def params(self, state):
        return (state.actor, state.critic, state.value)

    # ---- one gradient step ----
    def flow_loss(self, actor, obs, a1, key, continuous: bool = False):
        return flow_matching_loss(lambda a, t: self.velocity.apply(actor, obs, a, t), a1, key, self.flow_steps, continuous)

    def update(self, state, hp, i, data):
        from envs.datasets import sample_batch

        rng, kb, kf = jax.random.split(state.rng, 3)
        b = sample_batch(data, kb, self.batch_size, self.horizon, hp["gamma"], self.chunk, self.task_row(hp))
        a_loss, g_a = jax.value_and_grad(self.flow_loss)(state.actor, b["obs"], b["actions"], kf)
        l_v, g_v, y = self.iql_value(state.value, state.target, b, self.q_agg, hp["expectile"])
        (l_q, q_mean), g_q = jax.value_and_grad(self.critic_loss, has_aux=True)(state.critic, b, y)
        actor, actor_opt = self._step(self.optimizer(hp, "actor"), state.actor, state.actor_opt, g_a)
        critic, critic_opt = self._step(self.optimizer(hp, "critic"), state.critic, state.critic_opt, g_q)
        value, value_opt = self._step(self.optimizer(hp, "value"), state.value, state.value_opt, g_v)
        target = optax.incremental_update(state.critic, state.target, hp["tau"])  # the critic before this step, as the references
        new = state.replace(actor=actor, critic=critic, target=target, value=value, actor_opt=actor_opt,
                            critic_opt=critic_opt, value_opt=value_opt, rng=rng)
        return new, {"actor_loss": a_loss, "critic_loss": l_q, "value_loss": l_v, "q_mean": q_mean}

    def iql_value(self, vparams, target, b, how: str, expectile):
        """IQL's value step: ``L_V`` (expectile ``expectile``) of ``V(s)`` against ``how`` (min or mean)
        of the target Qs at the dataset actions, its gradient, and the Q target ``R_H + γ^H·m·V(s')``."""
        q_t = sg(aggregate(self._q_all(target, b["obs"], b["actions"]), how))
        l_v, g_v = jax.value_and_grad(lambda vp: expectile_loss(q_t - self.v.apply(vp, b["obs"]), expectile))(vparams)
        return l_v, g_v, b["rewards"] + b["discount"] * self.v.apply(vparams, b["next_obs"])

    def critic_loss(self, critic, b, y):
        """``E_i E[(Q_i(s, a) − y)²]``, the mean over the two Q-networks and the batch (``y`` held
        fixed), as both references; also the mean Q."""
        q = self._q_all(critic, b["obs"], b["actions"])
        return jnp.mean((q - sg(y)[None]) ** 2), q.mean()

    @staticmethod
    def _step(tx, params, opt_state, grads):
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), opt_state

    # ---- acting ----
    def agg_q(self, state, obs, a):
        """The target critics' ``q_agg`` (min or mean): what guidance follows and best-of-N ranks by."""
        return aggregate(self._q_all(state.target, obs, a), self.q_agg)

    def flow_sample(self, state, obs, key, w=0.0, guidance: str = "denoised", clip: bool = True):
        """``T`` Euler steps of the flow from ``a₀ ~ N(0, I)`` with ``w·∇Q`` guidance (:func:`guided_sample`)."""
        a0 = jax.random.normal(key, obs.shape[:-1] + (self.chunk_dim,))
        return guided_sample(lambda a, t: self.velocity.apply(state.actor, obs, a, t),
                             lambda a: self.agg_q(state, obs, a), a0, self.flow_steps, w, guidance, clip)

    def act(self, state, obs, key, w):
        """An action chunk ``[..., H·act_dim]`` for observations ``[..., obs_dim]``: one guided sample,
        or the best by Q of ``best_of`` guided samples (the reference's rejection sampling), or of
        ``num_candidates`` unguided ones (``guidance=best_of_n``)."""
        if self.guidance == "best_of_n":
            return self.best_by_q(state, obs, key, self.num_candidates, lambda k: self.flow_sample(state, obs, k, 0.0, "none"))
        if self.best_of > 1:
            return self.best_by_q(state, obs, key, self.best_of, lambda k: self.flow_sample(state, obs, k, w, self.guidance))
        return self.flow_sample(state, obs, key, w, self.guidance)

    def best_by_q(self, state, obs, key, n: int, sample):
        """Of ``n`` samples ``sample(key_j)`` (``[B, A]`` each), the one with the highest ``agg_q``."""
        cands = jax.vmap(sample)(jax.random.split(key, n))  # [N, B, A]
        q = jax.vmap(lambda a_: self.agg_q(state, obs, a_))(cands)  # [N, B]
        return jnp.take_along_axis(cands, jnp.argmax(q, 0)[None, :, None], 0)[0]

    def greedy_action(self, state, obs):
        return self.to_env(self.act(state, obs[None], jax.random.PRNGKey(0), self.guidance_weight)[0][: self.act_dim])

    # ---- evaluation: every guidance weight, one compile ----
    def eval_weights(self) -> list[float]:
        return [0.0] if self.guidance == "best_of_n" else self.weights

    @property
    def episodes_per_evaluation(self) -> int:
        return self.num_eval_envs * len(self.eval_weights())

    def chunk_episodes(self, state, key, w, num_envs: int, task=None):
        """Return and success of the first episode in each of ``num_envs`` envs, chunks executed
        open-loop; ``task``: the env's task (traced; None: the configured one)."""
        from envs.wrappers import make_stack

        env = (self.make_venv(num_envs, {}, evaluation=True) if task is None
               else make_stack(self.env.unwrapped.with_task(task), num_envs))
        H, A = self.chunk, self.act_dim
        k_reset, key = jax.random.split(key)
        obs, st = env.reset(k_reset)
        zeros = jnp.zeros((num_envs,))
        carry = (obs, st, key, jnp.int32(0), jnp.zeros((num_envs,), bool), zeros, zeros)
        limit = env.max_episode_steps

        def cond(c):
            return jnp.logical_and(c[3] < limit, jnp.logical_not(jnp.all(c[4])))

        def body(c):
            obs, st, key, t, done, ret, succ = c
            key, k_act, k_env = jax.random.split(key, 3)
            chunk = self.to_env(self.act(state, obs, k_act, w).reshape(num_envs, H, A))

            def one(c2, h):
                obs, st, done, ret, succ = c2
                obs, st, r, term, trunc, info = env.step(jax.random.fold_in(k_env, h), st, chunk[:, h])
                live = jnp.logical_not(done)
                ret = ret + jnp.where(live, r, 0.0)
                succ = jnp.maximum(succ, jnp.where(live, info.get("success", jnp.zeros_like(r)), 0.0))
                return (obs, st, jnp.logical_or(done, jnp.logical_or(term, trunc)), ret, succ), None

            (obs, st, done, ret, succ), _ = jax.lax.scan(one, (obs, st, done, ret, succ), jnp.arange(H))
            return obs, st, key, t + H, done, ret, succ

        *_, ret, succ = jax.lax.while_loop(cond, body, carry)
        return ret, succ

    def evaluate_weights(self, state, key, num_envs: int, weights=None, task=None):
        ws = jnp.asarray(self.eval_weights() if weights is None else weights, jnp.float32)
        ret, succ = jax.vmap(lambda w: self.chunk_episodes(state, key, w, num_envs, task))(ws)
        return ret, succ  # [W, num_envs]

    def evaluate(self, state, hp, i):
        """Nothing inside the training program: evaluations run between chunks (:meth:`host_evaluate`),
        on the key :meth:`progress_key` would give, so that their time is reported apart."""
        return {}

    def host_evaluation_keys(self) -> list[str]:
        ws = self.eval_weights()
        z = np.zeros((1, len(ws), 1), np.float32)
        return list(self.eval_metrics(z, z))

    def evaluation_label(self, num_runs: int = 1) -> str:
        ws = self.eval_weights()
        runs = f"{num_runs} runs x " if num_runs > 1 else ""
        return (f"evaluating {runs}{len(ws)} weight{'s' if len(ws) > 1 else ''} x {self.num_eval_envs} episodes "
                f"(<= {self.env.max_episode_steps} steps)")

    def eval_metrics(self, ret, succ):
        """``eval_return``/``eval_success`` at the deployed weight and per weight, from ``[..., W, E]``."""
        ws = self.eval_weights()
        k = ws.index(self.guidance_weight) if self.guidance_weight in ws else 0
        out = {"eval_return": ret[..., k, :].mean(-1), "eval_success": succ[..., k, :].mean(-1)}
        if len(ws) > 1:
            for j, w in enumerate(ws):
                out[f"eval_return_w{w:g}"] = ret[..., j, :].mean(-1)
                out[f"eval_success_w{w:g}"] = succ[..., j, :].mean(-1)
        return out

    # ---- evaluation in a host loop (envs that are not JAX programs) ----
    def host_evaluate_weights(self, state, batched: bool, num_episodes: int, stream: str = "progress", index: int = 0,
                              tasks=None):
        """Return and success ``[runs, W, episodes]`` of every guidance weight, the envs stepped on
        the host and the policy of every run, weight and episode one jitted call per decision.
        Episodes and policy noise come from each run's evaluation key (``stream``, ``index``:
        :mod:`purejaxrl.evalkeys`): independent across runs, shared by the weights.  ``tasks``
        ``[runs]``: each run's task (``env.kwargs.task=all``; the ``task`` entry of the runs' hparams)."""
        import time

        tasks = None if tasks is None or len(self.tasks) < 2 else np.asarray(tasks).astype(np.int64).reshape(-1)
        if not self.on_host:
            return self._jax_evaluate_weights(state, batched, num_episodes, stream, index, tasks)
        from envs.ogbench import HostEvaluator

        ws = tuple(self.eval_weights())
        if self._host is None:
            self._host = (HostEvaluator(self.env), {})
        evaluator, compiled = self._host
        if batched not in compiled:
            def per_run(s, obs, keys):  # obs [W, E, D], keys [E, 2]: each episode its own noise, every weight the same
                def one_weight(w, o):
                    return jax.vmap(lambda o_e, k_e: self.to_env(self.act(s, o_e[None], k_e, w))[0])(o, keys)

                return jax.vmap(one_weight)(jnp.asarray(ws, jnp.float32), obs)

            def act_all(s, obs, keys):  # obs [R, W, E, D], keys [R, E, 2]
                if batched:
                    return jax.vmap(per_run)(s, obs, keys)
                return per_run(s, obs[0], keys[0])[None]

            compiled[batched] = jax.jit(act_all)
        act = compiled[batched]
        runs = jax.tree.leaves(state)[0].shape[0] if batched else 1
        ew = evaluator.wave(runs, len(ws), num_episodes)
        evaluator.prepare((runs, len(ws), num_episodes), tasks)  # the envs built (~1 s each) outside the timing
        obs0 = np.zeros((runs, len(ws), ew) + tuple(self.env.observation_shape), np.float32)
        bases = jnp.asarray(self.eval_key(state)).reshape(runs, -1)
        keys = jnp.stack([evalkeys.stream(b, stream, index) for b in bases])
        seeds = np.stack([evalkeys.host_seeds(b, stream, index, num_episodes) for b in bases])
        t0 = time.perf_counter()
        jax.block_until_ready(act(state, obs0, jnp.broadcast_to(keys[:, None], (runs, ew) + keys.shape[1:])))
        self.eval_compile_seconds += time.perf_counter() - t0  # the policy's compile (once per shape)
        t0, steps0 = time.perf_counter(), evaluator.steps
        ret, succ = evaluator.run(lambda obs, k: act(state, obs, k), (runs, len(ws), num_episodes), self.chunk, seeds, keys,
                                  tasks)
        self.eval_seconds += time.perf_counter() - t0
        self.eval_env_steps += evaluator.steps - steps0
        return ret, succ

    def _jax_evaluate_weights(self, state, batched: bool, num_episodes: int, stream: str, index: int, tasks=None):
        """:meth:`evaluate_weights` of every run (JAX envs), one compiled call, each run on its key of
        ``stream``/``index`` (and its task, ``tasks [runs]``); compile and run times kept apart."""
        import time

        def one(s, idx, task):
            return self.evaluate_weights(s, evalkeys.stream(self.eval_key(s), stream, idx), num_episodes, task=task)

        key = (batched, num_episodes, stream, tuple(self.eval_weights()), tasks is not None)
        idx = jnp.int32(index)
        runs = jax.tree.leaves(state)[0].shape[0] if batched else 1
        task_arg = jnp.asarray(np.zeros(runs) if tasks is None else tasks, jnp.int32)
        if key not in self._eval_fns:
            def fn(s, i, t):
                if batched:
                    return jax.vmap(one, in_axes=(0, None, 0 if tasks is not None else None))(s, i, t if tasks is not None else None)
                return jax.tree.map(lambda x: x[None], one(s, i, t[0] if tasks is not None else None))

            t0 = time.perf_counter()
            self._eval_fns[key] = jax.jit(fn).lower(state, idx, task_arg).compile()
            self.eval_compile_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        ret, succ = jax.block_until_ready(self._eval_fns[key](state, idx, task_arg))
        if jax.process_count() > 1:  # runs split over processes: every process gets all of them
            from jax.experimental import multihost_utils

            ret, succ = multihost_utils.process_allgather((ret, succ), tiled=True)
        self.eval_seconds += time.perf_counter() - t0
        return np.asarray(ret), np.asarray(succ)

    def scale_errors(self, process_count: int) -> list[str]:
        if self.on_host and process_count > 1:
            return [f"env={self.env.name} is evaluated on the host (MuJoCo outside the compiled program), which runs in "
                    "one process; drop distributed.* (a single process may still use mesh.devices)"]
        if len(self.tasks) > 1 and process_count > 1:
            return ["env.kwargs.task=all runs in one process (its runs' tasks are read on the host); drop distributed.* "
                    "(a single process may still use mesh.devices) or run one task per process"]
        return []

    def summary_fields(self, updates, evaluations, num_runs, run_seconds):
        out = super().summary_fields(updates, evaluations, num_runs, run_seconds)
        # evaluations made by this process, apart from training (run_seconds): running and compiling
        out["evaluation_seconds"] = self.eval_seconds
        out["evaluation_compile_seconds"] = self.eval_compile_seconds
        if self.on_host and self.eval_seconds > 0:
            # MuJoCo steps and policy calls of the host evaluations of this process (env builds and compiles excluded)
            out["evaluation_env_steps_per_second"] = self.eval_env_steps / self.eval_seconds
        return out

    def host_evaluate(self, state, batched: bool, update: int, hparams=None) -> dict[str, np.ndarray]:
        """The evaluation after the chunk that ends at ``update``: ``[runs]`` each, on the key the
        training program's greedy test after update ``update − 1`` would use (:meth:`progress_key`),
        each run on its own task (``hparams["task"]``, ``env.kwargs.task=all``)."""
        index = evalkeys.FINAL if int(update) >= self.num_updates else int(update) - 1  # as progress_key(i = update − 1)
        tasks = np.asarray(hparams["task"]) if hparams is not None and "task" in hparams else None
        ret, succ = self.host_evaluate_weights(state, batched, self.num_eval_envs, "progress", index, tasks)
        return self.eval_metrics(ret, succ)

    def greedy_returns(self, state, hp, key, num_envs):
        return self.evaluate_weights(state, key, num_envs, [self.guidance_weight], self.task_of(hp))[0][0]


class FQL(QGF):
    """Flow Q-learning as its reference implements it: the flow BC of QGF plus a one-step policy
    ``μ(s, z)`` trained on ``α·E‖μ(s, z) − flow(s, z)‖² − λ·E[mean_i Q_i(s, clip(μ(s, z)))]`` — the
    distillation on μ's *unclipped* output, the clip only before Q (and when acting), ``λ = 1`` or,
    with ``normalize_q_loss``, ``1/E|Q|`` (held fixed).  ``critic=fql``: FQL's own critic, regressed
    on ``R_H + γ^H·m·agg_i Q̄_i(s', clip(μ(s', z')))`` (``q_agg`` min or mean); ``critic=iql``: QGF's
    IQL critic (``V`` by expectile regression on ``min_i Q̄_i(s, a)`` — the min whatever ``q_agg``
    says, as QGF's FQL script — and ``Q`` on ``R_H + γ^H·m·V(s')``), the QGF paper's FQL comparison.
    The state's ``value`` slot holds the one-step policy's parameters (``critic=fql``, the layout of
    earlier versions) or ``{"mu": …, "v": …}`` (``critic=iql``); ``expectile`` is static here."""

    name = "fql"
    HPARAMS = ("lr", "gamma", "tau", "alpha")
    HPARAM_BOUNDS = {"lr": (0.0, math.inf, False), "gamma": (0.0, 1.0, False), "tau": (0.0, 1.0, True),
                     "alpha": (0.0, math.inf, False)}

    def __init__(self, algo_cfg, env_cfg, network_cfg, dataset=None):
        super().__init__(algo_cfg, env_cfg, network_cfg, dataset)
        self.onestep = MLP(tuple(self.cfg["actor_hidden"]), self.chunk_dim, last_norm=False)
        self.critic_kind = str(self.cfg.get("critic", "fql"))
        self.normalize_q_loss = bool(self.cfg.get("normalize_q_loss", False))
        self.expectile = float(self.cfg.get("expectile", 0.9))

    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        errs = []
        if cfg.get("critic", "fql") not in CRITICS:
            errs.append(f"algo.critic={cfg.get('critic')!r}; valid: iql (QGF's IQL critic, the QGF paper's comparison), "
                        "fql (FQL's own: the target at the one-step policy's next action)")
        if not isinstance(cfg.get("normalize_q_loss", False), bool):
            errs.append(f"algo.normalize_q_loss={cfg.get('normalize_q_loss')!r} must be true or false")
        e = cfg.get("expectile", 0.9)
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e < 1:
            errs.append(f"algo.expectile={e!r} must be a number in (0, 1), e.g. 0.9")
        if cfg.get("best_of", 1) != 1:
            errs.append(f"algo.best_of={cfg.get('best_of')!r}: FQL acts with its one-step policy (no samples to rank); "
                        "leave best_of at 1 (it is QGF's)")
        return errs + super().config_errors(cfg)

    def _init_value(self, key, obs, act):
        k_mu, k_v = jax.random.split(key)
        mu = self.onestep.init(k_mu, jnp.concatenate([obs, act], -1))
        if self.cfg.get("critic", "fql") == "iql":
            return {"mu": mu, "v": self.v.init(k_v, obs)}
        return mu

    @staticmethod
    def mu_params(value):
        """The one-step policy's parameters in the state's ``value`` slot (either layout)."""
        return value["mu"] if "mu" in value else value

    def mu_raw(self, params, obs, z):
        """The one-step policy's output before the clip (what the distillation term sees); ``params``
        the ``value`` slot or the one-step policy's own parameters."""
        return self.onestep.apply(self.mu_params(params), jnp.concatenate([obs, z], -1))

    def mu(self, params, obs, z):
        return jnp.clip(self.mu_raw(params, obs, z), -1.0, 1.0)

    def policy_loss(self, params, critic, obs, z, flow_a, alpha):
        """``α·E‖μ_raw − flow_a‖² − λ·E[mean_i Q_i(s, clip(μ_raw))]`` (the distillation mean over every
        action dimension, as FQL); also the distillation term."""
        raw = self.mu_raw(params, obs, z)
        distill = jnp.mean((raw - flow_a) ** 2)
        q = self._q_all(critic, obs, jnp.clip(raw, -1.0, 1.0)).mean(0)
        q_loss = -q.mean()
        if self.normalize_q_loss:
            q_loss = q_loss * sg(1.0 / (jnp.abs(q).mean() + 1e-12))
        return alpha * distill + q_loss, distill

    def update(self, state, hp, i, data):
        from envs.datasets import sample_batch

        rng, kb, kf, kz, kz2 = jax.random.split(state.rng, 5)
        b = sample_batch(data, kb, self.batch_size, self.horizon, hp["gamma"], self.chunk, self.task_row(hp))
        a_loss, g_a = jax.value_and_grad(self.flow_loss)(state.actor, b["obs"], b["actions"], kf, True)
        grads, metrics = {}, {}
        if self.critic_kind == "iql":  # V on the min of the target Qs, as QGF's FQL script
            metrics["value_loss"], grads["v"], y = self.iql_value(state.value["v"], state.target, b, "min", self.expectile)
        else:
            a_next = self.mu(state.value, b["next_obs"], jax.random.normal(kz2, b["actions"].shape))
            y = b["rewards"] + b["discount"] * aggregate(self._q_all(state.target, b["next_obs"], a_next), self.q_agg)
        (l_q, q_mean), g_q = jax.value_and_grad(self.critic_loss, has_aux=True)(state.critic, b, y)
        z = jax.random.normal(kz, b["actions"].shape)
        flow_a = sg(self._euler(state.actor, b["obs"], z))
        (l_mu, distill), grads["mu"] = jax.value_and_grad(
            lambda mp: self.policy_loss(mp, state.critic, b["obs"], z, flow_a, hp["alpha"]), has_aux=True)(
            self.mu_params(state.value))
        if self.critic_kind != "iql":
            grads = grads["mu"]  # the value slot is the one-step policy itself
        tx = self.optimizer(hp, "actor")
        actor, actor_opt = self._step(tx, state.actor, state.actor_opt, g_a)
        critic, critic_opt = self._step(self.optimizer(hp, "critic"), state.critic, state.critic_opt, g_q)
        value, value_opt = self._step(self.optimizer(hp, "value"), state.value, state.value_opt, grads)
        target = optax.incremental_update(state.critic, state.target, hp["tau"])  # the critic before this step, as the references
        new = state.replace(actor=actor, critic=critic, target=target, value=value, actor_opt=actor_opt,
                            critic_opt=critic_opt, value_opt=value_opt, rng=rng)
        return new, {"actor_loss": a_loss, "critic_loss": l_q, "onestep_loss": l_mu, "distill_loss": distill,
                     "q_mean": q_mean, **metrics}

    def _euler(self, actor, obs, z):
        """The BC flow's action from noise ``z`` (``T`` plain Euler steps, clipped): the distillation target."""
        dt = 1.0 / self.flow_steps
        return jnp.clip(jax.lax.fori_loop(0, self.flow_steps,
                                          lambda k, a: a + dt * self.velocity.apply(actor, obs, a, k * dt), z), -1.0, 1.0)

    def act(self, state, obs, key, w):
        return self.mu(state.value, obs, jax.random.normal(key, obs.shape[:-1] + (self.chunk_dim,)))

    def eval_weights(self):
        return [0.0]
