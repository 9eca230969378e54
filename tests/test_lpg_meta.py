"""Meta-training LPG update rules by ES (``purejaxrl meta algo=lpg``): tasks per antithetic pair,
pairwise fitness shaping, the config checks, and a whole run that hands over a rule ``train`` loads."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl.config import ConfigError
from purejaxrl.meta.es import pairwise_shaping

LPG = ["experiment=meta_ta_lpg", "env=gridworld_small", "algo.num_envs=4", "algo.num_steps=4", "algo.total_timesteps=96",
       "algo.random_lifetime=[2,6]", "algo.rule_hidden=8", "algo.num_eval_envs=2", "es.population=4", "es.eval_seeds=2",
       "es.eval_every=2", "progress=false"]


def _meta_cfg(*extra):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from purejaxrl.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hcompose("meta", overrides=list(extra))
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out


def test_pairwise_shaping_by_hand():
    """Pairs (0, 3), (1, 4), (2, 5) of −returns (evosax minimises): the better of a pair −½, a tie 0,
    NaN loses."""
    f = jnp.asarray([-3.0, 1.0, 2.0, -1.0, 1.0, jnp.nan])
    np.testing.assert_array_equal(pairwise_shaping(None, f, None, None), [-0.5, 0.0, -0.5, 0.5, 0.0, 0.5])
    # the ES gradient (Σ ε_i f̃_i) of a pair is ±ε whatever the returns' scale
    g = pairwise_shaping(None, jnp.asarray([-100.0, -99.0]), None, None)
    np.testing.assert_array_equal(g, [-0.5, 0.5])


def _fitness(*extra):
    from purejaxrl.meta.es import PopulationFitness
    from purejaxrl.meta.evolved import from_config
    from purejaxrl.meta.run import inner_config, validate_meta

    cfg = _meta_cfg(*LPG, *extra)
    validate_meta(cfg)
    return cfg, PopulationFitness({**inner_config(cfg), "es": cfg["es"]}, from_config(cfg, jax.random.PRNGKey(0)))


def test_per_pair_tasks_give_each_antithetic_pair_its_own_seeds():
    _, fit = _fitness("es.population=6", "es.seeds_per_member=2")
    keys = np.asarray(fit.run_keys(jax.random.PRNGKey(0))).reshape(6, 2, 2)  # [member, seed, key]
    for m in range(3):  # member m and m + 3 (the ±ε pair) share both seeds
        np.testing.assert_array_equal(keys[m], keys[m + 3])
    flat = {tuple(k) for k in keys[:3].reshape(-1, 2)}
    assert len(flat) == 6  # three pairs x two seeds, all different
    _, shared = _fitness("es.population=6", "es.seeds_per_member=2", "es.tasks=shared")
    k = np.asarray(shared.run_keys(jax.random.PRNGKey(0))).reshape(6, 2, 2)
    assert (k == k[:1]).all()


def test_a_pair_trains_on_one_level_and_lifetime():
    """The two members of a pair get the same grid-world level and the same lifetime N."""
    from envs.gridworld import level_of

    _, fit = _fitness("es.population=4")
    env = fit.envs[0]
    keys = fit.run_keys(jax.random.PRNGKey(1))
    hp = fit._hparams(env, jax.tree.map(lambda x: jnp.repeat(x[None], 4, 0), fit.evolved.params))
    state = env.trainer.init(keys, hp)
    life = np.asarray(state.lifetime)
    assert life[0] == life[2] and life[1] == life[3]
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.vmap(level_of)(state.env_state))]  # [run, ...]
    assert all(leaf.shape[0] == 4 for leaf in leaves)
    for leaf in leaves:
        np.testing.assert_array_equal(leaf[0], leaf[2])
        np.testing.assert_array_equal(leaf[1], leaf[3])
    assert any((leaf[0] != leaf[1]).any() for leaf in leaves)  # the two pairs, two levels


def test_evosax_pairs_are_m_and_m_plus_half_and_pairwise_tell_moves_toward_the_winners():
    """The pairing the per-pair tasks and the pairwise shaping assume (OpenAI-ES draws [z, −z]), and one
    ES step with −returns (evosax minimises) moving the mean toward the better member of each pair."""
    from purejaxrl.meta.es import make_strategy

    es = {"strategy": "Open_ES", "population": 6, "antithetic": True, "lr_init": 0.1, "lr_decay": 1.0, "lr_limit": 0.1,
          "sigma_init": 0.5, "sigma_decay": 1.0, "sigma_limit": 0.5, "fitness_shaping": "pairwise"}
    mean0 = {"w": jnp.zeros(3)}
    strat = make_strategy(es, mean0)
    params = strat.default_params
    state = strat.init(jax.random.PRNGKey(0), mean0, params)
    pop, state = strat.ask(jax.random.PRNGKey(1), state, params)
    z = np.asarray(pop["w"])
    np.testing.assert_allclose(z[:3], -z[3:], rtol=1e-6)
    returns = jnp.asarray([1.0, 0.0, 5.0, 0.0, 2.0, 5.0])  # winners: member 0, member 4, a tie in pair (2, 5)
    state, _ = strat.tell(jax.random.PRNGKey(2), pop, -returns, state, params)
    step = np.asarray(strat.get_mean(state)["w"])
    direction = z[0] + z[4]  # toward each winner's noise (the tie gives nothing)
    # Adam's first step is lr · sign(gradient): the signs of the winners' summed noise
    np.testing.assert_array_equal(np.sign(step), np.sign(direction))


def test_rule_probe_by_hand_and_time_inputs():
    """The probe's π̂: for the a2c rule it is r − v(uniform y) = r (symmetric bins) whatever the progress;
    a time-aware meta-network's depends on n/N and N, a plain one's does not."""
    from purejaxrl import update_rules as U
    from purejaxrl.meta.plots import rule_response

    r = np.linspace(-1, 1, 5)
    a2c = U.make_rule("a2c")
    for terminal in (True, False):
        np.testing.assert_allclose(rule_response(a2c, r, 0.5, 100, terminal=terminal), r, atol=1e-6)
    ta = U.make_rule("ta_lpg", jax.random.PRNGKey(0), hidden=16)
    wx = ta.params["gru_wx"]  # weights on the time inputs, as after meta-training (a fresh rule's are 0)
    wx = wx.at[5:].set(jax.random.normal(jax.random.PRNGKey(1), wx[5:].shape))
    ta = U.UpdateRule(ta.spec, {**ta.params, "pi_w": ta.params["pi_w"] * 100, "gru_wx": wx})
    assert not np.allclose(rule_response(ta, r, 0.0, 50), rule_response(ta, r, 0.9, 50))
    assert not np.allclose(rule_response(ta, r, 0.5, 10), rule_response(ta, r, 0.5, 250))
    plain = U.make_rule("lpg", jax.random.PRNGKey(0), hidden=16)
    np.testing.assert_array_equal(rule_response(plain, r, 0.0, 50), rule_response(plain, r, 0.9, 250))


def test_a_rule_is_drawn_at_the_lifetimes_it_was_meta_trained_on():
    """The plot's panels: the ends and log-middle of algo.random_lifetime (a cpu-tier rule trained on
    10-100 is not drawn at 250), the paper's 10..250 where a run has no range."""
    from purejaxrl.meta.plots import LIFETIMES, lifetime_panels

    assert lifetime_panels([10, 100]) == (10, 32, 100)
    assert lifetime_panels([10, 250]) == (10, 50, 250)
    assert lifetime_panels([20, 20]) == (20,)
    assert lifetime_panels(None) == LIFETIMES


