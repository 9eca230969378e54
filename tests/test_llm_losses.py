"""LLM losses on exact small problems: an enumerable tree (vocabulary 4, depth 3), identities
between losses, ROVER targets by direct computation, Nash-MP on rock-paper-scissors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl.llm import losses as L

V, DEPTH = 4, 3
SEQS = np.array(list(itertools.product(range(V), repeat=DEPTH)))  # all 64 sequences
# node index of every prefix: root 0, then depth-1 prefixes 1..4, depth-2 prefixes 5..20
PREFIX_NODE = np.stack([np.zeros(len(SEQS), int), 1 + SEQS[:, 0], 1 + V + SEQS[:, 0] * V + SEQS[:, 1]], axis=1)
REWARD = jnp.asarray(((SEQS[:, 0] == 1) & (SEQS[:, 2] >= 2)) | (SEQS.sum(1) == 9), jnp.float32)


def seq_logp(theta):
    """log π(z) for all 64 sequences of the tabular tree policy θ [21 nodes, V]."""
    lp = jax.nn.log_softmax(theta, -1)
    return sum(lp[PREFIX_NODE[:, t], SEQS[:, t]] for t in range(DEPTH))


def exact_grad_jq(theta, q):
    return jax.grad(lambda th: L.ln_q(jnp.sum(jnp.exp(seq_logp(th)) * REWARD), q))(theta)


def estimator_mean(theta, q, M, kind, repeats=4000, seed=0):
    """Average over ``repeats`` independent batches of M samples of the loss's negative gradient."""
    def one(key):
        k1, k2 = jax.random.split(key)
        idx = jax.random.categorical(k1, seq_logp(theta), shape=(M,))
        r = REWARD[idx]

        def loss(th):
            ell = seq_logp(th)[idx]
            if kind == "garl":
                return L.garl_loss(ell, r, M, q, p_floor=1e-3, baseline="loo")
            res = L.paft_resample(k2, r, M, M)
            return L.paft_loss(ell, r, M, q, res)

        return -jax.grad(loss)(theta)

    keys = jax.random.split(jax.random.PRNGKey(seed), repeats)
    return jax.jit(jax.vmap(one))(keys).mean(0)


THETA = jax.random.normal(jax.random.PRNGKey(3), (1 + V + V * V, V)) * 0.5


def _rel_err(est, exact):
    return float(jnp.linalg.norm(est - exact) / jnp.linalg.norm(exact))


@pytest.mark.parametrize("kind", ["garl", "paft"])
@pytest.mark.parametrize("q", [0.5, 1.0])
def test_tsallis_estimators_converge_to_exact_gradient(kind, q):
    p = float(jnp.sum(jnp.exp(seq_logp(THETA)) * REWARD))
    assert 0.05 < p < 0.5
    exact = exact_grad_jq(THETA, q)
    errs = [_rel_err(estimator_mean(THETA, q, M, kind), exact) for M in (4, 64)]
    assert errs[1] < errs[0], errs
    assert errs[1] < 0.12, errs


