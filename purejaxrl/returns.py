"""Return and advantage estimators over ``[T, B]`` batches (time first).

Conventions shared by every function here:

* ``terminated[t]``: the step from ``s_t`` reached a terminal state; nothing is bootstrapped.
* ``truncated[t]``: the episode was cut by a time limit after step ``t``; the true next state
  ``s'_t`` (gymnax's ``info["final_observation"]``) is bootstrapped from, and the λ-trace is cut
  because ``s_{t+1}`` in the rollout belongs to a new episode.
* ``next_values[t]``: the value of the true next state ``s'_t``: ``V(s_{t+1})`` inside an episode,
  ``V(final_observation_t)`` at a truncation, ``V(s_T)`` of the last observation at ``t = T-1``.
  Its value at a terminated step is ignored.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _check(rewards, terminated, truncated, next_values):
    chex.assert_rank(rewards, 2)
    chex.assert_equal_shape([rewards, terminated, truncated, next_values])


def q_lambda_targets(rewards, terminated, truncated, next_values, gamma, lam):
    """Peng's Q(λ) targets (Gallici et al. 2024, PQN), computed backwards once per rollout::

        G_t = r_t + γ (1 − term_t) [ (1 − λ_t) · max_a Q(s'_t, a) + λ_t · G_{t+1} ],
        λ_t = λ · (1 − trunc_t),   and  G_T ≡ max_a Q(s_T, a),

    with ``next_values[t] = max_a Q(s'_t, a)``.  At ``t = T − 1`` the formula reduces to the
    one-step target because ``G_T`` equals the bootstrap value.

    Args:
      rewards, terminated, truncated, next_values: ``[T, B]``.
      gamma, lam: scalars (may be traced).
    Returns:
      ``[T, B]`` targets.
    """
    _check(rewards, terminated, truncated, next_values)
    not_term = 1.0 - terminated.astype(rewards.dtype)
    lam_t = lam * (1.0 - truncated.astype(rewards.dtype))

    def backward(g_next, xs):
        r, nt, l, v = xs
        g = r + gamma * nt * ((1.0 - l) * v + l * g_next)
        return g, g

    _, targets = jax.lax.scan(
        backward, next_values[-1], (rewards, not_term, lam_t, next_values), reverse=True
    )
    return targets


def gae_advantages(rewards, terminated, truncated, values, next_values, gamma, lam):
    """Generalised advantage estimation (Schulman et al. 2016) with time-limit bootstrapping::

        δ_t = r_t + γ (1 − term_t) V(s'_t) − V(s_t)
        A_t = δ_t + γ λ (1 − term_t)(1 − trunc_t) A_{t+1},   A_T = 0

    Returns ``(advantages, value_targets)`` with ``value_targets = advantages + values``.
    """
    _check(rewards, terminated, truncated, next_values)
    chex.assert_equal_shape([rewards, values])
    not_term = 1.0 - terminated.astype(rewards.dtype)
    cont = not_term * (1.0 - truncated.astype(rewards.dtype))
    deltas = rewards + gamma * not_term * next_values - values

    def backward(a_next, xs):
        d, c = xs
        a = d + gamma * lam * c * a_next
        return a, a

    _, adv = jax.lax.scan(backward, jnp.zeros_like(rewards[0]), (deltas, cont), reverse=True)
    return adv, adv + values


def next_state_values(values_t, last_value, truncated, final_values):
    """Assemble ``next_values`` for the functions above from values computed while acting.

    ``values_t[t] = V(s_t)`` (``[T, B]``, cached during the rollout), ``last_value = V(s_T)``,
    ``final_values[t] = V(final_observation_t)`` (only read where ``truncated``).
    """
    shifted = jnp.concatenate([values_t[1:], last_value[None]], axis=0)
    return jnp.where(truncated, final_values, shifted)
