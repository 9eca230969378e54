"""OGBench's MuJoCo manipulation tasks (``pip install -e ".[ogbench]"``): single-task evaluation
envs stepped on the host, and play/noisy datasets generated with the package's own scripted oracles.

``env=ogbench_cube_single`` (``env.kwargs.task`` 1–5) is the single-task env
``cube-single-singletask-task1-v0``.  It is not a JAX env: offline algorithms train from its
dataset inside the compiled loop and evaluate it in a host loop (:class:`HostEvaluator`), with one
jitted policy call per env step for every run, guidance weight and episode at once.

Datasets follow OGBench's own collection procedure: ``play`` follows the oracle's pre-computed,
smoothly noised plans; ``noisy`` the closed-loop (Markov) oracle with Gaussian action noise of a
per-episode scale; on completing a task the oracle is given a new one in the same episode.  Files
keep OGBench's keys (``observations, actions, terminals, qpos, qvel`` and, for buttons,
``button_states``); rewards are relabelled for the single task from ``qpos``/``button_states`` by
OGBench's own rule (−number of unsatisfied subgoals; terminal on success).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from envs.core import Box, Environment

# our name -> (OGBench env prefix, oracle family, episode length of the single-task env)
TASKS = {
    "cube_single": ("cube-single", "cube"),
    "cube_double": ("cube-double", "cube"),
    "puzzle_3x3": ("puzzle-3x3", "puzzle"),
    "puzzle_4x4": ("puzzle-4x4", "puzzle"),
}  # scene is left out: OGBench regenerates its unhealthy episodes (a check we do not reproduce)
_SHAPES: dict[str, tuple] = {}
_POOLS: dict[str, list] = {}


def _import():
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)  # dm_control logs its MuJoCo version at import
    try:
        import gymnasium
        import ogbench.manipspace  # noqa: F401  (registers the envs)
    except ImportError as e:
        from envs.errors import install_hint

        raise ImportError(f"OGBench envs need the ogbench package ({e}): {install_hint('ogbench')}") from e
    return gymnasium


def _quiet():
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="glfw")  # no display: MuJoCo's viewer is never used here
    warnings.filterwarnings("ignore", category=UserWarning, module=r"gymnasium(\..*)?")
    logging.getLogger("gymnasium").setLevel(logging.ERROR)


class OGBenchEnv(Environment):
    """A host-stepped OGBench single-task env: shapes and limits for the compiled learner, and
    :meth:`make_gym` for evaluation.  ``reset``/``step`` are not traceable and refuse."""

    host = True

    def __init__(self, task_name: str, task: int | str = 1):
        if task_name not in TASKS:
            raise ValueError(f"unknown OGBench task {task_name!r}; valid: {', '.join('ogbench_' + t for t in TASKS)}")
        self.tasks = (1, 2, 3, 4, 5) if task == "all" else (task,)  # "all": one run per task, this object task 1's
        task = 1 if task == "all" else task
        if isinstance(task, bool) or not isinstance(task, int) or not 1 <= task <= 5:
            raise ValueError(f"task={task!r} must be an integer in 1..5 (OGBench's five evaluation goals) or all")
        self.task_name, self.task = task_name, task
        self.name = f"ogbench_{task_name}"
        self.gym_id = f"{TASKS[task_name][0]}-singletask-task{task}-v0"
        if self.gym_id not in _SHAPES:  # building a MuJoCo env takes ~0.5 s: once per process
            env = self.make_gym()
            sp = env.action_space
            _SHAPES[self.gym_id] = (tuple(env.observation_space.shape), float(np.min(sp.low)), float(np.max(sp.high)),
                                    tuple(sp.shape), int(env.spec.max_episode_steps))
            env.close()
        obs_shape, low, high, act_shape, steps = _SHAPES[self.gym_id]
        self._obs_shape = obs_shape
        self._action_space = Box(low, high, act_shape)
        self.max_episode_steps = steps

    def with_task(self, task: int) -> OGBenchEnv:
        """The same scene on evaluation task ``task`` (1-5)."""
        return OGBenchEnv(self.task_name, int(task))

    def make_gym(self):
        gymnasium = _import()
        _quiet()
        return gymnasium.make(self.gym_id)

    def reset(self, key):
        raise TypeError(f"{self.name} is a MuJoCo env stepped on the host; only offline algorithms (algo=qgf, fql) use it")

    step = reset

    def relabel(self, raw: dict[str, np.ndarray], path) -> tuple[np.ndarray, np.ndarray]:
        """Single-task rewards and masks from the dataset's ``qpos`` (and ``button_states``), as OGBench."""
        from ogbench.relabel_utils import relabel_dataset

        from envs.errors import dataset_error as _fail

        need = ["qpos"] + (["button_states"] if TASKS[self.task_name][1] == "puzzle" else [])
        for k in need:
            if k not in raw:
                _fail(path, f"missing key {k!r}, which {self.name} relabels rewards from; generate the file with "
                            f"`purejaxrl dataset {self.name}_play --out FILE.npz` or use OGBench's file (it has "
                            f"{', '.join(need)})")
            if raw[k].shape[0] != raw["observations"].shape[0]:
                _fail(path, f"{k} has {raw[k].shape[0]} rows but observations have {raw['observations'].shape[0]}")
        env = self.make_gym()
        d = {k: raw[k] for k in need}
        relabel_dataset(self.gym_id, env, d)
        env.close()
        return d["rewards"].astype(np.float32), d["masks"].astype(np.float32)


