"""Token-level post-training losses over ``[batch, tokens]`` arrays with masks.

Notation (shared by every function): ``logp [B, T]`` per-token log-probabilities of the sampled
completions under the current policy π_θ (differentiable); ``old_logp`` under the policy that
sampled them; ``ref_logp`` under the reference model; ``mask [B, T]`` marks completion tokens.
Completions come in groups: ``B = num_prompts × G`` with a prompt's ``G`` completions adjacent,
``rewards [B]``.  Field names follow TRL's configs where TRL has one (``beta``, ``epsilon``,
``epsilon_high``, ``loss_type``, ``scale_rewards``, ``max_completion_length``).  Every loss is to
be minimised; scalar parameters (``q``, ``beta``, ``tau`` ...) may be traced arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


# ---------------------------------------------------------------- advantages and aggregation
SCALE_REWARDS = ("group", "batch", "none")


def advantage_scale(rewards, num_generations: int, scale_rewards="group", eps: float = 1e-4):
    """The per-completion factor ``1 / (std + eps)`` that GRPO's advantages are multiplied by ``[B]``.

    ``scale_rewards`` as in TRL: ``group`` (each prompt's reward std, ``ddof = 1`` like
    ``torch.std``: one success in four gives std 0.5 and advantage 1.5, not 1.73), ``batch`` (the
    std of every reward in the batch), ``none`` (factor 1: Dr. GRPO).  ``True``/``False`` mean
    ``group``/``none``."""
    mode = ("group" if scale_rewards else "none") if isinstance(scale_rewards, bool) else scale_rewards
    if mode == "none":
        return jnp.ones_like(rewards)
    if mode == "group":
        std = rewards.reshape(-1, num_generations).std(axis=1, ddof=1)
        return jnp.repeat(1.0 / (std + eps), num_generations)
    if mode == "batch":
        return jnp.full_like(rewards, 1.0 / (rewards.std(ddof=1) + eps))
    raise ValueError(f"unknown scale_rewards {scale_rewards!r}; valid: {', '.join(SCALE_REWARDS)}")


def group_advantages(rewards, num_generations: int, scale_rewards="group", eps: float = 1e-4):
    """GRPO: ``A_i = (r_i − mean_group r) · advantage_scale`` (TRL's ``scale_rewards``:
    ``group`` std with ``ddof = 1``, ``batch`` std, or ``none`` for Dr. GRPO)."""
    r = rewards.reshape(-1, num_generations)
    a = (r - r.mean(axis=1, keepdims=True)).reshape(-1)
    return a * advantage_scale(rewards, num_generations, scale_rewards, eps)


def rloo_advantages(rewards, num_generations: int):
    """RLOO: ``A_i = r_i − mean_{j≠i} r_j`` (leave-one-out baseline)."""
    r = rewards.reshape(-1, num_generations)
    loo = (r.sum(axis=1, keepdims=True) - r) / (num_generations - 1)
    return (r - loo).reshape(-1)


def aggregate(per_token, mask, loss_type: str, max_completion_length: int | None = None):
    """TRL's aggregation modes for a per-token loss ``[B, T]``:

    * ``grpo``: mean over sequences of the per-sequence token mean ``(1/|y_i|) Σ_t``;
    * ``dr_grpo``: ``Σ_{i,t} / (B · L_max)`` (constant normaliser);
    * ``dapo`` / ``bnpo``: ``Σ_{i,t} / Σ_{i,t} mask`` (token-level mean over the batch).
    """
    m = mask.astype(per_token.dtype)
    if loss_type == "grpo":
        return jnp.mean((per_token * m).sum(1) / jnp.maximum(m.sum(1), 1.0))
    if loss_type == "dr_grpo":
        L = max_completion_length or per_token.shape[1]
        return (per_token * m).sum() / (per_token.shape[0] * L)
    if loss_type in ("dapo", "bnpo"):
        return (per_token * m).sum() / jnp.maximum(m.sum(), 1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: grpo, dr_grpo, dapo, bnpo")


def k3_kl(logp, ref_logp):
    """Schulman's k3 estimator of KL(π_θ ‖ π_ref) per token: ``e^Δ − Δ − 1``, Δ = log π_ref − log π_θ."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


