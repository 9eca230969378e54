"""Every family's throughput benchmark, one command: each runs as its own fresh subprocess, and
their headline figures (compile seconds, steady-state throughput in each benchmark's own units) are
collected into one JSON and one markdown table.

    python benchmarks/suite.py --preset tiny                  # seconds each: checks that every benchmark runs
    python benchmarks/suite.py --preset cpu                   # the sizes of the docs' CPU figures (long)
    python benchmarks/suite.py --preset gpu --only pqn,ppo    # sizes meant to fill one modern GPU
    python benchmarks/suite.py --preset gpu --check           # every family's arguments and configs, no run

Writes ``<out>/suite_<preset>_<platform>.json`` and ``.md`` (``--out``, default ``benchmarks/results/``).
A family whose benchmark fails gets a row saying so (with the last line of its stderr) and the suite
exits non-zero after writing both files; a family whose optional extra is not installed (SAC / QARL
need the ``dmc`` extra) is reported as skipped.  The PyTorch part of ``llm_throughput.py`` is always
skipped here.  ``--check`` runs each benchmark with its own ``--check`` instead (arguments parsed,
configs composed and validated by the platform's rules, nothing of the benchmark compiled or timed;
seconds per family, no accelerator needed), writes nothing and exits non-zero if any family's preset
is refused: a preset is checked here before a device's minutes are spent on it.  It catches what
those rules and each benchmark's own argument checks know of, not what only a run finds (memory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Per-preset arguments of each family's benchmark (everything but ``--out``).
#   tiny: the smallest budgets that still run every code path (seconds each, apart from compiling);
#         the end-to-end test's preset.
#   cpu:  the defaults of each benchmark's documented command: the sizes of the docs' CPU figures.
#   gpu:  sizes meant to fill one modern GPU, the whole preset in about 8 minutes on one GPU (not
#         measured: no GPU was available when they were chosen).  The reasoning, per family: PQN and
#         PPO widen the env axis (1,024 and 2,048 envs: 64k / 262k steps per update) so a run is a few
#         hundred updates of large minibatches, ~10 s each of 2 repeats after a ~10 s compile; SAC /
#         QARL step 1,024 MJX envs per update (MJX compiles dominate, ~1-2 min for both); the offline
#         rows keep the paper's 4 x 512 networks and take batch 1,024 for 2,000 timed steps (~10 s each
#         on top of ~15 s of compile, three configurations); meta trains 64 members x 4 seeds = 256
#         PPO runs per generation (~2M inner env steps); the GRPO iteration is an ~8.4M-parameter model
#         (d 256, 8 layers) on 128 prompts x 16 completions; LLM meta 32 members x 4 seeds = 128 runs
#         of the default config; scaling runs 256 seeds on the one device.  Roughly 1 min per family
#         with process start-up and compiles, SAC / QARL and offline ~2 min: ~8 min in all.
PRESETS: dict[str, dict[str, list[str]]] = {
    "tiny": {
        "pqn": ["--repeats", "1", "algo.total_timesteps=4096", "algo.num_evals=2"],  # 2 updates of 32 x 64
        "ppo": ["--repeats", "1", "experiment=ppo_cartpole", "algo.total_timesteps=4096", "algo.num_evals=2"],  # 4 of 8 x 128
        "sac_qarl": ["throughput", "--env", "dmc_cartpole_balance", "--num-envs", "4", "--updates", "4"],
        "offline": ["--updates", "20", "--hidden", "32", "--layers", "2", "--batch", "32", "--episodes", "2"],
        "meta": ["--generations", "1", "es.population=4", "es.seeds_per_member=1", "algo.total_timesteps=1024"],
        "llm": ["--rounds", "1", "--d-model", "16", "--layers", "2", "--prompts", "8", "--completions", "4", "--no-torch"],
        "llm_meta": ["--rounds", "1", "es.population=4", "es.seeds_per_member=1", "iterations=2", "num_prompts=2",
                     "num_generations=2", "eval_prompts=4", "eval_every=2", "log_every=1", "checkpoint_every=2",
                     "warmup.iterations=2", "warmup.batch_size=4", "model.d_model=16", "model.d_mlp=64"],
        "scale": ["--seeds", "1", "--devices", "1", "--processes", "1", "--chunks", "64"],  # 2 of its 128 updates per chunk
    },
    "cpu": {
        "pqn": [],
        "ppo": ["experiment=ppo_cartpole"],
        "sac_qarl": ["throughput", "--env", "dmc_cartpole_balance", "--num-envs", "16"],
        "offline": [],
        "meta": [],
        "llm": ["--rounds", "2", "--no-torch"],
        "llm_meta": [],
        "scale": [],
    },
    "gpu": {
        "pqn": ["algo.num_envs=1024", "algo.total_timesteps=10000000"],
        "ppo": ["experiment=ppo_cartpole", "algo.num_envs=2048", "algo.total_timesteps=33554432"],
        "sac_qarl": ["throughput", "--env", "dmc_cartpole_balance", "--num-envs", "1024", "--updates", "200"],
        "offline": ["--updates", "2000", "--hidden", "512", "--layers", "4", "--batch", "1024", "--episodes", "200"],
        "meta": ["--generations", "3", "es.population=64", "es.seeds_per_member=4"],
        "llm": ["--rounds", "2", "--d-model", "256", "--layers", "8", "--prompts", "128", "--completions", "16", "--no-torch"],
        "llm_meta": ["--rounds", "2", "es.population=32", "es.seeds_per_member=4"],
        "scale": ["--seeds", "256", "--devices", "1", "--processes", "1"],
    },
}

ROOT = Path(__file__).resolve().parent.parent
# compile seconds are real: no persistent compilation cache (JAX_COMPILATION_CACHE_DIR) serves a benchmark
ENV = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}


def _min(xs):
    return min(x for x in xs if x is not None)


def _rows_throughput(r: dict) -> list[tuple]:
    t = r["train"]
    return [("raw env stepping, random actions", None, r["raw_env_steps_per_second"], "env steps/s"),
            (f"training, {t['runs']} seed, whole run under one jit", t["compile_seconds"], t["env_steps_per_second"],
             "env steps/s")]


def _rows_sac_qarl(r: dict) -> list[tuple]:
    rows = [(f"raw MJX stepping, {r['num_envs']} envs, zero actions", r["raw"]["compile_seconds"],
             r["raw"]["env_steps_per_second"], "env steps/s")]
    for algo in ("sac", "qarl"):
        x = r[algo]
        rows += [(f"{algo.upper()} update chunk", x["compile_seconds"], x["env_steps_per_second"], "env steps/s"),
                 (f"{algo.upper()} update chunk", None, x["gradient_steps_per_second"], "gradient steps/s")]
    return rows


def _rows_offline(r: dict) -> list[tuple]:
    return [(k, v["compile_seconds"], v["gradient_steps_per_second"], "gradient steps/s") for k, v in r["results"].items()]


def _rows_meta(r: dict) -> list[tuple]:
    gen = f"generation of {r['population']} x {r['seeds_per_member']} runs"
    return [(gen + " (compile s: the first generation)", r["first_generation_seconds_incl_compile"],
             r["seconds_per_generation"], "s per generation"),
            (gen + ", inner env steps", None, r["inner_env_steps_per_second"], "env steps/s"),
            ("one run of the same config, " + r["single_run_algo"] + " (compile s: with its compile)",
             r["single_run_seconds_incl_compile"], r["single_run_env_steps_per_second"], "env steps/s")]


def _rows_llm(r: dict) -> list[tuple]:
    m, b, rounds = r["model"], r["batch"], r["rounds"]
    what = f"GRPO iteration, d {m['d_model']} x {m['n_layers']} layers, {b['prompts']} x {b['generations']}"
    return [(what + ", prompts shared", r["iteration_compile_s"], _min(x["iteration_s"] for x in rounds), "s per iteration"),
            (what + ", prompts not shared", None, _min(x["iteration_without_prompt_sharing_s"] for x in rounds),
             "s per iteration"),
            ("sampling, KV cache", None, _min(x["sample_kv_cache_s"] for x in rounds), "s per batch"),
            ("sampling, no cache", None, _min(x["sample_no_cache_s"] for x in rounds), "s per batch")]


def _rows_llm_meta(r: dict) -> list[tuple]:
    gen = f"generation of {r['population']} x {r['seeds_per_member']} LLM RL runs"
    return [(gen + " (compile s: the first call)", r["generation_first_call_seconds"], r["generation_seconds_best"],
             "s per generation"),
            (gen + ", sampled tokens", None, r["population_sampled_tokens_per_second"], "sampled tokens/s"),
            ("one run of the same config (compile s: the first call)", r["single_run_first_call_seconds"],
             r["single_run_seconds_best"], "s per run")]


def _rows_scale(r: dict) -> list[tuple]:
    return [(f"PQN CartPole, {x['seeds']} seed{'s' * (x['seeds'] != 1)} on {x['devices']} device(s), {x['processes']} process(es)",
             x["compile_seconds"], x["env_steps_per_second"], "env steps/s") for x in r["rows"]]


# family: (benchmark script, what it measures, headline rows of its JSON)
FAMILIES = {
    "pqn": ("throughput.py", "PQN CartPole", _rows_throughput),
    "ppo": ("throughput.py", "PPO CartPole", _rows_throughput),
    "sac_qarl": ("qarl_experiments.py", "SAC / QARL on MJX", _rows_sac_qarl),
    "offline": ("offline_throughput.py", "QGF / FQL offline", _rows_offline),
    "meta": ("meta_throughput.py", "meta ES over PPO runs", _rows_meta),
    "llm": ("llm_throughput.py", "GRPO iteration", _rows_llm),
    "llm_meta": ("llm_meta_throughput.py", "LLM meta ES", _rows_llm_meta),
    "scale": ("scale_throughput.py", "scaling over devices", _rows_scale),
}
assert all(set(v) == set(FAMILIES) for v in PRESETS.values())


def missing_extra(family: str, args: list[str]) -> str | None:
    """Why a family cannot run here (its env's optional extra is not installed), or None."""
    if family != "sac_qarl":
        return None
    from envs.registry import missing_extra as env_missing  # find_spec only; no device is touched

    env = args[args.index("--env") + 1] if "--env" in args else "dmc_cartpole_balance"
    return env_missing(env)


def machine() -> dict:
    """Device, platform and versions, from a short subprocess (the suite itself never holds a device)."""
    code = ("import json, os, platform, jax; d = jax.devices()[0]; print(json.dumps({'device': str(d.device_kind), "
            "'platform': d.platform, 'device_count': jax.device_count(), 'cpu_count': os.cpu_count(), "
            "'processor': platform.processor() or platform.machine(), 'jax': jax.__version__}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        return {"device": None, "platform": "unknown", "cpu_count": os.cpu_count(), "jax": None,
                "error": (p.stderr.strip().splitlines() or [""])[-1]}
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "python": sys.version.split()[0]}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def run_family(family: str, args: list[str], tmp: Path) -> dict:
    script = FAMILIES[family][0]
    out = tmp / f"{family}.json"
    cmd = [sys.executable, f"benchmarks/{script}", *args, "--out", str(out)]
    # recorded without this machine's interpreter or temporary folder (the run used cmd)
    shown = ["python", f"benchmarks/{script}", *args, "--out", f"<tmp>/{family}.json"]
    rec = {"what": FAMILIES[family][1], "command": shown,
           "command_line": shlex.join(["python", f"benchmarks/{script}", *args]), "rows": []}
    reason = missing_extra(family, args)
    if reason:
        return {**rec, "status": "skipped", "reason": reason, "command": None, "wall_seconds": None, "returncode": None}
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV)
    rec.update(wall_seconds=round(time.perf_counter() - t, 2), returncode=p.returncode)
    if p.returncode:
        lines = [x for x in p.stderr.splitlines() if x.strip()] or ["(no stderr)"]
        return {**rec, "status": "failed", "reason": lines[-1].strip(), "stderr_tail": lines[-20:]}
    try:
        result = json.loads(out.read_text())
        rows = [dict(zip(("what", "compile_s", "steady", "unit"), r)) for r in FAMILIES[family][2](result)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {**rec, "status": "failed", "reason": f"its JSON could not be read: {type(e).__name__}: {e}"}
    bad = [r["what"] for r in rows if not _finite(r["steady"]) or not (r["compile_s"] is None or _finite(r["compile_s"]))]
    if bad:
        return {**rec, "status": "failed", "reason": f"a figure is not positive and finite: {bad[0]}", "rows": rows,
                "result": result}
    return {**rec, "status": "ok", "rows": rows, "result": result}


def _fmt(x) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Benchmark suite, preset `{res['preset']}`", "",
             f"{m.get('device')} ({m.get('platform')}, {m.get('cpu_count')} CPUs), JAX {m.get('jax')}; "
             f"{res['wall_seconds']:.0f} s in all.  compile s: compile time, or where a benchmark reports none "
             "apart, its first (compiling) call as the row says.", "",
             "| family | what | compile s | steady state | unit | command |", "|---|---|---|---|---|---|"]
    for fam, f in res["families"].items():
        cmd = f"`{f['command_line']}`"
        if f["status"] != "ok":
            lines.append(f"| {fam} | {f['what']}: **{f['status']}**: {f['reason'].replace('|', '/')} | – | – | – | {cmd} |")
            continue
        for r in f["rows"]:
            lines.append(f"| {fam} | {r['what']} | {_fmt(r['compile_s'])} | {_fmt(r['steady'])} | {r['unit']} | {cmd} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--only", default=None, help=f"comma-separated families (default: all): {','.join(FAMILIES)}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the JSON and markdown")
    p.add_argument("--check", action="store_true",
                   help="validate every family's arguments and configs at this preset; run nothing, write nothing")
    a = p.parse_args(argv)
    err = None
    if a.preset not in PRESETS:
        err = f"unknown preset {a.preset!r}; choose from {', '.join(PRESETS)}"
    elif a.only is not None:
        a.families = [x.strip() for x in a.only.split(",") if x.strip()]
        unknown = [x for x in a.families if x not in FAMILIES]
        if unknown or not a.families:
            err = (f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))} in --only; "
                   if unknown else "--only names no family; ") + f"choose from {', '.join(FAMILIES)}"
    else:
        a.families = list(FAMILIES)
    if err:
        print(f"suite.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    return a


def check_family(family: str, args: list[str]) -> dict:
    """The family's benchmark run with ``--check``: its arguments and configs validated, nothing timed."""
    script = FAMILIES[family][0]
    reason = missing_extra(family, args)
    if reason:
        return {"status": "skipped", "reason": reason}
    p = subprocess.run([sys.executable, f"benchmarks/{script}", *args, "--check"], capture_output=True, text=True,
                       cwd=ROOT, env=ENV)
    lines = [x.strip() for x in (p.stdout if p.returncode == 0 else p.stderr).splitlines() if x.strip()]
    if p.returncode or not lines or not lines[-1].startswith("check: ok"):
        # the exception's own line (a traceback may end in a hint), its module path dropped
        raised = [m.group(1) for x in lines if (m := re.match(r"^(?:[\w]+\.)*(\w*(?:Error|Exception): .*)$", x))]
        return {"status": "refused", "reason": (raised or lines or ["(no output)"])[-1]}
    return {"status": "ok", "reason": lines[-1].removeprefix("check: ok").strip().removeprefix("(").removesuffix(")")}


def check(a) -> int:
    status = {}
    for fam in a.families:
        r = check_family(fam, PRESETS[a.preset][fam])
        print(f"{fam}: {r['status']}: python benchmarks/{FAMILIES[fam][0]} {shlex.join(PRESETS[a.preset][fam])}"
              + (f" ({r['reason']})" if r["reason"] else ""), flush=True)
        status[fam] = r["status"]
    count = {k: [f for f, v in status.items() if v == k] for k in ("ok", "skipped", "refused")}
    line = (f"preset {a.preset}: {len(count['ok'])} of {len(status)} famil{'y' if len(status) == 1 else 'ies'} valid"
            + (f"; not checked (skipped): {', '.join(count['skipped'])}" if count["skipped"] else "")
            + (f"; not selected: {', '.join(f for f in FAMILIES if f not in status)}" if len(status) < len(FAMILIES) else ""))
    if count["refused"]:
        print(line, flush=True)
        print(f"suite.py: preset {a.preset} refused for: {', '.join(count['refused'])}", file=sys.stderr)
        return 1
    print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.check:
        return check(a)
    t0 = time.perf_counter()
    mach = machine()
    print(f"{mach.get('device')} ({mach.get('platform')}), preset {a.preset}: {', '.join(a.families)}", flush=True)
    families = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in a.families:
            print(f"{fam}: python benchmarks/{FAMILIES[fam][0]} {shlex.join(PRESETS[a.preset][fam])}", flush=True)
            families[fam] = f = run_family(fam, PRESETS[a.preset][fam], Path(tmp))
            wall = f" in {f['wall_seconds']:.1f} s" if f["wall_seconds"] is not None else ""
            print(f"  {f['status']}{wall}" + (f": {f['reason']}" if f["status"] != "ok" else ""), flush=True)
    res = {"preset": a.preset, "machine": mach, "wall_seconds": round(time.perf_counter() - t0, 1), "families": families}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"suite_{a.preset}_{mach['platform']}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    stem.with_suffix(".md").write_text(md)
    print(md + f"wrote {stem}.json and .md")
    failed = [k for k, f in families.items() if f["status"] == "failed"]
    if failed:
        print(f"suite.py: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
