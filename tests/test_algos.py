"""Algorithm pieces: distributions by hand, the replaceable PPO objective, and short runs on image
(MinAtar), continuous (Pendulum) and Brax environments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import envs
from purejaxrl import objectives
from purejaxrl.config import CONF_DIR, ConfigError, compose, validate
from purejaxrl.networks import categorical_entropy, categorical_log_prob, gaussian_entropy, gaussian_log_prob, orthogonal
from purejaxrl.trainer import Trainer, build_algorithm, default_hparams


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
    np.testing.assert_allclose(objectives.BUILTIN["clip"].fn(ratio, jnp.log(ratio), adv, hp, 0.0), [-0.5, -1.2, 1.5, 0.8], rtol=1e-6)


# MJX compiles, and the envs whose compiles take longest, run with the slow tests; one of each kind stays quick
ENV_CONFIGS = [pytest.param(name, marks=pytest.mark.slow)
               if name.startswith(("brax", "dmc", "minatar", "acrobot",
                                   "pointmaze_large", "pointmaze_giant")) else name
               for name in sorted(p.stem for p in (CONF_DIR / "env").glob("*.yaml"))]


@pytest.mark.parametrize("algo_name", ["pqn", "ppo"])
@pytest.mark.parametrize("env_cfg", ENV_CONFIGS)
def test_every_shipped_env_config_runs_one_update(env_cfg, algo_name):
    """Each ``conf/env`` entry with each algorithm: one update, or (PQN on a continuous env, either
    on OGBench's host-stepped envs) a clear config error before anything compiles.  The MJX
    locomotion configs are validated and built but not compiled here (a minute each on 2 cores;
    SAC / QARL tests compile DM Control's cartpole, the benchmarks the rest)."""
    overrides = [f"algo={algo_name}", f"env={env_cfg}", "algo.num_envs=2", "algo.num_steps=8", "algo.num_minibatches=2",
                 "algo.num_epochs=1", "algo.total_timesteps=16", "algo.num_eval_envs=2"]
    if env_cfg.startswith(("brax", "dmc")):
        overrides.append("env.kwargs.episode_length=10")
    cfg = compose(overrides)
    if env_cfg.startswith("ogbench"):
        with pytest.raises(ConfigError, match="stepped on the host"):
            validate(cfg)
        return
    continuous = not isinstance(envs.make(cfg["env"]["name"], **dict(cfg["env"].get("kwargs") or {})).action_space, envs.Discrete)
    if algo_name == "pqn" and continuous:
        with pytest.raises(ConfigError, match="needs discrete actions"):
            validate(cfg)
        return
    validate(cfg)
    algo = build_algorithm(cfg)
    if env_cfg.startswith("dmc") and env_cfg != "dmc_cartpole_balance":
        assert algo.env.action_space.shape[0] >= 1 and algo.env.observation_shape[0] >= 1
        return
    hp = default_hparams(cfg, algo)
    state = algo.init(jax.random.PRNGKey(0), hp)
    state2, m = jax.jit(algo.update)(state, hp, jnp.int32(0))
    for k, v in m.items():
        if not k.startswith("episode"):
            assert np.isfinite(v), k
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state2.params))]
    assert any(changed)  # the update learned something


@pytest.mark.slow
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
    chunk_hlo = tr._chunk.lower(jax.eval_shape(tr._init, keys, hp, None), hp, jnp.int32(0), None, tr.updates_per_chunk, False).as_text()
    for hlo in (init_hlo, chunk_hlo):
        assert "custom_call" not in hlo and "lapack" not in hlo.lower()


@pytest.mark.slow
def test_orthogonal_init_matches_flax_without_qr():
    import flax.linen as nn

    for shape in [(4, 64), (64, 64), (64, 2), (300, 256), (3, 3, 4, 16)]:
        key = jax.random.PRNGKey(sum(shape))
        np.testing.assert_allclose(orthogonal(1.4)(key, shape), nn.initializers.orthogonal(1.4)(key, shape), atol=2e-6)
        w = orthogonal(1.0)(key, shape).reshape(-1, shape[-1])
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)
