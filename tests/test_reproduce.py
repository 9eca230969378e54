"""``purejaxrl reproduce``: study files checked before anything runs, verdicts computed from files
(hand-checked), selection on validation and reporting on test, the smoke tier of every shipped
study, the console script from an empty folder, and the README in step with the recorded reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as st

from purejaxrl import reproduce as R
from purejaxrl.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _study(tmp_path, **changes) -> dict:
    s = {"title": "toy", "paper": {"cite": "A. Author. A paper. 2026"}, "kind": "train", "base": ["algo=pqn"],
         "arms": {"a": {"overrides": ["algo.lr=0.001"]}, "b": {"overrides": ["algo.lr=0.002"]},
                  "c": {"overrides": ["algo.lr=0.003"]}, "best": {"choose": ["a", "b"]}},
         "metric": {"name": "return", "bounds": [0, 500]}, "tiers": {"smoke": {"seeds": 4}},
         "claims": [{"claim": "effect(a, b) > 0", "paper": "a beats b"},
                    {"claim": "mean(a) > 100", "paper": "a reaches 100"},
                    {"claim": "iqm(a) > iqm(c)", "paper": "a beats c"},
                    {"claim": "P(best > c) > 0.5", "paper": "the chosen one beats c"}]}
    s.update(changes)
    f = tmp_path / "toy.yaml"
    f.write_text(yaml.safe_dump(s, sort_keys=False))
    return R.load_study(str(f))


def _write_evals(out: Path, scores: dict) -> None:
    """Evaluation files as ``reproduce`` writes them: ``{arm: {split: [per seed]}}``."""
    (out / "evals").mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"study": "toy", "tier": "smoke", "seeds": 4}))
    for arm, splits in scores.items():
        for split, vals in splits.items():
            per_run = [{"run": i, "seed": i, "mean_return": v, "std_return": 0.0} for i, v in enumerate(vals)]
            (out / "evals" / f"{arm}_{split}.json").write_text(json.dumps(
                {"per_run": per_run, "mean": float(np.mean(vals)), "split": split, "index": 0, "episodes_per_run": 8}))


def test_claim_grammar():
    assert R.parse_claim("effect(x, y) > 0") == {"form": "effect", "arms": ["x", "y"], "direction": ">", "null": 0.0}
    assert R.parse_claim("effect(nash_mp_k4, sppo_k8) > -0.02")["null"] == -0.02
    assert R.parse_claim("mean(dpo_flip:0.2) < 475")["null"] == 475.0
    assert R.parse_claim("median(a@3e-4) > median(b)")["statistic"] == "median"
    assert R.parse_claim("P(a > b) < 0.5")["direction"] == "<"
    for bad in ("a beats b", "effect(a) > 0", "iqm(a) > mean(b)"):
        with pytest.raises(ConfigError):
            R.parse_claim(bad)


def test_study_file_errors_are_one_line_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="names arm 'zz'"):
        _study(tmp_path, claims=[{"claim": "effect(a, zz) > 0", "paper": "x"}])
    with pytest.raises(ConfigError, match="is not one of"):
        _study(tmp_path, claims=[{"claim": "a is better", "paper": "x"}])
    with pytest.raises(ConfigError, match="tiers must"):
        _study(tmp_path, tiers={"cpu": {"seeds": 2}})
    with pytest.raises(ConfigError, match="choose must list"):
        _study(tmp_path, arms={"a": {}, "best": {"choose": ["a", "nope"]}})
    with pytest.raises(ConfigError, match="metric.bounds"):
        _study(tmp_path, metric={"name": "return", "bounds": [5, 1]})
    with pytest.raises(ConfigError, match="unknown"):
        R.load_study("no_such_study")
    for name in R.list_studies():  # every shipped study is valid
        R.load_study(name)


def test_verdicts_are_computed_from_the_files_by_one_rule(tmp_path):
    study = _study(tmp_path)
    out = tmp_path / "out"
    a = [300.0, 320.0, 310.0, 330.0]
    b = [290.0, 300.0, 305.0, 310.0]
    c = [100.0, 120.0, 110.0, 130.0]
    # validation ranks b above a; test ranks a above b: the chosen arm is b, reported on test
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": a}, "b": {"validation": [2.0] * 4, "test": b},
                       "c": {"validation": [0.0] * 4, "test": c}})
    rep = R.make_report(study, out, "smoke")
    cl = {c_["claim"]: c_ for c_ in rep["claims"]}
    d = np.array(a) - np.array(b)
    e = cl["effect(a, b) > 0"]
    assert e["estimate"] == pytest.approx(d.mean())
    np.testing.assert_allclose(e["ci"], st.t.interval(0.95, 3, loc=d.mean(), scale=st.sem(d)))
    assert e["verdict"] == "supported"  # the interval [4.7, 23.8] excludes 0 on the claimed side
    m = cl["mean(a) > 100"]
    assert m["estimate"] == pytest.approx(315.0) and m["verdict"] == "supported" and m["null"] == 100.0
    assert cl["iqm(a) > iqm(c)"]["estimate"] == pytest.approx(np.mean([310, 320]) - np.mean([110, 120]))
    assert rep["arms"]["best"]["chosen"] == "b" and rep["arms"]["best"]["test"] == b
    assert rep["arms"]["best"]["validation_means"] == {"a": 1.0, "b": 2.0}
    p = cl["P(best > c) > 0.5"]
    assert p["estimate"] == 1.0  # every run of b above every run of c
    assert p["seeds"] == 4 and p["episodes_per_seed"] == 8
    # 4 runs per arm are too few for a bootstrap interval to mean 95%: no verdict from it
    for claim in ("iqm(a) > iqm(c)", "P(best > c) > 0.5"):
        assert cl[claim]["verdict"] == "inconclusive at 4 seeds" and "8 or more runs" in cl[claim]["note"]
    assert np.isnan(rep["arms"]["a"]["iqm_ci"]).all()
    md = (out / "report.md").read_text()
    assert "**supported**" in md and "→ b (on validation)" in md
    for f in ("report.json", "aggregate.png", "profile.png", "improvement.png"):
        assert (out / f).exists()
    # the other way round, and a difference the data cannot resolve
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": b}, "b": {"validation": [2.0] * 4, "test": a}})
    assert R.make_report(study, out, "smoke")["claims"][0]["verdict"] == "contradicted"
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": [1.0, 3.0, 2.0, 2.0]},
                       "b": {"validation": [2.0] * 4, "test": [2.0, 2.0, 1.0, 3.0]}})
    assert R.make_report(study, out, "smoke")["claims"][0]["verdict"] == "inconclusive at 4 seeds"
    # every seed the same difference: a t interval of no width is evidence only from 6 seeds on
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": [3.0, 4.0, 5.0, 6.0]},
                       "b": {"validation": [2.0] * 4, "test": [2.0, 3.0, 4.0, 5.0]}})
    c0 = R.make_report(study, out, "smoke")["claims"][0]
    assert c0["verdict"] == "inconclusive at 4 seeds" and "sign test" in c0["note"]
    # most runs of both arms at the metric's ceiling: said, not hidden
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": [500.0, 500.0, 500.0, 480.0]},
                       "b": {"validation": [2.0] * 4, "test": [500.0, 500.0, 470.0, 500.0]}})
    note = R.make_report(study, out, "smoke")["claims"][0]["note"]
    assert "3 of 4 runs of a and 3 of 4 runs of b sit at the metric's ceiling (500)" in note
    # a diverged run has no score: said in the note
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": [1.0, float("nan"), 2.0, 2.0]},
                       "b": {"validation": [2.0] * 4, "test": [2.0, 2.0, 1.0, 3.0]}})
    assert "1 run(s) have no score" in R.make_report(study, out, "smoke")["claims"][0]["note"]


def test_a_choice_at_the_edge_of_its_grid_is_said(tmp_path):
    arms = {"a": {"overrides": ["algo.lr=0.001"]}, "b": {"overrides": ["algo.lr=0.002"]},
            "c": {"overrides": ["algo.lr=0.003"]}, "best": {"choose": ["a", "b", "c"]}}
    study = _study(tmp_path, arms=arms, claims=[{"claim": "effect(best, a) > 0", "paper": "tuning helps"}])
    out = tmp_path / "out"
    test = [1.0, 2.0, 3.0, 4.0]
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": test}, "b": {"validation": [2.0] * 4, "test": test},
                       "c": {"validation": [3.0] * 4, "test": test}})
    rep = R.make_report(study, out, "smoke")
    assert rep["arms"]["best"]["chosen"] == "c" and rep["arms"]["best"]["chosen_at_edge"]
    assert "→ c (on validation; at the edge of its grid)" in (out / "report.md").read_text()
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": test}, "b": {"validation": [4.0] * 4, "test": test},
                       "c": {"validation": [3.0] * 4, "test": test}})
    assert not R.make_report(study, out, "smoke")["arms"]["best"]["chosen_at_edge"]


def test_a_five_task_run_scores_each_seed_by_its_mean_over_the_tasks(tmp_path):
    """``env.kwargs.task=all``: runs (task, seed); a seed's score is its mean over the five tasks
    (OGBench's number), the episodes behind it every task's."""
    out = tmp_path / "out"
    (out / "evals").mkdir(parents=True)
    succ = {(t, s): 0.1 * t + 0.01 * s for t in range(1, 6) for s in range(3)}
    for split in ("validation", "test"):
        per_run = [{"run": i, "seed": s, "env.task": t, "mean_return": 0.0, "std_return": 0.0}
                   for i, (t, s) in enumerate(succ)]
        (out / "evals" / f"a_{split}.json").write_text(json.dumps({
            "per_run": per_run, "guidance_weight": 1.0, "episodes_per_run": 50,
            "per_weight": [{"w": 1.0, "per_run_success": list(succ.values())}]}))
    sc = R._train_scores(out, "a", "success")
    assert sc["seeds"] == [0, 1, 2] and sc["tasks"] == [1, 2, 3, 4, 5] and sc["episodes"] == 250
    np.testing.assert_allclose(sc["test"], [0.3, 0.31, 0.32])


def test_grid_return_is_a_claim_metric_read_from_the_grid_files(tmp_path):
    """``metric: grid_return``: a study must say its grid; a claim on it reads
    ``<arm>_<split>_grid.json`` (per seed, the episodes behind a score every cell's); arms with
    evaluation-only overrides cannot use it."""
    claims = [{"claim": "effect(a, b) > 0", "paper": "x", "metric": "grid_return"}]
    with pytest.raises(ConfigError, match="needs a grid"):
        _study(tmp_path, claims=claims)
    with pytest.raises(ConfigError, match="mapping of mass"):
        _study(tmp_path, claims=claims, grid={"mass": "1:2:3", "nope": 1})
    with pytest.raises(ConfigError, match="eval: overrides"):
        _study(tmp_path, claims=claims, grid={"mass": "1:2:3"}, arms={"a": {"eval": ["algo.x=1"]}, "b": {}})
    study = _study(tmp_path, claims=claims, grid={"bodies": ["pole_1", "cart"], "mass": "0.1:2:3", "friction": "0.5:1.5:3"},
                   arms={"a": {}, "b": {}})
    assert R.grid_spec(study, {"grid": {"episodes": 2}}) == {"episodes": 2, "bodies": ["pole_1", "cart"],
                                                             "mass": "0.1:2:3", "friction": "0.5:1.5:3"}
    out = tmp_path / "out"
    (out / "evals").mkdir(parents=True)
    grid = {"a": [300.0, 310.0, 305.0], "b": [250.0, 270.0, 240.0]}
    for arm, vals in grid.items():
        for split, shift in (("validation", 1.0), ("test", 0.0)):
            (out / "evals" / f"{arm}_{split}_grid.json").write_text(json.dumps({
                "per_run": [{"run": i, "seed": i, "grid_return": v + shift} for i, v in enumerate(vals)],
                "cells": 9, "episodes_per_cell": 8}))
    sc = R._train_scores(out, "a", "grid_return")
    assert sc["seeds"] == [0, 1, 2] and sc["episodes"] == 72 and sc["test"] == grid["a"]
    assert sc["validation"] == [v + 1 for v in grid["a"]]
    r = R.evaluate_claim({"claim": "effect(a, b) > 0", "paper": "x"},
                         {k: R._train_scores(out, k, "grid_return") for k in grid}, "grid_return")
    d = np.asarray(grid["a"]) - np.asarray(grid["b"])
    assert r["estimate"] == pytest.approx(d.mean())
    half = st.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert r["ci"] == pytest.approx([d.mean() - half, d.mean() + half])


def test_a_tier_may_set_one_arms_budget(tmp_path):
    study = _study(tmp_path, tiers={"smoke": {"seeds": 2, "overrides": ["algo.total_timesteps=100"],
                                              "arm_overrides": {"a": ["algo.total_timesteps=50"]}}})
    spec = R.tier_spec(study, "smoke", None)
    over = R._train_overrides(study, spec, "a")
    assert over[-1] == "algo.total_timesteps=50" and over.index("algo.total_timesteps=100") < len(over) - 1
    assert "algo.total_timesteps=50" not in R._train_overrides(study, spec, "b")
    with pytest.raises(ConfigError, match="arm_overrides must map arms"):
        _study(tmp_path, tiers={"smoke": {"seeds": 2, "arm_overrides": {"zz": ["x=1"]}}})


def test_a_tier_may_run_a_subset_of_the_arms(tmp_path):
    study = _study(tmp_path, tiers={"smoke": {"seeds": 4, "arms": ["a", "b"]}, "cpu": {"seeds": 8}})
    small = R.for_tier(study, "smoke")
    assert set(small["arms"]) == {"a", "b", "best"}  # a chosen arm comes along when its candidates do
    assert [c["claim"] for c in small["claims"]] == ["effect(a, b) > 0", "mean(a) > 100"]
    assert len(small["claims_not_run"]) == 2
    assert R.for_tier(small, "smoke")["claims_not_run"] == small["claims_not_run"]  # cutting twice keeps the list
    assert R.for_tier(study, "cpu") is study
    with pytest.raises(ConfigError, match="tiers.smoke.arms keeps no claim"):  # a smoke tier that would test nothing
        _study(tmp_path, tiers={"smoke": {"seeds": 4, "arms": ["c"]}})


# minutes each: MuJoCo envs per task; two PPO policies to collect from; MJX compiles of three algorithms, their
# evaluations and grids; ES runs; a warm-up per seed before the LLM arms
# One study per kind is smoked by the test suites: RL in the quick suite; LLM (43 s with cold caches on
# 2 cores), the meta and offline studies in the slow step. The smoke tiers of the other shipped studies run the same kinds' code on
# other envs, tasks and arms (qarl's: 14.5 minutes with two workers on 2 cores, its MJX programs'
# compiles; QARL and RARL run through the console script, with the robustness grid and a fresh
# adversary, in tests/test_qarl.py). They are marked `studies` (python -m pytest -n auto -m studies;
# their tests took 27 minutes summed, each timed with two workers on 2 cores), beyond the CI's time;
# every tier of every study is composed and validated in the slow step.
QUICK_SMOKE = ("pqn_cartpole",)
SLOW_SMOKE = ("ta_lpo", "ta_lpg", "qgf_pendulum", "llm_meta", "llm_self_play")
# qarl_walker runs qarl's code paths on another MJX task (tens of minutes of compiles on 2 cores): its tiers are
# composed and validated below, its smoke tier is not run here
NOT_SMOKED = ("qarl_walker",)


@pytest.mark.slow
def test_every_tier_of_every_shipped_study_composes(tmp_path):
    """Every run of every tier (cpu and gpu included) composes into a valid config before anything runs."""
    for name in R.list_studies():
        study = R.load_study(name)
        for tier in study["tiers"]:
            cut = R.for_tier(study, tier)
            R._check_configs(cut, R.tier_spec(cut, tier, None), tmp_path / name / tier)


@pytest.mark.parametrize("name", [n if n in QUICK_SMOKE else
                                  pytest.param(n, marks=pytest.mark.slow if n in SLOW_SMOKE else pytest.mark.studies)
                                  for n in R.list_studies() if n not in NOT_SMOKED])
def test_smoke_tier_of_every_shipped_study(name, tmp_path):
    """Tiny budgets: the verdicts may be inconclusive; the mechanics may not fail."""
    rep = R.run_study(R.load_study(name), "smoke", out=tmp_path / name, log=lambda *_: None)
    assert rep["claims"] and all(c["verdict"] in ("supported", "contradicted") or c["verdict"].startswith("inconclusive")
                                 for c in rep["claims"])
    for arm in rep["arms"].values():
        assert len(arm["test"]) == len(arm["seeds"]) == rep["seeds"]
    text = (tmp_path / name / "report.md").read_text()
    assert "| claim | the paper says |" in text and (tmp_path / name / "aggregate.png").exists()
    # what results keep of each run: its evaluation rows (a meta run's: the held-out evaluations of the ES mean)
    kept = list((tmp_path / name / "runs").rglob("heldout.jsonl" if rep["kind"] == "meta" else "evaluations.jsonl"))
    assert kept and all(f.stat().st_size > 0 for f in kept)
    if rep["kind"] == "meta":  # what the verdicts average over: each ES seed's objective, per group and claim
        es = rep["per_es_seed"]
        assert set(es["arms"]) == {a for a, v in R.load_study(name)["arms"].items() if v["objective"] in
                                   R.load_study(name)["meta"]}
        assert es["effects"] and all(len(v) == es["es_seeds"] for v in es["effects"].values())
        assert "Per ES seed" in text


@pytest.mark.slow
def test_console_script_from_an_empty_folder(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "purejaxrl", "reproduce", *a], cwd=tmp_path,  # noqa: E731
                                    capture_output=True, text=True)
    r = run("pqn_cartpole", "--tier", "smoke")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "reproduce" / "pqn_cartpole" / "smoke"
    assert "verdict" in r.stdout and (out / "report.md").exists()
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    r = run("pqn_cartpole", "--tier", "smoke")  # nothing saved is lost
    assert r.returncode == 2 and "--reuse" in r.stderr and "Traceback" not in r.stderr
    r = run("pqn_cartpole", "--tier", "smoke", "--reuse")  # finished runs are reused, not retrained
    assert r.returncode == 0, r.stderr
    assert "training" not in r.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # a run deleted to redo it is retrained and evaluated again, not read from the old evaluation
    import shutil

    old_source = json.loads((out / "evals" / "pqn_test.json").read_text())["source"]
    shutil.rmtree(out / "runs" / "pqn")
    r = run("pqn_cartpole", "--tier", "smoke", "--reuse")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "evals" / "pqn_test.json").read_text())["source"] != old_source
    r = run("nonesuch")
    assert r.returncode == 2 and "valid: " in r.stderr and "pqn_cartpole" in r.stderr.split("valid: ")[1]
    r = run("--list")
    assert r.returncode == 0 and "pqn_cartpole" in r.stdout


def test_readme_and_docs_tables_are_the_recorded_reports():
    """Every ``<!-- reproduce:NAME -->`` block of the README and the docs pages is the table generated
    from ``benchmarks/results/reproduce/NAME/report.json`` (``summary``: every study's claims), and
    every recorded study is shown somewhere (``purejaxrl reproduce --readme`` rewrites them)."""
    results = ROOT / "benchmarks" / "results" / "reproduce"
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = {name for f in files for name in R.readme_blocks(f.read_text())}
    assert "summary" in R.readme_blocks((ROOT / "README.md").read_text())
    assert shown - {"summary"} == {p.name for p in results.iterdir() if (p / "report.json").exists()}
    for f in files:
        assert R.sync_readme(f, results, check=True) == [], f


def _meta_study(tmp_path, **changes) -> dict:
    s = {"title": "toy meta", "paper": {"cite": "A. Author. A paper. 2026"}, "kind": "meta",
         "meta": {"ta": ["experiment=meta_cartpole32", "objective=ta_lpo"]}, "eval_setup": "cartpole_transfer",
         "settings": {"near": ["cartpole@1"], "far": ["cartpole@2", "catch@1"]},
         "arms": {"ta": {"objective": "ta"}, "ta_no_time": {"objective": "ta", "ablation": True},
                  "clip": {"objective": "clip"}},
         "metric": {"name": "score", "bounds": [0, 1]}, "tiers": {"smoke": {"seeds": 2, "meta_seeds": 2}},
         "claims": [{"claim": "effect(ta, clip) > 0", "paper": "ta beats clip", "metric": "far"},
                    {"claim": "effect(ta, ta_no_time) > 0", "paper": "time helps"}]}
    s.update(changes)
    f = tmp_path / "toy_meta.yaml"
    f.write_text(yaml.safe_dump(s, sort_keys=False))
    return R.load_study(str(f))


def test_meta_study_scores_are_normalised_returns_averaged_over_settings_and_es_seeds(tmp_path):
    study = _meta_study(tmp_path)
    out = tmp_path / "out"
    (out / "evals").mkdir(parents=True)
    (out / "study.json").write_text(json.dumps({"study": "toy_meta", "tier": "smoke", "seeds": 2}))
    # cartpole bounds [0, 500], catch [-1, 1] (conf/meta_eval/cartpole_transfer.yaml)
    res = {"ta": {"cartpole@1|es0": [500, 250], "cartpole@1|es1": [0, 250], "cartpole@2|es0": [100, 200],
                  "cartpole@2|es1": [300, 400], "catch@1|es0": [1, -1], "catch@1|es1": [0, 0],
                  "catch@1|es2": [-1, -1]},  # an earlier run's third ES seed: not this tier's (meta_seeds 2)
           "clip": {"cartpole@1|es0": [250, 250], "cartpole@2|es0": [0, 500], "catch@1|es0": [-1, 1]}}
    res["ta_no_time"] = res["clip"]
    for arm, r in res.items():
        (out / "evals" / f"{arm}.json").write_text(json.dumps(
            {"seeds": 2, "results": {k: {"returns": v} for k, v in r.items()}}))
    far = R.arm_scores(study, out, "far")
    # ta, seed 0: cartpole@2 mean over ES seeds (100+300)/2/500 = 0.4, catch@1 ((1+0)/2 + 1)/2 = 0.75 -> 0.575
    np.testing.assert_allclose(far["ta"]["test"], [0.575, (0.6 + 0.25) / 2])
    np.testing.assert_allclose(far["clip"]["test"], [(0.0 + 0.0) / 2, (1.0 + 1.0) / 2])
    assert far["ta"]["episodes"] == 4 and far["clip"]["episodes"] == 2  # settings x ES seeds behind a score
    every = R.arm_scores(study, out)  # the study's metric: every setting
    np.testing.assert_allclose(every["ta"]["test"][0], np.mean([0.5, 0.4, 0.75]))


def test_a_meta_verdict_carried_by_one_es_run_is_not_decisive_and_runs_at_a_bound_are_counted(tmp_path):
    """Review of the ta_lpo study: its 'contradicted' rested on one of two ES runs (per ES run +0.010 and
    -0.165), and 41% of the runs behind its unseen-env claims sat at Acrobot's floor or Catch's ceiling
    unremarked. A decisive interval whose ES runs point different ways is now 'inconclusive: ES runs
    disagree', and a claim whose runs sit at a bound for a quarter or more says how many."""
    study = _meta_study(tmp_path, claims=[{"claim": "effect(ta, ta_no_time) > 0", "paper": "time helps", "metric": "near"},
                                          {"claim": "effect(ta, clip) > 0", "paper": "ta beats clip", "metric": "far"},
                                          {"claim": "effect(ta_no_time, clip) > 0", "paper": "agreeing runs", "metric": "near"}])
    out = tmp_path / "out"
    (out / "evals").mkdir(parents=True)
    (out / "study.json").write_text(json.dumps({"study": "toy_meta", "tier": "smoke", "seeds": 4}))
    # near (cartpole@1, bounds [0, 500]): ES run 0 of ta loses to its ablation by 0.1 on every seed, ES run 1
    # wins by 0.02 on average: the pooled interval is decisive (seeds -0.04 +- 0.01), the ES runs disagree
    res = {"ta": {"cartpole@1|es0": [100, 150, 200, 250], "cartpole@1|es1": [160, 215, 260, 305]},
           "ta_no_time": {"cartpole@1|es0": [150, 200, 250, 300], "cartpole@1|es1": [150, 200, 250, 300]},
           "clip": {"cartpole@1|es0": [120, 172, 220, 271]}}  # ta_no_time beats it by ~0.06 with both ES runs
    # far: catch@1 (bounds [-1, 1]) at the ceiling for ta's ES run 0 and for clip on three of four seeds
    for arm, es_runs in (("ta", 2), ("ta_no_time", 2), ("clip", 1)):
        for m in range(es_runs):
            res[arm][f"cartpole@2|es{m}"] = [300 + 10 * m, 310, 320, 330 + 7 * m]
            res[arm][f"catch@1|es{m}"] = [1, 1, 1, 0.5] if (arm == "clip" or m == 0) else [0.2, 0.4, 0.6, 0.0]
    for arm, r in res.items():
        (out / "evals" / f"{arm}.json").write_text(json.dumps(
            {"seeds": 4, "results": {k: {"returns": v} for k, v in r.items()}}))
    spec = {"seeds": 4, "meta_seeds": 2}
    rep_claims = [R.evaluate_claim(c, R.arm_scores(study, out, c["metric"]), c["metric"], [0, 1]) for c in study["claims"]]
    assert rep_claims[0]["verdict"] == "contradicted"  # what the pooled interval alone says
    assert rep_claims[2]["verdict"] == "supported"
    from purejaxrl.meta import study as meta_study

    pairs = [(c["claim"], c["metric"], *R.parse_claim(c["claim"])["arms"][:2]) for c in study["claims"]]
    report = {"per_es_seed": meta_study.per_es_seed(study, out, spec, pairs),
              "bound_hits": meta_study.bound_hits(study, out, spec)}
    np.testing.assert_allclose(report["per_es_seed"]["effects"]["effect(ta, ta_no_time) > 0 on near"], [-0.1, 0.02])
    assert report["bound_hits"]["catch@1"]["ta"] == {"floor": 0, "ceiling": 3, "runs": 8}
    assert report["bound_hits"]["catch@1"]["clip"] == {"floor": 0, "ceiling": 3, "runs": 4}
    R.meta_claim_checks(rep_claims, report, meta_study.settings(study, spec))
    assert rep_claims[0]["verdict"] == "inconclusive: ES runs disagree" and "-0.100, 0.020" in rep_claims[0]["note"]
    assert rep_claims[2]["verdict"] == "supported"  # its ES runs agree: the verdict stands
    # far: (3 + 3) of the (8 + 4) catch runs and none of the 12 cartpole@2 runs sit at a bound: 6 of 24 = 25%
    assert "6 of the 24 runs behind it (25%)" in rep_claims[1]["note"]
    # its ES runs give 0.0 (ta's first run equals clip there) and -0.14: a run with no effect does not agree
    assert rep_claims[1]["verdict"] == "inconclusive: ES runs disagree"


def test_an_open_above_range_normalises_without_a_ceiling(tmp_path):
    """MinAtar returns have a floor (0) but no ceiling: the setup's high end (the reference's PPO return)
    only normalises, so a return above it scores above 1 and is not counted at a bound."""
    from purejaxrl.meta import study as meta_study
    from purejaxrl.meta.evaluate import load_setup

    assert load_setup("minatar_transfer")["minatar_breakout"]["open_above"] is True
    assert "open_above" not in load_setup("cartpole_transfer")["cartpole"]  # old entries keep their keys
    bad = tmp_path / "bad.yaml"
    bad.write_text("envs: {catch: {bounds: [-1, 1], open_above: maybe}}")
    with pytest.raises(ConfigError, match="open_above"):
        load_setup(str(bad))
    study = _meta_study(tmp_path, eval_setup="minatar_transfer", settings={"far": ["minatar_breakout@1"]},
                        claims=[{"claim": "effect(ta, clip) > 0", "paper": "ta beats clip", "metric": "far"}],
                        metric={"name": "score"})
    out = tmp_path / "out"
    (out / "evals").mkdir(parents=True)
    hi = 50.0822
    for arm, es_runs in (("ta", 2), ("ta_no_time", 2), ("clip", 1)):
        (out / "evals" / f"{arm}.json").write_text(json.dumps({"seeds": 2, "results": {
            f"minatar_breakout@1|es{m}": {"returns": [0.0, 2 * hi]} for m in range(es_runs)}}))
    hits = meta_study.bound_hits(study, out, {"seeds": 2, "meta_seeds": 2})
    assert hits["minatar_breakout@1"]["ta"] == {"floor": 2, "ceiling": 0, "runs": 4}
    np.testing.assert_allclose(R.arm_scores(study, out, "far")["clip"]["test"], [0.0, 2.0])
    # marking an end open (or not) does not redo an evaluation; a changed training setting does
    entry = {"algo": {"lr": 0.01}, "bounds": [0, 50.0]}
    assert meta_study.same_source({"objective": "d", "setup": entry}, {"objective": "d", "setup": {**entry, "open_above": True}})
    assert not meta_study.same_source({"objective": "d", "setup": entry},
                                      {"objective": "d", "setup": {**entry, "algo": {"lr": 0.02}}})
    assert not meta_study.same_source(None, {"objective": "d", "setup": entry})
    # open below: the low end only normalises (a grid world's untrained return), so it is no floor
    both = tmp_path / "both.yaml"
    both.write_text("envs: {catch: {bounds: [-1, 1], open_below: true}}")
    study = _meta_study(tmp_path, eval_setup=str(both), settings={"far": ["catch@1"]},
                        claims=[{"claim": "effect(ta, clip) > 0", "paper": "p", "metric": "far"}], metric={"name": "score"})
    for arm, es_runs in (("ta", 2), ("ta_no_time", 2), ("clip", 1)):
        (out / "evals" / f"{arm}.json").write_text(json.dumps({"seeds": 2, "results": {
            f"catch@1|es{m}": {"returns": [-1.0, 1.0]} for m in range(es_runs)}}))
    assert meta_study.bound_hits(study, out, {"seeds": 2, "meta_seeds": 2})["catch@1"]["clip"] == \
        {"floor": 0, "ceiling": 1, "runs": 2}


def test_meta_study_file_errors(tmp_path):
    for changes, fragment in (({"settings": {"g": ["cartpole-1"]}}, "ENV@HORIZON"),
                              ({"settings": {"g": ["pendulum@1"]}}, "needs an entry with bounds"),
                              ({"arms": {"c": {"objective": "clip", "ablation": True}}}, "ablation applies"),
                              ({"arms": {"x": {"objective": "nope"}}}, "objective='nope'"),
                              ({"eval_setup": "nope"}, "setup='nope'"),
                              ({"metric": {"name": "return"}}, "use score")):
        with pytest.raises(ConfigError, match=fragment):
            _meta_study(tmp_path, **changes)
    bad = [{"claim": "effect(ta, clip) > 0", "paper": "p", "metric": "elsewhere"}]
    with pytest.raises(ConfigError, match="use a settings group"):
        _meta_study(tmp_path, claims=bad)


TINY_META = ["es.population=4", "es.eval_every=1", "es.eval_seeds=2", "objective.hidden=8", "algo.total_timesteps=1024",
             "algo.num_envs=4", "algo.num_steps=32", "algo.num_eval_envs=4"]


@pytest.mark.slow
def test_a_finished_meta_run_is_continued_when_the_tier_asks_for_more_generations(tmp_path):
    """A tier raised from 2 to 3 ES generations continues the finished runs (the rest of their config
    unchanged) rather than refusing them; asking for fewer than a run has is refused."""
    from purejaxrl.meta import study as meta_study

    tiny = TINY_META
    study = _meta_study(tmp_path, settings={"near": ["cartpole@1"]},
                        arms={"ta": {"objective": "ta"}, "clip": {"objective": "clip"}},
                        claims=[{"claim": "effect(ta, clip) > 0", "paper": "p"}])
    out, logs = tmp_path / "out", []
    spec = {"seeds": 2, "meta_seeds": 1, "meta_overrides": [*tiny, "es.generations=2"]}
    meta_study.run(study, spec, out, logs.append)
    meta_study.run(study, {**spec, "meta_overrides": [*tiny, "es.generations=3"]}, out, logs.append)
    assert any("continuing ta ES seed 0 from 2 to 3 generations" in line for line in logs)
    summary = json.loads((out / "runs" / "meta_ta_seed0" / "summary.json").read_text())
    assert summary["generations"] == 3 and summary["completed"]
    with pytest.raises(ConfigError, match="es.generations: the run has 3, the study asks for 2"):
        meta_study.run(study, spec, out, logs.append)


@pytest.mark.slow
def test_a_continuation_stopped_midway_is_finished_not_taken_as_complete(tmp_path, monkeypatch):
    """A continuation from 2 to 4 generations killed after generation 3 has saved es.generations=4 in
    config.yaml; the next study run must finish it to 4, not evaluate it at 3 as complete. Defect: the
    study read the finished count from config.yaml and skipped the run."""
    from purejaxrl.meta import run as meta_run
    from purejaxrl.meta import study as meta_study

    tiny = TINY_META
    study = _meta_study(tmp_path, settings={"near": ["cartpole@1"]},
                        arms={"ta": {"objective": "ta"}, "clip": {"objective": "clip"}},
                        claims=[{"claim": "effect(ta, clip) > 0", "paper": "p"}])
    out, logs = tmp_path / "out", []
    run_dir = out / "runs" / "meta_ta_seed0"
    meta_study.run(study, {"seeds": 2, "meta_seeds": 1, "meta_overrides": [*tiny, "es.generations=2"]}, out, logs.append)
    finished = (run_dir / "summary.json").read_text()
    more = {"seeds": 2, "meta_seeds": 1, "meta_overrides": [*tiny, "es.generations=4"]}
    keys = meta_run.generation_keys

    def killed_at_generation_3(master, g):
        if g == 3:
            raise KeyboardInterrupt
        return keys(master, g)

    monkeypatch.setattr(meta_run, "generation_keys", killed_at_generation_3)
    with pytest.raises(KeyboardInterrupt):
        meta_study.run(study, more, out, logs.append)
    monkeypatch.setattr(meta_run, "generation_keys", keys)
    assert not json.loads((run_dir / "summary.json").read_text())["completed"]  # marked while it runs
    (run_dir / "summary.json").write_text(finished)  # as a run killed by the old code left it
    meta_study.run(study, more, out, logs.append)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["generations"] == 4 and summary["completed"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4


def test_below_start_counts_the_seeds_an_arm_ends_under_its_start():
    from purejaxrl.reproduce import arms_table, below_start

    arm = lambda seeds, test: {"seeds": seeds, "test": test, "mean": 0.0, "mean_ci": [0, 0], "iqm": 0.0,  # noqa: E731
                               "iqm_ci": [0, 0], "episodes_per_seed": 10}
    report = {"metric": {"name": "test_x"}, "kind": "llm",
              "arms": {"start": arm([0, 1, 2], [0.5, 0.6, 0.7]), "a": arm([0, 1, 2], [0.4, 0.7, 0.7]),
                       "b": arm([1, 2], [0.1, 0.1])}}
    assert below_start(report) == {"a": (1, 3), "b": (2, 2)}  # a tie is not below
    assert "| 1 of 3 |" in arms_table(report) and "below its `start`" in arms_table(report)
    del report["arms"]["start"]
    assert below_start(report) == {} and "below" not in arms_table(report)
    report["arms"]["add_start"] = arm([0, 1], [0.0, 0.9])  # an arm family with its own start
    report["arms"]["add_x"] = arm([0, 1], [0.1, 0.2])
    assert below_start(report) == {"add_x": (1, 2)}


def test_a_claim_on_another_metric_gets_its_own_bounds_not_the_studys():
    """The study's metric.bounds describe its metric: a claim on a whole-run count must not be called
    'at the ceiling' of a [0, 1] pass rate."""
    from purejaxrl.reproduce import claim_bounds

    study = {"metric": {"name": "test_pass_at_1", "bounds": [0, 1]}}
    assert claim_bounds(study, {"claim": "effect(a, b) > 0"}) == [0, 1]
    assert claim_bounds(study, {"claim": "effect(a, b) > 0", "metric": "test_pass_at_1"}) == [0, 1]
    assert claim_bounds(study, {"claim": "effect(a, b) > 0", "metric": "train_successes_level3"}) is None
    assert claim_bounds(study, {"claim": "effect(a, b) > 0", "metric": "train_successes_level3", "bounds": [0, 9]}) == [0, 9]


def test_the_fresh_adversary_section_pairs_each_seed_and_says_which_attack_is_stronger(tmp_path):
    """``fresh_adversary:``: checked before anything runs; the report pairs each seed's return against the
    fresh adversary with its return against the co-trained one (fresh − co-trained, t interval; below 0 the
    fresh attack is the stronger), shows an arm without a co-trained adversary without an effect, and lists
    an arm not evaluated yet instead of failing."""
    with pytest.raises(ConfigError, match="fresh_adversary.arms must list arms"):
        _study(tmp_path, fresh_adversary={"arms": ["zz"]})
    with pytest.raises(ConfigError, match="run, not chosen"):  # a chosen arm has no run of its own
        _study(tmp_path, fresh_adversary={"arms": ["best"]})
    with pytest.raises(ConfigError, match="episodes=0 must be an integer"):
        _study(tmp_path, tiers={"smoke": {"seeds": 2, "fresh_adversary": {"episodes": 0}}})
    with pytest.raises(ConfigError, match="updates='long' must be auto"):
        _study(tmp_path, fresh_adversary={"arms": ["a"], "updates": "long"})
    with pytest.raises(ConfigError, match="a mapping of arms, episodes, updates"):
        _study(tmp_path, fresh_adversary={"arms": ["a"], "budget": 1})
    study = _study(tmp_path, fresh_adversary={"arms": ["a", "b", "c"], "episodes": 16},
                   tiers={"smoke": {"seeds": 3, "fresh_adversary": {"episodes": 4}}})
    spec = R.tier_spec(study, "smoke", None)
    assert R.fresh_adversary_spec(study, spec) == {"episodes": 4, "updates": "auto", "arms": ["a", "b", "c"]}
    assert R.fresh_adversary_spec(_study(tmp_path), spec) is None  # no arms attacked: no section
    assert R.fresh_adversary_spec(R.for_tier(_study(tmp_path, fresh_adversary={"arms": ["c"]}, tiers={
        "smoke": {"seeds": 2, "arms": ["a", "b"]}}), "smoke"), spec) is None  # the tier does not run c
    out = tmp_path / "out"
    (out / "evals").mkdir(parents=True)
    trained, fresh = [300.0, 200.0, 250.0], [280.0, 150.0, 251.0]
    (out / "evals" / "a_fresh_adversary.json").write_text(json.dumps({
        "per_run": [{"run": i, "seed": i, "no_adversary": 490.0, "trained_adversary": t, "fresh_adversary": f}
                    for i, (t, f) in enumerate(zip(trained, fresh))],
        "episodes_per_run": 4, "split": "test", "updates": 100, "learning_updates": 60, "co_trained_learning_updates": 60,
        "max_force": 0.25, "seconds": 90.0}))
    (out / "evals" / "b_fresh_adversary.json").write_text(json.dumps({
        "per_run": [{"run": i, "seed": i, "no_adversary": 480.0, "fresh_adversary": 100.0} for i in range(3)],
        "episodes_per_run": 4, "split": "test", "updates": 200, "max_force": 0.25}))
    a, b, c = R.fresh_adversary_summary(study, spec, out)
    d = np.asarray(fresh) - np.asarray(trained)  # -20, -50, +1
    half = st.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert a["effect"] == pytest.approx(d.mean()) and a["effect_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert a["fresh_stronger_seeds"] == 2 and a["verdict"] == "inconclusive at 3 seeds"
    assert a["trained_adversary_mean"] == pytest.approx(250.0) and a["fresh_adversary_mean"] == pytest.approx(227.0)
    assert b["trained_adversary"] is None and "effect" not in b and b["fresh_adversary_mean"] == 100.0
    assert c == {"arm": "c", "evaluated": False}
    table = R.fresh_adversary_table([a, b, c])
    assert "| a | 490.0 | 250.0 | 227.0 |" in table and "2 of 3 | **inconclusive at 3 seeds** | 60 / 60 | 0.25 |" in table
    assert table.rstrip().split("\n")[2].endswith("| 1.5 |")  # the fresh adversary's minutes
    assert "| b | 480.0 | – | 100.0 | – (no co-trained adversary) | – | – | – / – | 0.25 |" in table
    assert "| c | not evaluated yet" in table
    # a clearly stronger fresh attack on every seed is "supported"
    (out / "evals" / "a_fresh_adversary.json").write_text(json.dumps({
        "per_run": [{"run": i, "seed": i, "no_adversary": 490.0, "trained_adversary": 300.0 + i, "fresh_adversary": 100.0 + 2 * i}
                    for i in range(3)], "episodes_per_run": 4, "split": "test", "updates": 100, "max_force": 0.25}))
    assert R.fresh_adversary_summary(study, spec, out)[0]["verdict"] == "supported"


def test_a_subset_report_names_what_it_did_not_decide_and_each_arms_budget(tmp_path):
    """The report of a tier that runs some arms: the claims it leaves out keep their metric (two claims on the
    same arms differ only by it), an arm's tier budget is in the setup, and each statistics row names its claim
    as the claims table does."""
    claims = [{"claim": "effect(a, b) > 0", "paper": "a beats b"},
              {"claim": "effect(a, c) > 0", "paper": "a beats c"},
              {"claim": "effect(a, c) > 0", "paper": "a beats c on the other metric", "metric": "success"}]
    study = _study(tmp_path, claims=claims, arms={"a": {"overrides": ["algo.lr=0.001"]}, "b": {}, "c": {}},
                   tiers={"smoke": {"seeds": 4, "arms": ["a", "b"], "overrides": ["algo.total_timesteps=100"],
                                    "arm_overrides": {"a": ["algo.total_timesteps=50"]}}})
    out = tmp_path / "out"
    _write_evals(out, {"a": {"validation": [1.0] * 4, "test": [3.0, 4.0, 5.0, 6.0]},
                       "b": {"validation": [1.0] * 4, "test": [1.0, 2.0, 2.5, 3.0]}})
    rep = R.make_report(study, out, "smoke")
    assert rep["claims_not_run"] == ["effect(a, c) > 0", "effect(a, c) > 0 on `success`"]
    assert rep["arm_overrides"] == {"a": ["algo.total_timesteps=50"]}
    md = R.report_markdown(rep)
    assert "Not decided here (the arms they compare were not run for this report): `effect(a, c) > 0`, " \
           "`effect(a, c) > 0` on `success`." in md
    assert "- `a`: `algo.lr=0.001`; at this tier `algo.total_timesteps=50`" in md
    assert "- `effect(a, b) > 0`: mean over common seeds" in md
