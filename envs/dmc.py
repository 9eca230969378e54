"""DeepMind Control Suite tasks from MuJoCo Playground (MJX, pure JAX: jittable, vmappable, CPU or GPU).

``env=dmc_cartpole_balance`` is Playground's ``CartpoleBalance`` with the ``jax`` MJX backend, a
time limit of ``episode_length`` control steps and gymnax-style auto-reset (an ended episode
restarts from a fresh initial state drawn with the step's key).  Physics can be changed per env
instance: ``mass_scale`` multiplies every body's mass and inertia, ``friction_scale`` every geom's
sliding friction; both live in the env state, so a batch of envs with different values steps as
one vmapped program (the robustness grids) — set them with :meth:`DMCEnv.with_physics`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import Box, Environment, as_step_types

TASKS = {
    "cartpole_balance": "CartpoleBalance",
    "cartpole_swingup": "CartpoleSwingup",
    "hopper_stand": "HopperStand",
    "hopper_hop": "HopperHop",
    "walker_stand": "WalkerStand",
    "walker_walk": "WalkerWalk",
    "cheetah_run": "CheetahRun",
    "pendulum_swingup": "PendulumSwingup",
    "reacher_easy": "ReacherEasy",
}


@struct.dataclass
class DMCState:
    inner: Any           # Playground State of the running episode
    time: jax.Array
    mass_scale: jax.Array
    friction_scale: jax.Array


class DMCEnv(Environment):
    def __init__(self, task: str, episode_length: int = 1000, mass_scale: float = 1.0, friction_scale: float = 1.0,
                 impl: str = "jax"):
        if task not in TASKS:
            raise ValueError(f"unknown DM Control task {task!r}; valid: {', '.join('dmc_' + t for t in TASKS)}")
        if not isinstance(episode_length, int) or episode_length < 1:
            raise ValueError(f"episode_length={episode_length!r} must be an integer >= 1")
        for k, v in (("mass_scale", mass_scale), ("friction_scale", friction_scale)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{k}={v!r} must be a number > 0")
        try:
            from mujoco_playground import registry
        except ImportError as e:  # a dependency of the project: a broken install
            raise ImportError(f"DM Control tasks need MuJoCo Playground ({e}); reinstall with pip install -e .") from e
        self._env = registry.load(TASKS[task], config_overrides={"impl": impl})
        self.task = task
        self.name = f"dmc_{task}"
        self.max_episode_steps = int(episode_length)
        self.mass_scale, self.friction_scale = float(mass_scale), float(friction_scale)
        self._action_space = Box(-1.0, 1.0, (int(self._env.action_size),))
        self._obs_shape = (int(self._env.observation_size),)
        m = self._env.mjx_model
        self._base = (m.body_mass, m.body_inertia, m.body_subtreemass, m.body_invweight0, m.dof_invweight0,
                      m.geom_friction)

    @property
    def playground(self):
        """The wrapped Playground env (its ``mj_model`` names bodies, e.g. for external forces)."""
        return self._env

    def _model(self, mass_scale, friction_scale):
        """Every mass × ``mass_scale`` with the constants MuJoCo derives from masses kept consistent
        (subtree masses, which velocity sensors divide by; inverse weights, which soften constraints)."""
        mass, inertia, subtree, body_iw, dof_iw, friction = self._base
        return self._env.mjx_model.replace(
            body_mass=mass * mass_scale, body_inertia=inertia * mass_scale, body_subtreemass=subtree * mass_scale,
            body_invweight0=body_iw / mass_scale, dof_invweight0=dof_iw / mass_scale,
            geom_friction=friction.at[:, 0].multiply(friction_scale))

    def _with_model(self, fn, state: DMCState, *args):
        """Run a Playground function with this instance's physics (the model is read at trace time)."""
        env, base = self._env, self._env._mjx_model
        env._mjx_model = self._model(state.mass_scale, state.friction_scale)
        try:
            return fn(*args)
        finally:
            env._mjx_model = base

    def reset(self, key):
        s = self._env.reset(key)
        one = jnp.ones((), jnp.float32)
        return s.obs, DMCState(s, jnp.zeros((), jnp.int32), one * self.mass_scale, one * self.friction_scale)

    @staticmethod
    def with_physics(state: DMCState, mass_scale, friction_scale) -> DMCState:
        """The same state with other mass / friction multipliers (per instance under vmap)."""
        ms = jnp.broadcast_to(jnp.asarray(mass_scale, jnp.float32), state.mass_scale.shape)
        fs = jnp.broadcast_to(jnp.asarray(friction_scale, jnp.float32), state.friction_scale.shape)
        return state.replace(mass_scale=ms, friction_scale=fs)

    def step(self, key, state, action):
        ns = self._with_model(self._env.step, state, state.inner, action)
        time = state.time + 1
        # Playground ends an episode only when the physics became NaN: nothing non-finite leaves here
        reward, terminated, truncated = as_step_types(jnp.nan_to_num(ns.reward), ns.done > 0.5,
                                                      time >= self.max_episode_steps)
        done = jnp.logical_or(terminated, truncated)
        fresh = self._with_model(self._env.reset, state, key)  # auto-reset: a new initial state from the key
        inner = jax.tree.map(lambda f, x: jnp.where(done, f, x), fresh, ns)
        new = state.replace(inner=inner, time=jnp.where(done, 0, time))
        return inner.obs, new, reward, terminated, truncated, {"final_observation": jnp.nan_to_num(ns.obs)}
