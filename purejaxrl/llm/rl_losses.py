"""The online RL losses of ``purejaxrl llm rl``, as a registry.

A loss is a function ``fn(x, hp, opts) -> (loss, aux)`` registered with :func:`register`, which
declares what the iteration must provide besides the always-present inputs:

* always: ``logits [B, T, V]`` and ``logp [B, T]`` of the sampled completions under π_θ (at the
  sampling temperature), ``seq_logp [B]``, ``mask [B, T]`` (the tokens the policy gradient acts
  on), ``rewards [B]``, ``G`` (completions per prompt), ``L_max`` (the completion budget),
  ``progress`` (fraction of training done, traced);
* ``needs``: ``old_logp`` (the sampling policy's log-probs), ``ref_logp`` (reference model; given
  when the loss's ``beta > 0``), ``old_logits`` (the sampling policy's full logits),
  ``running_entropy`` (EPO's running mean, NaN before the first measurement), ``resample_idx``
  (PAFT's posterior resampling indices ``[P, K]``);
* with a likelihood reward, ``r_theta [B]`` (the differentiable reward) — only losses registered
  with ``likelihood=True`` accept one (they add :func:`losses.likelihood_direct_term`).

``hp`` holds the loss config's numbers (traced: vmappable, no recompilation), ``opts`` its
strings and shape-giving integers (static; their allowed values are declared in ``options``).
Adding a loss is one decorated function and one ``conf/llm/loss/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from purejaxrl.llm import losses as L

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
NEEDS = ("old_logp", "ref_logp", "old_logits", "running_entropy", "resample_idx")


@dataclass(frozen=True)
class RLLoss:
    name: str
    fn: Callable
    needs: frozenset = frozenset()
    options: dict = field(default_factory=dict)  # static option -> tuple of allowed values, or int (a size >= 0)
    likelihood: bool = False  # accepts likelihood rewards (its gradient weighting is defined)
    defaults: dict = field(default_factory=dict)  # static options' values when the config does not set them
    extra_needs: Callable | None = None  # opts -> further needs that depend on the static options

    def resolve(self, opts: dict | None) -> dict:
        return {**self.defaults, **(opts or {})}

    def needs_for(self, opts: dict | None) -> frozenset:
        """What the iteration must provide for this loss with these static options."""
        return self.needs | frozenset(self.extra_needs(self.resolve(opts)) if self.extra_needs else ())


REGISTRY: dict[str, RLLoss] = {}


def register(name: str, *, needs=(), options=None, likelihood=False, defaults=None, extra_needs=None):
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"loss {name}: unknown needs {sorted(unknown)}; valid: {', '.join(NEEDS)}")

    def deco(fn):
        REGISTRY[name] = RLLoss(name, fn, frozenset(needs), dict(options or {}), likelihood, dict(defaults or {}),
                                extra_needs)
        return fn

    return deco


def get(name: str) -> RLLoss:
    if name not in REGISTRY:
        raise ValueError(f"unknown RL loss {name!r}; valid: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# ---------------------------------------------------------------- the clipped policy-gradient family
PG_OPTIONS = {"loss_type": LOSS_TYPES, "scale_rewards": L.SCALE_REWARDS, "importance_sampling_level": L.IMPORTANCE_LEVELS}
PG_NEEDS = ("old_logp", "ref_logp")


def policy_gradient(x, hp, opts, adv, *, baseline_factor=1.0, keep=None, beta=None):
    """Clipped surrogate + k3 KL, aggregated by ``opts['loss_type']``, plus the likelihood reward's
    direct term when ``x`` has ``r_theta`` (:func:`losses.likelihood_direct_term`; ``baseline_factor``
    is ``(G−1)/G`` for a group-mean baseline, 1 for leave-one-out); ``x['policy_gradient'] = False``
    keeps only that term (the SFT-only control: no policy gradient, no KL).  ``keep [B]`` drops
    completions (DAPO) from every term and normaliser, the sequence count of ``grpo``/``dr_grpo`` included."""
    mask = x["mask"] if keep is None else x["mask"] * keep[:, None].astype(x["mask"].dtype)
    loss_type = opts.get("loss_type", "grpo")
    beta = hp.get("beta", 0.0) if beta is None else beta
    eps, eps_hi = hp.get("epsilon", 0.2), hp.get("epsilon_high", hp.get("epsilon", 0.2))
    ref = x.get("ref_logp")
    level = opts.get("importance_sampling_level", "token")
    pg = L.clipped_pg_loss(x["logp"], x["old_logp"], ref, mask, adv, beta=beta, epsilon=eps, epsilon_high=eps_hi,
                           loss_type=loss_type, max_completion_length=x["L_max"], importance_sampling_level=level)
    aux = L.pg_statistics(x["logp"], x["old_logp"], ref, mask, adv, epsilon=eps, epsilon_high=eps_hi,
                          importance_sampling_level=level)
    rows = 1.0
    if keep is not None and loss_type in ("grpo", "dr_grpo"):  # normalise by the kept sequences, not all B
        rows = keep.shape[0] / jnp.maximum(keep.sum(), 1.0)
    if "r_theta" in x:
        r = x["r_theta"] if keep is None else x["r_theta"] * keep
        direct = L.likelihood_direct_term(r, mask, loss_type, x["L_max"], baseline_factor)
        pg = (pg if x.get("policy_gradient", True) else 0.0) - direct
    return rows * pg, aux


def _mean_baseline_factor(x):
    return (x["G"] - 1) / x["G"]


@register("grpo", needs=PG_NEEDS, options=PG_OPTIONS, likelihood=True,
          defaults={"loss_type": "grpo", "scale_rewards": "group"})
def grpo(x, hp, opts):
    """GRPO (TRL defaults: ``scale_rewards=group`` with ddof 1, ``loss_type=grpo``); Dr. GRPO is
    this with ``scale_rewards=none`` and ``loss_type=dr_grpo``."""
    adv = L.group_advantages(x["rewards"], x["G"], opts.get("scale_rewards", "group"))
    return policy_gradient(x, hp, opts, adv, baseline_factor=_mean_baseline_factor(x))


register("dr_grpo", needs=PG_NEEDS, options=PG_OPTIONS, likelihood=True,
         defaults={"loss_type": "dr_grpo", "scale_rewards": "none"})(grpo)
# GSPO (Zheng et al. 2025): GRPO with the sequence-level importance ratio exp(mean_t log π_θ/π_old),
# clipped per sequence (TRL's importance_sampling_level="sequence"; conf/llm/loss/gspo.yaml sets the
# paper's narrow clip range)
register("gspo", needs=PG_NEEDS, options=PG_OPTIONS, likelihood=True,
         defaults={"loss_type": "grpo", "scale_rewards": "group", "importance_sampling_level": "sequence"})(grpo)


@register("dapo", needs=PG_NEEDS, options=PG_OPTIONS, likelihood=True,
          defaults={"loss_type": "dapo", "scale_rewards": "group"})
def dapo(x, hp, opts):
    """DAPO: groups whose rewards are all equal are dropped for real (from the token normaliser and
    the KL term; the batch is not refilled), clip-higher, token-level mean (``loss_type=dapo``)."""
    keep = L.dapo_group_filter(x["rewards"], x["G"])
    adv = L.group_advantages(x["rewards"], x["G"], opts.get("scale_rewards", "group"))
    loss, aux = policy_gradient(x, hp, opts, adv, baseline_factor=_mean_baseline_factor(x), keep=keep)
    return loss, {**aux, "kept_fraction": keep.mean()}


@register("rloo", needs=PG_NEEDS, options={"loss_type": LOSS_TYPES}, likelihood=True, defaults={"loss_type": "dapo"})
def rloo(x, hp, opts):
    """RLOO: leave-one-out baseline ``A_i = r_i − mean_{j≠i} r_j`` (independent of z_i: unbiased as is)."""
    return policy_gradient(x, hp, opts, L.rloo_advantages(x["rewards"], x["G"]))


@register("epo", needs=(*PG_NEEDS, "running_entropy"), options=PG_OPTIONS, likelihood=True,
          defaults={"loss_type": "grpo", "scale_rewards": "group"})
def epo(x, hp, opts):
    """GRPO + EPO's entropy bonus and smoothing band, the band's weight phase-based."""
    loss, aux = grpo(x, hp, opts)
    w = L.epo_phase_weight(x["progress"], hp.get("smooth_coef", 1.0), hp.get("early_smooth_coef", 1.0),
                           hp.get("phase_boundary", 0.0))
    reg, h = L.epo_regulariser(x["logits"], x["mask"], x["running_entropy"], entropy_coef=hp["entropy_coef"],
                               kappa_low=hp.get("kappa_low", 0.8), kappa_high=hp.get("kappa_high", 1.2), smooth_coef=w)
    return loss + reg, {**aux, "entropy": h, "smooth_weight": w}


@register("fg_expo", needs=PG_NEEDS, options=PG_OPTIONS, likelihood=True,
          defaults={"loss_type": "grpo", "scale_rewards": "group"})
def fg_expo(x, hp, opts):
    """GRPO with the accuracy-conditioned KL weight ``β·σ(sharpness·(acc − midpoint))``; the accuracy
    is the verifier's pass rate on the batch (also under a likelihood reward)."""
    beta = L.fg_expo_beta(hp.get("beta", 0.0), x["verifier_rewards"].mean(), sharpness=hp.get("sharpness", 10.0),
                          midpoint=hp.get("midpoint", 0.5))
    adv = L.group_advantages(x["rewards"], x["G"], opts.get("scale_rewards", "group"))
    loss, aux = policy_gradient(x, hp, opts, adv, baseline_factor=_mean_baseline_factor(x), beta=beta)
    return loss, {**aux, "kl_beta": beta}


