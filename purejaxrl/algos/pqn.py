"""PQN: parallelised Q-learning with LayerNorm and Peng's Q(λ), no replay, no target network.

Gallici et al., "Simplifying Deep Temporal Difference Learning" (2024).  One update:

1. roll out ``num_steps`` × ``num_envs`` ε-greedy steps, caching ``max_a Q(s_t, a)`` while acting;
2. Peng's Q(λ) targets from the cached values (``returns.q_lambda_targets``), bootstrapping from
   the true final observation at a time limit (``time_limit_as_terminal`` reproduces the
   reference code, which treats it as terminal);
3. ``num_epochs`` × ``num_minibatches`` steps of ``½ (Q(s, a) − G)²`` with clip-by-global-norm and
   RAdam, one shuffle and one gather of the packed ``[obs, action, target]`` batch per epoch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs as _envs
from purejaxrl import returns, schedules
from purejaxrl.algos.base import Algorithm, episode_fields, episode_metrics
from purejaxrl.networks import QNetwork, resolve_spec


@struct.dataclass
class PQNState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    rng: jax.Array


class PQN(Algorithm):
    name = "pqn"
    HPARAMS = ("lr", "max_grad_norm", "gamma", "lam", "eps_start", "eps_finish", "eps_decay", "reward_scale")
    NETWORK_DEFAULTS = {"hidden_size": 256, "num_layers": 2, "layer_norm": True, "activation": "relu"}

    def __init__(self, algo_cfg, env_cfg, network_cfg):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        if not isinstance(self.env.action_space, _envs.Discrete):
            raise ValueError(f"PQN needs discrete actions; {self.env.name} has {self.env.action_space}. Use algo=ppo.")
        self.num_actions = self.env.action_space.n
        self.network = QNetwork(resolve_spec(network_cfg, self.NETWORK_DEFAULTS, self.env.observation_shape), self.num_actions)
        self.venv = _envs.EpisodeStats(_envs.VecEnv(self.env, self.num_envs))
        self.num_epochs = int(self.cfg["num_epochs"])
        self.num_minibatches = int(self.cfg["num_minibatches"])
        self.time_limit_as_terminal = bool(self.cfg.get("time_limit_as_terminal", False))

    def _tx(self, hp):
        return self.make_optimizer(hp, self.num_epochs * self.num_minibatches, optax.radam)

    def init(self, key, hp):
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = self.venv.reset(k_env)
        params = self.network.init(k_net, obs[:1])
        return PQNState(params, self._tx(hp).init(params), env_state, obs, key)

    def greedy_action(self, state, obs):
        return jnp.argmax(self.network.apply(state.params, obs), axis=-1)

    def max_q(self, params, obs):
        return self.network.apply(params, obs).max(-1)

    def update(self, state, hp, i):
        apply = self.network.apply
        eps = schedules.linear(hp["eps_start"], hp["eps_finish"], hp["eps_decay"] * self.num_updates_decay, i)
        zeros = jnp.zeros((self.num_envs,), jnp.float32)

        def env_step(carry, _):
            obs, env_state, rng = carry
            rng, k_explore, k_rand, k_env = jax.random.split(rng, 4)
            q = apply(state.params, obs)
            explore = jax.random.uniform(k_explore, (self.num_envs,)) < eps
            random_a = jax.random.randint(k_rand, (self.num_envs,), 0, self.num_actions)
            action = jnp.where(explore, random_a, jnp.argmax(q, -1))
            obs2, env_state, reward, term, trunc, info = self.venv.step(k_env, env_state, action)
            if self.time_limit_as_terminal:
                term, trunc, q_final = jnp.logical_or(term, trunc), jnp.zeros_like(trunc), zeros
            else:  # bootstrap from the true last observation; skipped when no env was truncated
                q_final = jax.lax.cond(
                    jnp.any(trunc), lambda o: self.max_q(state.params, o), lambda o: zeros, info["final_observation"]
                )
            out = (obs, action, reward, term, trunc, q.max(-1), q_final, episode_fields(info))
            return (obs2, env_state, rng), out

        (obs, env_state, rng), (b_obs, b_act, b_rew, b_term, b_trunc, b_qmax, b_qfinal, b_info) = jax.lax.scan(
            env_step, (state.obs, state.env_state, state.rng), None, self.num_steps
        )
        next_v = returns.next_state_values(b_qmax, self.max_q(state.params, obs), b_trunc, b_qfinal)
        targets = returns.q_lambda_targets(b_rew * hp["reward_scale"], b_term, b_trunc, next_v, hp["gamma"], hp["lam"])

        # Pack [obs, action, target] so each epoch is one permutation and one gather.
        n = self.steps_per_update
        obs_dim = b_obs[0, 0].size
        packed = jnp.concatenate(
            [b_obs.reshape(n, obs_dim), b_act.reshape(n, 1).astype(jnp.float32), targets.reshape(n, 1)], axis=1
        )
        tx = self._tx(hp)
        obs_shape = self.env.observation_shape

        def loss_fn(params, mb):
            q = apply(params, mb[:, :obs_dim].reshape((-1,) + obs_shape))
            q_a = jnp.take_along_axis(q, mb[:, obs_dim : obs_dim + 1].astype(jnp.int32), axis=-1)[:, 0]
            err = q_a - mb[:, -1]
            return 0.5 * jnp.mean(err**2), q_a.mean()

        def sgd_step(carry, mb):
            params, opt_state = carry
            (loss, qv), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, qv)

        def epoch(carry, _):
            params, opt_state, rng = carry
            rng, k = jax.random.split(rng)
            batches = packed[jax.random.permutation(k, n)].reshape(self.num_minibatches, n // self.num_minibatches, -1)
            (params, opt_state), (loss, qv) = jax.lax.scan(sgd_step, (params, opt_state), batches)
            return (params, opt_state, rng), (loss, qv)

        (params, opt_state, rng), (loss, qv) = jax.lax.scan(
            epoch, (state.params, state.opt_state, rng), None, self.num_epochs
        )
        metrics = {"loss": loss.mean(), "q_values": qv.mean(), "epsilon": eps, **episode_metrics(b_info)}
        return PQNState(params, opt_state, env_state, obs, rng), metrics
