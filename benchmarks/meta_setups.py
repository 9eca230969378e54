"""PPO-clip and the untrained policy (lr = 0) in every setting of a meta-evaluation setup: where the
budgets of ``conf/meta_eval/NAME.yaml`` put PPO-clip between its floor and its ceiling.

    python benchmarks/meta_setups.py                                   # cartpole_transfer, meta_cartpole32
    python benchmarks/meta_setups.py --setup cartpole_transfer --experiment meta_cartpole32 --seeds 16

Each env is trained with the meta-training experiment's PPO settings updated by the setup's, at each
horizon (× the env's 1× budget, in whole updates), on ``--seeds`` seeds from their own key (not the
test seeds of ``meta-eval``).  Writes ``benchmarks/results/meta/setup_<setup>_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import purejaxrl
from purejaxrl import objectives
from purejaxrl.config import compose
from purejaxrl.meta.evaluate import final_returns, load_setup
from purejaxrl.meta.run import inner_config

purejaxrl.configure_cpu_runtime()
RESULTS = Path(__file__).resolve().parent / "results" / "meta"
SWEEP_SEED = 777  # a key of its own: neither meta-eval's test seeds nor any meta run's


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", default="cartpole_transfer")
    p.add_argument("--experiment", default="meta_cartpole32")
    p.add_argument("--horizons", default="0.25,0.5,1,2,4")
    p.add_argument("--seeds", type=int, default=16)
    a = p.parse_args()
    cfg = compose([f"experiment={a.experiment}"], config_name="meta")
    setup = load_setup(a.setup)
    rows = []
    for env, s in setup.items():
        env_cfg = cfg["env"] if env == cfg["env"]["name"] else {"name": env, "kwargs": {}}
        algo = {**cfg["algo"], **s["algo"]}
        per_update = int(algo["num_envs"]) * int(algo["num_steps"])
        for h in (float(x) for x in a.horizons.split(",")):
            steps = max(int(round((int(algo["total_timesteps"]) // per_update) * h)), 1) * per_update
            row = {"env": env, "horizon": h, "env_steps": steps, "bounds": s["bounds"]}
            for label, lr in (("clip", algo["lr"]), ("untrained", 0.0)):
                inner = {**inner_config(cfg), "env": env_cfg, "algo": {**algo, "total_timesteps": steps, "lr": lr}}
                t = time.perf_counter()
                r = np.asarray(final_returns(inner, objectives.builtin("clip"), a.seeds, seed=SWEEP_SEED))
                row[label] = {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()),
                              "max": float(r.max()), "per_seed": [float(x) for x in r],
                              "seconds": round(time.perf_counter() - t, 1)}
            rows.append(row)
            print(f"{env} x{h:g} ({steps} steps): PPO-clip {row['clip']['mean']:.2f} ± {row['clip']['std']:.2f}, "
                  f"untrained {row['untrained']['mean']:.2f}", flush=True)
    out = {"setup": a.setup, "experiment": a.experiment, "seeds": a.seeds, "seed_key": SWEEP_SEED,
           "platform": jax.devices()[0].platform, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"setup_{a.setup}_{out['platform']}.json"
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
