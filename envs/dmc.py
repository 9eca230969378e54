"""DeepMind Control Suite tasks from MuJoCo Playground (MJX, pure JAX: jittable, vmappable, CPU or GPU).

``env=dmc_cartpole_balance`` is Playground's ``CartpoleBalance`` with the ``jax`` MJX backend, a
time limit of ``episode_length`` control steps and gymnax-style auto-reset (an ended episode
restarts from a fresh initial state drawn with the step's key).  Physics can be changed per env
instance: ``mass_scale`` multiplies every body's mass and inertia, ``friction_scale`` every geom's
sliding friction; both live in the env state, so a batch of envs with different values steps as
one vmapped program (the robustness grids) — set them with :meth:`DMCEnv.with_physics`.

``action_repeat`` (k) applies each action for k control steps and returns the sum of their rewards,
as common DM Control benchmark settings do; ``episode_length`` still counts control steps, so returns
stay on the suite's 0–1,000 scale while an episode is ``episode_length / k`` agent steps.

Per-body masses: the state's ``body_scale`` (one multiplier per body, default 1) scales single bodies'
mass and inertia on top of ``mass_scale``, with subtree masses recomputed (inverse weights, which only
soften constraints, kept: the reference sets only ``body_mass``) — the reference's cartpole grid, pole
mass × cart mass (:meth:`DMCEnv.with_body_masses`).

Domain randomisation, in training only (:meth:`DMCEnv.for_evaluation` drops it: evaluations and
robustness grids run the physics they set): every episode, at reset and at each auto-reset,

* ``mass_scale_range: [lo, hi]`` / ``friction_scale_range: [lo, hi]`` draw ``mass_scale`` /
  ``friction_scale`` uniformly, ``body_mass_ranges: {body: [lo, hi]}`` single bodies' masses in kg
  (the robustness grids' axes, so SAC + domain randomisation trains on the physics it is evaluated on);
* ``randomization_fn: "module:function"`` — MuJoCo Playground's interface, ``fn(model, rng) ->
  (model_batch, in_axes)`` with ``rng`` a batch of keys (e.g. its locomotion tasks' ``domain_randomize``):
  called with one key per episode; the fields whose ``in_axes`` is 0 replace the model's for that episode.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


class TorsoTable(NamedTuple):
    """MuJoCo's constants for the torso masses of :meth:`DMCEnv.absolute_physics`."""
    log_ratio: np.ndarray       # [K] log(torso mass / nominal) of the tabulated masses
    body_invweight: np.ndarray  # [K, nbody, 2] mj_setConst's body_invweight0 at each
    dof_invweight: np.ndarray   # [K, nv]
    torso_mass: float           # nominal, kg
    is_torso: np.ndarray        # [nbody] one-hot of the torso
    carries: np.ndarray         # [nbody] the torso and its ancestors: their subtree masses include it


@struct.dataclass
class DMCState:
    inner: Any           # Playground State of the running episode
    time: jax.Array
    mass_scale: jax.Array
    friction_scale: jax.Array
    body_scale: jax.Array  # [nbody] per-body mass multipliers
    fields: dict           # model fields drawn by randomization_fn for this episode ({} without one)


def randomize_mass_friction(model, rng, mass=(0.8, 1.2), friction=(0.5, 1.5)):
    """A domain randomisation in MuJoCo Playground's form (``randomization_fn="envs.dmc:randomize_mass_friction"``):
    per key, every body's mass (and inertia) × U(``mass``) drawn per body and every geom's sliding
    friction × one U(``friction``); returns ``(model_batch, in_axes)``."""
    nbody = model.body_mass.shape[0]

    @jax.vmap
    def draw(key):
        k_m, k_f = jax.random.split(key)
        m = jax.random.uniform(k_m, (nbody,), minval=mass[0], maxval=mass[1])
        f = jax.random.uniform(k_f, (), minval=friction[0], maxval=friction[1])
        return model.body_mass * m, model.body_inertia * m[:, None], model.geom_friction.at[:, 0].multiply(f)

    body_mass, body_inertia, geom_friction = draw(rng)
    in_axes = jax.tree_util.tree_map(lambda x: None, model)
    in_axes = in_axes.tree_replace({"body_mass": 0, "body_inertia": 0, "geom_friction": 0})
    batch = model.tree_replace({"body_mass": body_mass, "body_inertia": body_inertia, "geom_friction": geom_friction})
    return batch, in_axes


