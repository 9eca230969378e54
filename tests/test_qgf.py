"""QGF / FQL: flow matching on a known distribution, the expectile loss by hand, the guided
sampler's identities, the point-maze and its oracle, and offline training end to end."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
from envs.datasets import DatasetError, generate, load, sample_batch
from envs.pointmaze import Maze, oracle_action
from purejaxrl.algos.qgf import Velocity, expectile_loss, flow_matching_loss, guided_sample
from purejaxrl.errors import ConfigError


def test_flow_matching_and_euler_sampler_recover_a_known_distribution():
    """A 1-D target N(0.3, 0.2²): the trained flow's Euler samples have its mean and std.  (Trained on
    continuous t and sampled with 100 steps: with 10 Euler steps even the exact velocity field of this
    Gaussian path ends at std 0.154, not 0.2.)"""
    net = Velocity((64, 64), 1)
    obs = jnp.zeros((256, 1))
    params = net.init(jax.random.PRNGKey(0), obs, jnp.zeros((256, 1)), 0.0)
    opt = optax.adam(3e-3)
    st = opt.init(params)

    @jax.jit
    def step(p, st, key):
        k1, k2 = jax.random.split(key)
        a1 = 0.3 + 0.2 * jax.random.normal(k1, (256, 1))
        loss, g = jax.value_and_grad(lambda p_: flow_matching_loss(lambda a, t: net.apply(p_, obs, a, t), a1, k2, 10,
                                                                   continuous=True))(p)
        upd, st = opt.update(g, st, p)
        return optax.apply_updates(p, upd), st, loss

    key = jax.random.PRNGKey(1)
    for i in range(2000):
        params, st, loss = step(params, st, jax.random.fold_in(key, i))
    big = jnp.zeros((4000, 1))
    a = guided_sample(lambda a, t: net.apply(params, big, a, t), lambda a: jnp.zeros(a.shape[:-1]),
                      jax.random.normal(jax.random.PRNGKey(2), (4000, 1)), 100, 0.0)
    assert float(a.mean()) == pytest.approx(0.3, abs=0.03)
    assert float(a.std()) == pytest.approx(0.2, abs=0.03)


def test_expectile_loss_by_hand():
    u = jnp.array([1.0, -2.0])
    assert float(expectile_loss(u, 0.9)) == pytest.approx((0.9 * 1.0 + 0.1 * 4.0) / 2)
    assert float(expectile_loss(u, 0.5)) == pytest.approx(0.5 * (1.0 + 4.0) / 2)


def _toy_nets():
    vel = Velocity((32, 32), 2)
    p = vel.init(jax.random.PRNGKey(0), jnp.zeros((5, 3)), jnp.zeros((5, 2)), 0.0)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    velocity = lambda a, t: vel.apply(p, obs, a, t)  # noqa: E731
    q = lambda a: -jnp.sum((a - 0.5) ** 2, -1) + jnp.sin(3 * a[..., 0])  # noqa: E731
    return velocity, q, jax.random.normal(jax.random.PRNGKey(2), (5, 2))


@pytest.mark.parametrize("guidance", ["denoised", "noisy", "jacobian"])
def test_zero_guidance_weight_is_the_unguided_sampler_exactly(guidance):
    velocity, q, a0 = _toy_nets()
    plain = guided_sample(velocity, q, a0, 10, 0.0, "none")
    np.testing.assert_array_equal(np.asarray(guided_sample(velocity, q, a0, 10, 0.0, guidance)), np.asarray(plain))
    assert not np.allclose(guided_sample(velocity, q, a0, 10, 0.05, guidance), plain)


def test_one_guidance_step_moves_the_action_by_the_expected_amount():
    """T = 1, constant velocity u, Q(a) = −(a − a*)²: the denoised estimate is â = clip(a₀ + u), so
    a₁ = a₀ + u + w·(−2)(â − a*); the noisy baseline uses a₀ instead of â; with a constant
    velocity the one-step map's Jacobian is the identity, so ``jacobian`` equals ``denoised``."""
    u, a_star, w = 0.3, 0.2, 0.1
    a0 = jnp.array([[0.1], [0.9]])
    velocity = lambda a, t: jnp.full_like(a, u)  # noqa: E731
    q = lambda a: -jnp.sum((a - a_star) ** 2, -1)  # noqa: E731
    a_hat = np.clip(np.asarray(a0) + u, -1, 1)
    expected = np.clip(np.asarray(a0) + u + w * (-2) * (a_hat - a_star), -1, 1)
    np.testing.assert_allclose(guided_sample(velocity, q, a0, 1, w, "denoised"), expected, rtol=1e-6)
    np.testing.assert_allclose(guided_sample(velocity, q, a0, 1, w, "jacobian")[0], expected[0], rtol=1e-6)
    noisy = np.clip(np.asarray(a0) + u + w * (-2) * (np.asarray(a0) - a_star), -1, 1)
    np.testing.assert_allclose(guided_sample(velocity, q, a0, 1, w, "noisy"), noisy, rtol=1e-6)


