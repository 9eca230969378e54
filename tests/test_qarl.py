"""QARL: the force adversary (exactly no effect at zero force, the budget never exceeded), the
temperature in both players' observations, the curriculum (moves toward the target only while the
performance bound holds), and QARL / RARL / no-adversary runs through the console script."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from envs import make
from envs.adversarial import ForceAdversary
from purejaxrl.algos.qarl import QARL, gamma_kl_same_rate, self_paced_shape
from purejaxrl.config import compose


@pytest.fixture(scope="module")
def cartpole():
    base = make("dmc_cartpole_balance", episode_length=100)
    return base, ForceAdversary(base, max_force=0.5)


def _roll(env, actions, key=1):
    @jax.jit
    def go(actions):
        obs, s = env.reset(jax.random.PRNGKey(key))

        def body(c, a):
            obs, s = c
            obs, s, r, *_ = env.step(jax.random.PRNGKey(0), s, a)
            return (obs, s), (obs, r, s.inner.data.xfrc_applied)

        return jax.lax.scan(body, (obs, s), actions)[1]

    return go(actions)


@pytest.mark.slow
def test_force_adversary_changes_the_trajectory_exactly_when_it_pushes(cartpole):
    base, env = cartpole
    assert env.mode == "force" and env.bodies == ("pole_1",) and env.action_space.shape == (3,)
    a_p = jnp.tile(jnp.array([[0.3]]), (40, 1))
    obs_base, r_base, _ = _roll(base, a_p)
    obs_zero, r_zero, _ = _roll(env, jnp.concatenate([a_p, jnp.zeros((40, 2))], 1))
    np.testing.assert_array_equal(obs_zero, obs_base)  # no force: bit-identical to the env alone
    np.testing.assert_array_equal(r_zero, r_base)
    push = jnp.concatenate([a_p, jnp.zeros((40, 2)).at[10:, 0].set(1.0)], 1)
    obs_push, _, _ = _roll(env, push)
    np.testing.assert_array_equal(obs_push[:10], obs_base[:10])  # identical until the first push ...
    assert np.abs(np.asarray(obs_push[-1]) - np.asarray(obs_base[-1])).max() > 1e-3  # ... then not


def test_mass_scaling_keeps_derived_mass_constants_consistent(cartpole):
    base, _ = cartpole
    m1, m3 = base._model(1.0, 1.0), base._model(3.0, 0.5)
    np.testing.assert_allclose(m3.body_mass, 3 * m1.body_mass, rtol=1e-6)
    np.testing.assert_allclose(m3.body_subtreemass, 3 * m1.body_subtreemass, rtol=1e-6)  # velocity sensors divide by it
    np.testing.assert_allclose(m3.dof_invweight0, m1.dof_invweight0 / 3, rtol=1e-6)
    np.testing.assert_allclose(m3.geom_friction[:, 0], 0.5 * m1.geom_friction[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(m3.geom_friction[:, 1:], m1.geom_friction[:, 1:])  # torsional, rolling untouched


def test_force_adversary_clips_each_force_component_separately(cartpole):
    """As the reference: every component within ±max_force (a push may reach √2·max_force); the old
    norm bound held every push to max_force."""
    _, env = cartpole
    rng = np.random.default_rng(0)
    adv = jnp.asarray(rng.normal(0, 50, (30, 2)), jnp.float32)  # far outside [-1, 1]
    adv = adv.at[0].set(jnp.array([2.0, -3.0])).at[1].set(jnp.array([0.4, -0.2]))
    _, _, xfrc = _roll(env, jnp.concatenate([jnp.zeros((30, 1)), adv], 1))
    xfrc = np.asarray(xfrc)  # [T, nbody, 6]
    pole = int(env.body_ids[0])
    f = xfrc[:, pole, [0, 2]]
    np.testing.assert_allclose(f, 0.5 * np.clip(np.asarray(adv), -1, 1), rtol=1e-6)
    np.testing.assert_allclose(f[0], [0.5, -0.5])  # both components at the bound: norm 0.5·√2
    np.testing.assert_allclose(f[1], [0.2, -0.1], rtol=1e-6)  # inside: the action times max_force
    assert np.all(xfrc[:, :, [1, 3, 4, 5]] == 0) and np.all(np.delete(xfrc, pole, axis=1) == 0)


def test_action_perturbation_fallback_without_forces():
    env = ForceAdversary(make("pendulum"), max_force=0.25)
    assert env.mode == "action" and env.adversary_dim == 1
    obs, s = env.reset(jax.random.PRNGKey(0))
    o1, *_ = env.step(jax.random.PRNGKey(0), s, jnp.array([1.0, 1.0]))
    o2, *_ = env.unwrapped.step(jax.random.PRNGKey(0), s, jnp.array([1.25]))
    np.testing.assert_allclose(o1, o2)


def test_temperature_is_in_both_players_observations():
    cfg = compose(["algo=qarl", "env=pendulum", "algo.num_envs=3", "algo.total_timesteps=30", "algo.buffer_size=64",
                   "algo.learning_starts=0", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]", "algo.steps_per_update=2"])
    algo = QARL(cfg["algo"], cfg["env"], {})
    hp = {"lr": 3e-4, "actor_lr": 1e-4, "gamma": 0.99, "tau": 0.005}
    state = algo.init(jax.random.PRNGKey(0), hp)
    t0 = np.asarray(state.temperature)
    assert t0.shape == (3,) and np.all(t0 > 0) and abs(t0.mean() - 0.05) < 0.03  # Gamma(50, 1000): mean 0.05
    state, _ = algo.collect(state, hp, jnp.int32(0))
    b = jax.device_get(state.adv_buffer)  # update 0: the adversary's phase, its buffer
    np.testing.assert_allclose(b.obs[:6, -1], np.tile(t0, 2))       # the observation both actors see
    np.testing.assert_allclose(b.next_obs[:6, -1], np.tile(t0, 2))
    assert b.obs.shape[1] == 3 + 1 and b.action.shape[1] == 1 + 1   # [a_P | a_A]


def test_gamma_kl_matches_numerical_integration():
    a1, a2, rate = 3.0, 7.5, 1000.0
    p, q = stats.gamma(a1, scale=1 / rate), stats.gamma(a2, scale=1 / rate)
    num = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), 0, 0.05, points=[0.003], limit=200)[0]
    assert float(gamma_kl_same_rate(a1, a2)) == pytest.approx(num, rel=1e-4)


@pytest.mark.slow
def test_self_paced_curriculum_moves_only_while_the_performance_bound_holds():
    key = jax.random.PRNGKey(0)
    c = 50.0
    temps = jax.random.gamma(key, c, (30,))  # in units of 1/rate
    good, bad = jnp.full(30, 100.0), jnp.full(30, 1.0)
    valid = jnp.ones(30, bool)
    c_good = float(self_paced_shape(c, temps, good, valid, 1.0, 10.0, 0.5))
    assert c_good < c and float(gamma_kl_same_rate(c_good, c)) <= 0.5 + 1e-6  # toward the target, one KL step
    assert float(self_paced_shape(c, temps, bad, valid, 1.0, 10.0, 0.5)) == c  # bound violated: stays
    # no KL limit, no performance demand: straight to the target
    assert float(self_paced_shape(c, temps, good, valid, 1.0, -1.0, 1e9)) == pytest.approx(1.0)
    # no KL limit: the importance weights alone stop the step (far shapes give the samples little weight)
    assert 1.0 < float(self_paced_shape(c, temps, good, valid, 1.0, 10.0, 1e9)) < c_good
    # the return at c itself below the threshold: no step, even where reweighting favours a candidate
    low_t = temps < jnp.median(temps)
    skewed = jnp.where(low_t, 40.0, 0.0)  # good only with the smallest temperatures
    assert float(self_paced_shape(c, temps, skewed, valid, 1.0, 25.0, 1e9)) == c
    # samples drawn under another shape are weighted against that shape, not the current one
    c_same = float(self_paced_shape(c, temps, good, valid, 1.0, 10.0, 1e9))
    c_drawn = float(self_paced_shape(c, temps, good, valid, 1.0, 10.0, 1e9, drawn=jnp.full(30, 60.0)))
    assert abs(c_drawn - c_same) > 0.5
    # returns that fall with the temperature's distance from c: the step stops where the bound binds
    ret = 100.0 - 20.0 * jnp.abs(temps - c) / jnp.sqrt(c)
    c_mid = float(self_paced_shape(c, temps, ret, valid, 1.0, 85.0, 1e9))
    assert 1.0 < c_mid < c


def test_linear_schedule_reaches_the_target_at_two_thirds():
    cfg = compose(["algo=qarl", "algo.curriculum=linear", "env=pendulum", "algo.total_timesteps=3000",
                   "algo.num_envs=1", "algo.linear_fraction=0.5"])
    algo = QARL(cfg["algo"], cfg["env"], {})
    cur = algo.init(jax.random.PRNGKey(0), {"lr": 1e-3, "actor_lr": 1e-3, "gamma": 0.99, "tau": 0.005}).curriculum
    assert [float(algo.shape_at(cur, i)) for i in (0, 750, 1500, 3000)] == pytest.approx([50.0, 25.5, 1.0, 1.0])


@pytest.mark.slow
@pytest.mark.parametrize("algo, env", [("qarl", ["env=dmc_cartpole_balance", "env.kwargs.episode_length=50"]),
                                       ("rarl", ["env=pendulum", "+env.kwargs.max_steps_in_episode=50"])])
def test_qarl_and_rarl_through_the_console_script(tmp_path, monkeypatch, algo, env):
    """QARL pushing the DM Control cartpole's pole (one seed: robustness without a run axis);
    RARL perturbing Pendulum's action (no forces; two seeds vmapped)."""
    seeds = 1 if algo == "qarl" else 2
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "train", f"algo={algo}", *env,
                        "algo.total_timesteps=800", "algo.num_envs=8",
                        "algo.learning_starts=200", "algo.phase_updates=20", "algo.context_samples=8",
                        "algo.actor_hidden=[16]", "algo.critic_hidden=[16]", "algo.batch_size=32",
                        "algo.num_evals=1", "algo.num_eval_envs=2", f"num_seeds={seeds}", "logger.progress=false", "run_dir=r"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["env_steps"] == 800 and {"eval_return_adversary"} <= set(s["final_eval"])
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    phases = {row["adversary_phase"] for row in rows}
    assert phases == {0.0, 1.0}
    temps = [row["temperature_mean"] for row in rows]
    if algo == "rarl":
        assert set(temps) == {0.0}
    else:  # cartpole returns (up to 50 here) keep the bound (10): the curriculum anneals from 0.05
        assert temps[0] == pytest.approx(0.05) and min(temps) < 0.05
    fresh = ["--fresh-adversary", "40"] if algo == "qarl" else []  # 40 updates of 8 envs: past learning_starts=200
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "robustness", "r", "--mass", "0.5:2:3", "--friction",
                        "0.5:1.5:2", "--episodes", "2", *fresh], cwd=tmp_path, capture_output=True, text=True)
    if algo == "rarl":  # Pendulum has no per-env physics: one line naming the fix
        assert r.returncode == 2 and "Traceback" not in r.stderr and "env=dmc_*" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    g = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert g["mass_scale"] == [0.5, 1.25, 2.0]
    assert set(g["returns"]) == {"no_adversary", "trained_adversary", "fresh_adversary"} and g["fresh_adversary_updates"] == 40
    for mode in g["returns"]:
        assert np.asarray(g["returns"][mode]).shape == (1, 3, 2)
    assert (tmp_path / "r" / "robustness.png").exists()
    # the protagonist sees the context of the final evaluations: temperature 0 (the reference's)
    assert g["fresh_adversary_temperature"] == [0.0]
    _robustness_cells_and_modes_share_the_runs_episodes(tmp_path / "r")
    _the_fresh_adversary_attacks_at_the_budget_given(tmp_path / "r", monkeypatch)
    # the reference's cartpole grid: pole mass x cart mass in kg
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "robustness", "r", "--bodies", "pole_1,cart", "--mass", "0.05:0.5:2",
                        "--friction", "0.5:1.5:3", "--episodes", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    g = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert g["physics"] == "bodies" and g["bodies"] == ["pole_1", "cart"] and g["mass_2"] == [0.5, 1.0, 1.5]
    assert g["nominal"]["body_mass"] == {"pole_1": pytest.approx(0.1), "cart": pytest.approx(1.0)}
    assert np.asarray(g["returns"]["no_adversary"]).shape == (1, 2, 3) and "pole_1 mass" in r.stdout
    # the paper's absolute axes are torso mass x friction: cartpole has no torso, one line says so
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "robustness", "r", "--absolute"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no torso" in r.stderr


