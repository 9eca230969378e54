"""Learned token-level LLM objectives: parametric losses whose parameters travel as data.

Two families, each a loss of the RL registry (``loss=learned``) whose parameters ``φ`` are a traced
hyperparameter (``hp["learned"]``), so a population of objectives vmaps through one compiled LLM
RL iteration, as learned PPO objectives do through PPO (:mod:`purejaxrl.objectives`):

``weight`` — a learned advantage weighting.  Each prompt's ``G`` completions get

    Â_i = w_φ(p̂, t, σ̂) · (r_i − b_i),
    log w_φ = c₀ + c_p · log max(p̂, p_floor) + c_σ · log(σ̂ + 10⁻⁴) + tanh(x W₁) w₂,  x = [p̂, t, p̂·t, 1]

with ``p̂`` the group's mean reward, ``σ̂`` its standard deviation (ddof 1, as GRPO's), ``t`` the
fraction of training done (0 when ``temporal`` is off), ``b`` the group mean or the leave-one-out
mean; ``log w`` is clipped to ±12 and carries no gradient.  Â enters GRPO's clipped surrogate,
aggregated per sequence (``grpo``) or by ``Σ/(B·L_max)`` (``dr_grpo``).  Its special points
(``init``, with ``W₁`` drawn and ``w₂ = 0``):

* ``grpo``: ``c_σ = −1``, baseline mean, per-sequence aggregation — GRPO (``scale_rewards=group``)
  exactly, loss and gradient;
* ``dr_grpo``: ``c = 0``, baseline mean, ``dr_grpo`` aggregation — Dr. GRPO exactly;
* ``garl``: ``c_p = −q``, ``c₀ = log L_max``, leave-one-out baseline, ``dr_grpo`` aggregation — GARL's
  gradient exactly (GARL's loss multiplies ``ℓ_θ`` where this multiplies the ratio: the values
  differ, the gradients agree whenever the batch is on-policy, as GARL requires);
* ``paft``: as ``garl`` with no baseline — PAFT's gradient in expectation over its posterior
  resampling (``−P̂^{1−q} E_{z∼R}[∇ℓ] = −P̂^{−q} mean_m R_m ∇ℓ_m``).

``drift`` — a TA-LPO-style drift at the token level: per completion token
``−(ρ·Â − D_φ(ρ, Â, t))`` with ``ρ = π_θ/π_old``, ``Â`` GRPO's group advantages and ``D_φ`` the
(TA-)LPO drift of :mod:`purejaxrl.objectives` (``D ≥ 0``, ``D = 0`` at ``ρ = 1``; ``φ = 0`` is GRPO's
clipped surrogate exactly).  Its old log-probabilities come from the training forward, so the first
step on a batch sees ``ρ = 1`` exactly and the drift acts only on later steps (``num_iterations ≥ 2``
or ``steps_per_generation`` above ``gradient_accumulation_steps``; one step per batch is refused).

A learned objective is saved as a directory (``llm_objective.json``: the spec; ``params.npz``), which
``loss=learned loss.path=DIR`` loads.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl import objectives
from purejaxrl.llm import losses as L

KINDS = ("weight", "drift")
INITS = {"weight": ("grpo", "dr_grpo", "garl", "paft"), "drift": ("clip",)}
BASELINES = {"grpo": "mean", "dr_grpo": "mean", "garl": "loo", "paft": "none", "clip": "mean"}
AGGREGATION = {"grpo": "grpo", "dr_grpo": "dr_grpo", "garl": "dr_grpo", "paft": "dr_grpo", "clip": "grpo"}
NUM_WEIGHT_FEATURES = 4  # x = [p̂, t, p̂·t, 1]
LOG_W_MAX = 12.0
SPEC_FILE, PARAMS_FILE = "llm_objective.json", "params.npz"
DEFAULT_HIDDEN = 16
ON_POLICY_TOL = 1e-5  # |log ρ| below this is the on-policy ratio 1 (float rounding between forwards)


def make_spec(init: str, hidden: int = DEFAULT_HIDDEN, temporal: bool = True, q: float = 0.75,
              p_floor: float = 1e-3) -> dict:
    """A learned objective's structure: its family (from ``init``), baseline, aggregation, sizes."""
    kind = next((k for k, v in INITS.items() if init in v), None)
    if kind is None:
        raise ValueError(f"learned objective init={init!r}; valid: {', '.join(i for v in INITS.values() for i in v)}")
    spec = {"kind": kind, "init": init, "hidden": int(hidden), "temporal": bool(temporal),
            "baseline": BASELINES[init], "loss_type": AGGREGATION[init], "p_floor": float(p_floor)}
    if init in ("garl", "paft"):
        spec["q"] = float(q)
    return spec


