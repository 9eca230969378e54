"""QARL (Reddi et al., ICLR 2024): a SAC protagonist against a SAC adversary whose temperature α_A
follows a curriculum from nearly random toward fully rational; RARL, a fixed temperature and no
adversary from the same code.

The game is ``max_{π_P} min_{π_A} E Σ γ^t [r + α_P·H(π_P) − α_A·H(π_A)]``.  The adversary pushes
the protagonist through :class:`envs.adversarial.ForceAdversary` and is rewarded ``−r``.  Its
temperature is not learned: each episode draws ``α_A ~ Gamma(c, rate)`` (``rate`` = 1000), and
``α_A`` is appended to both players' observations.  Players learn in alternating phases of
``phase_updates`` updates (adversary first, the protagonist frozen; then the protagonist), both
acting throughout; the protagonist tunes α_P toward entropy −dim(A_P) as SAC.

Curricula (``algo.curriculum``) on the Gamma shape ``c``:

* ``self_paced`` (QARL): after every ``context_samples`` finished episodes ``(α_k, R_k)`` (``R_k``
  the discounted return, as the reference, of rewards per control step: with ``action_repeat`` k an
  agent step's summed reward counts 1/k, so ``performance_threshold`` δ keeps the reference's scale,
  where dm_control's action repeat does not sum rewards), the next shape is the ``c'`` between the target and
  the current one that minimises ``KL(Gamma(c') ‖ Gamma(c_target))`` subject to the
  importance-weighted return ``mean_k [p_{c'}(α_k) / p_{c_k}(α_k)] · R_k ≥ performance_threshold``
  (``c_k`` the shape ``α_k`` was drawn from) and ``KL(Gamma(c') ‖ Gamma(c)) ≤ kl_bound``; the
  shape stays while the return at ``c`` itself is below the threshold (the gate; logged every update
  as ``curriculum_performance``, ``curriculum_held`` and ``curriculum_steps``) or no ``c'`` qualifies;
* ``linear``: ``c`` from ``c_start`` to ``c_target`` over the first ``linear_fraction`` of training;
* ``fixed``: ``c = c_start`` throughout;
* ``rarl``: RARL — no curriculum: the adversary is an ordinary SAC agent with a temperature of its own,
  tuned toward entropy ``−dim(A_adv)`` from ``adversary.init_alpha`` = 0.005 (the reference's RARL);
  ``adversary.alpha=0`` is the deterministic-attacker ablation (an α = 0 actor collapses to its
  smallest σ and stops exploring);
* ``none``: no adversary (its actions are zero): plain SAC with the same networks, learning every update;
* ``phased``: no adversary, the alternation kept — the protagonist learns only in its phases, as every
  adversarial protagonist does: the same-schedule baseline of RARL and QARL;
* ``force_budget``: the force-budget baseline — an adversary with its own temperature (as ``rarl``)
  whose budget grows linearly from 0 to ``adversary.max_force`` over the first ``linear_fraction`` of
  training: its action is clipped per component to ``±budget`` (the reference clips, it does not
  rescale) and the buffer stores the clipped action, the push the env applied.  The budget fraction
  takes the temperature's place in both players' observations (1 in evaluation: the full budget).  The
  reference draws the budget per episode from a self-paced teacher; this is its linear-schedule
  simplification.

A fresh attacker (``attack_only``, ``purejaxrl robustness --fresh-adversary``) is a new adversary with
its own tuned temperature, as ``rarl``, trained against the frozen protagonist acting greedily.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import digamma, gammaln

from envs.adversarial import ForceAdversary
from purejaxrl import evalkeys
from purejaxrl.algos.sac import SAC, Buffer, Player, SACLearner, learn_phase, true_next_obs
from purejaxrl.networks import ObsNorm
from purejaxrl.rollout import episode_metrics

CURRICULA = ("self_paced", "linear", "fixed", "rarl", "none", "phased", "force_budget")
RATIONAL = ("rarl", "none", "phased", "force_budget")  # no curriculum temperature: the adversary's own α (or none)
NO_ADVERSARY = ("none", "phased")
OWN_ALPHA = ("rarl", "force_budget")  # the adversary's temperature its own, not a curriculum's
TEMPERATURE_CURRICULA = tuple(c for c in CURRICULA if c not in RATIONAL)


def gamma_log_pdf(x, shape, rate):
    return shape * jnp.log(rate) - gammaln(shape) + (shape - 1.0) * jnp.log(x) - rate * x


def gamma_kl_same_rate(a1, a2):
    """``KL(Gamma(a1, b) ‖ Gamma(a2, b))`` (independent of the common rate ``b``)."""
    return (a1 - a2) * digamma(a1) - gammaln(a1) + gammaln(a2)


def weighted_return(c_new, temps, returns, valid, drawn):
    """Importance-weighted mean return of the collected episodes under Gamma(``c_new``): ``temps``
    in units of 1/rate (the rate cancels), each drawn from Gamma(``drawn``)."""
    t = jnp.maximum(temps, 1e-12)
    logw = gamma_log_pdf(t, c_new, 1.0) - gamma_log_pdf(t, drawn, 1.0)
    return jnp.sum(jnp.where(valid, jnp.exp(logw) * returns, 0.0)) / jnp.maximum(valid.sum(), 1)


def self_paced_shape(c, temps, returns, valid, c_target, threshold, kl_bound, drawn=None, grid: int = 256):
    """The next Gamma shape of the self-paced curriculum (see the module docstring): ``temps`` (in
    units of 1/rate) and ``returns`` of the collected episodes (``valid`` masks them), each drawn
    from Gamma(``drawn``) (default: ``c``).  Nothing moves unless the return at ``c`` itself meets
    the threshold (the gate)."""
    cands = jnp.linspace(c_target, c, grid)  # from the target up to the current shape
    drawn = jnp.full_like(temps, c) if drawn is None else drawn

    def perf(c_new):
        return weighted_return(c_new, temps, returns, valid, drawn)

    ok = (jax.vmap(perf)(cands) >= threshold) & (gamma_kl_same_rate(cands, c) <= kl_bound) & (perf(c) >= threshold)
    to_target = jnp.where(ok, gamma_kl_same_rate(cands, c_target), jnp.inf)
    return jnp.where(ok.any(), cands[jnp.argmin(to_target)], c)


@struct.dataclass
class Curriculum:
    shape: jax.Array      # Gamma shape c of the adversary's temperature
    temps: jax.Array      # [K] finished episodes' temperatures, discounted returns and the shapes
    returns: jax.Array    #     their temperatures were drawn from, since the last step
    drawn: jax.Array
    count: jax.Array
    performance: jax.Array  # the gate's measure at the last step: the weighted return at the shape then
    held: jax.Array         # 1 where that step's gate held the shape back (performance < threshold)
    steps: jax.Array        # curriculum steps taken (0: performance and held not yet measured)


@struct.dataclass
class QARLState:
    protagonist: Player
    adversary: Player
    buffer: Buffer        # the protagonist's: transitions of its learning phases; obs with the temperature
    adv_buffer: Buffer    # appended, action = [a_P | a_A]; the adversary's: transitions of its phases
    env_state: Any
    obs: jax.Array
    temperature: jax.Array  # [num_envs] the running episodes' α_A
    drawn: jax.Array        # [num_envs] the Gamma shape each was drawn from
    discounted: jax.Array   # [num_envs] the running episodes' discounted returns (the curriculum's measure)
    curriculum: Curriculum
    rng: jax.Array
    eval_rng: jax.Array  # evaluation base key: a function of the run's seed only (purejaxrl.evalkeys)
    obs_norm: ObsNorm    # the env observations' running statistics (normalize_observations; the context stays raw)


class QARL(SAC):
    name = "qarl"
    default_curriculum = "self_paced"

    def __init__(self, algo_cfg: dict, env_cfg: dict, network_cfg: dict, attack_only: bool = False):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        c = self.cfg
        # attack_only: a fresh adversary learns against a frozen protagonist that acts greedily (its
        # mode, as in evaluation) — the worst-case attack of the robustness evaluation
        self.attack_only = bool(attack_only)
        adv = dict(c.get("adversary") or {})
        self.curriculum = str(c.get("curriculum", self.default_curriculum))
        self.env = ForceAdversary(self.env, float(adv.get("max_force", 1.0)), adv.get("bodies"))
        self.act_dim = self.env.protagonist_dim
        self.adv_dim = self.env.adversary_dim
        self.obs_dim = int(np.prod(self.env.observation_shape)) + 1  # the temperature appended
        self.rate = float(c.get("gamma_rate", 1000.0))
        self.c_start, self.c_target = float(c.get("c_start", 50.0)), float(c.get("c_target", 1.0))
        self.context_samples = int(c.get("context_samples", 30))
        self.threshold = float(c.get("performance_threshold", 10.0))
        self.kl_bound = float(c.get("kl_bound", 0.5))
        self.linear_fraction = float(c.get("linear_fraction", 2 / 3))
        self.phase_updates = int(c.get("phase_updates", 1000))
        self.action_repeat = int(getattr(self.env.unwrapped, "action_repeat", 1))
        self.learner = SACLearner(self.act_dim, c["actor_hidden"], c["critic_hidden"], c.get("target_entropy"),
                                  bool(c.get("autotune", True)), float(c.get("init_alpha", 1.0)), self.critic_layer_norm)
        # the adversary's own temperature where no curriculum sets it (RARL, force_budget, a fresh attacker):
        # SAC's automatic tuning toward entropy -dim(A_adv) from 0.005, as the reference; a number fixes it
        # (alpha: 0 is the deterministic-attacker ablation)
        self.adv_alpha = adv.get("alpha", "auto")
        self.adv_learner = SACLearner(self.adv_dim, c["actor_hidden"], c["critic_hidden"], adv.get("target_entropy"),
                                      self.adv_alpha == "auto", float(adv.get("init_alpha", 0.005)), self.critic_layer_norm)

    @classmethod
    def config_errors(cls, cfg: dict) -> list[str]:
        errs = []
        if cfg.get("curriculum", cls.default_curriculum) not in CURRICULA:
            errs.append(f"algo.curriculum={cfg.get('curriculum')!r}; valid: {', '.join(CURRICULA)}")
        for k in ("gamma_rate", "c_start", "c_target", "kl_bound"):
            if k in cfg and not (isinstance(cfg[k], (int, float)) and cfg[k] > 0):
                errs.append(f"algo.{k}={cfg[k]!r} must be a number > 0")
        if "c_start" in cfg and "c_target" in cfg and cfg["c_target"] > cfg["c_start"]:
            errs.append(f"algo.c_target={cfg['c_target']} must be <= algo.c_start={cfg['c_start']} "
                        "(the curriculum anneals the temperature down)")
        for k in ("context_samples", "phase_updates"):
            if k in cfg and (not isinstance(cfg[k], int) or cfg[k] < 1):
                errs.append(f"algo.{k}={cfg[k]!r} must be an integer >= 1")
        lf = cfg.get("linear_fraction", 2 / 3)
        if not isinstance(lf, (int, float)) or not 0 < lf <= 1:
            errs.append(f"algo.linear_fraction={lf!r} must be in (0, 1]")
        adv = cfg.get("adversary") or {}
        valid = ("max_force", "bodies", "alpha", "init_alpha", "target_entropy")
        for k in sorted(set(adv) - set(valid)):
            errs.append(f"algo.adversary.{k} is not an adversary setting; valid: {', '.join(valid)}")
        a = adv.get("alpha", "auto")
        if a != "auto" and (not isinstance(a, (int, float)) or isinstance(a, bool) or a < 0):
            errs.append(f"algo.adversary.alpha={a!r} must be auto (tuned toward entropy -dim(A_adv), the reference's "
                        "RARL) or a number >= 0 (0: a deterministic attacker)")
        cur = cfg.get("curriculum", cls.default_curriculum)
        if a != "auto" and cur in TEMPERATURE_CURRICULA:
            errs.append(f"algo.adversary.alpha={a!r} has no effect with algo.curriculum={cur}: the adversary's temperature "
                        "is the curriculum's; adversary.alpha sets it for rarl and force_budget (and a fresh attacker)")
        if "init_alpha" in adv and not (isinstance(adv["init_alpha"], (int, float)) and adv["init_alpha"] > 0):
            errs.append(f"algo.adversary.init_alpha={adv['init_alpha']!r} must be a number > 0")
        counts = super().config_errors(cfg)  # SAC's: counts are integers >= 1, one update fits
        if not errs and not counts:
            updates = cfg["total_timesteps"] // (cfg["num_envs"] * cfg.get("steps_per_update", 1))
            phase = cfg.get("phase_updates", 1000)
            if updates < 2 * phase:
                errs.append(f"algo.phase_updates={phase} leaves the protagonist no learning phase in {updates} "
                            f"updates (adversary first, then protagonist); lower phase_updates to at most "
                            f"{max(updates // 2, 1)} or raise total_timesteps")
        return errs + counts

    # ---- temperatures ----
    def shape_at(self, cur: Curriculum, i):
        if self.curriculum == "linear":
            frac = jnp.minimum(1.0, i / max(self.linear_fraction * self.num_updates, 1.0))
            return self.c_start + (self.c_target - self.c_start) * frac
        return cur.shape

    def draw_temperature(self, key, shape, n: int):
        if self.attack_only:  # the temperature the attacked protagonist was evaluated at (the shape's mean)
            return jnp.full((n,), shape / self.rate)
        if self.curriculum in RATIONAL:
            return jnp.zeros((n,))
        return jax.random.gamma(key, shape, (n,)) / self.rate

    @property
    def own_temperature(self) -> bool:
        """Whether the adversary has a temperature of its own (RARL, force_budget, a fresh attacker)
        rather than the curriculum's."""
        return self.attack_only or self.curriculum in OWN_ALPHA

    def adversary_alpha(self, context):
        """α_A of the adversary's gradient step, per sample: the curriculum temperature (the last
        observation entry, ``context``); with a temperature of its own ``None`` (learned) or the fixed
        ``adversary.alpha``."""
        if not self.own_temperature:
            return context
        return None if self.adv_alpha == "auto" else jnp.full_like(context, float(self.adv_alpha))

    def augment(self, obs, temperature, norm: ObsNorm | None = None):
        """Both players' input: the env observation (normalised with ``norm`` when
        ``normalize_observations``) and the context appended; the buffer stores it with ``norm=None``."""
        obs = obs.reshape(obs.shape[0], -1)
        obs = obs if norm is None else self.observe(norm, obs)
        return jnp.concatenate([obs, temperature[:, None]], -1)

    # ---- state ----
    def init(self, key, hp, data=None):
        seed_key = key
        k_p, k_a, k_env, k_t, key = jax.random.split(key, 5)
        obs, env_state = self.make_venv(self.num_envs, hp).reset(k_env)
        K, n = self.context_samples, self.num_envs
        K = K + self.units_per_update  # room for every episode of the update that completes a window
        cur = Curriculum(jnp.float32(self.c_start), jnp.zeros(K), jnp.zeros(K), jnp.ones(K), jnp.int32(0),
                         jnp.float32(0.0), jnp.float32(0.0), jnp.int32(0))
        # each player replays only the transitions of its own phases (the reference's agents fit on their
        # own phase's data); a buffer no one learns from is one slot
        prot_size = 1 if self.attack_only else self.buffer_size
        adv_size = 1 if self.curriculum in NO_ADVERSARY else self.buffer_size
        width = self.act_dim + self.adv_dim
        return QARLState(self.learner.init(k_p, self.obs_dim, hp), self.adv_learner.init(k_a, self.obs_dim, hp),
                         Buffer.empty(prot_size, (self.obs_dim,), width), Buffer.empty(adv_size, (self.obs_dim,), width),
                         env_state, obs,
                         self.draw_temperature(k_t, self.c_start, n), jnp.full((n,), self.c_start, jnp.float32),
                         jnp.zeros((n,)), cur, key, evalkeys.run_key(seed_key), ObsNorm.empty((self.obs_dim - 1,)))

    def params(self, state):
        return (state.protagonist.actor, state.protagonist.critic, state.protagonist.log_alpha,
                state.adversary.actor, state.adversary.critic)

    @property
    def episodes_per_evaluation(self) -> int:
        return 2 * self.num_eval_envs  # without and against the adversary

    def eval_temperature(self, state):
        """The context both players see in a final evaluation (``purejaxrl eval``, robustness grids, a
        fresh attacker): temperature 0, the fully rational adversary the curriculum ends at, as the
        reference evaluates; for ``force_budget`` the full budget, 1."""
        if self.curriculum == "force_budget":
            return jnp.float32(1.0)
        return jnp.float32(0.0)

    def progress_temperature(self, state):
        """The context of the evaluations during training: the curriculum's current mean temperature
        (as the reference's per-iteration evaluations)."""
        if self.curriculum in RATIONAL:
            return self.eval_temperature(state)
        return state.curriculum.shape / self.rate

    def context(self, temperature, i):
        """The value appended to both players' observations: the episode's temperature, or for
        ``force_budget`` the budget fraction of update ``i``."""
        if self.curriculum == "force_budget":
            return jnp.full_like(temperature, self.budget(i))
        return temperature

    def budget(self, i):
        """The fraction of ``adversary.max_force`` the adversary may use at update ``i`` (1 unless
        ``curriculum=force_budget``, where it grows linearly over the first ``linear_fraction``)."""
        if self.curriculum != "force_budget":
            return jnp.float32(1.0)
        return jnp.minimum(1.0, i / max(self.linear_fraction * self.num_updates, 1.0)).astype(jnp.float32)

    def joint(self, a_p, a_adv):
        return jnp.concatenate([self.to_env(a_p), a_adv], -1)

    def greedy_action(self, state, obs, temperature=None):
        """The protagonist's mode, no adversary (nominal evaluation), at ``temperature`` (default the
        final evaluation's, :meth:`eval_temperature`)."""
        t = self.eval_temperature(state) if temperature is None else temperature
        o = self.augment(obs, jnp.full(obs.shape[0], t), state.obs_norm)
        return self.joint(self.learner.mode(state.protagonist.actor, o), jnp.zeros((obs.shape[0], self.adv_dim)))

    def adversarial_action(self, state, obs, temperature=None):
        """Both players' modes (the reference samples both; modes here, as every greedy evaluation)."""
        t = self.eval_temperature(state) if temperature is None else temperature
        o = self.augment(obs, jnp.full(obs.shape[0], t), state.obs_norm)
        adv = self.adv_learner.mode(state.adversary.actor, o)
        if self.curriculum in NO_ADVERSARY:
            adv = jnp.zeros_like(adv)
        return self.joint(self.learner.mode(state.protagonist.actor, o), adv)

    def evaluate(self, state, hp, i):
        from purejaxrl.algos.base import greedy_episode_returns

        key = self.progress_key(state, i)
        venv = self.make_venv(self.num_eval_envs, hp, evaluation=True)
        t = self.progress_temperature(state)
        nominal = greedy_episode_returns(venv, lambda o: self.greedy_action(state, o, t), key)
        attacked = greedy_episode_returns(venv, lambda o: self.adversarial_action(state, o, t), key)
        return {"eval_return": nominal.mean(), "eval_return_adversary": attacked.mean()}

    # ---- one update ----
    def collect(self, state, hp, i):
        venv = self.make_venv(self.num_envs, hp)
        random_phase = i * self.units_per_update < self.learning_starts
        shape = self.shape_at(state.curriculum, i)

        def step(carry, _):
            obs, env_state, temp, drawn, disc, (buf, adv_buf), rng = carry
            rng, k_p, k_a, k_rand, k_env, k_t = jax.random.split(rng, 6)
            o = self.augment(obs, self.context(temp, i))  # stored raw
            o_n = self.augment(obs, self.context(temp, i), state.obs_norm) if self.normalize_observations else o
            a_p, _ = self.learner.sample(state.protagonist.actor, o_n, k_p)
            a_adv, _ = self.adv_learner.sample(state.adversary.actor, o_n, k_a)
            rand = jax.random.uniform(k_rand, (obs.shape[0], self.act_dim + self.adv_dim), minval=-1.0, maxval=1.0)
            if self.attack_only:  # the protagonist under attack acts greedily, also while the adversary explores
                a_p = self.learner.mode(state.protagonist.actor, o_n)
                rand = rand.at[:, :self.act_dim].set(a_p)
            a = jnp.where(random_phase, rand, jnp.concatenate([a_p, a_adv], -1))
            if self.curriculum in NO_ADVERSARY:
                a = a.at[:, self.act_dim:].set(0.0)
            if self.curriculum == "force_budget":  # the push the env applies, stored as the adversary's action
                a = a.at[:, self.act_dim:].set(self.env.within_budget(a[:, self.act_dim:], self.budget(i)))
            obs2, env_state, reward, term, trunc, info = venv.step(k_env, env_state, self.joint(a[:, :self.act_dim],
                                                                                               a[:, self.act_dim:]))
            nxt = self.augment(true_next_obs(obs2, term, trunc, info), self.context(temp, i))
            tr = {"obs": o, "action": a, "reward": reward, "next_obs": nxt, "terminated": term}
            buf = buf.add(tr, keep=jnp.logical_not(adv_phase))  # each player's own phases
            adv_buf = adv_buf.add(tr, keep=adv_keep)
            done = info["episode_done"]
            # the curriculum's measure per control step: an agent step's summed rewards / action_repeat,
            # so performance_threshold keeps the reference's scale whatever the action repeat
            disc = disc + hp["gamma"] ** (info["episode_length"] - 1).astype(jnp.float32) * reward / self.action_repeat
            ep = {k: info[k] for k in ("episode_return", "episode_length", "episode_done")}
            ep.update(temperature=temp, drawn=drawn, discounted=disc, obs=obs)
            temp = jnp.where(done, self.draw_temperature(k_t, shape, obs.shape[0]), temp)
            drawn = jnp.where(done, shape, drawn)
            disc = jnp.where(done, 0.0, disc)
            return (obs2, env_state, temp, drawn, disc, (buf, adv_buf), rng), ep

        carry = (state.obs, state.env_state, state.temperature, state.drawn, state.discounted,
                 (state.buffer, state.adv_buffer), state.rng)
        adv_phase = self.adversary_phase(i)  # phased: the protagonist keeps only its phases' transitions too
        adv_keep = jnp.logical_and(adv_phase, self.curriculum not in NO_ADVERSARY)  # nobody learns from it there
        (obs, env_state, temp, drawn, disc, (buf, adv_buf), rng), episode = jax.lax.scan(step, carry, None,
                                                                                         self.steps_per_update)
        seen = episode.pop("obs")  # after acting, before learning (brax's order); a fresh attacker keeps the
        norm = state.obs_norm if self.attack_only else self.observed(state.obs_norm, seen)  # protagonist's statistics
        return state.replace(obs=obs, env_state=env_state, temperature=temp, drawn=drawn, discounted=disc, buffer=buf,
                             adv_buffer=adv_buf, rng=rng, obs_norm=norm), episode

    def adversary_phase(self, i):
        """Whether update ``i`` is in an adversary phase (the adversary learns, the protagonist waits):
        phases of ``phase_updates`` alternate, the adversary's first; never for ``none``, always for a
        fresh attacker."""
        if self.attack_only:
            return jnp.bool_(True)
        if self.curriculum == "none":  # plain SAC: the protagonist learns every update
            return jnp.bool_(False)
        return (i // self.phase_updates) % 2 == 0

    def advance_curriculum(self, cur: Curriculum, episode, i) -> Curriculum:
        """Record finished episodes' (temperature, return); once ``context_samples`` or more are
        recorded, move the shape (self-paced) from all of them — the episodes of the update that
        completes the window are all counted, as the reference reads its whole buffer — else follow
        the schedule."""
        if self.curriculum != "self_paced":
            return cur.replace(shape=jnp.float32(self.shape_at(cur, i + 1)) if self.curriculum == "linear" else cur.shape)
        K = self.context_samples
        C = cur.temps.shape[0]  # K + the episodes one update can finish
        done = episode["episode_done"].reshape(-1)
        t, r = episode["temperature"].reshape(-1), episode["discounted"].reshape(-1)
        slot = cur.count + jnp.cumsum(done) - 1  # where each finished episode goes
        idx = jnp.where(done & (slot < C), slot, C)  # C: out of range, dropped by the scatter
        temps = cur.temps.at[idx].set(t, mode="drop")
        rets = cur.returns.at[idx].set(r, mode="drop")
        drawn = cur.drawn.at[idx].set(episode["drawn"].reshape(-1), mode="drop")
        count = jnp.minimum(cur.count + done.sum(), C)
        full = count >= K
        valid = jnp.arange(C) < count
        new_shape = self_paced_shape(cur.shape, temps * self.rate, rets, valid, self.c_target,
                                     self.threshold, self.kl_bound, drawn)
        perf = weighted_return(cur.shape, temps * self.rate, rets, valid, drawn)
        return Curriculum(jnp.where(full, new_shape, cur.shape), temps, rets, drawn, jnp.where(full, 0, count),
                          jnp.where(full, perf, cur.performance),
                          jnp.where(full, (perf < self.threshold).astype(jnp.float32), cur.held), cur.steps + full)

    def update(self, state, hp, i, data=None):
        state, episode = self.collect(state, hp, i)
        rng, key = jax.random.split(state.rng)
        state = state.replace(rng=rng, curriculum=self.advance_curriculum(state.curriculum, episode, i))
        A = self.act_dim
        learning = (i + 1) * self.units_per_update > self.learning_starts
        adversary_phase = self.adversary_phase(i)

        def batch(k, adversary: bool):
            buf = state.adv_buffer if adversary else state.buffer
            b = self.observe_batch(state.obs_norm, buf.sample(k, self.batch_size))
            if adversary:
                return {**b, "action": b["action"][:, A:], "reward": -b["reward"]}
            return {**b, "action": b["action"][:, :A]}

        def p_step(p, k):
            k_b, k_s = jax.random.split(k)
            return self.learner.step(p, batch(k_b, False), hp, k_s)

        def a_step(p, k):
            k_b, k_s = jax.random.split(k)
            b = batch(k_b, True)
            return self.adv_learner.step(p, b, hp, k_s, alpha=self.adversary_alpha(b["obs"][:, -1]))

        prot, m_p = learn_phase(p_step, state.protagonist, key, self.gradient_steps,
                                jnp.logical_and(learning, jnp.logical_not(adversary_phase)))
        adv, m_a = learn_phase(a_step, state.adversary, jax.random.fold_in(key, 1), self.gradient_steps,
                               jnp.logical_and(learning, adversary_phase) if self.curriculum != "phased" else False)
        if not self.own_temperature:
            m_a.pop("alpha")  # the adversary's temperature is the curriculum's (temperature_mean)
        elif self.adv_alpha != "auto":
            m_a["alpha"] = jnp.float32(self.adv_alpha)  # fixed (also between its learning phases)
        m = {**m_p, **{f"adv_{k}": v for k, v in m_a.items()}, **episode_metrics(episode),
             "temperature_mean": state.curriculum.shape / self.rate, "curriculum_shape": state.curriculum.shape,
             "adversary_phase": jnp.asarray(adversary_phase, jnp.float32)}
        if self.curriculum == "self_paced":  # the gate's measure at the last step, and whether it held
            m.update(curriculum_performance=state.curriculum.performance, curriculum_held=state.curriculum.held,
                     curriculum_steps=state.curriculum.steps)
        if self.curriculum == "linear":
            m["temperature_mean"] = self.shape_at(state.curriculum, i) / self.rate
        elif self.curriculum in RATIONAL:
            m["temperature_mean"] = jnp.float32(0.0)
        if self.curriculum == "force_budget":
            m["force_budget"] = self.budget(i) * self.env.max_force
        return state.replace(protagonist=prot, adversary=adv), m


class RARL(QARL):
    """Robust adversarial RL: no curriculum, the adversary an ordinary SAC agent (its own tuned α)."""

    name = "rarl"
    default_curriculum = "rarl"
