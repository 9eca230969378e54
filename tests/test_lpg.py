"""The LPG agent and its update rules: the hand-written a2c rule by hand and against GAE(λ = 1), the
meta-network's backward GRU (episode boundaries, direction), the temporally-aware inputs, and the
agent trained as an ordinary algorithm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl import returns
from purejaxrl import update_rules as U
from purejaxrl.algos import get_algorithm
from purejaxrl.algos.lpg import kl_categorical
from purejaxrl.config import ConfigError, compose, validate


def _x(r, d, e, e_next, prob=None):
    r, d, e, e_next = (jnp.asarray(v, jnp.float32)[:, None] for v in (r, d, e, e_next))
    prob = jnp.full_like(r, 0.5) if prob is None else jnp.asarray(prob, jnp.float32)[:, None]
    return jnp.stack([r, d, prob, e, e_next * (1 - d)], -1)


def test_two_hot_by_hand():
    b = jnp.asarray([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(U.two_hot(jnp.asarray([0.25, -1.0, 5.0]), b),
                               [[0, 0.75, 0.25], [1, 0, 0], [0, 0, 1]], atol=1e-6)


def test_a2c_rule_by_hand():
    """r = (1, 0, 2), γ = 0.5, termination at t = 1, rollout cut after t = 2 with e_3 = 4:
    G_2 = 2 + 0.5·4 = 4, G_1 = 0 (terminal), G_0 = 1 + 0.5·G_1 = 1."""
    rule = U.make_rule("a2c", value_bound=8.0)
    x = _x([1, 0, 2], [0, 1, 0], [0.5, 0.25, 1.0], [0.25, 9.0, 4.0])
    reset = jnp.asarray([[False], [True], [False]])
    pi_hat, y_hat = rule.targets(None, x, reset, 0.5)
    np.testing.assert_allclose(pi_hat[:, 0], [1 - 0.5, 0 - 0.25, 4 - 1.0], atol=1e-6)
    np.testing.assert_allclose(y_hat[:, 0] @ U.bins(rule.spec), [1.0, 0.0, 4.0], atol=1e-5)  # two-hot decodes to G
    # a time limit at t = 1 instead: bootstrap from e_2' = 9 (the final observation's embedding)
    pi_hat, _ = rule.targets(None, _x([1, 0, 2], [0, 0, 0], [0.5, 0.25, 1.0], [0.25, 9.0, 4.0]), reset, 0.5)
    np.testing.assert_allclose(pi_hat[:, 0], [1 + 0.5 * (0 + 0.5 * 9) - 0.5, 4.5 - 0.25, 3.0], atol=1e-6)


def test_a2c_rule_is_gae_with_lambda_one():
    """π̂ of the a2c rule is A2C's advantage, GAE(λ = 1) with the same values and time-limit bootstraps."""
    T, B = 12, 5
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    r = jax.random.normal(k[0], (T, B))
    term = jax.random.bernoulli(k[1], 0.15, (T, B))
    trunc = jax.random.bernoulli(k[2], 0.1, (T, B)) & ~term
    v = jax.random.normal(k[3], (T, B))
    final = jax.random.normal(k[4], (T, B))
    last = jnp.ones(B)
    v_next = returns.next_state_values(v, last, trunc, final)
    adv, _ = returns.gae_advantages(r, term, trunc, v, v_next, 0.9, 1.0)
    d = term.astype(jnp.float32)
    x = jnp.stack([r, d, jnp.full_like(r, 0.5), v, v_next * (1 - d)], -1)
    pi_hat, _ = U.make_rule("a2c").targets(None, x, term | trunc, 0.9)
    np.testing.assert_allclose(pi_hat, adv, rtol=1e-5, atol=1e-5)


def test_lpg_meta_network_reads_backward_and_stops_at_episode_ends():
    rule = U.make_rule("lpg", jax.random.PRNGKey(1), hidden=16)
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 3, 5))
    no_reset = jnp.zeros((6, 3), bool)
    pi, y = rule.targets(rule.params, x, no_reset, 0.99)
    assert pi.shape == (6, 3) and y.shape == (6, 3, 8)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    x2 = x.at[4].add(1.0)  # a later step: it informs the earlier ones (backward in time) ...
    pi2, _ = rule.targets(rule.params, x2, no_reset, 0.99)
    assert np.all(np.abs(pi2[:4] - pi[:4]) > 0) and np.allclose(pi2[5], pi[5])  # ... and not the later ones
    reset = no_reset.at[2].set(True)  # an episode ends at step 2: steps 3.. belong to the next one
    pi3, _ = rule.targets(rule.params, x, reset, 0.99)
    pi4, _ = rule.targets(rule.params, x2, reset, 0.99)
    np.testing.assert_allclose(pi4[:3], pi3[:3], rtol=1e-6)  # nothing flows back across the boundary
    assert np.all(np.abs(pi4[3:5] - pi3[3:5]) > 0)


