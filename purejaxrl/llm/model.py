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
    if cfg.head_dim % 2:  # the rotary embedding rotates the head's two halves against each other
        raise ValueError(f"d_model={cfg.d_model} / n_heads={cfg.n_heads} gives heads of width {cfg.head_dim}: the rotary "
                         f"embedding needs an even head width; use a d_model that is a multiple of {2 * cfg.n_heads}")
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


def _mlp(x, lp, cfg: ModelConfig):
    """Pre-norm SwiGLU block with its residual on 2-D activations ``[rows, d]``."""
    h = _rms_norm(x, lp["mlp_norm"])
    # two products with the halves of the fused weight: slicing a [rows, 2m] product was ~2x slower
    gate, up = h @ lp["w_gate_up"][:, : cfg.d_mlp], h @ lp["w_gate_up"][:, cfg.d_mlp :]
    return x + (jax.nn.silu(gate) * up) @ lp["w_down"]


def init_cache(cfg: ModelConfig, batch: int, length: int) -> dict:
    """Keys and values, one ``[B, H, S, Dh]`` buffer per layer (a tuple, not a stacked array: the
    decoding step updates each in place instead of slicing and re-stacking a [L, ...] array)."""
    shape = (batch, cfg.n_heads, length, cfg.head_dim)
    return {"k": tuple(jnp.zeros(shape) for _ in range(cfg.n_layers)),
            "v": tuple(jnp.zeros(shape) for _ in range(cfg.n_layers))}


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
    S = T if cache is None else cache["k"][0].shape[2]
    key_pos = jnp.arange(S)
    mask = (key_pos[None, :] <= positions[:, None])[None] & key_valid[:, None, :]  # [B, T, S]
    H, Dh = cfg.n_heads, cfg.head_dim

    def layer(x, lp_and_cache):
        lp, kc, vc = lp_and_cache
        h = _rms_norm(x, lp["attn_norm"])
        qkv = (h @ lp["wqkv"]).reshape(B, T, 3, H, Dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = _rope(q, positions, cfg.rope_base), _rope(k, positions, cfg.rope_base)
        kv = "bshd"  # key/value layout: the layer's own [B, T, H, Dh], or the cache's [B, H, S, Dh]
        if kc is not None:  # (transposing the uncached keys instead cost the full forward 5-10%)
            kc = jax.lax.dynamic_update_slice(kc, k.transpose(0, 2, 1, 3), (0, 0, start, 0))
            vc = jax.lax.dynamic_update_slice(vc, v.transpose(0, 2, 1, 3), (0, 0, start, 0))
            k, v, kv = kc, vc, "bhsd"
        scores = jnp.where(mask[:, None], jnp.einsum(f"bthd,{kv}->bhts", q, k) / jnp.sqrt(Dh), -1e30)
        out = jnp.einsum(f"bhts,{kv}->bthd", jax.nn.softmax(scores, axis=-1), v).reshape(B * T, H * Dh)
        x = x + out @ lp["wo"]
        return _mlp(x, lp, cfg), (kc, vc)

    if cache is None:
        x, _ = jax.lax.scan(lambda c, lp: layer(c, (lp, None, None)), x, params["layers"])
        new_cache = None
    else:  # layers unrolled: each layer's cache buffer is updated in place
        ks, vs = [], []
        for i in range(cfg.n_layers):
            lp = jax.tree.map(lambda a: a[i], params["layers"])
            x, (kc, vc) = layer(x, (lp, cache["k"][i], cache["v"][i]))
            ks.append(kc)
            vs.append(vc)
        new_cache = {"k": tuple(ks), "v": tuple(vs)}
    logits = (_rms_norm(x, params["final_norm"]) @ params["embed"].T).reshape(B, T, -1)
    return logits, new_cache


def token_logp(logits, tokens):
    """``log softmax(logits)`` at ``tokens``: ``[..., V], [...] -> [...]``."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tokens[..., None], axis=-1)[..., 0]


def token_logprobs(params, cfg: ModelConfig, tokens, valid):
    """``log π(tokens[:, t+1] | tokens[:, :t+1])`` for every position: ``[B, S-1]`` (full forward)."""
    logits, _ = forward(params, cfg, tokens, valid)
    return token_logp(logits[:, :-1], tokens[:, 1:])


def grouped_completion_logits(params, cfg: ModelConfig, prompts, prompt_valid, comps, comp_valid):
    """Logits that predict each completion token, ``[B, T, V]``, for ``B = N·G`` completions
    ``comps [B, T]`` of ``N`` prompts ``[N, P]`` (rows ``g·G .. g·G+G-1`` share prompt ``g``).

    Equal to ``forward`` on the concatenated ``[prompt, completion]`` rows (positions ``P-1 ..
    P+T-2``), but each prompt runs through the network once per group instead of ``G`` times:
    completion queries attend to their prompt's keys/values without copying them.  For GRPO's
    32 prompts × 16 completions of 7 + 8 tokens this is 44% fewer rows in every matmul.
    """
    N, P = prompts.shape
    B, T = comps.shape
    G = B // N
    H, Dh, d = cfg.n_heads, cfg.head_dim, cfg.d_model
    pos_p, pos_c = jnp.arange(P), P + jnp.arange(T)
    x = params["embed"][jnp.concatenate([prompts.reshape(-1), comps.reshape(-1)])]  # [N·P + B·T, d]
    n_p = N * P
    mask_pp = (pos_p[None, :] <= pos_p[:, None])[None] & prompt_valid[:, None, :]  # [N, P, P]
    mask_cp = prompt_valid[:, None, None, None, :]  # [N, 1(G), 1(H), 1(T), P]
    mask_cc = ((pos_c[None, :] <= pos_c[:, None])[None] & comp_valid[:, None, :]).reshape(N, G, 1, T, T)
    scale = 1.0 / jnp.sqrt(Dh)

    def layer(x, lp):
        qkv = _rms_norm(x, lp["attn_norm"]) @ lp["wqkv"]
        qkv_p = qkv[:n_p].reshape(N, P, 3, H, Dh)
        qkv_c = qkv[n_p:].reshape(B, T, 3, H, Dh)
        q_p, k_p, v_p = _rope(qkv_p[:, :, 0], pos_p, cfg.rope_base), _rope(qkv_p[:, :, 1], pos_p, cfg.rope_base), qkv_p[:, :, 2]
        q_c = _rope(qkv_c[:, :, 0], pos_c, cfg.rope_base).reshape(N, G, T, H, Dh)
        k_c = _rope(qkv_c[:, :, 1], pos_c, cfg.rope_base).reshape(N, G, T, H, Dh)
        v_c = qkv_c[:, :, 2].reshape(N, G, T, H, Dh)
        # prompts: causal self-attention, once per group
        s_pp = jnp.where(mask_pp[:, None], jnp.einsum("nqhd,nkhd->nhqk", q_p, k_p) * scale, -1e30)
        out_p = jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(s_pp, axis=-1), v_p).reshape(n_p, d)
        # completions: one softmax over [their prompt's keys, their own earlier keys]
        s_cp = jnp.where(mask_cp, jnp.einsum("ngqhd,nkhd->nghqk", q_c, k_p) * scale, -1e30)
        s_cc = jnp.where(mask_cc, jnp.einsum("ngqhd,ngkhd->nghqk", q_c, k_c) * scale, -1e30)
        a = jax.nn.softmax(jnp.concatenate([s_cp, s_cc], axis=-1), axis=-1)
        out_c = jnp.einsum("nghqk,nkhd->ngqhd", a[..., :P], v_p) + jnp.einsum("nghqk,ngkhd->ngqhd", a[..., P:], v_c)
        out = jnp.concatenate([out_p, out_c.reshape(B * T, d)], axis=0)
        x = x + out @ lp["wo"]
        return _mlp(x, lp, cfg), None

    x, _ = jax.lax.scan(layer, x, params["layers"])
    x = _rms_norm(x, params["final_norm"])
    last_prompt = jnp.repeat(x[:n_p].reshape(N, P, d)[:, -1], G, axis=0)  # predicts completion token 0
    h = jnp.concatenate([last_prompt[:, None], x[n_p:].reshape(B, T, d)[:, :-1]], axis=1)
    return (h.reshape(B * T, d) @ params["embed"].T).reshape(B, T, -1)


def grouped_completion_logprobs(params, cfg: ModelConfig, prompts, prompt_valid, comps, comp_valid):
    """``log π(comps[:, t] | prompt, comps[:, :t])``, ``[B, T]``; see ``grouped_completion_logits``."""
    return token_logp(grouped_completion_logits(params, cfg, prompts, prompt_valid, comps, comp_valid), comps)
