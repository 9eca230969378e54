"""LLM trainers: supervised warm-up (``sft``), online RL with a verifiable reward (``rl``) and
offline preference optimisation (``pref``).  Each iteration is one compiled function; shapes
never change between iterations (varying completion lengths are masks), so nothing recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from purejaxrl.llm import losses as L
from purejaxrl.llm import rl_losses as R
from purejaxrl.llm.model import (
    ModelConfig,
    forward,
    grouped_completion_logits,
    grouped_completion_logprobs,
    token_logp,
    token_logprobs,
)
from purejaxrl.llm.sampler import sample
from purejaxrl.llm.tasks import EOS, PAD, Task

RL_LOSSES = tuple(R.REGISTRY)  # the built-in ones; R.REGISTRY also holds losses registered later
PREF_LOSSES = ("dpo", "adpo_pair", "adpo_list", "adpo_pl", "sppo", "nash_mp")


@dataclass(frozen=True)
class RLSettings:
    num_prompts: int = 32          # prompts per iteration
    num_generations: int = 16      # G completions per prompt (TRL num_generations)
    num_iterations: int = 1        # gradient steps per generated batch (TRL num_iterations)
    temperature: float = 1.0
    top_k: int = 0
    loss: str = "grpo"
    reward: str = "binary"         # binary (the verifier) or a likelihood reward: logprob, prob, mean_prob
    curriculum_pool: int = 0       # > 0: FG-ExPO Gaussian curriculum over a fixed pool of this many train prompts
    curriculum_sigma: float = 0.2  # width of the curriculum's Gaussian around p̂ = ½
    loss_options: tuple = ()       # the loss's static options as ((key, value), ...), e.g. (("loss_type", "dapo"),)
    policy_gradient: bool = True   # False with a likelihood reward: only its teacher-forced term (SFT-only control)
    data_seed: int = 12345         # the curriculum's fixed prompt pool
    share_prompts: bool = True     # run each prompt once per group (sampler prefill and training forward); False: per row
    top_p: float = 1.0             # nucleus sampling (1 = off)
    min_p: float = 0.0             # min-p sampling (0 = off)
    mask_truncated_completions: bool = False  # completions without EOS are left out of the loss (TRL's option)
    steps_per_generation: int = 0  # TRL's: the generated batch split (by prompt) into this many microbatches (0: = A)
    gradient_accumulation_steps: int = 1  # A: microbatches per optimiser step, gradients combined exactly
    reward_funcs: tuple = ("verifier",)  # "verifier" (the task's) or "module:function" on decoded strings
    reward_weights: tuple = ()     # one weight per reward function (empty: all 1)


def append_reference_answer(prompts, comps, mask, answers, sep_id: int):
    """Likelihood rewards: keep the sampled chain of thought ``z`` (up to its first ``sep_id`` or its
    end) and teacher-force the reference answer right after it.

    ``answers [B, A]`` start with the separator (e.g. ``=dd<eos>``).  Returns ``(tokens, valid,
    z_mask, answer_mask)`` where the masks index the completion region ``[B, T + A]``.
    """
    B, P = prompts.shape
    T, A = comps.shape[1], answers.shape[1]
    is_sep = (comps == sep_id) & mask
    cut = jnp.where(is_sep.any(1), jnp.argmax(is_sep, axis=1), mask.sum(1))  # z = comps[:cut]
    pos = jnp.arange(T + A)[None]
    z_mask = pos < cut[:, None]
    region = jnp.concatenate([comps, jnp.zeros((B, A), comps.dtype)], 1)
    region = jnp.where(z_mask, region, 0)
    rows = jnp.arange(B)[:, None]
    region = region.at[rows, cut[:, None] + jnp.arange(A)[None]].set(answers)
    answer_mask = (pos >= cut[:, None]) & (pos < cut[:, None] + A) & (region != 0)
    tokens = jnp.concatenate([prompts, region], 1)
    valid = jnp.concatenate([prompts != 0, z_mask | answer_mask], 1)
    return tokens, valid, z_mask, answer_mask


def _completion_logp(params, cfg, tokens, valid, P):
    return token_logprobs(params, cfg, tokens, valid)[:, P - 1:]


def _group_logits(params, cfg, d, comps=None, comp_valid=None):
    """Completion logits ``[B, T, V]`` with each prompt run once for its ``G`` completions (or, with
    ``d['share_prompts'] = False``, the plain forward of every ``[prompt, completion]`` row)."""
    comps = d["comps"] if comps is None else comps
    comp_valid = d["comp_valid"] if comp_valid is None else comp_valid
    prompts = d["prompts"]
    if d.get("share_prompts", True):
        return grouped_completion_logits(params, cfg, prompts, prompts != PAD, comps, comp_valid)
    P, T = prompts.shape[1], comps.shape[1]
    rows = jnp.repeat(prompts, comps.shape[0] // prompts.shape[0], axis=0)
    tokens = jnp.concatenate([rows, comps], 1)
    logits, _ = forward(params, cfg, tokens, jnp.concatenate([rows != PAD, comp_valid], 1))
    return logits[:, P - 1:P + T - 1]


def _seq_logp(params, cfg, prompts, comps, mask):
    """Sequence log-probs ``[N, K]`` of ``K`` completions per prompt (each prompt run once)."""
    lp = grouped_completion_logprobs(params, cfg, prompts, prompts != PAD, comps, mask)
    return (lp * mask).sum(1).reshape(prompts.shape[0], -1)


def policy_logp(logits, tokens, temperature: float = 1.0):
    """Log-probabilities of ``tokens`` under the distribution they were sampled from: the logits
    divided by the sampling temperature (as TRL does; top-k filtering is not applied, as in TRL).
    Old, new and reference log-probs all use it, so at ``T ≠ 1`` the ratio is 1 before the update."""
    return token_logp(logits / temperature, tokens)


def rl_loss(name: str, hp: dict, G: int, L_max: int, temperature: float = 1.0, opts: dict | None = None,
            policy_gradient: bool = True) -> Callable:
    """``loss(params, cfg, data) -> (loss, aux)`` for a registered RL loss (``rl_losses.REGISTRY``);
    ``data`` holds what the loss declared it needs.  ``aux`` also carries the policy's mean token
    entropy on the completions (no gradient)."""
    entry = R.get(name)
    opts = entry.resolve(opts)

    def fn(params, cfg, d):
        mask = d["mask"]
        logits_c = _group_logits(params, cfg, d)
        logp = policy_logp(logits_c, d["comps"], temperature)
        x = {"logits": logits_c / temperature, "logp": logp, "seq_logp": (logp * mask).sum(1), "mask": mask,
             "rewards": d["rewards"], "verifier_rewards": d.get("verifier_rewards", d["rewards"]),
             "completions": d["comps"], "G": G, "L_max": L_max,
             "progress": d.get("progress", 0.0), "policy_gradient": policy_gradient,
             **{k: d[k] for k in entry.needs_for(opts) if k in d}}
        if "old_logits" in x:  # the sampling distribution, like the current logits
            x["old_logits"] = x["old_logits"] / temperature
        if "answer_mask" in d:  # likelihood reward: differentiable, its own gradient term (weighted by the loss)
            ans_lp = token_logp(_group_logits(params, cfg, d, d["answer_tokens"], d["answer_valid"]), d["answer_tokens"])
            x["r_theta"] = L.likelihood_rewards(ans_lp, d["answer_mask"], d["reward_kind"])
        loss, aux = entry.fn(x, hp, opts)
        m = mask.astype(logp.dtype)
        entropy = jnp.where(m.sum() > 0, (L.token_entropy(jax.lax.stop_gradient(x["logits"])) * m).sum()
                            / jnp.maximum(m.sum(), 1.0), jnp.nan)  # no token in the loss: no entropy measured
        return loss, {"entropy": entropy, **aux}

    return fn


def resolve_reward_func(name: str):
    """``"module:function"`` -> the function (``"verifier"`` is the task's own, handled by the caller)."""
    import importlib

    mod, _, attr = name.partition(":")
    if not mod or not attr:
        raise ValueError(f"reward function {name!r} must be 'verifier' or 'module:function' (e.g. "
                         "purejaxrl.llm.rewards:digits_only)")
    fn = getattr(importlib.import_module(mod), attr, None)
    if not callable(fn):
        raise ValueError(f"reward function {name!r}: {mod} has no function {attr}")
    return fn


def string_reward(fn, prompts, comps, mask, answers):
    """``fn(prompts=[str], completions=[str], answers=[str]) -> [float | None]`` (TRL's reward
    function signature, with the reference answers as a column) called on the host from compiled
    code; ``None`` is NaN (the function does not score that completion)."""
    import numpy as np

    from purejaxrl.llm.tasks import decode

    B = comps.shape[0]

    def host(prompts, comps, mask, answers):
        n = comps.shape[0] // prompts.shape[0]
        ps = [decode(p) for p in np.asarray(prompts)]
        cs = [decode(np.where(m, c, PAD)) for c, m in zip(np.asarray(comps), np.asarray(mask))]
        out = fn(prompts=[ps[i // n] for i in range(len(cs))], completions=cs,
                 answers=[decode(a) for a in np.asarray(answers)])
        if len(out) != len(cs):
            raise ValueError(f"reward function {getattr(fn, '__name__', fn)} returned {len(out)} values for {len(cs)} completions")
        return np.asarray([np.nan if v is None else float(v) for v in out], np.float32)

    return jax.pure_callback(host, jax.ShapeDtypeStruct((B,), jnp.float32), prompts, comps, mask, answers)


PER_PROMPT = ("prompts", "resample_idx")  # batch entries with one row per prompt; the others have one per completion


def split_batch(d: dict, parts: int, num_prompts: int | None = None) -> tuple[dict, dict]:
    """``(split, const)``: the batch's arrays with a leading ``[parts]`` axis, whole prompt groups
    together (part ``j`` holds prompts ``j·n .. j·n+n−1`` and their completions), and the rest (0-d
    values, flags).  With ``num_prompts``, an array whose leading axis is neither the prompts
    (``PER_PROMPT``) nor their completions is an error rather than a wrong split."""
    split, const = {}, {}
    for k, v in d.items():
        if isinstance(v, jax.Array) and v.ndim >= 1:
            if num_prompts is not None:
                want = num_prompts if k in PER_PROMPT else None
                if (want is not None and v.shape[0] != want) or (want is None and v.shape[0] % num_prompts):
                    raise ValueError(f"batch entry {k} has leading axis {v.shape[0]}: neither the {num_prompts} prompts "
                                     "nor their completions; add it to PER_PROMPT or keep it 0-d")
            split[k] = v.reshape(parts, v.shape[0] // parts, *v.shape[1:])
        else:
            const[k] = v
    return split, const


def microbatch_weights(d: dict, parts: int, loss: str, opts: dict, G: int):
    """``[parts]`` weights (summing to 1) that combine microbatch gradients into the full minibatch's:
    each microbatch's share of the loss's normaliser — its completions for the per-sequence
    aggregations (``grpo``, ``dr_grpo``), its completion tokens for the token means (``dapo``,
    ``bnpo``, ROVER), counting only the groups DAPO keeps; equal weights for GARL and PAFT (means over
    prompts).  Exact for these; the losses whose terms read a statistic of the whole batch (EPO's
    entropy band, FG-ExPO's accuracy, a likelihood reward's mean length) are refused with
    ``gradient_accumulation_steps > 1`` (``run.validate_llm``)."""
    keep = L.dapo_group_filter(d["rewards"], G) if loss == "dapo" else jnp.ones_like(d["rewards"])
    lt = "dapo" if loss == "rover" else opts.get("loss_type")
    if lt in ("dapo", "bnpo"):
        n = (d["mask"].astype(jnp.float32) * keep[:, None]).sum(1)
    elif lt in ("grpo", "dr_grpo"):
        n = keep.astype(jnp.float32)
    else:
        return jnp.full((parts,), 1.0 / parts)
    n = n.reshape(parts, -1).sum(1)
    return jnp.where(n.sum() > 0, n / jnp.maximum(n.sum(), 1e-9), 1.0 / parts)


def make_rl_iteration(task: Task, cfg: ModelConfig, settings: RLSettings, hp_static: dict, optimizer):
    """``iteration(params, opt_state, ref_params, key, hp, running_entropy, p_hat=None, progress=0.0)
    -> (params, opt_state, metrics, p_hat)``: sample ``G`` completions for each of ``num_prompts``
    prompts, reward them, compute what the loss declared it needs (``rl_losses``), and take
    ``num_iterations`` gradient steps — one compiled function."""
    G, Np = settings.num_generations, settings.num_prompts
    P, T = task.prompt_len, task.max_new
    entry = R.get(settings.loss)
    opts = entry.resolve(dict(settings.loss_options))
    if settings.reward != "binary" and not entry.likelihood:
        raise ValueError(f"loss={settings.loss} does not take likelihood rewards (reward={settings.reward}); "
                         f"use one of {', '.join(k for k, v in R.REGISTRY.items() if v.likelihood)}")
    reward_fns = [None if f == "verifier" else resolve_reward_func(f) for f in settings.reward_funcs]
    has_verifier = "verifier" in settings.reward_funcs
    weights = tuple(settings.reward_weights) or (1.0,) * len(reward_fns)
    unfiltered = settings.top_k == 0 and settings.top_p >= 1.0 and settings.min_p <= 0.0
    S_, A_ = settings.steps_per_generation or settings.gradient_accumulation_steps, settings.gradient_accumulation_steps
    if S_ % A_ or Np % S_:
        raise ValueError(f"steps_per_generation={S_} must be a multiple of gradient_accumulation_steps={A_} and divide "
                         f"num_prompts={Np} (microbatches hold whole prompt groups)")

    def iteration(params, opt_state, ref_params, key, hp, running_entropy, p_hat=None, progress=0.0):
        """One RL iteration; ``p_hat [curriculum_pool]`` (running success estimates per pool prompt)
        is used and returned when the curriculum is on."""
        k_task, k_sample, k_paft = jax.random.split(key, 3)
        if settings.curriculum_pool:
            pool = task.sample(jax.random.PRNGKey(settings.data_seed), settings.curriculum_pool)
            w = L.fg_expo_curriculum_weights(p_hat, settings.curriculum_sigma)
            idx = jax.lax.top_k(jnp.log(w) + jax.random.gumbel(k_task, w.shape), Np)[1]  # ∝ w, no repeats
            batch = jax.tree.map(lambda x: x[idx], pool)
            if hasattr(task, "constrain"):  # data parallel: the drawn prompts split over the devices
                batch = task.constrain(batch)
        else:
            batch = task.sample(k_task, Np)
        rep = jax.tree.map(lambda x: jnp.repeat(x, G, axis=0), batch)
        shared = settings.share_prompts
        comps, mask, samp_logp = sample(params, cfg, batch.prompts if shared else rep.prompts, k_sample, max_new=T,
                                        temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                                        min_p=settings.min_p, stop_id=EOS, pad_id=PAD, num_samples=G if shared else 1)
        binary = task.reward(comps, mask, rep)
        ended = jnp.any((comps == EOS) & mask, axis=1)
        parts = {}
        for j, f in enumerate(reward_fns):
            r = binary if f is None else string_reward(f, batch.prompts, comps, mask, rep.answers)
            parts[settings.reward_funcs[j]] = r
        # completions are scored with their prompt run once per group (grouped_completion_logits)
        d = {"prompts": batch.prompts, "comps": comps, "comp_valid": mask, "mask": mask, "share_prompts": shared,
             "running_entropy": running_entropy, "progress": jnp.asarray(progress, jnp.float32)}
        if settings.reward == "binary":
            # several reward functions: their weighted sum, a NaN (an unscored completion) counting 0 (TRL's nansum)
            rewards = binary if tuple(settings.reward_funcs) == ("verifier",) and not settings.reward_weights else \
                sum(jnp.nan_to_num(w * r, nan=0.0) for w, r in zip(weights, parts.values()))
        else:  # reward = likelihood of the reference answer after the sampled chain of thought
            a_tok, a_valid, z_mask, a_mask = append_reference_answer(rep.prompts, comps, mask, rep.answers, task.separator)
            a_tok, a_valid = a_tok[:, P:], a_valid[:, P:]
            ans_lp = jax.lax.stop_gradient(token_logp(_group_logits(params, cfg, d, a_tok, a_valid), a_tok))
            rewards = L.likelihood_rewards(ans_lp, a_mask, settings.reward)
            d.update(answer_tokens=a_tok, answer_valid=a_valid, answer_mask=a_mask, reward_kind=settings.reward)
            d["mask"] = z_mask[:, :T] & mask  # the policy gradient acts on the chain of thought
        d["rewards"], d["verifier_rewards"] = rewards, binary
        if settings.mask_truncated_completions:  # a completion that never ended takes no part in the loss
            d["mask"] = d["mask"] & ended[:, None]
        Tmp = settings.temperature
        needs = entry.needs_for(opts)
        if "old_logits" in needs:
            d["old_logits"] = jax.lax.stop_gradient(_group_logits(params, cfg, d))
        if "old_logp" in needs:
            if "old_logits" in d:  # the training forward's (a learned drift needs ρ = 1 exactly on the first step)
                d["old_logp"] = policy_logp(d["old_logits"], comps, Tmp)
            elif unfiltered:  # the sampler's log-probs are then those of logits / T: no extra forward
                d["old_logp"] = samp_logp
            else:
                d["old_logp"] = jax.lax.stop_gradient(policy_logp(_group_logits(params, cfg, d), comps, Tmp))
        if "ref_logp" in needs and hp_static.get("use_ref"):
            d["ref_logp"] = jax.lax.stop_gradient(policy_logp(_group_logits(ref_params, cfg, d), comps, Tmp))
        if "resample_idx" in needs:
            d["resample_idx"] = L.paft_resample(k_paft, rewards, G, opts.get("num_resamples") or G)
        lf = rl_loss(settings.loss, hp, G, T, Tmp, opts, settings.policy_gradient)

        # TRL's split: the generated batch into S microbatches (whole prompt groups), A per optimiser step
        A = settings.gradient_accumulation_steps
        S = settings.steps_per_generation or A
        minibatches, const = split_batch(d, S // A, Np)

        def grad_of(p, mb):
            """The minibatch's loss, aux and gradient, over ``A`` microbatches combined exactly (aux
            metrics: the microbatches' plain mean, as they are of equal size)."""
            if A == 1:
                (loss, aux), g = jax.value_and_grad(lambda p_: lf(p_, cfg, {**const, **mb}), has_aux=True)(p)
                return loss, aux, g
            micro, _ = split_batch(mb, A, Np // (S // A))
            w = microbatch_weights(mb, A, settings.loss, opts, G)

            def acc(carry, xs):
                mu, wj = xs
                (loss, aux), g = jax.value_and_grad(lambda p_: lf(p_, cfg, {**const, **mu}), has_aux=True)(p)
                c_loss, c_aux, c_g = carry
                return (c_loss + wj * loss, jax.tree.map(lambda c, x: c + x / A, c_aux, aux),
                        jax.tree.map(lambda c, x: c + wj * x, c_g, g)), None

            zero = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(
                lambda: jax.value_and_grad(lambda p_: lf(p_, cfg, {**const, **jax.tree.map(lambda x: x[0], micro)}),
                                           has_aux=True)(p)))
            (loss, aux), g = zero
            return jax.lax.scan(acc, (loss, aux, g), (micro, w))[0]

        def step(carry, mb):
            p, o = carry
            loss, aux, g = grad_of(p, mb)
            upd, o = optimizer.update(g, o, p)
            return (optax.apply_updates(p, upd), o), (loss, {**aux, "grad_norm": optax.tree.norm(g)})

        def epoch(carry, _):  # one pass over the S / A steps (TRL: num_iterations passes over the generated batch)
            return jax.lax.scan(step, carry, minibatches)

        (params, opt_state), (loss, aux) = jax.lax.scan(epoch, (params, opt_state), None, settings.num_iterations)
        levels = rep.level
        group_rate = binary.reshape(Np, G).mean(1)
        if settings.curriculum_pool:
            p_hat = p_hat.at[idx].set(0.5 * p_hat[idx] + 0.5 * group_rate)
        group_std = rewards.reshape(Np, G).std(axis=1, ddof=1)
        metrics = {
            "loss": loss.mean(),
            "reward": rewards.mean(),
            "reward_std": group_std.mean(),
            "frac_reward_zero_std": jnp.mean(jnp.isclose(group_std, 0.0)),
            "verifier_reward": binary.mean(),
            "completion_length": mask.sum(1).mean(),  # sampled tokens, EOS included (TRL's)
            "truncated_fraction": 1.0 - ended.mean(),
            **({f"rewards/{k}": jnp.nanmean(v) for k, v in parts.items()} if len(parts) > 1 or not has_verifier else {}),
            **{f"train_pass_level{lv}": jnp.sum(binary * (levels == lv)) / jnp.maximum(jnp.sum(levels == lv), 1)
               for lv in task.levels},
            # counts (not rates): the run's totals and first successes are summed from these every iteration
            **{f"train_successes_level{lv}": jnp.sum(binary * (levels == lv)) for lv in task.levels},
            **{f"train_samples_level{lv}": jnp.sum(levels == lv).astype(jnp.float32) for lv in task.levels},
            **{k: v.mean() for k, v in aux.items()},
        }
        return params, opt_state, metrics, p_hat

    return iteration


def make_sft_step(task: Task, cfg: ModelConfig, batch_size: int, optimizer, target: str = "reference"):
    """Teacher-forced NLL on reference answers of freshly drawn training prompts; ``target="format"``
    trains on ``task.format_answers`` instead (the answer's format, random content: a warm-up that
    teaches no answer)."""
    P = task.prompt_len

    def step(params, opt_state, key, hp):
        batch = task.sample(key, batch_size)
        answers = batch.answers if target == "reference" else task.format_answers(jax.random.fold_in(key, 1), batch)
        tokens = jnp.concatenate([batch.prompts, answers], 1)
        valid = tokens != PAD
        mask = answers != PAD

        def loss_fn(p):
            lp = _completion_logp(p, cfg, tokens, valid, P)
            return -jnp.sum(lp * mask) / jnp.sum(mask)

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = optimizer.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, {"loss": loss, "grad_norm": optax.tree.norm(g)}

    return step


def make_eval(task: Task, cfg: ModelConfig, num_prompts: int, key: jax.Array):
    """Greedy pass@1 on a fixed set of test-split prompts, overall and per level.  ``key`` (a run's
    evaluation key, :mod:`purejaxrl.evalkeys`) draws the prompts and the sampler's noise: another
    seed gets other prompts, another loss on the same seed the same ones."""
    batch = task.sample(jax.random.fold_in(key, 0), num_prompts, test=True)
    sample_key = jax.random.fold_in(key, 1)

    def evaluate(params):
        comps, mask, _ = sample(params, cfg, batch.prompts, sample_key, max_new=task.max_new,
                                temperature=1e-6, stop_id=EOS, pad_id=PAD)
        r = task.reward(comps, mask, batch)
        out = {"pass_at_1": r.mean()}
        if task.levels != (0,):
            for lv in task.levels:
                sel = batch.level == lv
                out[f"pass_at_1_level{lv}"] = jnp.sum(r * sel) / jnp.maximum(sel.sum(), 1)
        if hasattr(task, "true_reward"):
            out["true_reward"] = task.true_reward(comps, batch).mean()
            # probability mass the policy puts on the true best completion
            tokens = jnp.concatenate([batch.prompts, batch.answers], 1)
            lp = _completion_logp(params, cfg, tokens, tokens != PAD, task.prompt_len)
            out["best_answer_prob"] = jnp.exp((lp * (batch.answers != PAD)).sum(1)).mean()
        return out

    evaluate.batch = batch  # the held-out prompts (for inspection)
    return evaluate


# ---------------------------------------------------------------- offline preferences
def parse_noise(spec: str) -> tuple[str, float]:
    """``none``, ``flip:p`` (pair flips), ``gauss:σ`` or ``cauchy:s`` (heavy-tailed) score noise."""
    kind, _, val = str(spec).partition(":")
    if kind not in ("none", "flip", "gauss", "cauchy") or (kind != "none" and not val):
        raise ValueError(f"noise={spec!r}; valid: none, flip:P, gauss:SIGMA, cauchy:SCALE (e.g. noise=flip:0.2)")
    return kind, float(val or 0.0)


def make_preference_batch(task, key, n: int, num_candidates: int, noise: tuple[str, float]):
    """Candidates for ``n`` prompts: the sorted answer with 0..k random adjacent swaps, their true
    rewards, and noisy scores (the labels a preference dataset would record)."""
    batch = task.sample(key, n)
    k = task.k
    kc, ks, kn = jax.random.split(jax.random.fold_in(key, 1), 3)
    swaps = jax.random.randint(kc, (n, num_candidates), 0, k + 1)

    def perturb(ans, n_swaps, key):
        def body(i, c):
            a, key = c
            key, k1 = jax.random.split(key)
            j = jax.random.randint(k1, (), 0, k - 1)
            swapped = a.at[j].set(a[j + 1]).at[j + 1].set(a[j])
            return jnp.where(i < n_swaps, swapped, a), key

        return jax.lax.fori_loop(0, k, body, (ans, key))[0]

    keys = jax.random.split(ks, n * num_candidates).reshape(n, num_candidates, 2)
    cands = jax.vmap(lambda a, s, kk: jax.vmap(lambda s_, k_: perturb(a[:k], s_, k_))(s, kk))(batch.answers, swaps, keys)
    cands = jnp.concatenate([cands, jnp.full((n, num_candidates, 1), EOS)], -1)
    true = (cands[..., :k] == batch.answers[:, None, :k]).mean(-1)
    kind, val = noise
    if kind == "gauss":
        scores = true + val * jax.random.normal(kn, true.shape)
    elif kind == "cauchy":
        scores = true + val * jax.random.cauchy(kn, true.shape)
    else:
        scores = true
    return batch, cands, true, scores


def make_pref_step(task, cfg: ModelConfig, loss: str, batch_size: int, num_candidates: int, noise, dataset_size: int, optimizer,
                   opts: dict | None = None, data_seed: int = 12345):
    """One optimiser step on a minibatch of a fixed offline dataset (``dataset_size`` prompts;
    minibatch ``i`` is always generated from ``fold_in(PRNGKey(data_seed), i)``, so the data and
    its noise are fixed).  ``opts``: DPO's ``loss_type`` (``sigmoid``, ``ipo``, ``hinge``, ``robust``)
    and ``pairs``: ``best_worst`` (the best against the worst candidate by recorded score) or ``all``
    (every candidate pair, ordered by the recorded scores, tied pairs left out; ``losses.all_pairs_dpo_loss``).
    A ``flip`` reverses the recorded preference of a prompt: its one pair, or all of its pairs."""
    kind, val = noise
    dpo_type = (opts or {}).get("loss_type", "sigmoid")
    dpo_pairs = (opts or {}).get("pairs", "best_worst")
    if dpo_pairs not in L.DPO_PAIRS:
        raise ValueError(f"DPO pairs={dpo_pairs!r}; valid: {', '.join(L.DPO_PAIRS)}")

    def step(params, opt_state, ref_params, key, hp):
        idx = jax.random.randint(key, (), 0, dataset_size // batch_size)
        dkey = jax.random.fold_in(jax.random.PRNGKey(data_seed), idx)
        batch, cands, true, scores = make_preference_batch(task, dkey, batch_size, num_candidates, noise)
        comps = cands.reshape(batch_size * num_candidates, -1)
        seq_lp = lambda p: _seq_logp(p, cfg, batch.prompts, comps, comps != PAD)  # noqa: E731

        ref = jax.lax.stop_gradient(seq_lp(ref_params))
        order = jnp.argsort(-scores, axis=1)
        best, worst = order[:, 0], order[:, -1]
        flip = jax.random.bernoulli(jax.random.fold_in(dkey, 7), val if kind == "flip" else 0.0, (batch_size,))
        w = jnp.where(flip, worst, best)
        l = jnp.where(flip, best, worst)

        def loss_fn(p):
            lp = seq_lp(p)
            pick = lambda x, i: jnp.take_along_axis(x, i[:, None], 1)[:, 0]  # noqa: E731
            if loss == "dpo":
                lp_, ref_ = lp, ref
                if dpo_type == "ipo":  # IPO on length-normalised log-probs, as TRL
                    lens = (comps != PAD).sum(1).reshape(batch_size, num_candidates)
                    lp_, ref_ = lp / lens, ref / lens
                if dpo_pairs == "all":
                    return L.all_pairs_dpo_loss(lp_, ref_, scores, hp["beta"], flip=flip, loss_type=dpo_type,
                                                label_smoothing=hp.get("label_smoothing", 0.0))
                return L.dpo_loss(pick(lp_, w), pick(lp_, l), pick(ref_, w), pick(ref_, l), hp["beta"], loss_type=dpo_type,
                                  label_smoothing=hp.get("label_smoothing", 0.0))
            u = L.adpo_logits(lp, ref, hp["tau"])
            if loss == "adpo_pair":
                u2 = jnp.stack([pick(u, w), pick(u, l)], 1)
                if kind == "flip":  # calibrated confidence: the known flip rate, the same for every recorded pair
                    p_t = jnp.full((batch_size,), 1.0 - val)
                else:  # confidence from the recorded score gap
                    p_t = jax.nn.sigmoid((pick(scores, w) - pick(scores, l)) / hp["beta_r"])
                return L.adpo_loss(u2, L.adpo_targets_pairwise(p_t))
            s = jnp.where(flip[:, None], -scores, scores)  # a flip reverses the recorded ranking
            if loss == "adpo_list":
                return L.adpo_loss(u, L.adpo_targets_listwise(s, hp["beta_r"]))
            if loss == "adpo_pl":
                return L.plackett_luce_loss(u, jnp.argsort(-s, axis=1))
            raise ValueError(f"unknown preference loss {loss!r}; valid: {', '.join(PREF_LOSSES)}")

        lval, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = optimizer.update(g, opt_state, params)
        metrics = {"loss": lval, "grad_norm": optax.tree.norm(g), "data_true_reward": true.mean()}
        return optax.apply_updates(params, upd), opt_state, metrics

    return step


def _online_candidates(task, cfg: ModelConfig, params, key, batch_size: int, K: int, prompts=None):
    """``K`` sampled completions per prompt from ``params``: (batch, comps, mask, true [N, K])."""
    k1, k2 = jax.random.split(key)
    batch = task.sample(k1, batch_size) if prompts is None else prompts
    rep = jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), batch)
    comps, mask, _ = sample(params, cfg, batch.prompts, k2, max_new=task.max_new, stop_id=EOS, pad_id=PAD, num_samples=K)
    return batch, comps, mask, task.true_reward(comps, rep).reshape(batch_size, K)



def make_sppo_step(task, cfg: ModelConfig, batch_size: int, num_candidates: int, optimizer, pref_temperature: float = 0.1):
    """One step of iterated SPPO (self-play): sample ``K`` completions per prompt from the current
    round's policy π_t (``prev_params``), estimate each one's win rate against π_t from a
    Bradley–Terry preference on the true reward, and regress ``ℓ_θ − ℓ_t`` of the best and worst
    samples onto ``η (P̂ − ½)``.  The host loop sets ``prev_params`` to the current parameters at
    the start of every round."""
    K = num_candidates

    def step(params, opt_state, prev_params, key, hp):
        batch, comps, mask, true = _online_candidates(task, cfg, prev_params, key, batch_size, K)
        win = jax.nn.sigmoid((true[:, :, None] - true[:, None, :]) / pref_temperature).mean(-1)
        seq_lp = lambda p: _seq_logp(p, cfg, batch.prompts, comps, mask)  # noqa: E731
        prev = jax.lax.stop_gradient(seq_lp(prev_params))
        w, l = jnp.argmax(true, 1), jnp.argmin(true, 1)
        pick = lambda x, i: jnp.take_along_axis(x, i[:, None], 1)[:, 0]  # noqa: E731

        def loss_fn(p):
            lp = seq_lp(p)
            return L.sppo_loss(pick(lp, w), pick(lp, l), pick(prev, w), pick(prev, l), pick(win, w), pick(win, l), hp["beta"])

        lval, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = optimizer.update(g, opt_state, params)
        metrics = {"loss": lval, "grad_norm": optax.tree.norm(g), "sample_true_reward": true.mean()}
        return optax.apply_updates(params, upd), opt_state, metrics

    return step


def make_nash_mp_step(task, cfg: ModelConfig, batch_size: int, num_candidates: int, optimizer, pref_temperature: float = 0.1):
    """One step of Nash mirror-prox with a parametric policy.

    A round has two halves.  In both, ``K`` completions per prompt are sampled from the round's
    anchor ``π_k`` and their win rates ``P̂(y ≻ opponent)`` are estimated against ``K`` completions
    of the opponent (Bradley–Terry on the true reward); θ is regressed onto the prox step from
    ``π_k`` (``losses.nash_mp_loss``).  First half: opponent ``π_k`` (θ becomes the midpoint).
    Second half: opponent = the midpoint (θ becomes ``π_{k+1}``).  The host loop sets
    ``anchor_params`` / ``opponent_params`` at the boundaries; ``ref_params`` is the fixed ``π_ref``.
    """
    K = num_candidates

    def step(params, opt_state, ref_params, anchor_params, opponent_params, key, hp):
        k1, k2 = jax.random.split(key)
        batch, comps, mask, true = _online_candidates(task, cfg, anchor_params, k1, batch_size, K)
        *_, true_opp = _online_candidates(task, cfg, opponent_params, k2, batch_size, K, prompts=batch)
        win = jax.nn.sigmoid((true[:, :, None] - true_opp[:, None, :]) / pref_temperature).mean(-1)
        seq_lp = lambda p: _seq_logp(p, cfg, batch.prompts, comps, mask)  # noqa: E731
        anchor_lp = jax.lax.stop_gradient(seq_lp(anchor_params))
        ref_lp = jax.lax.stop_gradient(seq_lp(ref_params))
        loss_fn = lambda p: L.nash_mp_loss(seq_lp(p), anchor_lp, ref_lp, win, hp["beta"], hp["eta"])  # noqa: E731
        lval, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = optimizer.update(g, opt_state, params)
        metrics = {"loss": lval, "grad_norm": optax.tree.norm(g), "sample_true_reward": true.mean()}
        return optax.apply_updates(params, upd), opt_state, metrics

    return step
