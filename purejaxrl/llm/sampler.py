"""Jitted autoregressive sampling with a KV cache, temperature, top-k / top-p / min-p and stop tokens.

Prompts are left-padded to a common length with ``pad_id`` (masked out of attention); each
completion ends at its first stop token (kept, then padding), so completion lengths vary per
sequence while every shape stays fixed: no recompilation across iterations.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from purejaxrl.llm.model import ModelConfig, forward, init_cache


def _filter_logits(logits, temperature, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0):
    """Temperature, then top-k, top-p (nucleus: the smallest set of most likely tokens whose
    probability reaches ``top_p``; the token that crosses it is kept) and min-p (tokens with
    probability below ``min_p`` times the most likely one's are dropped), in that order (as
    Hugging Face's logits processors).  Dropped tokens get ``-1e30``."""
    logits = logits / jnp.maximum(temperature, 1e-6)
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -1e30, logits)
    if top_p < 1.0:
        srt = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(srt, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
        keep = before < top_p  # the most likely token is always kept
        cutoff = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -1e30, logits)
    if min_p > 0.0:
        probs = jax.nn.softmax(logits, axis=-1)
        logits = jnp.where(probs < min_p * probs.max(-1, keepdims=True), -1e30, logits)
    return logits


def _draw(key, logits, done, stop_id: int, pad_id: int):
    """Sample one token per sequence from (already filtered) ``logits``; finished sequences emit
    padding.  Returns ``(token, log_prob (0 where inactive), active, done)``."""
    tok = jax.random.categorical(key, logits)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tok[:, None], -1)[:, 0]
    active = jnp.logical_not(done)
    tok = jnp.where(active, tok, pad_id)
    return tok, jnp.where(active, logp, 0.0), active, jnp.logical_or(done, tok == stop_id)


@partial(jax.jit, static_argnames=("cfg", "max_new", "top_k", "top_p", "min_p", "stop_id", "pad_id", "num_samples"))
def sample(params, cfg: ModelConfig, prompts, key, *, max_new: int, temperature=1.0, top_k: int = 0, top_p: float = 1.0,
           min_p: float = 0.0, stop_id: int = -1, pad_id: int = 0, num_samples: int = 1):
    """Sample ``max_new`` tokens after each prompt, ``num_samples`` times per prompt.

    Returns ``(completions [B, max_new], mask [B, max_new], logps [B, max_new])`` with
    ``B = len(prompts) * num_samples`` (the samples of prompt ``i`` are rows ``i·n .. i·n+n-1``):
    ``mask`` marks generated tokens up to and including the stop token; ``logps`` are the
    log-probabilities of the sampled tokens under the (temperature / top-k / top-p / min-p filtered) sampling
    distribution.  With ``num_samples > 1`` each prompt is prefilled once and its KV cache copied.
    """
    N, P = prompts.shape
    B, S = N * num_samples, P + max_new
    valid = jnp.zeros((N, S), bool).at[:, :P].set(prompts != pad_id)
    logits, cache = forward(params, cfg, prompts, valid, init_cache(cfg, N, S), 0)
    if num_samples > 1:
        logits, valid = jnp.repeat(logits, num_samples, axis=0), jnp.repeat(valid, num_samples, axis=0)
        cache = jax.tree.map(lambda c: jnp.repeat(c, num_samples, axis=0), cache)

    def step(carry, t):
        last, cache, valid, done, key = carry
        key, k = jax.random.split(key)
        tok, logp, active, done = _draw(k, _filter_logits(last, temperature, top_k, top_p, min_p), done, stop_id, pad_id)
        valid = valid.at[:, P + t].set(True)
        lg_next, cache = forward(params, cfg, tok[:, None], valid, cache, P + t)
        return (lg_next[:, 0], cache, valid, done, key), (tok, active, logp)

    init = (logits[:, -1], cache, valid, jnp.zeros((B,), bool), key)
    _, (toks, mask, logps) = jax.lax.scan(step, init, jnp.arange(max_new))
    return toks.T, mask.T, logps.T


@partial(jax.jit, static_argnames=("cfg", "max_new", "stop_id", "pad_id"))
def sample_no_cache(params, cfg: ModelConfig, prompts, key, *, max_new: int, temperature=1.0, stop_id: int = -1, pad_id: int = 0):
    """The naive sampler: a full forward pass over the whole prefix for every new token
    (a baseline for benchmarks; same outputs as :func:`sample` without top-k)."""
    B, P = prompts.shape
    S = P + max_new
    tokens = jnp.concatenate([prompts, jnp.full((B, max_new), pad_id, prompts.dtype)], axis=1)
    valid = jnp.zeros((B, S), bool).at[:, :P].set(prompts != pad_id)

    def step(carry, t):
        tokens, valid, done, key = carry
        key, k = jax.random.split(key)
        logits, _ = forward(params, cfg, tokens, valid)
        lg = jax.lax.dynamic_index_in_dim(logits, P + t - 1, axis=1, keepdims=False) / temperature
        tok, logp, active, done = _draw(k, lg, done, stop_id, pad_id)
        tokens = tokens.at[:, P + t].set(tok)
        valid = valid.at[:, P + t].set(True)
        return (tokens, valid, done, key), (tok, active, logp)

    _, (toks, mask, logps) = jax.lax.scan(step, (tokens, valid, jnp.zeros((B,), bool), key), jnp.arange(max_new))
    return toks.T, mask.T, logps.T
