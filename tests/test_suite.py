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
        assert f["command"][0] == sys.executable and "--out" in f["command"]
        assert f["rows"] and any(r["compile_s"] is not None for r in f["rows"]), fam
        for r in f["rows"]:
            assert positive(r["steady"]) and (r["compile_s"] is None or positive(r["compile_s"])), (fam, r)
