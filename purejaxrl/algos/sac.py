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

Options of brax's SAC (MuJoCo Playground's tuned configuration sets both): ``critic_layer_norm``
puts a LayerNorm after each hidden activation of the critics; ``normalize_observations`` keeps
running observation statistics, merged after each update's acting, and both networks see
``(obs − mean)/sqrt(var + 1e-8)`` — in acting, evaluation and every gradient step (the buffer keeps
raw observations, normalised with the current statistics when sampled).

``log π`` of the tanh-squashed Gaussian is ``log N(u; μ, σ) − Σ_j log(1 − tanh(u_j)²)``, the
correction computed as ``2·(log 2 − u − softplus(−2u))`` (exact, stable for large ``|u|``).
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
from purejaxrl.networks import ObsNorm
from purejaxrl.rollout import episode_metrics

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def tanh_log_prob(u, mean, log_std):
    """``log π(tanh(u))`` for ``u ~ N(mean, exp(log_std))`` (summed over the action axis)."""
    gauss = -0.5 * (((u - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    correction = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))  # log(1 − tanh(u)²)
    return jnp.sum(gauss - correction, axis=-1)


def critic_targets(reward, terminated, next_q_min, next_log_prob, alpha, gamma):
    """``y = r + γ·(1 − terminated)·(min_i Q̄_i(s', a') − α·log π(a'|s'))`` (a terminal transition's
    next state is never evaluated into the target, even where it is not finite)."""
    return reward + gamma * jnp.where(terminated > 0.5, 0.0, next_q_min - alpha * next_log_prob)


def actor_loss(log_prob, q_min, alpha):
    """``E[α·log π(ã|s) − min_i Q_i(s, ã)]``."""
    return jnp.mean(alpha * log_prob - q_min)


def alpha_loss(log_alpha, log_prob, target_entropy):
    """``−E[log α · (log π + H̄)]`` (``log π`` held fixed)."""
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    layer_norm: bool = False  # LayerNorm after each hidden activation (brax's MLP with layer_norm=True)

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
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
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs, action):
        return MLP(self.hidden, 1, self.layer_norm)(jnp.concatenate([obs, action], -1))[..., 0]


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
    def empty(capacity: int, obs_shape, act_dim: int) -> Buffer:
        z = lambda *s: jnp.zeros((capacity, *s), jnp.float32)  # noqa: E731
        return Buffer(z(*obs_shape), z(act_dim), z(), z(*obs_shape), z(), jnp.int32(0), jnp.int32(0))

    def add(self, batch: dict, keep=True) -> Buffer:
        """Write ``n`` transitions at the pointer (wrapping around, oldest overwritten); where ``keep``
        (a traced bool) is false, nothing is written (the scatter drops them) and the pointer stays."""
        cap = self.reward.shape[0]
        n = batch["reward"].shape[0]
        idx = jnp.where(keep, (self.ptr + jnp.arange(n)) % cap, cap)  # cap: out of range, dropped
        new = {k: getattr(self, k).at[idx].set(batch[k].astype(jnp.float32), mode="drop") for k in batch}
        m = jnp.where(keep, n, 0)
        return self.replace(**new, ptr=(self.ptr + m) % cap, size=jnp.minimum(self.size + m, cap))

    def sample(self, key, batch_size: int) -> dict:
        i = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return {k: getattr(self, k)[i] for k in ("obs", "action", "reward", "next_obs", "terminated")}


@struct.dataclass
class Player:
    """One SAC agent's learned state."""

    actor: Any
    critic: Any        # two Q-networks stacked on a leading axis
    target: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any


