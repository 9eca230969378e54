"""Seconds per GRPO iteration for a ~1M-parameter model (d 128, 4 layers, 4 heads, SwiGLU 512,
vocabulary 32) at 32 prompts × 16 completions, 7 prompt tokens + 8 new tokens, one AdamW step per
generation — beside the naive no-cache sampler and the train step without prompt sharing, measured
in the same run.  The training forward runs each prompt once per group of 16 completions
(``grouped_completion_logits``, what ``purejaxrl llm rl`` does).

    python benchmarks/llm_throughput.py

Writes ``benchmarks/results/llm_grpo_throughput_<platform>.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from purejaxrl.llm import losses as L
from purejaxrl.llm.model import ModelConfig, grouped_completion_logprobs, init_params, num_params, token_logprobs
from purejaxrl.llm.sampler import sample, sample_no_cache

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS, G, P, NEW = 32, 16, 7, 8


def timeit(fn, *args, repeats=5):
    out = fn(*args)
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    cfg = ModelConfig(vocab_size=32, d_model=128, n_layers=4, n_heads=4, d_mlp=512, max_len=P + NEW)
    params = init_params(jax.random.PRNGKey(0), cfg)
    opt = optax.adamw(1e-4)
    opt_state = opt.init(params)
    B = PROMPTS * G
    prompts = jnp.repeat(jax.random.randint(jax.random.PRNGKey(1), (PROMPTS, P), 3, 32), G, axis=0)
    key = jax.random.PRNGKey(2)

    kv = lambda p, k: sample(p, cfg, prompts[::G], k, max_new=NEW, stop_id=-1, pad_id=0, num_samples=G)  # noqa: E731
    naive = lambda p, k: sample_no_cache(p, cfg, prompts, k, max_new=NEW, stop_id=-1, pad_id=0)  # noqa: E731

    def make_train_step(grouped: bool):
        @jax.jit
        def train_step(params, opt_state, tokens, valid, mask, old_logp, rewards):
            def loss_fn(p):
                if grouped:
                    logp = grouped_completion_logprobs(p, cfg, tokens[::G, :P], valid[::G, :P], tokens[:, P:], mask)
                else:
                    logp = token_logprobs(p, cfg, tokens, valid)[:, P - 1:]
                return L.grpo_loss(logp, old_logp, None, mask, rewards, G, beta=0.0)

            loss, g = jax.value_and_grad(loss_fn)(params)
            upd, opt_state = opt.update(g, opt_state, params)
            return optax.apply_updates(params, upd), opt_state, loss

        return train_step

    train_step = make_train_step(grouped=True)

    @jax.jit
    def iteration(params, opt_state, key):
        comps, mask, logps = kv(params, key)
        rewards = (comps[:, 0] % 2).astype(jnp.float32)  # a cheap verifiable reward
        tokens = jnp.concatenate([prompts, comps], 1)
        valid = jnp.concatenate([prompts != 0, mask], 1)
        return train_step(params, opt_state, tokens, valid, mask, logps, rewards)

    comps, mask, logps = kv(params, key)
    tokens = jnp.concatenate([prompts, comps], 1)
    valid = jnp.concatenate([prompts != 0, mask], 1)
    rewards = (comps[:, 0] % 2).astype(jnp.float32)
    res = {
        "model": {"params": num_params(params), "d_model": 128, "n_layers": 4, "n_heads": 4, "d_mlp": 512, "vocab": 32},
        "batch": {"prompts": PROMPTS, "generations": G, "prompt_tokens": P, "new_tokens": NEW},
        "machine": {"platform": jax.devices()[0].platform, "cpu_count": os.cpu_count(), "jax": jax.__version__},
        "sample_kv_cache_s": timeit(jax.jit(kv), params, key),
        "sample_no_cache_s": timeit(jax.jit(naive), params, key),
        "train_step_s": timeit(train_step, params, opt_state, tokens, valid, mask, logps, rewards),
        "train_step_ungrouped_s": timeit(make_train_step(grouped=False), params, opt_state, tokens, valid, mask, logps, rewards),
        "process_settings": {k: v for k, v in os.environ.items() if k.startswith(("PUREJAXRL_", "MALLOC_", "XLA_FLAGS"))},
    }
    t = time.perf_counter()
    iteration.lower(params, opt_state, key).compile()
    res["iteration_compile_s"] = time.perf_counter() - t
    res["iteration_s"] = timeit(iteration, params, opt_state, key)
    res["sampled_tokens_per_second"] = B * NEW / res["sample_kv_cache_s"]
    res["training_tokens_per_second"] = B * (P + NEW) / res["train_step_s"]
    res["kv_cache_speedup"] = res["sample_no_cache_s"] / res["sample_kv_cache_s"]
    for k, v in res.items():
        print(f"{k}: {v}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"llm_grpo_throughput_{res['machine']['platform']}.json"
    out.write_text(json.dumps(res, indent=2))
    print(out)


if __name__ == "__main__":
    main()