# ---------------------------------------------------------------- Tsallis J_Q family and ROVER
@register("garl", options={"baseline": ("loo", "mean", "none")}, likelihood=True, defaults={"baseline": "loo"})
def garl(x, hp, opts):
    """GARL; with a (non-negative) likelihood reward its direct term gets GARL's own per-prompt
    weight ``P̂^{−q}/B`` (times ``(G−1)/G`` with the ``mean`` baseline, as the policy-gradient term)."""
    q, floor, baseline = hp["q"], hp.get("p_floor", 1e-3), opts.get("baseline", "loo")
    loss = L.garl_loss(x["seq_logp"], x["rewards"], x["G"], q, p_floor=floor, baseline=baseline)
    if "r_theta" in x:
        r = x["r_theta"].reshape(-1, x["G"])
        w = jax.lax.stop_gradient(jnp.maximum(x["rewards"].reshape(-1, x["G"]).mean(1, keepdims=True), floor) ** (-q))
        factor = _mean_baseline_factor(x) if baseline == "mean" else 1.0
        loss = (loss if x.get("policy_gradient", True) else 0.0) - factor * jnp.mean(w * r)
    return loss, {}


@register("paft", needs=("resample_idx",), options={"num_resamples": int}, defaults={"num_resamples": 0})
def paft(x, hp, opts):
    return L.paft_loss(x["seq_logp"], x["rewards"], x["G"], hp["q"], x["resample_idx"]), {}