# ---- dataset generation (OGBench's procedure, with the package's oracles) ----

@dataclass(frozen=True)
class Collection:
    noise: float = 0.1            # play: plan noise; noisy: the per-episode noise scale's upper bound
    noise_smoothing: float = 0.5  # play: smoothing of the plan noise
    min_norm: float = 0.4         # noisy: minimum action norm of the Markov oracle
    p_random: float | None = None  # probability of a uniform random action instead of the oracle's
    #                                (None: OGBench's, 0.1 for noisy cube, 0.2 for noisy puzzle, 0 for play)


def _oracles(task_name: str, env, kind: str, c: Collection) -> dict:
    family = TASKS[task_name][1]
    if kind == "play":
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

        kw = dict(env=env, noise=c.noise, noise_smoothing=c.noise_smoothing)
        if family == "cube":
            return {"cube": CubePlanOracle(**kw)}
        return {"button": ButtonPlanOracle(**kw, gripper_always_closed=True)}
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

    kw = dict(env=env, min_norm=c.min_norm)
    if family == "cube":
        return {"cube": CubeMarkovOracle(**kw)}
    return {"button": ButtonMarkovOracle(**kw, gripper_always_closed=True)}


def _stack_probability(task_name: str, rng) -> float:
    return {"cube_single": 0.0, "cube_double": rng.uniform(0.0, 0.25)}.get(task_name, 0.5)  # OGBench's


