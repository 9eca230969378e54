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


def test_hyperparameter_vmap_equals_separate_runs(tiny_cfg):
    cfg = tiny_cfg("vmap.algo.lr=[1e-4,3e-4,1e-3]", "num_seeds=2", "algo.total_timesteps=8192")
    algo = build_algorithm(cfg)
    runs, hp, seeds = run_grid(cfg, algo.HPARAMS)
    assert len(runs) == 6
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    batched = Trainer(algo, 6, chunks=1)
    _, m_all = batched.chunk(batched.init(keys, hp), hp, 0)
    single = Trainer(algo, 1, chunks=1)  # one compile serves every separate run: hp are traced
    for r in range(6):
        hp_r = {k: v[r : r + 1] for k, v in hp.items()}
        _, m_r = single.chunk(single.init(keys[r : r + 1], hp_r), hp_r, 0)
        for k in ("loss", "q_values", "episode_return", "eval_return"):
            np.testing.assert_allclose(m_all[k][r], m_r[k][0], rtol=2e-3, atol=1e-4, err_msg=f"run {r} {k}")
    # the runs really differ from each other (different lr / seed)
    assert not np.allclose(m_all["loss"][0], m_all["loss"][4])


def test_no_recompilation_after_first_chunk(tmp_path, tiny_cfg, caplog):
    def compiles(chunks, d):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
            run({**tiny_cfg("num_seeds=1"), "chunks": chunks, "compilation_cache": False}, d)
        return [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]

    two, eight = compiles(2, tmp_path / "a"), compiles(8, tmp_path / "b")
    assert two, "expected jax to log the compilation of the training program"
    assert len(eight) == len(two), f"chunks=8 compiled {len(eight)} programs vs {len(two)}: {eight}"


def test_one_jit_whole_run_matches_chunked(tiny_cfg):
    cfg = tiny_cfg("num_seeds=1", "algo.total_timesteps=12288")  # 6 updates: chunks of 4 leave a partial one
    algo = build_algorithm(cfg)
    hp = {k: jnp.float32(cfg["algo"][k]) for k in algo.HPARAMS}
    key = jax.random.PRNGKey(0)
    train = jax.jit(Trainer(algo, 1).train_fn())
    _, whole = train(key, hp)
    tr = Trainer(algo, 1, chunks=2)
    state = tr.init(key[None], {k: v[None] for k, v in hp.items()})
    state, m1 = tr.chunk(state, {k: v[None] for k, v in hp.items()}, 0)
    state, m2 = tr.chunk(state, {k: v[None] for k, v in hp.items()}, 3)
    chunked = np.concatenate([m1["loss"][0], m2["loss"][0]])
    np.testing.assert_allclose(np.asarray(whole["loss"]), chunked, rtol=1e-5)
