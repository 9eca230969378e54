"""LLM meta-evolution throughput: seconds per generation and sampled tokens/s of a population of whole
LLM RL runs (``purejaxrl llm meta``'s), beside one run of the same config (a population of one member
and one seed: the same compiled run) measured in the same process.

    python benchmarks/llm_meta_throughput.py                        # conf/llm/meta.yaml: 16 members x 2 seeds
    python benchmarks/llm_meta_throughput.py es.population=32 iterations=50

Each is timed after a first, compiling call (its time reported apart); the members' objectives are
ES perturbations of the starting one, and runs start from their seed's initialisation (the warm-up
only changes what is sampled, not how much). Results go to
``benchmarks/results/llm_meta_throughput_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import purejaxrl
from purejaxrl.config import CONF_DIR, compose
from purejaxrl.llm.meta import inner_config, validate_llm_meta
from purejaxrl.llm.population import Population
from purejaxrl.meta.es import make_strategy

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn, rounds: int):
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--rounds", type=int, default=2, help="timed calls after the first (compiling) one")
    p.add_argument("--out", default=None)
    p.add_argument("--check", action="store_true",
                   help="validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    a = p.parse_args()
    if a.rounds < 1:
        raise SystemExit(f"llm_meta_throughput.py: error: --rounds={a.rounds} must be an integer >= 1")
    jax.config.update("jax_enable_compilation_cache", False)
    cfg = {**compose(a.overrides, CONF_DIR / "llm", "meta"), "progress": False}
    validate_llm_meta(cfg)
    if a.check:
        print(f"check: ok ({cfg['es']['population']} x {cfg['es']['seeds_per_member']} runs of {cfg['iterations']} iterations)")
        return
    es = cfg["es"]
    P, S = int(es["population"]), int(es["seeds_per_member"])
    pop = Population(inner_config(cfg), stream="validation")
    start = pop.initial_objective(jax.random.PRNGKey(0))
    strategy = make_strategy(es, start)
    state = strategy.init(jax.random.PRNGKey(1), start, strategy.default_params)
    members, _ = strategy.ask(jax.random.PRNGKey(2), state, strategy.default_params)
    one = jax.tree.map(lambda x: np.asarray(x)[:1], members)

    gen_first, gen = _timed(lambda: pop(members, np.arange(S)), a.rounds)
    run_first, run = _timed(lambda: pop(one, np.arange(1)), a.rounds)
    tokens_run = pop.tokens_per_run
    res = {
        "config": {k: cfg[k] for k in ("iterations", "num_prompts", "num_generations", "model", "task")},
        "population": P, "seeds_per_member": S, "runs_per_generation": P * S,
        "sampled_tokens_per_run": tokens_run,
        "generation_first_call_seconds": gen_first, "generation_seconds": gen,
        "generation_seconds_best": min(gen),
        "population_sampled_tokens_per_second": P * S * tokens_run / min(gen),
        "single_run_first_call_seconds": run_first, "single_run_seconds": run, "single_run_seconds_best": min(run),
        "single_run_sampled_tokens_per_second": tokens_run / min(run),
        "population_vs_separate_runs": P * S * min(run) / min(gen),
        "device": str(jax.devices()[0].device_kind), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "jax": jax.__version__, "overrides": a.overrides,
    }
    out = Path(a.out) if a.out else RESULTS / f"llm_meta_throughput_{jax.default_backend()}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"generation ({P} x {S} runs of {cfg['iterations']} iterations): {min(gen):.1f} s (first call "
          f"{gen_first:.1f} s), {res['population_sampled_tokens_per_second']:.0f} sampled tokens/s; one run: "
          f"{min(run):.2f} s, {res['single_run_sampled_tokens_per_second']:.0f} tokens/s; the population costs "
          f"{res['population_vs_separate_runs']:.1f}x less than {P * S} separate runs -> {out}")


if __name__ == "__main__":
    main()