def generate(task_name: str, kind: str, episodes: int, episode_length: int, seed: int = 0,
             collection: Collection = Collection(), progress=None) -> dict[str, np.ndarray]:
    """``episodes`` episodes of ``episode_length`` steps of OGBench's oracle in its data-collection
    mode; returns the OGBench keys (float32 observations/actions, bool terminals)."""
    if kind not in ("play", "noisy"):
        raise ValueError(f"kind={kind!r}; valid: play, noisy")
    gymnasium = _import()
    _quiet()
    env = gymnasium.make(f"{TASKS[task_name][0]}-v0", terminate_at_goal=False, mode="data_collection",
                         max_episode_steps=episode_length)
    rng = np.random.default_rng(seed)
    np.random.seed(seed)  # the oracles draw their noise from numpy's global generator
    agents = _oracles(task_name, env, kind, collection)
    p_random = collection.p_random
    if p_random is None:
        p_random = 0.0 if kind == "play" else {"cube": 0.1, "puzzle": 0.2}[TASKS[task_name][1]]
    buttons = hasattr(env.unwrapped, "_cur_button_states")
    out = {k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")}
    if buttons:
        out["button_states"] = []
    t0 = time.perf_counter()
    for ep in range(episodes):
        ob, info = env.reset(seed=int(rng.integers(2**31)))
        p_stack = _stack_probability(task_name, rng)
        xi = rng.uniform(0, collection.noise)
        agent = agents[info["privileged/target_task"]]
        agent.reset(ob, info)
        done = False
        while not done:
            if p_random > 0 and rng.random() < p_random:  # the oracle is not consulted (it counts its calls)
                a = rng.uniform(-1.0, 1.0, env.action_space.shape)
            else:
                a = np.asarray(agent.select_action(ob, info), np.float64)
                if kind == "noisy":
                    a = a + rng.normal(0.0, [xi, xi, xi, 3 * xi, 10 * xi], a.shape)
            a = np.clip(a, -1.0, 1.0)
            next_ob, _, terminated, truncated, info = env.step(a)
            done = terminated or truncated
            if agent.done:  # a new task within the same episode
                aob, ainfo = env.unwrapped.set_new_target(p_stack=p_stack)
                agent = agents[ainfo["privileged/target_task"]]
                agent.reset(aob, ainfo)
            out["observations"].append(ob)
            out["actions"].append(a)
            out["terminals"].append(done)
            out["qpos"].append(info["prev_qpos"])
            out["qvel"].append(info["prev_qvel"])
            if buttons:
                out["button_states"].append(info["prev_button_states"])
            ob = next_ob
        if progress is not None:
            progress(ep + 1, len(out["observations"]) / (time.perf_counter() - t0))
    env.close()
    types = {"terminals": bool, "button_states": np.int64}
    return {k: np.asarray(v, dtype=types.get(k, np.float32)) for k, v in out.items()}


# ---- evaluation in the host loop ----

class HostEvaluator:
    """Runs ``R × W × E`` single-task episodes (runs × guidance weights × episodes) with at most
    ``max_envs`` MuJoCo envs alive (~150 MB each): the envs of a group of (run, weight) pairs and a
    slice of episodes step in lockstep, one jitted call of
    ``act(obs [R, W, E_wave, obs_dim], keys [R, E_wave, 2]) -> [R, W, E_wave, H·A]`` per decision
    (action chunks executed open-loop; pairs outside the group get zero observations and their
    actions are ignored), slices and groups one after another.  Episode ``e`` of run ``r`` starts
    from ``reset_seeds[r, e]`` and its policy noise at decision ``t`` is
    ``fold_in(fold_in(policy_keys[r], e), t)``, the same for every weight and whatever the slicing
    (so however many runs and weights share the evaluation): runs (seeds) are independent, weights
    and other arms on the same seed are compared on the same draws.  Run ``r`` plays task
    ``tasks[r]`` (``env.kwargs.task=all``).  Returns each episode's return and success."""

    def __init__(self, env: OGBenchEnv, max_envs: int = 32):
        self.env = env
        self.max_envs = max(int(max_envs), 1)
        self.steps = 0  # env steps taken, all evaluations together

    def wave(self, runs: int, weights: int, episodes: int) -> int:
        """Episodes per slice."""
        return max(1, min(episodes, self.max_envs // max(runs * weights, 1)))

    def task_of(self, runs: int, tasks=None) -> list[int]:
        """Each run's task: ``tasks`` ``[R]`` or, by default, the env's own."""
        return [self.env.task] * runs if tasks is None else [int(t) for t in np.asarray(tasks).reshape(runs)]

    def envs(self, tasks: list[int]) -> list:
        """One MuJoCo env per slot, of the slot's task; building one takes ~1 s, so they are kept for
        the process, but never more than ``max_envs`` (or what one group needs): envs of tasks this
        group does not use are closed first."""
        ids = [self.env.with_task(t).gym_id for t in tasks]
        need = {g: ids.count(g) for g in set(ids)}
        alive = sum(len(p) for p in _POOLS.values())
        missing = sum(max(0, n - len(_POOLS.get(g, []))) for g, n in need.items())
        if alive + missing > max(self.max_envs, len(ids)):
            for g, pool in _POOLS.items():
                keep = need.get(g, 0)
                for e in pool[keep:]:
                    e.close()
                del pool[keep:]
        out, taken = [], {}
        for t, g in zip(tasks, ids):
            pool = _POOLS.setdefault(g, [])
            k = taken.get(g, 0)
            while len(pool) <= k:
                pool.append(self.env.with_task(t).make_gym())
            out.append(pool[k])
            taken[g] = k + 1
        return out

    def groups(self, shape: tuple[int, int, int], tasks=None) -> tuple[int, list[list[tuple[int, int]]]]:
        """Episodes per slice and the groups of (run, weight) pairs played together (a group's
        pairs times the slice at most ``max_envs`` envs; pairs ordered by task, so that a group
        uses few tasks)."""
        R, W, E = shape
        task_of = self.task_of(R, tasks)
        ew = self.wave(R, W, E)
        pairs = sorted(((r, w) for r in range(R) for w in range(W)), key=lambda p: (task_of[p[0]], p))
        per = max(1, self.max_envs // ew)
        return ew, [pairs[i:i + per] for i in range(0, len(pairs), per)]

    def prepare(self, shape: tuple[int, int, int], tasks=None) -> None:
        """Build the envs of the first group (outside any timing)."""
        ew, groups = self.groups(shape, tasks)
        task_of = self.task_of(shape[0], tasks)
        self.envs([task_of[r] for r, _ in groups[0] for _ in range(ew)])

    def run(self, act, shape: tuple[int, int, int], chunk: int, reset_seeds: np.ndarray,
            policy_keys, tasks=None) -> tuple[np.ndarray, np.ndarray]:
        """``act(obs [R, W, E_wave, D], keys [R, E_wave, 2]) -> [R, W, E_wave, H·A]``; ``reset_seeds``
        ``[R, E]`` integers, ``policy_keys`` ``[R, 2]`` (one PRNG key per run); ``tasks`` ``[R]``:
        each run's evaluation task (default: the env's)."""
        import jax
        import jax.numpy as jnp

        R, W, E = shape
        reset_seeds = np.asarray(reset_seeds).reshape(R, E)
        policy_keys = jnp.asarray(policy_keys).reshape(R, -1)
        task_of = self.task_of(R, tasks)
        # key of (run r, episode e, decision t) = fold_in(fold_in(policy_keys[r], e), t)
        episode_keys = jax.jit(jax.vmap(jax.vmap(jax.random.fold_in, in_axes=(None, 0)), in_axes=(0, None)))
        fold = jax.jit(jax.vmap(jax.vmap(jax.random.fold_in, in_axes=(0, None)), in_axes=(0, None)))
        ew, groups = self.groups(shape, tasks)
        A = int(np.prod(self.env.action_space.shape))
        D = tuple(self.env.observation_shape)
        ret, succ = np.zeros((R, W, E), np.float32), np.zeros((R, W, E), np.float32)
        for group in groups:
            # slot k of the group: pair group[k // ew], the (k % ew)-th episode of the slice
            rs = np.array([r for r, _ in group for _ in range(ew)])
            ws = np.array([w for _, w in group for _ in range(ew)])
            js = np.array([j for _ in group for j in range(ew)])
            envs = self.envs([task_of[r] for r in rs])
            for e0 in range(0, E, ew):
                eps = list(range(e0, min(e0 + ew, E)))
                slot_eps = np.array([eps[min(j, len(eps) - 1)] for j in range(ew)])  # empty slots repeat the last
                slice_keys = episode_keys(policy_keys, jnp.asarray(slot_eps))  # [R, E_wave, 2]
                live = js < len(eps)
                obs = np.zeros((len(envs),) + D, np.float32)
                for k in np.flatnonzero(live):
                    obs[k] = envs[k].reset(seed=int(reset_seeds[rs[k], eps[js[k]]]))[0]
                done = ~live
                r_, s_ = np.zeros(len(envs), np.float32), np.zeros(len(envs), np.float32)
                full = np.zeros((R, W, ew) + D, np.float32)
                t = 0
                while t < self.env.max_episode_steps and not done.all():
                    full[rs, ws, js] = obs
                    acts = np.asarray(act(full, fold(slice_keys, t)))[rs, ws, js].reshape(len(envs), chunk, A)
                    for h in range(chunk):
                        for k in np.flatnonzero(~done):
                            o, r, term, trunc, info = envs[k].step(acts[k, h])
                            obs[k] = o
                            r_[k] += r
                            s_[k] = max(s_[k], float(info.get("success", 0.0)))
                            done[k] = term or trunc
                            self.steps += 1
                        t += 1
                for k in np.flatnonzero(live):
                    ret[rs[k], ws[k], eps[js[k]]] = r_[k]
                    succ[rs[k], ws[k], eps[js[k]]] = s_[k]
        return ret, succ