def test_ln_q_limits():
    u = jnp.array([0.01, 0.3, 1.0, 2.0])
    np.testing.assert_allclose(L.ln_q(u, 1.0), jnp.log(u), rtol=1e-6)
    np.testing.assert_allclose(L.ln_q(u, 0.9999), jnp.log(u), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(L.ln_q(u, 0.0), u - 1.0, rtol=1e-6)
    # J_Q's gradient is the RL gradient amplified by P^-q
    p0 = 0.2
    g = jax.grad(lambda p: L.ln_q(p, 0.75))(p0)
    assert float(g) == pytest.approx(p0 ** -0.75, rel=1e-5)


def test_adpo_with_two_candidates_is_dpo():
    rng = np.random.default_rng(0)
    pol = jnp.asarray(rng.normal(size=(5, 2)) - 10, jnp.float32)
    ref = jnp.asarray(rng.normal(size=(5, 2)) - 10, jnp.float32)
    beta = 0.1

    def adpo(p):
        u = L.adpo_logits(p, ref, 1.0 / beta)
        return L.adpo_loss(u, L.adpo_targets_pairwise(jnp.ones(5)))

    def dpo(p):
        return L.dpo_loss(p[:, 0], p[:, 1], ref[:, 0], ref[:, 1], beta)

    assert float(adpo(pol)) == pytest.approx(float(dpo(pol)), rel=1e-6)
    np.testing.assert_allclose(jax.grad(adpo)(pol), jax.grad(dpo)(pol), rtol=1e-5, atol=1e-8)
    # the gradient in u is softmax(u) - q
    u = jnp.array([[0.3, -0.2, 1.0]])
    q = jnp.array([[0.2, 0.5, 0.3]])
    np.testing.assert_allclose(jax.grad(L.adpo_loss)(u, q), jax.nn.softmax(u) - q, rtol=1e-5)


def test_plackett_luce_by_hand():
    u = jnp.array([[2.0, 0.0, 1.0]])
    ranking = jnp.array([[0, 2, 1]])
    expected = -((2.0 - np.log(np.exp(2) + np.exp(1) + np.exp(0))) + (1.0 - np.log(np.exp(1) + np.exp(0))) + 0.0)
    assert float(L.plackett_luce_loss(u, ranking)) == pytest.approx(expected, rel=1e-6)


def test_rover_targets_match_direct_computation():
    rng = np.random.default_rng(1)
    B, T, Vv, G = 4, 5, 6, 2
    logits = rng.normal(size=(B, T, Vv)).astype(np.float32)
    old = rng.normal(size=(B, T, Vv)).astype(np.float32)
    tokens = rng.integers(0, Vv, size=(B, T))
    lengths = [5, 3, 4, 1]
    mask = np.array([[t < n for t in range(T)] for n in lengths])
    rewards = np.array([1.0, 0.0, 0.5, 0.0], np.float32)
    q, tgt = L.rover_targets(jnp.asarray(logits), jnp.asarray(old), jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(rewards), G)

    def logsm(x):
        return x - np.log(np.exp(x).sum())

    for i in range(B):
        grp = rewards[(i // G) * G : (i // G) * G + G]
        r_tilde = (rewards[i] - grp.mean()) / (grp.std(ddof=1) + 1e-4)  # ddof 1, as TRL
        for t in range(lengths[i]):
            diff_t = logsm(logits[i, t]) - logsm(old[i, t])
            assert float(q[i, t]) == pytest.approx(diff_t[tokens[i, t]], rel=1e-4, abs=1e-5)
            v_next = (logsm(logits[i, t + 1]) - logsm(old[i, t + 1])).mean() if t + 1 < lengths[i] else 0.0
            assert float(tgt[i, t]) == pytest.approx(r_tilde + v_next, rel=1e-4, abs=1e-5)


def test_nash_mp_converges_where_self_play_cycles():
    # rock-paper-scissors: P(i beats j)
    pref = jnp.array([[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]])
    log_ref = jnp.log(jnp.ones(3) / 3)
    start = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    uniform = jnp.ones(3) / 3  # the regularised Nash equilibrium for a uniform reference
    nmp, sp = start, start
    sp_dists = []
    for _ in range(300):
        nmp = L.nash_mp_step(nmp, log_ref, pref, beta=0.1, eta=0.5)
        sp = L.self_play_step(sp, pref, lr=0.5)
        sp_dists.append(float(jnp.abs(jnp.exp(sp) - uniform).sum()))
    assert float(jnp.abs(jnp.exp(nmp) - uniform).sum()) < 1e-4
    assert min(sp_dists[-100:]) > 0.05  # self-play keeps cycling away from the equilibrium


def test_nash_mp_regression_reproduces_the_tabular_step():
    # Fitting a softmax policy by the group-centred regression, once against π_k (midpoint) and once
    # against the midpoint (full step, anchored at π_k), lands on nash_mp_step's exact update.
    pref = jnp.array([[0.5, 0.2, 0.9, 0.4], [0.8, 0.5, 0.1, 0.6], [0.1, 0.9, 0.5, 0.3], [0.6, 0.4, 0.7, 0.5]])
    log_ref = jax.nn.log_softmax(jnp.array([0.3, -0.2, 0.1, 0.0]))
    log_k = jax.nn.log_softmax(jnp.array([1.0, 0.2, -0.5, 0.3]))
    beta, eta = 0.5, 0.7

    def fit(opponent_log):
        win = (pref @ jnp.exp(opponent_log))[None]
        loss = lambda th: L.nash_mp_loss(jax.nn.log_softmax(th)[None], log_k[None], log_ref[None], win, beta, eta)  # noqa: E731
        th = jax.jit(lambda th: jax.lax.fori_loop(0, 3000, lambda i, th: th - 2.0 * jax.grad(loss)(th), th))(jnp.zeros(4))
        assert float(loss(th)) < 1e-10
        return jax.nn.log_softmax(th)

    full = fit(fit(log_k))
    np.testing.assert_allclose(full, L.nash_mp_step(log_k, log_ref, pref, beta, eta), atol=1e-4)
    # and the loss is not blind: an untrained policy is far from the target
    win = (pref @ jnp.exp(log_k))[None]
    assert float(L.nash_mp_loss(log_k[None], log_k[None], log_ref[None], win, beta, eta)) > 1e-3


def test_group_advantages_and_aggregation_by_hand():
    r = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    a = L.group_advantages(r, 4)
    # TRL's torch.std is ddof 1: one success in four has std 0.5 and advantage 1.5 (ddof 0 would give 1.73)
    np.testing.assert_allclose(a[:4], np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4), rtol=1e-5)
    assert float(a[0]) == pytest.approx(1.5, abs=1e-3)
    np.testing.assert_allclose(a[4:], 0.0)
    np.testing.assert_allclose(L.group_advantages(r, 4, scale_rewards="none")[:4], [0.75, -0.25, -0.25, -0.25])
    np.testing.assert_allclose(L.group_advantages(r, 4, scale_rewards=False)[:4], [0.75, -0.25, -0.25, -0.25])
    batch_std = np.std(np.asarray(r), ddof=1)  # scale_rewards=batch: group-centred, divided by the batch's std
    np.testing.assert_allclose(L.group_advantages(r, 4, scale_rewards="batch")[:4],
                               np.array([0.75, -0.25, -0.25, -0.25]) / (batch_std + 1e-4), rtol=1e-5)
    with pytest.raises(ValueError, match="scale_rewards"):
        L.group_advantages(r, 4, scale_rewards="prompt")
    np.testing.assert_allclose(L.rloo_advantages(r, 4)[:4], [1.0, -1 / 3, -1 / 3, -1 / 3], rtol=1e-6)
    np.testing.assert_allclose(L.dapo_group_filter(r, 4), [1, 1, 1, 1, 0, 0, 0, 0])
    per_tok = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = jnp.array([[1, 1, 1], [1, 0, 0]], bool)
    assert float(L.aggregate(per_tok, mask, "grpo")) == pytest.approx((2.0 + 4.0) / 2)
    assert float(L.aggregate(per_tok, mask, "dr_grpo", 4)) == pytest.approx(10.0 / 8)
    assert float(L.aggregate(per_tok, mask, "dapo")) == pytest.approx(10.0 / 4)


def test_clipped_surrogate_and_k3():
    logp = jnp.log(jnp.array([[0.5, 0.9]]))
    old = jnp.log(jnp.array([[0.25, 0.9]]))  # ratio 2 on the first token
    mask = jnp.ones((1, 2), bool)
    loss = L.clipped_pg_loss(logp, old, None, mask, jnp.array([1.0]), epsilon=0.2, epsilon_high=0.28)
    assert float(loss) == pytest.approx(-(1.28 + 1.0) / 2)
    assert float(L.k3_kl(jnp.log(0.5), jnp.log(0.5))) == 0.0
    assert float(L.k3_kl(jnp.log(0.5), jnp.log(0.25))) == pytest.approx(0.5 - np.log(0.5) - 1)


def test_likelihood_rewards():
    lp = jnp.log(jnp.array([[0.5, 0.25, 0.9]]))
    m = jnp.array([[1, 1, 0]], bool)
    assert float(L.likelihood_rewards(lp, m, "logprob")[0]) == pytest.approx(np.log(0.125))
    assert float(L.likelihood_rewards(lp, m, "prob")[0]) == pytest.approx(0.125)
    assert float(L.likelihood_rewards(lp, m, "mean_prob")[0]) == pytest.approx(0.375)


def test_epo_penalty_has_gradient_outside_band():
    logits = jnp.zeros((1, 2, 4)).at[0, 0, 0].set(5.0)
    mask = jnp.ones((1, 2), bool)
    g = jax.grad(lambda x: L.epo_regulariser(x, mask, jnp.float32(1.0), entropy_coef=0.0)[0])(logits)
    assert float(jnp.abs(g).sum()) > 0


def test_fg_expo_pieces():
    assert float(L.fg_expo_beta(0.1, 0.9)) > float(L.fg_expo_beta(0.1, 0.1))
    w = L.fg_expo_curriculum_weights(jnp.array([0.0, 0.5, 1.0]))
    assert float(w.sum()) == pytest.approx(1.0) and float(w[1]) > float(w[0])


def test_paft_at_q1_does_not_train_on_groups_without_success():
    """``P̂^{1−q}`` at q = 1 and P̂ = 0 is 0^0 = 1 in JAX: a group with no success trained on
    uniformly drawn failures (gradient [−.25, 0, −.25, 0]); its weight is 0 for every q."""
    rewards = jnp.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    idx = jnp.array([[0, 2], [0, 0]])
    for q in (1.0, 0.999, 0.5):
        g = jax.grad(lambda ell: L.paft_loss(ell, rewards, 4, q, idx))(jnp.zeros(8))
        np.testing.assert_array_equal(g[:4], 0.0)  # the failed group
        assert float(g[4]) < 0  # the success is imitated (weight (1/4)^{1−q})
    g1 = jax.grad(lambda ell: L.paft_loss(ell, rewards, 4, 1.0, idx))(jnp.zeros(8))
    np.testing.assert_allclose(g1[4], -0.5)  # q = 1: rejection-sampling SFT, weight 1, mean over prompts (2)


def test_k3_kl_is_masked_before_it_is_computed():
    logp = jnp.array([[-1.0, -2.0, -1e4]])
    ref = jnp.array([[-1.2, -1.0, 0.0]])  # e^{ref − logp} overflows on the pad position
    mask = jnp.array([[1, 1, 0]])
    loss = L.clipped_pg_loss(logp, logp, ref, mask, jnp.array([0.5]), beta=0.1)
    assert np.isfinite(float(loss))
    want = -(0.5 - 0.1 * np.mean([np.exp(-0.2) + 0.2 - 1, np.exp(1.0) - 1.0 - 1]))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_epo_band_starts_at_the_first_measured_entropy():
    """A fresh model's entropy is ~ln V; a running mean started at 1.0 put every token above the
    band and the penalty pulled entropy down. Unmeasured (NaN), the band is centred on the batch."""
    logits = jnp.zeros((2, 3, 8))  # uniform: every token has entropy ln 8
    mask = jnp.ones((2, 3))
    reg_new, h = L.epo_regulariser(logits, mask, jnp.float32(jnp.nan), entropy_coef=0.0)
    reg_old, _ = L.epo_regulariser(logits, mask, jnp.float32(1.0), entropy_coef=0.0)
    np.testing.assert_allclose(h, np.log(8), rtol=1e-6)
    assert float(reg_new) == 0.0
    np.testing.assert_allclose(reg_old, np.log(8) - 1.2, rtol=1e-6)  # what the old start did
    g = jax.grad(lambda lg: L.epo_regulariser(lg, mask, jnp.float32(1.0), entropy_coef=0.0)[0])(logits + 0.1 * jnp.arange(8.0))
    assert float(jnp.abs(g).sum()) > 0  # (that penalty had a gradient)


def test_dapo_drops_equal_reward_groups_for_real():
    """The loss and gradient with a constant-reward group present equal those with it removed (the
    zero-weighted group used to count in the token normaliser and get the KL term: half the gradient)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    G, T = 4, 5
    rewards = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # group 2 is constant
    old = jax.random.normal(k1, (8, T)) - 2.0
    ref = jax.random.normal(k2, (8, T)) - 2.0
    mask = (jax.random.uniform(k3, (8, T)) < 0.8).at[:, 0].set(True)

    def full(lp):
        return L.dapo_loss(lp, old, ref, mask, rewards, G, beta=0.1)

    def kept(lp):
        return L.dapo_loss(lp[:4], old[:4], ref[:4], mask[:4], rewards[:4], G, beta=0.1)

    lp = old + 0.1
    np.testing.assert_allclose(full(lp), kept(lp), rtol=1e-6)
    g_full, g_kept = jax.grad(full)(lp), jax.grad(kept)(lp)
    np.testing.assert_allclose(g_full[:4], g_kept[:4], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(g_full[4:], 0.0)


@pytest.mark.parametrize("name,opts,G,c", [
    ("dr_grpo", {}, 2, 0.5), ("dr_grpo", {}, 3, 2 / 3), ("grpo", {"scale_rewards": "none"}, 3, 2 / 3),
    ("rloo", {}, 3, 1.0), ("rloo", {"loss_type": "grpo"}, 2, 1.0), ("garl", {"baseline": "loo"}, 3, 1.0),
])  # (DAPO is left out: dropping equal-reward groups conditions on the rewards, a different objective by design)
def test_likelihood_reward_gradient_is_unbiased_by_exact_enumeration(name, opts, G, c):
    """R_θ(z) depends on θ: ∇E[R] = E[R ∇log π(z)] + E[∇R].  Enumerate every group of G one-token
    chains of thought z ∈ {0, 1, 2}: the surrogate's expected gradient must be c·∇E[R] exactly, with
    c = (G−1)/G for a group-mean baseline (it shrinks E[(R − r̄)∇log π] by that) and 1 for
    leave-one-out.  The old direct term (−mean R_θ) gives Dr. GRPO E[∇R] a weight L_max·G/(G−1) too large."""
    import itertools

    from purejaxrl.llm import rl_losses as R

    theta_z = jnp.array([0.3, -0.2, 0.5])
    theta_a = jnp.array([-1.0, 0.5, 2.0])
    reward = lambda ta, z: jax.nn.sigmoid(ta[z])  # noqa: E731  a probability-like likelihood reward
    J = lambda tz, ta: jnp.sum(jax.nn.softmax(tz) * reward(ta, jnp.arange(3)))  # noqa: E731
    exact = jax.grad(J, argnums=(0, 1))(theta_z, theta_a)
    entry = R.get(name)
    hp = {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2, "q": 0.0, "p_floor": 1e-3}

    def loss(tz, ta, z, pg=True):
        lp = jax.nn.log_softmax(tz)[z][:, None]
        x = {"logp": lp, "old_logp": jax.lax.stop_gradient(lp), "seq_logp": lp[:, 0], "mask": jnp.ones((G, 1), bool),
             "rewards": jax.lax.stop_gradient(reward(ta, z)), "r_theta": reward(ta, z), "G": G, "L_max": 1,
             "policy_gradient": pg}
        return entry.fn(x, hp, entry.resolve(opts))[0]

    pi = np.asarray(jax.nn.softmax(theta_z))
    expected = [np.zeros(3), np.zeros(3)]
    for z in itertools.product(range(3), repeat=G):
        g = jax.grad(loss, argnums=(0, 1))(theta_z, theta_a, jnp.asarray(z))
        prob = np.prod(pi[list(z)])
        expected = [e + prob * np.asarray(gi) for e, gi in zip(expected, g)]
    np.testing.assert_allclose(-expected[0], c * np.asarray(exact[0]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(-expected[1], c * np.asarray(exact[1]), rtol=1e-4, atol=1e-7)
    # the SFT-only control: the same teacher-forced term, no policy gradient
    z = jnp.array([0, 2] + [1] * (G - 2))
    gz, ga = jax.grad(lambda a, b: loss(a, b, z, pg=False), argnums=(0, 1))(theta_z, theta_a)
    np.testing.assert_allclose(np.asarray(gz), 0.0)
    assert float(jnp.abs(ga).sum()) > 0


def test_likelihood_direct_term_stays_bounded_for_equal_rewards():
    """GRPO's 1/std scales the policy-gradient term only: a group of equal likelihood rewards must not
    give its R_θ a weight of 1/(0 + 1e-4)."""
    from purejaxrl.llm import rl_losses as R

    G = 4
    ta = jnp.full((G,), -2.0)
    x = {"logp": jnp.zeros((G, 2)), "old_logp": jnp.zeros((G, 2)), "mask": jnp.ones((G, 2), bool),
         "rewards": ta, "G": G, "L_max": 2}
    g = jax.grad(lambda a: R.get("grpo").fn({**x, "r_theta": a}, {}, R.get("grpo").resolve({}))[0])(ta)
    np.testing.assert_allclose(np.asarray(g), -(G - 1) / G / (G * 2), rtol=1e-5)


def test_dapo_with_sequence_aggregation_normalises_by_the_kept_groups():
    from purejaxrl.llm import rl_losses as R

    rng = np.random.default_rng(0)
    logp = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) - 2
    mask = jnp.asarray([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], bool)
    rewards = jnp.array([1.0, 0.0, 1.0, 1.0])  # group 2 has equal rewards: dropped
    entry = R.get("dapo")
    hp = {"epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0}
    for lt in ("grpo", "dr_grpo", "dapo"):
        opts = entry.resolve({"loss_type": lt})
        x = lambda sl: {"logp": logp[sl], "old_logp": logp[sl] - 0.1, "mask": mask[sl], "rewards": rewards[sl], "G": 2, "L_max": 3}  # noqa: E731
        full = float(entry.fn(x(slice(0, 4)), hp, opts)[0])
        kept = float(entry.fn(x(slice(0, 2)), hp, opts)[0])
        assert full == pytest.approx(kept, rel=1e-6), lt


def test_fg_expo_reads_accuracy_from_the_verifier():
    from purejaxrl.llm import rl_losses as R

    x = {"logp": jnp.zeros((4, 2)), "old_logp": jnp.zeros((4, 2)), "mask": jnp.ones((4, 2), bool),
         "rewards": jnp.array([-3.0, -2.0, -4.0, -1.0]), "verifier_rewards": jnp.ones(4), "G": 4, "L_max": 2}
    _, aux = R.get("fg_expo").fn(x, {"beta": 0.04, "sharpness": 10.0, "midpoint": 0.5}, R.get("fg_expo").resolve({}))
    assert float(aux["kl_beta"]) == pytest.approx(0.04 / (1 + np.exp(-5.0)))


def test_dpo_loss_types_by_hand():
    c, r, rc, rr = jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0])  # margin h = 2
    beta = 0.5
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    assert float(L.dpo_loss(c, r, rc, rr, beta)) == pytest.approx(-np.log(sig(1.0)))
    # conservative DPO at ε is DPO's expected loss when each label is flipped with probability ε
    eps = 0.2
    cdpo = float(L.dpo_loss(c, r, rc, rr, beta, label_smoothing=eps))
    flipped = float(L.dpo_loss(r, c, rr, rc, beta))
    assert cdpo == pytest.approx((1 - eps) * -np.log(sig(1.0)) + eps * flipped)
    assert float(L.dpo_loss(c, r, rc, rr, beta, loss_type="ipo")) == pytest.approx((2.0 - 1.0 / (2 * beta)) ** 2)
    assert float(L.dpo_loss(c, r, rc, rr, beta, loss_type="hinge")) == pytest.approx(0.0)
    assert float(L.dpo_loss(r, c, rr, rc, beta, loss_type="hinge")) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="loss_type"):
        L.dpo_loss(c, r, rc, rr, beta, loss_type="bogus")


def test_epo_phase_based_weight():
    assert float(L.epo_phase_weight(0.2, 1.0, 0.1, 0.5)) == pytest.approx(0.1)
    assert float(L.epo_phase_weight(0.5, 1.0, 0.1, 0.5)) == pytest.approx(1.0)
    assert float(L.epo_phase_weight(0.9, 1.0, 1.0, 0.5)) == pytest.approx(1.0)


def test_pg_statistics_count_clipped_tokens():
    logp = jnp.log(jnp.array([[0.5, 0.1, 0.9], [0.5, 0.1, 0.9]]))
    old = jnp.log(jnp.array([[0.25, 0.2, 0.9], [0.25, 0.2, 0.9]]))  # ratios 2, 0.5, 1
    mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    st = L.pg_statistics(logp, old, None, mask, jnp.array([1.0, -1.0]), epsilon=0.2, epsilon_high=0.28)
    # high end: ratio 2 with A > 0 (row 0, token 0); low end: ratio 0.5 with A < 0 (row 1, token 1)
    assert float(st["clip_ratio_high"]) == pytest.approx(1 / 5) and float(st["clip_ratio_low"]) == pytest.approx(1 / 5)
    assert "kl" not in st
    st = L.pg_statistics(logp, old, logp, mask, jnp.array([1.0, -1.0]))
    assert float(st["kl"]) == pytest.approx(0.0)


def test_adpo_soft_pair_target_at_the_flip_rate_is_conservative_dpo():
    """ADPO's pairwise target (1 − ε, ε) with τ = 1/β is cDPO with label_smoothing = ε, exactly: the
    noise experiment's cDPO baseline therefore reproduces ADPO-pair at the true flip rate."""
    rng = np.random.default_rng(1)
    lp, ref = jnp.asarray(rng.normal(size=(6, 2)) - 3, jnp.float32), jnp.asarray(rng.normal(size=(6, 2)) - 3, jnp.float32)
    beta, eps = 0.1, 0.2
    u = L.adpo_logits(lp, ref, 1.0 / beta)
    adpo = L.adpo_loss(u, L.adpo_targets_pairwise(jnp.full((6,), 1.0 - eps)))
    cdpo = L.dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta, label_smoothing=eps)
    assert float(adpo) == pytest.approx(float(cdpo), rel=1e-6)