@pytest.mark.parametrize("maze", ["medium", "large", "giant"])
def test_noise_free_oracle_solves_every_task(maze):
    m = Maze(maze)
    arrays = (jnp.asarray(m.walls), jnp.asarray(m.id_grid), jnp.asarray(m.next_cell), jnp.asarray(m.centers))
    for task in range(1, 6):
        env = envs.make(f"pointmaze_{maze}", task=task)
        gi, gj = int(round((env.goal_xy[1] + 4) / 4)), int(round((env.goal_xy[0] + 4) / 4))
        goal = m.index[(gi, gj)]

        def run(key):
            obs, st = env.reset(key)

            def body(c, k):
                obs, st, done, succ = c
                obs, st, r, te, tr, info = env.step(k, st, oracle_action(arrays, obs, goal))
                return (obs, st, done | te | tr, jnp.maximum(succ, jnp.where(done, 0.0, info["success"]))), None

            return jax.lax.scan(body, (obs, st, False, 0.0), jax.random.split(key, env.max_episode_steps))[0][3]

        assert float(jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(task), 4)).min()) == 1.0, (maze, task)


def test_walls_stop_the_point():
    env = envs.make("pointmaze_medium")
    obs, st = env.reset(jax.random.PRNGKey(0))
    for _ in range(200):  # push into the wall to the left of the start cell (1, 1)
        obs, st, *_ = env.step(jax.random.PRNGKey(1), st, jnp.array([-1.0, 0.0]))
    assert float(obs[0]) >= 4 * 1 - 4 - 2 + 0.7 - 1e-5


def test_dataset_format_relabelling_and_chunks(tmp_path):
    info = generate("pointmaze_medium_navigate", 4, tmp_path / "d.npz")
    raw = np.load(tmp_path / "d.npz")
    assert set(raw.files) >= {"observations", "actions", "terminals"} and raw["observations"].dtype == np.float32
    assert info["transitions"] == 4 * 1001 and raw["terminals"].sum() == 4 and raw["terminals"][1000]
    env = envs.make("pointmaze_medium", task=1)
    d = load(tmp_path / "d.npz", env, chunk=3)
    assert d.size == 4 * (1001 - 3)  # chunks never cross an episode end
    b = sample_batch(d, jax.random.PRNGKey(0), 64, 3, 0.9)
    assert b["actions"].shape == (64, 6)
    success = np.linalg.norm(np.asarray(d.observations) - env.goal_xy, axis=1) <= 1.0
    np.testing.assert_array_equal(np.asarray(d.rewards), success - 1.0)
    np.testing.assert_array_equal(np.asarray(d.masks), 1.0 - success)
    # a hand-made chunk: R_H stops at a terminal state and the continuation is γ^H·Π masks
    from envs.datasets import Dataset

    toy = Dataset(jnp.arange(6.0)[:, None], jnp.zeros((6, 1)), jnp.array([-1.0, -1.0, 0.0, -1.0, -1.0, -1.0]),
                  jnp.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]), jnp.array([1], jnp.int32))
    b = sample_batch(toy, jax.random.PRNGKey(0), 2, 3, 0.5)
    np.testing.assert_allclose(b["rewards"], [-1.0 + 0.5 * 0.0 + 0.0, -1.5][:1] * 2)
    np.testing.assert_allclose(b["discount"], 0.0)
    np.testing.assert_allclose(b["next_obs"][:, 0], 4.0)


