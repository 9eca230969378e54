"""The cold-start task family: independent maps per level, the format warm-up (random digits of the
answer's length), and the whole-run readouts (successes and first success per level, entropy per
iteration) that do not depend on ``log_every`` and survive a resume."""

import csv
import json

import jax
import numpy as np
import pytest

from purejaxrl.config import ConfigError
from purejaxrl.llm.run import RunTotals, run_llm, validate_llm
from purejaxrl.llm.tasks import D0, EOS, PAD, CombinationLock


def test_independent_maps_give_each_level_its_own_answer():
    shared = CombinationLock(levels=(1, 2, 3))
    own = CombinationLock(levels=(1, 2, 3), independent_maps=True)
    b = own.sample(jax.random.PRNGKey(0), 512)
    digs = np.asarray(b.prompts[:, 3:7]) - D0
    lv = np.asarray(b.level)
    perms = np.asarray(own.perms)
    for i in range(64):  # answer digit j of a level-k prompt is perms[k, j, d_j]
        k = lv[i]
        np.testing.assert_array_equal(np.asarray(b.answers[i, :k]) - D0, perms[k, np.arange(k), digs[i, :k]])
        assert int(b.answers[i, k]) == EOS
    # the levels' maps differ (a level is learned from its own successes), the shared task's do not
    assert (perms[1, 0] != perms[2, 0]).any() and (perms[2, :2] != perms[3, :2]).any()
    bs = shared.sample(jax.random.PRNGKey(0), 512)
    first = {}
    for p, a in zip(np.asarray(bs.prompts), np.asarray(bs.answers)):
        first.setdefault(int(p[3]), set()).add(int(a[0]))
    assert all(len(v) == 1 for v in first.values())  # one map for every level


def test_format_answers_keep_the_format_and_drop_the_content():
    task = CombinationLock(levels=(1, 2, 3), independent_maps=True)
    b = task.sample(jax.random.PRNGKey(1), 4096)
    f = task.format_answers(jax.random.PRNGKey(2), b)
    a = np.asarray(b.answers)
    np.testing.assert_array_equal(np.asarray(f) == EOS, a == EOS)
    np.testing.assert_array_equal(np.asarray(f) == PAD, a == PAD)
    digit = (a >= D0) & (a < D0 + 10)
    assert np.all((np.asarray(f)[digit] >= D0) & (np.asarray(f)[digit] < D0 + 10))
    # a random-content answer is right with probability 10^-k: level 1 about 0.1 of the time
    r = np.asarray(task.reward(f, f != PAD, b))
    lv = np.asarray(b.level)
    assert 0.06 < r[lv == 1].mean() < 0.14 and r[lv == 3].mean() < 0.01


def test_sft_target_is_validated():
    from purejaxrl.reproduce import _compose_llm

    cfg = _compose_llm(["mode=sft", "task=cold_lock", "sft_target=format"])
    validate_llm(cfg)
    assert cfg["task"]["kwargs"]["independent_maps"] is True
    with pytest.raises(ConfigError, match="task sort_letters has no answer format"):
        validate_llm(_compose_llm(["mode=sft", "task=sort_letters", "sft_target=format"]))
    validate_llm(_compose_llm(["mode=sft", "task=addition", "sft_target=format"]))  # digits then EOS
    with pytest.raises(ConfigError, match="sft_target='answers'; valid: reference, format"):
        validate_llm({**cfg, "sft_target": "answers"})


def test_run_totals_count_every_iteration_and_the_first_success():
    t = RunTotals()
    t.add(1, {"train_successes_level1": 0.0, "train_samples_level1": 8.0, "entropy": 1.0})
    t.add(2, {"train_successes_level1": 2.0, "train_samples_level1": 8.0, "entropy": 0.4})
    t.add(3, {"train_successes_level1": 1.0, "train_samples_level1": 8.0, "entropy": 0.3})
    assert t.summary() == {"train_successes_level1": 3, "train_samples_level1": 24, "first_success_iteration_level1": 2,
                           "entropy_min": 0.3, "first_iteration_entropy_below_0.5": 2}
    t2 = RunTotals(json.loads(json.dumps(t.state)))  # through a checkpoint's JSON metadata
    t2.add(4, {"train_successes_level1": 0.0, "train_samples_level1": 8.0, "entropy": 0.6})
    assert t2.state["train_samples_level1"] == 32 and t2.state["first_success_iteration_level1"] == 2


RL = {"mode": "rl", "seed": 0, "lr": 1e-3, "num_prompts": 4, "num_generations": 4, "eval_prompts": 8, "eval_every": 100,
      "log_every": 3, "checkpoint_every": 2, "progress": False, "compilation_cache": False,
      "task": {"name": "combination_lock", "kwargs": {"levels": [1, 2], "independent_maps": True}},
      "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_mlp": 32}, "loss": {"name": "grpo"}}


@pytest.mark.slow
def test_trace_and_totals_cover_every_iteration_and_survive_a_resume(tmp_path):
    whole = run_llm({**RL, "iterations": 4}, tmp_path / "whole")
    rows = list(csv.DictReader((tmp_path / "whole" / "trace.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]  # log_every = 3 logs fewer rows than that
    assert all(float(r["entropy"]) > 0 for r in rows)
    n = sum(float(r[f"train_samples_level{k}"]) for r in rows for k in (1, 2))
    assert n == 4 * 4 * 4 and whole["train_samples_level1"] + whole["train_samples_level2"] == 64
    assert whole["train_successes_level1"] == sum(int(float(r["train_successes_level1"])) for r in rows)
    run_llm({**RL, "iterations": 2}, tmp_path / "split")
    resumed = run_llm({**RL, "iterations": 4, "resume": True}, tmp_path / "split")
    for k in ("train_samples_level1", "train_successes_level1", "train_successes_level2", "first_success_iteration_level1",
              "entropy_min"):
        assert resumed[k] == pytest.approx(whole[k]), k
    assert (tmp_path / "split" / "trace.csv").read_text() == (tmp_path / "whole" / "trace.csv").read_text()
