"""Environment adapters: gymnax >= 1.0 step signature, auto-reset, statistics, name errors."""

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import purejaxrl


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="CartPole-v1.*brax/hopper"):
        envs.make("CartPol")
    with pytest.raises(ValueError, match="brax/ant"):
        envs.make("brax/hoper")
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        envs.make("cartpole", max_step=3)


def test_step_signature_autoreset_and_final_observation():
    env = envs.make("cartpole", max_steps_in_episode=5)
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(5):
        obs, state, reward, term, trunc, info = step(jax.random.PRNGKey(t), state, jnp.int32(t % 2))
    # the 5th step hits the time limit: truncated, not terminated, and auto-reset happened
    assert bool(trunc) and not bool(term)
    assert reward.dtype == jnp.float32
    assert not np.allclose(info["final_observation"], obs)
    assert int(state.time) == 0


def test_vec_env_and_episode_stats_count_raw_rewards():
    venv = envs.EpisodeStats(envs.VecEnv(envs.make("cartpole", max_steps_in_episode=7), 3))
    obs, st = venv.reset(jax.random.PRNGKey(0))
    assert obs.shape == (3, 4)
    step = jax.jit(venv.step)
    for t in range(7):
        obs, st, r, term, trunc, info = step(jax.random.PRNGKey(t), st, jnp.zeros(3, jnp.int32))
        done = np.asarray(info["episode_done"])
        if done.any():
            np.testing.assert_allclose(np.asarray(info["episode_return"])[done], np.asarray(info["episode_length"])[done])
    assert np.asarray(st.episode_length).max() < 7


def test_minatar_and_continuous_spaces():
    env = envs.make("minatar_breakout")
    assert env.observation_shape == (10, 10, 4) and env.action_space.n == 3
    pend = envs.make("Pendulum-v1")
    assert isinstance(pend.action_space, envs.Box) and pend.action_space.shape == (1,)


def test_foreign_envs_module_is_refused(monkeypatch):
    fake = types.ModuleType("envs")
    fake.__file__ = "/site-packages/envs/__init__.py"
    monkeypatch.setitem(sys.modules, "envs", fake)
    with pytest.raises(ImportError, match="not purejaxrl's environments"):
        purejaxrl._check_envs_module()