def test_the_issue_command_line_spellings_reach_the_algorithm_config():
    cfg = compose(["algo=qarl", "env=dmc_hopper_stand", "adversary.max_force=2.0", "qarl.curriculum=linear"])
    assert cfg["algo"]["adversary"]["max_force"] == 2.0 and cfg["algo"]["curriculum"] == "linear"


@pytest.mark.slow
def test_a_fresh_adversary_learns_against_a_frozen_greedy_protagonist():
    """attack_only: the protagonist's parameters never change and it acts with its mode; the new
    adversary learns from the first update past learning_starts, every update, with a temperature of
    its own tuned from 0.005 (the reference's RARL adversary; the old attacker had α_A = 0)."""
    from purejaxrl.algos.qarl import QARL

    cfg = compose(["algo=qarl", "env=pendulum", "algo.num_envs=4", "algo.learning_starts=8", "algo.batch_size=8",
                   "algo.actor_hidden=[8]", "algo.critic_hidden=[8]", "algo.total_timesteps=64", "algo.phase_updates=1",
                   "algo.buffer_size=64",
                   "algo.curriculum=fixed"])
    algo = QARL(cfg["algo"], cfg["env"], {}, attack_only=True)
    hp = {"lr": 1e-3, "actor_lr": 1e-3, "gamma": 0.99, "tau": 0.005}
    s0 = algo.init(jax.random.PRNGKey(0), hp)
    s, phases = s0, []
    for i in range(6):
        s, m = algo.update(s, hp, i)
        phases.append((float(m["adversary_phase"]), float(m["adv_learning"])))
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), s0.protagonist, s.protagonist)
    assert all(jax.tree.leaves(same))
    assert phases == [(1.0, 0.0)] * 2 + [(1.0, 1.0)] * 4  # learning once (i + 1) · 4 > learning_starts = 8
    changed = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), s0.adversary.actor, s.adversary.actor)
    assert not all(jax.tree.leaves(changed))
    assert float(jnp.exp(s0.adversary.log_alpha)) == pytest.approx(0.005)
    assert float(s.adversary.log_alpha) != float(s0.adversary.log_alpha) and "adv_alpha" in m  # tuned, and logged
    seen, learned = [], []  # the adversary's batches: reward −r (Pendulum's r ≤ 0, so −r ≥ 0), its own α
    orig = algo.adv_learner.step

    def spy(p, b, hp_, k, alpha):
        learned.append(alpha is None)
        jax.debug.callback(lambda r: seen.append(np.asarray(r)), b["reward"])
        return orig(p, b, hp_, k, alpha=alpha)

    algo.adv_learner.step = spy
    algo.update(s, hp, 6)
    assert seen and learned == [True] and all((r >= 0).all() and (r > 0).any() for r in seen)
    # every stored protagonist action is its mode, also in the adversary's random phase (the first 8 steps)
    n = int(s.adv_buffer.size)
    assert n == 24 and int(s.buffer.size) == 0  # every transition is the attacker's to learn from
    np.testing.assert_allclose(s.adv_buffer.action[:n, :algo.act_dim],
                               algo.learner.mode(s0.protagonist.actor, s.adv_buffer.obs[:n]), rtol=1e-5, atol=1e-6)