IMPORTANCE_LEVELS = ("token", "sequence")


def importance_ratio(logp, old_logp, mask, level: str = "token"):
    """``ρ [B, T]``: per token ``π_θ / π_old`` (``token``), or GSPO's sequence ratio
    ``exp(mean_t (log π_θ − log π_old))`` over the completion's tokens, the same for each of its
    tokens (``sequence``; TRL's ``importance_sampling_level``)."""
    log_ratio = logp - old_logp
    if level == "token":
        return jnp.exp(log_ratio)
    if level == "sequence":
        m = mask.astype(log_ratio.dtype)
        seq = (jnp.where(mask.astype(bool), log_ratio, 0.0)).sum(1) / jnp.maximum(m.sum(1), 1.0)
        return jnp.broadcast_to(jnp.exp(seq)[:, None], log_ratio.shape)
    raise ValueError(f"unknown importance_sampling_level {level!r}; valid: {', '.join(IMPORTANCE_LEVELS)}")


def clipped_pg_loss(logp, old_logp, ref_logp, mask, advantages, *, beta=0.0, epsilon=0.2, epsilon_high=None,
                    loss_type="grpo", max_completion_length=None, importance_sampling_level="token"):
    """The GRPO-family surrogate: per token
    ``s = min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A) − β k3``, loss ``= −aggregate(s)``; ``ρ`` per
    token, or GSPO's per sequence (:func:`importance_ratio`)."""
    eps_hi = epsilon if epsilon_high is None else epsilon_high
    ratio = importance_ratio(logp, old_logp, mask, importance_sampling_level)
    a = advantages[:, None]
    s = jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - epsilon, 1.0 + eps_hi) * a)
    if ref_logp is not None:  # masked first: an extreme log-prob on a pad position must not give inf·0 = NaN
        m = mask.astype(bool)
        s = s - beta * k3_kl(jnp.where(m, logp, 0.0), jnp.where(m, ref_logp, 0.0))
    return -aggregate(s, mask, loss_type, max_completion_length)


def pg_statistics(logp, old_logp, ref_logp, mask, advantages, *, epsilon=0.2, epsilon_high=None,
                  importance_sampling_level="token"):
    """What TRL logs for the clipped surrogate (no gradient): the fraction of completion tokens
    clipped at the low end (``ρ < 1 − ε`` with ``A < 0``) and at the high end (``ρ > 1 + ε_high``
    with ``A > 0``), and the mean k3 KL to the reference when there is one."""
    eps_hi = epsilon if epsilon_high is None else epsilon_high
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    ratio = sg(importance_ratio(logp, old_logp, mask, importance_sampling_level))
    a = advantages[:, None]
    out = {"clip_ratio_low": (((ratio < 1.0 - epsilon) & (a < 0)) * m).sum() / n,
           "clip_ratio_high": (((ratio > 1.0 + eps_hi) & (a > 0)) * m).sum() / n}
    if ref_logp is not None:
        mb = mask.astype(bool)
        out["kl"] = (sg(k3_kl(jnp.where(mb, logp, 0.0), jnp.where(mb, ref_logp, 0.0))) * m).sum() / n
    return out


