"""``make(name)``: gymnax (classic control, MinAtar, bsuite, misc) and Brax environments."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import Box, Discrete, Environment, as_step_types
from envs.errors import install_hint

# Short names used by the config group ``conf/env``; any gymnax id works as well.
ALIASES = {
    "cartpole": "CartPole-v1",
    "acrobot": "Acrobot-v1",
    "mountaincar": "MountainCar-v0",
    "pendulum": "Pendulum-v1",
    "minatar_asterix": "Asterix-MinAtar",
    "minatar_breakout": "Breakout-MinAtar",
    "minatar_freeway": "Freeway-MinAtar",
    "minatar_seaquest": "Seaquest-MinAtar",
    "minatar_space_invaders": "SpaceInvaders-MinAtar",
    "catch": "Catch-bsuite",
    "deepsea": "DeepSea-bsuite",
}

# environments that need an optional extra: (name prefix, modules, extra, what)
EXTRAS = (
    ("dmc_", ("mujoco_playground", "mujoco"), "dmc", "DeepMind Control tasks (MuJoCo Playground)"),
    ("brax/", ("brax",), "brax", "Brax environments"),
    ("ogbench_", ("ogbench", "gymnasium"), "ogbench", "OGBench's manipulation tasks"),
)


def missing_extra(name: str) -> str | None:
    """One line naming the extra an environment needs and how to install it, or None when the
    environment can be built (checked without importing anything heavy)."""
    import importlib.util

    name = ALIASES.get(name, name)
    for prefix, modules, extra, what in EXTRAS:
        if name.startswith(prefix):
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            if missing:
                return f"{what} need the '{extra}' extra (missing {', '.join(missing)}): {install_hint(extra)}"
    return None


BRAX_ENVS = (
    "ant",
    "halfcheetah",
    "hopper",
    "humanoid",
    "humanoidstandup",
    "inverted_pendulum",
    "inverted_double_pendulum",
    "pusher",
    "reacher",
    "swimmer",
    "walker2d",
)


def _gymnax_ids() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


def list_envs() -> list[str]:
    """Every name :func:`make` accepts."""
    from envs.dmc import TASKS as DMC
    from envs.gridworld import FAMILIES, NAMED
    from envs.ogbench import TASKS
    from envs.pointmaze import MAZES

    return (sorted(ALIASES) + _gymnax_ids() + [f"brax/{n}" for n in BRAX_ENVS] + [f"pointmaze_{m}" for m in MAZES]
            + [f"gridworld_{n}" for n in [*NAMED, *FAMILIES]]
            + [f"ogbench_{t}" for t in TASKS] + [f"dmc_{t}" for t in DMC])


def make(name: str, **kwargs: Any) -> Environment:
    """Build an environment by name.

    ``name`` is a gymnax id (``"CartPole-v1"``, ``"Breakout-MinAtar"``, ...), one of the short
    aliases (``"cartpole"``, ``"minatar_breakout"``, ...) or ``"brax/<env>"`` (``"brax/hopper"``).
    Keyword arguments go to the backend (gymnax ``EnvParams`` fields, or Brax's constructor plus
    ``episode_length``).  ``"ogbench_<task>"`` (``"ogbench_cube_single"``) is an OGBench MuJoCo
    task stepped on the host, for offline algorithms (``kwargs``: ``task`` 1–5); ``"dmc_<task>"``
    (``"dmc_cartpole_balance"``) a DeepMind Control task from MuJoCo Playground (MJX);
    ``"gridworld_<level>"`` (``"gridworld_dense"``, ``"gridworld_all"``) a grid world of the LPG paper.
    """
    if name.startswith("gridworld_"):
        from envs.gridworld import FAMILIES, NAMED, GridWorld

        level = name[len("gridworld_"):]
        if level not in NAMED and level not in FAMILIES:
            raise ValueError(f"Unknown grid world {name!r}; valid: {', '.join('gridworld_' + n for n in [*NAMED, *FAMILIES])}")
        return GridWorld(level, **kwargs)
    if name.startswith("pointmaze_"):
        from envs.pointmaze import MAZES, PointMaze

        maze = name[len("pointmaze_"):]
        if maze not in MAZES:
            raise ValueError(f"Unknown point maze {name!r}; valid: {', '.join('pointmaze_' + m for m in MAZES)}")
        return PointMaze(maze, **kwargs)
    if name.startswith("dmc_"):
        from envs.dmc import DMCEnv

        return DMCEnv(name[len("dmc_"):], **kwargs)
    if name.startswith("ogbench_"):
        from envs.ogbench import OGBenchEnv

        return OGBenchEnv(name[len("ogbench_"):], **kwargs)
    if name.startswith("brax/"):
        brax_name = name[len("brax/"):]
        if brax_name not in BRAX_ENVS:
            raise ValueError(
                f"Unknown Brax environment {brax_name!r}; valid: {', '.join('brax/' + n for n in BRAX_ENVS)}"
            )
        return BraxEnv(brax_name, **kwargs)
    env_id = ALIASES.get(name, name)
    if env_id not in _gymnax_ids():
        raise ValueError(f"Unknown environment {name!r}. Valid names: {', '.join(list_envs())}")
    return GymnaxEnv(env_id, **kwargs)


class GymnaxEnv(Environment):
    """A gymnax environment with its parameters bound (gymnax >= 1.0 auto-resets in ``step``)."""

    def __init__(self, env_id: str, **param_overrides: Any):
        import gymnax

        env, params = gymnax.make(env_id)
        unknown = set(param_overrides) - set(vars(params))
        if unknown:
            raise ValueError(
                f"{env_id} has no parameter(s) {sorted(unknown)}; valid: {sorted(vars(params))}"
            )
        for k, v in param_overrides.items():
            default = getattr(params, k)
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            if isinstance(default, (int, float)) and not isinstance(default, bool) and not numeric:
                raise ValueError(f"{env_id} parameter {k}={v!r} must be a number (default {default!r})")
        self._env = env
        self.params = params.replace(**param_overrides) if param_overrides else params
        self.name = env_id
        self.max_episode_steps = int(getattr(self.params, "max_steps_in_episode", 1000))
        space = env.action_space(self.params)
        if hasattr(space, "n"):
            self._action_space = Discrete(int(space.n))
        else:
            self._action_space = Box(float(jnp.min(space.low)), float(jnp.max(space.high)), tuple(space.shape))
        self._obs_shape = tuple(env.observation_space(self.params).shape)

    def reset(self, key):
        obs, state = self._env.reset_env(key, self.params)
        return obs.astype(jnp.float32), state

    def step(self, key, state, action):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, self.params)
        reward, terminated, truncated = as_step_types(reward, terminated, truncated)
        info = {"final_observation": info["final_observation"].astype(jnp.float32)}
        return obs.astype(jnp.float32), state, reward, terminated, truncated, info


@struct.dataclass
class BraxEnvState:
    inner: Any  # brax State of the running episode
    first: Any  # brax State the episode restarts from (as in Brax's own auto-reset)
    time: jax.Array


class BraxEnv(Environment):
    """A Brax environment with a time limit and gymnax-style auto-reset.

    Like Brax's ``AutoResetWrapper``, an ended episode restarts from the state drawn at ``reset``.
    """

    def __init__(self, name: str, episode_length: int = 1000, backend: str = "generalized", **kwargs):
        from brax import envs as brax_envs

        self._env = brax_envs.get_environment(name, backend=backend, **kwargs)
        self.name = f"brax/{name}"
        self.max_episode_steps = int(episode_length)
        self._action_space = Box(-1.0, 1.0, (self._env.action_size,))
        self._obs_shape = (self._env.observation_size,)

    def reset(self, key):
        s = self._env.reset(key)
        return s.obs, BraxEnvState(inner=s, first=s, time=jnp.zeros((), jnp.int32))

    def step(self, key, state, action):
        del key  # Brax dynamics are deterministic given the state
        ns = self._env.step(state.inner, action)
        time = state.time + 1
        reward, terminated, truncated = as_step_types(ns.reward, ns.done > 0.5, time >= self.max_episode_steps)
        done = jnp.logical_or(terminated, truncated)
        inner = jax.tree.map(lambda f, x: jnp.where(done, f, x), state.first, ns)
        new_state = BraxEnvState(inner=inner, first=state.first, time=jnp.where(done, 0, time))
        return inner.obs, new_state, reward, terminated, truncated, {"final_observation": ns.obs}
