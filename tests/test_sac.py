"""SAC: its losses on hand-computed cases, the squashed-Gaussian log-density, the replay buffer,
time-limit handling in the stored transitions, and a learning result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl.algos.sac import SAC, Buffer, actor_loss, alpha_loss, critic_targets, tanh_log_prob
from purejaxrl.config import compose


def test_tanh_log_prob_is_the_change_of_variables_density():
    u = jnp.array([[-3.0, 0.2], [0.7, 1.5]])
    mean, log_std = jnp.array([[0.1, -0.3]]), jnp.array([[-0.5, 0.4]])
    sd = np.exp(np.asarray(log_std))
    naive = (-0.5 * ((np.asarray(u) - np.asarray(mean)) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
             - np.log(1 - np.tanh(np.asarray(u)) ** 2)).sum(-1)
    np.testing.assert_allclose(tanh_log_prob(u, mean, log_std), naive, rtol=1e-5)
    # finite where the naive form is not (tanh(20)² rounds to 1)
    assert np.isfinite(tanh_log_prob(jnp.array([[20.0]]), jnp.array([[19.0]]), jnp.array([[0.0]]))).all()
    # a density on (−1, 1): integrates to 1 in one dimension
    a = np.linspace(-1 + 1e-6, 1 - 1e-6, 200_001)
    logp = tanh_log_prob(jnp.arctanh(jnp.asarray(a))[:, None], jnp.array([[0.4]]), jnp.array([[-0.2]]))
    assert abs(np.trapezoid(np.exp(np.asarray(logp)), a) - 1.0) < 1e-3


def test_sac_losses_by_hand():
    # y = r + γ(1 − d)(min Q̄ − α log π):  1 + 0.9·(2 + 0.5·1) = 3.25; terminal: 1
    y = critic_targets(jnp.array([1.0, 1.0]), jnp.array([0.0, 1.0]), jnp.array([2.0, 2.0]), jnp.array([-1.0, -1.0]),
                       0.5, 0.9)
    np.testing.assert_allclose(y, [3.25, 1.0])
    # E[α log π − min Q] = mean(−0.5 − 2, 0.5 − 0) = −1
    assert float(actor_loss(jnp.array([-1.0, 1.0]), jnp.array([2.0, 0.0]), 0.5)) == pytest.approx(-1.0)
    # ∂/∂log α of −E[log α (log π + H̄)] = −mean(log π + H̄) = 3 here: entropy 2 above target 1 → α falls
    g = jax.grad(alpha_loss)(jnp.float32(0.3), jnp.array([-1.0, -3.0]), -1.0)
    assert float(g) == pytest.approx(3.0)


def test_ring_buffer_wraps_and_samples_only_what_was_written():
    buf = Buffer.empty(5, (2,), 1)
    for k in range(3):  # 3 writes of 2: the 6th transition overwrites the 1st
        x = jnp.arange(2 * k, 2 * k + 2, dtype=jnp.float32)
        buf = buf.add({"obs": jnp.stack([x, x], 1), "action": x[:, None], "reward": x, "next_obs": jnp.stack([x, x], 1),
                       "terminated": jnp.zeros(2)})
    assert int(buf.ptr) == 1 and int(buf.size) == 5
    np.testing.assert_array_equal(buf.reward, [5, 1, 2, 3, 4])
    half = Buffer.empty(8, (1,), 1).add({"obs": jnp.ones((3, 1)), "action": jnp.ones((3, 1)), "reward": jnp.ones(3),
                                        "next_obs": jnp.ones((3, 1)), "terminated": jnp.zeros(3)})
    assert np.all(np.asarray(half.sample(jax.random.PRNGKey(0), 512)["reward"]) == 1.0)  # never an empty slot
    skip = half.add({"obs": jnp.zeros((2, 1)), "action": jnp.zeros((2, 1)), "reward": jnp.full(2, 7.0),
                     "next_obs": jnp.zeros((2, 1)), "terminated": jnp.zeros(2)}, keep=jnp.bool_(False))
    assert int(skip.ptr) == 3 and int(skip.size) == 3 and not np.any(np.asarray(skip.reward) == 7.0)  # nothing written


def test_layer_norm_critic_is_dense_relu_layernorm_by_hand():
    """brax's q_network_layer_norm: LayerNorm after each hidden activation, none on the output."""
    from purejaxrl.algos.sac import QNet

    net = QNet((4, 3), layer_norm=True)
    obs, act = jnp.array([[0.3, -1.2]]), jnp.array([[0.5]])
    p = net.init(jax.random.PRNGKey(0), obs, act)
    pp = p["params"]["MLP_0"]
    assert set(pp) == {"Dense_0", "Dense_1", "Dense_2", "LayerNorm_0", "LayerNorm_1"}
    x = np.concatenate([np.asarray(obs), np.asarray(act)], -1)
    for i in range(2):
        d, ln = pp[f"Dense_{i}"], pp[f"LayerNorm_{i}"]
        x = np.maximum(x @ np.asarray(d["kernel"]) + np.asarray(d["bias"]), 0)
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * np.asarray(ln["scale"]) \
            + np.asarray(ln["bias"])
    q = x @ np.asarray(pp["Dense_2"]["kernel"]) + np.asarray(pp["Dense_2"]["bias"])
    np.testing.assert_allclose(net.apply(p, obs, act), q[:, 0], rtol=1e-5, atol=1e-6)
    assert "LayerNorm_0" not in QNet((4, 3)).init(jax.random.PRNGKey(0), obs, act)["params"]["MLP_0"]  # default off