def likelihood_direct_term(r_theta, pg_mask, loss_type: str, max_completion_length: int, baseline_factor=1.0):
    """The second gradient term of a likelihood reward, weighted like the policy-gradient term.

    With ``R_θ(z) = f(π_θ(a* | x, z))``, ``∇E_z[R_θ] = E_z[(R_θ − b) ∇log π_θ(z)] + E_z[∇R_θ(z)]``
    for a baseline ``b`` independent of ``z``.  The surrogate's aggregation gives completion ``i``'s
    ``A_i ∇log π_θ(z_i)`` the weight ``w_i``: ``1/(B L_max)`` for ``dr_grpo``, ``1/Σ|z|`` for
    ``dapo``/``bnpo``, and ``1/(B |z_i|)`` for ``grpo`` — whose length-dependent weight has no
    per-completion counterpart for ∇R (``|z_i|`` may be 0), so the direct term uses the batch's mean
    length there, ``1/(B · max(mean |z|, 1))``.  A baseline that includes the completion's own reward
    (the group mean) shrinks the policy-gradient term's expectation by ``(G−1)/G``:
    ``baseline_factor`` (``(G−1)/G``, or 1 for leave-one-out / no baseline) applies the same factor
    here, so that with ``scale_rewards=none`` the two terms are, in expectation, ``∇E[R]`` times one
    common constant (checked by exact enumeration in the tests).  GRPO's std scaling divides the
    policy-gradient term only: a 1/std factor on ``R_θ`` itself would be unbounded for a group of
    (near-)equal rewards.  Returns ``Σ_i factor · w_i · R_θ(z_i)``, to be *subtracted* from the loss."""
    n = pg_mask.astype(r_theta.dtype).sum(1)
    B = r_theta.shape[0]
    if loss_type == "grpo":
        w = jnp.full_like(r_theta, 1.0) / (B * jnp.maximum(n.mean(), 1.0))
    elif loss_type == "dr_grpo":
        w = jnp.full_like(r_theta, 1.0 / (B * max_completion_length))
    elif loss_type in ("dapo", "bnpo"):
        w = jnp.full_like(r_theta, 1.0) / jnp.maximum(n.sum(), 1.0)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: grpo, dr_grpo, dapo, bnpo")
    return jnp.sum(sg(baseline_factor * w) * r_theta)


def grpo_loss(logp, old_logp, ref_logp, mask, rewards, num_generations, *, beta=0.04, epsilon=0.2,
              epsilon_high=None, loss_type="grpo", scale_rewards="group", max_completion_length=None):
    """GRPO (``loss_type=grpo``, std-scaled group advantages), Dr. GRPO (``dr_grpo``, no std
    scaling, ``/(G·L_max)``), DAPO (``dapo``, token mean, ε_high = 0.28 by convention)."""
    adv = group_advantages(rewards, num_generations, scale_rewards)
    return clipped_pg_loss(logp, old_logp, ref_logp, mask, adv, beta=beta, epsilon=epsilon, epsilon_high=epsilon_high,
                           loss_type=loss_type, max_completion_length=max_completion_length)


def dapo_group_filter(rewards, num_generations: int):
    """DAPO's dynamic sampling as a weight: 0 for groups whose rewards are all equal, else 1 ``[B]``."""
    r = rewards.reshape(-1, num_generations)
    keep = (r.max(axis=1) > r.min(axis=1)).astype(rewards.dtype)
    return jnp.repeat(keep, num_generations)


def dapo_loss(logp, old_logp, ref_logp, mask, rewards, num_generations, *, beta=0.0, epsilon=0.2, epsilon_high=0.28):
    """DAPO: groups whose rewards are all equal are dropped for real — removed from the token-mean
    normaliser and from the KL term, as if they had not been sampled (the batch is not refilled:
    it simply has fewer sequences) — then clip-higher with a token-level mean over what remains."""
    keep = dapo_group_filter(rewards, num_generations)
    adv = group_advantages(rewards, num_generations)
    return clipped_pg_loss(logp, old_logp, ref_logp, mask * keep[:, None].astype(mask.dtype), adv, beta=beta,
                           epsilon=epsilon, epsilon_high=epsilon_high, loss_type="dapo")


# ---------------------------------------------------------------- Tsallis J_Q family
def ln_q(u, q):
    """Tsallis q-logarithm ``(u^{1−q} − 1)/(1 − q)``; ``ln_1 = log``."""
    q = jnp.asarray(q, jnp.float32)
    safe = jnp.where(jnp.abs(1.0 - q) < 1e-6, 0.5, 1.0 - q)
    return jnp.where(jnp.abs(1.0 - q) < 1e-6, jnp.log(u), (u**safe - 1.0) / safe)


