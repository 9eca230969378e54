"""PPO policy objectives as data.

An :class:`Objective` is a per-sample loss ``fn(ratio, log_ratio, advantages, hp, progress)`` plus
an optional pytree of parameters.  The parameters travel in the traced hyperparameters under
``hp["objective"]``, so a population of objectives (members × seeds) vmaps through one compile;
``progress ∈ [0, 1]`` is the fraction of training done (temporally-aware objectives read it).

An objective is passed to the algorithm (``build_algorithm(cfg, objective=...)``); ``algo.objective``
names one of :data:`BUILTIN` otherwise.  Nothing is looked up in a mutable global registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp


@dataclass(frozen=True)
class Objective:
    name: str
    fn: Callable[..., Any]
    params: Any = None  # traced through hp["objective"]; None for closed-form objectives


def clip_loss(ratio, log_ratio, advantages, hp, progress):
    """PPO-clip: ``−min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)``."""
    del log_ratio, progress
    clipped = jnp.clip(ratio, 1.0 - hp["clip_eps"], 1.0 + hp["clip_eps"])
    return -jnp.minimum(ratio * advantages, clipped * advantages)


BUILTIN: dict[str, Objective] = {"clip": Objective("clip", clip_loss)}


def builtin(name: str) -> Objective:
    if name not in BUILTIN:
        from purejaxrl.config import ConfigError

        raise ConfigError(f"algo.objective={name!r} is unknown; valid: {', '.join(sorted(BUILTIN))}")
    return BUILTIN[name]