def _pendulum_qarl(*overrides):
    cfg = compose(["algo=qarl", "env=pendulum", "+env.kwargs.max_steps_in_episode=5", "algo.num_envs=4",
                   "algo.learning_starts=0", "algo.batch_size=8", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]",
                   "algo.total_timesteps=96", "algo.phase_updates=3", "algo.buffer_size=128", *overrides])
    return QARL(cfg["algo"], cfg["env"], {})


HP = {"lr": 1e-3, "actor_lr": 1e-3, "gamma": 0.99, "tau": 0.005}


def _run(algo, n, state=None):
    s = algo.init(jax.random.PRNGKey(0), HP) if state is None else state
    update, rows = jax.jit(algo.update), []
    for i in range(n):
        s, m = update(s, HP, i)
        rows.append(jax.device_get(m))
    return s, rows


def test_rarl_adversary_starts_tuning_from_the_references_temperature():
    """The quick half of the next test (no update compiled): RARL's adversary starts at α = 0.005 with
    target entropy −dim(A_adv) (the old code fixed α_A = 0); ``adversary.alpha=0`` outside RARL is named."""
    algo = _pendulum_qarl("algo.curriculum=rarl")
    s0 = algo.init(jax.random.PRNGKey(0), HP)
    assert float(jnp.exp(s0.adversary.log_alpha)) == pytest.approx(0.005)
    assert algo.adv_learner.target_entropy == -1.0  # −dim(A_adv) on Pendulum
    cfg = compose(["algo=qarl", "env=pendulum", "algo.adversary.alpha=0"])  # curriculum self_paced: no effect, said
    assert any("has no effect" in e for e in QARL.config_errors(cfg["algo"]))


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_rarl_adversary_tunes_its_own_temperature_and_alpha_zero_is_the_named_ablation():
    """The reference's RARL adversary is SAC with automatic tuning from α = 0.005 toward −dim(A_adv); the
    old code trained it at α_A = 0, so its σ collapsed.  ``adversary.alpha=0`` keeps that as an ablation.
    The starting α, the target entropy and the named no-effect case: the quick test above."""
    algo = _pendulum_qarl("algo.curriculum=rarl")
    s0 = algo.init(jax.random.PRNGKey(0), HP)
    s, rows = _run(algo, 3, s0)  # the first phase: the adversary learns
    assert [r["adversary_phase"] for r in rows] == [1.0] * 3 and all(r["adv_learning"] == 1.0 for r in rows)
    assert float(s.adversary.log_alpha) != float(s0.adversary.log_alpha)
    assert rows[-1]["adv_alpha"] == pytest.approx(float(jnp.exp(s.adversary.log_alpha)), rel=1e-2)  # mean of the steps
    ablation = _pendulum_qarl("algo.curriculum=rarl", "algo.adversary.alpha=0")
    s0 = ablation.init(jax.random.PRNGKey(0), HP)
    s, rows = _run(ablation, 3, s0)
    assert float(s.adversary.log_alpha) == float(s0.adversary.log_alpha) and rows[-1]["adv_alpha"] == 0.0
    # QARL's adversary keeps the curriculum's temperature (never its own)
    q = _pendulum_qarl("algo.curriculum=fixed")
    assert q.adversary_alpha(jnp.array([0.03, 0.05])) is not None and "adv_alpha" not in _run(q, 1)[1][0]


@pytest.mark.slow
def test_a_run_without_an_adversary_is_the_same_run_at_any_force_budget():
    """A study calibrates its budget on a trained SAC arm, then trains the adversarial arms at it; the
    SAC arm (curriculum none or phased) never applies a push, so it is reused whatever the budget,
    while an adversarial run at another budget is another run (checkpoints of either kind written
    with the budget in their identity still resume)."""
    from purejaxrl.config import identity, without_unread

    for curriculum in ("none", "phased"):
        a, b = (_pendulum_qarl(f"algo.curriculum={curriculum}", f"algo.adversary.max_force={f}") for f in (0.5, 3.0))
        sa, _ = _run(a, 4)
        sb, _ = _run(b, 4)
        assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), sa, sb)))
        ia, ib = (identity(compose(["algo=qarl", f"algo.curriculum={curriculum}", f"algo.adversary.max_force={f}"]))
                  for f in (0.5, 3.0))
        assert ia == ib and "max_force" not in ia["algo"]["adversary"]
        raw = compose(["algo=qarl", f"algo.curriculum={curriculum}", "algo.adversary.max_force=3.0"])
        assert without_unread({"algo": raw["algo"], "env": raw["env"]})["algo"] == ia["algo"]
    for curriculum in ("rarl", "self_paced"):
        ia, ib = (identity(compose(["algo=qarl", f"algo.curriculum={curriculum}", f"algo.adversary.max_force={f}"]))
                  for f in (0.5, 3.0))
        assert ia != ib and ia["algo"]["adversary"]["max_force"] == 0.5
    r = identity(compose(["algo=rarl", "algo.adversary.max_force=0.5"]))
    assert r["algo"]["adversary"]["max_force"] == 0.5


