"""The LLM loop's silent failures, each refused or fixed: no clipping at max_grad_norm 0 / null (as TRL),
a non-finite loss stops the run naming iteration, seed and metric, a resume with a setting that changes
the trajectory is refused, GARL/PAFT never run off-policy uncorrected, and each mode defaults to a loss
of its kind."""

import json

import pytest

from purejaxrl.config import ConfigError
from purejaxrl.errors import TrainingDiverged
from purejaxrl.llm.run import run_llm, validate_llm

PREF = {"mode": "pref", "seed": 0, "iterations": 2, "lr": 1e-3, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "batch_size": 8, "num_candidates": 4, "dataset_size": 64, "noise": "none", "eval_prompts": 16,
        "eval_every": 2, "log_every": 1, "checkpoint_every": 2, "init_from": None, "resume": False,
        "compilation_cache": False, "progress": False, "task": {"name": "sort_letters", "kwargs": {}},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64}, "loss": {"name": "dpo", "beta": 0.1}}


def _rows(d):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (d / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_max_grad_norm_zero_or_null_is_no_clipping(tmp_path):
    """TRL users write 0 for "no clipping"; optax's clip_by_global_norm(0) zeroes every update."""
    validate_llm({**PREF, "max_grad_norm": None})
    run_llm({**PREF, "max_grad_norm": 1e9}, tmp_path / "huge")
    for v in (0.0, None):
        run_llm({**PREF, "max_grad_norm": v}, tmp_path / str(v))
        for a, b in zip(_rows(tmp_path / str(v)), _rows(tmp_path / "huge")):  # clipping at 1e9 multiplies by 1.0
            assert a == pytest.approx(b, rel=1e-5)
    assert _rows(tmp_path / "huge")[0]["loss"] != _rows(tmp_path / "huge")[1]["loss"]  # the model did move


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_naming_iteration_seed_and_metric(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"seed 0\).*loss is not finite at iteration \d+"):
        run_llm({**PREF, "lr": 1e30, "max_grad_norm": 0, "iterations": 6}, tmp_path / "nan")


@pytest.mark.slow
def test_a_resume_with_a_trajectory_setting_changed_is_refused(tmp_path):
    run_llm({**PREF, "iterations": 2}, tmp_path / "r")
    for k, v in (("lr", 3e-3), ("max_grad_norm", 0.5), ("weight_decay", 0.1)):
        with pytest.raises(ConfigError, match=k):
            run_llm({**PREF, "iterations": 4, "resume": True, k: v}, tmp_path / "r")
    run_llm({**PREF, "iterations": 4, "resume": True}, tmp_path / "r")  # the same settings, a longer run: resumes
    assert [r["update"] for r in _rows(tmp_path / "r")] == [1, 2, 3, 4]


def test_garl_and_paft_refuse_several_steps_per_batch():
    from purejaxrl.reproduce import _compose_llm

    for loss in ("garl", "paft"):
        cfg = _compose_llm(["mode=rl", f"loss={loss}", "num_iterations=2"])
        with pytest.raises(ConfigError, match=f"loss={loss} with num_iterations=2.*off-policy"):
            validate_llm(cfg)
        validate_llm({**cfg, "num_iterations": 1})
    validate_llm(_compose_llm(["mode=rl", "loss=grpo", "num_iterations=2"]))  # ratio-clipped losses may


def test_each_llm_mode_defaults_to_a_loss_of_its_kind(monkeypatch):
    from purejaxrl import cli
    from purejaxrl.reproduce import _compose_llm

    seen = {}
    monkeypatch.setattr(cli, "_hydra_entry", lambda conf, overrides, run, report: seen.update(o=overrides))
    cli.llm_main(["pref", "task=sort_letters"])
    validate_llm(_compose_llm(seen["o"]))  # the bare command of a new user composes and validates
    assert _compose_llm(seen["o"])["loss"]["name"] == "dpo"
    cli.llm_main(["pref", "task=sort_letters", "loss=adpo_pair"])
    assert _compose_llm(seen["o"])["loss"]["name"] == "adpo_pair"
    cli.llm_main(["rl", "task=addition"])
    assert _compose_llm(seen["o"])["loss"]["name"] == "grpo"
