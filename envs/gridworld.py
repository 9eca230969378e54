"""Grid worlds of the Learned Policy Gradient paper (Oh et al. 2020), jittable and vmappable over levels.

A level is a square grid (side ``size`` ≤ ``max_size``) with walls, a start cell and objects; each
object has a type, and each type a reward, a probability of ending the episode when collected and a
probability per step of reappearing once collected.  The agent moves up / down / left / right or
stays (5 actions); walking onto an object that is present collects it: its type's reward is paid,
the episode terminates with its type's probability, and the object is gone until it respawns (at
its own cell).  Other steps pay 0.  An episode is truncated after ``max_steps``.

The observation is tabular: a one-hot of (agent cell, which objects are present), of size
``max_size² · 2^max_objects`` — the state of the level, nothing more.

Levels live in the environment state, so one compiled program steps a batch of agents each on its
own level (``reset_to``), and an episode's automatic reset stays on the level.  ``GridWorld(level)``
takes a named level (``dense``, ``sparse``, ``long``, ``longer``, ``long_dense``: the LPG paper's
tabular levels, their layouts drawn once from a fixed seed per name) or a random family (``small``,
``medium``, ``large``, ``all``), whose :meth:`GridWorld.reset` draws a fresh level each time.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Discrete, Environment, as_step_types

UP, DOWN, LEFT, RIGHT, STAY = range(5)
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], np.int32)  # (row, col) per action


@struct.dataclass
class Level:
    """One level, padded to the family's maxima (arrays; vmappable)."""

    size: jax.Array          # side of the grid in use (cells 0 .. size²-1, row-major with stride size)
    walls: jax.Array         # [max_size²] bool, indexed row * size + col
    start: jax.Array         # start cell
    obj_type: jax.Array      # [max_objects] type of each object, -1 for an unused slot
    obj_cell: jax.Array      # [max_objects] cell of each object
    reward: jax.Array        # [max_types] reward of collecting an object of each type
    p_terminate: jax.Array   # [max_types] probability that collecting it ends the episode
    p_respawn: jax.Array     # [max_types] per-step probability that a collected object reappears
    max_steps: jax.Array     # episode length limit


@struct.dataclass
class GridState:
    level: Level
    cell: jax.Array
    present: jax.Array       # [max_objects] bool
    time: jax.Array


@dataclass(frozen=True)
class Family:
    """The shapes a family of levels is padded to, and how a random member is drawn."""

    max_size: int
    max_objects: int
    max_types: int
    sizes: tuple[int, int] = (0, 0)          # random families: side drawn uniformly in [lo, hi]
    objects: tuple[int, int] = (0, 0)        # number of objects, uniformly in [lo, hi], each its own type
    walls: int = 0                           # wall cells drawn (some may fall outside a smaller grid)
    max_steps: tuple[int, int] = (0, 0)      # episode length, log-uniform integer in [lo, hi]


# The LPG paper's tabular levels: (size, object types, {type: (reward, p_terminate, p_respawn)},
# wall cells as (row, col), max_steps)
NAMED = {
    "dense": (11, [0, 0, 1, 2], {0: (1.0, 0.0, 0.05), 1: (-1.0, 0.5, 0.1), 2: (-1.0, 0.0, 0.5)}, [], 500),
    "sparse": (13, [0, 1], {0: (1.0, 1.0, 0.0), 1: (-1.0, 1.0, 0.0)}, [], 50),
    "long": (11, [0, 0, 1, 1], {0: (1.0, 0.0, 0.01), 1: (-1.0, 0.5, 1.0)}, [], 1000),
    "longer": (9, [0, 0, 1, 1, 1, 1, 1], {0: (1.0, 0.1, 0.01), 1: (-1.0, 0.8, 1.0)},
               [(r, 4) for r in range(9) if r not in (1, 7)], 2000),
    "long_dense": (11, [0, 0, 0, 0], {0: (1.0, 0.0, 0.005)},
                   [(r, 5) for r in range(11) if r not in (0, 7)] + [(4, c) for c in range(11) if c not in (2, 5, 8)],
                   2000),
}
FAMILIES = {
    "small": Family(6, 3, 3, sizes=(4, 6), objects=(1, 3), walls=7, max_steps=(20, 100)),
    "medium": Family(8, 4, 4, sizes=(6, 8), objects=(2, 4), walls=10, max_steps=(100, 250)),
    "large": Family(10, 5, 5, sizes=(8, 10), objects=(2, 5), walls=15, max_steps=(250, 750)),
    "all": Family(10, 5, 5, sizes=(4, 10), objects=(1, 5), walls=15, max_steps=(20, 750)),
}
LAYOUT_SEED = 2020


