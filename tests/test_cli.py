"""End to end through the console script: train, plot, eval, a Hydra multirun, a clear error."""

import json
import os
import subprocess
import sys

import pytest

TINY = ["algo.total_timesteps=8192", "algo.num_evals=2", "algo.num_eval_envs=4", "logger.progress=false"]


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "purejaxrl", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_train_plot_eval(tmp_path):
    d = tmp_path / "run"
    p = _cli("train", *TINY, "num_seeds=2", "chunks=2", "vmap.algo.lr=[1e-4,1e-3]", f"run_dir={d}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "final greedy return" in p.stdout
    summary = json.loads((d / "summary.json").read_text())
    assert len(summary["final_return"]["per_seed"]) == 4
    assert {r["algo.lr"] for r in summary["runs"]} == {1e-4, 1e-3}
    assert (d / "config.yaml").exists() and (d / "metrics.csv").exists()
    p = _cli("plot", str(d))
    assert p.returncode == 0, p.stderr[-3000:]
    png = d / "eval_return.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    p = _cli("eval", str(d), "--episodes", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    ev = json.loads((d / "eval_test.json").read_text())
    assert len(ev["per_run"]) == 4 and all(r["mean_return"] > 0 for r in ev["per_run"])


def test_config_error_is_one_clear_line_before_compiling(tmp_path):
    p = _cli("train", "algo.num_minibatches=7", f"run_dir={tmp_path}")
    assert p.returncode == 2
    assert "algo.num_minibatches=7 does not divide the batch" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_hydra_multirun(tmp_path):
    p = _cli("train", "-m", "algo=pqn,ppo", *TINY, "num_seeds=1", "chunks=1", f"run_dir={tmp_path}", "hydra.launcher.n_jobs=1")
    assert p.returncode == 0, p.stderr[-3000:]
    algos = sorted(json.loads((tmp_path / str(i) / "summary.json").read_text())["algo"] for i in range(2))
    assert algos == ["ppo", "pqn"]


def _console(*args, cwd=None, timeout=600):
    """The installed console script, as a user types it."""
    exe = os.path.join(os.path.dirname(sys.executable), "purejaxrl")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_readme_quickstart_in_an_empty_folder(tmp_path):
    """The README's commands without run_dir (Hydra picks outputs/<date>/<time>_<algo>)."""
    p = _console("train", *TINY, "num_seeds=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = list((tmp_path / "outputs").glob("*/*_pqn"))
    assert json.loads((run_dir / "summary.json").read_text())["completed"]
    assert sorted(x.name for x in run_dir.iterdir()) == [
        "checkpoints", "config.yaml", "metrics.csv", "metrics.jsonl", "overrides.yaml", "summary.json"]
    rel = os.path.relpath(run_dir, tmp_path)
    p = _console("plot", rel, cwd=tmp_path)
    assert p.returncode == 0 and (run_dir / "eval_return.png").exists(), p.stderr[-3000:]
    p = _console("eval", rel, "--episodes", "2", cwd=tmp_path)
    assert p.returncode == 0 and "mean greedy return" in p.stdout, p.stderr[-3000:]
    p = _console("llm", "sft", "task=addition", "model=tiny", "iterations=2", "batch_size=8", "eval_prompts=8",
                 "eval_every=2", "progress=false", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (llm_dir,) = list((tmp_path / "outputs" / "llm").glob("*/*_sft_addition_*"))
    assert "test_pass_at_1" in json.loads((llm_dir / "summary.json").read_text())


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_uninterrupted(tmp_path):
    """PPO with observation and reward normalisation (their running statistics are in the state):
    killed with SIGKILL between chunks, ``resume=true`` completes it with the metrics of a run that
    was never interrupted."""
    import signal
    import time

    args = ["algo=ppo", "algo.normalize_obs=true", "algo.normalize_reward=true", "algo.num_envs=4", "algo.num_steps=32",
            "algo.num_minibatches=2", "algo.total_timesteps=5120", "algo.num_evals=4", "algo.num_eval_envs=2",
            "num_seeds=2", "chunks=40", "logger.progress=false"]
    killed = tmp_path / "killed"
    exe = os.path.join(os.path.dirname(sys.executable), "purejaxrl")
    proc = subprocess.Popen([exe, "train", *args, f"run_dir={killed}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = [int(p.name) for p in (killed / "checkpoints").glob("*") if p.name.isdigit()] if (killed / "checkpoints").exists() else []
        if steps and max(steps) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    p = _console("train", *args, f"run_dir={killed}", "resume=true")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming" in p.stdout
    p = _console("train", *args, f"run_dir={tmp_path / 'whole'}")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(killed) == rows(tmp_path / "whole")
    assert len(rows(killed)) == 2 * 40
