"""benchmarks/suite.py: every family's throughput benchmark in one command (its tiny preset end to end,
bad input refused before anything runs, a failing family reported without losing the others)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "suite.py"


def load_suite():
    spec = importlib.util.spec_from_file_location("benchmark_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_suite(*args, timeout=60):
    return subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.parametrize("args,bad,valid", [(["--preset", "tiny", "--only", "pqn,nope"], "'nope'", "llm_meta"),
                                             (["--preset", "huge"], "'huge'", "tiny")])
def test_bad_input_is_refused_with_one_line(tmp_path, args, bad, valid):
    p = run_suite(*args, "--out", str(tmp_path))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and bad in lines[0] and valid in lines[0], p.stderr
    assert p.stdout == "" and not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_failed_and_skipped_families_are_reported(tmp_path, monkeypatch):
    suite = load_suite()
    monkeypatch.setitem(suite.PRESETS["tiny"], "scale", ["--no-such-option"])  # argparse refuses it at once
    monkeypatch.setattr(suite, "missing_extra", lambda fam, args: "needs the 'dmc' extra" if fam == "sac_qarl" else None)
    assert suite.main(["--preset", "tiny", "--only", "sac_qarl,scale", "--out", str(tmp_path)]) == 1
    (js,) = tmp_path.glob("suite_tiny_*.json")
    res = json.loads(js.read_text())
    fams = res["families"]
    assert fams["scale"]["status"] == "failed" and "--no-such-option" in fams["scale"]["reason"]
    assert fams["scale"]["returncode"] == 2 and "--out" in fams["scale"]["command"]
    assert fams["sac_qarl"]["status"] == "skipped" and "dmc" in fams["sac_qarl"]["reason"]
    md = js.with_suffix(".md").read_text()
    assert "**failed**" in md and "**skipped**" in md


def results_state() -> str:
    """What git sees of benchmarks/results/ (where each benchmark writes by default; studies' run folders aside):
    a check must leave it as it was."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "benchmarks/results",
                           ":(exclude)benchmarks/results/reproduce"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_gpu_preset_passes_its_check(tmp_path):
    """The preset no machine here can run is validated family by family (arguments, configs), nothing run or written."""
    before = results_state()
    p = run_suite("--preset", "gpu", "--check", "--out", str(tmp_path), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    suite = load_suite()
    for fam in suite.FAMILIES:
        (line,) = [x for x in lines if x.startswith(f"{fam}: ")]
        assert line.startswith(f"{fam}: ok: python benchmarks/{suite.FAMILIES[fam][0]}"), line
    assert lines[-1] == f"preset gpu: {len(suite.FAMILIES)} of {len(suite.FAMILIES)} families valid"
    assert not list(tmp_path.iterdir()) and results_state() == before


def test_check_refuses_a_bad_preset_naming_the_setting(tmp_path, monkeypatch, capsys):
    """Each refusal names its setting: a config the platform's validation refuses, a key Hydra cannot set, and
    each benchmark's own argument rules."""
    suite = load_suite()
    bad = {"pqn": ["algo.num_envs=0"],  # composes, refused by validation
           "ppo": ["experiment=ppo_cartpole", "algo.num_env=5"],  # misspelt: Hydra cannot set it
           "llm": ["--d-model", "20", "--no-torch"],  # 4 heads of width 5: the rotary embedding needs even widths
           "meta": ["es.population=63"],  # antithetic pairs need an even population
           "scale": ["--seeds", "16", "--devices", "3", "--processes", "1"],  # 16 runs do not split over 3 devices
           "sac_qarl": ["vs-brax", "--num-envs", "4", "--updates", "8", "--batch", "256"]}  # brax's replay condition
    for fam, args in bad.items():
        monkeypatch.setitem(suite.PRESETS["gpu"], fam, args)
    before = results_state()
    assert suite.main(["--preset", "gpu", "--only", ",".join([*bad, "offline"]), "--check", "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    line = {x.split(":")[0]: x for x in out.splitlines() if ": " in x}
    expect = {"pqn": "algo.num_envs=0 must be >= 1", "ppo": "ConfigCompositionException: Could not override 'algo.num_env'",
              "llm": "--d-model=20 must be a multiple of 8", "meta": "es.population=63",
              "scale": "--seeds 16 do not divide over 3 devices", "sac_qarl": "--batch 256"}
    for fam, fragment in expect.items():
        assert line[fam].startswith(f"{fam}: refused") and fragment in line[fam], line[fam]
    assert line["offline"].startswith("offline: ok")
    assert f"refused for: {', '.join(bad)}" in err
    assert not list(tmp_path.iterdir()) and results_state() == before


@pytest.mark.slow  # the whole tiny preset: several minutes on two cores (mostly SAC / QARL's MJX compiles)
def test_tiny_preset_end_to_end(tmp_path):
    p = run_suite("--preset", "tiny", "--out", str(tmp_path), timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (js,) = tmp_path.glob("suite_tiny_*.json")
    md = js.with_suffix(".md").read_text()
    res = json.loads(js.read_text())
    suite = load_suite()
    assert list(res["families"]) == list(suite.FAMILIES)
    m = res["machine"]
    assert m["device"] and m["platform"] and m["cpu_count"] and m["jax"]
    for fam, f in res["families"].items():
        assert f"| {fam} |" in md, fam
        if f["status"] == "skipped":
            continue
        assert f["status"] == "ok" and f["returncode"] == 0 and positive(f["wall_seconds"]), (fam, f.get("reason"))
        assert f["command"][0] == "python" and "--out" in f["command"]
        assert sys.executable not in json.dumps(f) and str(tmp_path) not in json.dumps(f)  # no machine paths
        assert f["rows"] and any(r["compile_s"] is not None for r in f["rows"]), fam
        for r in f["rows"]:
            assert positive(r["steady"]) and (r["compile_s"] is None or positive(r["compile_s"])), (fam, r)


ANCHORS = ROOT / "benchmarks" / "anchors.py"


def run_anchors(*args, timeout=60):
    return subprocess.run([sys.executable, str(ANCHORS), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_anchors_refuse_bad_input_with_one_line(tmp_path):
    for args, fragment in ((["--only", "pqn,nope"], "'nope'"),
                           (["--only", "pqn"], "--purejaxql PATH"),
                           (["--only", "ppo", "--purejaxrl", str(tmp_path)], "purejaxrl/ppo.py not found")):
        p = run_anchors(*args, "--out", str(tmp_path / "a.json"))
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and fragment in lines[0], p.stderr
        assert not (tmp_path / "a.json").exists()


def fake_checkouts(root: Path) -> tuple[Path, Path]:
    """Stand-ins for the two anchors' checkouts: their file layout and make_train, trivial programs."""
    ql, rl = root / "purejaxql", root / "purejaxrl"
    (ql / "purejaxql" / "config" / "alg").mkdir(parents=True)
    (ql / "purejaxql" / "__init__.py").write_text("")
    (ql / "purejaxql" / "config" / "config.yaml").write_text("NUM_SEEDS: 1\nSEED: 0\nalg: {}\n")
    (ql / "purejaxql" / "config" / "alg" / "pqn_cartpole.yaml").write_text("TOTAL_TIMESTEPS: 5e5\nLR: 0.5\n")
    (ql / "purejaxql" / "pqn_gymnax.py").write_text(
        "import jax\n\ndef make_train(config):\n"
        "    assert config['TOTAL_TIMESTEPS'] == 4096 and config['WANDB_MODE'] == 'disabled'\n"
        "    return lambda rng: jax.random.normal(rng, (3,)).sum() * config['LR']\n")
    (rl / "purejaxrl").mkdir(parents=True)
    (rl / "purejaxrl" / "ppo.py").write_text(
        "import jax\n\ndef make_train(config):\n    assert config['NUM_ENVS'] == 4 and config['TOTAL_TIMESTEPS'] == 1024\n"
        "    return lambda rng: jax.random.normal(rng, (3,)).sum() * config['LR']\n")
    return ql, rl


def load_anchors():
    spec = importlib.util.spec_from_file_location("benchmark_anchors", ANCHORS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_anchors_record_the_checkout_commit_and_a_command_without_machine_paths(tmp_path):
    anchors = load_anchors()
    ql, _ = fake_checkouts(tmp_path)
    assert anchors.checkout_commit(ql) is None  # not a git checkout
    git = ["git", "-C", str(ql), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *cmd], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert anchors.checkout_commit(ql) == head and len(head) == 40
    shown = anchors.shown_command(["--purejaxql", str(ql), "--purejaxrl=/x/rl", "--anchor-python", sys.executable,
                                   "--only", "pqn8", "--out", "benchmarks/results/a.json"])
    assert shown == ("python benchmarks/anchors.py --purejaxql '<purejaxql>' --purejaxrl '<purejaxrl>' "
                     "--anchor-python '<anchor-python>' --only pqn8 --out benchmarks/results/a.json")
    assert anchors.shown_command(["--out", str(tmp_path / "a.json")]).endswith("--out '<out>'")


@pytest.mark.slow
def test_anchors_pair_ours_with_an_anchor_read_from_its_checkout(tmp_path):
    """The harness's plumbing, with stand-in checkouts: each pair times both sides in fresh processes,
    alternating which goes first, and records the ratios."""
    ql, rl = fake_checkouts(tmp_path)
    out = tmp_path / "anchors.json"
    p = run_anchors("--only", "pqn,ppo", "--purejaxql", str(ql), "--purejaxrl", str(rl), "--rounds", "2", "--quick",
                    "--out", str(out), timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["quick"] is True and set(res["items"]) == {"pqn", "ppo"}
    for item in res["items"].values():
        assert len(item["pairs"]) == 2
        for pair in item["pairs"]:
            for side in ("ours", "anchor"):
                assert positive(pair[side]["compile_seconds"]) and positive(pair[side]["run_seconds"])
                # the compile split before XLA, and the optimised programs' size, counted alike on both sides
                assert 0 < pair[side]["trace_lower_seconds"] < pair[side]["compile_seconds"]
                assert isinstance(pair[side]["hlo_instructions"], int) and pair[side]["hlo_instructions"] > 0
            assert pair["run_ratio"] == round(pair["anchor"]["run_seconds"] / pair["ours"]["run_seconds"], 3)
    assert res["items"]["pqn"]["ours"]["overrides"][-1] == "algo.total_timesteps=4096"
    assert res["command"].startswith("python benchmarks/anchors.py --only pqn,ppo --purejaxql '<purejaxql>'")
    assert str(tmp_path) not in json.dumps(res) and res["items"]["pqn"]["anchor_commit"] is None  # not a git checkout


@pytest.mark.slow
def test_sgd_step_profile_times_every_part(tmp_path):
    out = tmp_path / "p.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sgd_step_profile.py"), "--steps", "5", "--repeats", "1",
                        "--hidden", "32", "--updates", "2", "--out", str(out), "--run-breakdown", "2",
                        "--run-overrides", "algo.total_timesteps=8192 algo.num_evals=4"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    (b,) = res["run_breakdown"]  # a whole run of 2 vmapped seeds: 4 updates of 2,048 env steps
    assert b["seeds"] == 2 and b["updates"] == 4 and b["num_evals"] == 4
    assert len(b["run_seconds"]) == len(b["run_one_test_seconds"]) == 1
    assert all(positive(v) for v in (*b["run_seconds"], *b["run_one_test_seconds"], b["update_ms"]))
    assert b["tests_seconds"] == round(b["best_run_seconds"] - b["best_run_one_test_seconds"], 3)
    assert b["rest_seconds"] == pytest.approx(b["best_run_one_test_seconds"] - b["updates_seconds"], abs=2e-3)
    assert b["updates_seconds"] == pytest.approx(4 * b["update_ms"] / 1e3, abs=1e-3)
    loop = res["in_loop"]
    assert set(loop["ms_per_update"]) == {"update", "collect", "collect_targets", "learn"}
    assert all(positive(v) for v in loop["ms_per_update"].values())
    assert loop["sgd_steps_per_update"] > 1 and loop["learn_ms_per_sgd_step"] == pytest.approx(
        loop["ms_per_update"]["learn"] / loop["sgd_steps_per_update"], abs=1e-3)
    for variant in ("default", "no_layer_norm", "adam"):
        ms = res[variant]["ms"]
        assert set(ms) == {"matmul", "forward", "forward_backward", "clip", "step"} and all(positive(v) for v in ms.values())
        assert res[variant]["minibatch"] == 128 and res[variant]["hidden"] == 32
    assert res["no_layer_norm"]["layer_norm"] is False and res["adam"]["optimizer"] == "adam"


@pytest.mark.slow
def test_compile_profile_splits_each_program(tmp_path):
    out = tmp_path / "c.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile_profile.py"), "experiment=ppo_cartpole",
                        "algo.num_envs=4", "algo.total_timesteps=4096", "--repeats", "1", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    for prog in ("init", "chunk", "one_program_no_eval"):
        part = res["best"][prog]
        assert positive(part["trace_lower_s"]) and positive(part["xla_compile_s"]) and part["hlo_instructions"] > 0
    total = res["best"]["trainer_total"]
    assert total["xla_compile_s"] == pytest.approx(res["best"]["init"]["xla_compile_s"] + res["best"]["chunk"]["xla_compile_s"], abs=2e-3)