def named_level(name: str, seed: int = LAYOUT_SEED) -> tuple[Level, Family]:
    """A named level: its objects and start on distinct free cells drawn once from ``seed``."""
    if name not in NAMED:
        raise ValueError(f"unknown grid-world level {name!r}; valid: {', '.join([*NAMED, *FAMILIES])}")
    size, types, props, wall_cells, max_steps = NAMED[name]
    fam = Family(size, len(types), len(props))
    walls = np.zeros(size * size, bool)
    for r, c in wall_cells:
        walls[r * size + c] = True
    free = np.flatnonzero(~walls)
    cells = np.random.default_rng(seed + sum(map(ord, name))).choice(free, len(types) + 1, replace=False)
    level = Level(size=jnp.int32(size), walls=jnp.asarray(walls), start=jnp.int32(cells[0]),
                  obj_type=jnp.asarray(types, jnp.int32), obj_cell=jnp.asarray(cells[1:], jnp.int32),
                  reward=jnp.asarray([props[t][0] for t in range(len(props))], jnp.float32),
                  p_terminate=jnp.asarray([props[t][1] for t in range(len(props))], jnp.float32),
                  p_respawn=jnp.asarray([props[t][2] for t in range(len(props))], jnp.float32),
                  max_steps=jnp.int32(max_steps))
    return level, fam


def _log_uniform(key, lo, hi, shape=()):
    return jnp.exp(jax.random.uniform(key, shape, minval=jnp.log(lo), maxval=jnp.log(hi)))


def sample_level(key: jax.Array, fam: Family) -> Level:
    """A random level of ``fam`` (jittable): side, walls, objects (each its own type: the first with a
    reward in (0, 1), the others in (−1, 1)), their termination (log-uniform in [0.01, 1]) and respawn
    (log-uniform in [0.001, 0.1]) probabilities, episode length log-uniform; start and objects on
    distinct free cells of the grid in use."""
    ks = jax.random.split(key, 9)
    M, N = fam.max_size, fam.max_objects
    size = jax.random.randint(ks[0], (), fam.sizes[0], fam.sizes[1] + 1)
    n_obj = jax.random.randint(ks[1], (), fam.objects[0], fam.objects[1] + 1)
    cell = jnp.arange(M * M)
    inside = cell < size * size
    wall_idx = jax.random.choice(ks[2], M * M, (fam.walls,), replace=False)
    walls = jnp.zeros(M * M, bool).at[wall_idx].set(True) & inside
    # start and objects: distinct free cells inside the grid (Gumbel top-k over the allowed cells)
    allowed = inside & ~walls
    picks = jax.lax.top_k(jnp.where(allowed, jax.random.gumbel(ks[3], (M * M,)), -jnp.inf), N + 1)[1]
    reward = jnp.concatenate([jax.random.uniform(ks[4], (1,)), jax.random.uniform(ks[5], (fam.max_types - 1,),
                                                                                    minval=-1.0, maxval=1.0)])
    steps = jnp.round(_log_uniform(ks[6], fam.max_steps[0], fam.max_steps[1])).astype(jnp.int32)
    return Level(size=size.astype(jnp.int32), walls=walls, start=picks[0].astype(jnp.int32),
                 obj_type=jnp.where(jnp.arange(N) < n_obj, jnp.arange(N), -1).astype(jnp.int32),
                 obj_cell=picks[1:].astype(jnp.int32), reward=reward.astype(jnp.float32),
                 p_terminate=_log_uniform(ks[7], 0.01, 1.0, (fam.max_types,)).astype(jnp.float32),
                 p_respawn=_log_uniform(ks[8], 0.001, 0.1, (fam.max_types,)).astype(jnp.float32),
                 max_steps=steps)


