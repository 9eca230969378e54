"""End to end through the console script: train, plot, eval, a Hydra multirun, a clear error."""

import json
import os
import subprocess
import sys


TINY = ["algo.total_timesteps=8192", "algo.num_evals=2", "algo.num_eval_envs=4", "logger.progress=false"]


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "purejaxrl", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


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
    ev = json.loads((d / "eval.json").read_text())
    assert len(ev["per_run"]) == 4 and all(r["mean_return"] > 0 for r in ev["per_run"])


def test_config_error_is_one_clear_line_before_compiling(tmp_path):
    p = _cli("train", "algo.num_minibatches=7", f"run_dir={tmp_path}")
    assert p.returncode == 2
    assert "algo.num_minibatches=7 does not divide the batch" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_hydra_multirun(tmp_path):
    p = _cli("train", "-m", "algo=pqn,ppo", *TINY, "num_seeds=1", "chunks=1", f"run_dir={tmp_path}", "hydra.launcher.n_jobs=1")
    assert p.returncode == 0, p.stderr[-3000:]
    algos = sorted(json.loads((tmp_path / str(i) / "summary.json").read_text())["algo"] for i in range(2))
    assert algos == ["ppo", "pqn"]
