"""Scale-out on CPU: the run axis over 1, 2 and 4 virtual devices (train, meta, llm), resuming on
another device count, two ``jax.distributed`` processes over loopback (run, stop, resume), the
device-count error, and the sweep launchers (local joblib with a device per job, submitit, Ray).

Every run goes through the installed console script in a subprocess: the device count is fixed
when a process starts JAX.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

EXE = os.path.join(os.path.dirname(sys.executable), "purejaxrl")
TRAIN = ["num_seeds=4", "algo.total_timesteps=12288", "algo.num_evals=3", "algo.num_eval_envs=4", "chunks=3",
         "logger.progress=false"]
META = ["experiment=meta_cartpole", "objective=ta_lpo", "objective.hidden=16", "es.population=4", "es.seeds_per_member=1",
        "es.generations=2", "algo.total_timesteps=1024", "algo.num_envs=4", "algo.num_steps=32", "algo.num_eval_envs=4",
        "progress=false"]
LLM = ["reward=logprob", "model=tiny", "iterations=4", "num_prompts=8", "num_generations=4", "eval_every=2",
       "eval_prompts=16", "checkpoint_every=2", "progress=false"]


def _run(*args, cwd=None, env=None, timeout=600):
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)


def _ok(p):
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    return p


def _rows(d, *keys):
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line]
    return {k: np.asarray([np.nan if r.get(k) is None else r[k] for r in rows], float) for k in keys}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale") / "one"
    _ok(_run("train", *TRAIN, f"run_dir={d}"))
    return d


@pytest.mark.slow
def test_train_is_the_same_on_1_2_and_4_devices_and_resumes_on_another_count(one_device, tmp_path):
    """4 virtual devices (XLA_FLAGS) for 2 of 3 chunks, then resumed on 2 devices: episodes and
    evaluations are those of the single-device run; losses agree to float32 rounding (a batch of
    4 runs on one device and 1 run per device are compiled to different kernels)."""
    d = tmp_path / "four_then_two"
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    _ok(_run("train", *TRAIN, "mesh.devices=all", "stop_after_chunks=2", f"run_dir={d}", env=four))
    p = _ok(_run("train", *TRAIN, "mesh.devices=2", "resume=true", f"run_dir={d}", env=four))
    assert "resuming" in p.stdout
    s = json.loads((d / "summary.json").read_text())
    assert s["devices"] == 2 and s["completed"]
    assert s["final_return"]["per_seed"] == json.loads((one_device / "summary.json").read_text())["final_return"]["per_seed"]
    a, b = (_rows(x, "episode_return", "eval_return", "loss", "q_values") for x in (one_device, d))
    for k in ("episode_return", "eval_return"):
        np.testing.assert_array_equal(a[k], b[k])
    for k in ("loss", "q_values"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
    p = _ok(_run("eval", str(d), "--episodes", "2"))  # a sharded checkpoint restored on one device
    assert len(json.loads((d / "eval_test.json").read_text())["per_run"]) == 4


def test_mesh_settings_are_checked_before_jax_starts():
    from purejaxrl.sharding import check_mesh_config

    ok = {"mesh": {"devices": "all"}, "distributed": {"coordinator": "h:1", "num_processes": 2, "process_id": 1},
          "run_dir": "r"}
    assert check_mesh_config(ok) == []
    bad = [({**ok, "run_dir": None}, "run_dir is not"), ({**ok, "mesh": {"devices": 0}}, "mesh.devices=0"),
           ({**ok, "distributed": {**ok["distributed"], "process_id": 2}}, "process_id=2 must be an integer in [0, 2)"),
           ({**ok, "mesh": {"device": 2}}, "mesh.device is not a mesh setting")]
    for cfg, fragment in bad:
        errs = check_mesh_config(cfg)
        assert len(errs) == 1 and fragment in errs[0], errs


@pytest.mark.slow
def test_two_processes_over_loopback_run_stop_and_resume(one_device, tmp_path):
    """jax.distributed with 2 processes × 2 CPU devices: process 0 alone writes the run directory,
    both checkpoint; stopped after a chunk and resumed, it ends where the single-device run ends."""
    d = tmp_path / "two_procs"

    def both(*extra):
        port = _free_port()
        common = [*TRAIN, f"run_dir={d}", f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2",
                  "distributed.cpu_devices=2", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [subprocess.Popen([EXE, "train", *common, f"distributed.process_id={i}"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, (out[-2000:], err[-3000:])
        return outs

    outs = both("stop_after_chunks=1")
    assert all("stopping after 1 chunk" in out for out, _ in outs)
    assert len(_rows(d, "loss")["loss"]) < len(_rows(one_device, "loss")["loss"])
    outs = both("resume=true")
    assert all("resuming" in out for out, _ in outs)
    s = json.loads((d / "summary.json").read_text())
    assert s["processes"] == 2 and s["devices"] == 4 and s["completed"]
    assert s["final_return"]["per_seed"] == json.loads((one_device / "summary.json").read_text())["final_return"]["per_seed"]
    a, b = (_rows(x, "episode_return", "eval_return", "update") for x in (one_device, d))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])  # one row per run and update: nothing written twice


@pytest.mark.slow
def test_meta_population_is_the_same_on_1_and_4_devices(tmp_path):
    _ok(_run("meta", *META, f"run_dir={tmp_path / 'one'}"))
    _ok(_run("meta", *META, "mesh.devices=all", "distributed.cpu_devices=4", f"run_dir={tmp_path / 'four'}"))
    a, b = (_rows(tmp_path / x, "best_fitness", "mean_fitness") for x in ("one", "four"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert json.loads((tmp_path / "four" / "summary.json").read_text())["devices"] == 4


def test_virtual_cpu_devices_wait_for_each_other_in_collectives(monkeypatch):
    """Virtual CPU devices share a small machine's cores; XLA's default collective timeouts (tens of
    seconds) aborted a 4-device LLM run on a busy 2-core machine.  cpu_devices adds long timeouts to
    XLA_FLAGS and keeps any the user set."""
    from purejaxrl import sharding

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_collective_timeout_seconds=7")
    sharding._patient_cpu_collectives()
    flags = os.environ["XLA_FLAGS"].split()
    assert "--xla_cpu_collective_timeout_seconds=7" in flags
    assert f"--xla_cpu_collective_call_terminate_timeout_seconds={sharding._CPU_COLLECTIVE_WAIT_S}" in flags
    assert sum("collective_timeout" in f for f in flags) == 1
    monkeypatch.delenv("XLA_FLAGS")
    sharding._patient_cpu_collectives()
    assert os.environ["XLA_FLAGS"].split() == [f"--{f}={sharding._CPU_COLLECTIVE_WAIT_S}"
                                               for f in sharding._CPU_COLLECTIVE_FLAGS]


@pytest.mark.slow
def test_llm_data_parallel_matches_one_device(tmp_path):
    """The prompt batch split over 4 devices: the same samples and rewards; gradients are summed
    across devices in another order, so losses agree to float32 rounding, not bit for bit."""
    _ok(_run("llm", "rl", *LLM, f"run_dir={tmp_path / 'one'}"))
    _ok(_run("llm", "rl", *LLM, "mesh.devices=all", "distributed.cpu_devices=4", f"run_dir={tmp_path / 'four'}"))
    a, b = (_rows(tmp_path / x, "loss", "reward", "completion_length") for x in ("one", "four"))
    np.testing.assert_array_equal(a["completion_length"], b["completion_length"])
    for k in ("loss", "reward"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4)
    assert json.loads((tmp_path / "four" / "summary.json").read_text())["devices"] == 4


@pytest.mark.parametrize("args, fragment", [
    (["num_seeds=3", "mesh.devices=all"], "3 runs do not divide over 4 devices; pad to a multiple of 4 (num_seeds=4)"),
    pytest.param(["num_seeds=4", "mesh.devices=8"], "mesh.devices=8 but only 4 device(s) are visible", marks=pytest.mark.slow),
    pytest.param(["mesh.devices=two"], "mesh.devices='two' must be null", marks=pytest.mark.slow),
    pytest.param(["distributed.num_processes=2"], "needs distributed.coordinator=HOST:PORT", marks=pytest.mark.slow),
])
def test_bad_mesh_settings_are_one_line_before_anything_is_written(tmp_path, args, fragment):
    d = tmp_path / "run"
    p = _run("train", *TRAIN[1:], *args, "distributed.cpu_devices=4", f"run_dir={d}")
    assert p.returncode == 2 and fragment in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and not d.exists()


@pytest.mark.slow
def test_parallel_local_jobs_get_a_device_each(tmp_path):
    """Two joblib jobs at once: disjoint CPU cores here; with GPUs, one CUDA_VISIBLE_DEVICES each."""
    p = _ok(_run("train", "-m", "algo.lr=1e-4,3e-4", *TRAIN[1:], "num_seeds=2", f"run_dir={tmp_path}",
                 "hydra.launcher.n_jobs=2"))
    got = [json.loads((tmp_path / str(i) / "summary.json").read_text())["local_device"] for i in range(2)]
    assert sorted(g["slot"] for g in got) == [0, 1] and not any(g["shared"] for g in got), p.stderr[-2000:]
    assert not set(got[0]["cpus"]) & set(got[1]["cpus"])


def test_gpu_slots_are_claimed_once_each(tmp_path):
    """Three processes claim GPU slots among CUDA_VISIBLE_DEVICES=3,5 (no GPU needed: nothing
    starts JAX): two get one GPU each, held for their life; the third shares."""
    code = textwrap.dedent("""
        import sys, time
        from purejaxrl.sharding import claim_local_device
        print(claim_local_device(2, "sweep"), flush=True)
        if sys.argv[1] == "hold":
            sys.stdin.read()  # hold the slot until the test closes stdin (however slow the machine is)
        import os; print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5", "TMPDIR": str(tmp_path)}
    holders = [subprocess.Popen([sys.executable, "-c", code, "hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(2)]
    first = [h.stdout.readline() for h in holders]  # both hold their lock now
    late = subprocess.run([sys.executable, "-c", code, "go"], capture_output=True, text=True, env=env, timeout=120)
    outs = [f + h.communicate(input="", timeout=60)[0] for f, h in zip(first, holders)]
    gpus = sorted(o.split()[-1] for o in outs)
    assert gpus == ["3", "5"] and all("'shared': False" in o for o in outs)
    assert "'shared': True" in late.stdout and late.stdout.split()[-1] in ("3", "5")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit_local", "ray"])
def test_sweep_launchers_run_every_point(tmp_path, launcher):
    """The SLURM launcher's submitit code path (its local executor) and Ray (a local instance)."""
    p = _ok(_run("train", "-m", f"launcher={launcher}", "algo.lr=1e-4,3e-4", *TRAIN[1:], "num_seeds=1", "chunks=1",
                 f"run_dir={tmp_path}", cwd=tmp_path))
    lrs = sorted(yaml.safe_load((tmp_path / str(i) / "config.yaml").read_text())["algo"]["lr"] for i in range(2))
    assert lrs == [1e-4, 3e-4], p.stderr[-2000:]
    for i in range(2):
        assert json.loads((tmp_path / str(i) / "summary.json").read_text())["completed"]


@pytest.mark.slow
def test_optuna_sweeper_maximises_the_final_return(tmp_path):
    """`[optuna]`: Hydra's Optuna sweeper samples the interval, runs each trial and reads the final
    greedy return the entry point returns."""
    p = _ok(_run("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                 "hydra.sweeper.direction=maximize", "algo.lr=interval(0.0001,0.001)", *TRAIN[1:], "num_seeds=1",
                 "chunks=1", f"run_dir={tmp_path}", cwd=tmp_path))
    assert "Best value" in p.stdout + p.stderr
    lrs = [yaml.safe_load((tmp_path / str(i) / "config.yaml").read_text())["algo"]["lr"] for i in range(2)]
    assert all(1e-4 <= lr <= 1e-3 for lr in lrs) and lrs[0] != lrs[1]