class SACLearner:
    """Networks and one gradient step of a SAC agent; :class:`SAC` has one, QARL two (protagonist and
    adversary).  ``alpha`` may be given per sample (the adversary's curriculum temperature)."""

    def __init__(self, act_dim: int, actor_hidden, critic_hidden, target_entropy: float | None = None,
                 autotune: bool = True, init_alpha: float = 1.0, critic_layer_norm: bool = False):
        self.act_dim = act_dim
        self.actor_net = Actor(tuple(actor_hidden), act_dim)
        self.q_net = QNet(tuple(critic_hidden), bool(critic_layer_norm))
        self.target_entropy = -float(act_dim) if target_entropy is None else float(target_entropy)
        self.autotune = autotune
        self.init_alpha = float(init_alpha)

    @staticmethod
    def txs(hp):
        """Adam for the actor (``actor_lr``), the critics and the temperature (``lr``)."""
        return optax.adam(hp["actor_lr"]), optax.adam(hp["lr"])

    def init(self, key, obs_dim: int, hp) -> Player:
        k_a, k_q = jax.random.split(key)
        o, a = jnp.zeros((1, obs_dim)), jnp.zeros((1, self.act_dim))
        actor = self.actor_net.init(k_a, o)
        critic = jax.vmap(lambda k: self.q_net.init(k, o, a))(jax.random.split(k_q, 2))
        log_alpha = jnp.log(jnp.float32(self.init_alpha))
        tx_a, tx_c = self.txs(hp)
        return Player(actor, critic, critic, log_alpha, tx_a.init(actor), tx_c.init(critic), tx_c.init(log_alpha))

    def q_all(self, critic, obs, a):
        return jax.vmap(lambda p: self.q_net.apply(p, obs, a))(critic)  # [2, B]

    def sample(self, actor, obs, key):
        """``(a, log π(a|s))`` with ``a = tanh(u)`` in [−1, 1]."""
        mean, log_std = self.actor_net.apply(actor, obs)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return jnp.tanh(u), tanh_log_prob(u, mean, log_std)

    def mode(self, actor, obs):
        return jnp.tanh(self.actor_net.apply(actor, obs)[0])

    def step(self, p: Player, b: dict, hp, key, alpha=None):
        """One gradient step on batch ``b`` (``obs, action, reward, next_obs, terminated``);
        ``alpha``: ``None`` for the learned temperature, else a fixed value per sample."""
        tx_a, tx_c = self.txs(hp)
        k_next, k_pi = jax.random.split(key)
        learned = alpha is None
        alpha = jnp.exp(p.log_alpha) if learned else alpha
        a_next, logp_next = self.sample(p.actor, b["next_obs"], k_next)
        q_next = self.q_all(p.target, b["next_obs"], a_next).min(0)
        y = jax.lax.stop_gradient(critic_targets(b["reward"], b["terminated"], q_next, logp_next, alpha, hp["gamma"]))

        def q_loss(critic):
            q = self.q_all(critic, b["obs"], b["action"])
            return jnp.sum(jnp.mean((q - y[None]) ** 2, axis=1)), q.mean()

        (l_q, q_mean), g_q = jax.value_and_grad(q_loss, has_aux=True)(p.critic)
        upd, critic_opt = tx_c.update(g_q, p.critic_opt, p.critic)
        critic = optax.apply_updates(p.critic, upd)

        def pi_loss(actor):
            a, logp = self.sample(actor, b["obs"], k_pi)
            return actor_loss(logp, self.q_all(critic, b["obs"], a).min(0), alpha), logp

        (l_pi, logp), g_pi = jax.value_and_grad(pi_loss, has_aux=True)(p.actor)
        upd, actor_opt = tx_a.update(g_pi, p.actor_opt, p.actor)
        actor = optax.apply_updates(p.actor, upd)
        log_alpha, alpha_opt, l_a = p.log_alpha, p.alpha_opt, jnp.float32(0.0)
        if learned and self.autotune:
            l_a, g_a = jax.value_and_grad(alpha_loss)(p.log_alpha, logp, self.target_entropy)
            upd, alpha_opt = tx_c.update(g_a, p.alpha_opt, p.log_alpha)
            log_alpha = optax.apply_updates(p.log_alpha, upd)
        target = optax.incremental_update(critic, p.target, hp["tau"])
        new = Player(actor, critic, target, log_alpha, actor_opt, critic_opt, alpha_opt)
        return new, {"critic_loss": l_q, "actor_loss": l_pi, "alpha_loss": l_a, "alpha": jnp.mean(jnp.exp(log_alpha) if learned else alpha),
                     "entropy": -logp.mean(), "q_mean": q_mean}


@struct.dataclass
class SACState:
    agent: Player
    buffer: Buffer
    env_state: Any
    obs: jax.Array
    rng: jax.Array
    eval_rng: jax.Array  # evaluation base key: a function of the run's seed only (purejaxrl.evalkeys)
    obs_norm: ObsNorm    # running observation statistics (used with normalize_observations)