def test_a_checkpoint_written_with_the_budget_in_its_identity_resumes_without_it(tmp_path):
    """Checkpoints of SAC-arm runs written before the budget left their identity (it is in their
    record) resume at any budget; an adversarial run's checkpoint still refuses another budget."""
    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.config import ConfigError, identity

    state = {"w": jnp.arange(3.0)}
    for curriculum, ok in (("none", True), ("rarl", False)):
        old = compose(["algo=qarl", f"algo.curriculum={curriculum}", "algo.adversary.max_force=2.0"])
        raw = {k: old.get(k) for k in ("algo", "env", "network", "seed", "num_seeds", "vmap")}  # the budget kept
        ck = Checkpointer(tmp_path / curriculum)
        ck.save(1, state, {"identity": raw, "update": 1})
        now = identity(compose(["algo=qarl", f"algo.curriculum={curriculum}", "algo.adversary.max_force=0.5"]))
        if ok:
            got, _ = ck.restore(state, now)
            np.testing.assert_array_equal(got["w"], state["w"])
        else:
            with pytest.raises(ConfigError, match="max_force"):
                ck.restore(state, now)
        ck.close()


def test_phased_sac_keeps_the_alternation_with_a_zero_adversary():
    """The same-schedule baseline: the protagonist learns only in its phases (as every adversarial
    protagonist), the adversary never pushes and never learns; ``none`` learns every update."""
    algo = _pendulum_qarl("algo.curriculum=phased")
    s0 = algo.init(jax.random.PRNGKey(0), HP)
    s, rows = _run(algo, 12, s0)
    assert [r["learning"] for r in rows] == [0.0] * 3 + [1.0] * 3 + [0.0] * 3 + [1.0] * 3
    assert all(r["adv_learning"] == 0.0 for r in rows)
    n = int(s.buffer.size)  # only its own phases' transitions: updates 3-5 and 9-11
    assert n == 24 and np.all(np.asarray(s.buffer.action[:n, algo.act_dim:]) == 0)
    assert s.adv_buffer.reward.shape == (1,)  # no one learns from the adversary's: one slot
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), s0.adversary, s.adversary)
    assert all(jax.tree.leaves(same))
    _, rows = _run(_pendulum_qarl("algo.curriculum=none"), 6)
    assert [r["learning"] for r in rows] == [1.0] * 6


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_the_performance_gate_holds_the_self_paced_curriculum_back():
    """Through the update loop: Pendulum's returns are negative, below δ = 10, so every curriculum step
    is held (the shape stays at c_start, ``curriculum_held`` = 1, the measure logged); with δ below
    the returns the same run anneals."""
    held = _pendulum_qarl("algo.context_samples=4")
    _, rows = _run(held, 12)  # 4 envs x 5-step episodes: one curriculum step every 5 updates
    assert [r["curriculum_shape"] for r in rows] == [50.0] * 12
    steps = [r for r in rows if r["curriculum_steps"] > 0]  # measured from the first step on
    assert rows[-1]["curriculum_steps"] == 2 and len(steps) >= 7
    assert all(r["curriculum_held"] == 1.0 and r["curriculum_performance"] < 10 for r in steps)
    free = _pendulum_qarl("algo.context_samples=4", "algo.performance_threshold=-1000000.0")
    _, rows = _run(free, 12)
    assert rows[-1]["curriculum_shape"] < 50.0 and rows[-1]["curriculum_held"] == 0.0


def test_the_curriculum_measures_rewards_per_control_step_under_action_repeat():
    """With action repeat k an agent step's reward sums k control steps; the curriculum's discounted
    return divides it by k, so δ keeps the reference's scale (dm_control's repeat does not sum)."""
    one = _pendulum_qarl()
    two = _pendulum_qarl()
    two.action_repeat = 2  # Pendulum has no repeat: the same rewards, counted as two control steps each
    s = one.init(jax.random.PRNGKey(0), HP)
    _, ep1 = one.collect(s, HP, jnp.int32(0))
    _, ep2 = two.collect(s, HP, jnp.int32(0))
    np.testing.assert_allclose(ep2["discounted"], ep1["discounted"] / 2, rtol=1e-6)
    assert np.abs(np.asarray(ep1["discounted"])).max() > 0
    cfg = compose(["algo=qarl", "env=dmc_cartpole_balance", "env.kwargs.action_repeat=2", "env.kwargs.episode_length=8"])
    assert QARL(cfg["algo"], cfg["env"], {}).action_repeat == 2  # read from the DM Control env


@pytest.mark.slow
def test_action_repeat_sums_rewards_and_counts_the_time_limit_in_control_steps(cartpole):
    base, _ = cartpole
    rep = make("dmc_cartpole_balance", episode_length=6, action_repeat=2)
    assert rep.max_episode_steps == 3
    a = jnp.array([0.7])
    obs, s1 = base.reset(jax.random.PRNGKey(3))
    _, s2 = rep.reset(jax.random.PRNGKey(3))
    step1, step2 = jax.jit(base.step), jax.jit(rep.step)
    k = jax.random.PRNGKey(0)
    o_a, s1, r_a, *_ = step1(k, s1, a)
    o_b, s1, r_b, *_ = step1(k, s1, a)
    o_rep, s2, r_rep, term, trunc, _ = step2(k, s2, a)
    np.testing.assert_allclose(o_rep, o_b, rtol=1e-6, atol=1e-6)  # two control steps with one action
    np.testing.assert_allclose(r_rep, r_a + r_b, rtol=1e-6)
    for _ in range(2):
        _, s2, _, term, trunc, _ = step2(k, s2, a)
    assert bool(trunc) and not bool(term)  # 3 agent steps = 6 control steps: the time limit
    with pytest.raises(ValueError, match="divides"):
        make("dmc_cartpole_balance", episode_length=5, action_repeat=2)


