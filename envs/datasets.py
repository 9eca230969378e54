"""Offline datasets: OGBench's ``.npz`` format, generated locally or read from a user's file.

A file holds ``observations [N, obs_dim]``, ``actions [N, act_dim]`` (floats) and ``terminals [N]``
(true on each episode's last stored step, which has no next state); ``rewards`` and ``masks`` are
optional — without them they are relabelled for the env's single task (point-maze, from the
observations: ``reward = success − 1``, ``mask = 1 − success``; OGBench manipulation, from ``qpos``
and ``button_states``: ``reward = −#unsatisfied subgoals``, ``mask = 1 − success``).  :func:`load` checks the file before
anything is compiled and turns it into :class:`Dataset` (device arrays, shared by every vmapped run).
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.errors import DatasetError, dataset_error  # noqa: F401  (DatasetError re-exported)

REQUIRED = ("observations", "actions", "terminals")


@struct.dataclass
class Dataset:
    observations: jax.Array  # [N, obs_dim]
    actions: jax.Array       # [N, act_dim], rescaled from the env's action box to (−1, 1)
    rewards: jax.Array       # [N], or [T, N]: one row per task (env task=all)
    masks: jax.Array         # [N] (or [T, N]) 0 where the state is terminal (no bootstrapping)
    starts: jax.Array        # [M] indices i whose chunk i .. i+H (next state included) lies in one episode

    @property
    def size(self) -> int:
        return int(self.starts.shape[0])


_fail = dataset_error


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        _fail(path, "no such file; generate one with `purejaxrl dataset <name> --out PATH` or give an OGBench .npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        _fail(path, f"cannot be read as .npz ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'truncated?'}); "
                    "the file is truncated or not an npz: regenerate or re-download it")


def check(raw: dict[str, np.ndarray], path, obs_shape: tuple[int, ...], act_dim: int) -> None:
    """Every problem that would otherwise surface inside the compiled program, as one line."""
    for k in REQUIRED:
        if k not in raw:
            _fail(path, f"missing key {k!r} (keys: {', '.join(sorted(raw)) or 'none'}); an OGBench dataset has "
                        f"{', '.join(REQUIRED)}")
    n = raw["observations"].shape[0] if raw["observations"].ndim else 0
    for k in ("observations", "actions"):
        if not np.issubdtype(raw[k].dtype, np.floating):
            _fail(path, f"{k} has dtype {raw[k].dtype}; it must be floating point (float32)")
    if raw["observations"].shape[1:] != tuple(obs_shape):
        _fail(path, f"observations have shape {raw['observations'].shape[1:]} per step but the env observes "
                    f"{tuple(obs_shape)}; use the env the dataset was collected in")
    if raw["actions"].ndim != 2 or raw["actions"].shape[1] != act_dim:
        _fail(path, f"actions have shape {raw['actions'].shape} but the env's action dimension is {act_dim}; "
                    "use the env the dataset was collected in")
    if not (np.issubdtype(raw["terminals"].dtype, np.bool_) or np.issubdtype(raw["terminals"].dtype, np.number)):
        _fail(path, f"terminals has dtype {raw['terminals'].dtype}; it must be bool or 0/1 numbers")
    for k in ("actions", "terminals", "rewards", "masks"):
        if k in raw and (raw[k].ndim == 0 or raw[k].shape[0] != n):
            _fail(path, f"{k} has {raw[k].shape[0] if raw[k].ndim else 0} rows but observations have {n}; "
                        "every key needs one row per step")
    for k in ("terminals", "rewards", "masks"):
        if k in raw and raw[k].shape != (n,):
            _fail(path, f"{k} has shape {raw[k].shape}; it must be [N] = ({n},) (flatten a [N, 1] array)")
        if k in raw and not (np.issubdtype(raw[k].dtype, np.number) or np.issubdtype(raw[k].dtype, np.bool_)):
            _fail(path, f"{k} has dtype {raw[k].dtype}; it must be numeric")
    for k in ("observations", "actions", "rewards", "masks"):
        if k in raw and not np.all(np.isfinite(raw[k])):
            bad = int(np.argmax(~np.isfinite(raw[k]).reshape(n, -1).all(1)))
            _fail(path, f"{k} has NaN or inf values (first at row {bad}); clean or regenerate the dataset")
    if n < 2 or not np.any(raw["terminals"][:-1] == 0):
        _fail(path, f"{n} steps and no transition within an episode; the dataset is empty")


def load(path: str | Path, env, chunk: int = 1) -> Dataset:
    """Check and load ``path`` for ``env`` (rewards relabelled for the env's task when the file has none);
    ``chunk``: the steps one sample spans (the action chunk or the n-step horizon, whichever is longer)."""
    raw = read_npz(path)
    space = env.action_space
    act_dim = int(np.prod(space.shape)) if hasattr(space, "shape") else 0
    if act_dim == 0:
        _fail(path, f"{env.name} has discrete actions; offline flow policies need a continuous (Box) action space")
    check(raw, path, env.observation_shape, act_dim)
    low, high = float(space.low), float(space.high)  # stored in the env's units, learned in [−1, 1]
    tol = 1e-3 * (high - low)
    if raw["actions"].min() < low - tol or raw["actions"].max() > high + tol:
        _fail(path, f"actions range over [{raw['actions'].min():.3g}, {raw['actions'].max():.3g}] but {env.name}'s "
                    f"action box is [{low:g}, {high:g}]; store actions in the env's units")
    obs = raw["observations"].astype(np.float32)
    terminals = raw["terminals"].astype(bool)
    maze = getattr(env.unwrapped, "maze", None)
    if maze is not None:  # positions inside walls: data of another maze (whose goals would be relabelled wrongly)
        from envs.pointmaze import OFFSET, UNIT

        i = np.floor((obs[:, 1] + OFFSET + UNIT / 2) / UNIT).astype(np.int64)
        j = np.floor((obs[:, 0] + OFFSET + UNIT / 2) / UNIT).astype(np.int64)
        h, w = maze.walls.shape
        bad = (i < 0) | (i >= h) | (j < 0) | (j >= w)
        bad[~bad] = maze.walls[i[~bad], j[~bad]] == 1
        if bad.any():
            _fail(path, f"{int(bad.sum())} positions lie inside walls or outside {env.name} (first at row "
                        f"{int(np.argmax(bad))}); the dataset was collected in another maze: use its env")
    tasks = getattr(env.unwrapped, "tasks", None) or ()
    if len(tasks) > 1:  # task=all: the rewards of every task, one row each (runs pick theirs)
        if "rewards" in raw:
            _fail(path, f"has rewards of one task, but env.kwargs.task=all relabels them for each of {env.name}'s "
                        "tasks; use a file without rewards/masks (as OGBench's and `purejaxrl dataset` files), or one task")
        rows = [_relabel(env.unwrapped.with_task(t), raw, obs, path) for t in tasks]
        rewards, masks = np.stack([r for r, _ in rows]), np.stack([m for _, m in rows])
    elif "rewards" in raw:
        rewards = raw["rewards"].astype(np.float32)
        masks = raw["masks"].astype(np.float32) if "masks" in raw else np.ones_like(rewards)
    else:
        rewards, masks = _relabel(env, raw, obs, path)
    # a chunk starting at i needs i .. i+H in one episode: no terminal among i .. i+H-1
    ends = np.concatenate([[0], np.cumsum(terminals.astype(np.int64))])
    idx = np.arange(len(obs) - chunk)
    starts = idx[ends[idx + chunk] - ends[idx] == 0]
    if len(starts) == 0:
        _fail(path, f"no episode is longer than {chunk} steps (the action chunk / n-step horizon); lower algo.chunk or algo.horizon")
    acts = np.clip(2.0 * (raw["actions"].astype(np.float32) - low) / (high - low) - 1.0, -1 + 1e-5, 1 - 1e-5)
    return Dataset(jnp.asarray(obs), jnp.asarray(acts), jnp.asarray(rewards), jnp.asarray(masks),
                   jnp.asarray(starts.astype(np.int32)))


def _relabel(env, raw, obs, path):
    """Single-task rewards and masks of ``env``'s task, by OGBench's rule for that env."""
    if hasattr(env, "relabel"):  # OGBench's manipulation tasks: from qpos / button_states, OGBench's rule
        return env.relabel(raw, path)
    if hasattr(env.unwrapped, "goal_xy"):
        from envs.pointmaze import relabel

        return relabel(env.unwrapped, obs)
    _fail(path, f"has no rewards and {env.name} has no task to relabel them from; add a 'rewards' key")


def sample_batch(data: Dataset, key, batch_size: int, horizon: int, gamma, act_steps: int | None = None,
                 task=None):
    """A minibatch of ``horizon``-step transitions: ``obs``, ``actions [B, act_steps·act_dim]`` (the
    first ``act_steps`` actions; default all ``horizon``: an action chunk, ``1``: an n-step return
    for one action), the discounted reward ``R_H`` (stopped at a terminal state), ``next_obs``
    (``horizon`` steps on), and the continuation ``γ^H·Π masks`` to bootstrap with.  ``task``: the
    row of a multi-task dataset's rewards and masks (0-based, may be traced)."""
    act_steps = horizon if act_steps is None else act_steps
    i = data.starts[jax.random.randint(key, (batch_size,), 0, data.starts.shape[0])]
    steps = i[:, None] + jnp.arange(horizon)[None]
    if data.rewards.ndim == 2:  # gather (row, step) pairs: never a copy of a whole row
        row = jnp.asarray(0 if task is None else task, jnp.int32)
        rewards, masks = data.rewards[row, steps], data.masks[row, steps]
    else:
        rewards, masks = data.rewards[steps], data.masks[steps]
    alive = jnp.cumprod(masks, axis=1)  # alive[k]: no terminal state among steps 0..k
    before = jnp.concatenate([jnp.ones((batch_size, 1)), alive[:, :-1]], 1)
    disc = gamma ** jnp.arange(horizon)
    ret = jnp.sum(before * disc[None] * rewards, axis=1)
    return {"obs": data.observations[i], "actions": data.actions[steps[:, :act_steps]].reshape(batch_size, -1),
            "rewards": ret, "next_obs": data.observations[i + horizon], "discount": (gamma ** horizon) * alive[:, -1]}


@dataclass(frozen=True)
class Spec:
    """A generated dataset's recipe (``purejaxrl dataset <name>``)."""

    env: str
    kind: str
    episodes: int
    episode_length: int


GENERATORS = {
    **{f"pointmaze_{m}_{kind}": Spec(f"pointmaze_{m}", kind, n, length)
       for m in ("medium", "large", "giant")
       for kind, n, length in (("navigate", 1000 if m != "giant" else 500, 1001 if m != "giant" else 2001),
                               ("stitch", 5000, 201))},
    # OGBench's manipulation datasets (1000 episodes of 1001 steps each), with the ogbench package's oracles
    **{f"ogbench_{t}_{kind}": Spec(f"ogbench_{t}", kind, 1000, 1001)
       for t in ("cube_single", "cube_double", "puzzle_3x3", "puzzle_4x4") for kind in ("play", "noisy")},
}
DEFAULT_NOISE = {"pointmaze": 0.5, "ogbench": 0.1}


def val_path(path: str | Path) -> Path:
    """The validation split written beside ``path``: ``name.npz`` -> ``name-val.npz`` (OGBench's naming)."""
    path = Path(path)
    return path.with_name((path.name[:-4] if path.name.endswith(".npz") else path.name) + "-val.npz")


def generate(name: str, episodes: int | None, out: str | Path, seed: int = 0, noise: float | None = None,
             episode_length: int | None = None, val_episodes: int | None = None) -> dict:
    """Write an OGBench-format dataset ``name`` (e.g. ``pointmaze_medium_navigate``,
    ``ogbench_cube_single_play``) to ``out`` and, as OGBench, a validation split of
    ``val_episodes`` more episodes (default ``episodes // 10``; 0: none) collected in the same run
    to ``out`` with ``-val.npz`` (:func:`val_path`); ``noise``: the oracle's action noise (default
    0.5 for the point maze, OGBench's 0.1 for manipulation)."""
    if name not in GENERATORS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(GENERATORS)}")
    spec = GENERATORS[name]
    n = spec.episodes if episodes is None else int(episodes)
    length = spec.episode_length if episode_length is None else int(episode_length)
    if n < 1:
        raise DatasetError(f"--episodes={n} must be >= 1")
    if length < 2:
        raise DatasetError(f"--episode-length={length} must be >= 2")
    n_val = n // 10 if val_episodes is None else int(val_episodes)
    if n_val < 0:
        raise DatasetError(f"--val-episodes={n_val} must be >= 0 (0: no validation split)")
    family = spec.env.split("_")[0]
    noise = DEFAULT_NOISE[family] if noise is None else float(noise)
    if noise < 0:
        raise DatasetError(f"--noise={noise} must be >= 0")
    t0 = time.perf_counter()
    if family == "ogbench":
        import envs.ogbench as ogbench

        try:
            d = ogbench.generate(spec.env[len("ogbench_"):], spec.kind, n + n_val, length, seed,
                                 ogbench.Collection(noise=noise), progress=_progress(n + n_val))
        except ImportError as e:
            raise DatasetError(str(e)) from e
    else:
        from envs.pointmaze import generate_navigate

        d = generate_navigate(spec.env[len("pointmaze_"):], jax.random.PRNGKey(seed), n + n_val, length, noise, spec.kind)
        d = jax.device_get(d)
    seconds = time.perf_counter() - t0
    # the first n episodes train, the last n_val validate (as OGBench's collection scripts split)
    cut = int(np.flatnonzero(d["terminals"])[n - 1]) + 1
    out = Path(out)
    _write(out, {k: v[:cut] for k, v in d.items()})
    info = {"name": name, "path": str(out), "episodes": n, "transitions": cut,
            "episode_length": length, "noise": noise, "seed": seed, "seconds": round(seconds, 2),
            "transitions_per_second": round(len(d["observations"]) / seconds, 1)}
    if n_val:
        _write(val_path(out), {k: v[cut:] for k, v in d.items()})
        info.update({"val_path": str(val_path(out)), "val_episodes": n_val, "val_transitions": len(d["observations"]) - cut})
    return info


def _write(out: Path, d: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **d)
    tmp.replace(out)


def _progress(total: int):
    """A progress bar over episodes (host-stepped generators)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="episode", dynamic_ncols=True, mininterval=1.0)

    def update(done: int, rate: float):
        bar.update(done - bar.n)
        bar.set_postfix({"transitions/s": f"{rate:,.0f}"}, refresh=False)
        if done >= total:
            bar.close()

    return update
