"""``purejaxrl.keep_heap()`` (the glibc heap kept between calls; the LLM commands apply it),
measured against glibc's defaults in alternating fresh processes (this machine class is noisy: compare pairs only).

    python benchmarks/cpu_runtime_flags.py [--rounds 2]

Settings: ``default`` (heap kept between calls) and ``heap_released`` (``PUREJAXRL_KEEP_HEAP=0``,
glibc's defaults).  Workloads: PQN CartPole (1 seed, whole run), PPO CartPole (4 seeds, whole run) and the
GRPO train step of ``llm_throughput.py``.  Writes ``benchmarks/results/cpu_runtime_flags_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "default": {},
    "heap_released": {"PUREJAXRL_KEEP_HEAP": "0"},
}
CHILD = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import purejaxrl
purejaxrl.keep_heap()  # what purejaxrl llm does; a no-op under PUREJAXRL_KEEP_HEAP=0
import jax, jax.numpy as jnp
jax.config.update("jax_enable_compilation_cache", False)
from purejaxrl.config import compose
from throughput import time_training
out = {}
for name, over in [("pqn_cartpole", ["experiment=pqn_cartpole", "num_seeds=1"]),
                   ("ppo_cartpole", ["experiment=ppo_cartpole", "num_seeds=4"])]:
    r = time_training(compose(over), repeats=1)
    out[name] = {"compile_s": r["compile_seconds"], "run_s": r["run_seconds"]}
import optax
from purejaxrl.llm import losses as L
from purejaxrl.llm.model import ModelConfig, init_params, grouped_completion_logprobs
cfg = ModelConfig(vocab_size=32, d_model=128, n_layers=4, n_heads=4, d_mlp=512, max_len=15)
params = init_params(jax.random.PRNGKey(0), cfg)
opt = optax.adamw(1e-4); st = opt.init(params)
prompts = jax.random.randint(jax.random.PRNGKey(1), (32, 7), 3, 32)
comps = jax.random.randint(jax.random.PRNGKey(2), (512, 8), 3, 32)
mask = jnp.ones((512, 8), bool); rewards = (comps[:, 0] % 2).astype(jnp.float32)
@jax.jit
def step(p, s):
    def loss(p):
        lp = grouped_completion_logprobs(p, cfg, prompts, prompts != 0, comps, mask)
        return L.grpo_loss(lp, jax.lax.stop_gradient(lp), None, mask, rewards, 16, beta=0.0)
    g = jax.grad(loss)(p); u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s
jax.block_until_ready(step(params, st)); best = 1e9
for _ in range(5):
    t = time.perf_counter(); jax.block_until_ready(step(params, st)); best = min(best, time.perf_counter() - t)
out["llm_grpo_train_step"] = {"run_s": best}
print("RESULT" + json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    runs = {k: [] for k in SETTINGS}
    for r in range(a.rounds):
        for name, env in SETTINGS.items():
            proc = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parent.parent)
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
            if not line:
                raise SystemExit(proc.stderr[-2000:])
            res = json.loads(line[0][6:])
            runs[name].append(res)
            print(f"round {r} {name}: {res}", flush=True)
    summary = {name: {w: {k: [x[w][k] for x in rs] for k in rs[0][w]} for w in rs[0]} for name, rs in runs.items()}
    out = {"settings": SETTINGS, "rounds": a.rounds, "cpu_count": os.cpu_count(), "results": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_runtime_flags_cpu.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
