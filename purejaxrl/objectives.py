"""PPO policy objectives as data, in mirror-learning form.

PPO's policy term ``min(r·Â, clip(r, 1±ε)·Â)`` becomes ``r·Â − D(r, Â, …)`` with a *drift*
``D ≥ 0`` that is 0 at ``r = 1`` (r = π_new/π_old, Â the per-minibatch-normalised advantage); the
per-sample loss to minimise is ``−(r·Â − D)`` (Lu et al. 2022, "Discovered Policy Optimisation").

An :class:`Objective` is a drift ``drift(params, ratio, log_ratio, advantages, hp, progress)`` plus
its parameters (``None`` for closed forms).  The parameters travel in the traced hyperparameters
under ``hp["objective"]``, so a population of objectives (members × seeds) vmaps through one
compile; ``progress ∈ [0, 1)`` is the fraction of updates done before this one
(temporally-aware objectives read it).

Objectives are passed to the algorithm (``build_algorithm(cfg, objective=...)``); ``algo.objective``
names a closed form from :data:`BUILTIN`, or ``learned`` with ``algo.objective_path`` (a directory
saved by :func:`save_objective`, e.g. by ``purejaxrl meta``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Objective:
    """``drift(params, ratio, log_ratio, advantages, hp, progress) -> D ≥ 0`` per sample."""

    name: str
    drift: Callable[..., Any]
    params: Any = None  # traced through hp["objective"]; None for closed-form objectives
    spec: dict = field(default_factory=dict)  # what rebuilds it (kind, sizes) for saving

    def fn(self, ratio, log_ratio, advantages, hp, progress):
        """The per-sample PPO policy loss ``−(r·Â − D)``."""
        d = self.drift(hp.get("objective"), ratio, log_ratio, advantages, hp, progress)
        return -(ratio * advantages - d)


# ---- closed forms ----

def ppo_clip_drift(params, ratio, log_ratio, adv, hp, progress):
    """PPO-clip as a drift: ``D = relu((r − clip(r, 1 − ε, 1 + ε)) · Â)``, so that
    ``r·Â − D = min(r·Â, clip(r)·Â)``."""
    del params, log_ratio, progress
    return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - hp["clip_eps"], 1.0 + hp["clip_eps"])) * adv)


def dpo_drift(params, ratio, log_ratio, adv, hp, progress):
    """DPO, the objective LPO discovered, in closed form (Lu et al. 2022)::

        Â ≥ 0:  D = relu((r − 1)·Â − α·tanh((r − 1)·Â / α)),   α = 2
        Â < 0:  D = relu(log r·Â − β·tanh(log r·Â / β)),       β = 0.6
    """
    del params, hp, progress
    pos = (ratio - 1.0) * adv
    neg = log_ratio * adv
    return jnp.where(adv >= 0, jax.nn.relu(pos - 2.0 * jnp.tanh(pos / 2.0)), jax.nn.relu(neg - 0.6 * jnp.tanh(neg / 0.6)))


def no_clip_drift(params, ratio, log_ratio, adv, hp, progress):
    """No drift, ``D = 0``: the plain surrogate ``r·Â`` (the PPO paper's "No clipping or penalty"
    row of its Table 1, the ablation the clipped objective is compared with)."""
    del params, log_ratio, adv, hp, progress
    return jnp.zeros_like(ratio)


# ---- learned drifts ----

def lpo_features(ratio, log_ratio, adv, progress=None):
    """LPO's 8 inputs ``x = [r−1, (r−1)², log r, (log r)²]`` and each times Â; with ``progress``
    (TA-LPO) also ``p·x`` (16 inputs).  Every feature is 0 at ``r = 1``."""
    r1 = ratio - 1.0
    base = jnp.stack([r1, r1**2, log_ratio, log_ratio**2], axis=-1)
    x = jnp.concatenate([base, base * adv[..., None]], axis=-1)
    if progress is not None:
        x = jnp.concatenate([x, x * progress], axis=-1)
    return x


def drift_net(params, x):
    """``f_φ(x) = tanh(x W₁) w₂`` (no biases: f = 0 where x = 0, i.e. at r = 1)."""
    return (jnp.tanh(x @ params["w1"]) @ params["w2"])[..., 0]


def make_learned_drift(temporal: bool, ppo_init: bool, offset: float):
    """``D = relu(f_φ(x) [+ PPO-clip drift] − offset)`` on the (TA-)LPO features."""

    def drift(params, ratio, log_ratio, adv, hp, progress):
        x = lpo_features(ratio, log_ratio, adv, progress if temporal else None)
        f = drift_net(params, x)
        if ppo_init:  # φ = 0 starts from PPO's clipping
            f = f + ppo_clip_drift(None, ratio, log_ratio, adv, hp, progress)
        return jax.nn.relu(f - offset)

    return drift


def init_learned_params(key: jax.Array, num_features: int, hidden: int, init_scale: float = 1.0) -> dict:
    """``w1 ~ N(0, scale²/num_features)``, ``w2 = 0``: f ≡ 0 at the start (so with the PPO
    initialisation the objective starts as PPO-clip), while a perturbation of ``w2`` changes f at
    first order (from ``w1 = w2 = 0`` every ES perturbation would act only at second order)."""
    w1 = jax.random.normal(key, (num_features, hidden)) * init_scale / np.sqrt(num_features)
    return {"w1": w1, "w2": jnp.zeros((hidden, 1))}


BUILTIN: dict[str, Objective] = {
    "clip": Objective("clip", ppo_clip_drift, spec={"kind": "clip"}),
    "dpo": Objective("dpo", dpo_drift, spec={"kind": "dpo"}),
    "none": Objective("none", no_clip_drift, spec={"kind": "none"}),
}
LEARNED_KINDS = ("lpo", "ta_lpo")
NUM_LPO_FEATURES = 8  # x; TA-LPO appends p·x


def build(spec: dict, params: Any = None, key: jax.Array | None = None) -> Objective:
    """An objective from its spec: ``{"kind": clip|dpo}`` or ``{"kind": lpo|ta_lpo, "hidden",
    "ppo_init", "offset", "init_scale"}`` (parameters drawn from ``key`` when not given)."""
    kind = spec["kind"]
    if kind in BUILTIN:
        return BUILTIN[kind]
    if kind not in LEARNED_KINDS:
        raise ValueError(f"unknown objective kind {kind!r}; valid: {', '.join([*BUILTIN, *LEARNED_KINDS])}")
    temporal = kind == "ta_lpo"
    full = {"kind": kind, "hidden": int(spec.get("hidden", 128)), "ppo_init": bool(spec.get("ppo_init", True)),
            "offset": float(spec.get("offset", 1e-4)), "init_scale": float(spec.get("init_scale", 1.0))}
    if params is None:
        params = init_learned_params(key if key is not None else jax.random.PRNGKey(0),
                                     2 * NUM_LPO_FEATURES if temporal else NUM_LPO_FEATURES,
                                     full["hidden"], full["init_scale"])
    return Objective(kind, make_learned_drift(temporal, full["ppo_init"], full["offset"]), params, full)


def without_progress(obj: Objective) -> Objective:
    """The time-input ablation of a TA-LPO objective: its weights on the ``p·x`` features (the last 8
    input rows of ``w1``) set to 0, every other weight kept.  Its drift at any progress equals the
    original's at p = 0, so against TA-LPO it isolates what reading the training progress does."""
    if obj.spec.get("kind") != "ta_lpo":
        raise ValueError(f"the time-input ablation applies to ta_lpo objectives, not {obj.spec.get('kind')!r}")
    w1 = jnp.asarray(obj.params["w1"])
    params = {**obj.params, "w1": w1.at[NUM_LPO_FEATURES:].set(0.0)}
    return Objective(f"{obj.name} (p·x = 0)", obj.drift, params, {**obj.spec, "ablation": "no_progress"})


