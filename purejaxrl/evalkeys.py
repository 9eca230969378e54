"""Evaluation keys: independent across seeds, common across the arms compared on one seed.

Every evaluation path (greedy tests inside the compiled loop, ``purejaxrl eval``, host-stepped
envs, ``robustness``, ``meta-eval``, the LLM held-out sets) draws its randomness from one function
of the run's own key, never from a key shared by all runs and never from the training stream:

    base   = fold_in(run_key, DOMAIN)               # run_key = PRNGKey(seed) for a seed's run
    key    = fold_in(fold_in(base, STREAMS[s]), i)  # stream s: progress, validation or test

So two seeds evaluate on independent episodes, while two arms run on the same seed (two algorithms,
two hyperparameter values, two guidance weights, two robustness grid cells) meet the same initial
states and the same noise (common random numbers).  Validation and test episodes are disjoint
streams: anything chosen on ``validation`` is reported on ``test``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DOMAIN = 0x45_56_41_4C  # "EVAL": keeps evaluation keys apart from every training key of the run
STREAMS = {"progress": 0, "validation": 1, "test": 2}
FINAL = 2**31 - 1  # the index of the evaluation at the end of training (same for every budget)


def run_key(key: jax.Array) -> jax.Array:
    """The evaluation base key of a run whose training started from ``key``."""
    return jax.random.fold_in(key, DOMAIN)


def for_seed(seed) -> jax.Array:
    """The evaluation base key of the run with integer ``seed`` (``PRNGKey(seed)`` trains it)."""
    return run_key(jax.random.PRNGKey(seed))


def stream(base: jax.Array, name: str, index=0) -> jax.Array:
    """The key of evaluation ``index`` in stream ``name`` (``progress``, ``validation``, ``test``)."""
    if name not in STREAMS:
        raise ValueError(f"evaluation stream {name!r}; valid: {', '.join(STREAMS)}")
    return jax.random.fold_in(jax.random.fold_in(base, STREAMS[name]), index)


def progress(base: jax.Array, i, num_updates: int) -> jax.Array:
    """The greedy test after update ``i`` inside the training program; the one after the last
    update uses :data:`FINAL`, so arms with different update counts share their final episodes."""
    return stream(base, "progress", jnp.where(i == num_updates - 1, FINAL, i))


def host_seeds(base: jax.Array, name: str, index: int, episodes: int) -> np.ndarray:
    """Integer reset seeds ``[episodes]`` for envs stepped on the host (MuJoCo / gymnasium): the
    same derivation as :func:`stream`, turned into seeds a non-JAX env takes."""
    k = stream(base, name, index)
    return np.asarray(jax.random.randint(k, (episodes,), 0, 2**31 - 1, dtype=jnp.int32)).astype(np.int64)
