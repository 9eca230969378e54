"""Throughput of a training config: compile time and steady-state env steps/s, reported beside
the raw stepping rate of the same environment at the same env count, measured in the same process.

    python benchmarks/throughput.py                                    # PQN CartPole default
    python benchmarks/throughput.py --name ppo_cartpole experiment=ppo_cartpole
    python benchmarks/throughput.py --variants                         # + reference-style layouts

Results go to ``benchmarks/results/<name>_<platform>.json``.  Compilation caching is off so the
compile time is real.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import envs as _envs
import purejaxrl
from purejaxrl.config import compose, run_grid, validate
from purejaxrl.trainer import Trainer, build_algorithm

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs

RESULTS = Path(__file__).resolve().parent / "results"


def raw_env_rate(env, num_envs: int, num_steps: int, total_steps: int) -> float:
    """Env steps/s of random-action stepping (auto-reset included) in a compiled scan."""
    venv = _envs.VecEnv(env, num_envs)
    space = env.action_space
    n_iter = max(total_steps // (num_envs * num_steps), 1)

    @jax.jit
    def roll(key):
        obs, st = venv.reset(key)

        def step(c, _):
            st, key, acc = c
            key, ka, ks = jax.random.split(key, 3)
            a = jax.vmap(space.sample)(jax.random.split(ka, num_envs))
            obs, st, r, *_ = venv.step(ks, st, a)
            return (st, key, acc + r.sum()), None

        def chunk(c, _):
            return jax.lax.scan(step, c, None, num_steps)[0], None

        return jax.lax.scan(chunk, (st, key, jnp.float32(0)), None, n_iter)[0][2]

    roll(jax.random.PRNGKey(0)).block_until_ready()
    t = time.perf_counter()
    roll(jax.random.PRNGKey(1)).block_until_ready()
    return n_iter * num_envs * num_steps / (time.perf_counter() - t)


def hlo_instructions(compiled) -> int:
    """Instructions in a compiled program's optimised HLO (its size, as XLA compiled it)."""
    text = compiled.as_text() or ""
    return sum(1 for ln in text.splitlines() if " = " in ln and not ln.lstrip().startswith(("//", "HloModule")))


def time_training(cfg: dict, repeats: int = 2, vmap_single: bool = False, num_evals: int | None = None) -> dict:
    """Whole run under one jit (chunks=1): compile seconds, then the best of ``repeats`` runs."""
    algo = build_algorithm(cfg)
    runs, hp, seeds = run_grid(cfg, algo.HPARAMS)
    tr = Trainer(algo, len(runs), chunks=1, num_evals=num_evals, vmap_single=vmap_single)
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    best, final = float("inf"), None
    for _ in range(repeats):
        state = tr.init(keys, hp)
        jax.block_until_ready(state)
        compile_before = tr.compile_seconds
        t = time.perf_counter()
        state, m = tr.chunk(state, hp, 0)
        dt = time.perf_counter() - t - (tr.compile_seconds - compile_before)
        best = min(best, dt)
        final = m["eval_return"][:, -1].tolist()
    steps = algo.num_updates * algo.steps_per_update * len(runs)
    return {
        "runs": len(runs),
        "compile_seconds": round(tr.compile_seconds, 3),
        "trace_lower_seconds": round(tr.trace_lower_seconds, 3),  # of compile_seconds: before XLA
        "hlo_instructions": sum(hlo_instructions(c) for c in tr._compiled.values()),  # every program compiled
        "run_seconds": round(best, 3),
        "env_steps": steps,
        "env_steps_per_second": round(steps / best, 1),
        "final_eval_return": final,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=ppo_cartpole")
    p.add_argument("--name", default="pqn_cartpole")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", action="store_true", help="also time reference-style layouts and 8 seeds")
    p.add_argument("--out", type=Path, default=None, help="the JSON file (default: benchmarks/results/<name>_<platform>.json)")
    p.add_argument("--check", action="store_true",
                   help="validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    a = p.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)

    cfg = compose(["num_seeds=1", *a.overrides])
    if a.repeats < 1:
        raise SystemExit(f"throughput.py: error: --repeats={a.repeats} must be an integer >= 1")
    if "num_steps" not in cfg["algo"]:
        raise SystemExit(f"throughput.py: error: algo={cfg['algo']['name']} has no num_steps (a rollout length); this "
                         "benchmark times the on-policy trainers (algo=pqn, algo=ppo)")
    if a.check:
        validate(cfg)
        algo = build_algorithm(cfg)
        print(f"check: ok ({cfg['algo']['name']} on {cfg['env']['name']}, {algo.num_updates} updates)")
        return
    algo_cfg = cfg["algo"]
    env = _envs.make(cfg["env"]["name"], **(cfg["env"].get("kwargs") or {}))
    result = {
        "config": {"overrides": a.overrides, "algo": algo_cfg, "env": cfg["env"]["name"]},
        "machine": {
            "platform": jax.devices()[0].platform,
            "device": str(jax.devices()[0].device_kind),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "jax": jax.__version__,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        },
        "raw_env_steps_per_second": round(
            raw_env_rate(env, algo_cfg["num_envs"], algo_cfg["num_steps"], algo_cfg["total_timesteps"]), 1
        ),
    }
    print(f"raw env stepping: {result['raw_env_steps_per_second']:,.0f} steps/s", flush=True)
    result["train"] = time_training(cfg, a.repeats)
    print("train (1 seed, greedy tests on):", result["train"], flush=True)
    if a.variants:
        result["train_no_eval"] = time_training(cfg, a.repeats, num_evals=1)
        print("train, only the final greedy test:", result["train_no_eval"], flush=True)
        result["train_size1_vmap"] = time_training(cfg, a.repeats, vmap_single=True)
        print("train, seed axis vmapped even for one seed (reference layout):", result["train_size1_vmap"], flush=True)
        result["train_8_seeds"] = time_training({**cfg, "num_seeds": 8}, 1)
        print("train, 8 seeds vmapped:", result["train_8_seeds"], flush=True)
    out = a.out or RESULTS / f"{a.name}_{result['machine']['platform']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(out)


if __name__ == "__main__":
    main()