@register("rover", needs=("old_logits",))
def rover(x, hp, opts):
    return L.rover_loss(x["logits"], x["old_logits"], x["completions"], x["mask"], x["rewards"], x["G"],
                        rho=hp.get("rho", 1.0)), {}


# ---------------------------------------------------------------- learned objectives (purejaxrl.llm.learned)
LEARNED_STRUCTURE = ("path", "init", "hidden", "temporal", "q", "p_floor")  # loss=learned settings that are not traced


@register("learned", needs=PG_NEEDS, extra_needs=lambda o: ("old_logits",) if o.get("kind") == "drift" else ())
def learned(x, hp, opts):
    """A learned objective, its parameters ``hp["learned"]``, its structure ``opts``
    (:func:`learned.options`): the ``weight`` family's advantages in GRPO's clipped surrogate, or the
    ``drift`` family's ``−(ρ·Â − D_φ)`` per token."""
    from purejaxrl.llm import learned as LN

    params = hp["learned"]
    if opts["kind"] == "weight":
        w = LN.group_weight(params, opts, x["rewards"], x["G"], x["progress"])
        adv = w * LN.baseline_advantages(x["rewards"], x["G"], opts["baseline"])
        loss, aux = policy_gradient(x, hp, {"loss_type": opts["loss_type"]}, adv)
        return loss, {**aux, "learned_weight": w.mean()}
    adv = L.group_advantages(x["rewards"], x["G"], "group")
    loss, drift = LN.drift_token_loss(params, opts, x["logp"], x["old_logp"], x["mask"], adv, hp.get("epsilon", 0.2),
                                      x["progress"], opts["loss_type"], x["L_max"])
    return loss, {"drift": drift}


def split_config(loss_cfg: dict) -> tuple[dict, dict]:
    """``(hp, opts)`` from a loss config: numbers (traced) and the loss's static options."""
    entry = get(loss_cfg["name"])
    opts = entry.resolve({k: v for k, v in loss_cfg.items() if k in entry.options})
    hp = {k: v for k, v in loss_cfg.items()
          if k not in entry.options and k != "name" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return hp, opts


def option_errors(name: str, loss_cfg: dict) -> list[str]:
    """One line per static option of ``loss_cfg`` with a value the loss does not accept."""
    errs = []
    for k, allowed in get(name).options.items():
        if k not in loss_cfg:
            continue
        v = loss_cfg[k]
        if allowed is int:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                errs.append(f"loss.{k}={v!r} must be an integer >= 0")
        elif v not in allowed:
            errs.append(f"loss.{k}={v!r}; valid: {', '.join(allowed)}")
    return errs
