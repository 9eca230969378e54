"""A small decoder-only transformer: RoPE, pre-RMSNorm, SwiGLU, tied embeddings, KV cache.

Parameters are a plain pytree (``init_params``) and the forward pass is a pure function
(``forward``), so it sits inside scans, vmaps and custom losses without wrappers.  Q/K/V and the
gate/up projections are fused into single matrices (fewer, larger matmuls on CPU).

Attention masks come from absolute positions: a token at position ``p`` attends to cached keys at
positions ``<= p`` that are marked valid.  Left-padded prompts therefore need no per-sequence
position offsets (RoPE scores depend only on relative positions; padding keys are masked).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512
    max_len: int = 64
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def init_params(key: jax.Array, cfg: ModelConfig) -> dict:
    if cfg.d_model % cfg.n_heads:
        raise ValueError(f"d_model={cfg.d_model} must be divisible by n_heads={cfg.n_heads}")
    d, m, L = cfg.d_model, cfg.d_mlp, cfg.n_layers
    ks = jax.random.split(key, 5)

    def normal(k, shape, fan_in):
        return jax.random.normal(k, shape, jnp.float32) / jnp.sqrt(fan_in)

    return {
        "embed": jax.random.normal(ks[0], (cfg.vocab_size, d), jnp.float32) * 0.02,
        "layers": {  # stacked over layers: one scan over the layer axis
            "attn_norm": jnp.ones((L, d)),
            "wqkv": normal(ks[1], (L, d, 3 * d), d),
            "wo": normal(ks[2], (L, d, d), d) / jnp.sqrt(2.0 * L),
            "mlp_norm": jnp.ones((L, d)),
            "w_gate_up": normal(ks[3], (L, d, 2 * m), d),
            "w_down": normal(ks[4], (L, m, d), m) / jnp.sqrt(2.0 * L),
        },
        "final_norm": jnp.ones((d,)),
    }


def num_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def _rms_norm(x, scale, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rope(x, positions, base):
    """Rotary embedding on ``x [B, T, H, Dh]`` at absolute ``positions [T]``."""
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[:, None].astype(jnp.float32) * freqs[None]  # [T, half]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def init_cache(cfg: ModelConfig, batch: int, length: int) -> dict:
    shape = (cfg.n_layers, batch, length, cfg.n_heads, cfg.head_dim)
    return {"k": jnp.zeros(shape), "v": jnp.zeros(shape)}


def forward(params, cfg: ModelConfig, tokens, key_valid, cache=None, start=0):
    """Logits for ``tokens [B, T]`` placed at positions ``start .. start+T-1``.

    Without ``cache`` the keys are the tokens themselves (``key_valid [B, T]``).  With a cache
    (``init_cache``; ``key_valid [B, S]`` over its ``S`` slots) the new keys/values are written at
    ``start`` and the updated cache is returned as well.
    """
    B, T = tokens.shape
    positions = start + jnp.arange(T)
    # Activations stay 2-D ``[B*T, d]`` between attention blocks: XLA:CPU runs 2-D matmuls and
    # their gradients several times faster than the same products written over [B, T, d].
    x = params["embed"][tokens.reshape(-1)]
    S = T if cache is None else cache["k"].shape[2]
    key_pos = jnp.arange(S)
    mask = (key_pos[None, :] <= positions[:, None])[None] & key_valid[:, None, :]  # [B, T, S]
    H, Dh = cfg.n_heads, cfg.head_dim

    def layer(x, lp_and_cache):
        lp, kc, vc = lp_and_cache
        h = _rms_norm(x, lp["attn_norm"])
        qkv = (h @ lp["wqkv"]).reshape(B, T, 3, H, Dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = _rope(q, positions, cfg.rope_base), _rope(k, positions, cfg.rope_base)
        if kc is not None:
            kc = jax.lax.dynamic_update_slice(kc, k, (0, start, 0, 0))
            vc = jax.lax.dynamic_update_slice(vc, v, (0, start, 0, 0))
            k_all, v_all = kc, vc
        else:
            k_all, v_all = k, v
        scores = jnp.einsum("bthd,bshd->bhts", q, k_all) / jnp.sqrt(Dh)
        scores = jnp.where(mask[:, None], scores, -1e30)
        attn = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhts,bshd->bthd", attn, v_all).reshape(B * T, H * Dh)
        x = x + out @ lp["wo"]
        h = _rms_norm(x, lp["mlp_norm"])
        # two products with the halves of the fused weight: slicing a [B*T, 2m] product was ~2x slower
        gate, up = h @ lp["w_gate_up"][:, : cfg.d_mlp], h @ lp["w_gate_up"][:, cfg.d_mlp :]
        x = x + (jax.nn.silu(gate) * up) @ lp["w_down"]
        return x, (kc, vc)

    if cache is None:
        x, _ = jax.lax.scan(lambda c, lp: layer(c, (lp, None, None)), x, params["layers"])
        new_cache = None
    else:
        x, (kc, vc) = jax.lax.scan(layer, x, (params["layers"], cache["k"], cache["v"]))
        new_cache = {"k": kc, "v": vc}
    logits = (_rms_norm(x, params["final_norm"]) @ params["embed"].T).reshape(B, T, -1)
    return logits, new_cache


def token_logprobs(params, cfg: ModelConfig, tokens, valid):
    """``log π(tokens[:, t+1] | tokens[:, :t+1])`` for every position: ``[B, S-1]`` (full forward)."""
    logits, _ = forward(params, cfg, tokens, valid)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
