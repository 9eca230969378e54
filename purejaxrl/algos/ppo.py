"""PPO (Schulman et al. 2017), discrete and continuous actions.

GAE with time-limit bootstrapping from the true final observation, clipped value loss, entropy
bonus, linearly annealed learning rate, optional running observation normalisation (kept in the
training state and applied inside the policy, so a saved policy carries it) and reward
normalisation (by a running std of the discounted return, with the traced γ).

Observation normalisation: the statistics used to act in a rollout are the ones the loss uses for
that rollout (so ``logp_old`` and ``v_old`` are the values of the same function the loss
differentiates, and with ``lr = 0`` the ratio is exactly 1); the rollout's observations are merged
into the statistics afterwards, for the next rollout.

The policy term is an :class:`purejaxrl.objectives.Objective` passed in (or a built-in named by
``algo.objective``): ``fn(ratio, log_ratio, advantages, hp, progress)`` is the per-sample loss to
minimise; its parameters, if any, are traced in ``hp["objective"]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs as _envs
from purejaxrl import evalkeys, objectives, returns
from purejaxrl.algos.base import INF, RolloutAlgorithm
from purejaxrl.networks import (
    ActorCritic,
    ObsNorm,
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
    resolve_spec,
)
from purejaxrl.rollout import episode_metrics, flatten_time, minibatch_sgd, rollout


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    rng: jax.Array
    obs_norm: ObsNorm
    eval_rng: jax.Array  # evaluation base key: a function of the run's seed only (purejaxrl.evalkeys)


class PPO(RolloutAlgorithm):
    name = "ppo"
    HPARAMS = ("lr", "max_grad_norm", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef")
    HPARAM_BOUNDS = {
        "lr": (0.0, INF, False),
        "max_grad_norm": (0.0, INF, True),
        "gamma": (0.0, 1.0, False),
        "gae_lambda": (0.0, 1.0, False),
        "clip_eps": (0.0, INF, False),
        "ent_coef": (0.0, INF, False),
        "vf_coef": (0.0, INF, False),
    }
    NETWORK_DEFAULTS = {"hidden_size": 64, "num_layers": 2, "layer_norm": False, "activation": "tanh"}

    @classmethod
    def config_errors(cls, cfg):
        errs = super().config_errors(cfg)
        name = cfg.get("objective", "clip")
        if name == "learned":
            if not cfg.get("objective_path"):
                errs.append("algo.objective=learned needs algo.objective_path=DIR (e.g. outputs/<meta run>/best)")
            else:
                from purejaxrl.errors import ConfigError

                try:
                    objectives.load_objective(cfg["objective_path"])
                except ConfigError as e:
                    errs.append(str(e))
        elif name not in objectives.BUILTIN:
            errs.append(f"algo.objective={name!r} is unknown; valid: {', '.join(sorted(objectives.BUILTIN))}, learned")
        return errs

    def __init__(self, algo_cfg, env_cfg, network_cfg, objective: objectives.Objective | None = None):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        space = self.env.action_space
        self.discrete = isinstance(space, _envs.Discrete)
        action_dim = space.n if self.discrete else space.shape[0]
        spec = resolve_spec(network_cfg, self.NETWORK_DEFAULTS, self.env.observation_shape)
        self.network = ActorCritic(spec, action_dim, self.discrete)
        self.normalize_obs = bool(self.cfg.get("normalize_obs", False))
        if objective is None and self.cfg.get("objective") == "learned":
            objective = objectives.load_objective(self.cfg["objective_path"])
        self.objective = objective or objectives.builtin(self.cfg.get("objective", "clip"))

    def extra_hparams(self):
        return {} if self.objective.params is None else {"objective": self.objective.params}

    def _tx(self, hp):
        return self.make_optimizer(hp, self.num_epochs * self.num_minibatches, lambda learning_rate: optax.adam(learning_rate, eps=1e-5))

    def init(self, key, hp, data=None):
        seed_key = key
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = self.make_venv(self.num_envs, hp).reset(k_env)
        params = self.network.init(k_net, obs[:1])
        shape = self.env.observation_shape
        norm = ObsNorm.empty(shape)
        return PPOState(params, self._tx(hp).init(params), env_state, obs, key, norm, evalkeys.run_key(seed_key))

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

    def behaviour_action(self, state, obs, key):
        """An action sampled from the policy (what an offline dataset of this policy records)."""
        return self._sample(self._forward(state.params, state.obs_norm, obs), key)

    def greedy_action(self, state, obs):
        logits, _, _ = self._forward(state.params, state.obs_norm, obs)
        return jnp.argmax(logits, -1) if self.discrete else logits

    def value(self, params, norm, obs):
        return self._forward(params, norm, obs)[2]

    # ---- one update ----
    def collect(self, state, hp):
        """A rollout with the current policy; ``extras`` holds ``logp`` and ``value`` as acted."""
        params, norm = state.params, state.obs_norm

        def policy(obs, key):
            out = self._forward(params, norm, obs)
            action = self._sample(out, key)
            return action, {"logp": self._log_prob_entropy(out, action)[0], "value": out[2]}

        return rollout(self.make_venv(self.num_envs, hp), policy, state.obs, state.env_state, state.rng,
                       self.num_steps, lambda o: self.value(params, norm, o))

    def advantages(self, traj, last_obs, state, hp):
        """GAE and value targets, bootstrapping from the final observation at a time limit."""
        next_v = traj.next_values(traj.extras["value"], self.value(state.params, state.obs_norm, last_obs))
        return returns.gae_advantages(traj.reward, traj.terminated, traj.truncated, traj.extras["value"],
                                      next_v, hp["gamma"], hp["gae_lambda"])

    def update(self, state, hp, i, data=None):
        norm = state.obs_norm  # the statistics the rollout acted with: the loss uses the same
        (obs, env_state, rng), traj = self.collect(state, hp)
        adv, targets = self.advantages(traj, obs, state, hp)
        progress = jnp.asarray(i, jnp.float32) / self.num_updates  # updates done before this one / all
        objective = self.objective

        def loss_fn(p, mb):
            out = self._forward(p, norm, mb["obs"])
            logp, ent = self._log_prob_entropy(out, mb["action"])
            value, v_old, tgt = out[2], mb["value"], mb["target"]
            v_clipped = v_old + jnp.clip(value - v_old, -hp["clip_eps"], hp["clip_eps"])
            v_loss = 0.5 * jnp.maximum((value - tgt) ** 2, (v_clipped - tgt) ** 2).mean()
            adv_n = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)
            log_ratio = logp - mb["logp"]
            ratio = jnp.exp(log_ratio)
            pi_loss = objective.fn(ratio, log_ratio, adv_n, hp, progress).mean()
            entropy = ent.mean()
            total = pi_loss + hp["vf_coef"] * v_loss - hp["ent_coef"] * entropy
            approx_kl = ((ratio - 1) - log_ratio).mean()
            return total, {"policy_loss": pi_loss, "value_loss": v_loss, "entropy": entropy, "approx_kl": approx_kl}

        batch = flatten_time({"obs": traj.obs, "action": traj.action, "logp": traj.extras["logp"],
                              "value": traj.extras["value"], "adv": adv, "target": targets})
        params, opt_state, rng, m = minibatch_sgd(loss_fn, self._tx(hp), state.params, state.opt_state, batch, rng,
                                                  self.num_epochs, self.num_minibatches)
        if self.normalize_obs:  # merge this rollout's observations for the next rollout
            norm = norm.update(traj.obs)
        new = state.replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs, rng=rng, obs_norm=norm)
        return new, {**m, **episode_metrics(traj.episode)}