@pytest.mark.parametrize("extra, msg", [
    (["algo.update_rule=a2c"], "evolves a meta-network; valid: lpg, ta_lpg"),
    (["es.normalize_fitness=true"], "with algo=lpg set es.normalize_fitness=false"),
    (["es.antithetic=false", "es.strategy=SNES"], "es.tasks=per_pair pairs members"),
    (["es.antithetic=false"], "es.tasks=per_pair pairs members"),
    (["es.antithetic=false", "es.tasks=shared"], "es.fitness_shaping=pairwise pairs members"),
    (["es.tasks=each"], "es.tasks='each'; valid: shared, per_pair"),
    (["algo.random_lifetime=[2,50]"], "longest lifetime"),
])
def test_lpg_meta_config_errors(extra, msg):
    from purejaxrl.meta.run import validate_meta

    with pytest.raises(ConfigError, match=msg):
        validate_meta(_meta_cfg(*LPG, *extra))


def _lpg_study(tmp_path, **changes):
    import yaml

    from purejaxrl import reproduce as R

    s = R.load_study("ta_lpg")
    s = {k: v for k, v in s.items() if k in ("title", "paper", "kind", "meta", "eval_setup", "settings", "arms",
                                               "metric", "tiers", "claims")}
    s.update(changes)
    if "arms" in changes and "claims" not in changes:  # one claim between the first two arms
        a, b = list(changes["arms"])[:2]
        s["claims"] = [{"claim": f"effect({a}, {b}) > 0", "paper": "x"}]
    f = tmp_path / "toy_lpg.yaml"
    f.write_text(yaml.safe_dump(s, sort_keys=False))
    return R.load_study(str(f))