def init_params(spec: dict, key: jax.Array, max_completion_length: int) -> dict:
    """``φ`` at the special point ``spec["init"]``: the learned part's first layer drawn, its output
    layer 0 (so the start is the named loss, and an ES perturbation acts at first order)."""
    if spec["kind"] == "drift":
        return objectives.build(_drift_spec(spec), key=key).params
    c = jnp.zeros(3)
    if spec["init"] == "grpo":
        c = c.at[2].set(-1.0)
    elif spec["init"] in ("garl", "paft"):
        c = c.at[0].set(math.log(max_completion_length)).at[1].set(-spec["q"])
    mlp = objectives.init_learned_params(key, NUM_WEIGHT_FEATURES, spec["hidden"])
    return {"c": c, **mlp}


def _drift_spec(spec: dict) -> dict:
    return {"kind": "ta_lpo" if spec["temporal"] else "lpo", "hidden": spec["hidden"], "ppo_init": True, "offset": 0.0}


def group_weight(params, spec: dict, rewards, G: int, progress):
    """``w_φ`` per completion ``[B]`` (its group's), no gradient."""
    r = rewards.reshape(-1, G)
    p_hat = r.mean(1)
    sigma = r.std(axis=1, ddof=1)
    t = jnp.asarray(progress, p_hat.dtype) * (1.0 if spec["temporal"] else 0.0)
    t = jnp.broadcast_to(t, p_hat.shape)
    x = jnp.stack([p_hat, t, p_hat * t, jnp.ones_like(p_hat)], -1)
    c = params["c"]
    log_w = (c[0] + c[1] * jnp.log(jnp.maximum(p_hat, spec["p_floor"])) + c[2] * jnp.log(sigma + 1e-4)
             + objectives.drift_net(params, x))
    w = jnp.exp(jnp.clip(log_w, -LOG_W_MAX, LOG_W_MAX))
    return jax.lax.stop_gradient(jnp.repeat(w, G))


def baseline_advantages(rewards, G: int, baseline: str):
    """``r_i − b_i`` with ``b`` the group mean, the leave-one-out mean, or 0."""
    r = rewards.reshape(-1, G)
    if baseline == "mean":
        b = r.mean(1, keepdims=True)
    elif baseline == "loo":
        b = (r.sum(1, keepdims=True) - r) / (G - 1)
    elif baseline == "none":
        b = jnp.zeros_like(r)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; valid: mean, loo, none")
    return (r - b).reshape(-1)


def weight_advantages(params, spec: dict, rewards, G: int, progress):
    return group_weight(params, spec, rewards, G, progress) * baseline_advantages(rewards, G, spec["baseline"])


def drift_token_loss(params, spec: dict, logp, old_logp, mask, adv, epsilon, progress, loss_type: str, L_max: int):
    """``−aggregate(ρ·Â − D_φ(ρ, Â, t))`` over completion tokens."""
    obj = objectives.build(_drift_spec(spec), params)
    log_ratio = logp - old_logp
    # on the first step on a batch ρ = 1 up to float rounding between two forwards; made exactly 1 in
    # value (gradient ∇log π kept) so that D = relu(0) contributes nothing there, as with PPO's first epoch
    log_ratio = jnp.where(jnp.abs(jax.lax.stop_gradient(log_ratio)) < ON_POLICY_TOL, logp - jax.lax.stop_gradient(logp),
                          log_ratio)
    ratio = jnp.exp(log_ratio)
    a = jnp.broadcast_to(adv[:, None], ratio.shape)
    t = jnp.asarray(progress, ratio.dtype)
    d = obj.drift(params, ratio, log_ratio, a, {"clip_eps": epsilon}, t)  # computed once: the loss and its readout
    return L.aggregate(-(ratio * a - d), mask, loss_type, L_max), sg_mean(d, mask)


