"""A plain PyTorch GRPO iteration — the reference loop ``llm_throughput.py`` compares against.

Same model and batch as ``llm_throughput.py``: Llama-shaped (RoPE, pre-RMSNorm, SwiGLU, tied
embeddings, fused QKV), d 128, 4 layers, 4 heads, SwiGLU 512, vocabulary 32; 32 prompts × 16
completions, 7 prompt + 8 new tokens.  One iteration: KV-cache sampling under ``no_grad``, a parity
reward, group-normalised advantages, one AdamW step on the clipped surrogate.  Eager mode,
``torch.set_num_threads`` = the CPU count.

Two variants, each timed every round, as the JAX side is:
- ``unshared``: every row prefilled and run through the training forward whole, as a plain loop does;
- ``shared``: each prompt prefilled once per group, its keys/values repeated for the group's
  completions (sampling), and the training forward run on the prompts once, the completions (all
  of their tokens, the last one's logits unused, as ``grouped_completion_logits`` runs them)
  attending to their prompt's cached keys/values.  Its logits and parameter gradients are checked
  equal to the unshared forward's before timing.

    pip install -e ".[torch]"
    python benchmarks/reference_torch_grpo.py --rounds 2   # JSON: sample_s, train_s, iteration_s per round and variant
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

V, D, LAYERS, HEADS, MLP = 32, 128, 4, 4, 512
PROMPTS, G, P, NEW = 32, 16, 7, 8
DH = D // HEADS


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm = torch.nn.Parameter(torch.ones(D))
        self.mlp_norm = torch.nn.Parameter(torch.ones(D))
        self.wqkv = torch.nn.Linear(D, 3 * D, bias=False)
        self.wo = torch.nn.Linear(D, D, bias=False)
        self.gate = torch.nn.Linear(D, MLP, bias=False)
        self.up = torch.nn.Linear(D, MLP, bias=False)
        self.down = torch.nn.Linear(MLP, D, bias=False)


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def rope(x, pos):  # x [B, S, H, Dh]
    half = DH // 2
    freq = 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
    ang = pos[:, None].float() * freq[None]
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.randn(V, D) * 0.02)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(LAYERS))
        self.final_norm = torch.nn.Parameter(torch.ones(D))

    def forward(self, tokens, start=0, cache=None):
        """Logits ``[B, S, V]``; with ``cache`` (a list of (k, v) per layer, extended in place)."""
        B, S = tokens.shape
        pos = torch.arange(start, start + S)
        x = self.embed[tokens]
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.wqkv(rms(x, blk.attn_norm)).view(B, S, 3, HEADS, DH).unbind(2)
            q, k = rope(q, pos), rope(k, pos)
            if cache is not None:
                if cache[i] is not None:
                    k = torch.cat([cache[i][0], k], 1)
                    v = torch.cat([cache[i][1], v], 1)
                cache[i] = (k, v)
            Sk = k.shape[1]
            if S > 1 and Sk > S:  # several queries after a cached prefix: query i sees keys <= prefix + i
                mask = torch.arange(Sk)[None, :] <= (Sk - S + torch.arange(S))[:, None]
                att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                     attn_mask=mask)
            else:
                att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                     is_causal=(S > 1))
            x = x + blk.wo(att.transpose(1, 2).reshape(B, S, D))
            h = rms(x, blk.mlp_norm)
            x = x + blk.down(F.silu(blk.gate(h)) * blk.up(h))
        return rms(x, self.final_norm) @ self.embed.T


def repeat_cache(cache, group):
    return [(k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)) for k, v in cache]


@torch.no_grad()
def sample(model, prompts, group=1):
    """``group`` > 1: ``prompts`` holds each prompt once; prefilled once, then ``group`` rows each."""
    cache = [None] * LAYERS
    logits = model(prompts, 0, cache)[:, -1]
    if group > 1:
        cache, logits = repeat_cache(cache, group), logits.repeat_interleave(group, 0)
    toks, logps = [], []
    for t in range(NEW):
        lp = torch.log_softmax(logits, -1)
        tok = torch.multinomial(lp.exp(), 1)[:, 0]
        toks.append(tok)
        logps.append(lp.gather(1, tok[:, None])[:, 0])
        logits = model(tok[:, None], P + t, cache)[:, -1]
    return torch.stack(toks, 1), torch.stack(logps, 1)


def completion_logits(model, prompts, comps, group=1):
    """Logits predicting each completion token; ``group`` > 1: ``prompts`` once per group."""
    if group == 1:
        return model(torch.cat([prompts, comps], 1))[:, P - 1:-1]
    cache = [None] * LAYERS
    last = model(prompts, 0, cache)[:, -1:]  # predicts completion token 0
    rest = model(comps, P, repeat_cache(cache, group))  # every completion token, as the JAX side runs them
    return torch.cat([last.repeat_interleave(group, 0), rest[:, :-1]], 1)


def train_step(model, opt, prompts, comps, old_logp, rewards, eps=0.2, group=1):
    logits = completion_logits(model, prompts, comps, group)
    logp = torch.log_softmax(logits, -1).gather(2, comps[..., None])[..., 0]
    r = rewards.view(-1, G)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1, 1)
    ratio = torch.exp(logp - old_logp)
    loss = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    unique = torch.randint(3, V, (PROMPTS, P))
    rows = unique.repeat_interleave(G, 0)
    comps = torch.randint(3, V, (PROMPTS * G, NEW))  # the shared forward is the unshared one, computed differently
    w = torch.randn(PROMPTS * G, NEW, V)
    outs = []
    for args in ((unique, comps, G), (rows, comps)):
        model.zero_grad(set_to_none=True)
        logits = completion_logits(model, *args)
        (logits * w).sum().backward()
        outs.append((logits.detach(), [q.grad.clone() for q in model.parameters()]))
    model.zero_grad(set_to_none=True)
    gap = (outs[0][0] - outs[1][0]).abs().max().item()
    grad_gap = max(((a - b).abs().max() / (b.abs().max() + 1e-12)).item() for a, b in zip(outs[0][1], outs[1][1]))
    assert gap < 1e-4 and grad_gap < 1e-3, (gap, grad_gap)

    def iteration(shared):
        prompts, group = (unique, G) if shared else (rows, 1)
        t0 = time.perf_counter()
        comps, old = sample(model, prompts, group)
        t1 = time.perf_counter()
        rewards = (comps[:, 0] % 2).float()
        train_step(model, opt, prompts, comps, old, rewards, group=group)
        return t1 - t0, time.perf_counter() - t1

    for _ in range(2):  # warm-up
        iteration(True), iteration(False)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "params": sum(p.numel() for p in model.parameters()), "shared_vs_unshared_max_logit_gap": gap,
           "shared_vs_unshared_max_relative_grad_gap": grad_gap,
           "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}, "rounds": []}
    for _ in range(a.rounds):
        r = {}
        for name, shared in (("shared", True), ("unshared", False)):
            times = [iteration(shared) for _ in range(a.repeats)]
            best = min(times, key=lambda st: st[0] + st[1])
            r[name] = {"sample_s": min(t[0] for t in times), "train_s": min(t[1] for t in times),
                       "iteration_s": best[0] + best[1]}
        out["rounds"].append(r)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