@pytest.mark.parametrize("defect, fragment", [
    ("truncated", "cannot be read as .npz"),
    ("missing_terminals", "missing key 'terminals'"),
    ("int_actions", "actions has dtype int64"),
    ("obs_shape", "observations have shape (3,)"),
    ("nan_actions", "actions has NaN"),
    ("action_dim", "action dimension is 2"),
    ("rows", "terminals has 10 rows"),
    ("column_rewards", "rewards has shape"),
    ("out_of_box", "action box is [-1, 1]"),
])
def test_loader_rejects_malformed_files(tmp_path, defect, fragment):
    generate("pointmaze_medium_navigate", 2, tmp_path / "good.npz")
    raw = dict(np.load(tmp_path / "good.npz"))
    path = tmp_path / "bad.npz"
    if defect == "truncated":
        data = (tmp_path / "good.npz").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        if defect == "missing_terminals":
            raw.pop("terminals")
        elif defect == "int_actions":
            raw["actions"] = raw["actions"].astype(np.int64)
        elif defect == "obs_shape":
            raw["observations"] = np.zeros((len(raw["actions"]), 3), np.float32)
        elif defect == "nan_actions":
            raw["actions"][5, 1] = np.nan
        elif defect == "action_dim":
            raw["actions"] = np.zeros((len(raw["actions"]), 3), np.float32)
        elif defect == "rows":
            raw["terminals"] = raw["terminals"][:10]
        elif defect == "column_rewards":  # a D4RL conversion's [N, 1]
            raw["rewards"] = np.zeros((len(raw["actions"]), 1), np.float32)
        elif defect == "out_of_box":
            raw["actions"] = raw["actions"] * 5
        np.savez(path, **raw)
    with pytest.raises(DatasetError, match="dataset.path=") as e:
        load(path, envs.make("pointmaze_medium"))
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_qgf_and_fql_end_to_end_through_the_console_script(tmp_path):
    """``purejaxrl dataset`` → ``train algo=qgf`` (gradient steps, per-w summary) → ``eval`` with
    other guidance weights (one compile) → ``train algo=fql`` on the same data."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "purejaxrl", *a], cwd=tmp_path, capture_output=True, text=True)  # noqa: E731
    r = run("dataset", "pointmaze_medium_navigate", "--episodes", "20", "--out", "data/pm.npz")
    assert r.returncode == 0, r.stderr
    small = ["env=pointmaze_medium", "dataset.path=data/pm.npz", "algo.num_updates=60", "algo.actor_hidden=[32,32]",
             "algo.critic_hidden=[32,32]", "algo.num_evals=1", "algo.num_eval_envs=2", "num_seeds=2", "chunks=2",
             "logger.progress=false", "algo.batch_size=32"]
    r = run("train", "algo=qgf", *small, "run_dir=q", "algo.guidance_weights=[0,0.05]", "algo.guidance_weight=0.05")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert s["gradient_steps"] == 60 and s["env_steps"] == 0 and s["evaluation_episodes_per_run"] == 2 * 2
    assert {"eval_success", "eval_success_w0", "eval_success_w0.05", "eval_return_w0"} <= set(s["final_eval"])
    rows = [json.loads(l) for l in (tmp_path / "q" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["update"] == 60 and np.isfinite(rows[-1]["critic_loss"])
    r = run("eval", "q", "algo.guidance_weights=[0,0.01,0.02]", "--episodes", "2")
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "q" / "eval_test.json").read_text())
    assert [x["w"] for x in ev["per_weight"]] == [0, 0.01, 0.02]
    r = run("train", "algo=fql", *small, "run_dir=f")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["gradient_steps"] == 60


@pytest.mark.slow
def test_datasets_from_a_trained_policy_are_in_the_env_units_and_learned_in_unit_box(tmp_path):
    """``dataset from_policy``: sampled actions of a PPO run, one episode per env cut at its end,
    rewards and masks recorded; the loader rescales Pendulum's [−2, 2] torques to [−1, 1]."""
    from purejaxrl.collect import collect_many
    from purejaxrl.config import compose
    from purejaxrl.experiment import run

    cfg = compose(["algo=ppo", "env=pendulum", "algo.total_timesteps=2048", "algo.num_envs=4", "algo.num_steps=128",
                   "algo.num_minibatches=2", "algo.num_epochs=1", "num_seeds=1", "algo.num_evals=1",
                   "algo.num_eval_envs=2", "logger.progress=false"])
    run(cfg, tmp_path / "ppo", progress=False)
    info = collect_many([str(tmp_path / "ppo")], 3, tmp_path / "d.npz")
    raw = np.load(tmp_path / "d.npz")
    # 200 steps per episode plus its final observation, stored as a terminal row (no transition from it)
    assert info["episodes"] == 3 and info["transitions"] == 3 * 201 and raw["terminals"].sum() == 3
    assert raw["actions"].shape == (603, 1) and np.abs(raw["actions"]).max() <= 2.0
    assert np.all(raw["masks"][~raw["terminals"]] == 1.0) and raw["rewards"].max() <= 0.0  # never terminates; costs ≤ 0
    assert load(tmp_path / "d.npz", envs.make("pendulum")).size == 3 * 200  # every step is a transition
    d = load(tmp_path / "d.npz", envs.make("pendulum"))
    np.testing.assert_allclose(np.asarray(d.actions), np.clip(raw["actions"] / 2.0, -1 + 1e-5, 1 - 1e-5), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d.rewards), raw["rewards"])


# ---- FQL as its reference, and QGF's reference options ----

SMALL = ["env=pointmaze_medium", "algo.actor_hidden=[16,16]", "algo.critic_hidden=[16,16]", "algo.batch_size=8",
         "algo.flow_steps=3", "num_seeds=1"]


@pytest.fixture(scope="module")
def maze_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pm.npz"
    generate("pointmaze_medium_navigate", 2, path, episode_length=50)
    return str(path)


def _offline(maze_data, *overrides):
    from purejaxrl.config import compose
    from purejaxrl.trainer import build_algorithm, default_hparams

    cfg = compose(["algo=fql" if any(o == "algo=fql" for o in overrides) else "algo=qgf", *SMALL,
                   f"dataset.path={maze_data}", *[o for o in overrides if o != "algo=fql"]])
    algo = build_algorithm(cfg)
    hp = default_hparams(cfg, algo)
    data = algo.load_data()
    return algo, hp, data, algo.init(jax.random.PRNGKey(0), hp, data)


def _onestep_params(value):
    """The one-step policy's parameters: the ``value`` slot itself (``critic=fql``) or its ``"mu"``."""
    return value["mu"] if "mu" in value else value


