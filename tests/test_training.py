"""The training program: resume is bitwise, hyperparameter vmap equals separate runs, no
recompilation between chunks, checkpoints refuse an incompatible config."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl.config import ConfigError, run_grid
from purejaxrl.experiment import run
from purejaxrl.trainer import Trainer, build_algorithm


def _rows(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_resume_is_bitwise_identical(tmp_path, tiny_cfg):
    cfg = tiny_cfg("num_seeds=2", "chunks=4")
    full = run(cfg, tmp_path / "full")
    part = run({**cfg, "stop_after_chunks": 2}, tmp_path / "part")
    assert not part["completed"] and part["updates"] == 4
    resumed = run({**cfg, "resume": True}, tmp_path / "part")
    assert resumed["completed"] and resumed["updates"] == 8
    assert _rows(tmp_path / "part") == _rows(tmp_path / "full")
    assert resumed["final_return"] == full["final_return"]
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    for key in ("final_return", "env_steps", "compile_seconds", "run_seconds", "env_steps_per_second"):
        assert key in summary
    assert set(summary["final_return"]) >= {"mean", "std", "per_seed"} and len(summary["final_return"]["per_seed"]) == 2


def test_checkpoint_protection_and_incompatible_restore(tmp_path, tiny_cfg):
    cfg = tiny_cfg("num_seeds=1", "chunks=2")
    run(cfg, tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run(cfg, tmp_path)
    changed = {**cfg, "resume": True, "algo": {**cfg["algo"], "lr": 1e-3}}
    with pytest.raises(ConfigError, match=r"algo\.lr: checkpoint has 0\.0001, config now has 0\.001"):
        run(changed, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_before


@pytest.mark.slow
def test_hyperparameter_vmap_matches_separate_runs(tiny_cfg):
    """A vmapped run computes what a separate run with its values and seed computes, up to float
    rounding: vmapped matmuls may round differently, so losses and parameters agree to a tolerance
    (returns are not compared: one flipped greedy action changes a return by a whole step)."""
    cfg = tiny_cfg("vmap.algo.lr=[1e-4,3e-4,1e-3]", "num_seeds=2", "algo.total_timesteps=8192")
    algo = build_algorithm(cfg)
    runs, hp, seeds = run_grid(cfg, algo.HPARAMS)
    assert len(runs) == 6
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    batched = Trainer(algo, 6, chunks=1)
    s_all, m_all = batched.chunk(batched.init(keys, hp), hp, 0)
    single = Trainer(algo, 1, chunks=1)  # one compile serves every separate run: hp are traced
    for r in range(6):
        hp_r = {k: v[r : r + 1] for k, v in hp.items()}
        s_r, m_r = single.chunk(single.init(keys[r : r + 1], hp_r), hp_r, 0)
        for k in ("loss", "q_values", "epsilon"):
            np.testing.assert_allclose(m_all[k][r], m_r[k][0], rtol=2e-3, atol=1e-4, err_msg=f"run {r} {k}")
        for a, b in zip(jax.tree.leaves(s_r.params), jax.tree.leaves(jax.tree.map(lambda x: x[r], s_all.params))):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4, err_msg=f"run {r} params")
    # the runs really differ from each other (different lr / seed)
    assert not np.allclose(m_all["loss"][0], m_all["loss"][4])


def test_no_recompilation_after_first_chunk(tmp_path, tiny_cfg, caplog):
    def compiles(chunks, d):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
            run({**tiny_cfg("num_seeds=1"), "chunks": chunks, "compilation_cache": False}, d)
        # the training programs only (small eager helpers compile once per process, whichever run is first)
        return [m for m in (r.getMessage() for r in caplog.records) if "Compiling" in m and
                ("jit(init)" in m or "jit(_run_updates)" in m)]

    two, eight = compiles(2, tmp_path / "a"), compiles(8, tmp_path / "b")
    assert two, "expected jax to log the compilation of the training program"
    assert len(eight) == len(two), f"chunks=8 compiled {len(eight)} programs vs {len(two)}: {eight}"


@pytest.mark.slow
def test_short_last_chunk_matches_one_jit(tiny_cfg):
    cfg = tiny_cfg("num_seeds=1", "algo.total_timesteps=14336")  # 7 updates: chunks of 4, then a short one of 3
    algo = build_algorithm(cfg)
    assert algo.num_updates == 7
    hp = {k: jnp.float32(cfg["algo"][k]) for k in algo.HPARAMS}
    key = jax.random.PRNGKey(0)
    _, whole = jax.jit(Trainer(algo, 1).train_fn())(key, hp)
    tr = Trainer(algo, 1, chunks=2)
    assert tr.updates_per_chunk == 4
    hp1 = {k: v[None] for k, v in hp.items()}
    state = tr.init(key[None], hp1)
    state, m1 = tr.chunk(state, hp1, 0)
    state, m2 = tr.chunk(state, hp1, 4)
    assert np.isnan(m2["loss"][0, 3])  # the surplus update was skipped, not run
    chunked = np.concatenate([m1["loss"][0], m2["loss"][0, :3]])
    np.testing.assert_allclose(np.asarray(whole["loss"]), chunked, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(whole["eval_return"])[-1], m2["eval_return"][0, 2])


def test_resume_of_a_completed_run_changes_nothing(tmp_path, tiny_cfg, capsys):
    cfg = tiny_cfg("num_seeds=1", "chunks=2")
    first = run(cfg, tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = run({**cfg, "resume": True}, tmp_path)
    assert again == first and again["final_return"]["mean"] is not None
    assert "already completed" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_resume_true_needs_a_run_and_auto_starts_one(tmp_path, tiny_cfg, capsys):
    """resume=true on a folder with no run is an error (a mistyped run_dir must not start a whole new
    run), with nothing written; resume=auto starts one there, and continues it next time."""
    from purejaxrl.config import ConfigError

    cfg = tiny_cfg("num_seeds=1", "chunks=2", "stop_after_chunks=1")
    with pytest.raises(ConfigError, match="holds no run to continue"):
        run({**cfg, "resume": True}, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    part = run({**cfg, "resume": "auto"}, tmp_path / "new")
    assert not part["completed"] and "holds no run yet; starting one" in capsys.readouterr().out
    done = run({**cfg, "resume": "auto", "stop_after_chunks": None}, tmp_path / "new")
    assert done["completed"] and "resuming" in capsys.readouterr().out


def test_divergence_stops_at_the_chunk_and_keeps_the_last_good_checkpoint(tmp_path, tiny_cfg, monkeypatch):
    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.experiment import TrainingDiverged

    calls = []
    real_chunk = Trainer.chunk

    def chunk(self, state, hparams, start, with_finite=False):
        state, metrics, finite = real_chunk(self, state, hparams, start, with_finite=True)
        calls.append(start)
        if len(calls) == 3:  # the third chunk goes wrong in run 1 at its second update
            metrics = {**metrics, "loss": metrics["loss"].copy()}
            metrics["loss"][1, 1] = np.inf
        return state, metrics, finite

    monkeypatch.setattr(Trainer, "chunk", chunk)
    cfg = tiny_cfg("num_seeds=2", "chunks=4", "seed=7")
    with pytest.raises(TrainingDiverged) as e:
        run(cfg, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("run 1 (seed 8)", "loss is not finite at update 6", "last good checkpoint (update 4) is kept"):
        assert part in msg, msg
    assert calls == [0, 2, 4]
    ck = Checkpointer(tmp_path / "checkpoints")
    assert ck.latest_step() == 4
    ck.close()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["diverged"] == {"run": 1, "seed": 8, "update": 6, "metric": "loss"} and not summary["completed"]


@pytest.mark.slow
def test_divergence_from_the_command_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "purejaxrl")
    p = subprocess.run([exe, "train", "algo.lr=1e12", "algo.total_timesteps=8192", "num_seeds=1", "chunks=2",
                        "logger.progress=false", f"run_dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 3, p.stderr[-2000:]
    lines = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "diverged" in lines[0] and "seed 0" in lines[0] and "Traceback" not in p.stderr




@pytest.mark.slow
def test_resume_with_other_chunks_stops_at_the_last_update(tmp_path, tiny_cfg):
    """Chunk sizes may change on resume; updates past the end are still skipped (8 updates: 3 + 3,
    then chunks of 4 from update 6 would overrun by 2)."""
    cfg = tiny_cfg("num_seeds=1", "chunks=3")
    run(cfg, tmp_path / "whole")
    run({**cfg, "stop_after_chunks": 2}, tmp_path / "part")
    resumed = run({**cfg, "chunks": 2, "resume": True}, tmp_path / "part")
    assert resumed["updates"] == 8 and resumed["completed"]
    a, b = _rows(tmp_path / "whole"), _rows(tmp_path / "part")
    assert [r["update"] for r in b] == list(range(1, 9))
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    from purejaxrl.evaluate import load_run

    s_whole, s_part = load_run(tmp_path / "whole")[1], load_run(tmp_path / "part")[1]
    assert int(s_part.opt_state[1][0].count) == int(s_whole.opt_state[1][0].count) == 8 * 4 * 16  # no extra steps
    for x, y in zip(jax.tree.leaves(s_whole.params), jax.tree.leaves(s_part.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
