"""A JAX point-maze on OGBench's maze layouts, with its noisy BFS oracle and dataset generation.

Geometry follows OGBench's ``pointmaze``: cells of ``4.0`` units, cell ``(i, j)`` centred at
``(x, y) = (4j − 4, 4i − 4)``; the observation is the point's ``(x, y)``; an action in ``[−1, 1]²``
moves it by ``0.2·a`` (walls stop the motion along the blocked axis; the body is a square of
half-width ``0.7``, about OGBench's sphere of radius 0.7); success is being within ``1.0`` of the
goal.  Single-task episodes (OGBench's ``singletask`` tasks 1–5: fixed start and goal cells) give
reward ``success − 1`` with success checked before the step, and end at the goal, or after 1000
steps.  Everything is jittable and vmappable; the MuJoCo contact dynamics are not reproduced.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Box, Environment, as_step_types

MAZES = {
    "medium": ["11111111", "10011001", "10010001", "11000111", "10010001", "10100101", "10001001", "11111111"],
    "large": ["111111111111", "100001000001", "101101010101", "100000010001", "101111011101", "100101000001",
              "110101010111", "100100010001", "111111111111"],
    "giant": ["1111111111111111", "1010000001100001", "1010110100110101", "1000100100010001", "1011101111110101",
              "1000100010000101", "1110101001010111", "1000100100010001", "1010101111110101", "1011100010001101",
              "1000001000100001", "1111111111111111"],
}
# OGBench's evaluation tasks: (start cell, goal cell), tasks 1-5
TASKS = {
    "medium": [((1, 1), (6, 6)), ((6, 1), (1, 6)), ((5, 3), (4, 2)), ((6, 5), (6, 1)), ((2, 6), (1, 1))],
    "large": [((1, 1), (7, 10)), ((5, 4), (7, 1)), ((7, 4), (1, 10)), ((3, 8), (5, 4)), ((1, 1), (5, 4))],
    "giant": [((1, 1), (10, 14)), ((1, 14), (10, 1)), ((8, 14), (1, 1)), ((8, 3), (5, 12)), ((5, 9), (3, 8))],
}
UNIT, OFFSET, STEP, HALF_WIDTH, GOAL_TOL = 4.0, 4.0, 0.2, 0.7, 1.0


class Maze:
    """A layout and its shortest-path table (host-side, built once)."""

    def __init__(self, name: str):
        if name not in MAZES:
            raise ValueError(f"unknown maze {name!r}; valid: {', '.join(MAZES)}")
        self.name = name
        grid = np.array([[int(c) for c in row] for row in MAZES[name]], np.int32)
        self.walls = grid
        self.free = np.argwhere(grid == 0)  # [n, 2] cells (i, j)
        n = len(self.free)
        index = {tuple(c): k for k, c in enumerate(self.free)}
        # dist[g, c]: BFS steps from free cell c to goal cell g; next_cell[g, c]: the neighbour to go to
        dist = np.full((n, n), 10**6, np.int32)
        for g, cell in enumerate(self.free):
            dist[g, g] = 0
            q = deque([tuple(cell)])
            while q:
                i, j = q.popleft()
                for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    nb = (i + di, j + dj)
                    if nb in index and dist[g, index[nb]] > dist[g, index[(i, j)]] + 1:
                        dist[g, index[nb]] = dist[g, index[(i, j)]] + 1
                        q.append(nb)
        nxt = np.zeros((n, n), np.int32)
        for g in range(n):
            for c, (i, j) in enumerate(self.free):
                best, best_d = c, dist[g, c]
                for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    nb = index.get((i + di, j + dj))
                    if nb is not None and dist[g, nb] < best_d:
                        best, best_d = nb, dist[g, nb]
                nxt[g, c] = best
        self.dist, self.next_cell = dist, nxt
        self.index = index
        # "vertex" cells (navigate goals): free cells that are not straight corridors
        deg = {c: [(c[0] + d[0], c[1] + d[1]) in index for d in ((1, 0), (-1, 0), (0, 1), (0, -1))] for c in index}
        self.vertices = np.array([index[c] for c, (dn, up, rt, lf) in deg.items()
                                  if not ((dn and up and not rt and not lf) or (rt and lf and not dn and not up))], np.int32)
        self.centers = np.stack([self.free[:, 1] * UNIT - OFFSET, self.free[:, 0] * UNIT - OFFSET], 1).astype(np.float32)
        self.id_grid = np.full(grid.shape, -1, np.int32)
        for k, (i, j) in enumerate(self.free):
            self.id_grid[i, j] = k

    def cell_xy(self, ij) -> np.ndarray:
        return np.array([ij[1] * UNIT - OFFSET, ij[0] * UNIT - OFFSET], np.float32)


def _cell_of(pos, shape):
    i = jnp.clip(jnp.floor((pos[..., 1] + OFFSET + UNIT / 2) / UNIT).astype(jnp.int32), 0, shape[0] - 1)
    j = jnp.clip(jnp.floor((pos[..., 0] + OFFSET + UNIT / 2) / UNIT).astype(jnp.int32), 0, shape[1] - 1)
    return i, j


def _blocked(walls, pos):
    """Whether a body centred at ``pos`` overlaps a wall cell (its four corners' cells)."""
    corners = pos[None] + HALF_WIDTH * jnp.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], jnp.float32) * 0.999
    i, j = _cell_of(corners, walls.shape)
    return jnp.any(walls[i, j] == 1)