def _set_constant_output(params, c):
    """The one-step MLP made to output ``c`` everywhere: last layer's kernel 0, bias ``c``."""
    inner = params["params"]
    last = max((n for n in inner if n.startswith("Dense")), key=lambda n: int(n.split("_")[-1]))
    layer = {"kernel": jnp.zeros_like(inner[last]["kernel"]), "bias": jnp.full_like(inner[last]["bias"], c)}
    return {"params": {**inner, last: layer}}, last


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_fql_distillation_pulls_back_an_output_beyond_the_box(maze_data):
    """The defect: the distillation term went through the clip, so a one-step output past ±1 had a
    distillation gradient of exactly 0 and nothing pulled it back.  As the reference: the distillation
    uses the unclipped output, so from a constant output of 1.3 one update lowers it."""
    algo, hp, data, state = _offline(maze_data, "algo=fql")
    mu, last = _set_constant_output(_onestep_params(state.value), 1.3)
    value = {**state.value, "mu": mu} if "mu" in state.value else mu
    state = state.replace(value=value, value_opt=optax.adam(hp["lr"]).init(value))
    new, metrics = algo.update(state, hp, 0, data)
    bias = np.asarray(_onestep_params(new.value)["params"][last]["bias"])
    assert np.all(bias < 1.3 - 1e-5), bias  # Adam's first step: lr against the gradient's sign
    np.testing.assert_allclose(bias, 1.3 - float(hp["lr"]), rtol=1e-3)


def test_fql_policy_loss_by_hand(maze_data):
    """``α·E‖μ_raw − flow_a‖² − λ·E[mean_i Q_i(s, clip(μ_raw))]``: beyond the box only the distillation
    acts (gradient ``2α·mean(μ_raw − flow_a)`` on the output bias); with ``normalize_q_loss`` the Q
    term is divided by ``E|Q|``."""
    algo, hp, data, state = _offline(maze_data, "algo=fql")
    obs = data.observations[:5]
    z = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
    flow_a = jax.random.uniform(jax.random.PRNGKey(2), (5, 2), minval=-1, maxval=1)
    mu, last = _set_constant_output(_onestep_params(state.value), 1.3)
    g = jax.grad(lambda p: algo.policy_loss(p, state.critic, obs, z, flow_a, 10.0)[0])(mu)
    np.testing.assert_allclose(g["params"][last]["bias"], 2 * 10.0 * np.mean(1.3 - np.asarray(flow_a), 0) / 2, rtol=1e-5)
    # inside the box, α = 0: the Q term alone, and normalised it is that divided by E|Q|
    mu_in, _ = _set_constant_output(_onestep_params(state.value), 0.2)
    q = algo._q_all(state.critic, obs, jnp.full((5, 2), 0.2)).mean(0)
    plain = jax.grad(lambda p: algo.policy_loss(p, state.critic, obs, z, flow_a, 0.0)[0])(mu_in)
    algo.normalize_q_loss = True
    scaled = jax.grad(lambda p: algo.policy_loss(p, state.critic, obs, z, flow_a, 0.0)[0])(mu_in)
    np.testing.assert_allclose(scaled["params"][last]["bias"], plain["params"][last]["bias"] / np.mean(np.abs(q)), rtol=1e-4)
    assert np.abs(plain["params"][last]["bias"]).max() > 0


@pytest.mark.parametrize("critic, q_agg", [("fql", "mean"), ("fql", "min"), ("iql", "min"), ("iql", "mean")])
def test_fql_critic_targets(maze_data, critic, q_agg):
    """The critic loss an update reports equals ``mean_i E(Q_i − y)²`` with ``y`` computed here: FQL's
    own target at the one-step policy's next action (``q_agg`` over the target Qs) or IQL's ``V(s')``;
    with ``critic=iql`` V's expectile loss is on the *min* of the target Qs whatever ``q_agg`` says
    (QGF's FQL script).  The target critic is moved away from the critic first, so that using the
    wrong one shows."""
    from envs.datasets import sample_batch
    from purejaxrl.algos.qgf import aggregate

    algo, hp, data, state = _offline(maze_data, "algo=fql", f"algo.critic={critic}", f"algo.q_agg={q_agg}")
    assert ("v" in state.value) == (critic == "iql")
    noise = jax.tree.map(lambda x: 0.3 * jax.random.normal(jax.random.PRNGKey(7), x.shape), state.critic)
    state = state.replace(target=jax.tree.map(jnp.add, state.critic, noise))
    _, kb, _, _, kz2 = jax.random.split(state.rng, 5)
    b = sample_batch(data, kb, algo.batch_size, 1, hp["gamma"])
    if critic == "fql":
        a_next = algo.mu(state.value, b["next_obs"], jax.random.normal(kz2, b["actions"].shape))
        qn = algo._q_all(state.target, b["next_obs"], a_next)
        boot = qn.min(0) if q_agg == "min" else qn.mean(0)
    else:
        boot = algo.v.apply(state.value["v"], b["next_obs"])
    y = b["rewards"] + b["discount"] * boot
    expected = np.mean((np.asarray(algo._q_all(state.critic, b["obs"], b["actions"])) - np.asarray(y)[None]) ** 2)
    _, m = algo.update(state, hp, 0, data)
    np.testing.assert_allclose(m["critic_loss"], expected, rtol=1e-5)
    if critic == "iql":
        q_min = algo._q_all(state.target, b["obs"], b["actions"]).min(0)
        np.testing.assert_allclose(m["value_loss"], expectile_loss(q_min - algo.v.apply(state.value["v"], b["obs"]), 0.9),
                                   rtol=1e-5)
    np.testing.assert_allclose(aggregate(jnp.array([[1.0, 4.0], [3.0, 2.0]]), q_agg), [1.0, 2.0] if q_agg == "min" else [2.0, 3.0])


