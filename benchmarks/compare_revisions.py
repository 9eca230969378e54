"""Throughput of two checkouts of this project on the same config, measured alternately in one run.

    git worktree add ../before <commit>            # the revision to compare against
    python benchmarks/compare_revisions.py --before ../before --rounds 3

Each measurement is a fresh process that imports the package from one checkout and times the whole
run under one jit (``benchmarks/throughput.py``'s ``time_training`` of that checkout: compile seconds,
then the best of ``--repeats`` runs), so both revisions see the same machine state, round after
round.  Results go to ``benchmarks/results/<name>_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r"""
import importlib.util, json, sys
root = sys.argv[1]
sys.path.insert(0, root)
import jax
jax.config.update("jax_enable_compilation_cache", False)
spec = importlib.util.spec_from_file_location("tp", root + "/benchmarks/throughput.py")
tp = importlib.util.module_from_spec(spec); spec.loader.exec_module(tp)
import purejaxrl
assert purejaxrl.__file__.startswith(root), purejaxrl.__file__
cfg = tp.compose(json.loads(sys.argv[2]))
print("RESULT " + json.dumps(tp.time_training(cfg, int(sys.argv[3]))))
"""


def measure(root: Path, overrides: list[str], repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", CHILD, str(root), json.dumps(overrides), str(repeats)],
                       capture_output=True, text=True, cwd=root, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", default=[], help="Hydra overrides (default: the PQN CartPole default)")
    p.add_argument("--before", required=True, help="path of the other checkout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--name", default="pqn_cartpole_before_after")
    a = p.parse_args()
    overrides = ["num_seeds=1", *a.overrides]
    roots = {"before": Path(a.before).resolve(), "after": HERE.parent}
    rounds = []
    for r in range(a.rounds):
        row = {}
        for label, root in roots.items():
            row[label] = measure(root, overrides, a.repeats)
            print(f"round {r} {label}: compile {row[label]['compile_seconds']} s, run {row[label]['run_seconds']} s, "
                  f"{row[label]['env_steps_per_second']:,.0f} env steps/s", flush=True)
        row["speedup"] = round(row["before"]["run_seconds"] / row["after"]["run_seconds"], 3)
        rounds.append(row)
    import jax

    out = HERE / "results" / f"{a.name}_{jax.devices()[0].platform}.json"
    revs = {k: subprocess.run(["git", "-C", str(v), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
            for k, v in roots.items()}
    out.write_text(json.dumps({"overrides": overrides, "revisions": revs, "cpu_count": os.cpu_count(), "rounds": rounds}, indent=2))
    print(out)


if __name__ == "__main__":
    main()
