"""Wrappers: vectorisation, episode statistics, action clipping, reward normalisation.

:func:`make_stack` builds the one stack that training and evaluation both use:
``env -> ClipAction -> VecEnv -> EpisodeStats [-> NormalizeReward]``; statistics therefore always
see the raw reward, and every consumer steps the env with the same (clipped) actions.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import Box, Environment


class Wrapper(Environment):
    def __init__(self, env: Environment):
        self.env = env
        self.name = env.name
        self.max_episode_steps = env.max_episode_steps

    def reset(self, key):
        return self.env.reset(key)

    def step(self, key, state, action):
        return self.env.step(key, state, action)

    @property
    def observation_shape(self):
        return self.env.observation_shape

    @property
    def action_space(self):
        return self.env.action_space

    @property
    def unwrapped(self):
        return self.env.unwrapped

    def for_evaluation(self):
        inner = self.env.for_evaluation()
        if inner is self.env:
            return self
        new = copy.copy(self)
        new.env = inner
        return new


class ClipAction(Wrapper):
    """Clip continuous actions into the Box before stepping (no-op for discrete spaces)."""

    def step(self, key, state, action):
        space = self.env.action_space
        if isinstance(space, Box):
            action = jnp.clip(action, space.low, space.high)
        return self.env.step(key, state, action)


class VecEnv(Wrapper):
    """``num_envs`` independent copies; keys are split per copy."""

    def __init__(self, env: Environment, num_envs: int):
        super().__init__(env)
        self.num_envs = int(num_envs)

    def reset(self, key):
        return jax.vmap(self.env.reset)(jax.random.split(key, self.num_envs))

    def step(self, key, state, action):
        return jax.vmap(self.env.step)(jax.random.split(key, self.num_envs), state, action)


@struct.dataclass
class EpisodeStatsState:
    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class EpisodeStats(Wrapper):
    """Adds ``info["episode_return"]`` / ``info["episode_length"]`` (of the episode that just ended,
    valid where ``info["episode_done"]``), computed from the raw reward."""

    def reset(self, key):
        obs, state = self.env.reset(key)
        zeros = jnp.zeros(obs.shape[: obs.ndim - len(self.observation_shape)], jnp.float32)
        return obs, EpisodeStatsState(state, zeros, zeros.astype(jnp.int32))

    def step(self, key, state, action):
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action)
        done = jnp.logical_or(terminated, truncated)
        ret = state.episode_return + reward
        length = state.episode_length + 1
        info = {**info, "episode_return": ret, "episode_length": length, "episode_done": done}
        new = EpisodeStatsState(env_state, jnp.where(done, 0.0, ret), jnp.where(done, 0, length))
        return obs, new, reward, terminated, truncated, info


@struct.dataclass
class NormalizeRewardState:
    env_state: Any
    discounted_return: jax.Array
    mean: jax.Array
    var: jax.Array
    count: jax.Array


class NormalizeReward(Wrapper):
    """Divide rewards by a running std of the discounted return (applied to a batched env)."""

    def __init__(self, env: Environment, gamma=0.99, epsilon: float = 1e-8):
        """``gamma`` may be a traced scalar (a vmapped discount reaches the normaliser too)."""
        super().__init__(env)
        self.gamma = gamma
        self.epsilon = epsilon

    def reset(self, key):
        obs, state = self.env.reset(key)
        batch = obs.shape[: obs.ndim - len(self.observation_shape)]
        return obs, NormalizeRewardState(state, jnp.zeros(batch), jnp.zeros(()), jnp.ones(()), jnp.full((), 1e-4))

    def step(self, key, state, action):
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action)
        done = jnp.logical_or(terminated, truncated)
        ret = state.discounted_return * self.gamma * (1.0 - done) + reward
        mean, var, count = running_moments(state.mean, state.var, state.count, ret)
        reward = reward / jnp.sqrt(var + self.epsilon)
        return obs, NormalizeRewardState(env_state, ret, mean, var, count), reward, terminated, truncated, info


def running_moments(mean, var, count, x, axis=0):
    """Merge the moments of batch ``x`` (over ``axis``) into running ``(mean, var, count)``
    (parallel-variance formula of Chan et al.)."""
    b_mean = jnp.mean(x, axis=axis)
    b_var = jnp.var(x, axis=axis)
    b_count = x.shape[axis]
    delta = b_mean - mean
    total = count + b_count
    new_mean = mean + delta * b_count / total
    m2 = var * count + b_var * b_count + jnp.square(delta) * count * b_count / total
    return new_mean, m2 / total, total



def make_stack(env: Environment, num_envs: int, *, normalize_reward: bool = False, gamma=0.99) -> Environment:
    """The environment stack every trainer and every evaluation steps through::

        env -> ClipAction -> VecEnv(num_envs) -> EpisodeStats [-> NormalizeReward(gamma)]

    ``ClipAction`` is a no-op for discrete spaces; ``EpisodeStats`` sees the raw reward (returns are
    always reported unnormalised); ``gamma`` may be traced.
    """
    venv = EpisodeStats(VecEnv(ClipAction(env), num_envs))
    if normalize_reward:
        venv = NormalizeReward(venv, gamma=gamma)
    return venv