def move(walls, pos, action):
    """``pos + 0.2·clip(a)``, each axis refused when it would enter a wall (sliding along walls)."""
    d = STEP * jnp.clip(action, -1.0, 1.0)
    px = pos.at[0].add(d[0])
    pos = jnp.where(_blocked(walls, px), pos, px)
    py = pos.at[1].add(d[1])
    return jnp.where(_blocked(walls, py), pos, py)


def oracle_action(maze_arrays, pos, goal_cell):
    """OGBench's navigation oracle: the unit vector toward the centre of the BFS-next cell."""
    walls, id_grid, next_cell, centers = maze_arrays
    i, j = _cell_of(pos, walls.shape)
    here = id_grid[i, j]
    target = centers[next_cell[goal_cell, jnp.maximum(here, 0)]]
    d = target - pos
    return d / (jnp.linalg.norm(d) + 1e-6)


@struct.dataclass
class PointMazeState:
    pos: jax.Array
    goal: jax.Array
    time: jax.Array


class PointMaze(Environment):
    """Single-task point-maze: ``pointmaze_<maze>`` with ``task`` 1-5 (OGBench's start/goal cells),
    or ``task="all"``: the five tasks, one per run (offline algorithms vmap runs over them; the
    env object stands for task 1 and :meth:`with_task` gives any one, its index may be traced)."""

    def __init__(self, maze: str = "medium", task: int | str = 1, max_episode_steps: int = 1000):
        self.maze = Maze(maze)
        if task == "all":
            self.tasks = (1, 2, 3, 4, 5)
            task = 1
        elif isinstance(task, bool) or not isinstance(task, int) or not 1 <= task <= 5:
            raise ValueError(f"task={task!r}; valid: 1-5 (OGBench's evaluation tasks) or all")
        else:
            self.tasks = (int(task),)
        self._starts = np.stack([self.maze.cell_xy(s) for s, _ in TASKS[maze]])
        self._goals = np.stack([self.maze.cell_xy(g) for _, g in TASKS[maze]])
        self.task = int(task)
        self.start_xy, self.goal_xy = self._starts[self.task - 1], self._goals[self.task - 1]
        self.walls = jnp.asarray(self.maze.walls)
        self.name = f"pointmaze_{maze}"
        self.max_episode_steps = int(max_episode_steps)
        self._obs_shape = (2,)
        self._action_space = Box(-1.0, 1.0, (2,))

    def with_task(self, task):
        """This maze on task ``task`` (1-5; a Python int, or a traced integer inside a program)."""
        env = copy.copy(self)
        if isinstance(task, int):
            env.task, env.tasks = task, (task,)
            env.start_xy, env.goal_xy = self._starts[task - 1], self._goals[task - 1]
        else:
            env.start_xy, env.goal_xy = jnp.asarray(self._starts)[task - 1], jnp.asarray(self._goals)[task - 1]
        return env

    def success(self, pos):
        return jnp.linalg.norm(pos - jnp.asarray(self.goal_xy), axis=-1) <= GOAL_TOL

    def reset(self, key):
        pos = jnp.asarray(self.start_xy) + jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)
        st = PointMazeState(pos=pos, goal=jnp.asarray(self.goal_xy), time=jnp.zeros((), jnp.int32))
        return pos, st

    def step(self, key, state, action):
        success = self.success(state.pos)  # checked before the step, as OGBench's single-task reward
        pos = move(self.walls, state.pos, action)
        time = state.time + 1
        reward, terminated, truncated = as_step_types(success.astype(jnp.float32) - 1.0, success,
                                                      time >= self.max_episode_steps)
        done = jnp.logical_or(terminated, truncated)
        obs0, st0 = self.reset(key)
        new = PointMazeState(pos=jnp.where(done, st0.pos, pos), goal=state.goal, time=jnp.where(done, 0, time))
        return jnp.where(done, obs0, pos), new, reward, terminated, truncated, {
            "final_observation": pos, "success": success.astype(jnp.float32)}


