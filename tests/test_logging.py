"""Per-run logging: rows are never merged across vmapped runs; one TensorBoard stream per run."""


import numpy as np
import pytest

from purejaxrl.logging import MetricsLogger, read_metrics
from purejaxrl.plotting import bootstrap_ci, curves


def test_rows_per_run_log_every_and_tensorboard(tmp_path):
    runs = [{"run": 0, "seed": 0, "algo.lr": 1e-4}, {"run": 1, "seed": 0, "algo.lr": 1e-3}]
    log = MetricsLogger(tmp_path, runs, {"log_every": 2, "tensorboard": True})
    metrics = {
        "loss": np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]),
        "eval_return": np.array([[np.nan, np.nan, 7.0, np.nan], [np.nan, np.nan, 8.0, np.nan]]),
    }
    log.log_chunk(0, metrics, steps_per_update=100, num_updates=4)
    log.close()
    rows = read_metrics(tmp_path)
    # updates 2 and 4 (log_every) and 3 (an evaluation), for each run separately
    assert [(r["run"], r["update"]) for r in rows] == [(0, 2), (1, 2), (0, 3), (1, 3), (0, 4), (1, 4)]
    assert [r["loss"] for r in rows if r["run"] == 1] == [20.0, 30.0, 40.0]
    assert rows[2]["eval_return"] == 7.0 and rows[0]["eval_return"] is None
    assert rows[5]["env_steps"] == 400 and rows[5]["algo.lr"] == 1e-3
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("run,seed,algo.lr,update,env_steps")
    for r in (0, 1):
        assert any((tmp_path / "tb" / f"run_{r:03d}").glob("events.out.tfevents.*"))
    # plots group the two lr values into two curves, each over its seeds
    c = curves(rows, "loss")
    assert set(c) == {"lr=0.0001", "lr=0.001"}


def test_bootstrap_ci_brackets_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, size=(8, 3))
    lo, hi = bootstrap_ci(x)
    assert np.all(lo < x.mean(0)) and np.all(x.mean(0) < hi)
    assert np.all(hi - lo < 2.0)


def _tb_steps(run_dir, run, tag):
    """Steps of ``tag`` in a TensorBoard stream (reads the TFRecord event files directly)."""
    import struct

    from tensorboardX.proto import event_pb2

    steps = []
    for path in sorted((run_dir / "tb" / f"run_{run:03d}").glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            ev = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            steps += [ev.step for v in ev.summary.value if v.tag == tag]
    return steps


@pytest.mark.slow
def test_resume_rewrites_tensorboard_and_keeps_wandb_ids(tmp_path, tiny_cfg, monkeypatch):
    """After a crash between logging a chunk and checkpointing it, the resumed TensorBoard stream has
    every step once, and each W&B run is resumed under its id instead of opened anew."""
    import shutil
    import sys
    import types

    from purejaxrl.experiment import run

    inits, logged = [], []

    class FakeRun:
        def __init__(self, kw):
            self.id = kw["id"]

        def log(self, data, step=None):
            logged.append((self.id, step))

        def finish(self):
            pass

    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun(kw))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = tiny_cfg("num_seeds=2", "chunks=4", "logger.tensorboard=true", "logger.wandb=true")
    run(cfg, tmp_path)
    assert _tb_steps(tmp_path, 1, "losses/loss") == [2048 * u for u in range(1, 9)]
    assert _tb_steps(tmp_path, 1, "eval/episode_reward") == _tb_steps(tmp_path, 1, "eval/episode_return") != []
    # the crash: the last chunk was logged but its checkpoint never written
    shutil.rmtree(tmp_path / "checkpoints" / "8")
    (tmp_path / "summary.json").unlink()
    run({**cfg, "resume": True}, tmp_path)
    assert _tb_steps(tmp_path, 1, "losses/loss") == [2048 * u for u in range(1, 9)]
    ids = [kw["id"] for kw in inits]
    assert ids[:2] == ids[2:] and ids[0] != ids[1] and all(kw["resume"] == "allow" for kw in inits)
    assert all(kw["reinit"] == "create_new" for kw in inits)  # both runs stay open side by side
    # W&B steps on the same axis as TensorBoard, env steps: the re-logged updates 7..8 carry the same steps
    assert sorted({s for i, s in logged if i == ids[0]}) == [2048 * u for u in range(1, 9)]
    assert all(kw["dir"] == str(tmp_path) for kw in inits)  # wandb/ inside the run directory