def _lpg(rule, extra=()):
    cfg = compose(["algo=lpg", "env=gridworld_sparse", "algo.num_envs=4", "algo.num_steps=8", "algo.total_timesteps=64",
                   "algo.num_eval_envs=2", f"algo.update_rule={rule}", "network.num_layers=0", *extra])
    validate(cfg)
    return get_algorithm("lpg")(cfg["algo"], cfg["env"], cfg["network"]), cfg


def _time_weighted(params, key=jax.random.PRNGKey(11)):
    """A time-aware rule's parameters with random weights on its two time inputs."""
    wx = params["gru_wx"]
    return {**params, "gru_wx": wx.at[5:].set(jax.random.normal(key, wx[5:].shape) / np.sqrt(5))}


def test_time_aware_inputs_change_the_targets_and_plain_lpg_has_none():
    plain, _ = _lpg("lpg")
    ta, _ = _lpg("ta_lpg")
    assert plain.rule.num_inputs == 5 and ta.rule.num_inputs == 7
    hp = {"lr": 1e-3, "y_lr": 1e-3, "max_grad_norm": 0.5, "gamma": 0.99, "y_coef": 0.5}
    for algo in (plain, ta):
        hpp = {**hp, **algo.extra_hparams()}
        if algo is ta:  # a rule whose time inputs have weight, as after meta-training (a fresh one's are 0)
            hpp["update_rule"] = _time_weighted(hpp["update_rule"])
        state = algo.init(jax.random.PRNGKey(0), hpp)
        from purejaxrl.rollout import rollout

        def policy(obs, key, algo=algo, state=state, hpp=hpp):
            logits, y_logits = algo.network.apply(state.params, obs)
            a = jax.random.categorical(key, logits)
            return a, {"prob": jnp.full(a.shape, 0.2), "emb": algo.rule.embed(hpp["update_rule"], jax.nn.softmax(y_logits))}

        embed = lambda o, algo=algo, state=state, hpp=hpp: algo.rule.embed(hpp["update_rule"], algo._y(state.params, o))  # noqa: E731
        (obs, _, _), traj = rollout(algo.make_venv(4, hpp), policy, state.obs, state.env_state, state.rng, 8, embed)
        outs = []
        for p, n in ((0.1, 20), (0.9, 20), (0.1, 200)):
            x, reset = algo.rule_inputs(state.params, hpp["update_rule"], traj, obs, p, n)
            outs.append(algo.rule.targets(hpp["update_rule"], x, reset, 0.99)[0])
            if algo is ta:  # the TA columns are n/N and log N, the same at every step
                np.testing.assert_allclose(x[..., 5], p, rtol=1e-6)
                np.testing.assert_allclose(x[..., 6], np.log(n), rtol=1e-6)
        if algo is plain:
            np.testing.assert_array_equal(outs[0], outs[1])
            np.testing.assert_array_equal(outs[0], outs[2])
        else:
            assert float(jnp.abs(outs[0] - outs[1]).max()) > 0 and float(jnp.abs(outs[0] - outs[2]).max()) > 0


