"""Return estimators against hand-computed cases (truncation and termination mid-rollout)."""

import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl import returns, schedules


def _col(*x):
    return jnp.asarray(x, jnp.float32)[:, None]


def test_q_lambda_truncation_and_termination_by_hand():
    gamma, lam = 0.9, 0.5
    r = jnp.concatenate([_col(1, 2, 3, 4)] * 2, axis=1)
    v = jnp.concatenate([_col(10, 20, 30, 40)] * 2, axis=1)
    term = jnp.asarray([[0, 0], [0, 0], [0, 1], [0, 0]], bool)
    trunc = jnp.asarray([[0, 0], [1, 0], [0, 0], [0, 0]], bool)
    g = returns.q_lambda_targets(r, term, trunc, v, gamma, lam)
    # column 0: truncated after t=1 -> one-step target from the final observation, trace cut there
    np.testing.assert_allclose(g[:, 0], [14.5, 20.0, 34.5, 40.0], rtol=1e-6)
    # column 1: terminated at t=2 -> G_2 = r_2, the trace continues into t=1 and t=0
    np.testing.assert_allclose(g[:, 1], [11.0575, 12.35, 3.0, 40.0], rtol=1e-6)


def test_q_lambda_limits():
    rng = np.random.default_rng(0)
    r = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    f = jnp.zeros((6, 3), bool)
    # λ = 0: one-step Q-learning targets
    np.testing.assert_allclose(returns.q_lambda_targets(r, f, f, v, 0.9, 0.0), r + 0.9 * v, rtol=1e-5, atol=1e-6)
    # λ = 1: discounted Monte-Carlo return bootstrapped at the end
    g = returns.q_lambda_targets(r, f, f, v, 0.9, 1.0)
    mc = np.zeros((6, 3))
    acc = np.asarray(v[-1])
    for t in reversed(range(6)):
        acc = np.asarray(r[t]) + 0.9 * acc
        mc[t] = acc
    np.testing.assert_allclose(g, mc, rtol=1e-5, atol=1e-5)


def test_gae_truncation_by_hand():
    r, vals = _col(1, 2, 3), _col(0.5, 1.0, 1.5)
    nxt = _col(1.0, 7.0, 2.0)  # V(final_observation) = 7 at the truncation
    f = jnp.zeros((3, 1), bool)
    trunc = jnp.asarray([[0], [1], [0]], bool)
    adv, tgt = returns.gae_advantages(r, f, trunc, vals, nxt, 0.9, 0.5)
    np.testing.assert_allclose(adv[:, 0], [1.4 + 0.45 * 7.3, 7.3, 3.3], rtol=1e-6)
    np.testing.assert_allclose(tgt, adv + vals, rtol=1e-6)
    # termination instead: no bootstrap at t=1 and the trace is cut as well
    adv_t, _ = returns.gae_advantages(r, trunc, f, vals, nxt, 0.9, 0.5)
    np.testing.assert_allclose(adv_t[:, 0], [1.4 + 0.45 * 1.0, 2 - 1.0, 3.3], rtol=1e-6)


def test_next_state_values_uses_final_observation_only_at_truncation():
    vt = _col(1, 2, 3)
    trunc = jnp.asarray([[0], [1], [0]], bool)
    out = returns.next_state_values(vt, jnp.asarray([9.0]), trunc, _col(-1, -2, -3))
    np.testing.assert_allclose(out[:, 0], [2, -2, 9])


def test_shape_contract():
    with pytest.raises(AssertionError):
        returns.q_lambda_targets(jnp.zeros((3, 2)), jnp.zeros((3, 2), bool), jnp.zeros((3, 2), bool), jnp.zeros((3,)), 0.9, 0.5)


def test_schedules():
    assert float(schedules.linear(1.0, 0.2, 10.0, 0)) == pytest.approx(1.0)
    assert float(schedules.linear(1.0, 0.2, 10.0, 5)) == pytest.approx(0.6)
    assert float(schedules.linear(1.0, 0.2, 10.0, 50)) == pytest.approx(0.2)
    assert float(schedules.linear(1.0, 0.2, 0.0, 0)) == pytest.approx(0.2)
    assert float(schedules.linear_decay(1e-3, 100, 25)) == pytest.approx(7.5e-4)
    assert float(schedules.linear_decay(1e-3, 100, 200)) == 0.0