def builtin(name: str) -> Objective:
    if name not in BUILTIN:
        from purejaxrl.errors import ConfigError

        raise ConfigError(f"algo.objective={name!r} is unknown; valid: {', '.join(sorted(BUILTIN))}, learned")
    return BUILTIN[name]


# ---- saving and loading learned objectives ----

SPEC_FILE, PARAMS_FILE = "objective.json", "params.npz"


def save_objective(obj: Objective, directory: str | Path, extra: dict | None = None) -> None:
    """``directory/objective.json`` (the spec) and ``params.npz`` (one array per parameter)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / SPEC_FILE).write_text(json.dumps({**obj.spec, **(extra or {})}, indent=2))
    if obj.params is not None:
        np.savez(d / PARAMS_FILE, **{k: np.asarray(v) for k, v in obj.params.items()})


def load_objective(directory: str | Path) -> Objective:
    """The objective saved in ``directory``; raises ``ConfigError`` naming what is wrong."""
    from purejaxrl.errors import ConfigError

    d = Path(directory)
    if not (d / SPEC_FILE).exists():
        raise ConfigError(f"algo.objective_path={d}: no {SPEC_FILE} there; give a directory saved by purejaxrl meta "
                          "(e.g. outputs/<meta run>/best)")
    try:
        spec = json.loads((d / SPEC_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{d / SPEC_FILE} is not valid JSON ({e}); restore it or use another objective") from e
    if spec.get("kind") in BUILTIN:
        return BUILTIN[spec["kind"]]
    if spec.get("kind") not in LEARNED_KINDS:
        raise ConfigError(f"{d / SPEC_FILE}: kind={spec.get('kind')!r}; valid: {', '.join([*BUILTIN, *LEARNED_KINDS])}")
    template = build(spec)
    if not (d / PARAMS_FILE).exists():
        raise ConfigError(f"{d / PARAMS_FILE} is missing: a learned objective needs its parameters")
    with np.load(d / PARAMS_FILE) as f:
        params = {k: jnp.asarray(f[k]) for k in f.files}
    want = {k: tuple(v.shape) for k, v in template.params.items()}
    got = {k: tuple(v.shape) for k, v in params.items()}
    if want != got:
        raise ConfigError(f"{d / PARAMS_FILE} holds parameters of shapes {got}, but {spec['kind']} with hidden="
                          f"{template.spec['hidden']} needs {want}; the files do not belong together")
    return build(template.spec, params)
