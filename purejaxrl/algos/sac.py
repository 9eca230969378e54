"""Soft actor-critic (Haarnoja et al. 2018, with automatic entropy tuning), the replay buffer inside
the compiled loop.

One update: every one of ``num_envs`` envs takes ``steps_per_update`` steps (uniform random actions
for the first ``learning_starts`` env steps, then ``a = tanh(u)``, ``u ~ N(μ(s), σ(s))``), the
transitions go into a ring buffer held in the state, then ``gradient_steps`` minibatch steps:

* critic: ``L_Q = Σ_i E[(Q_i(s, a) − y)²]``, ``y = r + γ·(1 − terminated)·(min_i Q̄_i(s', a') − α·log π(a'|s'))``,
  ``a' ~ π(·|s')``; ``s'`` is the true next observation (the final one at a time limit, where the
  target still bootstraps: only termination cuts it);
* actor: ``L_π = E[α·log π(ã|s) − min_i Q_i(s, ã)]``, ``ã ~ π(·|s)`` reparameterised;
* temperature: ``L_α = −E[log α · (log π(ã|s) + H̄)]`` with target entropy ``H̄ = −dim(A)`` by default;
* targets: ``Q̄ ← (1 − τ)·Q̄ + τ·Q``.

``log π`` of the tanh-squashed Gaussian is ``log N(u; μ, σ) − Σ_j log(1 − tanh(u_j)²)``, the
correction computed as ``2·(log 2 − u − softplus(−2u))`` (exact, stable for large ``|u|``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from purejaxrl.algos.base import Algorithm
from purejaxrl.rollout import episode_metrics

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def tanh_log_prob(u, mean, log_std):
    """``log π(tanh(u))`` for ``u ~ N(mean, exp(log_std))`` (summed over the action axis)."""
    gauss = -0.5 * (((u - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    correction = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))  # log(1 − tanh(u)²)
    return jnp.sum(gauss - correction, axis=-1)


def critic_targets(reward, terminated, next_q_min, next_log_prob, alpha, gamma):
    """``y = r + γ·(1 − terminated)·(min_i Q̄_i(s', a') − α·log π(a'|s'))``."""
    return reward + gamma * (1.0 - terminated) * (next_q_min - alpha * next_log_prob)


def actor_loss(log_prob, q_min, alpha):
    """``E[α·log π(ã|s) − min_i Q_i(s, ã)]``."""
    return jnp.mean(alpha * log_prob - q_min)


def alpha_loss(log_alpha, log_prob, target_entropy):
    """``−E[log α · (log π + H̄)]`` (``log π`` held fixed)."""
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.out)(x)


class Actor(nn.Module):
    hidden: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden, 2 * self.act_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        # squashed into [LOG_STD_MIN, LOG_STD_MAX] smoothly, as CleanRL/Stoix
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


class QNet(nn.Module):
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs, action):
        return MLP(self.hidden, 1)(jnp.concatenate([obs, action], -1))[..., 0]


@struct.dataclass
class Buffer:
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    ptr: jax.Array
    size: jax.Array

    @staticmethod
    def empty(capacity: int, obs_shape, act_dim: int) -> "Buffer":
        z = lambda *s: jnp.zeros((capacity, *s), jnp.float32)  # noqa: E731
        return Buffer(z(*obs_shape), z(act_dim), z(), z(*obs_shape), z(), jnp.int32(0), jnp.int32(0))

    def add(self, batch: dict) -> "Buffer":
        """Write ``n`` transitions at the pointer (wrapping around, oldest overwritten)."""
        cap = self.reward.shape[0]
        n = batch["reward"].shape[0]
        idx = (self.ptr + jnp.arange(n)) % cap
        new = {k: getattr(self, k).at[idx].set(batch[k].astype(jnp.float32)) for k in batch}
        return self.replace(**new, ptr=(self.ptr + n) % cap, size=jnp.minimum(self.size + n, cap))

    def sample(self, key, batch_size: int) -> dict:
        i = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return {k: getattr(self, k)[i] for k in ("obs", "action", "reward", "next_obs", "terminated")}


@struct.dataclass
class SACState:
    actor: Any
    critic: Any        # two Q-networks stacked on a leading axis
    target: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    buffer: Buffer
    env_state: Any
    obs: jax.Array
    rng: jax.Array


class SAC(Algorithm):
    name = "sac"
    HPARAMS = ("lr", "gamma", "tau")
    HPARAM_BOUNDS = {"lr": (0.0, math.inf, True), "gamma": (0.0, 1.0, False), "tau": (0.0, 1.0, True)}
    COUNTS = ("total_timesteps", "num_envs", "steps_per_update", "gradient_steps", "batch_size", "buffer_size",
              "num_evals", "num_eval_envs")

    def __init__(self, algo_cfg: dict, env_cfg: dict, network_cfg: dict):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        c = self.cfg
        self.num_envs = int(c["num_envs"])
        self.steps_per_update = int(c.get("steps_per_update", 1))
        self.units_per_update = self.num_envs * self.steps_per_update
        self.num_updates = int(c["total_timesteps"]) // self.units_per_update
        self.gradient_steps = int(c["gradient_steps"])
        self.batch_size = int(c["batch_size"])
        self.buffer_size = int(c["buffer_size"])
        self.learning_starts = int(c.get("learning_starts", 0))
        self.autotune = bool(c.get("autotune", True))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        te = c.get("target_entropy")
        self.target_entropy = -float(self.act_dim) if te is None else float(te)
        self.init_alpha = float(c.get("init_alpha", 1.0))
        self.low, self.high = float(self.env.action_space.low), float(self.env.action_space.high)
        self.actor_net = Actor(tuple(c["actor_hidden"]), self.act_dim)
        self.q_net = QNet(tuple(c["critic_hidden"]))

    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        errs = [f"algo.{k}={cfg[k]!r} must be an integer >= 1" for k in cls.COUNTS
                if k in cfg and (not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1)]
        for k in ("actor_hidden", "critic_hidden"):
            v = cfg.get(k)
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(h, int) and h >= 1 for h in v):
                errs.append(f"algo.{k}={v!r} must be a non-empty list of layer widths, e.g. [256, 256]")
        if not errs:
            per_update = int(cfg["num_envs"]) * int(cfg.get("steps_per_update", 1))
            if int(cfg["total_timesteps"]) < per_update:
                errs.append(f"algo.total_timesteps={cfg['total_timesteps']} is smaller than one update "
                            f"(num_envs*steps_per_update={per_update}); raise total_timesteps")
            if int(cfg["buffer_size"]) < per_update:
                errs.append(f"algo.buffer_size={cfg['buffer_size']} cannot hold one update's {per_update} transitions; "
                            "raise buffer_size")
            if int(cfg.get("learning_starts", 0)) < 0:
                errs.append(f"algo.learning_starts={cfg['learning_starts']} must be >= 0")
            if float(cfg.get("init_alpha", 1.0)) <= 0:
                errs.append(f"algo.init_alpha={cfg['init_alpha']} must be > 0")
        return errs + super().config_errors(cfg)

    @classmethod
    def env_errors(cls, env) -> list[str]:
        if not hasattr(env.action_space, "shape"):
            return [f"algo={cls.name} needs continuous actions; {env.name} has {env.action_space}. Use algo=pqn or algo=ppo"]
        return super().env_errors(env)

    # ---- networks ----
    def _q_all(self, critic, obs, a):
        return jax.vmap(lambda p: self.q_net.apply(p, obs, a))(critic)  # [2, B]

    def sample_action(self, actor, obs, key):
        """``(a, log π(a|s))`` with ``a = tanh(u)`` in [−1, 1]."""
        mean, log_std = self.actor_net.apply(actor, obs)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return jnp.tanh(u), tanh_log_prob(u, mean, log_std)

    def to_env(self, a):
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    def greedy_action(self, state, obs):
        return self.to_env(jnp.tanh(self.actor_net.apply(state.actor, obs)[0]))

    def params(self, state):
        return (state.actor, state.critic, state.log_alpha)

    @staticmethod
    def _tx(hp):
        return optax.adam(hp["lr"])

    def init(self, key, hp, data=None):
        k_a, k_q, k_env, key = jax.random.split(key, 4)
        obs_shape = tuple(self.env.observation_shape)
        o, a = jnp.zeros((1,) + obs_shape), jnp.zeros((1, self.act_dim))
        actor = self.actor_net.init(k_a, o)
        critic = jax.vmap(lambda k: self.q_net.init(k, o, a))(jax.random.split(k_q, 2))
        log_alpha = jnp.log(jnp.float32(self.init_alpha))
        tx = self._tx(hp)
        obs, env_state = self.make_venv(self.num_envs, hp).reset(k_env)
        return SACState(actor, critic, critic, log_alpha, tx.init(actor), tx.init(critic), tx.init(log_alpha),
                        Buffer.empty(self.buffer_size, obs_shape, self.act_dim), env_state, obs, key)

    # ---- acting ----
    def collect(self, state, hp, i):
        """``steps_per_update`` steps of every env; returns the new state (buffer filled) and the
        episodes that ended."""
        venv = self.make_venv(self.num_envs, hp)
        random_phase = i * self.units_per_update < self.learning_starts

        def step(carry, _):
            obs, env_state, buf, rng = carry
            rng, k_act, k_rand, k_env = jax.random.split(rng, 4)
            a_pol, _ = self.sample_action(state.actor, obs, k_act)
            a_rand = jax.random.uniform(k_rand, a_pol.shape, minval=-1.0, maxval=1.0)
            a = jnp.where(random_phase, a_rand, a_pol)
            obs2, env_state, reward, term, trunc, info = venv.step(k_env, env_state, self.to_env(a))
            done = jnp.logical_or(term, trunc)
            next_obs = jnp.where(done.reshape(done.shape + (1,) * (obs2.ndim - 1)), info["final_observation"], obs2)
            buf = buf.add({"obs": obs, "action": a, "reward": reward, "next_obs": next_obs, "terminated": term})
            ep = {k: info[k] for k in ("episode_return", "episode_length", "episode_done")}
            return (obs2, env_state, buf, rng), ep

        (obs, env_state, buf, rng), episode = jax.lax.scan(
            step, (state.obs, state.env_state, state.buffer, state.rng), None, self.steps_per_update)
        return state.replace(obs=obs, env_state=env_state, buffer=buf, rng=rng), episode

    # ---- learning ----
    def gradient_step(self, state, hp, key):
        tx = self._tx(hp)
        k_b, k_next, k_pi = jax.random.split(key, 3)
        b = state.buffer.sample(k_b, self.batch_size)
        alpha = jnp.exp(state.log_alpha)
        a_next, logp_next = self.sample_action(state.actor, b["next_obs"], k_next)
        q_next = self._q_all(state.target, b["next_obs"], a_next).min(0)
        y = jax.lax.stop_gradient(critic_targets(b["reward"], b["terminated"], q_next, logp_next, alpha, hp["gamma"]))

        def q_loss(critic):
            q = self._q_all(critic, b["obs"], b["action"])
            return jnp.sum(jnp.mean((q - y[None]) ** 2, axis=1)), q.mean()

        (l_q, q_mean), g_q = jax.value_and_grad(q_loss, has_aux=True)(state.critic)
        upd, critic_opt = tx.update(g_q, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, upd)

        def pi_loss(actor):
            a, logp = self.sample_action(actor, b["obs"], k_pi)
            return actor_loss(logp, self._q_all(critic, b["obs"], a).min(0), alpha), logp

        (l_pi, logp), g_pi = jax.value_and_grad(pi_loss, has_aux=True)(state.actor)
        upd, actor_opt = tx.update(g_pi, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, upd)
        log_alpha, alpha_opt, l_a = state.log_alpha, state.alpha_opt, jnp.float32(0.0)
        if self.autotune:
            l_a, g_a = jax.value_and_grad(alpha_loss)(state.log_alpha, logp, self.target_entropy)
            upd, alpha_opt = tx.update(g_a, state.alpha_opt, state.log_alpha)
            log_alpha = optax.apply_updates(state.log_alpha, upd)
        target = optax.incremental_update(critic, state.target, hp["tau"])
        new = state.replace(actor=actor, critic=critic, target=target, log_alpha=log_alpha, actor_opt=actor_opt,
                            critic_opt=critic_opt, alpha_opt=alpha_opt)
        return new, {"critic_loss": l_q, "actor_loss": l_pi, "alpha_loss": l_a, "alpha": jnp.exp(log_alpha),
                     "entropy": -logp.mean(), "q_mean": q_mean}

    def update(self, state, hp, i, data=None):
        state, episode = self.collect(state, hp, i)
        learning = (i + 1) * self.units_per_update > self.learning_starts
        rng, key = jax.random.split(state.rng)
        state = state.replace(rng=rng)

        def learn(s):
            def body(s, k):
                return self.gradient_step(s, hp, k)

            s, m = jax.lax.scan(body, s, jax.random.split(key, self.gradient_steps))
            return s, jax.tree.map(lambda x: x.mean(), m)

        shapes = jax.eval_shape(learn, state)[1]

        def warmup(s):  # before learning_starts: zeros (the logs' "learning" column says which)
            return s, {**jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes), "alpha": jnp.exp(s.log_alpha)}

        state, m = jax.lax.cond(learning, learn, warmup, state)
        return state, {**m, "learning": learning.astype(jnp.float32), **episode_metrics(episode)}
