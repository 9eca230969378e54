"""Seconds per GRPO iteration of the platform's own compiled RL iteration (``make_rl_iteration``,
what ``purejaxrl llm rl`` runs) for a ~1M-parameter model (d 128, 4 layers, 4 heads, SwiGLU 512,
vocabulary 32) at 32 prompts × 16 completions, 7 prompt tokens + 8 new tokens, one AdamW step per
generation — with and without prompt sharing (``share_prompts``: each prompt prefilled and run
through the training forward once per group, or once per row), the KV-cache sampler beside the
naive one, and the plain PyTorch loop (``reference_torch_grpo.py``, when ``torch`` is installed:
``pip install -e ".[torch]"``), also with and without prompt sharing, all alternated in the same
run, ``--rounds`` times.  Both processes run with the same glibc heap settings (``keep_heap``: the
PyTorch process gets them as ``MALLOC_*`` variables; ``--torch-malloc default`` leaves its
allocator at glibc's defaults instead, and the file says which).

    python benchmarks/llm_throughput.py --rounds 2
    python benchmarks/llm_throughput.py --d-model 16 --layers 2 --no-torch --out small.json   # a quick check

``--d-model``/``--layers``/``--prompts``/``--completions`` resize the model (4 heads, SwiGLU 4 × d) and
the batch; the PyTorch reference runs only at the default sizes.  Each round also times the iteration's
unavoidable matrix products alone (``matmul_floor``: what no implementation can go below here).  Writes
``benchmarks/results/llm_grpo_throughput_<platform>.json`` (``--out``: another path).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import purejaxrl
from purejaxrl.llm import trainer as T
from purejaxrl.llm.model import ModelConfig, init_params, num_params
from purejaxrl.llm.sampler import sample, sample_no_cache
from purejaxrl.llm.tasks import Batch, Task

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs
purejaxrl.keep_heap()  # as purejaxrl llm runs

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


class ParityTask(Task):
    """Random 7-token prompts, 8 new tokens, reward = parity of the first token (cheap to verify)."""
    name, prompt_len, max_new = "parity", P, NEW

    def sample(self, key, n, test=False):
        prompts = jax.random.randint(key, (n, P), 3, 32)
        return Batch(prompts, jnp.zeros((n, 1), jnp.int32), jnp.zeros((n,), jnp.int32))

    def reward(self, completions, mask, batch):
        return (completions[:, 0] % 2).astype(jnp.float32)


def matmul_floor(cfg: ModelConfig, n_prompts: int, g: int, repeats: int = 5) -> dict:
    """Seconds of the matrix products one shared-prompt iteration cannot avoid, alone: the dense layers
    (attention in/out projections, SwiGLU in/out, the vocabulary head) over the tokens the sampler
    decodes (``NEW`` steps of ``n_prompts × g`` rows) and the prompts it prefills once per prompt, then
    the training forward (completion tokens per row, prompt tokens once per prompt) and its backward
    (two products per forward product).  Attention scores (sequences of ≤ 15 tokens) and elementwise
    work are left out, so this is below what any implementation of the iteration can reach here."""
    d, f, v = cfg.d_model, cfg.d_mlp, cfg.vocab_size
    shapes = [(d, 3 * d), (d, d), (d, 2 * f), (f, d)] * cfg.n_layers + [(d, v)]
    ws = [jax.random.normal(jax.random.PRNGKey(i), s) * 0.02 for i, s in enumerate(shapes)]
    rows_decode, rows_prefill = n_prompts * g, n_prompts * P
    rows_train = n_prompts * g * NEW + n_prompts * P

    def forward(xs, c, backward: bool):  # xs: an input of each width the layers read
        acc = c
        for w in ws:
            a = xs[w.shape[0]]
            y = a @ (w + c * 1e-9)
            acc = acc + y[0, 0]
            if backward:  # dX = dY·Wᵀ and dW = Xᵀ·dY
                acc = acc + (y @ w.T)[0, 0] + (a.T @ y)[0, 0]
        return acc

    def inputs(rows, seed):
        return {w: jax.random.normal(jax.random.PRNGKey(seed + w), (rows, w)) for w in {d, f}}

    xd, xp, xt = inputs(rows_decode, 1), inputs(rows_prefill, 2), inputs(rows_train, 3)

    def iteration(c):
        c = forward(xp, c, False)
        for _ in range(NEW):
            c = forward(xd, c, False)
        return forward(xt, c, True)

    fn = jax.jit(iteration)
    flops = 2 * sum(a * b for a, b in shapes) * (rows_prefill + NEW * rows_decode + 3 * rows_train)
    sec = timeit(fn, jnp.float32(0), repeats=repeats)
    return {"seconds": sec, "gflop": flops / 1e9, "gflop_per_s": flops / sec / 1e9,
            "rows": {"decode_per_step": rows_decode, "prefill": rows_prefill, "train": rows_train}}


def torch_round(malloc: str) -> dict | None:
    script = Path(__file__).resolve().parent / "reference_torch_grpo.py"
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if malloc == "same" and purejaxrl.keep_heap_enabled():
        env.update(purejaxrl.KEEP_HEAP_MALLOC_ENV)  # what keep_heap() set in this process, through glibc's variables
    out = subprocess.run([sys.executable, str(script), "--rounds", "1"], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--torch-malloc", choices=("same", "default"), default="same",
                    help="the PyTorch process's heap settings: the same as this process's (default) or glibc's own")
    ap.add_argument("--d-model", type=int, default=128, help="model width (4 heads, SwiGLU 4 x d_model)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=PROMPTS)
    ap.add_argument("--completions", type=int, default=G, help="completions per prompt")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference (skipped anyway at non-default sizes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON file (default: benchmarks/results/llm_grpo_throughput_<platform>.json)")
    ap.add_argument("--check", action="store_true",
                    help="validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    a = ap.parse_args()
    bad = [f"--{k.replace('_', '-')}={getattr(a, k)!r} must be an integer >= 1"
           for k in ("rounds", "d_model", "layers", "prompts", "completions") if getattr(a, k) < 1]
    if a.d_model % 8:
        bad.append(f"--d-model={a.d_model} must be a multiple of 8: 4 heads of even width (the rotary embedding)")
    if a.completions < 2:
        bad.append(f"--completions={a.completions}: GRPO's group advantage needs at least 2 completions per prompt")
    if bad:
        raise SystemExit(f"llm_throughput.py: error: {bad[0]}")
    if a.check:
        print(f"check: ok (d {a.d_model} x {a.layers} layers, {a.prompts} x {a.completions})")
        return
    n_prompts, g = a.prompts, a.completions
    default_sizes = (a.d_model, a.layers, a.prompts, a.completions) == (128, 4, PROMPTS, G)
    cfg = ModelConfig(vocab_size=32, d_model=a.d_model, n_layers=a.layers, n_heads=4, d_mlp=4 * a.d_model, max_len=P + NEW)
    params = init_params(jax.random.PRNGKey(0), cfg)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4))
    opt_state = opt.init(params)
    task = ParityTask()
    hp = {"beta": jnp.float32(0.0), "epsilon": jnp.float32(0.2), "epsilon_high": jnp.float32(0.2)}
    prompts = task.sample(jax.random.PRNGKey(1), n_prompts).prompts
    key = jax.random.PRNGKey(2)

    def iteration_fn(share: bool):
        settings = T.RLSettings(num_prompts=n_prompts, num_generations=g, loss="grpo", share_prompts=share)
        it = T.make_rl_iteration(task, cfg, settings, {"use_ref": False}, opt)
        return jax.jit(lambda p, o, k: it(p, o, p, k, hp, jnp.float32(jnp.nan))[:3])

    shared, unshared = iteration_fn(True), iteration_fn(False)
    t = time.perf_counter()
    shared.lower(params, opt_state, key).compile()
    compile_s = time.perf_counter() - t
    kv = jax.jit(lambda p, k: sample(p, cfg, prompts, k, max_new=NEW, stop_id=-1, pad_id=0, num_samples=g))
    naive = jax.jit(lambda p, k: sample_no_cache(p, cfg, jnp.repeat(prompts, g, 0), k, max_new=NEW, stop_id=-1, pad_id=0))
    rounds = []
    for _ in range(a.rounds):
        r = {"iteration_s": timeit(shared, params, opt_state, key),
             "iteration_without_prompt_sharing_s": timeit(unshared, params, opt_state, key),
             "sample_kv_cache_s": timeit(kv, params, key),
             "sample_no_cache_s": timeit(naive, params, key),
             "matmul_floor_s": matmul_floor(cfg, n_prompts, g)["seconds"]}
        tr = torch_round(a.torch_malloc) if default_sizes and not a.no_torch else None
        if tr is not None:
            r["pytorch"] = tr["rounds"][0]
            r["pytorch_version"], r["pytorch_threads"] = tr["torch"], tr["threads"]
            r["pytorch_malloc_env"] = tr["malloc_env"]
            r["pytorch_shared_vs_unshared_max_logit_gap"] = tr["shared_vs_unshared_max_logit_gap"]
            r["pytorch_shared_vs_unshared_max_relative_grad_gap"] = tr["shared_vs_unshared_max_relative_grad_gap"]
        print(json.dumps(r), flush=True)
        rounds.append(r)
    res = {
        "what": "make_rl_iteration (sample + reward + old log-probs + one AdamW step), best of 5 after a warm-up, "
                "rounds alternated with the PyTorch reference loop (benchmarks/reference_torch_grpo.py)",
        "model": {"params": num_params(params), "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                  "d_mlp": cfg.d_mlp, "vocab": 32},
        "batch": {"prompts": n_prompts, "generations": g, "prompt_tokens": P, "new_tokens": NEW},
        "machine": {"platform": jax.devices()[0].platform, "cpu_count": os.cpu_count(), "jax": jax.__version__},
        "iteration_compile_s": compile_s,
        "heap": {"jax": "keep_heap() " + ("on" if purejaxrl.keep_heap_enabled() else "off (PUREJAXRL_KEEP_HEAP=0)"),
                 "pytorch": a.torch_malloc},
        "rounds": rounds,
        "matmul_floor": {**matmul_floor(cfg, n_prompts, g), "what": " ".join(matmul_floor.__doc__.split())},
        "target_s": 0.2,
    }
    if all("pytorch" in r for r in rounds):  # like for like: best round of each, both sharing, both not
        best = lambda f: min(f(r) for r in rounds)  # noqa: E731
        res["like_for_like_s"] = {
            "with_prompt_sharing": {"jax": best(lambda r: r["iteration_s"]),
                                    "pytorch": best(lambda r: r["pytorch"]["shared"]["iteration_s"])},
            "without_prompt_sharing": {"jax": best(lambda r: r["iteration_without_prompt_sharing_s"]),
                                       "pytorch": best(lambda r: r["pytorch"]["unshared"]["iteration_s"])}}
    out = a.out or RESULTS / f"llm_grpo_throughput_{res['machine']['platform']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(out)


if __name__ == "__main__":
    main()
