"""Per-run logging: rows are never merged across vmapped runs; one TensorBoard stream per run."""


import numpy as np

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
