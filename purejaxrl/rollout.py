"""The pieces every on-policy algorithm is built from: one rollout scan and one minibatch-SGD loop.

* :func:`rollout` steps an env stack ``num_steps`` times with a policy and returns a
  :class:`Trajectory` ``[T, B]``, including the values of the true final observations at time-limit
  truncations (computed only when some env was truncated), so that every algorithm bootstraps the
  same way.
* :func:`minibatch_sgd` runs ``num_epochs`` × ``num_minibatches`` optimiser steps over a batch
  (any pytree with a leading sample axis), with one permutation and one gather of the packed batch
  per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purejaxrl import returns


@struct.dataclass
class Trajectory:
    """A rollout, every field ``[T, B, ...]`` (time first).

    ``obs[t]`` is the observation the action was chosen from; ``final_value[t]`` the value of
    ``info["final_observation"]`` (read only where ``truncated[t]``); ``extras`` whatever the policy
    returned while acting (log-probs, values, ``max_a Q``); ``episode`` the episode statistics.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_value: jax.Array
    extras: dict
    episode: dict

    def next_values(self, values: jax.Array, last_value: jax.Array) -> jax.Array:
        """``V(s'_t)`` for the return estimators: ``values[t+1]`` inside an episode, the final
        observation's value at a truncation, ``last_value`` after the last step."""
        return returns.next_state_values(values, last_value, self.truncated, self.final_value)


def rollout(
    venv,
    policy: Callable[[jax.Array, jax.Array], tuple[jax.Array, dict]],
    obs: jax.Array,
    env_state: Any,
    rng: jax.Array,
    num_steps: int,
    final_value: Callable[[jax.Array], jax.Array] | None,
):
    """``num_steps`` steps of ``venv`` (a :func:`envs.make_stack` stack) under ``policy``.

    Args:
      policy: ``(obs [B, ...], key) -> (action [B, ...], extras)``; ``extras`` a dict of ``[B]``
        arrays kept in the trajectory.
      final_value: ``obs [B, ...] -> [B]``, the bootstrap value of a truncated episode's last
        observation; ``None`` treats time limits as terminal (``terminated |= truncated``), as the
        reference PQN code does.
    Returns:
      ``((obs, env_state, rng), trajectory)`` with the carry after the last step.
    """
    num_envs = obs.shape[0]
    zeros = jnp.zeros((num_envs,), jnp.float32)

    def step(carry, _):
        obs, env_state, rng = carry
        rng, k_act, k_env = jax.random.split(rng, 3)
        action, extras = policy(obs, k_act)
        obs2, env_state, reward, term, trunc, info = venv.step(k_env, env_state, action)
        if final_value is None:
            term, trunc, v_final = jnp.logical_or(term, trunc), jnp.zeros_like(trunc), zeros
        else:  # one run: skipped when no env hit its time limit; vmapped runs compute both sides
            v_final = jax.lax.cond(jnp.any(trunc), final_value, lambda o: zeros, info["final_observation"])
        episode = {k: info[k] for k in ("episode_return", "episode_length", "episode_done")}
        return (obs2, env_state, rng), Trajectory(obs, action, reward, term, trunc, v_final, extras, episode)

    return jax.lax.scan(step, (obs, env_state, rng), None, num_steps)


def episode_metrics(episode: dict) -> dict[str, jax.Array]:
    """Mean return/length of the episodes that ended inside a rollout (NaN if none did)."""
    done = episode["episode_done"]
    n = done.sum()
    safe = jnp.maximum(n, 1)
    nan = jnp.float32(jnp.nan)
    return {
        "episode_return": jnp.where(n > 0, jnp.sum(episode["episode_return"] * done) / safe, nan),
        "episode_length": jnp.where(n > 0, jnp.sum(episode["episode_length"] * done) / safe, nan),
        "episodes": n.astype(jnp.float32),
    }


def flatten_time(tree: Any) -> Any:
    """``[T, B, ...] -> [T·B, ...]`` for every leaf."""
    return jax.tree.map(lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), tree)


def pack(batch: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """Pack a pytree of ``[n, ...]`` arrays into one float32 ``[n, F]`` array; ``unpack`` turns
    rows of it back into the pytree (integer leaves such as discrete actions round-trip exactly
    below 2**24)."""
    leaves, treedef = jax.tree.flatten(batch)
    n = leaves[0].shape[0]
    shapes = [x.shape[1:] for x in leaves]
    dtypes = [x.dtype for x in leaves]
    sizes = [int(max(1, _prod(s))) for s in shapes]
    packed = jnp.concatenate([x.reshape(n, -1).astype(jnp.float32) for x in leaves], axis=1)

    def unpack(rows: jax.Array) -> Any:
        out, o = [], 0
        for shape, dtype, size in zip(shapes, dtypes, sizes):
            out.append(rows[:, o : o + size].reshape((rows.shape[0],) + shape).astype(dtype))
            o += size
        return jax.tree.unflatten(treedef, out)

    return packed, unpack


def _prod(shape) -> int:
    p = 1
    for d in shape:
        p *= int(d)
    return p


def minibatch_sgd(
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict]],
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
    rng: jax.Array,
    num_epochs: int,
    num_minibatches: int,
):
    """``num_epochs`` passes over ``batch`` in ``num_minibatches`` shuffled minibatches.

    ``loss_fn(params, minibatch) -> (loss, metrics)``.  Each epoch draws one permutation and does
    one gather of the packed batch (several per-field shuffles cost several sorts).
    Returns ``(params, opt_state, rng, metrics)`` with every metric averaged over all steps.
    """
    packed, unpack = pack(batch)
    n = packed.shape[0]

    def sgd_step(carry, rows):
        params, opt_state = carry
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, unpack(rows))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

    def epoch(carry, _):
        params, opt_state, rng = carry
        rng, k = jax.random.split(rng)
        minibatches = packed[jax.random.permutation(k, n)].reshape(num_minibatches, n // num_minibatches, -1)
        (params, opt_state), aux = jax.lax.scan(sgd_step, (params, opt_state), minibatches)
        return (params, opt_state, rng), aux

    (params, opt_state, rng), aux = jax.lax.scan(epoch, (params, opt_state, rng), None, num_epochs)
    return params, opt_state, rng, jax.tree.map(jnp.mean, aux)