@pytest.mark.slow
def test_absolute_physics_sets_the_torso_mass_and_friction_with_mujocos_derived_constants():
    import copy

    import mujoco

    env = make("dmc_hopper_stand", episode_length=20)
    nom = env.nominal_physics
    assert nom["torso_mass"] == pytest.approx(4.828, abs=1e-3) and nom["friction"] == [1.0]
    mj = env.playground.mj_model
    with env.absolute_physics():
        # traced and vmapped, as the robustness grids use it
        both = jax.jit(jax.vmap(env._model))(jnp.array([nom["torso_mass"], 9.0]), jnp.array([1.0, 0.3]))
        m0, m9 = (jax.tree.map(lambda x, k=k: x[k] if getattr(x, "ndim", 0) else x, both) for k in (0, 1))
        assert env.initial_physics() == pytest.approx((nom["torso_mass"], 1.0))  # a reset here starts nominal
    assert env.initial_physics() == (1.0, 1.0)
    ref = copy.copy(mj)  # MuJoCo's own constants for a 9 kg torso
    ref.body_mass[1] = 9.0
    ref.body_inertia[1] *= 9.0 / nom["torso_mass"]
    mujoco.mj_setConst(ref, mujoco.MjData(ref))
    for k in ("body_mass", "body_inertia", "body_subtreemass", "body_invweight0", "dof_invweight0"):
        np.testing.assert_allclose(getattr(m0, k), getattr(mj, k), rtol=1e-5, atol=1e-6)  # nominal: unchanged
        np.testing.assert_allclose(getattr(m9, k), getattr(ref, k), rtol=2e-3, atol=1e-6)
    assert np.asarray(m9.body_mass)[2:] == pytest.approx(mj.body_mass[2:])  # only the torso is heavier
    np.testing.assert_allclose(np.asarray(m9.geom_friction)[:, 0], 0.3)
    np.testing.assert_allclose(np.asarray(m9.geom_friction)[:, 1:], mj.geom_friction[:, 1:], rtol=1e-6)
    assert env._absolute is None  # outside the context: multipliers again
    np.testing.assert_allclose(env._model(2.0, 1.0).body_mass, 2 * mj.body_mass, rtol=1e-6)
    with pytest.raises(ValueError, match="torso"):
        make("dmc_cartpole_balance").absolute_physics()


@pytest.mark.slow
def test_force_budget_baseline_clips_the_push_to_a_linearly_growing_budget(cartpole):
    """The budgeted push (force mode on cartpole's pole); the schedule, the context input and the
    stored actions through QARL updates on Pendulum (action perturbation: cheap to compile)."""
    from purejaxrl.algos.qarl import QARL

    _, env = cartpole
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(0, 2, (64, 2)), jnp.float32)  # inside and outside the unit box
    for frac in (0.0, 0.3, 1.0):  # the push is clipped to the budget per component, not rescaled
        want = np.clip(0.5 * np.clip(np.asarray(a), -1, 1), -0.5 * frac, 0.5 * frac).reshape(64, 1, 2)
        np.testing.assert_allclose(env.forces(env.within_budget(a, frac)), want, rtol=1e-5, atol=1e-6)
    small = jnp.array([[0.1, -0.2]])  # a push inside the budget is the push the adversary chose
    np.testing.assert_allclose(env.within_budget(small, 0.3), small)
    cfg = compose(["algo=qarl", "env=pendulum", "algo.curriculum=force_budget",
                   "algo.num_envs=2", "algo.total_timesteps=60", "algo.phase_updates=5", "algo.learning_starts=0",
                   "algo.actor_hidden=[8]", "algo.critic_hidden=[8]", "algo.batch_size=4", "algo.buffer_size=64",
                   "algo.linear_fraction=0.5", "algo.adversary.max_force=0.5"])
    algo = QARL(cfg["algo"], cfg["env"], {})
    assert algo.num_updates == 30
    np.testing.assert_allclose([algo.budget(i) for i in (0, 3, 15, 29)], [0.0, 0.2, 1.0, 1.0], rtol=1e-6)
    assert np.all(np.asarray(algo.draw_temperature(None, 50.0, 3)) == 0)  # alpha_A = 0
    hp = {"lr": 1e-3, "actor_lr": 1e-3, "gamma": 0.99, "tau": 0.005}
    s = algo.init(jax.random.PRNGKey(0), hp)
    seen = []
    orig = algo.env.within_budget

    def spy(a_adv, frac):
        jax.debug.callback(lambda f: seen.append(float(f)), frac)
        return orig(a_adv, frac)

    algo.env.within_budget = spy
    update = jax.jit(algo.update)
    for i in (0, 3, 15):
        s, m = update(s, hp, i)
        assert float(m["force_budget"]) == pytest.approx(0.5 * float(algo.budget(i)))
        assert float(m["temperature_mean"]) == 0.0
    assert seen == pytest.approx([0.0, 0.2, 1.0])  # the env received the budgeted push ...
    # updates 0 and 3 are the adversary's phase (its buffer), 15 the protagonist's
    assert int(s.adv_buffer.size) == 4 and int(s.buffer.size) == 2
    obs = np.concatenate([np.asarray(s.adv_buffer.obs[:4]), np.asarray(s.buffer.obs[:2])])
    actions = np.concatenate([np.asarray(s.adv_buffer.action[:4]), np.asarray(s.buffer.action[:2])])
    np.testing.assert_allclose(obs[:, -1], [0, 0, 0.2, 0.2, 1, 1], atol=1e-6)  # ... both players see the budget
    pushes = np.abs(actions[:, algo.act_dim:]).max(-1)
    assert np.all(pushes <= np.array([0, 0, 0.2, 0.2, 1, 1]) + 1e-6) and pushes[4:].max() > 0.2  # stored as applied
    assert float(algo.eval_temperature(s)) == 1.0  # evaluation: the full budget


class _Stop(Exception):
    pass


def _the_fresh_adversary_attacks_at_the_budget_given(run_dir, monkeypatch):
    """``robustness --max-force F``: the fresh attacker is built at F, else at the run's own budget."""
    import purejaxrl.robustness as rb

    seen = []

    def stop(algo, state, hparams, runs, cfg, updates, seed=0):
        seen.append(cfg["algo"]["adversary"]["max_force"])
        raise _Stop

    monkeypatch.setattr(rb, "train_fresh_adversary", stop)
    for given in (None, 0.25):
        with pytest.raises(_Stop):
            rb.robustness(run_dir, np.array([1.0], np.float32), np.array([1.0], np.float32), episodes=1,
                          fresh_adversary=40, write=False, max_force=given)
    assert seen == [1.0, 0.25]  # the run trained at the default budget 1


def test_the_fresh_budget_of_a_run_without_an_adversary_is_named(capsys):
    """A SAC run of the QARL code never used its recorded budget: attacking it there says so; a
    budget given is used as given; a non-finite or non-positive one is refused in one line."""
    from types import SimpleNamespace

    from purejaxrl.errors import ConfigError
    from purejaxrl.robustness import fresh_budget

    cfg = {"algo": {"adversary": {"max_force": 2.0}}}
    assert fresh_budget(SimpleNamespace(curriculum="none"), cfg, None, 100) == 2.0
    assert "never acted" in capsys.readouterr().err
    assert fresh_budget(SimpleNamespace(curriculum="rarl"), cfg, None, 100) == 2.0
    assert fresh_budget(SimpleNamespace(curriculum="none"), cfg, 0.5, 100) == 0.5
    assert capsys.readouterr().err == ""
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="--max-force"):
            fresh_budget(SimpleNamespace(curriculum="none"), cfg, bad, 100)
    with pytest.raises(ValueError, match="max_force"):
        ForceAdversary(make("pendulum"), max_force=float("inf"))