@pytest.mark.parametrize("changes, msg", [
    ({"arms": {"ta": {"objective": "ta_lpg"}, "clip": {"objective": "clip"}}}, "does not train algo=lpg"),
    ({"arms": {"lpg": {"objective": "lpg", "ablation": True}, "a2c": {"objective": "a2c"}}},
     "meta.lpg is not one"),
    ({"meta": {"lpg": ["experiment=meta_ta_lpg_small", "algo.update_rule=lpg"],
               "ta_lpg": ["experiment=meta_ta_lpg_small", "algo.num_steps=10"]}}, "inner setup"),
])
def test_lpg_study_config_errors(tmp_path, changes, msg):
    from purejaxrl import reproduce as R

    study = _lpg_study(tmp_path, **changes)
    with pytest.raises(ConfigError, match=msg):
        R._check_configs(R.for_tier(study, "smoke"), R.tier_spec(study, "smoke", None), tmp_path / "out")


def test_a_ppo_study_cannot_name_the_a2c_rule(tmp_path):
    from purejaxrl import reproduce as R

    study = _lpg_study(tmp_path, meta={"ta": ["experiment=meta_cartpole32", "objective=ta_lpo"]},
                       eval_setup="cartpole_transfer", settings={"all_": ["cartpole@1"]}, claims=[
                           {"claim": "effect(ta, a2c) > 0", "paper": "x"}],
                       arms={"ta": {"objective": "ta"}, "a2c": {"objective": "a2c"}},
                       tiers={"smoke": {"seeds": 2}})
    with pytest.raises(ConfigError, match="does not train algo=ppo"):
        R._check_configs(R.for_tier(study, "smoke"), R.tier_spec(study, "smoke", None), tmp_path / "out")


def test_lpg_study_trains_every_arm_in_the_same_settings_for_a_fixed_lifetime(tmp_path, monkeypatch):
    """study.evaluate on saved rules (no ES run): which rule each arm trains with and under which config."""
    import yaml

    from purejaxrl import reproduce as R
    from purejaxrl import update_rules as U
    from purejaxrl.meta import evaluate as E
    from purejaxrl.meta import study as S

    study = R.for_tier(R.load_study("ta_lpg"), "smoke")
    spec = R.tier_spec(study, "smoke", None)
    out = tmp_path / "out"
    saved = {}
    for name, dirs in S.meta_dirs(study, spec, out).items():
        cfg = S.compose_meta(S.meta_overrides(study, spec, name, 0))
        assert cfg["algo"]["random_lifetime"] == [2, 4]
        dirs[0].mkdir(parents=True)
        (dirs[0] / "config.yaml").write_text(yaml.safe_dump(cfg))
        saved[name] = U.make_rule(cfg["algo"]["update_rule"], jax.random.PRNGKey(len(saved)), hidden=8)
        U.save_rule(saved[name], dirs[0] / "selected")
    calls = []

    def fake(cfg, rule, seeds, seed=E.TEST_SEED):
        calls.append((cfg, rule, seeds, seed))
        return np.zeros(seeds)

    monkeypatch.setattr(E, "final_returns", fake)
    S.evaluate(study, spec, out, log=lambda *_: None)
    settings = S.settings(study, spec)[S.DEFAULT_GROUP]
    # a setting in several groups (unseen_levels and dense, say) is trained once per arm
    assert sum(len(v) for k, v in S.settings(study, spec).items() if k != S.DEFAULT_GROUP) > len(settings)
    assert len(calls) == len(study["arms"]) * len(settings) == 4 * 6
    assert all(c[0]["algo"]["random_lifetime"] is None and c[2] == 2 and c[3] == E.TEST_SEED for c in calls)
    by_arm = dict(zip(study["arms"], [calls[i:i + len(settings)] for i in range(0, len(calls), len(settings))]))
    for j, x in enumerate(settings):  # one setting: the same config for every arm but the evolved rule's name
        cfgs = [{**c[j][0], "algo": {k: v for k, v in c[j][0]["algo"].items() if k != "update_rule"}}
                for c in by_arm.values()]
        assert all(c == cfgs[0] for c in cfgs), x
        assert cfgs[0]["network"]["num_layers"] == (1 if x.startswith(("catch", "cartpole")) else 0)  # MLP agents
    np.testing.assert_array_equal(by_arm["ta_lpg"][0][1].params["gru_wx"], saved["ta_lpg"].params["gru_wx"])
    np.testing.assert_array_equal(by_arm["lpg"][0][1].params["gru_wx"], saved["lpg"].params["gru_wx"])
    assert by_arm["a2c"][0][1].spec["kind"] == "a2c" and by_arm["a2c"][0][1].params is None
    ablated = by_arm["ta_lpg_no_time"][0][1]  # time inputs fixed at n/N = 0.5, N = sqrt(2 * 4)
    want = U.without_time(saved["ta_lpg"], 0.5, np.sqrt(8.0))
    for k in ("gru_wx", "gru_b"):
        np.testing.assert_allclose(ablated.params[k], want.params[k], rtol=1e-6)
    assert (out / "evals" / "ta_lpg_no_time.json").exists()