def test_qgf_per_network_learning_rates(maze_data):
    """Adam's first step moves every parameter with a gradient by its learning rate: the flow by
    ``actor_lr``, the Q-networks by ``critic_lr``, V by ``value_lr``."""
    algo, hp, data, state = _offline(maze_data, "algo.actor_lr=0.01", "algo.critic_lr=0.001", "algo.value_lr=0.0001")
    new, _ = algo.update(state, hp, 0, data)
    for name, lr in (("actor", 0.01), ("critic", 0.001), ("value", 0.0001)):
        step = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel()
                               for a, b in zip(jax.tree.leaves(getattr(new, name)), jax.tree.leaves(getattr(state, name)))])
        moved = step[step > lr * 1e-3]
        assert moved.size > 0.5 * step.size
        np.testing.assert_allclose(np.median(moved), lr, rtol=0.02)


def test_n_step_horizon_apart_from_the_chunk():
    """``horizon=3`` with one action per sample: the first action, the 3-step return (stopped at a
    terminal state), the state 3 steps on, ``γ³·Π masks``."""
    from envs.datasets import Dataset

    toy = Dataset(jnp.arange(8.0)[:, None], jnp.arange(8.0)[:, None] / 10,
                  jnp.array([-1.0, -1.0, -1.0, -2.0, -1.0, -0.5, -1.0, -1.0]),
                  jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]), jnp.array([1, 3, 4], jnp.int32))
    b = sample_batch(toy, jax.random.PRNGKey(0), 64, 3, 0.5, act_steps=1)
    first = np.asarray(b["obs"][:, 0]).astype(int)
    assert set(first) == {1, 3, 4} and b["actions"].shape == (64, 1)
    np.testing.assert_allclose(b["actions"][:, 0], first / 10)
    np.testing.assert_allclose(b["next_obs"][:, 0], first + 3)
    # the terminal state's own reward counts, nothing after it does, and nothing is bootstrapped past it
    want = {1: (-1 - 0.5 * 1 - 0.25 * 2, 0.125), 3: (-2 - 0.5 * 1 - 0.25 * 0.5, 0.0), 4: (-1 - 0.5 * 0.5, 0.0)}
    np.testing.assert_allclose(b["rewards"], [want[i][0] for i in first])
    np.testing.assert_allclose(b["discount"], [want[i][1] for i in first])


@pytest.mark.slow
def test_best_of_n_with_guidance_keeps_the_best_guided_sample(maze_data):
    """``best_of=4`` at ``w > 0``: of the 4 guided samples (keys split from the decision's key), the
    one with the highest ``q_agg``; ``q_agg=mean`` ranks by the mean of the two target Qs."""
    algo, hp, data, state = _offline(maze_data, "algo.best_of=4", "algo.q_agg=mean", "algo.guidance_weights=[0.5]",
                                     "algo.guidance_weight=0.5")
    obs = data.observations[:6]
    key = jax.random.PRNGKey(3)
    got = algo.act(state, obs, key, 0.5)
    cands = jnp.stack([algo.flow_sample(state, obs, k, 0.5, "denoised") for k in jax.random.split(key, 4)])
    q = np.stack([np.asarray(algo._q_all(state.target, obs, c).mean(0)) for c in cands])
    np.testing.assert_allclose(got, np.asarray(cands)[q.argmax(0), np.arange(6)], atol=1e-6)


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_evaluation_between_chunks_timed_apart_on_the_training_programs_keys(maze_data, tmp_path):
    """Evaluations run between compiled chunks: ``num_evals: null`` gives one for a short run, the
    summary reports evaluation time apart from training, and the final evaluation of each run is the
    one the training program's last greedy test would make (its ``progress_key``)."""
    from purejaxrl.config import compose
    from purejaxrl.evaluate import load_run
    from purejaxrl.experiment import run

    cfg = compose(["algo=qgf", *SMALL[:-1], f"dataset.path={maze_data}", "algo.num_updates=30", "algo.num_eval_envs=2",
                   "algo.guidance_weights=[0,0.1]", "algo.guidance_weight=0.1", "num_seeds=2", "logger.progress=false",
                   "+env.kwargs.max_episode_steps=60"])
    s = run(cfg, tmp_path / "r", progress=False)
    assert s["evaluation_episodes_per_run"] == 1 * 2 * 2  # one evaluation, 2 weights x 2 episodes
    assert s["evaluation_seconds"] > 0 and s["evaluation_compile_seconds"] > 0 and s["run_seconds"] > 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if r.get("eval_return") is not None]
    assert len(evaluated) == 2 and all(r["update"] == 30 for r in evaluated)  # one row per run
    algo, state, _, runs, _ = load_run(tmp_path / "r")
    for r in range(2):
        st = jax.tree.map(lambda x: x[r], state)
        ret, succ = algo.evaluate_weights(st, algo.progress_key(st, algo.num_updates - 1), 2)
        np.testing.assert_allclose(s["final_eval"]["eval_return_w0.1"]["per_seed"][r], float(ret[1].mean()), rtol=1e-5)
        np.testing.assert_allclose(s["final_eval"]["eval_return_w0"]["per_seed"][r], float(ret[0].mean()), rtol=1e-5)


