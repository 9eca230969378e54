"""Ours beside the anchors, in one benchmark run: PQN against purejaxql and PPO against purejaxrl,
each pair timed back to back and the pairs alternated, because this machine class's run-to-run
variation (up to ~1.6x for the same program within an hour) is larger than the gaps measured.

    python benchmarks/anchors.py --purejaxql PATH --purejaxrl PATH --anchor-python PATH/bin/python

``--purejaxql`` / ``--purejaxrl`` are checkouts of the reference repositories
(github.com/mttga/purejaxql, github.com/luchris429/purejaxrl) that the user provides; their code is
imported from there, never copied here.  ``--anchor-python`` is an interpreter with the stack the
anchors pin (purejaxql: ``jax<=0.4.38``, ``gymnax==0.0.6``; used for both), so each side runs on its
own dependencies; it defaults to this interpreter.  Pointing it at an interpreter with *this* project's
JAX (plus the anchors' ``gymnax==0.0.6``, which needs ``gym``, and ``distrax``) times the anchors on the
same XLA as ours, which separates what the code costs from what the JAX version costs (the driver
restores the ``jax.tree_*`` aliases the anchors call and newer JAX removed).

Work items (``--only``, comma-separated; all by default):

- ``pqn``: PQN CartPole, the anchor's default config (``config/alg/pqn_cartpole.yaml``: 32 envs x 64
  steps, 4 epochs x 16 minibatches, 5e5 steps, a greedy test of 128 envs every 5 % of training), one
  seed, under ``jax.jit(jax.vmap(make_train(config)))`` as its ``single_run`` calls it.  Ours at the
  same config with ``algo.num_eval_envs=128`` (the anchor's TEST_NUM_ENVS).
- ``pqn8``: the same with 8 seeds vmapped on both sides.
- ``pqn_minatar``: PQN MinAtar Breakout (``config/alg/pqn_minatar.yaml`` with Breakout, ours
  ``experiment=pqn_minatar``), shortened to ``--minatar-steps`` env steps on both sides with the
  schedules still measured against 1e7 steps (TOTAL_TIMESTEPS_DECAY / total_timesteps_decay).
- ``ppo``: PPO CartPole at ``purejaxrl/ppo.py``'s own config (4 envs x 128 steps, 4 epochs x 4
  minibatches, 5e5 steps, no tests), under ``jax.jit(make_train(config))`` as its ``__main__`` runs
  it.  Ours at the same config (``experiment=ppo_cartpole algo.num_envs=4``) with one greedy test at
  the end (the fewest the trainer runs).

Each side is a fresh process that compiles ahead of time (timed: ``compile_seconds``) and then runs
the whole training once (timed: ``run_seconds``); compilation caching is off on both.  Writes
``<out>/anchors_<platform>.json`` (default ``benchmarks/results/``) with every pair and the median of
the per-pair ratios.  The anchors' modules import ``brax``, ``navix``, ``wandb`` and ``hydra`` at
import time; where one is not installed in the anchor interpreter it is replaced by an empty module
(the CartPole and MinAtar paths never call them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ("pqn", "pqn8", "pqn_minatar", "ppo")

# The anchor side: run under --anchor-python, argv = [checkout, work, json(options)]; prints one JSON line.
ANCHOR_DRIVER = r'''
import importlib, json, sys, time, types
checkout, work, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])


def stub(name, **attrs):
    """An empty stand-in for a module the measured path never calls, only where it is missing."""
    try:
        importlib.import_module(name)
    except Exception:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod


for name in ("wandb", "hydra", "navix", "safetensors", "safetensors.flax"):
    stub(name, load_file=None, save_file=None, main=lambda **k: (lambda f: f))
stub("brax"); stub("brax.envs"); stub("brax.envs.wrappers")
stub("brax.envs.wrappers.training", EpisodeWrapper=object, AutoResetWrapper=object)
sys.modules["brax"].envs = sys.modules["brax.envs"]

import jax
try:
    jax.config.update("jax_enable_compilation_cache", False)
except Exception:
    pass
# the anchors' code on a newer JAX (the same-stack comparison): the tree aliases it calls were removed
for name in ("map", "leaves", "flatten", "unflatten", "structure"):
    if not hasattr(jax, "tree_" + name):
        setattr(jax, "tree_" + name, getattr(jax.tree, name))
key = jax.random.PRNGKey(0)
if work.startswith("pqn"):
    from omegaconf import OmegaConf  # the anchor's own config loader (it reads 1e7 as a float; PyYAML does not)
    sys.path.insert(0, checkout)
    load = lambda path: OmegaConf.to_container(OmegaConf.load(path))  # noqa: E731
    base = load(f"{checkout}/purejaxql/config/config.yaml")
    base.pop("defaults", None)
    base.pop("alg", None)
    alg_file = "pqn_minatar" if work == "pqn_minatar" else "pqn_cartpole"
    config = {**base, **load(f"{checkout}/purejaxql/config/alg/{alg_file}.yaml")}
    config.update(opts.get("config", {}), WANDB_MODE="disabled", NUM_SEEDS=opts["seeds"])
    module = importlib.import_module("purejaxql." + ("pqn_minatar" if work == "pqn_minatar" else "pqn_gymnax"))
    fn = jax.jit(jax.vmap(module.make_train(config)))
    arg = jax.random.split(key, opts["seeds"])
else:
    sys.path.insert(0, f"{checkout}/purejaxrl")
    module = importlib.import_module("ppo")
    config = {"LR": 2.5e-4, "NUM_ENVS": 4, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 5e5, "UPDATE_EPOCHS": 4,
              "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "ENT_COEF": 0.01,
              "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh", "ENV_NAME": "CartPole-v1",
              "ANNEAL_LR": True, "DEBUG": False}
    config.update(opts.get("config", {}))
    fn = jax.jit(module.make_train(config))
    arg = key
t = time.perf_counter()
lowered = fn.lower(arg)
lower_s = time.perf_counter() - t
compiled = lowered.compile()
compile_s = time.perf_counter() - t
# the optimised program's size, counted as benchmarks/throughput.py counts ours
hlo = sum(1 for ln in (compiled.as_text() or "").splitlines() if " = " in ln and not ln.lstrip().startswith(("//", "HloModule")))
t = time.perf_counter()
jax.block_until_ready(compiled(arg))
run_s = time.perf_counter() - t
print(json.dumps({"compile_seconds": round(compile_s, 4), "trace_lower_seconds": round(lower_s, 4), "hlo_instructions": hlo,
                  "run_seconds": round(run_s, 6), "jax": jax.__version__}))
'''

# Our side: the project's own trainer, whole run under one jit, as benchmarks/throughput.py times it.
OURS_DRIVER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
jax.config.update("jax_enable_compilation_cache", False)
import purejaxrl
from purejaxrl.config import compose
purejaxrl.configure_cpu_runtime()
from throughput import time_training
opts = json.loads(sys.argv[2])
cfg = compose(opts["overrides"])
r = time_training(cfg, repeats=1, num_evals=opts.get("num_evals"))
print(json.dumps({"compile_seconds": r["compile_seconds"], "trace_lower_seconds": r["trace_lower_seconds"],
                  "hlo_instructions": r["hlo_instructions"], "run_seconds": r["run_seconds"], "jax": jax.__version__,
                  "platform": jax.devices()[0].platform, "final_eval_return": r["final_eval_return"]}))
'''


def work_items(minatar_steps: int) -> dict[str, dict]:
    """Per work item: the anchor's checkout flag and options, and our overrides."""
    return {
        "pqn": {"anchor": "purejaxql", "anchor_opts": {"seeds": 1},
                "ours": {"overrides": ["num_seeds=1", "algo.num_eval_envs=128"]}},
        "pqn8": {"anchor": "purejaxql", "anchor_opts": {"seeds": 8},
                 "ours": {"overrides": ["num_seeds=8", "algo.num_eval_envs=128"]}},
        "pqn_minatar": {"anchor": "purejaxql",
                        "anchor_opts": {"seeds": 1, "config": {"ENV_NAME": "Breakout-MinAtar",
                                                                "TOTAL_TIMESTEPS": minatar_steps}},
                        "ours": {"overrides": ["experiment=pqn_minatar", "num_seeds=1", "algo.num_eval_envs=128",
                                               f"algo.total_timesteps={minatar_steps}"]}},
        "ppo": {"anchor": "purejaxrl", "anchor_opts": {},
                "ours": {"overrides": ["experiment=ppo_cartpole", "num_seeds=1", "algo.num_envs=4"], "num_evals": 1}},
    }