def test_meta_eval_baselines_must_fit_the_runs_algo(tmp_path):
    from purejaxrl.meta.evaluate import _baseline

    assert _baseline("a2c", True).spec["kind"] == "a2c"
    with pytest.raises(ConfigError, match="an LPG run's baseline is the hand-written rule: a2c"):
        _baseline("clip", True)
    with pytest.raises(ConfigError, match="a PPO run's baselines: clip, dpo"):
        _baseline("a2c", False)


@pytest.mark.slow
def test_a_ta_lpg_meta_run_hands_over_a_rule_that_trains_an_agent(tmp_path):
    from purejaxrl import update_rules
    from purejaxrl.config import compose
    from purejaxrl.experiment import run
    from purejaxrl.meta.run import run_meta

    # a starting rule fixed by seed: at 96 steps an agent may end no episode (a NaN held-out score, never
    # selected), and which rule is drawn decides it; this one ends episodes
    fix = "algo.update_rule_seed=0"
    whole = run_meta(_meta_cfg(*LPG, "es.generations=2", fix), tmp_path / "whole", progress=False)
    part = run_meta(_meta_cfg(*LPG, "es.generations=2", "stop_after_generations=1", fix), tmp_path / "part", progress=False)
    resumed = run_meta(_meta_cfg(*LPG, "es.generations=2", "resume=true", fix), tmp_path / "part", progress=False)
    assert whole["completed"] and not part["completed"] and resumed["completed"] and whole["objective"] == "ta_lpg"
    a, b = (np.load(tmp_path / p / "mean" / "params.npz") for p in ("whole", "part"))
    for k in a.files:  # resumed bit-identically
        np.testing.assert_array_equal(a[k], b[k])
    held = [json.loads(x) for x in (tmp_path / "whole" / "heldout.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in held] == [0, 2]
    sel = update_rules.load_rule(tmp_path / "whole" / "selected")
    assert sel.spec["time_aware"] and sel.spec["hidden"] == 8
    assert json.loads((tmp_path / "whole" / "selected" / "rule.json").read_text())["chosen_by"].startswith("held-out")
    cfg = compose(["algo=lpg", "env=gridworld_small", "network.num_layers=0", "algo.num_envs=4", "algo.num_steps=4",
                   "algo.total_timesteps=32", "algo.num_eval_envs=2", "algo.update_rule=learned",
                   f"algo.update_rule_path={tmp_path / 'whole' / 'selected'}", "logger.progress=false", "num_seeds=1"])
    summary = run(cfg, tmp_path / "agent", progress=False)
    assert summary["total_env_steps"] == 32
    from purejaxrl.meta.plots import plot_meta

    paths = plot_meta(tmp_path / "whole")
    assert [p.name for p in paths] == ["fitness.png", "rule_selected.png"] and all(p.stat().st_size > 0 for p in paths)
    # meta-eval: the chosen rule, its time-input ablation and the a2c rule train fresh agents for a fixed lifetime
    from purejaxrl.meta.evaluate import load_setup, meta_eval

    res = meta_eval(tmp_path / "whole", ["gridworld_small", "catch"], horizons=(0.5,), seeds=2, progress=lambda *_: None,
                    setup=load_setup("gridworld_transfer"))
    assert [(r["env"], r["objective"]) for r in res["rows"]] == [
        (e, o) for e in ("gridworld_small", "catch") for o in ("ta_lpg (selected)", "ta_lpg (selected, time inputs fixed)", "a2c")]
    # half of 1x in whole updates: the meta run's 96 steps of 4 x 4 on the grid world, Catch's own 32000 of 16 x 20
    assert [r["env_steps"] for r in res["rows"]] == [48] * 3 + [16000] * 3
    assert (tmp_path / "whole" / "meta_eval.png").exists()


def test_setting_config_by_hand():
    """One evaluation setting's config: the setup's entry over the meta run's, whole updates, no random lifetime."""
    from purejaxrl.meta.evaluate import setting_config
    from purejaxrl.meta.run import validate_meta

    cfg = _meta_cfg("experiment=meta_ta_lpg_small")
    validate_meta(cfg)
    entry = {"algo": {"optimizer": "adam", "num_envs": 16, "num_steps": 20, "total_timesteps": 32000},
             "network": {"num_layers": 1, "hidden_size": 64}}
    got = setting_config(cfg, entry, "catch", 0.33)  # 100 updates x 0.33 -> 33 updates of 320 steps
    assert got["algo"]["total_timesteps"] == 33 * 320 and got["algo"]["optimizer"] == "adam"
    assert got["algo"]["random_lifetime"] is None and cfg["algo"]["random_lifetime"] == [10, 100]
    assert got["env"] == {"name": "catch", "kwargs": {}}
    assert got["network"] == {**cfg["network"], "num_layers": 1, "hidden_size": 64}
    same = setting_config(cfg, None, cfg["env"]["name"], 0.001)  # the meta run's own env, at least one update
    assert same["env"] == cfg["env"] and same["algo"]["total_timesteps"] == 16 * 20
    assert same["network"] == cfg["network"] and same["algo"]["lr"] == cfg["algo"]["lr"]


def test_a_finished_es_run_saved_before_later_es_settings_is_continued_not_refused():
    """A study raising es.generations continues its finished ES runs; one saved before es.tasks existed
    (its config names no es.tasks) is the same run as es.tasks=shared, and not as per_pair."""
    from purejaxrl import reproduce as R
    from purejaxrl.meta import study as S

    study = R.for_tier(R.load_study("ta_lpo"), "smoke")
    spec = R.tier_spec(study, "smoke", None)
    name = next(iter(study["meta"]))
    cfg = S.compose_meta(S.meta_overrides(study, spec, name, 0))
    saved = {**cfg, "es": {k: v for k, v in cfg["es"].items() if k != "tasks"}}
    assert cfg["es"]["tasks"] == "shared"
    assert S.reuse_difference(saved, cfg) is None
    assert S.reuse_difference(saved, {**cfg, "es": {**cfg["es"], "generations": cfg["es"]["generations"] + 5}}) is None
    assert "tasks" in S.reuse_difference(saved, {**cfg, "es": {**cfg["es"], "tasks": "per_pair"}})
    assert "sigma" in S.reuse_difference(saved, {**cfg, "es": {**cfg["es"], "sigma": 0.5}})


def test_each_es_seed_starts_from_its_own_rule_unless_the_seed_is_fixed():
    """Fixed defect: every ES run started from the rule of update_rule_seed 0, so a study's ES seeds
    were not independent draws of the meta-training (the reference draws it from each run's key)."""
    from purejaxrl.meta.evolved import from_config
    from purejaxrl.meta.run import validate_meta

    cfg = _meta_cfg(*LPG)
    validate_meta(cfg)
    assert cfg["algo"]["update_rule_seed"] is None
    a, b = (from_config(cfg, jax.random.PRNGKey(s)).params["gru_wx"] for s in (0, 1))
    assert not np.allclose(a, b)
    fixed = _meta_cfg(*LPG, "algo.update_rule_seed=3")
    validate_meta(fixed)
    c, d = (from_config(fixed, jax.random.PRNGKey(s)).params["gru_wx"] for s in (0, 1))
    np.testing.assert_array_equal(c, d)