def generate_navigate(maze: str, key, num_episodes: int, episode_length: int = 1001, noise: float = 0.5,
                      kind: str = "navigate", goal_noise: bool = True, with_goals: bool = False) -> dict[str, np.ndarray]:
    """An OGBench-format dataset (``observations``, ``actions``, ``terminals``, ``qpos``, ``qvel``),
    collected as OGBench's ``generate_locomaze`` does: ``navigate`` — start in a random free cell,
    follow the noisy oracle to a random vertex cell, draw a new goal on arrival; ``stitch`` — a goal
    4 BFS steps away, never redrawn (OGBench uses 201-step episodes there).  With ``goal_noise``
    (OGBench's data-collection env, ``add_noise_to_goal``) every goal is its cell's centre jittered
    by ``U(−1, 1)`` per axis (a quarter cell); the oracle still steers to cell centres (in the goal
    cell, to its centre) and arrival is within ``1.0`` of the jittered goal.  ``terminals`` marks
    each episode's last stored step; ``with_goals`` adds ``goals`` (the goal each step steers to,
    and its cell's centre as ``goal_centers``: not OGBench keys, for inspection)."""
    m = Maze(maze)
    arrays = (jnp.asarray(m.walls), jnp.asarray(m.id_grid), jnp.asarray(m.next_cell), jnp.asarray(m.centers))
    centers, vertices, dist = jnp.asarray(m.centers), jnp.asarray(m.vertices), jnp.asarray(m.dist)
    n_free = len(m.free)
    jitter = UNIT / 4 if goal_noise else 0.0

    def draw_goal(k, cell):
        """A goal cell and its (jittered) position."""
        kc, kj = jax.random.split(k)
        if kind == "stitch":  # a cell exactly 4 BFS steps away (the start itself if none)
            ok = dist[:, cell] == 4
            logits = jnp.where(ok, 0.0, -jnp.inf)
            g = jnp.where(ok.any(), jax.random.categorical(kc, jnp.where(ok.any(), logits, 0.0)), cell)
        else:
            g = vertices[jax.random.randint(kc, (), 0, len(m.vertices))]
        return g, centers[g] + jitter * jax.random.uniform(kj, (2,), minval=-1.0, maxval=1.0)

    def episode(k):
        k0, k1, k2, k3 = jax.random.split(k, 4)
        cell = jax.random.randint(k0, (), 0, n_free)
        pos = centers[cell] + jax.random.uniform(k1, (2,), minval=-1.0, maxval=1.0)
        goal, goal_xy = draw_goal(k2, cell)

        def step(c, k):
            pos, goal, goal_xy = c
            ka, kg = jax.random.split(k)
            a = oracle_action(arrays, pos, goal) + noise * jax.random.normal(ka, (2,))
            a = jnp.clip(a, -1.0, 1.0)
            new = move(arrays[0], pos, a)
            reached = jnp.linalg.norm(new - goal_xy) <= GOAL_TOL
            if kind == "navigate":
                g2, xy2 = draw_goal(kg, goal)
                goal, goal_xy = jnp.where(reached, g2, goal), jnp.where(reached, xy2, goal_xy)
            return (new, goal, goal_xy), (pos, a, c[2], centers[c[1]])

        _, out = jax.lax.scan(step, (pos, goal, goal_xy), jax.random.split(k3, episode_length))
        return out

    obs, acts, goals, goal_centers = jax.jit(jax.vmap(episode))(jax.random.split(key, num_episodes))
    obs = np.asarray(obs, np.float32).reshape(-1, 2)
    acts = np.asarray(acts, np.float32).reshape(-1, 2)
    terminals = np.zeros((num_episodes, episode_length), bool)
    terminals[:, -1] = True
    out = {"observations": obs, "actions": acts, "terminals": terminals.reshape(-1), "qpos": obs.copy(),
           "qvel": np.zeros_like(obs)}
    if with_goals:
        out["goals"] = np.asarray(goals, np.float32).reshape(-1, 2)
        out["goal_centers"] = np.asarray(goal_centers, np.float32).reshape(-1, 2)
    return out


def relabel(env: PointMaze, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-task rewards and masks from positions, as OGBench: ``reward = success − 1``,
    ``mask = 1 − success`` (success of the state the transition starts from)."""
    success = np.linalg.norm(observations[:, :2] - np.asarray(env.goal_xy)[None], axis=1) <= GOAL_TOL
    return success.astype(np.float32) - 1.0, 1.0 - success.astype(np.float32)


def info() -> dict[str, Any]:
    return {"mazes": list(MAZES), "tasks": TASKS}
