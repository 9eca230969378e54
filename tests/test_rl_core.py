"""RL core correctness: each test here failed on the code before the shared-pieces refactor.

* PPO with observation normalisation and ``lr = 0`` has ratio 1 (``approx_kl == 0``).
* Greedy evaluation steps the env through the same stack as training (``ClipAction`` included).
* A vmapped γ reaches reward normalisation.
* PQN and PPO bootstrap from the true final observation at a time limit (and PQN's
  ``time_limit_as_terminal`` does not).
* 2-D observations (Catch) train.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.core import Discrete, Environment, as_step_types
from purejaxrl.config import compose, run_grid
from purejaxrl.trainer import Trainer, build_algorithm, default_hparams

SMALL = ["algo.num_envs=4", "algo.num_steps=16", "algo.num_minibatches=2", "algo.num_epochs=2",
         "algo.total_timesteps=128", "algo.num_eval_envs=2"]


def _one_update(cfg):
    algo = build_algorithm(cfg)
    hp = default_hparams(cfg, algo)
    state = algo.init(jax.random.PRNGKey(0), hp)
    state2, m = jax.jit(algo.update)(state, hp, jnp.int32(0))
    return algo, hp, state, state2, m


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_obs_normalisation_with_lr0_keeps_ratio_one(env):
    cfg = compose(["algo=ppo", f"env.name={env}", "algo.lr=0.003", "algo.normalize_obs=true", *SMALL])
    algo = build_algorithm(cfg)
    hp = default_hparams(cfg, algo)
    update = jax.jit(algo.update)
    state = algo.init(jax.random.PRNGKey(0), hp)
    for i in range(3):  # a policy that depends on its (normalised) input
        state, _ = update(state, hp, jnp.int32(i))
    state2, m = update(state, {**hp, "lr": jnp.float32(0.0)}, jnp.int32(3))
    # The statistics moved (this rollout was merged for the next one) ...
    assert not np.allclose(state2.obs_norm.mean, state.obs_norm.mean)
    # ... but the loss used the ones the rollout acted with: the ratio is exactly 1 at lr = 0
    # (re-normalising with the merged statistics, as before, gave approx_kl ~1e-5 here).
    assert abs(float(m["approx_kl"])) < 1e-7, float(m["approx_kl"])


def test_evaluation_clips_actions_like_training():
    # MountainCarContinuous charges 0.1·a² on the action it is given: an unclipped action of 10
    # would cost 100× more than the clipped 1.0 that training applies.
    cfg = compose(["algo=ppo", "env.name=MountainCarContinuous-v0", *SMALL])
    algo = build_algorithm(cfg)
    hp = default_hparams(cfg, algo)
    venv = algo.make_venv(3, hp, evaluation=True)
    from purejaxrl.algos.base import greedy_episode_returns

    key = jax.random.PRNGKey(1)
    big = greedy_episode_returns(venv, lambda o: jnp.full((o.shape[0], 1), 10.0), key)
    one = greedy_episode_returns(venv, lambda o: jnp.full((o.shape[0], 1), 1.0), key)
    np.testing.assert_allclose(big, one)
    bare = envs.EpisodeStats(envs.VecEnv(algo.env, 3))  # what evaluation stepped before: no ClipAction
    unclipped = greedy_episode_returns(bare, lambda o: jnp.full((o.shape[0], 1), 10.0), key)
    assert float(unclipped.mean()) < float(one.mean()) - 50
    # and the training stack is the same chain of wrappers
    names = lambda v: [type(w).__name__ for w in _chain(v)]  # noqa: E731
    assert names(algo.make_venv(3, hp)) == names(venv)


def _chain(env):
    out = []
    while hasattr(env, "env"):
        out.append(env)
        env = env.env
    return out + [env]


@pytest.mark.slow
def test_vmapped_gamma_reaches_reward_normalisation():
    base = ["algo=ppo", "algo.normalize_reward=true", *SMALL, "num_seeds=1"]
    cfg = compose(base + ["vmap.algo.gamma=[0.5,0.99]"])
    algo = build_algorithm(cfg)
    runs, hp, seeds = run_grid(cfg, algo.HPARAMS)
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    tr = Trainer(algo, 2)
    state_v, m_v = tr.chunk(tr.init(keys, hp), hp, 0)
    for r, gamma in enumerate((0.5, 0.99)):
        single_cfg = compose(base + [f"algo.gamma={gamma}"])
        algo_s = build_algorithm(single_cfg)
        tr_s = Trainer(algo_s, 1)
        hp_s = {k: v[r : r + 1] for k, v in hp.items()}
        state_s, m_s = tr_s.chunk(tr_s.init(keys[r : r + 1], hp_s), hp_s, 0)
        # the normaliser's running variance of the discounted return used this run's γ
        np.testing.assert_allclose(state_v.env_state.var[r], state_s.env_state.var, rtol=1e-5)
        np.testing.assert_allclose(m_v["value_loss"][r], m_s["value_loss"][0], rtol=1e-4)
    assert not np.allclose(state_v.env_state.var[0], state_v.env_state.var[1])


class _Ticker(Environment):
    """Deterministic: obs ``[t, 1, 2, 3] / 4``, reward 1, truncated after 3 steps (never terminal)."""

    name = "ticker"
    max_episode_steps = 3
    _obs_shape = (4,)
    _action_space = Discrete(2)

    def _obs(self, t):
        return jnp.array([1.0, 1.0, 2.0, 3.0]) * jnp.asarray(t, jnp.float32) / 4 + jnp.array([0.0, 1.0, 0.0, 0.0])

    def reset(self, key):
        return self._obs(0), jnp.int32(0)

    def step(self, key, t, action):
        t2 = t + 1
        trunc = t2 >= self.max_episode_steps
        reward, term, trunc = as_step_types(1.0, False, trunc)
        nt = jnp.where(trunc, 0, t2)
        return self._obs(nt), nt, reward, term, trunc, {"final_observation": self._obs(t2)}


def _with_ticker(overrides):
    cfg = compose(overrides + ["algo.num_envs=2", "algo.num_steps=8", "algo.num_minibatches=2", "algo.total_timesteps=16"])
    algo = build_algorithm(cfg)
    algo.env = _Ticker()  # same observation shape and action space as CartPole
    return algo, default_hparams(cfg, algo)


@pytest.mark.parametrize("as_terminal", [False, True])
def test_pqn_targets_bootstrap_from_the_final_observation(as_terminal):
    algo, hp = _with_ticker(["algo=pqn", f"algo.time_limit_as_terminal={str(as_terminal).lower()}"])
    state = algo.init(jax.random.PRNGKey(0), hp)
    (last_obs, _, _), traj, _ = algo.collect(state, hp, jnp.int32(0))
    targets = algo.targets(traj, last_obs, state.params, hp)
    t = 2  # the third step of an episode hits the time limit
    final_q = float(algo.max_q(state.params, algo.env._obs(3)[None])[0])
    reset_q = float(algo.max_q(state.params, algo.env._obs(0)[None])[0])
    if as_terminal:  # the reference code: a time limit ends the return
        assert bool(traj.terminated[t].all()) and not bool(traj.truncated.any())
        np.testing.assert_allclose(targets[t], 0.1, rtol=1e-6)
    else:
        assert bool(traj.truncated[t].all()) and not bool(traj.terminated.any())
        np.testing.assert_allclose(traj.final_value[t], final_q, rtol=1e-6)
        np.testing.assert_allclose(targets[t], 0.1 + 0.99 * final_q, rtol=1e-5)
        assert abs(final_q - reset_q) > 1e-4  # a wrong bootstrap (the reset observation) would differ


def test_ppo_advantages_bootstrap_from_the_final_observation():
    algo, hp = _with_ticker(["algo=ppo", "algo.normalize_obs=true"])
    state = algo.init(jax.random.PRNGKey(0), hp)
    (last_obs, _, _), traj = algo.collect(state, hp)
    adv, _ = algo.advantages(traj, last_obs, state, hp)
    t = 2
    v_final = float(algo.value(state.params, state.obs_norm, algo.env._obs(3)[None])[0])
    v_t = float(traj.extras["value"][t, 0])
    np.testing.assert_allclose(traj.final_value[t], v_final, rtol=1e-6)
    # δ_t = r + γ V(final obs) − V(s_t), and the trace is cut: A_t = δ_t
    np.testing.assert_allclose(adv[t, 0], 1.0 + 0.99 * v_final - v_t, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo_name", ["pqn", "ppo"])
def test_catch_two_dimensional_observations(algo_name):
    cfg = compose([f"algo={algo_name}", "env=catch", *SMALL])
    algo, _, state, state2, m = _one_update(cfg)
    assert algo.env.observation_shape == (10, 5)
    q_or_logits = algo.network.apply(state2.params, state2.obs)
    out = q_or_logits if algo_name == "pqn" else q_or_logits[0]
    assert out.shape == (4, 3)  # [envs, actions]: the board was flattened, not broadcast
    assert all(np.isfinite(float(v)) for k, v in m.items() if not k.startswith("episode"))


def test_make_stack_is_the_one_training_stack():
    env = envs.make("Pendulum-v1")
    v = envs.make_stack(env, 2, normalize_reward=True, gamma=0.9)
    assert [type(w).__name__ for w in _chain(v)] == ["NormalizeReward", "EpisodeStats", "VecEnv", "ClipAction", "GymnaxEnv"]


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_the_patch_convolution_is_flaxs_convolution(padding):
    """MinAtar's torso convolves as one matrix product over patches (XLA's CPU backward of a small
    convolution is much slower): the same parameters (tree, names, initial values) and outputs as
    ``nn.Conv``, any leading batch axes, and the same gradient."""
    import flax.linen as nn

    from purejaxrl.networks import PatchConv

    init = nn.initializers.he_normal()
    for shape in [(6, 10, 10, 4), (2, 3, 10, 10, 7), (10, 10, 4)]:
        x = jax.random.normal(jax.random.PRNGKey(0), shape)
        ref = nn.Conv(16, (3, 3), padding=padding, kernel_init=init, name="Conv_0")
        ours = PatchConv(16, (3, 3), padding=padding, kernel_init=init, name="Conv_0")
        p_ref, p_ours = ref.init(jax.random.PRNGKey(1), x), ours.init(jax.random.PRNGKey(1), x)
        assert jax.tree.structure(p_ref) == jax.tree.structure(p_ours)
        for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_ours)):
            np.testing.assert_array_equal(a, b)
        p = jax.tree.map(lambda a: a + 0.1, p_ref)  # a non-zero bias too
        np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), rtol=1e-5, atol=1e-5)
        g_ref, g_ours = (jax.grad(lambda q, m=m: (m.apply(q, x) ** 2).mean())(p) for m in (ref, ours))
        for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_ours)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="SAME or VALID"):
        PatchConv(4, padding="CIRCULAR").init(jax.random.PRNGKey(0), jnp.zeros((5, 5, 2)))


def test_the_minatar_q_network_keeps_its_parameter_tree():
    """Checkpoints of MinAtar runs stay readable: the torso's convolution is still ``Conv_0`` with a
    ``kernel`` [3, 3, C, 16] and a ``bias``."""
    algo = build_algorithm(compose(["experiment=pqn_minatar", "num_seeds=1"]))
    obs = jnp.zeros((1, *algo.env.observation_shape))
    params = algo.network.init(jax.random.PRNGKey(0), obs)["params"]
    conv = jax.tree.map(jnp.shape, params)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(conv,
            is_leaf=lambda t: isinstance(t, tuple))}
    kern = [k for k in flat if k.endswith("Conv_0/kernel")]
    assert len(kern) == 1 and flat[kern[0]] == (3, 3, obs.shape[-1], 16), flat
