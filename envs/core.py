"""The environment interface shared by every backend."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Discrete:
    """``n`` actions, ``0 .. n-1``."""

    n: int

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (), 0, self.n)


@dataclass(frozen=True)
class Box:
    """A real vector bounded elementwise by ``low`` and ``high``."""

    low: float
    high: float
    shape: tuple[int, ...]

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, self.shape, minval=self.low, maxval=self.high)


class Environment(abc.ABC):
    """A single, auto-resetting JAX environment.

    ``step`` returns ``(obs, state, reward, terminated, truncated, info)``; ``info`` holds at least
    ``final_observation`` (the observation the step really reached, before any reset).
    """

    name: str = "environment"
    max_episode_steps: int = 1000

    @abc.abstractmethod
    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        """Start an episode: ``(obs, state)``."""

    @abc.abstractmethod
    def step(self, key: jax.Array, state: Any, action: jax.Array):
        """One transition with auto-reset."""

    # Backends set these two in their constructor; wrappers forward them.
    _obs_shape: tuple[int, ...] = ()
    _action_space: Discrete | Box | None = None

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return self._obs_shape

    @property
    def action_space(self) -> Discrete | Box:
        """The action space."""
        return self._action_space

    @property
    def unwrapped(self) -> Environment:
        return self

    def for_evaluation(self) -> Environment:
        """The env evaluations step: this one, less anything that only shapes training (e.g. a DM
        Control task's domain randomisation)."""
        return self


def as_step_types(reward, terminated, truncated):
    """The dtypes every environment returns: float32 reward, boolean flags."""
    terminated = jnp.asarray(terminated, dtype=bool)
    truncated = jnp.logical_and(jnp.asarray(truncated, dtype=bool), jnp.logical_not(terminated))
    return jnp.asarray(reward, dtype=jnp.float32), terminated, truncated
