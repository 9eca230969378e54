"""Learned objectives and their meta-evolution: drifts by hand, LPO's PPO initialisation equals
PPO-clip, ES on a toy problem, and a few-generation meta run that resumes bit-identically, is
loadable by ``train`` and is evaluated across horizons."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl import objectives
from purejaxrl.config import ConfigError, compose
from purejaxrl.meta.es import make_strategy

HP = {"clip_eps": jnp.float32(0.2)}


@pytest.mark.parametrize("kind", ["lpo", "ta_lpo"])
@pytest.mark.parametrize("ppo_init", [True, False])
def test_learned_drift_is_zero_at_ratio_one_and_nonnegative(kind, ppo_init):
    for seed in range(3):
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
        obj = objectives.build({"kind": kind, "hidden": 16, "ppo_init": ppo_init}, key=k1)
        params = {**obj.params, "w2": jax.random.normal(k2, obj.params["w2"].shape)}  # f ≠ 0 away from r = 1
        adv = jax.random.normal(k3, (64,)) * 2
        for p in (0.0, 0.3, 1.0):
            d1 = obj.drift(params, jnp.ones(64), jnp.zeros(64), adv, HP, p)
            np.testing.assert_array_equal(d1, 0.0)
            r = jnp.exp(jax.random.normal(k3, (64,)) * 0.5)
            d = obj.drift(params, r, jnp.log(r), adv, HP, p)
            assert bool(jnp.all(d >= 0)) and bool(jnp.any(d > 0))


def test_lpo_features_by_hand():
    lr = np.log(1.5)
    x = objectives.lpo_features(jnp.array([1.5]), jnp.log(jnp.array([1.5])), jnp.array([2.0]))
    np.testing.assert_allclose(x[0], [0.5, 0.25, lr, lr**2, 1.0, 0.5, 2 * lr, 2 * lr**2], rtol=1e-6)
    x = objectives.lpo_features(jnp.array([1.5]), jnp.log(jnp.array([1.5])), jnp.array([2.0]), 0.25)
    np.testing.assert_allclose(x[0, 8:], 0.25 * x[0, :8], rtol=1e-6)


def test_ta_lpo_reads_progress_and_lpo_does_not():
    r, adv = jnp.array([1.3, 0.7]), jnp.array([1.0, -1.0])
    for kind, changes in (("lpo", False), ("ta_lpo", True)):
        obj = objectives.build({"kind": kind, "hidden": 8, "ppo_init": False}, key=jax.random.PRNGKey(0))
        params = {**obj.params, "w2": jnp.ones_like(obj.params["w2"])}
        d0, d1 = (obj.drift(params, r, jnp.log(r), adv, HP, p) for p in (0.0, 1.0))
        assert (not np.allclose(d0, d1)) == changes


def test_time_input_ablation_zeroes_exactly_the_progress_rows():
    obj = objectives.build({"kind": "ta_lpo", "hidden": 8}, key=jax.random.PRNGKey(0))
    obj = objectives.build(obj.spec, {**obj.params, "w2": jax.random.normal(jax.random.PRNGKey(1), (8, 1))})
    abl = objectives.without_progress(obj)
    np.testing.assert_array_equal(abl.params["w1"][:8], obj.params["w1"][:8])
    np.testing.assert_array_equal(abl.params["w1"][8:], 0.0)
    np.testing.assert_array_equal(abl.params["w2"], obj.params["w2"])
    assert np.abs(np.asarray(obj.params["w1"][8:])).min() > 0  # there was something to zero
    r = jnp.exp(jax.random.normal(jax.random.PRNGKey(2), (64,)) * 0.4)
    adv = jax.random.normal(jax.random.PRNGKey(3), (64,))
    drift = lambda o, p: o.drift(o.params, r, jnp.log(r), adv, HP, p)  # noqa: E731
    at0 = drift(obj, 0.0)
    for p in (0.3, 0.9):  # the ablation at any progress is the original at p = 0
        np.testing.assert_allclose(drift(abl, p), at0, rtol=1e-6, atol=1e-7)
        assert not np.allclose(drift(obj, p), at0)
    with pytest.raises(ValueError, match="ta_lpo"):
        objectives.without_progress(objectives.build({"kind": "lpo", "hidden": 8}))


def test_training_return_fitness_by_hand():
    from purejaxrl.meta.es import training_return

    nan = np.nan
    m = {"episode_return": np.array([[1.0, nan, 10.0, 20.0] + [nan] * 6,   # window (last 1 of 10): nothing ended;
                                     [0.0] * 9 + [30.0],                      # falls back to update 4 (20)
                                     [nan] * 10]),
         "episodes": np.array([[1, 0, 2, 1] + [0] * 6, [1] * 9 + [3], [0] * 10], float)}
    np.testing.assert_array_equal(training_return(m, 0.1), [20.0, 30.0, nan])
    # a window of 3 updates weights each update's mean by its episodes: (0·1 + 0·1 + 30·3) / 5
    np.testing.assert_allclose(training_return(m, 0.3)[1], 18.0)


def test_z_score_shaping_ranks_a_diverged_member_last():
    from purejaxrl.meta.es import z_score_shaping

    f = jnp.array([-3.0, -1.0, jnp.nan, -2.0])  # evosax minimises −fitness
    z = np.asarray(z_score_shaping(None, f, None, None))
    assert np.isfinite(z).all() and z[2] == z.max() == z[1]
    np.testing.assert_allclose(z.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(), 1.0, rtol=1e-5)


def test_z_score_shaping_with_no_finite_member_takes_no_step():
    from purejaxrl.meta.es import z_score_shaping

    np.testing.assert_array_equal(z_score_shaping(None, jnp.full(4, jnp.nan), None, None), 0.0)


def test_a_resume_that_drops_held_out_rows_rebuilds_selected_from_the_kept_ones(tmp_path):
    from purejaxrl.meta.run import _heldout_rows

    obj = objectives.build({"kind": "lpo", "hidden": 4}, key=jax.random.PRNGKey(0))
    rows = [{"generation": g, "heldout_fitness": f} for g, f in ((0, 1.0), (10, 5.0), (20, 3.0))]
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        objectives.save_objective(obj, tmp_path / "mean" / f"gen_{r['generation']:04d}", r)
    objectives.save_objective(obj, tmp_path / "selected", rows[1])  # chosen before the stop
    kept = _heldout_rows(tmp_path, 15)  # the checkpoint resumed from is generation 15
    assert [r["generation"] for r in kept] == [0, 10]
    assert sorted(p.name for p in (tmp_path / "mean").iterdir()) == ["gen_0000", "gen_0010"]
    assert json.loads((tmp_path / "selected" / "objective.json").read_text())["generation"] == 10
    kept = _heldout_rows(tmp_path, 5)
    assert [r["generation"] for r in kept] == [0]
    assert json.loads((tmp_path / "selected" / "objective.json").read_text())["generation"] == 0
    assert len((tmp_path / "heldout.jsonl").read_text().splitlines()) == 1


def test_held_out_seeds_are_never_the_es_members_seeds():
    from purejaxrl.meta.run import generation_keys, held_out_key

    master = jax.random.PRNGKey(0)
    held = {tuple(np.asarray(k)) for k in jax.random.split(jax.random.fold_in(held_out_key(master), 0), 16)}
    for g in range(300):
        k_fit = generation_keys(master, g)[1]
        members = {tuple(np.asarray(k)) for k in jax.random.split(jax.random.fold_in(k_fit, 0), 4)}
        assert not held & members


def test_closed_form_drifts_by_hand():
    r = jnp.array([0.5, 1.5, 1.1, 0.9, 1.5, 0.5])
    a = jnp.array([1.0, 1.0, 2.0, -1.0, -1.0, -1.0])
    # PPO-clip: relu((r − clip(r, 0.8, 1.2))·Â) = [0 (−0.3), 0.3, 0, 0, 0 (−0.3), 0.3]
    np.testing.assert_allclose(objectives.ppo_clip_drift(None, r, jnp.log(r), a, HP, 0.0), [0, 0.3, 0, 0, 0, 0.3], atol=1e-6)
    # ... and r·Â − D is PPO's min(r·Â, clip(r)·Â)
    loss = objectives.BUILTIN["clip"].fn(r, jnp.log(r), a, HP, 0.0)
    np.testing.assert_allclose(loss, -jnp.minimum(r * a, jnp.clip(r, 0.8, 1.2) * a), atol=1e-6)
    # DPO: Â ≥ 0: relu(x − 2 tanh(x/2)), x = (r − 1)Â;  Â < 0: relu(y − 0.6 tanh(y/0.6)), y = log(r)Â
    x = np.array([-0.5, 0.5, 0.2])
    y = np.log([0.9, 1.5, 0.5]) * -1.0
    want = np.concatenate([np.maximum(x - 2 * np.tanh(x / 2), 0), np.maximum(y - 0.6 * np.tanh(y / 0.6), 0)])
    np.testing.assert_allclose(objectives.dpo_drift(None, r, jnp.log(r), a, HP, 0.0), want, rtol=1e-5, atol=1e-7)
    assert want[1] > 0 and want[3] > 0 and want[5] > 0  # the hand values are not all trivial zeros
    np.testing.assert_allclose(want[1], 0.5 - 2 * np.tanh(0.25), rtol=1e-12)


@pytest.mark.parametrize("offset, atol", [(0.0, 1e-7), (1e-4, 1.1e-4)])
def test_lpo_with_ppo_init_and_zero_weights_is_ppo_clip(offset, atol):
    """Loss and gradient (w.r.t. the policy's logits) of LPO at φ = 0 equal PPO-clip's."""
    lpo = objectives.build({"kind": "lpo", "hidden": 32, "ppo_init": True, "offset": offset}, key=jax.random.PRNGKey(3))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    logits_old = jax.random.normal(k1, (256, 4))
    actions = jax.random.randint(k2, (256,), 0, 4)
    adv = jax.random.normal(k3, (256,))

    def policy_loss(logits, obj):
        logp = jax.nn.log_softmax(logits)[jnp.arange(256), actions]
        logp_old = jax.nn.log_softmax(logits_old)[jnp.arange(256), actions]
        hp = {**HP, "objective": obj.params}
        return obj.fn(jnp.exp(logp - logp_old), logp - logp_old, adv, hp, 0.5).mean()

    logits = logits_old + 0.6 * jax.random.normal(jax.random.PRNGKey(9), logits_old.shape)  # many samples clipped
    for o in (lpo,):
        l_lpo, g_lpo = jax.value_and_grad(policy_loss)(logits, o)
        l_clip, g_clip = jax.value_and_grad(policy_loss)(logits, objectives.BUILTIN["clip"])
        np.testing.assert_allclose(l_lpo, l_clip, atol=atol)
        np.testing.assert_allclose(g_lpo, g_clip, atol=1e-6 if offset == 0 else 2e-5)
    ratio = jnp.exp(jax.nn.log_softmax(logits)[jnp.arange(256), actions] - jax.nn.log_softmax(logits_old)[jnp.arange(256), actions])
    assert int(jnp.sum(jnp.abs(ratio - 1) > 0.2)) > 50  # the comparison covers the clipped region


def test_openai_es_solves_a_quadratic():
    target = jnp.linspace(-1, 1, 10)
    es_cfg = {"strategy": "Open_ES", "population": 32, "antithetic": True, "sigma_init": 0.1, "sigma_decay": 0.995,
              "sigma_limit": 0.01, "lr_init": 0.05, "lr_decay": 0.999, "lr_limit": 0.01}
    strategy = make_strategy(es_cfg, jnp.zeros(10))
    params = strategy.default_params
    state = strategy.init(jax.random.PRNGKey(0), jnp.zeros(10), params)

    @jax.jit
    def generation(state, key):
        k1, k2 = jax.random.split(key)
        pop, state = strategy.ask(k1, state, params)
        fitness = jnp.sum((pop - target) ** 2, axis=1)  # minimised
        state, _ = strategy.tell(k2, pop, fitness, state, params)
        return state

    start = float(jnp.sum(target**2))
    for g in range(300):
        state = generation(state, jax.random.PRNGKey(g))
    assert float(jnp.sum((state.mean - target) ** 2)) < 0.01 * start


META = ["experiment=meta_cartpole", "objective=ta_lpo", "objective.hidden=16", "es.population=4",
        "algo.total_timesteps=1024", "algo.num_envs=4", "algo.num_steps=32", "algo.num_eval_envs=4", "progress=false"]


def _meta_cfg(*extra):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from purejaxrl.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hcompose("meta", overrides=[*META, *extra])
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out


@pytest.fixture(scope="module")
def meta_runs(tmp_path_factory):
    from purejaxrl.meta.run import run_meta

    d = tmp_path_factory.mktemp("meta")
    whole = run_meta(_meta_cfg("es.generations=3"), d / "whole")
    part = run_meta(_meta_cfg("es.generations=3", "stop_after_generations=2"), d / "part")
    resumed = run_meta(_meta_cfg("es.generations=3", "resume=true"), d / "part")
    return d, whole, part, resumed


@pytest.mark.slow
def test_meta_run_resumes_bit_identically(meta_runs):
    d, whole, part, resumed = meta_runs
    assert part["generations"] == 2 and not part["completed"]
    assert resumed["generations"] == 3 and resumed["completed"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    rows = lambda p: strip([json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()])  # noqa: E731
    assert rows(d / "part") == rows(d / "whole")
    for name in ("mean", "best"):
        a, b = (np.load(p / name / "params.npz") for p in (d / "whole", d / "part"))
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    full = [json.loads(line) for line in (d / "whole" / "metrics.jsonl").read_text().splitlines()]
    # evosax minimises −fitness: its best-so-far is the highest fitness seen, not the lowest
    assert full[-1]["best_fitness_so_far"] == pytest.approx(max(r["best_fitness"] for r in full), rel=1e-6)
    assert json.loads((d / "whole" / "best" / "objective.json").read_text())["fitness"] == pytest.approx(
        full[-1]["best_fitness_so_far"])
    for key in ("generations", "best_fitness", "mean_fitness_last", "seconds_per_generation", "inner_env_steps_per_second"):
        assert whole[key] is not None, key
    assert whole["inner_env_steps_per_generation"] == 4 * 2 * 1024  # members x seeds x steps
    # the ES mean on held-out seeds before the first generation and after the last (es.eval_every=10)
    held = lambda p: [json.loads(line) for line in (p / "heldout.jsonl").read_text().splitlines()]  # noqa: E731
    strip_s = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert [r["generation"] for r in held(d / "whole")] == [0, 3]
    assert strip_s(held(d / "part")) == strip_s(held(d / "whole"))  # the resumed run evaluates the same means
    assert [r["heldout_fitness"] is None for r in full] == [True, True, False]
    assert full[-1]["heldout_fitness"] == pytest.approx(held(d / "whole")[-1]["heldout_fitness"])
    assert [len(v) for v in held(d / "whole")[0]["greedy_returns"].values()] == [16]
    for g in (0, 3):
        assert (d / "whole" / "mean" / f"gen_{g:04d}" / "params.npz").exists()
    chosen = max(held(d / "whole"), key=lambda r: r["heldout_fitness"])
    sel = json.loads((d / "whole" / "selected" / "objective.json").read_text())
    assert sel["generation"] == chosen["generation"] == whole["selected_generation"]
    assert whole["heldout"] == [[r["generation"], r["heldout_fitness"]] for r in held(d / "whole")]


@pytest.mark.slow
def test_evolved_objective_trains_ppo_and_is_evaluated_across_horizons(meta_runs, tmp_path):
    from purejaxrl.experiment import run
    from purejaxrl.meta.evaluate import meta_eval
    from purejaxrl.plotting import plot_main

    d = meta_runs[0] / "whole"
    cfg = compose(["algo=ppo", "algo.objective=learned", f"algo.objective_path={d / 'best'}", "env=acrobot",
                   "algo.total_timesteps=2048", "algo.num_envs=4", "algo.num_steps=32", "num_seeds=2",
                   "algo.num_eval_envs=2", "logger.progress=false"])
    summary = run(cfg, tmp_path / "train")
    assert summary["completed"]
    res = meta_eval(d, ["cartpole"], horizons=(0.5,), seeds=2, progress=lambda *_: None,
                    setup={"acrobot": {"algo": {"total_timesteps": 4096}}})
    assert {(r["objective"], r["horizon"]) for r in res["rows"]} == {
        (o, 0.5) for o in ("ta_lpo (selected)", "ta_lpo (selected, p·x = 0)", "clip", "dpo")}
    assert {r["env_steps"] for r in res["rows"]} == {512}  # half the budget, in whole updates of 128 steps
    assert (d / "meta_eval.md").read_text().count("\n") == 3 and (d / "meta_eval.png").exists()
    # an env setup: the env's own 1x budget and PPO settings
    res = meta_eval(d, None, horizons=(0.25,), seeds=2, progress=lambda *_: None, ablation=False, baselines=("clip",),
                    setup={"acrobot": {"algo": {"total_timesteps": 4096, "num_envs": 8}}})
    assert [(r["env"], r["env_steps"], r["objective"]) for r in res["rows"]] == [
        ("acrobot", 1024, "ta_lpo (selected)"), ("acrobot", 1024, "clip")]  # a quarter of 4096 in updates of 8 x 32
    plot_main([str(d)])
    assert (d / "fitness.png").exists() and (d / "drift_selected.png").exists()


def test_population_layout_member_major_with_shared_seeds(monkeypatch):
    """Run m·S + s trains member m's objective with seed s; every member sees the same seeds."""
    from purejaxrl.meta.es import PopulationFitness
    from purejaxrl.meta.run import inner_config
    from purejaxrl.trainer import Trainer

    cfg = _meta_cfg("es.seeds_per_member=2")
    fit = PopulationFitness({**inner_config(cfg), "es": cfg["es"]}, objectives.build(cfg["objective"]))
    pop = {"w1": jnp.arange(4.0)[:, None, None] * jnp.ones((4, 16, 16)), "w2": jnp.zeros((4, 16, 1))}
    seen = {}

    def fake_init(self, keys, hp):
        seen["keys"], seen["w1"] = np.asarray(keys), np.asarray(hp["objective"]["w1"][:, 0, 0])
        return None

    def fake_chunk(self, state, hp, start, with_finite=False):
        n = seen["keys"].shape[0]
        return None, {"eval_return": np.arange(n, dtype=float)[:, None]}, np.ones(n, bool)

    monkeypatch.setattr(Trainer, "init", fake_init)
    monkeypatch.setattr(Trainer, "chunk", fake_chunk)
    r = fit.returns(fit.envs[0], pop, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(seen["w1"], [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(seen["keys"][0::2], np.repeat(seen["keys"][:1], 4, 0))
    np.testing.assert_array_equal(seen["keys"][1::2], np.repeat(seen["keys"][1:2], 4, 0))
    assert not np.array_equal(seen["keys"][0], seen["keys"][1])
    np.testing.assert_array_equal(r, np.arange(8.0).reshape(4, 2))


def test_training_fitness_reads_the_training_episodes_and_skips_diverged_runs(monkeypatch):
    from purejaxrl.meta.es import PopulationFitness
    from purejaxrl.meta.run import inner_config
    from purejaxrl.trainer import Trainer

    cfg = _meta_cfg("es.seeds_per_member=1", "es.fitness=training", "es.population=2")
    fit = PopulationFitness({**inner_config(cfg), "es": cfg["es"]}, objectives.build(cfg["objective"]))
    monkeypatch.setattr(Trainer, "init", lambda self, keys, hp: None)
    monkeypatch.setattr(Trainer, "chunk", lambda self, state, hp, start, with_finite=False: (None, {
        "eval_return": np.array([[0.0, 500.0], [0.0, 500.0]]), "episode_return": np.array([[50.0, 70.0], [9.0, 9.0]]),
        "episodes": np.array([[1.0, 1.0], [1.0, 1.0]])}, np.array([True, False])))
    pop = jax.tree.map(lambda x: jnp.repeat(x[None], 2, 0), fit.evolved.params)
    np.testing.assert_array_equal(fit.returns(fit.envs[0], pop, jax.random.PRNGKey(0)), [[70.0], [np.nan]])


def test_a_held_out_evaluation_with_a_diverged_seed_is_never_selected(monkeypatch):
    from purejaxrl.meta.es import PopulationFitness
    from purejaxrl.meta.run import inner_config
    from purejaxrl.trainer import Trainer

    cfg = _meta_cfg("es.seeds_per_member=1", "es.population=2")
    fit = PopulationFitness({**inner_config(cfg), "es": cfg["es"]}, objectives.build(cfg["objective"]))
    finite = {"v": np.array([True, True, True])}
    monkeypatch.setattr(Trainer, "init", lambda self, keys, hp: None)
    monkeypatch.setattr(Trainer, "chunk", lambda self, state, hp, start, with_finite=False: (
        None, {"eval_return": np.array([[100.0], [200.0], [300.0]])}, finite["v"]))
    assert fit.held_out(fit.evolved.params, jax.random.PRNGKey(0), 3)[0] == pytest.approx(200.0)
    finite["v"] = np.array([True, False, True])  # nanmean would score it 200 on the two that survived
    fitness, _, greedy = fit.held_out(fit.evolved.params, jax.random.PRNGKey(0), 3)
    assert np.isnan(fitness) and np.isnan(list(greedy.values())[0][1])


def test_meta_config_errors():
    from purejaxrl.meta.run import validate_meta

    for extra, fragment in ((["es.population=5"], "must be even"), (["algo=pqn"], "use algo=ppo"),
                            (["es.envs=[cartpole,acrobot]"], "normalize_fitness=true"),
                            (["es.strategy=Nope"], "not a distribution-based evosax"), (["es.strategy=PSO"], "PSO"),
                            (["es.sigma_limit=0.5"], "above es.sigma_init"), (["algo.lr=-1.0"], "algo.lr=-1.0"),
                            (["es.fitness=final"], "es.fitness='final'"), (["es.fitness_shaping=rank"], "fitness_shaping"),
                            (["es.eval_every=-1"], "es.eval_every=-1"), (["es.eval_seeds=0"], "es.eval_seeds=0")):
        with pytest.raises(ConfigError, match=fragment):
            validate_meta(_meta_cfg(*extra))


def test_learned_objective_files_are_checked(tmp_path):
    obj = objectives.build({"kind": "lpo", "hidden": 8}, key=jax.random.PRNGKey(0))
    objectives.save_objective(obj, tmp_path / "ok")
    assert objectives.load_objective(tmp_path / "ok").spec == obj.spec
    with pytest.raises(ConfigError, match="no objective.json"):
        objectives.load_objective(tmp_path / "missing")
    spec = json.loads((tmp_path / "ok" / "objective.json").read_text())
    (tmp_path / "ok" / "objective.json").write_text(json.dumps({**spec, "hidden": 16}))
    with pytest.raises(ConfigError, match="do not belong together"):
        objectives.load_objective(tmp_path / "ok")
    cfg = compose(["algo=ppo", "algo.objective=learned"])
    from purejaxrl.config import validate

    with pytest.raises(ConfigError, match="needs algo.objective_path"):
        validate(cfg)