def next_cell(level: Level, cell, action):
    """The cell an action leads to: off the grid or into a wall, the agent stays."""
    size = level.size
    r, c = cell // size, cell % size
    d = jnp.asarray(MOVES)[action]
    r2, c2 = r + d[0], c + d[1]
    target = r2 * size + c2
    ok = (r2 >= 0) & (r2 < size) & (c2 >= 0) & (c2 < size)
    ok = ok & ~level.walls[jnp.where(ok, target, 0)]
    return jnp.where(ok, target, cell)


class GridWorld(Environment):
    """``gridworld_<level>``: a named LPG level or a random family (module docstring)."""

    def __init__(self, level: str = "dense", seed: int = LAYOUT_SEED):
        if level in FAMILIES:
            self.family, self.fixed = FAMILIES[level], None
        else:
            self.fixed, self.family = named_level(level, seed)
        self.level_name = level
        self.name = f"gridworld_{level}"
        fam = self.family
        self.max_episode_steps = int(self.fixed.max_steps) if self.fixed is not None else fam.max_steps[1]
        self._action_space = Discrete(5)
        self._obs_shape = (fam.max_size ** 2 * 2 ** fam.max_objects,)

    def sample_level(self, key) -> Level:
        """This env's level: the named one, or a fresh draw of the family."""
        return self.fixed if self.fixed is not None else sample_level(key, self.family)

    def observation(self, state: GridState) -> jax.Array:
        n = self.family.max_size ** 2
        bits = jnp.sum(state.present.astype(jnp.int32) << jnp.arange(state.present.shape[0]))
        return jax.nn.one_hot(state.cell + n * bits, self._obs_shape[0], dtype=jnp.float32)

    def reset_to(self, level: Level) -> tuple[jax.Array, GridState]:
        """Start an episode on ``level``."""
        state = GridState(level=level, cell=level.start, present=level.obj_type >= 0, time=jnp.int32(0))
        return self.observation(state), state

    def reset(self, key):
        return self.reset_to(self.sample_level(key))

    def step(self, key, state: GridState, action):
        lv = state.level
        k_resp, k_term = jax.random.split(key)
        cell = next_cell(lv, state.cell, action)
        collected = state.present & (lv.obj_cell == cell)
        t = jnp.maximum(lv.obj_type, 0)
        reward = jnp.sum(jnp.where(collected, lv.reward[t], 0.0))
        p_end = 1.0 - jnp.prod(jnp.where(collected, 1.0 - lv.p_terminate[t], 1.0))
        terminated = jax.random.uniform(k_term) < p_end
        respawn = jax.random.uniform(k_resp, state.present.shape) < lv.p_respawn[t]
        # a collected object is gone this step; an absent one may reappear (not on the agent's cell)
        present = ((state.present & ~collected) | (~state.present & respawn & (lv.obj_cell != cell))) & (lv.obj_type >= 0)
        time = state.time + 1
        truncated = time >= lv.max_steps
        nxt = GridState(level=lv, cell=cell, present=present, time=time)
        final_obs = self.observation(nxt)
        reset_obs, reset_state = self.reset_to(lv)  # an episode ends on the same level
        done = terminated | truncated
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), reset_state, nxt)
        obs = jnp.where(done, reset_obs, final_obs)
        reward, terminated, truncated = as_step_types(reward, terminated, truncated)
        return obs, state, reward, terminated, truncated, {"final_observation": final_obs}


def onto_level(state, level: Level, observe):
    """A vectorised stack's state (wrappers with ``env_state`` fields around a batch of
    :class:`GridState`) with every env restarted on the one ``level``: ``(obs, state)``.  An agent
    trained on a random family keeps one level for its lifetime on all its envs."""
    if isinstance(state, GridState):
        n = state.cell.shape[0]
        lv = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), level)
        st = GridState(level=lv, cell=lv.start, present=lv.obj_type >= 0, time=jnp.zeros((n,), jnp.int32))
        return jax.vmap(observe)(st), st
    obs, inner = onto_level(state.env_state, level, observe)
    return obs, state.replace(env_state=inner)


def level_of(state) -> Level:
    """The level of the first env of a vectorised stack's state."""
    while not isinstance(state, GridState):
        state = state.env_state
    return jax.tree.map(lambda x: x[0], state.level)
