"""OGBench's manipulation tasks: datasets from the package's oracles, single-task relabelling, and
QGF / FQL trained in the compiled loop and evaluated in the host loop, through the console script."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from envs import make
from envs.datasets import DatasetError, generate, load


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    d = tmp_path_factory.mktemp("ogbench")
    info = generate("ogbench_cube_single_play", 3, d / "cube.npz", seed=0, episode_length=80)
    return d, info


def test_play_dataset_has_ogbench_keys_and_episode_structure(cube):
    d, info = cube
    raw = dict(np.load(d / "cube.npz"))
    n = 3 * 80
    assert info["transitions"] == n and info["transitions_per_second"] > 0
    assert raw["observations"].shape == (n, 28) and raw["observations"].dtype == np.float32
    assert raw["actions"].shape == (n, 5) and np.abs(raw["actions"]).max() <= 1.0
    assert raw["qpos"].shape[0] == n and raw["qvel"].shape[0] == n
    assert raw["terminals"].dtype == bool and np.flatnonzero(raw["terminals"]).tolist() == [79, 159, 239]
    # the oracle moves the arm: actions are not constant and the effector goes somewhere
    assert raw["actions"].std(0).min() > 0.01 and np.ptp(raw["observations"][:80], 0).max() > 0.05
    # a fresh episode starts where the env resets, not where the previous one ended
    assert not np.allclose(raw["observations"][80], raw["observations"][79])


def test_single_task_relabelling_is_minus_unsatisfied_subgoals(cube):
    d, _ = cube
    env = make("ogbench_cube_single", task=1)
    raw = dict(np.load(d / "cube.npz"))
    data = load(d / "cube.npz", env)
    r, m = np.asarray(data.rewards), np.asarray(data.masks)
    assert set(np.unique(r)) <= {-1.0, 0.0} and np.array_equal(m, -r)  # one subgoal: success ⇔ reward 0
    # put the cube exactly on task 1's goal in one row and 5 cm away in another: 0 and −1 by hand
    g = env.make_gym()
    g.reset(seed=0)
    goal = np.asarray(g.unwrapped._data.mocap_pos[0]).copy()
    qpos = raw["qpos"].copy()
    qpos[0, 14:17] = goal
    qpos[1, 14:17] = goal + np.array([0.05, 0.0, 0.0])
    np.savez(d / "placed.npz", **{**raw, "qpos": qpos})
    placed = load(d / "placed.npz", env)
    assert float(placed.rewards[0]) == 0.0 and float(placed.masks[0]) == 0.0
    assert float(placed.rewards[1]) == -1.0 and float(placed.masks[1]) == 1.0


def test_puzzle_noisy_dataset_carries_button_states_and_relabels_from_them(tmp_path):
    generate("ogbench_puzzle_3x3_noisy", 1, tmp_path / "pz.npz", seed=1, episode_length=40)
    raw = dict(np.load(tmp_path / "pz.npz"))
    assert raw["button_states"].shape == (40, 9) and raw["button_states"].dtype == np.int64
    data = load(tmp_path / "pz.npz", make("ogbench_puzzle_3x3"))
    r = np.asarray(data.rewards)
    assert r.min() >= -9 and r.max() <= 0 and np.all(r == np.round(r))
    np.savez(tmp_path / "nobuttons.npz", **{k: v for k, v in raw.items() if k != "button_states"})
    with pytest.raises(DatasetError, match="missing key 'button_states'"):
        load(tmp_path / "nobuttons.npz", make("ogbench_puzzle_3x3"))


@pytest.mark.slow
def test_host_evaluator_slices_episodes_and_keeps_their_order():
    """With fewer envs allowed than episodes, slices of episodes run one after another: every
    (run, weight, episode) is played once, from its run's own reset seed for that episode, the same
    for every weight of the run, and the results land in their own slot."""
    import jax

    from envs.ogbench import HostEvaluator

    env = make("ogbench_cube_single")
    ev = HostEvaluator(env, max_envs=4)  # R·W = 4: one episode per slice, 3 slices
    seen, keys = [], []

    def act(obs, k):  # [R, W, E_wave, D]: a different constant push per run and weight, logged
        seen.append(obs[..., 0].copy())
        keys.append(np.asarray(k))
        r = np.arange(obs.shape[0])[:, None, None, None]
        w = np.arange(obs.shape[1])[None, :, None, None]
        return np.broadcast_to(np.tanh(0.3 * (r - w) + 0.1), obs.shape[:3] + (5,)).copy()

    policy_keys = np.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    ret, succ = ev.run(act, (2, 2, 3), 1, np.array([[11, 12, 13], [11, 12, 13]]), policy_keys)
    assert ret.shape == (2, 2, 3) and ev.steps == 2 * 2 * 3 * env.max_episode_steps and not succ.any()
    assert np.all(ret == -env.max_episode_steps)  # −1 per step until success, which never comes
    firsts = [seen[k * env.max_episode_steps] for k in range(3)]  # each slice's first observations
    for f in firsts:
        assert f.shape == (2, 2, 1) and np.all(f == f[0, 0, 0])  # the same reset seeds: the same start
    assert not np.array_equal(firsts[0], firsts[1])  # another episode, another start
    assert keys[0].shape == (2, 1, 2) and not np.array_equal(keys[0][0], keys[0][1])  # each run its own key
    assert not np.array_equal(keys[0], keys[1])  # a fresh key per decision
    from envs.ogbench import _POOLS

    assert len(_POOLS[env.gym_id]) == 4  # never more envs than allowed
    seen.clear()
    ev.run(act, (2, 2, 1), 1, np.array([[11], [99]]), policy_keys)  # runs with their own reset seeds
    f = seen[0]
    assert f[0, 0, 0] == f[0, 1, 0] and f[1, 0, 0] == f[1, 1, 0] and f[0, 0, 0] != f[1, 0, 0]
    # episode e's noise at decision t depends on its run's key, e and t only: not on how many runs and
    # weights share the evaluation (which sets the slicing)
    keys.clear()
    ev.run(act, (2, 2, 3), 1, np.array([[11, 12, 13], [11, 12, 13]]), policy_keys)  # 1 episode per slice
    wide = [k[0, 0] for k in keys[:: env.max_episode_steps]]  # run 0, the first decision of episodes 0, 1, 2
    keys.clear()
    big = HostEvaluator(env, max_envs=8)  # R·W = 1: 3 episodes in one slice
    big.run(act, (1, 1, 3), 1, np.array([[11, 12, 13]]), policy_keys[:1])
    np.testing.assert_array_equal(np.stack(wide), keys[0][0])


@pytest.mark.slow
def test_host_evaluator_never_holds_more_envs_than_allowed_and_groups_change_nothing():
    """More (run, weight) pairs than ``max_envs``: pairs are played in groups, at most ``max_envs``
    envs alive (other tasks' envs closed first), and every episode's result is the one a single
    wide evaluation gives."""
    import jax

    from envs.ogbench import _POOLS, HostEvaluator

    env = make("ogbench_cube_single", task="all")

    def act(obs, k):  # depends on the run, the weight and the observation only
        r = np.arange(obs.shape[0])[:, None, None, None]
        w = np.arange(obs.shape[1])[None, :, None, None]
        return np.tanh(0.3 * (r - w) + obs[..., :5]).astype(np.float32)

    keys = np.stack([jax.random.PRNGKey(i) for i in range(3)])
    seeds = np.array([[1, 2], [3, 4], [5, 6]])
    narrow = HostEvaluator(env, max_envs=2)
    ret_n, succ_n = narrow.run(act, (3, 2, 2), 1, seeds, keys, tasks=[2, 1, 2])
    assert sum(len(p) for p in _POOLS.values()) <= 2
    ret_w, succ_w = HostEvaluator(env, max_envs=12).run(act, (3, 2, 2), 1, seeds, keys, tasks=[2, 1, 2])
    np.testing.assert_array_equal(ret_n, ret_w)
    np.testing.assert_array_equal(succ_n, succ_w)


@pytest.mark.slow
def test_host_evaluator_plays_each_run_on_its_own_task():
    """``env.kwargs.task=all``: run r's episodes are played in task ``tasks[r]``'s env (the cube
    starts elsewhere in each task), whatever task the env object was built for."""
    import jax

    from envs.ogbench import HostEvaluator

    env = make("ogbench_cube_single", task="all")
    ev = HostEvaluator(env, max_envs=8)
    starts = []

    def act(obs, k):
        if not starts:
            starts.append(obs.copy())
        return np.zeros(obs.shape[:3] + (5,), np.float32)

    keys = np.stack([jax.random.PRNGKey(0)] * 3)
    ev.run(act, (3, 1, 1), 1, np.array([[5], [5], [5]]), keys, tasks=[1, 3, 3])
    first = starts[0][:, 0, 0]
    np.testing.assert_array_equal(first[1], first[2])  # task 3 twice, the same reset seed: the same start
    assert not np.array_equal(first[0], first[1])
    single = []
    HostEvaluator(make("ogbench_cube_single", task=3), max_envs=8).run(
        lambda o, k: (single.append(o.copy()) if not single else None) or np.zeros(o.shape[:3] + (5,), np.float32),
        (1, 1, 1), 1, np.array([[5]]), keys[:1])
    np.testing.assert_array_equal(single[0][0, 0, 0], first[1])  # as the single-task env of task 3


@pytest.mark.slow
def test_qgf_and_fql_on_an_ogbench_task_through_the_console_script(cube):
    """``train algo=qgf env=ogbench_cube_single`` (compiled training, host evaluation per guidance
    weight, gradient steps and evaluation throughput in the summary) → ``eval`` with other weights
    and best-of-N → ``train algo=fql`` on the same file; a file without ``qpos`` is refused."""
    d, _ = cube
    run = lambda *a: subprocess.run([sys.executable, "-m", "purejaxrl", *a], cwd=d, capture_output=True, text=True)  # noqa: E731
    small = ["env=ogbench_cube_single", "dataset.path=cube.npz", "algo.num_updates=20", "algo.actor_hidden=[32]",
             "algo.critic_hidden=[32]", "algo.num_evals=2", "algo.num_eval_envs=2", "logger.progress=false",
             "algo.batch_size=32"]
    r = run("train", "algo=qgf", *small, "num_seeds=2", "run_dir=q", "algo.guidance_weights=[0,0.1]",
            "algo.guidance_weight=0.1")
    assert r.returncode == 0, r.stderr
    s = json.loads((d / "q" / "summary.json").read_text())
    assert s["gradient_steps"] == 20 and s["env_steps"] == 0 and s["evaluation_episodes_per_run"] == 2 * 2 * 2
    assert s["evaluation_env_steps_per_second"] > 0
    assert {"eval_success", "eval_success_w0", "eval_success_w0.1", "eval_return_w0.1"} <= set(s["final_eval"])
    assert s["final_return"]["per_seed"] == [-200.0, -200.0]  # 200 steps of −1: no success after 20 steps
    rows = [json.loads(line) for line in (d / "q" / "metrics.jsonl").read_text().splitlines()]
    evals = sorted({row["update"] for row in rows if row.get("eval_return") is not None
                    and np.isfinite(row["eval_return"])})
    assert evals == [10, 20]
    r = run("eval", "q", "qgf.guidance_weights=[0,0.01,0.02]", "--episodes", "2")
    assert r.returncode == 0, r.stderr
    ev = json.loads((d / "q" / "eval_test.json").read_text())
    assert [x["w"] for x in ev["per_weight"]] == [0, 0.01, 0.02] and len(ev["per_weight"][0]["per_run_success"]) == 2
    r = run("eval", "q", "algo.guidance=best_of_n", "algo.guidance_weights=[0]", "algo.num_candidates=4", "--episodes", "1")
    assert r.returncode == 0, r.stderr
    r = run("train", "algo=fql", *small, "num_seeds=1", "run_dir=f")
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "f" / "summary.json").read_text())["gradient_steps"] == 20
    raw = dict(np.load(d / "cube.npz"))
    np.savez(d / "noqpos.npz", **{k: v for k, v in raw.items() if k != "qpos"})
    r = run("train", "algo=qgf", *small, "dataset.path=noqpos.npz", "run_dir=bad")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "missing key 'qpos'" in r.stderr and not (d / "bad").exists()
