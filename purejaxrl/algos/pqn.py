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

from purejaxrl import evalkeys, returns, schedules
from purejaxrl.algos.base import INF, RolloutAlgorithm
from purejaxrl.networks import QNetwork, resolve_spec
from purejaxrl.rollout import episode_metrics, flatten_time, minibatch_sgd, rollout


@struct.dataclass
class PQNState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    rng: jax.Array
    eval_rng: jax.Array  # evaluation base key: a function of the run's seed only (purejaxrl.evalkeys)


class PQN(RolloutAlgorithm):
    name = "pqn"
    HPARAMS = ("lr", "max_grad_norm", "gamma", "lam", "eps_start", "eps_finish", "eps_decay", "reward_scale")
    HPARAM_BOUNDS = {
        "lr": (0.0, INF, False),
        "max_grad_norm": (0.0, INF, True),
        "gamma": (0.0, 1.0, False),
        "lam": (0.0, 1.0, False),
        "eps_start": (0.0, 1.0, False),
        "eps_finish": (0.0, 1.0, False),
        "eps_decay": (0.0, INF, False),
        "reward_scale": (0.0, INF, True),
    }
    NETWORK_DEFAULTS = {"hidden_size": 256, "num_layers": 2, "layer_norm": True, "activation": "relu"}
    DISCRETE_ONLY = True

    def __init__(self, algo_cfg, env_cfg, network_cfg):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        errs = self.env_errors(self.env)
        if errs:
            from purejaxrl.errors import ConfigError

            raise ConfigError(errs[0])
        self.num_actions = self.env.action_space.n
        self.network = QNetwork(resolve_spec(network_cfg, self.NETWORK_DEFAULTS, self.env.observation_shape), self.num_actions)
        self.time_limit_as_terminal = bool(self.cfg.get("time_limit_as_terminal", False))

    def _tx(self, hp):
        return self.make_optimizer(hp, self.num_epochs * self.num_minibatches, optax.radam)

    def init(self, key, hp, data=None):
        seed_key = key
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = self.make_venv(self.num_envs, hp).reset(k_env)
        params = self.network.init(k_net, obs[:1])
        return PQNState(params, self._tx(hp).init(params), env_state, obs, key, evalkeys.run_key(seed_key))

    def greedy_action(self, state, obs):
        return jnp.argmax(self.network.apply(state.params, obs), axis=-1)

    def max_q(self, params, obs):
        return self.network.apply(params, obs).max(-1)

    def collect(self, state, hp, i):
        """ε-greedy rollout; ``extras["q_max"] = max_a Q(s_t, a)`` is cached while acting."""
        eps = schedules.linear(hp["eps_start"], hp["eps_finish"], hp["eps_decay"] * self.num_updates_decay, i)

        def policy(obs, key):
            k_explore, k_rand = jax.random.split(key)
            q = self.network.apply(state.params, obs)
            explore = jax.random.uniform(k_explore, (obs.shape[0],)) < eps
            random_a = jax.random.randint(k_rand, (obs.shape[0],), 0, self.num_actions)
            return jnp.where(explore, random_a, jnp.argmax(q, -1)), {"q_max": q.max(-1)}

        final_value = None if self.time_limit_as_terminal else (lambda o: self.max_q(state.params, o))
        carry, traj = rollout(self.make_venv(self.num_envs, hp), policy, state.obs, state.env_state, state.rng,
                              self.num_steps, final_value)
        return carry, traj, eps

    def targets(self, traj, last_obs, params, hp):
        """Peng's Q(λ) targets, bootstrapping from the final observation at a time limit."""
        next_v = traj.next_values(traj.extras["q_max"], self.max_q(params, last_obs))
        return returns.q_lambda_targets(traj.reward * hp["reward_scale"], traj.terminated, traj.truncated,
                                        next_v, hp["gamma"], hp["lam"])

    def loss(self, params, mb):
        """``½ (Q(s, a) − target)²`` on a minibatch, and the mean Q(s, a) as a metric."""
        q = self.network.apply(params, mb["obs"])
        q_a = jnp.take_along_axis(q, mb["action"][:, None], axis=-1)[:, 0]
        return 0.5 * jnp.mean((q_a - mb["target"]) ** 2), {"q_values": q_a.mean()}

    def update(self, state, hp, i, data=None):
        (obs, env_state, rng), traj, eps = self.collect(state, hp, i)
        targets = self.targets(traj, obs, state.params, hp)
        batch = flatten_time({"obs": traj.obs, "action": traj.action.astype(jnp.int32), "target": targets})
        params, opt_state, rng, m = minibatch_sgd(self.loss, self._tx(hp), state.params, state.opt_state, batch, rng,
                                                  self.num_epochs, self.num_minibatches)
        metrics = {**m, "epsilon": eps, **episode_metrics(traj.episode)}
        return state.replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs, rng=rng), metrics
