"""The Learned Policy Gradient agent (Oh et al. 2020; temporally aware: Jackson et al. 2024).

Each update rolls out ``num_steps`` × ``num_envs`` steps with the policy, asks the update rule
(:mod:`purejaxrl.update_rules`: the meta-network, or the hand-written ``a2c`` rule) for the targets
(π̂_t, ŷ_t) from the trajectory, and takes one gradient step on

    −mean_t[ log π(a_t|s_t) · π̂_t ] + y_coef · mean_t[ KL(y(s_t) ‖ ŷ_t) ]

(π̂, ŷ and the rule's inputs carry no gradient).  The rule's parameters are a traced hyperparameter
(``hp["update_rule"]``), as a learned PPO objective's are, so one compiled program trains agents for
many candidate rules (what meta-training by evolution strategies vmaps over).  The agent has a policy
tower and a prediction tower (``network``: an MLP; ``num_layers: 0`` is the tabular agent, a linear
map of the one-hot state), each with its own learning rate (``lr``, ``y_lr``).

Lifetimes (``random_lifetime: [lo, hi]``, TA-LPG's meta-training): each agent draws its lifetime N
log-uniformly among the integers lo..hi when it starts (from its seed, as its grid-world level is);
the program runs ``total_timesteps`` (at least hi updates) for every agent and an agent's updates
after its own N are discarded (its rollouts go on with the parameters it had at N, so its training
episodes after N are those of its final policy).  A time-aware rule reads n/N and log N of the
agent's own lifetime.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import struct

from purejaxrl import evalkeys, returns, update_rules
from purejaxrl.algos.base import INF, RolloutAlgorithm
from purejaxrl.networks import NetworkSpec, Torso, categorical_entropy, resolve_spec
from purejaxrl.rollout import episode_metrics, rollout


class LPGAgent(nn.Module):
    """Policy logits and prediction-vector logits from separate torsos."""

    spec: NetworkSpec
    action_dim: int
    y_dim: int

    @nn.compact
    def __call__(self, obs):
        logits = nn.Dense(self.action_dim, name="pi_head")(Torso(self.spec, name="pi_torso")(obs))
        y_logits = nn.Dense(self.y_dim, name="y_head")(Torso(self.spec, name="y_torso")(obs))
        return logits, y_logits


@struct.dataclass
class LPGState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    rng: jax.Array
    eval_rng: jax.Array
    lifetime: jax.Array  # N, the updates this agent makes (the run's updates unless random_lifetime)


def rule_sizes(cfg) -> dict:
    """The meta-network's GRU width (``algo.rule_hidden``; the references' 256)."""
    return {"hidden": int(cfg.get("rule_hidden", 256))}


def kl_categorical(p, q, eps=1e-8):
    """KL(p ‖ q) over the last axis."""
    return jnp.sum(p * (jnp.log(p + eps) - jnp.log(q + eps)), -1)


class LPG(RolloutAlgorithm):
    name = "lpg"
    DISCRETE_ONLY = True
    HPARAMS = ("lr", "y_lr", "max_grad_norm", "gamma", "y_coef")
    HPARAM_BOUNDS = {"lr": (0.0, INF, False), "y_lr": (0.0, INF, False), "max_grad_norm": (0.0, INF, True),
                     "gamma": (0.0, 1.0, False), "y_coef": (0.0, INF, False)}
    NETWORK_DEFAULTS = {"hidden_size": 32, "num_layers": 1, "layer_norm": False, "activation": "relu"}

    @classmethod
    def config_errors(cls, cfg):
        errs = super().config_errors(cfg)
        if int(cfg.get("num_epochs", 1)) != 1 or int(cfg.get("num_minibatches", 1)) != 1:
            errs.append("algo=lpg takes one gradient step per rollout on the whole trajectory (the update rule reads "
                        "it in time order): set algo.num_epochs=1 and algo.num_minibatches=1")
        rule = cfg.get("update_rule", "a2c")
        if rule == "learned":
            if not cfg.get("update_rule_path"):
                errs.append("algo.update_rule=learned needs algo.update_rule_path=DIR (a directory saved by save_rule)")
        elif rule not in ("a2c", "lpg", "ta_lpg"):
            errs.append(f"algo.update_rule={rule!r} is unknown; valid: a2c, lpg, ta_lpg, learned")
        life = cfg.get("random_lifetime")
        if life is not None:
            ok = (isinstance(life, (list, tuple)) and len(life) == 2 and all(isinstance(v, int) and v >= 1 for v in life)
                  and life[0] <= life[1])
            if not ok:
                errs.append(f"algo.random_lifetime={life!r} must be null or [lo, hi], integers 1 <= lo <= hi (updates)")
            elif cfg.get("lr_linear_decay"):
                errs.append("algo.random_lifetime with algo.lr_linear_decay=true would anneal over the run, not each agent's "
                            "lifetime; set algo.lr_linear_decay=false")
            elif all(k in cfg for k in ("total_timesteps", "num_envs", "num_steps")):
                updates = int(cfg["total_timesteps"]) // (int(cfg["num_envs"]) * int(cfg["num_steps"]))
                if life[1] > updates:
                    errs.append(f"algo.random_lifetime={list(life)}: the longest lifetime ({life[1]} updates) is longer than "
                                f"the run ({updates} updates); set algo.total_timesteps="
                                f"{life[1] * int(cfg['num_envs']) * int(cfg['num_steps'])}")
        if not isinstance(cfg.get("rule_hidden", 256), int) or cfg.get("rule_hidden", 256) < 1:
            errs.append(f"algo.rule_hidden={cfg.get('rule_hidden')!r} must be an integer >= 1")
        if cfg.get("optimizer", "adam") not in ("adam", "sgd"):
            errs.append(f"algo.optimizer={cfg['optimizer']!r}; valid: adam, sgd")
        return errs

    def __init__(self, algo_cfg, env_cfg, network_cfg, rule: update_rules.UpdateRule | None = None):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        space = self.env.action_space
        if rule is None:
            name = self.cfg.get("update_rule", "a2c")
            rule = (update_rules.load_rule(self.cfg["update_rule_path"]) if name == "learned"
                    else update_rules.make_rule(name, jax.random.PRNGKey(int(self.cfg.get("update_rule_seed") or 0)),
                                                **rule_sizes(self.cfg)))
        self.rule = rule
        spec = resolve_spec(network_cfg, self.NETWORK_DEFAULTS, self.env.observation_shape)
        self.network = LPGAgent(spec, space.n, rule.spec["y_dim"])

    def extra_hparams(self):
        return {} if self.rule.params is None else {"update_rule": self.rule.params}

    def _tx(self, hp):
        base = optax.adam if self.cfg.get("optimizer", "adam") == "adam" else optax.sgd

        def tower(lr):
            return self.make_optimizer({**hp, "lr": lr}, 1, lambda learning_rate: base(learning_rate))

        label = lambda params: {k: jax.tree.map(lambda _: "pi" if k.startswith("pi") else "y", v)  # noqa: E731
                                for k, v in params["params"].items()}
        return optax.multi_transform({"pi": tower(hp["lr"]), "y": tower(hp["y_lr"])}, lambda p: {"params": label(p)})

    @property
    def _grid_family(self):
        """The grid world of a random family (its agent keeps one level on all its envs), or None."""
        from envs.gridworld import GridWorld

        gw = self.env.unwrapped
        return gw if isinstance(gw, GridWorld) and gw.fixed is None else None

    def init(self, key, hp, data=None):
        seed_key = key
        k_net, k_env, k_level, key = jax.random.split(key, 4)
        obs, env_state = self.make_venv(self.num_envs, hp).reset(k_env)
        if self._grid_family is not None:  # one level per agent (per run), for its whole lifetime
            from envs.gridworld import onto_level

            gw = self._grid_family
            obs, env_state = onto_level(env_state, gw.sample_level(k_level), gw.observation)
        params = self.network.init(k_net, obs[:1])
        return LPGState(params, self._tx(hp).init(params), env_state, obs, key, evalkeys.run_key(seed_key),
                        self.draw_lifetime(seed_key))

    def draw_lifetime(self, seed_key):
        """N: log-uniform among the integers ``random_lifetime`` (from the agent's seed), else the run's updates."""
        life = self.cfg.get("random_lifetime")
        if life is None:
            return jnp.asarray(self.num_updates, jnp.int32)
        lo, hi = float(life[0]), float(life[1])
        u = jax.random.uniform(jax.random.fold_in(seed_key, 0x11FE), (), minval=np.log(lo - 0.5), maxval=np.log(hi + 0.5))
        return jnp.clip(jnp.round(jnp.exp(u)), lo, hi).astype(jnp.int32)

    def greedy_returns(self, state, hp, key, num_envs):
        """Greedy episodes on the agent's own level when it trains on a random grid-world family."""
        if self._grid_family is None:
            return super().greedy_returns(state, hp, key, num_envs)
        from envs.gridworld import level_of, onto_level
        from purejaxrl.algos.base import greedy_episode_returns

        gw, level = self._grid_family, level_of(state.env_state)
        return greedy_episode_returns(self.make_venv(num_envs, hp, evaluation=True),
                                      lambda obs: self.greedy_action(state, obs), key,
                                      lambda st: onto_level(st, level, gw.observation))

    def greedy_action(self, state, obs):
        return jnp.argmax(self.network.apply(state.params, obs)[0], -1)

    def _y(self, params, obs):
        return jax.nn.softmax(self.network.apply(params, obs)[1], -1)

    def rule_inputs(self, params, rule_params, traj, last_obs, progress, lifetime):
        """The rule's inputs ``[T, B, F]`` and episode boundaries ``[T, B]`` (no gradient); a time-aware
        rule also reads ``progress`` (n/N) and log ``lifetime`` (N)."""
        embed = lambda o: self.rule.embed(rule_params, self._y(params, o))  # noqa: E731
        e_next = returns.next_state_values(traj.extras["emb"], embed(last_obs), traj.truncated, traj.final_value)
        d = traj.terminated.astype(jnp.float32)
        cols = [traj.reward, d, traj.extras["prob"], traj.extras["emb"], e_next * (1.0 - d)]
        if self.rule.spec.get("time_aware"):
            cols += [jnp.full_like(d, progress), jnp.full_like(d, jnp.log(jnp.asarray(lifetime, jnp.float32)))]
        return jnp.stack(cols, -1), traj.terminated | traj.truncated

    def update(self, state, hp, i, data=None):
        params = state.params
        rule_params = hp.get("update_rule")
        embed = lambda o: self.rule.embed(rule_params, self._y(params, o))  # noqa: E731

        def policy(obs, key):
            logits, y_logits = self.network.apply(params, obs)
            action = jax.random.categorical(key, logits)
            prob = jnp.exp(jax.nn.log_softmax(logits)[jnp.arange(action.shape[0]), action])
            return action, {"prob": prob, "emb": self.rule.embed(rule_params, jax.nn.softmax(y_logits, -1))}

        (obs, env_state, rng), traj = rollout(self.make_venv(self.num_envs, hp), policy, state.obs, state.env_state,
                                              state.rng, self.num_steps, embed)
        progress = jnp.asarray(i, jnp.float32) / state.lifetime
        x, reset = self.rule_inputs(params, rule_params, traj, obs, progress, state.lifetime)
        pi_hat, y_hat = jax.lax.stop_gradient(self.rule.targets(rule_params, x, reset, hp["gamma"]))

        def loss_fn(p):
            logits, y_logits = self.network.apply(p, traj.obs)
            logp = jax.nn.log_softmax(logits)
            logp_a = jnp.take_along_axis(logp, traj.action[..., None], -1)[..., 0]
            pi_loss = -jnp.mean(logp_a * pi_hat)
            y_kl = jnp.mean(kl_categorical(jax.nn.softmax(y_logits, -1), y_hat))
            return pi_loss + hp["y_coef"] * y_kl, {"policy_loss": pi_loss, "y_kl": y_kl,
                                                    "entropy": categorical_entropy(logits).mean(),
                                                    "pi_hat_mean": pi_hat.mean(), "pi_hat_std": pi_hat.std()}

        (loss, m), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = self._tx(hp).update(g, state.opt_state, params)
        live = jnp.asarray(i) < state.lifetime  # an update past the agent's lifetime is discarded
        params = jax.tree.map(lambda a, b: jnp.where(live, a, b), optax.apply_updates(params, upd), params)
        opt_state = jax.tree.map(lambda a, b: jnp.where(live, a, b), opt_state, state.opt_state)
        new = state.replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs, rng=rng)
        return new, {"loss": loss, **m, **episode_metrics(traj.episode)}


__all__ = ["LPG", "LPGAgent", "LPGState", "kl_categorical", "rule_sizes"]