class SAC(Algorithm):
    name = "sac"
    HPARAMS = ("lr", "actor_lr", "gamma", "tau")
    HPARAM_BOUNDS = {"lr": (0.0, math.inf, True), "actor_lr": (0.0, math.inf, True), "gamma": (0.0, 1.0, False),
                     "tau": (0.0, 1.0, True)}
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
        self.low, self.high = float(self.env.action_space.low), float(self.env.action_space.high)
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.obs_dim = int(np.prod(self.env.observation_shape))
        self.normalize_observations = bool(c.get("normalize_observations", False))
        self.critic_layer_norm = bool(c.get("critic_layer_norm", False))
        self.learner = SACLearner(self.act_dim, c["actor_hidden"], c["critic_hidden"], c.get("target_entropy"),
                                  bool(c.get("autotune", True)), float(c.get("init_alpha", 1.0)), self.critic_layer_norm)

    # ---- observation normalisation (brax's SAC normalize_observations) ----
    def observe(self, norm: ObsNorm, obs):
        """What the networks see of env observations ``obs``: normalised by the running statistics
        when ``normalize_observations``, else ``obs`` itself."""
        return norm(obs) if self.normalize_observations else obs

    def observe_batch(self, norm: ObsNorm, b: dict) -> dict:
        """A replay batch as the networks see it: the buffer keeps raw observations and every gradient
        step normalises them with the current statistics (as brax's SAC); only the env's part of
        each row (its first ``norm.mean.size`` entries: QARL appends its context after them)."""
        if not self.normalize_observations:
            return b
        d = norm.mean.shape[-1]
        cut = lambda o: jnp.concatenate([norm(o[:, :d]), o[:, d:]], -1)  # noqa: E731
        return {**b, "obs": cut(b["obs"]), "next_obs": cut(b["next_obs"])}

    def observed(self, norm: ObsNorm, obs) -> ObsNorm:
        """The statistics with a batch of env observations merged in (unchanged when off)."""
        return norm.update(obs) if self.normalize_observations else norm

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

    def to_env(self, a):
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    def greedy_action(self, state, obs):
        return self.to_env(self.learner.mode(state.agent.actor, self.observe(state.obs_norm, obs)))

    def params(self, state):
        return (state.agent.actor, state.agent.critic, state.agent.log_alpha)

    def init(self, key, hp, data=None):
        seed_key = key
        k_agent, k_env, key = jax.random.split(key, 3)
        obs, env_state = self.make_venv(self.num_envs, hp).reset(k_env)
        return SACState(self.learner.init(k_agent, self.obs_dim, hp),
                        Buffer.empty(self.buffer_size, (self.obs_dim,), self.act_dim), env_state, obs, key,
                        evalkeys.run_key(seed_key), ObsNorm.empty((self.obs_dim,)))

    # ---- acting ----
    def collect(self, state, hp, i):
        """``steps_per_update`` steps of every env (uniform random actions before
        ``learning_starts``); the transitions go to the buffer with the true next observation."""
        venv = self.make_venv(self.num_envs, hp)
        random_phase = i * self.units_per_update < self.learning_starts

        def step(carry, _):
            obs, env_state, buf, rng = carry
            rng, k_act, k_rand, k_env = jax.random.split(rng, 4)
            a_pol, _ = self.learner.sample(state.agent.actor, self.observe(state.obs_norm, obs), k_act)
            a = jnp.where(random_phase, jax.random.uniform(k_rand, a_pol.shape, minval=-1.0, maxval=1.0), a_pol)
            obs2, env_state, reward, term, trunc, info = venv.step(k_env, env_state, self.to_env(a))
            buf = buf.add({"obs": obs, "action": a, "reward": reward, "next_obs": true_next_obs(obs2, term, trunc, info),
                           "terminated": term})
            ep = {k: info[k] for k in ("episode_return", "episode_length", "episode_done")}
            return (obs2, env_state, buf, rng), (ep, obs)

        (obs, env_state, buf, rng), (episode, seen) = jax.lax.scan(
            step, (state.obs, state.env_state, state.buffer, state.rng), None, self.steps_per_update)
        norm = self.observed(state.obs_norm, seen)  # after acting, before learning (brax's order)
        return state.replace(obs=obs, env_state=env_state, buffer=buf, rng=rng, obs_norm=norm), episode

    def update(self, state, hp, i, data=None):
        state, episode = self.collect(state, hp, i)
        rng, key = jax.random.split(state.rng)
        state = state.replace(rng=rng)

        def step(agent, k):
            k_b, k_s = jax.random.split(k)
            b = self.observe_batch(state.obs_norm, state.buffer.sample(k_b, self.batch_size))
            return self.learner.step(agent, b, hp, k_s)

        agent, m = learn_phase(step, state.agent, key, self.gradient_steps,
                               (i + 1) * self.units_per_update > self.learning_starts)
        return state.replace(agent=agent), {**m, **episode_metrics(episode)}


def true_next_obs(obs2, terminated, truncated, info):
    """The observation a transition ended in: the next one, or (the env auto-reset) the final one."""
    done = jnp.logical_or(terminated, truncated)
    return jnp.where(done.reshape(done.shape + (1,) * (obs2.ndim - 1)), info["final_observation"], obs2)


def learn_phase(step, agent, key, n: int, learning):
    """``n`` gradient steps ``step(agent, key) -> (agent, metrics)`` when ``learning`` (a traced bool
    of the unbatched update index, so a branch under vmap), else none; metrics averaged, zeros while
    not learning (the ``learning`` column says which)."""
    def learn(a):
        a, m = jax.lax.scan(step, a, jax.random.split(key, n))
        return a, jax.tree.map(lambda x: x.mean(), m)

    shapes = jax.eval_shape(learn, agent)[1]

    def wait(a):
        return a, {**jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes), "alpha": jnp.exp(a.log_alpha)}

    agent, m = jax.lax.cond(learning, learn, wait, agent)
    return agent, {**m, "learning": jnp.asarray(learning, jnp.float32)}
