"""The transformer and its KV-cache sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl.llm.model import ModelConfig, forward, grouped_completion_logprobs, init_params, num_params, token_logprobs
from purejaxrl.llm.sampler import sample, sample_no_cache

CFG = ModelConfig(vocab_size=32, d_model=64, n_layers=2, n_heads=4, d_mlp=128)
PROMPTS = jnp.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 9, 9, 9, 9]])  # left-padded with 0


@pytest.mark.parametrize("d_model", [12, 20])
def test_odd_head_width_is_refused(d_model):
    """4 heads of width 3 or 5: the rotary embedding rotates a head's two halves against each other, so an odd
    width either failed inside the forward pass (20) or silently came out of it 4 wide (12: heads of 3)."""
    with pytest.raises(ValueError, match="even head width"):
        init_params(jax.random.PRNGKey(0), ModelConfig(vocab_size=8, d_model=d_model, n_layers=1, n_heads=4, d_mlp=8))


@pytest.mark.slow
def test_kv_cache_sampler_logprobs_equal_full_forward():
    params = init_params(jax.random.PRNGKey(0), CFG)
    toks, mask, logps = sample(params, CFG, PROMPTS, jax.random.PRNGKey(1), max_new=8, stop_id=2, pad_id=0)
    ref = sample_no_cache(params, CFG, PROMPTS, jax.random.PRNGKey(1), max_new=8, stop_id=2, pad_id=0)
    np.testing.assert_array_equal(toks, ref[0])
    np.testing.assert_allclose(logps, ref[2], atol=2e-6)
    full = jnp.concatenate([PROMPTS, toks], 1)
    valid = jnp.concatenate([PROMPTS != 0, mask], 1)
    lp = token_logprobs(params, CFG, full, valid)[:, PROMPTS.shape[1] - 1 :]
    np.testing.assert_allclose(np.where(mask, lp, 0.0), logps, atol=2e-6)


@pytest.mark.slow
def test_grouped_prompts_give_the_full_forward_logprobs_and_gradients():
    params = init_params(jax.random.PRNGKey(0), CFG)
    G = 4
    rep = jnp.repeat(PROMPTS, G, axis=0)
    toks, mask, logps = sample(params, CFG, rep, jax.random.PRNGKey(2), max_new=6, stop_id=2, pad_id=0, temperature=2.0)
    # sampling each prompt G times from one prefill draws exactly what sampling the repeated prompts does
    toks_g, mask_g, logps_g = sample(params, CFG, PROMPTS, jax.random.PRNGKey(2), max_new=6, stop_id=2, pad_id=0,
                                     temperature=2.0, num_samples=G)
    np.testing.assert_array_equal(toks_g, toks)
    np.testing.assert_array_equal(mask_g, mask)
    np.testing.assert_allclose(logps_g, logps, atol=2e-6)
    assert 0 < int(mask.sum()) < mask.size  # some completions stopped early
    full = lambda p: token_logprobs(p, CFG, jnp.concatenate([rep, toks], 1), jnp.concatenate([rep != 0, mask], 1))[:, 4:]  # noqa: E731
    grouped = lambda p: grouped_completion_logprobs(p, CFG, PROMPTS, PROMPTS != 0, toks, mask)  # noqa: E731
    np.testing.assert_allclose(np.where(mask, grouped(params), 0.0), np.where(mask, full(params), 0.0), atol=2e-6)
    g_full = jax.grad(lambda p: jnp.sum(full(p) * mask))(params)
    g_grp = jax.grad(lambda p: jnp.sum(grouped(p) * mask))(params)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_grp)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)  # float32 summation order


def test_stop_token_ends_each_completion_separately():
    params = init_params(jax.random.PRNGKey(0), CFG)
    # make token 2 (stop) very likely after the prompt so some sequences stop early
    params = {**params, "embed": params["embed"].at[2].multiply(30.0)}
    toks, mask, _ = sample(params, CFG, PROMPTS, jax.random.PRNGKey(4), max_new=8, stop_id=2, pad_id=0, temperature=3.0)
    for row_t, row_m in zip(np.asarray(toks), np.asarray(mask)):
        n = row_m.sum()
        assert row_m[:n].all() and not row_m[n:].any()
        if n < 8:
            assert row_t[n - 1] == 2 and (row_t[n:] == 0).all()


def test_left_padding_does_not_change_logits():
    params = init_params(jax.random.PRNGKey(0), CFG)
    a = jnp.array([[5, 6, 7]])
    b = jnp.array([[0, 0, 5, 6, 7]])
    la, _ = forward(params, CFG, a, jnp.ones((1, 3), bool))
    lb, _ = forward(params, CFG, b, b != 0)
    np.testing.assert_allclose(la[0, -1], lb[0, -1], atol=1e-5)
    assert 50_000 < num_params(params) < 200_000


def test_top_k_restricts_support():
    params = init_params(jax.random.PRNGKey(0), CFG)
    logits, _ = forward(params, CFG, PROMPTS, PROMPTS != 0)
    top2 = np.argsort(np.asarray(logits[:, -1]), -1)[:, -2:]
    toks, _, _ = sample(params, CFG, PROMPTS, jax.random.PRNGKey(5), max_new=1, top_k=2, pad_id=0, temperature=5.0)
    for i in range(3):
        assert int(toks[i, 0]) in top2[i]


def test_loss_log_probs_use_the_sampling_temperature():
    """At T ≠ 1 the tokens come from softmax(logits / T): the loss's old/new log-probs must be those
    (they were recomputed at T = 1: ~0.05 nats/token apart here for an untrained model, more once it is peaked)."""
    from purejaxrl.llm.trainer import _group_logits, policy_logp

    params = init_params(jax.random.PRNGKey(0), CFG)
    G, T = 4, 0.7
    toks, mask, logps = sample(params, CFG, PROMPTS, jax.random.PRNGKey(3), max_new=6, stop_id=2, pad_id=0,
                               temperature=T, num_samples=G)
    d = {"prompts": PROMPTS, "comps": toks, "comp_valid": mask}
    logits = _group_logits(params, CFG, d)
    np.testing.assert_allclose(np.where(mask, policy_logp(logits, toks, T), 0.0), logps, atol=2e-5)
    untempered = np.where(mask, policy_logp(logits, toks, 1.0), 0.0)
    assert np.abs(untempered - logps).sum() / mask.sum() > 0.02  # the old recomputation (T = 1) was off
