"""The hand-written baseline and the untrained policy (lr = 0) in every setting of a meta-evaluation
setup: where the budgets of ``conf/meta_eval/NAME.yaml`` put the baseline between its floor and its
ceiling.  The baseline is PPO-clip for PPO experiments, the LPG agent with the ``a2c`` rule for LPG ones
(``algo=lpg``: trained for the setting's whole budget, no random lifetime).

    python benchmarks/meta_setups.py                                   # cartpole_transfer, meta_cartpole32
    python benchmarks/meta_setups.py --setup cartpole_transfer --experiment meta_cartpole32 --seeds 16
    python benchmarks/meta_setups.py --setup gridworld_transfer --experiment meta_ta_lpg_small --horizons 0.05,0.25,1,2.5

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
from purejaxrl import objectives, update_rules
from purejaxrl.config import compose
from purejaxrl.meta.evaluate import final_returns, load_setup, setting_config

purejaxrl.configure_cpu_runtime()
RESULTS = Path(__file__).resolve().parent / "results" / "meta"
SWEEP_SEED = 777  # a key of its own: neither meta-eval's test seeds nor any meta run's


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", default="cartpole_transfer")
    p.add_argument("--experiment", default="meta_cartpole32")
    p.add_argument("--horizons", default="0.25,0.5,1,2,4")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--envs", default=None, help="only these envs of the setup (comma-separated); their rows replace "
                                                  "the same envs' rows of an existing results file")
    a = p.parse_args()
    cfg = compose([f"experiment={a.experiment}"], config_name="meta")
    setup = load_setup(a.setup)
    lpg = cfg["algo"]["name"] == "lpg"
    baseline, base_obj = ("a2c", update_rules.make_rule("a2c")) if lpg else ("clip", objectives.builtin("clip"))
    rows = []
    only = a.envs.split(",") if a.envs else list(setup)
    for env, s in setup.items():
        if env not in only:
            continue
        for h in (float(x) for x in a.horizons.split(",")):
            inner = setting_config(cfg, s, env, h)
            steps = inner["algo"]["total_timesteps"]
            row = {"env": env, "horizon": h, "env_steps": steps, "bounds": s["bounds"], "baseline": baseline}
            for label, lr in ((baseline, inner["algo"]["lr"]), ("untrained", 0.0)):
                lrs = {"lr": lr, **({"y_lr": 0.0 if lr == 0 else inner["algo"]["y_lr"]} if lpg else {})}
                run_cfg = {**inner, "algo": {**inner["algo"], **lrs}}
                t = time.perf_counter()
                r = np.asarray(final_returns(run_cfg, base_obj, a.seeds, seed=SWEEP_SEED))
                row[label] = {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()),
                              "max": float(r.max()), "per_seed": [float(x) for x in r],
                              "seconds": round(time.perf_counter() - t, 1)}
            rows.append(row)
            print(f"{env} x{h:g} ({steps} steps): {baseline} {row[baseline]['mean']:.2f} ± {row[baseline]['std']:.2f}, "
                  f"untrained {row['untrained']['mean']:.2f}", flush=True)
    out = {"setup": a.setup, "experiment": a.experiment, "seeds": a.seeds, "seed_key": SWEEP_SEED,
           "platform": jax.devices()[0].platform, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"setup_{a.setup}_{out['platform']}.json"
    if a.envs and path.exists():  # keep the other envs' rows
        old = json.loads(path.read_text())
        out["rows"] = [r for r in old["rows"] if r["env"] not in only] + rows
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
