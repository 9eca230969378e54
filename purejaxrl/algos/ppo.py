"""PPO (Schulman et al. 2017), discrete and continuous actions.

GAE with time-limit bootstrapping from the true final observation, clipped value loss, entropy
bonus, linearly annealed learning rate, optional running observation normalisation (kept in the
training state and applied inside the policy, so a saved policy carries it).

The policy objective is replaceable: ``policy_objective(ratio, log_ratio, advantages, hp)`` returns
the per-sample loss to minimise.  ``OBJECTIVES`` holds the built-in ones; learned objectives (LPO
and friends) register theirs with :func:`register_objective`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs as _envs
from purejaxrl import returns
from purejaxrl.algos.base import Algorithm, episode_fields, episode_metrics
from purejaxrl.networks import (
    ActorCritic,
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
    resolve_spec,
)
from envs.wrappers import running_moments


def clip_objective(ratio, log_ratio, advantages, hp):
    """PPO-clip: ``−min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)``."""
    del log_ratio
    clipped = jnp.clip(ratio, 1.0 - hp["clip_eps"], 1.0 + hp["clip_eps"])
    return -jnp.minimum(ratio * advantages, clipped * advantages)


OBJECTIVES: dict[str, Callable] = {"clip": clip_objective}


def register_objective(name: str, fn: Callable) -> None:
    OBJECTIVES[name] = fn


@struct.dataclass
class ObsNorm:
    mean: jax.Array
    var: jax.Array
    count: jax.Array

    def __call__(self, obs):
        return (obs - self.mean) / jnp.sqrt(self.var + 1e-8)


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    rng: jax.Array
    obs_norm: ObsNorm


class PPO(Algorithm):
    name = "ppo"
    HPARAMS = ("lr", "max_grad_norm", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef")
    NETWORK_DEFAULTS = {"hidden_size": 64, "num_layers": 2, "layer_norm": False, "activation": "tanh"}

    def __init__(self, algo_cfg, env_cfg, network_cfg, policy_objective: Callable | None = None):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        space = self.env.action_space
        self.discrete = isinstance(space, _envs.Discrete)
        action_dim = space.n if self.discrete else space.shape[0]
        spec = resolve_spec(network_cfg, self.NETWORK_DEFAULTS, self.env.observation_shape)
        self.network = ActorCritic(spec, action_dim, self.discrete)
        venv = _envs.EpisodeStats(_envs.VecEnv(_envs.ClipAction(self.env), self.num_envs))
        if self.cfg.get("normalize_reward", False):
            venv = _envs.NormalizeReward(venv, gamma=float(self.cfg["gamma"]))
        self.venv = venv
        self.num_epochs = int(self.cfg["num_epochs"])
        self.num_minibatches = int(self.cfg["num_minibatches"])
        self.normalize_obs = bool(self.cfg.get("normalize_obs", False))
        name = self.cfg.get("objective", "clip")
        if policy_objective is None and name not in OBJECTIVES:
            raise ValueError(f"Unknown algo.objective={name!r}; valid: {', '.join(sorted(OBJECTIVES))}")
        self.policy_objective = policy_objective or OBJECTIVES[name]

    def _tx(self, hp):
        return self.make_optimizer(hp, self.num_epochs * self.num_minibatches, lambda learning_rate: optax.adam(learning_rate, eps=1e-5))

    def init(self, key, hp):
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = self.venv.reset(k_env)
        params = self.network.init(k_net, obs[:1])
        shape = self.env.observation_shape
        norm = ObsNorm(jnp.zeros(shape), jnp.ones(shape), jnp.float32(1e-4))
        return PPOState(params, self._tx(hp).init(params), env_state, obs, key, norm)

    # ---- policy pieces ----
    def _forward(self, params, norm, obs):
        return self.network.apply(params, norm(obs) if self.normalize_obs else obs)

    def _log_prob_entropy(self, out, actions):
        logits, log_std, _ = out
        if self.discrete:
            return categorical_log_prob(logits, actions), categorical_entropy(logits)
        return gaussian_log_prob(logits, log_std, actions), gaussian_entropy(logits, log_std)

    def _sample(self, out, key):
        logits, log_std, _ = out
        if self.discrete:
            return jax.random.categorical(key, logits)
        return logits + jnp.exp(log_std) * jax.random.normal(key, logits.shape)

    def greedy_action(self, state, obs):
        logits, _, _ = self._forward(state.params, state.obs_norm, obs)
        return jnp.argmax(logits, -1) if self.discrete else logits

    def value(self, state_params, norm, obs):
        return self._forward(state_params, norm, obs)[2]

    # ---- one update ----
    def update(self, state, hp, i):
        del i
        params, norm = state.params, state.obs_norm
        zeros = jnp.zeros((self.num_envs,), jnp.float32)

        def env_step(carry, _):
            obs, env_state, rng = carry
            rng, k_act, k_env = jax.random.split(rng, 3)
            out = self._forward(params, norm, obs)
            action = self._sample(out, k_act)
            logp, _ = self._log_prob_entropy(out, action)
            obs2, env_state, reward, term, trunc, info = self.venv.step(k_env, env_state, action)
            v_final = jax.lax.cond(
                jnp.any(trunc), lambda o: self.value(params, norm, o), lambda o: zeros, info["final_observation"]
            )
            return (obs2, env_state, rng), (obs, action, logp, out[2], reward, term, trunc, v_final, episode_fields(info))

        (obs, env_state, rng), (b_obs, b_act, b_logp, b_val, b_rew, b_term, b_trunc, b_vfinal, b_info) = jax.lax.scan(
            env_step, (state.obs, state.env_state, state.rng), None, self.num_steps
        )
        next_v = returns.next_state_values(b_val, self.value(params, norm, obs), b_trunc, b_vfinal)
        adv, targets = returns.gae_advantages(b_rew, b_term, b_trunc, b_val, next_v, hp["gamma"], hp["gae_lambda"])

        if self.normalize_obs:  # statistics of this rollout are merged after acting with the old ones
            flat = b_obs.reshape((-1,) + self.env.observation_shape)
            norm = ObsNorm(*running_moments(norm.mean, norm.var, norm.count, flat))

        n = self.steps_per_update
        batch = jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), (b_obs, b_act, b_logp, b_val, adv, targets))
        tx = self._tx(hp)

        def loss_fn(p, mb):
            obs_, act_, logp_old, v_old, adv_, tgt = mb
            out = self._forward(p, norm, obs_)
            logp, ent = self._log_prob_entropy(out, act_)
            value = out[2]
            v_clipped = v_old + jnp.clip(value - v_old, -hp["clip_eps"], hp["clip_eps"])
            v_loss = 0.5 * jnp.maximum((value - tgt) ** 2, (v_clipped - tgt) ** 2).mean()
            adv_n = (adv_ - adv_.mean()) / (adv_.std() + 1e-8)
            log_ratio = logp - logp_old
            ratio = jnp.exp(log_ratio)
            pi_loss = self.policy_objective(ratio, log_ratio, adv_n, hp).mean()
            entropy = ent.mean()
            total = pi_loss + hp["vf_coef"] * v_loss - hp["ent_coef"] * entropy
            approx_kl = ((ratio - 1) - log_ratio).mean()
            return total, (pi_loss, v_loss, entropy, approx_kl)

        def sgd_step(carry, mb):
            p, opt_state = carry
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, mb)
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), aux

        def epoch(carry, _):
            p, opt_state, rng = carry
            rng, k = jax.random.split(rng)
            perm = jax.random.permutation(k, n)
            mbs = jax.tree.map(lambda x: x[perm].reshape((self.num_minibatches, -1) + x.shape[1:]), batch)
            (p, opt_state), aux = jax.lax.scan(sgd_step, (p, opt_state), mbs)
            return (p, opt_state, rng), aux

        (params, opt_state, rng), (pi_loss, v_loss, entropy, kl) = jax.lax.scan(
            epoch, (params, state.opt_state, rng), None, self.num_epochs
        )
        metrics = {
            "policy_loss": pi_loss.mean(),
            "value_loss": v_loss.mean(),
            "entropy": entropy.mean(),
            "approx_kl": kl.mean(),
            **episode_metrics(b_info),
        }
        return PPOState(params, opt_state, env_state, obs, rng, norm), metrics