def test_progress_bar_says_when_it_is_evaluating():
    from purejaxrl.experiment import _add_host_evaluation

    seen = []

    class Bar:
        def set_description_str(self, text, refresh=True):
            seen.append(text)

    class Algo:
        host_eval = True

        def evaluation_label(self, num_runs=1):
            return "evaluating 2 weights x 4 episodes (<= 9 steps)"

        def host_evaluate(self, state, batched, update, hparams=None):
            seen.append("running")
            return {"eval_return": np.ones(1)}

    class Trainer:
        batched, num_runs, eval_every, num_updates = False, 1, 3, 6

    metrics = {"loss": np.zeros((1, 3))}
    _add_host_evaluation(Algo(), None, Trainer(), metrics, 3, 3, Bar())
    assert seen == ["evaluating 2 weights x 4 episodes (<= 9 steps)", "running", ""]
    np.testing.assert_array_equal(metrics["eval_return"], [[np.nan, np.nan, 1.0]])


# ---- OGBench's protocol: the five tasks (env.kwargs.task=all), goal noise, the validation split ----
def test_run_grid_puts_the_task_axis_outermost_and_describes_it():
    from purejaxrl.config import run_grid

    cfg = {"num_seeds": 2, "seed": 7, "algo": {"lr": 0.1}, "vmap": {"algo": {"lr": [0.1, 0.2]}}}
    runs, hp, seeds = run_grid(cfg, ("lr",), {"task": [1, 2, 3]})
    assert len(runs) == 12
    assert [r["env.task"] for r in runs] == [1] * 4 + [2] * 4 + [3] * 4
    assert [r["algo.lr"] for r in runs[:4]] == [0.1, 0.1, 0.2, 0.2]
    np.testing.assert_array_equal(seeds, [7, 8] * 6)
    np.testing.assert_array_equal(hp["task"], [1] * 4 + [2] * 4 + [3] * 4)
    np.testing.assert_allclose(hp["lr"], [0.1, 0.1, 0.2, 0.2] * 3)
    runs1, hp1, _ = run_grid(cfg, ("lr",), {"task": [4]})  # one task: traced, not described
    assert "env.task" not in runs1[0] and set(hp1["task"]) == {4.0}


def test_pointmaze_with_task_matches_the_single_task_env_also_when_traced():
    from envs.pointmaze import PointMaze

    allm = PointMaze("medium", "all")
    assert allm.tasks == (1, 2, 3, 4, 5)
    for t in (1, 3, 5):
        one = PointMaze("medium", t)
        np.testing.assert_array_equal(allm.with_task(t).goal_xy, one.goal_xy)
        traced = jax.jit(lambda k, t_: allm.with_task(t_).reset(k)[0])(jax.random.PRNGKey(0), jnp.int32(t))
        np.testing.assert_allclose(traced, one.reset(jax.random.PRNGKey(0))[0])
        pos = jnp.asarray(one.goal_xy) + 0.5
        assert bool(jax.jit(lambda t_: allm.with_task(t_).success(pos))(jnp.int32(t)))


def test_task_all_dataset_holds_each_tasks_relabelled_rewards(tmp_path):
    generate("pointmaze_medium_navigate", 3, tmp_path / "d.npz", episode_length=200)
    multi = load(tmp_path / "d.npz", envs.make("pointmaze_medium", task="all"), 1)
    assert multi.rewards.shape == (5, 600) and multi.masks.shape == (5, 600)
    for t in (2, 3):  # tasks whose goals this small dataset visits: a row mix-up changes rewards
        one = load(tmp_path / "d.npz", envs.make("pointmaze_medium", task=t), 1)
        assert (one.rewards == 0).any()
        np.testing.assert_array_equal(multi.rewards[t - 1], one.rewards)
        np.testing.assert_array_equal(multi.masks[t - 1], one.masks)
        b_multi = sample_batch(multi, jax.random.PRNGKey(3), 512, 3, 0.9, task=jnp.int32(t - 1))
        b_one = sample_batch(one, jax.random.PRNGKey(3), 512, 3, 0.9)
        for k in b_one:
            np.testing.assert_array_equal(b_multi[k], b_one[k])
        b_other = sample_batch(multi, jax.random.PRNGKey(3), 512, 3, 0.9, task=jnp.int32(t % 5))  # the next task's row
        assert not np.array_equal(b_other["rewards"], b_one["rewards"])