def _robustness_cells_and_modes_share_the_runs_episodes(run_dir):
    """Every cell and mode of a run plays the same test episodes, drawn from the run's own key (a
    spy in place of the episode runner reports the key it gets)."""
    import purejaxrl.robustness as rb
    from purejaxrl import evalkeys
    from purejaxrl.evaluate import load_run

    def spy(venv, act, key, prepare=None):
        return jnp.full((2,), jax.random.uniform(key))

    orig = rb.greedy_episode_returns
    rb.greedy_episode_returns = spy
    try:
        res = rb.robustness(run_dir, np.array([0.5, 1.0], np.float32), np.array([0.5, 1.5], np.float32), episodes=2)
    finally:
        rb.greedy_episode_returns = orig
    _, state, *_ = load_run(run_dir)
    want = float(jax.random.uniform(evalkeys.stream(state.eval_rng, "test", 0)))
    for mode in ("no_adversary", "trained_adversary"):
        np.testing.assert_allclose(res["returns"][mode], np.full((1, 2, 2), want), rtol=1e-6)
    np.testing.assert_array_equal(state.eval_rng, evalkeys.for_seed(0))


def test_qarl_normalises_the_env_observation_and_leaves_the_context_raw():
    algo = _pendulum_qarl("algo.normalize_observations=true", "algo.critic_layer_norm=true", "algo.curriculum=fixed")
    s, _ = _run(algo, 2)
    assert float(s.obs_norm.count) == pytest.approx(8 + 1e-4) and s.obs_norm.mean.shape == (3,)
    buf = s.adv_buffer  # updates 0 and 1: the adversary's phase
    n = int(buf.size)
    t = np.asarray(buf.obs[:n, -1])
    assert n == 8 and np.all(t > 0) and np.asarray(buf.obs[:n, :3]).std() > 0.3  # the buffer: raw obs and temperature
    b = algo.observe_batch(s.obs_norm, {"obs": buf.obs[:n], "next_obs": buf.next_obs[:n]})
    np.testing.assert_allclose(b["obs"][:, -1], t)  # the context is not normalised
    np.testing.assert_allclose(b["obs"][:, :3], s.obs_norm(buf.obs[:n, :3]), rtol=1e-6)
    fresh = QARL(algo.cfg, compose(["env=pendulum", "+env.kwargs.max_steps_in_episode=5"])["env"], {}, attack_only=True)
    st = fresh.init(jax.random.PRNGKey(1), HP).replace(obs_norm=s.obs_norm)
    st, _ = fresh.collect(st, HP, jnp.int32(0))
    assert float(st.obs_norm.count) == float(s.obs_norm.count)  # a fresh attacker keeps the protagonist's statistics


