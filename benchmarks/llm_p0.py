"""Initial success rates p0 per level of the cold-start task, counted, not assumed.

Trains the format warm-up (``purejaxrl llm sft task=cold_lock sft_target=format``: random digits of
the answer's length, then EOS — it teaches the format and no answer), then samples completions at
temperature 1 from the untrained model and from the warm-up, on training prompts of each level, and
counts the verifier's successes; p0 is successes / samples with a 95% Wilson interval (and a 95%
upper bound when nothing succeeded).

    python benchmarks/llm_p0.py                      # task=cold_lock, model=small, 300 warm-up steps
    python benchmarks/llm_p0.py --samples 400000 --warmup-iterations 500

Writes ``benchmarks/results/llm_p0_<task>_<model>.json`` (the warm-up run in
``benchmarks/results/llm_p0_warmup_<task>_<model>/``; its checkpoint is not kept in the repository, so a
fresh clone trains it again, with the settings of the llm_cold_lock study's seed-0 warm-up).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import jax

import purejaxrl
from purejaxrl.llm.model import ModelConfig, init_params
from purejaxrl.llm.run import _load_params, run_llm
from purejaxrl.llm.sampler import sample
from purejaxrl.llm.tasks import EOS, PAD, VOCAB, make_task
from purejaxrl.reproduce import _compose_llm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks") / "results"  # relative to ROOT: the warm-up's config.yaml records its run_dir


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def count(params, mcfg, task, level: int, samples: int, key, batch: int = 2048) -> dict:
    """Successes among ``samples`` completions (one per freshly drawn level-``level`` training prompt)."""
    only = make_task("combination_lock", levels=(level,), width=task.width, independent_maps=task.independent_maps)
    only.perms = task.perms  # the same maps as the mixed task

    @jax.jit
    def one(k):
        k1, k2 = jax.random.split(k)
        b = only.sample(k1, batch)
        comps, mask, _ = sample(params, mcfg, b.prompts, k2, max_new=task.max_new, stop_id=EOS, pad_id=PAD)
        # the mixed task's completion budget: a level-k answer must stop after k digits
        return only.reward(comps, mask, b).sum()

    hits, n = 0, 0
    for i in range((samples + batch - 1) // batch):
        hits += int(one(jax.random.fold_in(key, i)))
        n += batch
    lo, hi = wilson(hits, n)
    return {"successes": hits, "samples": n, "p0": hits / n, "ci95": [lo, hi],
            "upper95_if_zero": (1 - 0.05 ** (1 / n)) if hits == 0 else None, "ten_to_minus_k": 10.0 ** -level}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="cold_lock")
    ap.add_argument("--model", default="small")
    ap.add_argument("--samples", type=int, default=200_000, help="completions counted per level and model")
    ap.add_argument("--warmup-iterations", type=int, default=300)
    a = ap.parse_args()
    purejaxrl.keep_heap()
    os.chdir(ROOT)
    warm_dir = RESULTS / f"llm_p0_warmup_{a.task}_{a.model}"
    over = ["mode=sft", f"task={a.task}", f"model={a.model}", "sft_target=format", f"iterations={a.warmup_iterations}",
            "eval_every=100", "log_every=10", f"checkpoint_every={a.warmup_iterations}", "progress=false"]
    t0 = time.perf_counter()
    cfg = _compose_llm(over)
    from purejaxrl.checkpoint import Checkpointer

    if (warm_dir / "summary.json").exists() and Checkpointer.exists(warm_dir / "checkpoints"):
        done = json.loads((warm_dir / "summary.json").read_text())["iterations"]
        if done != a.warmup_iterations:
            raise SystemExit(f"{warm_dir} holds a {done}-iteration warm-up, not {a.warmup_iterations}: "
                             "delete it or pass --warmup-iterations " + str(done))
    else:
        run_llm({**cfg, "resume": "auto"}, warm_dir, overrides=over)
    warm_s = time.perf_counter() - t0
    task = make_task(cfg["task"]["name"], **(cfg["task"].get("kwargs") or {}))
    mcfg = ModelConfig(vocab_size=len(VOCAB), max_len=task.prompt_len + task.max_new, **cfg["model"])
    init = init_params(jax.random.fold_in(jax.random.PRNGKey(0), 0), mcfg)  # seed 0's untrained model
    models = {"untrained": init, "format_warmup": _load_params(str(warm_dir), init)}
    out = {"task": cfg["task"], "model": cfg["model"], "warmup": {"overrides": over, "run_dir": warm_dir.name,
                                                                   "seconds": warm_s},
           "samples_per_level": a.samples, "temperature": 1.0, "levels": {}}
    for name, params in models.items():
        out["levels"][name] = {}
        for lv in task.levels:
            t = time.perf_counter()
            r = count(params, mcfg, task, lv, a.samples, jax.random.PRNGKey(1000 + lv))
            r["seconds"] = time.perf_counter() - t
            out["levels"][name][str(lv)] = r
            print(name, lv, json.dumps(r), flush=True)
    path = RESULTS / f"llm_p0_{a.task}_{a.model}.json"
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