def garl_loss(seq_logp, rewards, num_generations: int, q, *, p_floor=1e-3, baseline="mean"):
    """GARL (prior samples, amplified RL gradient):
    ``loss = −sg(max(P̂, ε)^{−q}) · (1/M) Σ_m sg(R_m − b) · ℓ_θ(z_m)`` per prompt, averaged over
    prompts; ``P̂`` the group mean reward, ``b = P̂`` or the leave-one-out mean."""
    r = rewards.reshape(-1, num_generations)
    ell = seq_logp.reshape(-1, num_generations)
    p_hat = r.mean(axis=1, keepdims=True)
    if baseline == "loo":
        b = (r.sum(axis=1, keepdims=True) - r) / (num_generations - 1)
    elif baseline == "mean":
        b = p_hat
    elif baseline == "none":
        b = jnp.zeros_like(p_hat)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; valid: mean, loo, none")
    weight = sg(jnp.maximum(p_hat, p_floor) ** (-q))
    return -jnp.mean(weight[:, 0] * jnp.mean(sg(r - b) * ell, axis=1))


def paft_resample(key, rewards, num_generations: int, num_resamples: int):
    """PAFT's posterior resampling: indices ``[P, K]`` (within each group) drawn ∝ R_m; groups
    without any reward draw uniformly (their loss weight P̂^{1−q} is then 0 anyway for q < 1)."""
    r = rewards.reshape(-1, num_generations)
    logits = jnp.where(r.sum(1, keepdims=True) > 0, jnp.log(jnp.maximum(r, 0.0) + 1e-30), 0.0)
    keys = jax.random.split(key, r.shape[0])
    return jax.vmap(lambda k, lg: jax.random.categorical(k, lg, shape=(num_resamples,)))(keys, logits)


def paft_loss(seq_logp, rewards, num_generations: int, q, idx):
    """PAFT (posterior resampling + SFT): ``loss = −sg(P̂^{1−q}) · mean_k ℓ_θ(z_k)`` with ``z_k``
    the resampled completions ``idx`` (:func:`paft_resample`).  ``q = 1``: rejection-sampling SFT.
    A group without any reward (``P̂ = 0``) has weight 0 for every q, q = 1 included (``0^0`` would
    be 1 and train on uniformly drawn failures)."""
    r = rewards.reshape(-1, num_generations)
    ell = seq_logp.reshape(-1, num_generations)
    p_hat = r.mean(axis=1)
    chosen = jnp.take_along_axis(ell, idx, axis=1).mean(axis=1)
    weight = jnp.where(p_hat > 0, jnp.maximum(p_hat, 1e-30) ** (1.0 - q), 0.0)
    return -jnp.mean(sg(weight) * chosen)


# ---------------------------------------------------------------- preference family
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
DPO_PAIRS = ("best_worst", "all")  # which candidate pairs DPO trains on (make_pref_step's ``pairs``)


def dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta=0.1, *, loss_type="sigmoid",
             label_smoothing=0.0):
    """DPO on the log-ratio margin ``h = (ℓ_θ − ℓ_ref)(y_w) − (ℓ_θ − ℓ_ref)(y_l)`` (sequence log-probs ``[B]``),
    TRL's ``loss_type``:

    * ``sigmoid``: ``−(1 − ε) log σ(β h) − ε log σ(−β h)`` — DPO, and with ``label_smoothing = ε > 0``
      conservative DPO (cDPO: labels flipped with probability ε);
    * ``ipo``: ``(h − 1/(2β))²`` (IPO, β the regularisation τ; TRL feeds it length-normalised
      log-probs, and so does ``make_pref_step``);
    * ``hinge``: ``max(0, 1 − β h)`` (SLiC);
    * ``robust``: ``(−(1 − ε) log σ(β h) + ε log σ(−β h)) / (1 − 2ε)`` — robust DPO (rDPO, Chowdhury
      et al. 2024) with ``label_smoothing = ε < ½`` the assumed flip rate: unbiased for the clean
      loss, ``(1 − ε) ℓ(h) + ε ℓ(−h) = −log σ(β h)``, where cDPO is DPO's loss averaged over flips.
      At ε = 0 it is DPO."""
    margin = (chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp)
    return jnp.mean(dpo_pair_losses(margin, beta, loss_type=loss_type, label_smoothing=label_smoothing))