def sg_mean(x, mask):
    m = mask.astype(x.dtype)
    return jax.lax.stop_gradient((x * m).sum() / jnp.maximum(m.sum(), 1.0))


# ---------------------------------------------------------------- saving and loading
def save(spec: dict, params, directory: str | Path, extra: dict | None = None) -> None:
    """``directory/llm_objective.json`` (the spec, plus ``extra``) and ``params.npz``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / SPEC_FILE).write_text(json.dumps({**spec, **(extra or {})}, indent=2))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]}
    np.savez(d / PARAMS_FILE, **flat)


def load(directory: str | Path, max_completion_length: int) -> tuple[dict, dict]:
    """``(spec, params)`` saved in ``directory``; raises ``ConfigError`` naming what is wrong."""
    from purejaxrl.errors import ConfigError

    d = Path(directory)
    if not (d / SPEC_FILE).exists():
        raise ConfigError(f"loss.path={d}: no {SPEC_FILE} there; give a directory saved by purejaxrl llm meta "
                          "(e.g. its selected/) or by purejaxrl.llm.learned.save")
    try:
        saved = json.loads((d / SPEC_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{d / SPEC_FILE} is not valid JSON ({e}); restore it or use another objective") from e
    try:
        spec = make_spec(saved["init"], saved.get("hidden", DEFAULT_HIDDEN), saved.get("temporal", True),
                         saved.get("q", 0.75), saved.get("p_floor", 1e-3))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{d / SPEC_FILE}: not a learned LLM objective ({e})") from None
    template = init_params(spec, jax.random.PRNGKey(0), max_completion_length)
    if not (d / PARAMS_FILE).exists():
        raise ConfigError(f"{d / PARAMS_FILE} is missing: a learned objective needs its parameters")
    with np.load(d / PARAMS_FILE) as f:
        got = {k: f[k] for k in f.files}
    want = {k: tuple(v.shape) for k, v in template.items()}
    if {k: tuple(v.shape) for k, v in got.items()} != want:
        raise ConfigError(f"{d / PARAMS_FILE} holds parameters of shapes {({k: v.shape for k, v in got.items()})}, but "
                          f"{spec['init']} with hidden={spec['hidden']} needs {want}; the files do not belong together")
    return spec, {k: jnp.asarray(got[k], jnp.float32) for k in template}


def from_config(loss_cfg: dict, max_completion_length: int, key: jax.Array) -> tuple[dict, dict]:
    """``(spec, params)`` of ``loss=learned``: loaded from ``loss.path``, or the special point
    ``loss.init`` (its learned layer drawn from ``key``)."""
    if loss_cfg.get("path"):
        return load(loss_cfg["path"], max_completion_length)
    get = lambda k, default: default if loss_cfg.get(k) is None else loss_cfg[k]  # noqa: E731
    spec = make_spec(get("init", "dr_grpo"), get("hidden", DEFAULT_HIDDEN), bool(get("temporal", True)), get("q", 0.75),
                     get("p_floor", 1e-3))
    return spec, init_params(spec, key, max_completion_length)


def digest(params) -> str:
    """A short hash of the parameters (part of a run's identity: a resume with other parameters is refused)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()[:16]


def options(spec: dict) -> dict:
    """The spec as the loss's static options (hashable values)."""
    return {k: spec[k] for k in ("kind", "init", "hidden", "temporal", "baseline", "loss_type", "p_floor")}