def _range(name: str, v, unit: str) -> tuple[float, float]:
    if (not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, (int, float)) for x in v)
            or not 0 < v[0] <= v[1]):
        raise ValueError(f"{name}={v!r} must be [low, high] with 0 < low <= high ({unit})")
    return float(v[0]), float(v[1])


def _is_zero(axis) -> bool:
    return isinstance(axis, int) and not isinstance(axis, bool) and axis == 0


def _load_randomization(spec: str):
    """``"module:function"`` → the function (a Playground-style ``fn(model, rng) -> (model_batch, in_axes)``)."""
    import importlib

    mod, _, fn = str(spec).partition(":")
    if not mod or not fn:
        raise ValueError(f"randomization_fn={spec!r} must be 'module:function', e.g. "
                         "'mujoco_playground._src.locomotion.go1.randomize:domain_randomize'")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"randomization_fn={spec!r}: {e}") from e


class DMCEnv(Environment):
    def __init__(self, task: str, episode_length: int = 1000, mass_scale: float = 1.0, friction_scale: float = 1.0,
                 action_repeat: int = 1, impl: str = "jax", mass_scale_range=None, friction_scale_range=None,
                 randomization_fn: str | None = None, body_mass_ranges: dict | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown DM Control task {task!r}; valid: {', '.join('dmc_' + t for t in TASKS)}")
        if not isinstance(episode_length, int) or episode_length < 1:
            raise ValueError(f"episode_length={episode_length!r} must be an integer >= 1")
        if not isinstance(action_repeat, int) or isinstance(action_repeat, bool) or action_repeat < 1 \
                or episode_length % action_repeat:
            raise ValueError(f"action_repeat={action_repeat!r} must be an integer >= 1 that divides "
                             f"episode_length={episode_length}")
        for k, v in (("mass_scale", mass_scale), ("friction_scale", friction_scale)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{k}={v!r} must be a number > 0")
        self.ranges = {k: _range(f"{k}_range", v, "multipliers of the nominal task drawn per episode, e.g. [0.5, 2.0]")
                       for k, v in (("mass_scale", mass_scale_range), ("friction_scale", friction_scale_range))
                       if v is not None}
        # body name -> (lo, hi) kg, drawn per episode into body_scale
        self.body_ranges = {str(n): _range(f"body_mass_ranges.{n}", v, "kg") for n, v in (body_mass_ranges or {}).items()}
        self.randomization_fn = randomization_fn
        self._randomize = _load_randomization(randomization_fn) if randomization_fn else None
        try:
            from mujoco_playground import registry
        except ImportError as e:  # the optional extra
            from envs.errors import install_hint

            raise ImportError(f"DM Control tasks need MuJoCo Playground ({e}): {install_hint('dmc')}") from e
        self._env = registry.load(TASKS[task], config_overrides={"impl": impl})
        self.task = task
        self.name = f"dmc_{task}"
        self.action_repeat = int(action_repeat)
        self.max_episode_steps = int(episode_length) // self.action_repeat  # agent steps
        self.mass_scale, self.friction_scale = float(mass_scale), float(friction_scale)
        self._action_space = Box(-1.0, 1.0, (int(self._env.action_size),))
        self._obs_shape = (int(self._env.observation_size),)
        m = self._env.mjx_model
        self._base = (m.body_mass, m.body_inertia, m.body_subtreemass, m.body_invweight0, m.dof_invweight0,
                      m.geom_friction)
        self._table: TorsoTable | None = None  # built on the first absolute_physics()
        mj = self._env.mj_model
        self.body_names = tuple(mj.body(i).name for i in range(mj.nbody))
        in_subtree = np.zeros((mj.nbody, mj.nbody), np.float32)  # [b, c] = 1 where body c is in b's subtree
        for c in range(mj.nbody):
            b = c
            while True:
                in_subtree[b, c] = 1.0
                if b == 0:
                    break
                b = int(mj.body_parentid[b])
        self._in_subtree = in_subtree
        for name in self.body_ranges:
            if name not in self.body_names[1:]:
                raise ValueError(f"body_mass_ranges: {self.name} has no body {name!r}; valid: {', '.join(self.body_names[1:])}")
        if self._randomize is not None:
            self._draw_fields(jax.random.PRNGKey(0))  # a function that randomises nothing: one line now

    def for_evaluation(self):
        """This env without its domain randomisation (evaluations run the physics they set)."""
        if not self.randomized:
            return self
        env = copy.copy(self)
        env.ranges, env.body_ranges, env._randomize = {}, {}, None
        return env

    @property
    def randomized(self) -> bool:
        return bool(self.ranges or self.body_ranges or self._randomize is not None)

    def _draw_fields(self, key) -> dict:
        """The model fields ``randomization_fn`` draws for one episode (those with ``in_axes`` 0)."""
        import dataclasses

        model, in_axes = self._randomize(self._env.mjx_model, key[None])
        base = self._env.mjx_model  # array fields only (a static int field of in_axes may also read 0)
        names = [f.name for f in dataclasses.fields(in_axes)
                 if _is_zero(getattr(in_axes, f.name)) and isinstance(getattr(base, f.name), jax.Array)]
        if not names:
            raise ValueError(f"randomization_fn={self.randomization_fn!r} randomised no model field (in_axes has no 0)")
        return {n: getattr(model, n)[0] for n in names}

    def _draw_physics(self, key):
        """``(mass_scale, friction_scale, body_scale, fields)`` of a new episode: drawn where randomised."""
        k_m, k_f, k_fn, k_b = jax.random.split(jax.random.fold_in(key, 0x5EED), 4)
        mass, friction = (jnp.asarray(x, jnp.float32) for x in self.initial_physics())
        if "mass_scale" in self.ranges:
            mass = jax.random.uniform(k_m, (), minval=self.ranges["mass_scale"][0], maxval=self.ranges["mass_scale"][1])
        if "friction_scale" in self.ranges:
            lo, hi = self.ranges["friction_scale"]
            friction = jax.random.uniform(k_f, (), minval=lo, maxval=hi)
        fields = self._draw_fields(k_fn) if self._randomize is not None else {}
        body = jnp.ones((len(self.body_names),), jnp.float32)
        nominal = self._env.mj_model.body_mass
        for j, (name, (lo, hi)) in enumerate(sorted(self.body_ranges.items())):
            i = self.body_names.index(name)
            kg = jax.random.uniform(jax.random.fold_in(k_b, j), (), minval=lo, maxval=hi)
            body = body.at[i].set(kg / float(nominal[i]))
        return mass, friction, body, fields

    @property
    def playground(self):
        """The wrapped Playground env (its ``mj_model`` names bodies, e.g. for external forces)."""
        return self._env

    def _model(self, mass_scale, friction_scale, body_scale=None, fields=None):
        """Every mass × ``mass_scale`` with the constants MuJoCo derives from masses kept consistent
        (subtree masses, which velocity sensors divide by; inverse weights, which soften constraints).
        Under :meth:`absolute_physics` the two numbers are the torso's mass and the friction coefficient.
        ``body_scale`` ([nbody]) scales single bodies further; ``fields`` replace model fields."""
        model = self._scaled_model(mass_scale, friction_scale)
        if body_scale is not None:
            mass = model.body_mass * body_scale
            model = model.replace(body_mass=mass, body_inertia=model.body_inertia * body_scale[:, None],
                                  body_subtreemass=jnp.asarray(self._in_subtree) @ mass)
        return model.replace(**fields) if fields else model

    def _scaled_model(self, mass_scale, friction_scale):
        if self._absolute is not None:
            return self._absolute_model(mass_scale, friction_scale)
        mass, inertia, subtree, body_iw, dof_iw, friction = self._base
        return self._env.mjx_model.replace(
            body_mass=mass * mass_scale, body_inertia=inertia * mass_scale, body_subtreemass=subtree * mass_scale,
            body_invweight0=body_iw / mass_scale, dof_invweight0=dof_iw / mass_scale,
            geom_friction=friction.at[:, 0].multiply(friction_scale))

    # --- absolute physics: the paper's torso mass (kg) x friction coefficient grids ----------------------
    _absolute = None  # the TorsoTable while absolute_physics() is entered
    TABLE_RANGE = (1 / 50, 50)  # torso mass / nominal covered by the inverse-weight table

    @property
    def nominal_physics(self) -> dict:
        """The nominal torso mass (kg) and sliding friction coefficients of this task."""
        m = self._env.mj_model
        t = self._torso_id()
        return {"torso_mass": float(m.body_mass[t]) if t is not None else None,
                "friction": sorted({round(float(f), 6) for f in m.geom_friction[:, 0]})}

    def _torso_id(self):
        import mujoco

        i = mujoco.mj_name2id(self._env.mj_model, mujoco.mjtObj.mjOBJ_BODY, "torso")
        return None if i < 0 else int(i)

    def absolute_physics(self):
        """Context manager: while programs are traced inside it, an instance's ``mass_scale`` is the
        torso's mass in kg (its inertia scaled with it, every other body unchanged) and ``friction_scale``
        the sliding friction coefficient of every geom (so of every contact) — the paper's grids.  Subtree
        masses are exact; the inverse weights at the reference pose (which soften constraints) are
        MuJoCo's own (``mj_setConst``) at 129 torso masses from 1/50 to 50 × nominal, interpolated
        linearly in log-mass between them (relative error ≤ 5e-4).  The reference code sets only
        ``body_mass`` of the torso (inertia and derived constants unchanged); here the torso is a
        denser body of the same shape and MuJoCo's derived constants stay consistent.  A state reset
        inside the context starts at the nominal values; the robustness grids set theirs per instance."""
        return self._entered(self._torso_table())  # no torso: the error comes here, not on entering

    @contextlib.contextmanager
    def _entered(self, table):
        before, self._absolute = self._absolute, table
        try:
            yield self.nominal_physics
        finally:
            self._absolute = before

    def _torso_table(self) -> TorsoTable:
        """Built once per env: MuJoCo's inverse weights for a torso of every tabulated mass."""
        if self._table is not None:
            return self._table
        import mujoco

        t = self._torso_id()
        if t is None:
            raise ValueError(f"{self.name} has no body named 'torso': absolute grids (torso mass x friction) exist "
                             "for hopper, walker and cheetah; use mass / friction multipliers here")
        m0 = self._env.mj_model
        ratios = np.geomspace(*self.TABLE_RANGE, 129)
        body_iw, dof_iw = [], []
        for r in ratios:
            m = copy.copy(m0)
            m.body_mass[t] = m0.body_mass[t] * r
            m.body_inertia[t] = m0.body_inertia[t] * r
            mujoco.mj_setConst(m, mujoco.MjData(m))
            body_iw.append(m.body_invweight0.copy())
            dof_iw.append(m.dof_invweight0.copy())
        carries = np.zeros(m0.nbody, np.float32)  # the torso and its ancestors (the world included) carry its mass
        b = t
        while b:
            carries[b], b = 1.0, int(m0.body_parentid[b])
        carries[0] = 1.0
        f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
        self._table = TorsoTable(f32(np.log(ratios)), f32(body_iw), f32(dof_iw), float(m0.body_mass[t]),
                                 f32(np.arange(m0.nbody) == t), carries)
        return self._table

    def _absolute_model(self, torso_mass, friction):
        tab = self._absolute
        mass, inertia, subtree, _, _, base_friction = self._base
        log_r = jnp.asarray(tab.log_ratio)
        ratio = torso_mass / tab.torso_mass
        x = jnp.clip(jnp.log(ratio), log_r[0], log_r[-1])  # callers keep masses inside TABLE_RANGE
        i = jnp.clip(jnp.searchsorted(log_r, x) - 1, 0, log_r.shape[0] - 2)
        w = (x - log_r[i]) / (log_r[i + 1] - log_r[i])
        body_iw, dof_iw = (jnp.asarray(c)[i] * (1 - w) + jnp.asarray(c)[i + 1] * w
                           for c in (tab.body_invweight, tab.dof_invweight))
        scale = 1 + (ratio - 1) * tab.is_torso  # the torso's own mass and inertia only
        return self._env.mjx_model.replace(
            body_mass=mass * scale, body_inertia=inertia * scale[:, None],
            body_subtreemass=subtree + (torso_mass - tab.torso_mass) * tab.carries, body_invweight0=body_iw,
            dof_invweight0=dof_iw, geom_friction=base_friction.at[:, 0].set(friction))

    def _with_model(self, fn, state: DMCState, *args):
        """Run a Playground function with this instance's physics (the model is read at trace time)."""
        env, base = self._env, self._env._mjx_model
        env._mjx_model = self._model(state.mass_scale, state.friction_scale, state.body_scale, state.fields)
        try:
            return fn(*args)
        finally:
            env._mjx_model = base

    def initial_physics(self) -> tuple[float, float]:
        """The ``(mass_scale, friction_scale)`` a reset starts from: this env's multipliers, or — traced
        under :meth:`absolute_physics` — the nominal torso mass and friction times them."""
        if self._absolute is not None:
            nom = self.nominal_physics
            return nom["torso_mass"] * self.mass_scale, max(nom["friction"]) * self.friction_scale
        return self.mass_scale, self.friction_scale

    def reset(self, key):
        mass, friction, body, fields = self._draw_physics(key)
        state = DMCState(None, jnp.zeros((), jnp.int32), jnp.asarray(mass, jnp.float32),
                         jnp.asarray(friction, jnp.float32), body, fields)
        s = self._with_model(self._env.reset, state, key)
        return s.obs, state.replace(inner=s)

    def with_body_masses(self, state: DMCState, masses: dict) -> DMCState:
        """The same state with bodies' masses set in kg (``{"pole_1": 2.0, "cart": 0.5}``; inertia scaled
        with each, subtree masses recomputed), on top of the nominal model (traced values allowed)."""
        nominal = self._env.mj_model.body_mass
        scale = state.body_scale
        for name, kg in masses.items():
            if name not in self.body_names:
                raise ValueError(f"{self.name} has no body {name!r}; valid: {', '.join(self.body_names[1:])}")
            i = self.body_names.index(name)
            scale = scale.at[..., i].set(jnp.asarray(kg, jnp.float32) / float(nominal[i]))
        return state.replace(body_scale=scale)

    @staticmethod
    def with_physics(state: DMCState, mass_scale, friction_scale) -> DMCState:
        """The same state with other mass / friction multipliers (per instance under vmap)."""
        ms = jnp.broadcast_to(jnp.asarray(mass_scale, jnp.float32), state.mass_scale.shape)
        fs = jnp.broadcast_to(jnp.asarray(friction_scale, jnp.float32), state.friction_scale.shape)
        return state.replace(mass_scale=ms, friction_scale=fs)

    def _repeat(self, inner, action):
        """``action_repeat`` control steps with one action; rewards summed, frozen once the physics failed."""
        if self.action_repeat == 1:
            return self._env.step(inner, action)

        def body(c, _):
            s, total = c
            n = self._env.step(s, action)
            failed = s.done > 0.5
            n = jax.tree.map(lambda a, b: jnp.where(failed, a, b), s, n)
            return (n, total + jnp.where(failed, 0.0, jnp.nan_to_num(n.reward))), None

        (ns, total), _ = jax.lax.scan(body, (inner, jnp.zeros((), jnp.float32)), None, length=self.action_repeat)
        return ns.replace(reward=total)

    def step(self, key, state, action):
        ns = self._with_model(self._repeat, state, state.inner, action)
        time = state.time + 1
        # Playground ends an episode only when the physics became NaN: nothing non-finite leaves here
        reward, terminated, truncated = as_step_types(jnp.nan_to_num(ns.reward), ns.done > 0.5,
                                                      time >= self.max_episode_steps)
        done = jnp.logical_or(terminated, truncated)
        if self.randomized:  # the next episode's physics, drawn from the key
            now = (state.mass_scale, state.friction_scale, state.body_scale, state.fields)
            mass, friction, body, fields = jax.tree.map(lambda f, x: jnp.where(done, f, x), self._draw_physics(key), now)
            state = state.replace(mass_scale=mass, friction_scale=friction, body_scale=body, fields=fields)
        fresh = self._with_model(self._env.reset, state, key)  # auto-reset: a new initial state from the key
        inner = jax.tree.map(lambda f, x: jnp.where(done, f, x), fresh, ns)
        new = state.replace(inner=inner, time=jnp.where(done, 0, time))
        return inner.obs, new, reward, terminated, truncated, {"final_observation": jnp.nan_to_num(ns.obs)}
