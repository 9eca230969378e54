"""Algorithm pieces: distributions by hand, the replaceable PPO objective, and short runs on image
(MinAtar), continuous (Pendulum) and Brax environments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import envs
from purejaxrl import objectives
from purejaxrl.config import compose
from purejaxrl.networks import orthogonal, categorical_entropy, categorical_log_prob, gaussian_entropy, gaussian_log_prob
from purejaxrl.trainer import Trainer, build_algorithm


def test_distributions_match_scipy():
    mean, log_std, a = np.array([0.3, -1.0]), np.array([0.1, -0.5]), np.array([1.0, -0.2])
    expected = stats.norm(mean, np.exp(log_std)).logpdf(a).sum()
    assert float(gaussian_log_prob(mean, log_std, a)) == pytest.approx(expected, rel=1e-5)
    assert float(gaussian_entropy(mean, log_std)) == pytest.approx(stats.norm(mean, np.exp(log_std)).entropy().sum(), rel=1e-5)
    logits = jnp.array([0.5, 1.5, -1.0])
    p = np.exp(logits) / np.exp(logits).sum()
    assert float(categorical_log_prob(logits, jnp.int32(1))) == pytest.approx(np.log(p[1]), rel=1e-5)
    assert float(categorical_entropy(logits)) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-5)


def test_clip_objective_by_hand():
    hp = {"clip_eps": 0.2}
    ratio = jnp.array([0.5, 1.5, 1.5, 0.5])
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    # min(ρA, clip(ρ)A): [0.5, 1.2, -1.5, -0.8]
    np.testing.assert_allclose(objectives.clip_loss(ratio, jnp.log(ratio), adv, hp, 0.0), [-0.5, -1.2, 1.5, 0.8], rtol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo=pqn", "env=minatar_breakout", "algo.num_envs=16", "algo.num_steps=8", "algo.num_minibatches=4"],
        ["algo=ppo", "env.name=Pendulum-v1", "algo.num_envs=4", "algo.num_steps=32", "algo.normalize_obs=true", "algo.normalize_reward=true"],
        ["algo=ppo", "env=brax_hopper", "env.kwargs.episode_length=20", "algo.num_envs=4", "algo.num_steps=16", "algo.num_minibatches=2", "algo.normalize_obs=true"],
    ],
    ids=["pqn-minatar", "ppo-continuous", "ppo-brax"],
)
def test_short_training_runs(overrides):
    cfg = compose(overrides + ["algo.num_evals=1", "algo.num_eval_envs=2", "num_seeds=1"])
    algo = build_algorithm(cfg)
    cfg["algo"]["total_timesteps"] = 2 * algo.steps_per_update
    algo = build_algorithm(cfg)
    tr = Trainer(algo, 1)
    hp = {k: np.asarray([cfg["algo"][k]], np.float32) for k in algo.HPARAMS}
    state, m = tr.chunk(tr.init(jax.random.PRNGKey(0)[None], hp), hp, 0)
    for k, v in m.items():
        if k not in ("episode_return", "episode_length", "eval_return"):
            assert np.isfinite(v).all(), k
    assert np.isfinite(m["eval_return"][0, -1])


def test_brax_adapter_truncates_and_resets():
    env = envs.make("brax/hopper", episode_length=3)
    obs, st = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    a = jnp.zeros(env.action_space.shape)
    for _ in range(3):
        obs, st, r, term, trunc, info = step(jax.random.PRNGKey(0), st, a)
    assert bool(trunc) and not bool(term) and int(st.time) == 0
    np.testing.assert_allclose(obs, st.first.obs)
    assert not np.allclose(info["final_observation"], obs)


@pytest.mark.parametrize("algo", ["pqn", "ppo"])
def test_multi_seed_programs_have_no_lapack_custom_calls(algo, tiny_cfg):
    # Batched LAPACK QR (flax's orthogonal init under vmapped seeds) waits on XLA:CPU's intra-op
    # pool from inside it and stalled 4-seed PPO runs; our initializer uses plain array ops.
    cfg = tiny_cfg(f"algo={algo}", "num_seeds=4")
    algo_ = build_algorithm(cfg)
    tr = Trainer(algo_, 4, chunks=1)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(4)])
    hp = {k: np.full((4,), cfg["algo"][k], np.float32) for k in algo_.HPARAMS}
    init_hlo = tr._init.lower(keys, hp, None).as_text()
    chunk_hlo = tr._chunk.lower(jax.eval_shape(tr._init, keys, hp, None), hp, jnp.int32(0), None, tr.updates_per_chunk).as_text()
    for hlo in (init_hlo, chunk_hlo):
        assert "custom_call" not in hlo and "lapack" not in hlo.lower()


def test_orthogonal_init_matches_flax_without_qr():
    import flax.linen as nn

    for shape in [(4, 64), (64, 64), (64, 2), (300, 256), (3, 3, 4, 16)]:
        key = jax.random.PRNGKey(sum(shape))
        np.testing.assert_allclose(orthogonal(1.4)(key, shape), nn.initializers.orthogonal(1.4)(key, shape), atol=2e-6)
        w = orthogonal(1.0)(key, shape).reshape(-1, shape[-1])
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)