def _pendulum_sac(*overrides):
    cfg = compose(["algo=sac", "env=pendulum", "algo.num_envs=4", "algo.steps_per_update=3", "algo.total_timesteps=48",
                   "algo.buffer_size=64", "algo.learning_starts=0", "algo.batch_size=8", "algo.actor_hidden=[8]",
                   "algo.critic_hidden=[8]", *overrides])
    return SAC(cfg["algo"], cfg["env"], {})


def test_normalize_observations_as_brax_raw_buffer_normalised_inputs():
    """The statistics merge each update's observations after acting; actions, greedy actions and every
    gradient step's batch see ``(obs − mean)/sqrt(var + 1e-8)``; the buffer keeps raw observations."""
    hp = {"lr": 3e-4, "actor_lr": 3e-4, "gamma": 0.99, "tau": 0.005}
    algo = _pendulum_sac("algo.normalize_observations=true", "algo.critic_layer_norm=true")
    s0 = algo.init(jax.random.PRNGKey(0), hp)
    s1, _ = algo.collect(s0, hp, jnp.int32(0))
    raw = np.asarray(s1.buffer.obs[:12])
    assert np.abs(raw).max() > 1.5  # Pendulum's angular velocity: raw, not normalised
    # merged into (0, 1, 1e-4): with 12 observations the running moments are theirs to 1e-4
    np.testing.assert_allclose(s1.obs_norm.mean, raw.mean(0), atol=1e-3)
    np.testing.assert_allclose(s1.obs_norm.var, raw.var(0), rtol=1e-3, atol=1e-3)
    assert float(s1.obs_norm.count) == pytest.approx(12 + 1e-4)
    z = (raw - np.asarray(s1.obs_norm.mean)) / np.sqrt(np.asarray(s1.obs_norm.var) + 1e-8)
    np.testing.assert_allclose(algo.greedy_action(s1, jnp.asarray(raw)),
                               algo.to_env(algo.learner.mode(s1.agent.actor, jnp.asarray(z))), rtol=1e-5, atol=1e-6)
    seen = []
    orig = algo.learner.step

    def spy(p, b, hp_, k, alpha=None):
        jax.debug.callback(lambda o: seen.append(np.asarray(o)), b["obs"])
        return orig(p, b, hp_, k, alpha)

    algo.learner.step = spy
    s2, _ = algo.update(s1, hp, jnp.int32(1))
    assert len(seen) == algo.gradient_steps
    o = seen[0]
    assert np.abs(o).max() < 5  # normalised inputs (raw speeds reach 8 only after swinging)
    norm = s2.obs_norm  # the statistics the batch was normalised with: after this update's acting
    buf = np.asarray(s2.buffer.obs[:24])
    # every row of the batch is a buffer row, normalised with the current statistics
    zb = (buf - np.asarray(norm.mean)) / np.sqrt(np.asarray(norm.var) + 1e-8)
    dist = np.abs(o[:, None, :] - zb[None]).max(-1).min(-1)
    assert dist.max() < 1e-5
    off = _pendulum_sac()
    s, _ = off.collect(off.init(jax.random.PRNGKey(0), hp), hp, jnp.int32(0))
    assert float(s.obs_norm.count) == pytest.approx(1e-4)  # off: never updated, never applied


def test_time_limits_store_the_final_observation_and_are_not_terminal():
    cfg = compose(["algo=sac", "env=pendulum", "+env.kwargs.max_steps_in_episode=3", "algo.num_envs=2",
                   "algo.steps_per_update=4", "algo.total_timesteps=8", "algo.buffer_size=16", "algo.learning_starts=0",
                   "algo.actor_hidden=[8]", "algo.critic_hidden=[8]"])
    algo = SAC(cfg["algo"], cfg["env"], {})
    hp = {"lr": 3e-4, "actor_lr": 3e-4, "gamma": 0.99, "tau": 0.005}
    state = algo.init(jax.random.PRNGKey(0), hp)
    state, episode = algo.collect(state, hp, jnp.int32(0))
    b = jax.device_get(state.buffer)
    obs, nxt = b.obs[:8].reshape(4, 2, -1), b.next_obs[:8].reshape(4, 2, -1)
    np.testing.assert_allclose(nxt[:2], obs[1:3])        # within the episode: the next row's observation
    assert not np.allclose(nxt[2], obs[3])                # at the time limit: the true last one, not the reset
    assert np.all(b.terminated[:8] == 0)                  # a time limit is not a termination
    assert np.asarray(episode["episode_done"])[2].all() and not np.asarray(episode["episode_done"])[:2].any()


@pytest.mark.slow
def test_sac_learns_pendulum(tmp_path):
    """From −1,200 (random) to better than −400 greedy in 12,000 env steps (UTD 1, two seeds vmapped)."""
    from purejaxrl.experiment import run

    cfg = compose(["algo=sac", "env=pendulum", "algo.total_timesteps=12000", "algo.num_envs=4", "algo.gradient_steps=4",
                   "algo.learning_starts=1000", "algo.batch_size=128", "algo.actor_hidden=[64,64]",
                   "algo.critic_hidden=[64,64]", "algo.lr=0.001", "algo.num_evals=2", "algo.num_eval_envs=8",
                   "num_seeds=2", "logger.progress=false"])
    s = run(cfg, tmp_path / "run", progress=False)
    assert min(s["final_return"]["per_seed"]) > -400, s["final_return"]