def test_lpg_and_ta_lpg_from_one_key_differ_only_in_the_time_input_rows():
    """Review of the ta_lpg study: the GRU's input weights were drawn with the input width in their shape
    and scale, so LPG's and TA-LPG's starting networks differed in every row, not only the time inputs;
    a second review: random time rows would make the time inputs dominate the starting GRU."""
    key = jax.random.PRNGKey(7)
    lpg = U.make_rule("lpg", key, hidden=16)
    ta = U.make_rule("ta_lpg", key, hidden=16)
    assert ta.params["gru_wx"].shape == (7, 48) and lpg.params["gru_wx"].shape == (5, 48)
    np.testing.assert_array_equal(ta.params["gru_wx"][:5], lpg.params["gru_wx"])
    for k in lpg.params:
        if k != "gru_wx":
            np.testing.assert_array_equal(ta.params[k], lpg.params[k])
    np.testing.assert_array_equal(ta.params["gru_wx"][5:], 0.0)  # the time inputs start without weight
    # so at the start both rules give the same targets, whatever the time inputs read
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 3, 5))
    t = jnp.concatenate([x, jnp.full((6, 3, 1), 0.3), jnp.full((6, 3, 1), 4.2)], -1)
    reset = jnp.zeros((6, 3), bool)
    for a, b in zip(lpg.targets(lpg.params, x, reset, 0.99), ta.targets(ta.params, t, reset, 0.99)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_without_time_is_the_rule_reading_fixed_time_inputs():
    rule = U.make_rule("ta_lpg", jax.random.PRNGKey(3), hidden=8)
    rule = U.UpdateRule(rule.spec, _time_weighted(rule.params))
    x = jax.random.normal(jax.random.PRNGKey(4), (6, 3, 7))
    x = x.at[..., 5].set(0.7).at[..., 6].set(jnp.log(40.0))
    reset = jnp.zeros((6, 3), bool).at[2, 1].set(True)
    p, n = U.fixed_time_inputs([10, 100])
    assert p == 0.5 and n == pytest.approx(np.sqrt(1000.0))  # the middle of the log-uniform lifetime range
    ablated = U.without_time(rule, p, n)
    got = ablated.targets(ablated.params, x, reset, 0.99)
    want = rule.targets(rule.params, x.at[..., 5].set(p).at[..., 6].set(np.log(n)), reset, 0.99)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    x2 = x.at[..., 5].set(0.1).at[..., 6].set(jnp.log(250.0))  # the agent's own time no longer matters
    for g, w in zip(got, ablated.targets(ablated.params, x2, reset, 0.99)):
        np.testing.assert_array_equal(g, w)
    assert float(jnp.abs(got[0] - rule.targets(rule.params, x, reset, 0.99)[0]).max()) > 0  # it did before
    assert "fixed" in ablated.spec["ablation"] and "ablation" not in rule.spec
    with pytest.raises(ValueError, match="time_aware=False"):
        U.without_time(U.make_rule("lpg", jax.random.PRNGKey(3), hidden=8), p, n)


@pytest.mark.parametrize("rule", ["a2c", pytest.param("lpg", marks=pytest.mark.slow), pytest.param("ta_lpg", marks=pytest.mark.slow)])
def test_lpg_agent_trains_as_an_algorithm(rule, tmp_path):
    from purejaxrl.experiment import run

    _, cfg = _lpg(rule)
    summary = run({**cfg, "num_seeds": 2}, tmp_path / rule, progress=False)
    assert summary["total_env_steps"] == 2 * 64


def test_rule_round_trip_and_config_errors(tmp_path):
    rule = U.make_rule("ta_lpg", jax.random.PRNGKey(3), hidden=8)
    U.save_rule(rule, tmp_path / "r")
    back = U.load_rule(tmp_path / "r")
    assert back.spec == rule.spec
    for k in rule.params:
        np.testing.assert_array_equal(back.params[k], rule.params[k])
    for bad, msg in ((["algo.num_epochs=2"], "num_epochs=1"), (["algo.update_rule=ppo"], "update_rule='ppo' is unknown"),
                     (["algo.update_rule=learned"], "needs algo.update_rule_path")):
        with pytest.raises(ConfigError, match=msg):
            _lpg("a2c", bad)


def test_kl_categorical_by_hand():
    p, q = jnp.asarray([0.5, 0.5]), jnp.asarray([0.25, 0.75])
    assert float(kl_categorical(p, q)) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-5)
    assert float(kl_categorical(p, p)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_an_agent_on_a_random_family_keeps_one_level_on_all_its_envs():
    from envs.gridworld import GridState, level_of

    algo, cfg = _lpg("a2c", ["env=gridworld_small"])
    hp = {"lr": 1e-3, "y_lr": 1e-3, "max_grad_norm": 0.5, "gamma": 0.99, "y_coef": 0.5}
    states = [algo.init(jax.random.PRNGKey(s), hp) for s in (0, 1)]
    for st in states:
        inner = st.env_state
        while not isinstance(inner, GridState):
            inner = inner.env_state
        for leaf in jax.tree.leaves(inner.level):  # the same level in every env of the agent
            assert (np.asarray(leaf) == np.asarray(leaf)[0]).all()
        st2, _ = algo.update(st, hp, jnp.int32(0))
        for a, b in zip(jax.tree.leaves(level_of(st.env_state)), jax.tree.leaves(level_of(st2.env_state))):
            np.testing.assert_array_equal(a, b)  # kept across updates (and episode resets)
    assert any((np.asarray(a) != np.asarray(b)).any() for a, b in
               zip(jax.tree.leaves(level_of(states[0].env_state)), jax.tree.leaves(level_of(states[1].env_state))))
    r = algo.greedy_returns(states[0], hp, jax.random.PRNGKey(5), 3)  # evaluated on the agent's own level
    assert r.shape == (3,)


def test_random_lifetimes_are_log_uniform_integers_fixed_by_the_seed():
    algo, _ = _lpg("a2c", ["algo.random_lifetime=[10,250]", "algo.total_timesteps=8000"])  # 250 updates of 4 x 8
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    n = np.asarray(jax.vmap(algo.draw_lifetime)(keys))
    assert n.min() >= 10 and n.max() <= 250 and n.dtype == np.int32
    assert n.min() == 10 and n.max() == 250  # both ends are drawn
    # log-uniform: half of the mass below the geometric middle sqrt(10 · 250) = 50
    assert abs(np.mean(n < 50) - 0.5) < 0.03 and abs(np.mean(np.log(n)) - np.log(50)) < 0.05
    assert int(algo.draw_lifetime(keys[7])) == int(n[7])  # the agent's seed fixes it (so antithetic pairs share it)
    plain, _ = _lpg("a2c")
    assert int(plain.draw_lifetime(keys[0])) == plain.num_updates == 2


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_updates_after_the_agents_lifetime_are_discarded():
    """An agent of lifetime 3 in a run of 6 updates (two chunks of 3, then chunks of 2: the update index is
    the run's, not the chunk's) ends with the parameters and optimiser state of a 3-update run (same seed:
    the same first three rollouts); its rollouts go on."""
    from purejaxrl.trainer import Trainer

    hp = {"lr": 0.1, "y_lr": 0.1, "max_grad_norm": 0.5, "gamma": 0.99, "y_coef": 0.5}
    hp1 = {k: np.asarray([v], np.float32) for k, v in hp.items()}

    def train(extra, chunks):
        algo, _ = _lpg("a2c", ["algo.num_steps=4", *extra])
        tr = Trainer(algo, 1, chunks=chunks, num_evals=1)
        state = tr.init(jax.random.PRNGKey(3)[None], hp1)
        for c in range(chunks):
            state, _ = tr.chunk(state, hp1, c * tr.updates_per_chunk)
        return state

    short = train(["algo.total_timesteps=48"], 1)  # 3 updates of 4 envs x 4 steps
    for chunks in (1, 2, 3):
        capped = train(["algo.random_lifetime=[3,3]", "algo.total_timesteps=96"], chunks)  # 6 updates, N = 3
        assert np.asarray(capped.lifetime).ravel().tolist() == [3]
        for a, b in zip(jax.tree.leaves((capped.params, capped.opt_state)), jax.tree.leaves((short.params, short.opt_state))):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        assert not np.array_equal(np.asarray(capped.obs), np.asarray(short.obs))  # 6 rollouts, not 3
    full = train(["algo.total_timesteps=96"], 1)
    assert np.asarray(full.lifetime).ravel().tolist() == [6]
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(short.params)))


