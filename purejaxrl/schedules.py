"""Schedules whose parameters may be traced arrays (so they vmap across hyperparameters)."""

from __future__ import annotations

import jax.numpy as jnp


def linear(start, end, duration, count):
    """Linear interpolation from ``start`` to ``end`` over ``duration`` counts, then constant.

    ``duration <= 0`` gives ``end`` immediately.
    """
    frac = jnp.where(duration > 0, jnp.clip(count / jnp.maximum(duration, 1e-8), 0.0, 1.0), 1.0)
    return start + frac * (end - start)


def linear_decay(value, total, count):
    """``value · (1 − count / total)``, floored at 0 (the reference implementations' lr decay)."""
    return value * jnp.clip(1.0 - count / total, 0.0, 1.0)