def refuse(msg: str) -> None:
    """Bad input: one line naming the problem and the fix, before anything runs."""
    print(f"anchors.py: {msg}", file=sys.stderr)
    sys.exit(2)


def run_json(cmd: list[str], env: dict) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {tail}")
    return json.loads(lines[-1])


def checkout_commit(path: Path) -> str | None:
    """The anchor checkout's commit (None where it is not a git checkout): which version was timed."""
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def shown_command(argv: list[str]) -> str:
    """The command as run, with this machine's checkouts and interpreter (and an absolute --out) named by their flag."""
    out, i = ["python", "benchmarks/anchors.py"], 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in ("--purejaxql", "--purejaxrl", "--anchor-python", "--out"):
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            out += [flag, value if flag == "--out" and not Path(value).is_absolute() else f"<{flag.lstrip('-')}>"]
        else:
            out.append(argv[i])
        i += 1
    return shlex.join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--purejaxql", type=Path, help="a checkout of github.com/mttga/purejaxql (PQN anchor)")
    p.add_argument("--purejaxrl", type=Path, help="a checkout of github.com/luchris429/purejaxrl (PPO anchor)")
    p.add_argument("--anchor-python", default=sys.executable, help="the interpreter with the anchors' pinned stack")
    p.add_argument("--only", default=",".join(WORK), help=f"comma-separated work items from {', '.join(WORK)}")
    p.add_argument("--rounds", type=int, default=2, help="alternated pairs per work item")
    p.add_argument("--minatar-steps", type=int, default=1_000_000, help="env steps of the pqn_minatar pair")
    p.add_argument("--out", type=Path, default=None, help="the JSON file (default: benchmarks/results/anchors_<platform>.json)")
    p.add_argument("--quick", action="store_true",
                   help="a plumbing check, not a measurement: 2 updates' worth of env steps on both sides")
    a = p.parse_args()

    items = [w.strip() for w in a.only.split(",") if w.strip()]
    bad = [w for w in items if w not in WORK]
    if bad:
        refuse(f"--only: unknown work item {bad[0]!r}; choose from {', '.join(WORK)}")
    spec = work_items(a.minatar_steps)
    if a.quick:  # the same programs at a few thousand env steps (their compile dominates)
        for w, steps in (("pqn", 4096), ("pqn8", 4096), ("pqn_minatar", 8192), ("ppo", 1024)):
            spec[w]["anchor_opts"] = {**spec[w]["anchor_opts"], "config": {
                **spec[w]["anchor_opts"].get("config", {}), "TOTAL_TIMESTEPS": steps}}
            spec[w]["ours"] = {**spec[w]["ours"], "overrides": [*spec[w]["ours"]["overrides"], f"algo.total_timesteps={steps}"]}
    for w in items:
        flag = spec[w]["anchor"]
        path = getattr(a, flag)
        if path is None:
            refuse(f"{w}: give --{flag} PATH (a checkout of the anchor), or leave {w} out with --only")
        marker = path / ("purejaxql/pqn_gymnax.py" if flag == "purejaxql" else "purejaxrl/ppo.py")
        if not marker.is_file():
            refuse(f"--{flag} {path}: {marker.relative_to(path)} not found; give the repository's root")

    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory() as tmp:
        ours_py = Path(tmp) / "ours.py"
        ours_py.write_text(OURS_DRIVER)
        anchor_py = Path(tmp) / "anchor.py"
        anchor_py.write_text(ANCHOR_DRIVER)
        result = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "command": shown_command(sys.argv[1:]),
                  "rounds": a.rounds, "quick": a.quick,
                  "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
                  "items": {}}
        for w in items:
            s, pairs = spec[w], []
            checkout = str(getattr(a, s["anchor"]).resolve())
            for r in range(a.rounds):
                # alternate which side goes first, so a drift of the machine's speed hits both
                order = ("ours", "anchor") if r % 2 == 0 else ("anchor", "ours")
                pair = {}
                for side in order:
                    if side == "ours":
                        pair["ours"] = run_json([sys.executable, str(ours_py), str(ROOT / "benchmarks"),
                                                 json.dumps(s["ours"])], env)
                    else:
                        pair["anchor"] = run_json([a.anchor_python, str(anchor_py), checkout, w,
                                                   json.dumps(s["anchor_opts"])], env)
                pair["run_ratio"] = round(pair["anchor"]["run_seconds"] / pair["ours"]["run_seconds"], 3)
                pair["compile_ratio"] = round(pair["anchor"]["compile_seconds"] / pair["ours"]["compile_seconds"], 3)
                print(f"{w} round {r}: ours {pair['ours']['compile_seconds']:.1f} s compile + "
                      f"{pair['ours']['run_seconds']:.1f} s run, anchor {pair['anchor']['compile_seconds']:.1f} + "
                      f"{pair['anchor']['run_seconds']:.1f} s: run {pair['run_ratio']:.2f}x, "
                      f"compile {pair['compile_ratio']:.2f}x", flush=True)
                pairs.append(pair)
            result["items"][w] = {
                "anchor": s["anchor"], "anchor_commit": checkout_commit(getattr(a, s["anchor"])),
                "anchor_options": s["anchor_opts"], "ours": s["ours"], "pairs": pairs,
                "median_run_ratio": statistics.median(p["run_ratio"] for p in pairs),
                "median_compile_ratio": statistics.median(p["compile_ratio"] for p in pairs),
            }
    plat = next(iter(result["items"].values()))["pairs"][0]["ours"]["platform"]
    result["machine"]["platform"] = plat
    out = a.out or RESULTS / f"anchors_{plat}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(out)


if __name__ == "__main__":
    main()