def test_a_time_aware_agent_reads_its_own_lifetime_in_update():
    """Inside update, a TA rule reads n/N and log N of the agent's N (not of the run's length): the
    targets of update i equal those of rule_inputs(progress=i/N, lifetime=N)."""
    algo, _ = _lpg("ta_lpg", ["algo.random_lifetime=[3,3]", "algo.total_timesteps=256", "algo.rule_hidden=8"])
    assert algo.num_updates == 8
    hp = {"lr": 1e-3, "y_lr": 1e-3, "max_grad_norm": 0.5, "gamma": 0.99, "y_coef": 0.5, **algo.extra_hparams()}
    state = algo.init(jax.random.PRNGKey(0), hp)
    seen = {}
    orig = algo.rule.targets

    def spy(params, x, reset, gamma):
        seen["x"] = x
        return orig(params, x, reset, gamma)

    import types

    # the same rule, its targets recorded
    algo.rule = types.SimpleNamespace(spec=algo.rule.spec, params=algo.rule.params, embed=algo.rule.embed, targets=spy)
    algo.update(state, hp, jnp.int32(2))
    np.testing.assert_allclose(seen["x"][..., 5], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(seen["x"][..., 6], np.log(3), rtol=1e-6)


@pytest.mark.parametrize("bad, msg", [("[0,5]", "must be null or"), ("[5,3]", "must be null or"),
                                      ("[2,9]", "longest lifetime .9 updates. is longer than the run .2 updates.")])
def test_random_lifetime_errors(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        _lpg("a2c", [f"algo.random_lifetime={bad}"])
    with pytest.raises(ConfigError, match="anneal over the run, not each agent's lifetime"):
        _lpg("a2c", ["algo.random_lifetime=[1,2]", "algo.lr_linear_decay=true"])
