"""What a training config's compile time is made of: each program the trainer compiles (``init``,
the training ``chunk``), split into tracing + lowering to StableHLO and XLA's own compilation, with
the size of the optimised program (instructions in its HLO), beside the same config compiled the
way single-file references do it (one ``jax.jit`` of ``init`` + the whole scan, no evaluation cond).

    python benchmarks/compile_profile.py experiment=ppo_cartpole algo.num_envs=4   # anchors.py's PPO pair
    python benchmarks/compile_profile.py                                            # PQN CartPole default

Compilation caching is off.  Results go to ``benchmarks/results/compile_profile_<name>_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from throughput import hlo_instructions  # benchmarks/throughput.py (this script's own folder is on the path)

import purejaxrl
from purejaxrl.config import compose, run_grid
from purejaxrl.trainer import Trainer, build_algorithm

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs

RESULTS = Path(__file__).resolve().parent / "results"


def _split(fn, *args) -> dict:
    """Seconds to trace + lower, seconds for XLA to compile, and the optimised HLO's size."""
    t = time.perf_counter()
    lowered = fn.lower(*args)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    return {"trace_lower_s": round(lower_s, 3), "xla_compile_s": round(compile_s, 3),
            "hlo_instructions": hlo_instructions(compiled)}


def profile(cfg: dict, num_evals: int | None) -> dict:
    algo = build_algorithm(cfg)
    runs, hp, seeds = run_grid(cfg, algo.HPARAMS)
    tr = Trainer(algo, len(runs), chunks=1, num_evals=num_evals)
    keys = tr._maybe_squeeze(jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds]))
    hp_in = tr._maybe_squeeze(hp)
    out = {"init": _split(tr._init, keys, hp_in, tr.data)}
    state = tr._init(keys, hp_in, tr.data)
    out["chunk"] = _split(tr._chunk, state, hp_in, tr._start(0), tr.data, tr.updates_per_chunk, tr.needs_guard(0))
    # the single-program layout: init and the whole scan in one jit, no evaluation inside the scan
    single = tr.train_fn()
    if tr.batched:
        single = jax.vmap(single)
    out["one_program_no_eval"] = _split(jax.jit(single), keys, hp_in)
    out["trainer_total"] = {f: round(out["init"][f] + out["chunk"][f], 3) for f in ("trace_lower_s", "xla_compile_s")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--num-evals", type=int, default=1, help="evaluations in the chunk (anchors.py's PPO pair: 1)")
    p.add_argument("--repeats", type=int, default=2, help="fresh compiles per program (the best is kept)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    cfg = compose(["num_seeds=1", *a.overrides])
    rows = []
    for _ in range(a.repeats):
        jax.clear_caches()
        rows.append(profile(cfg, a.num_evals))
    best = {k: {f: min(r[k][f] for r in rows) for f in rows[0][k]} for k in rows[0]}
    name = next((o.split("=", 1)[1] for o in a.overrides if o.startswith("experiment=")), "pqn_cartpole")
    result = {"overrides": a.overrides, "num_evals": a.num_evals, "machine": {"platform": jax.devices()[0].platform,
              "cpu_count": os.cpu_count(), "jax": jax.__version__}, "repeats": rows, "best": best}
    out = a.out or RESULTS / f"compile_profile_{name}_{jax.devices()[0].platform}.json"
    out.write_text(json.dumps(result, indent=2))
    for k, v in best.items():
        print(k, v)
    print(out)


if __name__ == "__main__":
    main()