def dpo_pair_losses(margin, beta=0.1, *, loss_type="sigmoid", label_smoothing=0.0):
    """:func:`dpo_loss` of each pair (not averaged), from its log-ratio margins ``h`` (any shape)."""
    ls = label_smoothing
    if loss_type == "sigmoid":
        return -((1.0 - ls) * jax.nn.log_sigmoid(beta * margin) + ls * jax.nn.log_sigmoid(-beta * margin))
    if loss_type == "robust":
        return (-(1.0 - ls) * jax.nn.log_sigmoid(beta * margin) + ls * jax.nn.log_sigmoid(-beta * margin)) / (1.0 - 2.0 * ls)
    if loss_type == "ipo":
        return (margin - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return jax.nn.relu(1.0 - beta * margin)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}; valid: {', '.join(DPO_LOSS_TYPES)}")


def candidate_pairs(scores, flip=None):
    """Every pair of a prompt's ``K`` candidates, each ordered by the recorded scores ``[B, K]``:
    winner and loser indices ``[B, K(K−1)/2]`` (pairs ``(i, j)``, ``i < j``, in ``triu_indices``
    order) and a mask that is False where the two scores tie (the pair records no preference).
    ``flip [B]``: a flipped prompt has every one of its pairs reversed."""
    i, j = jnp.triu_indices(scores.shape[-1], 1)
    s = scores if flip is None else jnp.where(flip[:, None], -scores, scores)
    first = s[:, i] > s[:, j]
    return jnp.where(first, i, j), jnp.where(first, j, i), s[:, i] != s[:, j]


def all_pairs_dpo_loss(seq_logp, ref_logp, scores, beta=0.1, *, flip=None, loss_type="sigmoid", label_smoothing=0.0):
    """DPO on all ``K(K−1)/2`` candidate pairs of every prompt (:func:`candidate_pairs`; sequence
    log-probs ``[B, K]``): the mean of :func:`dpo_pair_losses` over the pairs without a tie (divided
    by their number, at least 1; tied pairs contribute nothing)."""
    w, l, valid = candidate_pairs(scores, flip)
    r = seq_logp - ref_logp
    margin = jnp.take_along_axis(r, w, 1) - jnp.take_along_axis(r, l, 1)
    per = dpo_pair_losses(margin, beta, loss_type=loss_type, label_smoothing=label_smoothing)
    return jnp.sum(jnp.where(valid, per, 0.0)) / jnp.maximum(valid.sum(), 1)


def adpo_logits(seq_logp, anchor_logp, tau):
    """ADPO's anchored scores ``u_i = (ℓ_θ(y_i) − ℓ_anchor(y_i)) / τ`` over candidates ``[B, K]``."""
    return (seq_logp - anchor_logp) / tau


def adpo_loss(u, target):
    """ADPO listwise / soft-pairwise: ``KL(q ‖ softmax(u))`` (up to the constant entropy of q), i.e.
    ``−Σ_i q_i log softmax(u)_i``; its gradient in ``u`` is ``softmax(u) − q``."""
    return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(u, axis=-1), axis=-1))


def adpo_targets_pairwise(p_tilde):
    """Soft pairwise target ``q = (p̃, 1 − p̃)`` for (first, second) candidates ``[B] -> [B, 2]``."""
    return jnp.stack([p_tilde, 1.0 - p_tilde], axis=-1)


def adpo_targets_listwise(scores, beta_r):
    """Listwise target ``q = softmax(r / β_r)`` over candidates ``[B, K]``."""
    return jax.nn.softmax(scores / beta_r, axis=-1)


def plackett_luce_loss(u, ranking):
    """Plackett–Luce: ``−Σ_k [u_σ(k) − logsumexp_{j ≥ k} u_σ(j)]``; ``ranking [B, K]`` best first."""
    us = jnp.take_along_axis(u, ranking, axis=-1)
    tail_lse = jax.lax.cumlogsumexp(us[..., ::-1], axis=us.ndim - 1)[..., ::-1]
    return -jnp.mean(jnp.sum(us - tail_lse, axis=-1))


