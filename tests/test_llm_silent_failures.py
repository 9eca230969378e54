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
    # the gradient is checked with the loss: at lr 1e30 either may be the first non-finite metric
    with pytest.raises(TrainingDiverged, match=r"seed 0\).*(loss|grad_norm) is not finite at iteration \d+"):
        run_llm({**PREF, "lr": 1e30, "max_grad_norm": 0, "iterations": 6}, tmp_path / "nan")


@pytest.mark.slow
def test_a_resume_with_a_trajectory_setting_changed_is_refused(tmp_path):
    run_llm({**PREF, "iterations": 2}, tmp_path / "r")
    for k, v in (("lr", 3e-3), ("max_grad_norm", 0.5), ("weight_decay", 0.1), ("adam_beta2", 0.99), ("adam_epsilon", 1e-6),
                 ("noise", "flip:0.1"),
                 ("num_candidates", 3), ("dataset_size", 32)):
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
    cli.llm_main(["pref"])  # truly bare: a task it can train on, too
    validate_llm(_compose_llm(seen["o"]))
    assert _compose_llm(seen["o"])["task"]["name"] == "sort_letters"
    cli.llm_main(["pref", "task=sort_letters", "loss=adpo_pair"])
    assert _compose_llm(seen["o"])["loss"]["name"] == "adpo_pair"
    cli.llm_main(["rl", "task=addition"])
    assert _compose_llm(seen["o"])["loss"]["name"] == "grpo"


def test_garl_and_paft_refuse_filtered_sampling():
    from purejaxrl.reproduce import _compose_llm

    for loss in ("garl", "paft"):
        for k, v in (("top_k", 4), ("top_p", 0.9), ("min_p", 0.05)):
            cfg = _compose_llm(["mode=rl", f"loss={loss}", f"{k}={v}"])
            with pytest.raises(ConfigError, match=f"loss={loss} with {k}={v}.*no importance ratio"):
                validate_llm(cfg)
        validate_llm(_compose_llm(["mode=rl", f"loss={loss}"]))
    validate_llm(_compose_llm(["mode=rl", "loss=grpo", "top_p=0.9"]))  # the clipped losses sample filtered, as TRL


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_a_resume_with_a_sampling_or_reward_setting_changed_is_refused(tmp_path):
    """The newer trajectory settings are part of the identity too (checked before any compile)."""
    from purejaxrl.reproduce import _compose_llm

    cfg = {**_compose_llm(["mode=rl", "task=addition", "model=tiny", "iterations=1", "num_prompts=2",
                           "num_generations=2", "eval_prompts=4", "eval_every=1", "checkpoint_every=1"]),
           "progress": False, "compilation_cache": False}
    run_llm(cfg, tmp_path / "r")
    for k, v in (("top_p", 0.9), ("min_p", 0.1), ("steps_per_generation", 2), ("temperature", 0.7),
                 ("reward_weights", [2.0]), ("mask_truncated_completions", True)):
        with pytest.raises(ConfigError, match=k):
            run_llm({**cfg, "iterations": 2, "resume": True, k: v}, tmp_path / "r")


_NAN_GRAD_LOSS = "nan_gradient_test_loss"


def test_a_non_finite_gradient_with_a_finite_loss_stops_the_run(tmp_path):
    """sqrt at 0 has a finite value and an infinite derivative: the loss is 0, the gradient NaN.
    Before the gradient norm was checked the run went on with NaN parameters and saved them."""
    import jax.numpy as jnp

    from purejaxrl.llm import rl_losses as R
    from purejaxrl.reproduce import _compose_llm

    @R.register(_NAN_GRAD_LOSS)
    def _loss(x, hp, opts):
        return jnp.sqrt(0.0 * x["seq_logp"].sum()), {}

    try:
        cfg = {**_compose_llm(["mode=rl", "task=addition", "model=tiny", "iterations=3", "num_prompts=2",
                               "num_generations=2", "eval_prompts=4", "eval_every=1", "checkpoint_every=1"]),
               "progress": False, "compilation_cache": False, "loss": {"name": _NAN_GRAD_LOSS}}
        with pytest.raises(TrainingDiverged, match=r"seed 0\).*grad_norm is not finite at iteration 1; no checkpoint"):
            run_llm(cfg, tmp_path / "g")
    finally:
        R.REGISTRY.pop(_NAN_GRAD_LOSS, None)


def test_adamw_defaults_are_trls_and_a_bad_setting_is_refused_before_compile():
    from purejaxrl.llm.run import with_defaults

    d = with_defaults({})
    assert (d["adam_beta1"], d["adam_beta2"], d["adam_epsilon"]) == (0.9, 0.999, 1e-8)
    for k, v in (("adam_beta2", 1.0), ("adam_beta1", -0.1), ("adam_epsilon", 0.0)):
        with pytest.raises(ConfigError, match=k):
            validate_llm({**PREF, k: v})


def test_a_run_saved_before_the_adamw_settings_is_the_same_run_as_b2_0_99_only():
    """Runs recorded before the settings existed used b2 = 0.99: their saved config names no AdamW
    setting, and compares equal to 0.99 (a resume or a study's reuse goes on) and unequal to the new default."""
    from purejaxrl.llm.run import IDENTITY, with_defaults, with_later_defaults

    def ident(c):
        c = with_later_defaults(c)
        return {k: c.get(k) for k in IDENTITY}

    old = {k: v for k, v in with_defaults(PREF).items() if not k.startswith("adam_")}
    assert ident(old) == ident({**with_defaults(PREF), "adam_beta2": 0.99})
    assert ident(old) != ident(with_defaults(PREF))


@pytest.mark.slow
def test_adam_beta2_reaches_the_optimiser(tmp_path):
    """Adam's first step is sign-like whatever b2 is; from the second on, b2 changes the trajectory."""
    for b2 in (0.99, 0.999):
        run_llm({**PREF, "iterations": 3, "adam_beta2": b2}, tmp_path / str(b2))
    a, b = _rows(tmp_path / "0.99"), _rows(tmp_path / "0.999")
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], rel=1e-6)  # the same start
    assert a[2]["loss"] != pytest.approx(b[2]["loss"], rel=1e-6)