def test_generated_dataset_has_an_ogbench_validation_split_of_a_tenth(tmp_path):
    info = generate("pointmaze_medium_navigate", 20, tmp_path / "pm.npz", episode_length=50)
    train, val = np.load(tmp_path / "pm.npz"), np.load(tmp_path / "pm-val.npz")
    assert info["val_episodes"] == 2 and val["terminals"].sum() == 2 and train["terminals"].sum() == 20
    assert len(val["observations"]) == 100 and len(train["observations"]) == 1000
    assert not np.isin(val["observations"][:, 0], train["observations"][:, 0]).all()  # other episodes
    generate("pointmaze_medium_navigate", 20, tmp_path / "none.npz", episode_length=50, val_episodes=0)
    assert not (tmp_path / "none-val.npz").exists()


def test_collection_goals_are_jittered_as_ogbench_unless_asked_not_to():
    """OGBench's data-collection goals: the goal cell's centre moved by U(−1, 1) per axis (a quarter
    cell); a goal is replaced only when the agent comes within 1.0 of the jittered position; without
    jitter goals sit at centres.  Starts and the oracle's moves (at most 0.2 per axis) are the same."""
    from envs.pointmaze import generate_navigate

    a = generate_navigate("medium", jax.random.PRNGKey(0), 8, 400, goal_noise=False, with_goals=True)
    b = generate_navigate("medium", jax.random.PRNGKey(0), 8, 400, goal_noise=True, with_goals=True)
    np.testing.assert_array_equal(a["goals"], a["goal_centers"])
    off = b["goals"] - b["goal_centers"]
    assert np.abs(off).max() <= 1.0 and np.abs(off).max() > 0.9 and np.abs(off.mean(0)).max() < 0.3
    np.testing.assert_array_equal(a["observations"][0], b["observations"][0])  # same start
    for d in (a, b):
        pos, goals = d["observations"].reshape(8, 400, 2), d["goals"].reshape(8, 400, 2)
        changed = np.any(goals[:, 1:] != goals[:, :-1], axis=-1)  # a new goal drawn after step t
        nxt = np.concatenate([pos[:, 1:], pos[:, -1:]], 1)[:, :-1]  # the position after step t
        arrival = np.linalg.norm(nxt - goals[:, :-1], axis=-1)
        assert changed.sum() > 0 and np.all(arrival[changed] <= 1.0 + 1e-5)
        step = np.abs(np.diff(pos, axis=1))
        assert step.max() <= 0.2 + 1e-5


@pytest.mark.slow
def test_task_all_runs_equal_the_single_task_runs(tmp_path):
    """``env.kwargs.task=all``: the run of (task t, seed s) in the five-task program learns and is
    evaluated as the single-task run of task t with seed s (same keys, that task's rewards, that
    task's start and goal) — the identity that makes the average over tasks OGBench's."""
    from purejaxrl.config import compose
    from purejaxrl.experiment import run

    generate("pointmaze_medium_navigate", 4, tmp_path / "d.npz", episode_length=200)
    base = ["algo=qgf", "env=pointmaze_medium", f"dataset.path={tmp_path / 'd.npz'}", "num_seeds=2",
            "algo.num_updates=30", "algo.batch_size=16", "algo.actor_hidden=[16]", "algo.critic_hidden=[16]",
            "algo.num_eval_envs=3", "algo.guidance_weights=[0,1]", "algo.guidance_weight=1", "logger.progress=false"]
    env200 = ["+env.kwargs.max_episode_steps=40"]
    multi = run(compose([*base, *env200, "env.kwargs.task=all"]), tmp_path / "all", progress=False)
    one = run(compose([*base, *env200, "env.kwargs.task=3"]), tmp_path / "t3", progress=False)
    assert [r["env.task"] for r in multi["runs"]] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for key in ("eval_return_w0", "eval_return_w1"):
        np.testing.assert_allclose(multi["final_eval"][key]["per_seed"][4:6], one["final_eval"][key]["per_seed"], rtol=1e-5)
    rows = lambda d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    curve = lambda rs, pred: np.array([[r["critic_loss"], r["q_mean"], r["actor_loss"]] for r in rs if pred(r)])  # noqa: E731
    for seed in (0, 1):
        np.testing.assert_allclose(curve(rows("all"), lambda r: r["env.task"] == 3 and r["seed"] == seed),
                                   curve(rows("t3"), lambda r: r["seed"] == seed), rtol=2e-4, atol=1e-6)
    # the tasks' rewards differ, so do their critics (and the flow, trained on the same data, does not)
    t1, t3 = (curve(rows("all"), lambda r, t=t: r["env.task"] == t and r["seed"] == 0) for t in (1, 3))
    assert not np.allclose(t1[:, 1], t3[:, 1])
    np.testing.assert_allclose(t1[:, 2], t3[:, 2], rtol=2e-4)