def sppo_loss(chosen_logp, rejected_logp, prev_chosen_logp, prev_rejected_logp, win_chosen, win_rejected, beta):
    """SPPO: ``½[(ℓ_θ − ℓ_t)(y_w) − η(P̂_w − ½)]² + ½[(ℓ_θ − ℓ_t)(y_l) − η(P̂_l − ½)]²``, η = 1/β,
    ``ℓ_t`` the previous iterate, ``P̂`` estimated win rates against it."""
    eta = 1.0 / beta
    a = (chosen_logp - prev_chosen_logp) - eta * (win_chosen - 0.5)
    b = (rejected_logp - prev_rejected_logp) - eta * (win_rejected - 0.5)
    return jnp.mean(0.5 * a**2 + 0.5 * b**2)


def nash_mp_step(log_pi, log_ref, pref, beta, eta):
    """One Nash mirror-prox step on a tabular policy over ``n`` responses (``pref[i, j] = P(i ≻ j)``).

    Half step against the current policy, then the full step from ``π_k`` against the midpoint:
    ``log π' ∝ [η/(β(1+η))]·P(y ≻ opp) + [η/(1+η)]·log π_ref + [1/(1+η)]·log π_k``.
    """

    def prox(opponent_log):
        win = pref @ jnp.exp(opponent_log)
        logits = (eta / (beta * (1 + eta))) * win + (eta / (1 + eta)) * log_ref + (1 / (1 + eta)) * log_pi
        return jax.nn.log_softmax(logits)

    mid = prox(log_pi)
    return prox(mid)