@pytest.mark.slow
def test_domain_randomisation_draws_physics_per_episode_in_training_only():
    """``mass_scale_range`` / ``friction_scale_range`` and a Playground-style ``randomization_fn`` draw
    a new physics at reset and at every auto-reset; the evaluation env (``for_evaluation``, what
    ``make_venv(evaluation=True)`` steps) is the nominal task."""
    from envs.wrappers import make_stack

    env = make("dmc_cartpole_balance", episode_length=3, mass_scale_range=[0.5, 2.0], friction_scale_range=[0.2, 0.4],
               randomization_fn="envs.dmc:randomize_mass_friction", body_mass_ranges={"pole_1": [0.5, 2.0]})
    nominal = np.asarray(env.playground.mj_model.body_mass)
    venv = make_stack(env, 4)
    obs, s = venv.reset(jax.random.PRNGKey(0))
    inner = s.env_state if hasattr(s, "env_state") else s
    while not hasattr(inner, "mass_scale"):
        inner = inner.env_state
    m0 = np.asarray(inner.mass_scale)
    assert np.all((m0 >= 0.5) & (m0 <= 2.0)) and len(set(m0.round(6))) == 4  # per env, within the range
    f0 = np.asarray(inner.friction_scale)
    assert np.all((f0 >= 0.2) & (f0 <= 0.4))
    bm = np.asarray(inner.fields["body_mass"])  # the function's draw: every body x U(0.8, 1.2)
    assert bm.shape == (4, 3) and np.all(bm[:, 1:] >= 0.8 * nominal[1:] - 1e-6) and np.all(bm[:, 1:] <= 1.2 * nominal[1:] + 1e-6)
    pole = np.asarray(inner.body_scale)[:, 2] * 0.1  # kg, per env within its range; the cart untouched
    assert np.all((pole >= 0.5 - 1e-6) & (pole <= 2.0 + 1e-6)) and np.all(np.asarray(inner.body_scale)[:, 1] == 1)
    step = jax.jit(env.step)
    one = jax.tree.map(lambda x: x[0], inner)
    masses = []
    for t in range(6):  # two 3-step episodes: the physics changes exactly at the auto-reset
        _, one, *_ = step(jax.random.PRNGKey(t), one, jnp.zeros(1))
        masses.append(float(one.mass_scale))
    assert masses[0] == masses[1] == float(m0[0]) != masses[2] and masses[2] == masses[3] == masses[4] != masses[5]
    ev = env.for_evaluation()
    assert ev is not env and env.for_evaluation().ranges == {} and env.ranges  # the training env keeps its ranges
    _, e0 = ev.reset(jax.random.PRNGKey(0))
    assert float(e0.mass_scale) == 1.0 and float(e0.friction_scale) == 1.0 and e0.fields == {}
    assert np.all(np.asarray(e0.body_scale) == 1)
    adv = ForceAdversary(env, 1.0)
    assert adv.for_evaluation().env.ranges == {} and adv.env is env  # wrappers pass it through, copies only
    assert make("dmc_cartpole_balance").for_evaluation().ranges == {}
    with pytest.raises(ValueError, match="module:function"):
        make("dmc_cartpole_balance", randomization_fn="no_colon")
    with pytest.raises(ValueError, match=r"\[low, high\]"):
        make("dmc_cartpole_balance", mass_scale_range=[2.0, 1.0])
    with pytest.raises(ValueError, match="valid: cart, pole_1"):
        make("dmc_cartpole_balance", body_mass_ranges={"pole": [1.0, 2.0]})


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_per_body_masses_set_kilograms_and_recompute_subtree_masses(cartpole):
    base, _ = cartpole
    _, s = base.reset(jax.random.PRNGKey(0))
    s = base.with_body_masses(s, {"pole_1": 2.0, "cart": 0.5})  # nominal: cart 1.0, pole 0.1
    m = base._model(s.mass_scale, s.friction_scale, s.body_scale)
    np.testing.assert_allclose(m.body_mass, [0.0, 0.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(m.body_subtreemass, [2.5, 2.5, 2.0], rtol=1e-6)  # world ⊃ cart ⊃ pole
    nom = base.playground.mj_model
    np.testing.assert_allclose(m.body_inertia[2], nom.body_inertia[2] * 20, rtol=1e-5)
    with pytest.raises(ValueError, match="valid: cart, pole_1"):
        base.with_body_masses(s, {"pole": 1.0})


@pytest.mark.slow
def test_calibrate_finds_the_smallest_budget_whose_fresh_adversary_bites(tmp_path):
    """``robustness --calibrate``: per budget a fresh adversary against the frozen SAC protagonist, the
    drop of the greedy return on validation episodes; the choice is the smallest budget reaching
    --drop; a negligible budget leaves the return where it was; non-SAC runs are refused."""
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "train", "algo=qarl", "algo.curriculum=none", "env=pendulum",
                        "+env.kwargs.max_steps_in_episode=40", "algo.total_timesteps=400", "algo.num_envs=4",
                        "algo.learning_starts=40", "algo.phase_updates=10", "algo.actor_hidden=[16]",
                        "algo.critic_hidden=[16]", "algo.batch_size=32", "algo.num_evals=1", "algo.num_eval_envs=2",
                        "num_seeds=2", "logger.progress=false", "run_dir=r"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "robustness", "r", "--calibrate", "2,0.000001",
                        "--fresh-adversary", "30", "--episodes", "4", "--drop", "0.3"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c = json.loads((tmp_path / "r" / "calibration.json").read_text())
    assert [b["max_force"] for b in c["budgets"]] == [0.000001, 2.0] and c["split"] == "validation"
    assert c["adversary_updates"] == 30 and len(c["nominal_return"]) == 2
    tiny, big = c["budgets"]
    assert abs(tiny["mean_relative_drop"]) < 1e-3  # a negligible push: the nominal return
    assert big["mean_relative_drop"] > tiny["mean_relative_drop"] + 0.01  # a push as large as the action range hurts
    nom = np.asarray(c["nominal_return"])
    np.testing.assert_allclose(big["relative_drop"], (nom - np.asarray(big["attacked_return"])) / np.abs(nom), rtol=1e-5)
    want = next((b["max_force"] for b in c["budgets"] if b["mean_relative_drop"] >= 0.3), None)
    assert c["chosen_max_force"] == want and "chosen:" in r.stdout
    # a second call adds its budgets; a budget's attack depends on nothing but that budget
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "robustness", "r", "--calibrate", "0.5,2",
                        "--fresh-adversary", "30", "--episodes", "4", "--drop", "0.3"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c2 = json.loads((tmp_path / "r" / "calibration.json").read_text())
    assert [b["max_force"] for b in c2["budgets"]] == [0.000001, 0.5, 2.0]
    same = lambda row: {k: v for k, v in row.items() if k != "seconds"}  # noqa: E731
    assert same(c2["budgets"][0]) == same(tiny) and same(c2["budgets"][2]) == same(big)
    assert all(b["seconds"] > 0 for b in c2["budgets"])
    assert c2["chosen_max_force"] == next((b["max_force"] for b in c2["budgets"] if b["mean_relative_drop"] >= 0.3), None)
    bad = subprocess.run([sys.executable, "-m", "purejaxrl", "robustness", "r", "--calibrate", "a,b"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "comma-separated" in bad.stderr and "Traceback" not in bad.stderr


def test_a_calibration_with_another_adversary_length_keeps_the_earlier_one(tmp_path):
    """Budgets of one run, episodes and adversary length accumulate in calibration.json; a calibration
    with another adversary length replaces it and the earlier file is kept beside it, never lost."""
    from purejaxrl.robustness import _merge_calibration

    def cal(updates, *forces):
        return {"runs": [{"run": 0, "seed": 0}], "env": "e", "episodes": 32, "split": "validation",
                "adversary_updates": updates, "target_drop": 0.3, "nominal_return": [400.0],
                "budgets": [{"max_force": F, "mean_relative_drop": F / 2} for F in forces]}

    f = tmp_path / "calibration.json"
    f.write_text(json.dumps(cal(3200, 0.25, 1.0)))
    merged = _merge_calibration(cal(3200, 0.25, 1.0), cal(3200, 0.5, 0.25), f)
    assert [b["max_force"] for b in merged["budgets"]] == [0.25, 0.5, 1.0] and f.exists()
    longer = _merge_calibration(cal(3200, 0.25, 1.0), cal(6260, 0.25), f)
    assert [b["max_force"] for b in longer["budgets"]] == [0.25] and longer["adversary_updates"] == 6260
    assert json.loads((tmp_path / "calibration.3200_updates.json").read_text()) == cal(3200, 0.25, 1.0)
    f.write_text("{}")
    _merge_calibration({}, cal(6260, 0.25), f)
    assert (tmp_path / "calibration.earlier_updates.json").exists()


def test_each_player_replays_only_its_own_phases():
    """The reference's agents fit on their own phase's data: the protagonist's buffer holds the
    transitions of its phases, the adversary's of its; plain SAC (``none``) keeps everything."""
    algo = _pendulum_qarl("algo.curriculum=rarl")
    s, rows = _run(algo, 12)  # phases of 3 updates x 4 envs: adversary, protagonist, adversary, protagonist
    assert int(s.buffer.size) == 24 and int(s.adv_buffer.size) == 24
    prot, adv = np.asarray(s.buffer.obs[:24]), np.asarray(s.adv_buffer.obs[:24])
    assert not any(np.allclose(p, a) for p in prot for a in adv)  # disjoint transitions
    s, _ = _run(_pendulum_qarl("algo.curriculum=none"), 6)
    assert int(s.buffer.size) == 24 and s.adv_buffer.reward.shape == (1,)


def test_final_evaluations_show_temperature_zero_and_training_evaluations_the_curriculum_mean():
    """As the reference: evaluate (and attack) the protagonist at temperature 0, the fully rational
    context the curriculum ends at; the evaluations during training at the curriculum's mean."""
    algo = _pendulum_qarl("algo.curriculum=self_paced")
    s = algo.init(jax.random.PRNGKey(0), HP)
    assert float(algo.eval_temperature(s)) == 0.0 and float(algo.progress_temperature(s)) == pytest.approx(0.05)
    seen = []
    orig = algo.augment

    def spy(obs, temperature, norm=None):
        jax.debug.callback(lambda t: seen.append(float(np.asarray(t)[0])), temperature)
        return orig(obs, temperature, norm)

    algo.augment = spy
    algo.evaluate(s, HP, 0)
    assert seen and all(t == pytest.approx(0.05) for t in seen)
    seen.clear()
    algo.greedy_action(s, jnp.zeros((2, 3)))
    assert seen == [0.0]
    fb = _pendulum_qarl("algo.curriculum=force_budget")
    assert float(fb.eval_temperature(fb.init(jax.random.PRNGKey(0), HP))) == 1.0  # the full budget


def test_the_self_paced_window_counts_every_episode_of_the_update_that_fills_it():
    """Six episodes end in the update that completes a window of four: all six are counted (the
    reference reads its whole buffer), none is dropped."""
    algo = _pendulum_qarl("algo.context_samples=4", "algo.num_envs=6", "algo.performance_threshold=-1000000.0")
    cur = algo.init(jax.random.PRNGKey(0), HP).curriculum
    assert cur.temps.shape == (4 + 6,)
    ep = {"episode_done": jnp.ones((1, 6), bool), "temperature": jnp.full((1, 6), 0.05),
          "discounted": jnp.arange(6.0).reshape(1, 6), "drawn": jnp.full((1, 6), 50.0)}
    new = algo.advance_curriculum(cur, ep, 0)
    assert int(new.steps) == 1 and int(new.count) == 0
    assert float(new.performance) == pytest.approx(np.arange(6.0).mean())  # all six at their own shape: weight 1


@pytest.mark.parametrize("name", ["qarl", "qarl_walker"])
def test_every_arm_of_a_qarl_study_learns_as_many_protagonist_updates(name):
    """The reference's SAC baseline runs its protagonist's episodes only: half the env steps, learning
    every update, so as many learning updates as an adversarial protagonist (which learns in its half
    of the phases).  SAC + domain randomisation is that baseline too; it once trained on every env step
    of the adversarial arms, twice the others' learning updates."""
    from purejaxrl.reproduce import _train_overrides, load_study, tier_spec

    study = load_study(name)
    for tier in study["tiers"]:
        spec = tier_spec(study, tier, None)
        learning = {}
        for arm in study["arms"]:
            cfg = compose(_train_overrides(study, spec, arm))["algo"]
            updates = int(cfg["total_timesteps"]) // int(cfg["num_envs"])
            learning[arm] = updates if cfg["curriculum"] == "none" else updates // 2
        assert len(set(learning.values())) == 1, (tier, learning)


def test_a_sac_runs_fresh_adversary_trains_as_long_as_the_adversarial_arms_co_trained_one():
    """A SAC run (curriculum=none, learning every update) has half the updates of the adversarial arms
    it is compared with; ``auto`` once counted the adversary phases of its own, shorter schedule (3,200
    of the arms' 6,260 at the cartpole study's cpu tier), so its calibration attacked with an adversary
    trained half as long."""
    from types import SimpleNamespace

    from purejaxrl.robustness import co_trained_updates

    kw = dict(phase_updates=160, units_per_update=16, learning_starts=5000)
    arm = SimpleNamespace(num_updates=12_500, curriculum="self_paced", **kw)
    sac = SimpleNamespace(num_updates=6_250, curriculum="none", **kw)
    phased = SimpleNamespace(num_updates=12_500, curriculum="phased", **kw)
    assert co_trained_updates(sac) == co_trained_updates(phased) == co_trained_updates(arm)


def test_a_fresh_adversary_learns_in_as_many_updates_as_the_co_trained_one():
    """``auto`` once gave the fresh adversary as many updates as the co-trained adversary's phases
    (6,260 at the cartpole study's cpu tier), but the co-trained one's first phase falls in the random
    warm-up (learning starts after 5,000 env steps, update 312) and the fresh one spends its own first 312
    updates at random too: it learned in 5,948 updates against 6,100.  Counted with the run's own rules."""
    from types import SimpleNamespace

    from purejaxrl.robustness import auto_updates, co_trained_updates, fresh_warmup_updates

    arm = SimpleNamespace(num_updates=12_500, phase_updates=160, units_per_update=16, learning_starts=5000,
                          curriculum="rarl")
    i = np.arange(arm.num_updates)
    learns = (i + 1) * arm.units_per_update > arm.learning_starts  # the run's test for a learning update
    co = int(np.sum(learns & ((i // arm.phase_updates) % 2 == 0)))  # in an adversary phase (the adversary's first)
    assert co == co_trained_updates(arm) == 6_100
    n = auto_updates(arm)
    j = np.arange(n)
    assert int(np.sum((j + 1) * arm.units_per_update > arm.learning_starts)) == co  # the fresh one: every update its own
    assert fresh_warmup_updates(arm) == 312 and n == 6_412


def test_auto_names_its_assumption_for_a_sac_run(capsys):
    """``auto`` on a SAC run assumes the study's halved baseline; it says so (a SAC run at the adversarial
    arms' full env steps would get an adversary twice as long)."""
    from types import SimpleNamespace

    from purejaxrl.robustness import auto_updates

    kw = dict(phase_updates=160, units_per_update=16, learning_starts=5000)
    assert auto_updates(SimpleNamespace(num_updates=6_250, curriculum="none", **kw)) == 6_412
    assert "twice this run's 6250 updates" in capsys.readouterr().err
    assert auto_updates(SimpleNamespace(num_updates=12_500, curriculum="rarl", **kw)) == 6_412
    assert capsys.readouterr().err == ""


def test_the_curriculum_record_lists_each_step_and_whether_the_gate_held(tmp_path):
    """curriculum.json (what recorded results keep of the per-update log): one entry per curriculum
    step with its shape, the gate's measure and whether it held, per run; rows between steps repeat the
    last step's values and must not count again."""
    import pandas as pd

    from purejaxrl.robustness import curriculum_record

    rows = []
    for run, held_at in ((0, set()), (1, {2})):
        shape, steps = 50.0, 0
        for u in range(1, 13):
            if u % 4 == 0:  # a step every 4 updates
                steps += 1
                held = steps in held_at
                shape = shape if held else shape - 10
            rows.append({"run": run, "update": u, "curriculum_shape": shape, "curriculum_performance": 10.0 * steps,
                         "curriculum_held": float(steps in held_at and steps > 0), "curriculum_steps": steps})
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    r = curriculum_record(tmp_path)
    assert json.loads((tmp_path / "curriculum.json").read_text()) == r
    a, b = r["runs"]
    assert (a["steps"], a["held_steps"], a["final_shape"]) == (3, 0, 20.0)
    assert [p["update"] for p in a["path"]] == [4, 8, 12] and [p["shape"] for p in a["path"]] == [40.0, 30.0, 20.0]
    assert (b["steps"], b["held_steps"], b["final_shape"]) == (3, 1, 30.0)
    assert [p["held"] for p in b["path"]] == [False, True, False] and b["path"][1]["performance"] == 20.0
    pd.DataFrame({"run": [0], "update": [1], "loss": [0.0]}).to_csv(tmp_path / "metrics.csv", index=False)
    assert curriculum_record(tmp_path, write=False) is None  # no curriculum logged