@pytest.mark.slow
def test_offline_runs_checkpoint_between_evaluations_when_asked(tmp_path):
    """``chunks``: an offline run (evaluated on the host between chunks) may checkpoint more often
    than it evaluates; evaluations stay at their updates, and a run stopped between evaluations
    resumes to the same result."""
    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.config import compose
    from purejaxrl.experiment import run

    generate("pointmaze_medium_navigate", 2, tmp_path / "d.npz", episode_length=100)
    # 45 updates, an evaluation every 45 // 2 = 22 (and the final one), chunks of at most ceil(45 / 4) = 12
    # updates: 11, the longest that divides 22
    over = ["algo=qgf", "env=pointmaze_medium", f"dataset.path={tmp_path / 'd.npz'}", "algo.num_updates=45",
            "algo.num_evals=2", "chunks=4", "algo.batch_size=8", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]",
            "algo.num_eval_envs=2", "algo.guidance_weights=[0]", "algo.guidance_weight=0", "+env.kwargs.max_episode_steps=10"]
    run(compose(over), tmp_path / "full", progress=False)
    ck = Checkpointer(tmp_path / "full" / "checkpoints")
    steps = ck._mngr.all_steps()
    ck.close()
    assert sorted(steps) == [44, 45]  # a checkpoint every 11 updates and at the end (the last two kept)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    evaluated = sorted({r["update"] for r in rows if r.get("eval_return") is not None})
    assert evaluated == [22, 44, 45]
    import csv

    with open(tmp_path / "full" / "metrics.csv") as f:  # the evaluation columns exist from the first row
        assert "eval_return" in next(csv.reader(f))
    run({**compose([*over, "stop_after_chunks=3"])}, tmp_path / "part", progress=False)  # stops at update 33
    with pytest.raises(ConfigError, match="resume with the chunks value"):  # chunks of 22 would skip the one at 44
        run({**compose([*over, "chunks=1"]), "resume": True}, tmp_path / "part", progress=False)
    run({**compose(over), "resume": True}, tmp_path / "part", progress=False)

    def last(d):  # every run's training metrics at the last update
        rs = [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        return [[r["critic_loss"], r["q_mean"], r["actor_loss"]] for r in rs if r["update"] == 45]

    np.testing.assert_allclose(last("part"), last("full"), rtol=1e-6)
    parts = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["update"] for r in parts if r.get("eval_return") is not None}) == [22, 44, 45]


def _oracle_to_task3(monkeypatch):
    """Every QGF policy replaced by the BFS oracle toward task 3's goal: it succeeds only where an
    episode is played on task 3 (its start, its goal), so results reveal the task evaluated."""
    from envs.pointmaze import TASKS, Maze
    from purejaxrl.algos.qgf import QGF

    maze = Maze("medium")
    arrays = (jnp.asarray(maze.walls), jnp.asarray(maze.id_grid), jnp.asarray(maze.next_cell), jnp.asarray(maze.centers))
    goal = maze.index[TASKS["medium"][2][1]]

    def act(self, state, obs, key, w):
        return jnp.tile(jax.vmap(lambda p: oracle_action(arrays, p, goal))(obs), (1, self.chunk))

    monkeypatch.setattr(QGF, "act", act)


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_each_run_is_evaluated_on_its_own_task_in_training_and_in_eval(tmp_path, monkeypatch):
    """With an oracle that only solves task 3, success per run is 1 exactly for the task-3 runs:
    in the evaluation during training, through ``purejaxrl eval`` (``evaluate_run``), and for runs
    ordered any way (the in-program evaluation with tasks given in another order)."""
    from purejaxrl.config import compose
    from purejaxrl.evaluate import evaluate_run, load_run
    from purejaxrl.experiment import run

    _oracle_to_task3(monkeypatch)
    generate("pointmaze_medium_navigate", 2, tmp_path / "d.npz", episode_length=100)
    over = ["algo=qgf", "env=pointmaze_medium", "env.kwargs.task=all", f"dataset.path={tmp_path / 'd.npz'}", "num_seeds=1",
            "algo.num_updates=2", "algo.batch_size=8", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]",
            "algo.num_eval_envs=2", "algo.guidance_weights=[0]", "algo.guidance_weight=0"]
    s = run(compose(over), tmp_path / "run", progress=False)
    assert s["final_eval"]["eval_success"]["per_seed"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    ev = evaluate_run(tmp_path / "run", 2, "validation", 0, write=False)
    assert [r["env.task"] for r in ev["per_run"]] == [1, 2, 3, 4, 5]
    assert ev["per_weight"][0]["per_run_success"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    algo, state, *_ = load_run(tmp_path / "run")
    _, succ = algo.host_evaluate_weights(state, True, 2, "test", 0, np.array([3, 3, 1, 1, 3]))
    np.testing.assert_array_equal(succ.mean(axis=(1, 2)), [1, 1, 0, 0, 1])