def nash_mp_loss(seq_logp, anchor_logp, ref_logp, win, beta, eta):
    """One Nash-MP prox step with a parametric policy: group-centred regression onto the tabular step.

    For ``K`` responses per prompt (all arrays ``[N, K]``: sequence log-probs under θ, under the
    anchor ``π_k`` and under ``π_ref``, and win rates ``P̂(y ≻ opponent)``), the prox step's target is
    ``log π'(y) − log π_k(y) = c₁·P(y ≻ opp) + c₂·(log π_ref(y) − log π_k(y)) − log Z`` with
    ``c₁ = η/(β(1+η))`` and ``c₂ = η/(1+η)`` (``nash_mp_step`` written relative to ``π_k``).  ``log Z``
    is the same for every response of a prompt, so it cancels when both sides are centred over the
    group: ``loss = mean ½[(d − d̄) − (t − t̄)]²``, ``d = ℓ_θ − ℓ_k``, ``t`` the right-hand side.  When
    the ``K`` responses are all the responses (a tabular policy) its minimiser is the exact step.
    """
    c1 = eta / (beta * (1.0 + eta))
    c2 = eta / (1.0 + eta)
    d = seq_logp - anchor_logp
    t = c1 * win + c2 * (ref_logp - anchor_logp)
    err = (d - d.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
    return jnp.mean(0.5 * err**2)


def self_play_step(log_pi, pref, lr):
    """Plain self-play (multiplicative weights against the current policy), for comparison."""
    return jax.nn.log_softmax(log_pi + lr * (pref @ jnp.exp(log_pi)))


# ---------------------------------------------------------------- ROVER, EPO, FG-ExPO
def rover_targets(logits, old_logits, tokens, mask, rewards, num_generations: int, rho=1.0):
    """ROVER: ``Q_t = ρ[log π_θ(y_t) − log π_old(y_t)]``, ``V̄(s) = ρ · mean_vocab(log π_θ − log π_old)``,
    ``target_t = r̃ + sg(V̄(s_{t+1}))`` (no bootstrap after the last completion token), with r̃ the
    group-centred, std-normalised reward on every token.  Returns ``(Q [B, T], target [B, T])``;
    ``logits [B, T, V]`` predict ``tokens [B, T]``, position ``t+1``'s logits give ``V̄(s_{t+1})``."""
    lp = jax.nn.log_softmax(logits, -1)
    lp_old = jax.nn.log_softmax(old_logits, -1)
    diff = lp - lp_old
    q = rho * jnp.take_along_axis(diff, tokens[..., None], -1)[..., 0]
    v_bar = rho * diff.mean(-1)
    v_next = jnp.concatenate([v_bar[:, 1:], jnp.zeros_like(v_bar[:, :1])], axis=1)
    m = mask.astype(q.dtype)
    m_next = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
    r_tilde = group_advantages(rewards, num_generations, scale_rewards="group")[:, None]
    return q, r_tilde + sg(v_next * m_next)


def rover_loss(logits, old_logits, tokens, mask, rewards, num_generations: int, rho=1.0):
    q, target = rover_targets(logits, old_logits, tokens, mask, rewards, num_generations, rho)
    m = mask.astype(q.dtype)
    return jnp.sum((q - target) ** 2 * m) / jnp.maximum(m.sum(), 1.0)


def token_entropy(logits):
    lp = jax.nn.log_softmax(logits, -1)
    return -jnp.sum(jnp.exp(lp) * lp, -1)


def epo_regulariser(logits, mask, running_entropy, *, entropy_coef, kappa_low=0.8, kappa_high=1.2, smooth_coef=1.0):
    """EPO's entropy terms (to add to a loss): ``−λ_H · H`` plus a differentiable smoothing penalty
    ``relu(κ_l H̄ − H_t) + relu(H_t − κ_r H̄)`` keeping each step's entropy near its running mean H̄.
    ``running_entropy = NaN`` means "not measured yet": the band is then centred on this batch's
    own mean entropy (a fixed start such as 1.0 would pull a fresh model's ~ln V entropy down).
    Returns ``(regulariser, batch mean entropy)`` (use the latter to update H̄)."""
    m = mask.astype(logits.dtype)
    h = token_entropy(logits)
    mean_h = (h * m).sum() / jnp.maximum(m.sum(), 1.0)
    ref = jnp.where(jnp.isnan(running_entropy), sg(mean_h), running_entropy)
    band = jax.nn.relu(kappa_low * ref - h) + jax.nn.relu(h - kappa_high * ref)
    penalty = (band * m).sum() / jnp.maximum(m.sum(), 1.0)
    return -entropy_coef * mean_h + smooth_coef * penalty, sg(mean_h)


def epo_phase_weight(progress, smooth_coef, early_smooth_coef, phase_boundary):
    """EPO's phase-based weight of the smoothing penalty: ``early_smooth_coef`` while the fraction
    of training done is below ``phase_boundary``, ``smooth_coef`` after it — from conservative
    exploration early to strong stabilisation late.  Equal values give a constant weight."""
    return jnp.where(progress < phase_boundary, early_smooth_coef, smooth_coef)


def fg_expo_beta(beta0, accuracy, sharpness=10.0, midpoint=0.5):
    """FG-ExPO's accuracy-conditioned KL weight ``β = β₀ · σ(k (acc − m))`` (smooth, increasing)."""
    return beta0 * jax.nn.sigmoid(sharpness * (accuracy - midpoint))


def fg_expo_curriculum_weights(p_hat, sigma=0.2):
    """Gaussian curriculum over prompts: weight ∝ ``exp(−(p̂(x) − ½)² / 2σ²)``, normalised."""
    w = jnp.exp(-((p_hat - 0.5) ** 2) / (2 * sigma**2))
    return w / w.sum()


# ---------------------------------------------------------------- likelihood-based rewards
def likelihood_rewards(answer_logp, answer_mask, kind: str):
    """Rewards from the teacher-forced log-probs of the reference answer after the sampled chain of
    thought: ``logprob`` = Σ log π(a*|x,z), ``prob`` = exp of it (VeriFree), ``mean_prob`` = mean token
    probability (RLPR).  Differentiable: the SFT-like second gradient term flows through them."""
    m = answer_mask.astype(answer_logp.dtype)
    total = (answer_logp * m).sum(-1)
    if kind == "logprob":
        return total
    if kind == "prob":
        return jnp.exp(total)
    if kind == "mean_prob":
        return (jnp.exp(answer_logp) * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)
    raise ValueError(f"unknown likelihood reward {kind!r}; valid: logprob, prob, mean_prob")
