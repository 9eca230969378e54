"""Meta-evolution throughput: seconds per generation and inner env steps/s of a population of whole
PPO (LPG) runs, beside one run of the same inner config measured in the same process (PPO-clip;
for LPG the ES's starting rule).

    python benchmarks/meta_throughput.py                          # experiment=meta_cartpole, 16 x 1
    python benchmarks/meta_throughput.py es.population=32 es.seeds_per_member=2
    python benchmarks/meta_throughput.py experiment=meta_ta_lpg es.population=16 algo.rule_hidden=64

The population's cost is compared with ``members × seeds`` separate runs: one compiled program
trains them all, so it should cost far less than that many single runs (compile time included).
Results go to ``benchmarks/results/meta_throughput_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import purejaxrl
from purejaxrl import objectives
from purejaxrl.config import run_grid
from purejaxrl.meta.es import PopulationFitness, make_strategy
from purejaxrl.meta.evolved import from_config
from purejaxrl.meta.run import inner_config, validate_meta
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--generations", type=int, default=3, help="timed generations after the first (compiling) one")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON file (default: benchmarks/results/meta_throughput[_<overrides>]_<platform>.json)")
    p.add_argument("--check", action="store_true",
                   help="validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    a = p.parse_args()
    if a.generations < 1:
        raise SystemExit(f"meta_throughput.py: error: --generations={a.generations} must be an integer >= 1")
    jax.config.update("jax_enable_compilation_cache", False)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from purejaxrl.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default = [] if any(x.startswith("experiment=") for x in a.overrides) else ["experiment=meta_cartpole"]
        cfg = OmegaConf.to_container(compose("meta", overrides=[*default, *a.overrides]), resolve=True)
    cfg.pop("hydra", None)
    if a.check:
        validate_meta(cfg)
        print(f"check: ok ({cfg['es']['population']} x {cfg['es']['seeds_per_member']} {cfg['algo']['name']} runs)")
        return
    es_cfg = cfg["es"]
    runs = es_cfg["population"] * es_cfg["seeds_per_member"]
    inner = {**inner_config(cfg), "es": es_cfg}

    # one run of the same inner config (PPO-clip; LPG: the starting rule): compile, then the best of two runs
    lpg = cfg["algo"]["name"] == "lpg"
    algo = build_algorithm(inner) if lpg else build_algorithm(inner, objective=objectives.BUILTIN["clip"])
    _, hp, _ = run_grid({**inner, "num_seeds": 1}, algo.HPARAMS)
    hp = batch_hparams(algo, hp, 1)
    tr = Trainer(algo, 1, chunks=1, num_evals=1)
    times_single = []
    for s in range(3):
        t = time.perf_counter()
        _, m = tr.chunk(tr.init(jax.random.PRNGKey(s)[None], hp), hp, 0)
        times_single.append(time.perf_counter() - t)
    single_first, single = times_single[0], min(times_single[1:])

    obj = from_config(cfg, key=jax.random.PRNGKey(1))
    fit = PopulationFitness(inner, obj)
    strategy = make_strategy(es_cfg, obj.params)
    params = strategy.default_params
    state = strategy.init(jax.random.PRNGKey(0), obj.params, params)
    times = []
    for g in range(a.generations + 1):
        t = time.perf_counter()
        pop, state = strategy.ask(jax.random.PRNGKey(2 * g), state, params)
        f, _ = fit(pop, jax.random.PRNGKey(2 * g + 1))
        state, _ = strategy.tell(jax.random.PRNGKey(2 * g + 2), pop, -jnp.asarray(f), state, params)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    steady = float(np.median(times[1:]))
    steps_run = fit.inner_env_steps // runs
    out = {
        "overrides": a.overrides,
        "population": es_cfg["population"],
        "seeds_per_member": es_cfg["seeds_per_member"],
        "inner_env_steps_per_run": steps_run,
        "first_generation_seconds_incl_compile": round(times[0], 2),
        "seconds_per_generation": round(steady, 2),
        "generations_per_hour": round(3600 / steady, 1),
        "inner_env_steps_per_second": round(fit.inner_env_steps / steady),
        "single_run_algo": cfg["algo"]["name"] + (f" ({obj.kind} at its start)" if lpg else " (PPO-clip)"),
        "single_run_seconds_incl_compile": round(single_first, 2),
        "single_run_seconds": round(single, 2),
        "single_run_env_steps_per_second": round(steps_run / single),
        "population_cost_in_single_runs": round(steady / single, 2),
        "runs_per_generation": runs,
        "platform": jax.devices()[0].platform,
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))
    name = "meta_throughput" + ("_" + "_".join(x.replace("=", "").replace(".", "") for x in a.overrides) if a.overrides else "")
    path = a.out or RESULTS / f"{name}_{out['platform']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
