"""JAX environments for purejaxrl: one ``make(name)`` over gymnax and Brax.

Every environment returned by :func:`make` follows the gymnax >= 1.0 step signature::

    obs, state = env.reset(key)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action)

Steps auto-reset: when an episode ends the returned ``obs`` already belongs to the next
episode and ``info["final_observation"]`` holds the true last observation (bootstrap from it
on truncation).  Wrap with :class:`VecEnv` for ``num_envs`` copies and :class:`EpisodeStats`
for episode returns.
"""

# Marker checked by ``purejaxrl`` so that an unrelated top-level package called ``envs``
# (there is a popular one on PyPI) is never used silently in our place.
__purejaxrl_envs__ = True

from envs.core import Box, Discrete, Environment  # noqa: E402
from envs.registry import list_envs, make  # noqa: E402
from envs.wrappers import (  # noqa: E402
    ClipAction,
    EpisodeStats,
    NormalizeReward,
    VecEnv,
    make_stack,
)

__all__ = [
    "Box",
    "ClipAction",
    "Discrete",
    "Environment",
    "EpisodeStats",
    "NormalizeReward",
    "VecEnv",
    "list_envs",
    "make",
    "make_stack",
]
