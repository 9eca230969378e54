"""Learned LLM objectives (``loss=learned``): each special point reproduces the loss it names, the drift
is 0 at ratio 1 and never negative, the temporal inputs act only when on, the files round-trip, and
``loss=learned`` runs from the command line's config exactly as the loss it starts from."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl import objectives
from purejaxrl.config import ConfigError
from purejaxrl.llm import learned as LN
from purejaxrl.llm import rl_losses as R

G, P, T, L_MAX = 4, 3, 5, 5


def _batch(seed=0, off_policy=0.0, rewards=None):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    B = P * G
    theta = jax.random.normal(k[0], (B, T)) * 0.5 - 1.5  # per-token log-probs, the parameters differentiated
    old = jax.lax.stop_gradient(theta) + off_policy * jax.random.normal(k[1], (B, T))
    mask = jnp.arange(T)[None] < jax.random.randint(k[2], (B, 1), 2, T + 1)
    if rewards is None:  # one group all 0, the others mixed
        rewards = jnp.array([0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1], jnp.float32)
    return theta, old, mask, rewards


def _x(theta, old, mask, rewards, progress=0.3):
    m = mask.astype(jnp.float32)
    return {"logp": theta, "old_logp": old, "mask": mask, "seq_logp": (theta * m).sum(1), "rewards": rewards,
            "G": G, "L_max": L_MAX, "progress": jnp.float32(progress)}


def _loss_and_grad(name, opts, hp, old, mask, rewards, theta, extra=None):
    entry = R.get(name)

    def f(th):
        x = _x(th, old if old is not None else jax.lax.stop_gradient(th), mask, rewards)
        return entry.fn({**x, **(extra or {})}, hp, entry.resolve(opts))[0]

    return jax.value_and_grad(f)(theta)


def _learned(init, q=0.75, seed=1, temporal=True):
    spec = LN.make_spec(init, hidden=8, temporal=temporal, q=q)
    return spec, LN.init_params(spec, jax.random.PRNGKey(seed), L_MAX)


@pytest.mark.parametrize("off_policy", [0.0, 0.3])
@pytest.mark.parametrize("init,name", [("grpo", "grpo"), ("dr_grpo", "dr_grpo")])
def test_weight_special_points_are_grpo_and_dr_grpo_exactly(init, name, off_policy):
    theta, old, mask, rewards = _batch(off_policy=off_policy)
    spec, params = _learned(init)
    hp = {"epsilon": 0.2, "epsilon_high": 0.2}
    v1, g1 = _loss_and_grad("learned", LN.options(spec), {**hp, "learned": params}, old, mask, rewards, theta)
    v2, g2 = _loss_and_grad(name, {}, hp, old, mask, rewards, theta)
    assert float(v1) == pytest.approx(float(v2), rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g1).max()) > 0


def test_weight_special_point_garl_has_garls_gradient():
    theta, _, mask, rewards = _batch()
    for q in (0.0, 0.75):
        spec, params = _learned("garl", q=q)
        _, g1 = _loss_and_grad("learned", LN.options(spec), {"learned": params}, None, mask, rewards, theta)
        _, g2 = _loss_and_grad("garl", {"baseline": "loo"}, {"q": q, "p_floor": 1e-3}, None, mask, rewards, theta)
        np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
        assert float(jnp.abs(g1).max()) > 0


def test_weight_special_point_paft_is_paft_in_expectation():
    """With two successes in every group, resampling each success once is PAFT's expectation exactly."""
    rewards = jnp.array([1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0], jnp.float32)
    theta, _, mask, _ = _batch()
    idx = jnp.array([[0, 2], [1, 2], [0, 1]])  # each group's successes, once each
    spec, params = _learned("paft", q=0.5)
    _, g1 = _loss_and_grad("learned", LN.options(spec), {"learned": params}, None, mask, rewards, theta)
    _, g2 = _loss_and_grad("paft", {}, {"q": 0.5}, None, mask, rewards, theta, extra={"resample_idx": idx})
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


def test_drift_at_zero_output_layer_is_grpo_off_policy_exactly():
    theta, old, mask, rewards = _batch(off_policy=0.4)
    spec, params = _learned("clip")
    assert float(jnp.abs(params["w2"]).max()) == 0
    v1, g1 = _loss_and_grad("learned", LN.options(spec), {"epsilon": 0.2, "learned": params}, old, mask, rewards, theta)
    v2, g2 = _loss_and_grad("grpo", {}, {"epsilon": 0.2}, old, mask, rewards, theta)
    assert float(v1) == pytest.approx(float(v2), rel=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


def test_drift_is_zero_at_ratio_one_and_never_negative():
    spec, params = _learned("clip")
    params = {**params, "w2": jax.random.normal(jax.random.PRNGKey(3), params["w2"].shape)}  # a non-trivial drift
    theta, old, mask, rewards = _batch(off_policy=0.5)
    obj = objectives.build(LN._drift_spec(spec), params)
    a = jax.random.normal(jax.random.PRNGKey(4), theta.shape)
    for t in (0.0, 0.5, 0.99):
        r = jnp.exp(theta - old)
        d = obj.drift(params, r, theta - old, a, {"clip_eps": 0.2}, t)
        assert float(d.min()) >= 0 and float(d.max()) > 0
        assert float(jnp.abs(obj.drift(params, jnp.ones_like(r), jnp.zeros_like(r), a, {"clip_eps": 0.2}, t)).max()) == 0
    # on-policy (up to float rounding between two forwards) the learned drift adds nothing: GRPO's loss and gradient
    hp = {"epsilon": 0.2, "learned": params}
    near = jax.lax.stop_gradient(theta) + 1e-7 * jax.random.normal(jax.random.PRNGKey(5), theta.shape)
    v1, g1 = _loss_and_grad("learned", LN.options(spec), hp, near, mask, rewards, theta)
    v2, g2 = _loss_and_grad("grpo", {}, {"epsilon": 0.2}, None, mask, rewards, theta)
    assert float(v1) == pytest.approx(float(v2), abs=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


def test_weight_reads_progress_only_when_temporal():
    rewards = _batch()[3]
    for temporal in (True, False):
        spec, params = _learned("dr_grpo", temporal=temporal)
        params = {**params, "w2": jax.random.normal(jax.random.PRNGKey(2), params["w2"].shape)}
        w0 = LN.group_weight(params, spec, rewards, G, 0.0)
        w1 = LN.group_weight(params, spec, rewards, G, 0.9)
        assert bool(jnp.any(jnp.abs(w0 - w1) > 1e-4)) == temporal
        assert bool(jnp.all(w0 > 0))


def test_weight_by_hand():
    """log w = c₀ + c_p·log max(p̂, floor) + c_σ·log(σ̂ + 1e-4), the learned layer off."""
    spec = LN.make_spec("dr_grpo", hidden=2)
    params = {"c": jnp.array([0.5, -0.5, 0.0]), "w1": jnp.ones((4, 2)), "w2": jnp.zeros((2, 1))}
    r = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    w = LN.group_weight(params, spec, r, 4, 0.0)
    np.testing.assert_allclose(w, [np.exp(0.5) * 0.25 ** -0.5] * 4 + [np.exp(0.5) * 0.5 ** -0.5] * 4, rtol=1e-6)


def test_save_and_load_round_trip_and_refuse_what_does_not_belong(tmp_path):
    spec, params = _learned("garl", q=0.5)
    LN.save(spec, params, tmp_path / "o", {"generation": 3})
    spec2, params2 = LN.load(tmp_path / "o", L_MAX)
    assert spec2 == spec
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])
    assert LN.digest(params) == LN.digest(params2)
    other_spec, other = _learned("clip")
    LN.save(spec, other, tmp_path / "bad")  # a drift's parameters under a weight spec
    with pytest.raises(ConfigError, match="do not belong together"):
        LN.load(tmp_path / "bad", L_MAX)
    with pytest.raises(ConfigError, match="no llm_objective.json"):
        LN.load(tmp_path / "nothing", L_MAX)


def test_learned_config_errors_before_any_compile(tmp_path):
    from purejaxrl.llm.run import validate_llm
    from purejaxrl.reproduce import _compose_llm

    validate_llm(_compose_llm(["mode=rl", "loss=learned"]))
    validate_llm(_compose_llm(["mode=rl", "loss=learned", "loss.init=garl", "loss.q=0.5"]))
    for overrides, msg in ((["loss.init=ppo"], "loss.init='ppo'; valid: grpo"),
                           (["loss.init=clip"], "drift is 0 at ratio 1"),
                           (["loss.hidden=0"], "loss.hidden=0 must be an integer >= 1"),
                           ([f"loss.path={tmp_path / 'none'}"], "no llm_objective.json"),
                           (["loss.init=garl", "loss.q=2.0"], "loss.q=2.0 must be in"),
                           (["reward=prob"], "does not take a likelihood reward")):
        with pytest.raises(ConfigError, match=msg):
            validate_llm(_compose_llm(["mode=rl", "loss=learned", *overrides]))
    validate_llm(_compose_llm(["mode=rl", "loss=learned", "loss.init=clip", "num_iterations=2"]))
    with pytest.raises(ConfigError, match="the drift family has no KL term"):
        validate_llm(_compose_llm(["mode=rl", "loss=learned", "loss.init=clip", "num_iterations=2", "loss.beta=0.1"]))
    spec, params = _learned("grpo")
    LN.save(spec, params, tmp_path / "o")
    validate_llm(_compose_llm(["mode=rl", "loss=learned", f"loss.path={tmp_path / 'o'}"]))
    with pytest.raises(ConfigError, match="leave loss.init unset"):
        validate_llm(_compose_llm(["mode=rl", "loss=learned", f"loss.path={tmp_path / 'o'}", "loss.init=grpo"]))


def _tiny(extra):
    from purejaxrl.reproduce import _compose_llm

    cfg = _compose_llm(["mode=rl", "task=cold_lock", "model=tiny", "model.d_model=32", "model.n_layers=1",
                        "iterations=3", "num_prompts=4", "num_generations=4", "eval_prompts=8", "eval_every=3",
                        "log_every=1", "checkpoint_every=3", *extra])
    return {**cfg, "progress": False, "compilation_cache": False}


def _metric_rows(d):
    import json

    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "learned_weight")}
            for line in (d / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_learned_at_grpo_trains_as_grpo_and_its_saved_objective_loads(tmp_path):
    from purejaxrl.llm.run import run_llm

    a = run_llm(_tiny(["loss=grpo"]), tmp_path / "grpo")
    b = run_llm(_tiny(["loss=learned", "loss.init=grpo"]), tmp_path / "learned")
    assert a["test_pass_at_1"] == b["test_pass_at_1"]
    for ra, rb in zip(_metric_rows(tmp_path / "grpo"), _metric_rows(tmp_path / "learned")):
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), k
    c = run_llm(_tiny(["loss=learned", f"loss.path={tmp_path / 'learned' / 'objective'}"]), tmp_path / "loaded")
    assert c["test_pass_at_1"] == b["test_pass_at_1"]
    # a resume with other parameters at loss.path is refused
    loaded = {**_tiny(["loss=learned", f"loss.path={tmp_path / 'learned' / 'objective'}"]), "resume": True}
    spec, params = LN.load(tmp_path / "learned" / "objective", 2)
    LN.save(spec, {**params, "c": params["c"] + 1.0}, tmp_path / "learned" / "objective")
    with pytest.raises(ConfigError, match="learned_objective"):
        run_llm(loaded, tmp_path / "loaded")
    # a temporal objective reads i / iterations: a resume with another horizon is refused too
    LN.save(spec, params, tmp_path / "learned" / "objective")
    with pytest.raises(ConfigError, match="iterations: checkpoint has 3"):
        run_llm({**loaded, "iterations": 6}, tmp_path / "loaded")


@pytest.mark.slow
def test_a_population_of_four_members_equals_four_separate_runs(tmp_path):
    """Members × seeds vmapped, each seed from its own starting model (a short supervised warm-up, so
    that rewards are not all 0), against ``llm rl`` run one member and one seed at a time."""
    from purejaxrl.llm.population import Population, load_starts
    from purejaxrl.llm.run import run_llm

    seeds = (0, 1)
    for seed in seeds:
        run_llm({**_tiny(["mode=sft", "iterations=30", "lr=0.003", "batch_size=32", "eval_every=30",
                          "checkpoint_every=30"]), "seed": seed}, tmp_path / f"sft{seed}")
    rl = ["loss=learned", "iterations=4", "eval_every=4", "checkpoint_every=4", "lr=0.003"]
    cfg = _tiny(["loss.init=garl", "loss.hidden=4", *rl])
    pop = Population(cfg)
    base = pop.initial_objective(jax.random.PRNGKey(0))
    members = [jax.tree.map(lambda x, k=k: x + 0.5 * jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(7), k),
                                                                          x.shape), base) for k in range(4)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    start = load_starts([str(tmp_path / f"sft{s}") for s in seeds], cfg)
    out = pop(stacked, list(seeds), start)
    assert out["test_pass_at_1"].shape == (4, 2) and out["finite"].all()
    for m in range(4):
        LN.save(pop.spec, members[m], tmp_path / f"m{m}")
        for j, seed in enumerate(seeds):
            single = run_llm({**_tiny([f"loss.path={tmp_path / f'm{m}'}", *rl]), "seed": seed,
                              "init_from": str(tmp_path / f"sft{seed}")}, tmp_path / f"run{m}_{seed}")
            assert out["test_pass_at_1"][m, j] == pytest.approx(single["test_pass_at_1"], abs=1e-6)
            for lv in (1, 2, 3):
                assert out[f"train_successes_level{lv}"][m, j] == single[f"train_successes_level{lv}"]
            losses = [r["loss"] for r in _metric_rows(tmp_path / f"run{m}_{seed}")]  # log_every=1: every iteration
            assert out["loss_mean"][m, j] == pytest.approx(np.mean(losses), rel=1e-4, abs=1e-7)
    assert out["train_successes_level1"].sum() > 0  # the runs had something to learn from
    assert len({round(float(x), 6) for x in out["loss_mean"][:, 0]}) == 4  # and the members trained differently


def _meta_cfg(extra=()):
    from purejaxrl.config import CONF_DIR, compose

    cfg = compose(["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.d_mlp=32", "iterations=2",
                   "num_prompts=2", "num_generations=4", "eval_prompts=8", "eval_every=2", "checkpoint_every=2",
                   "es.population=4", "es.generations=2", "es.seeds_per_member=1", "es.eval_every=1", "es.eval_seeds=2",
                   "es.warmup_pool=2", "warmup.iterations=2", "warmup.batch_size=8", *extra],
                  CONF_DIR / "llm", "meta")
    return {**cfg, "progress": False, "compilation_cache": False}


def test_llm_meta_config_errors_before_any_compile():
    from purejaxrl.llm.meta import validate_llm_meta

    validate_llm_meta(_meta_cfg())
    for extra, msg in ((["loss=grpo"], "llm meta evolves a learned objective"),
                       (["es.population=3"], "must be even"),
                       (["es.fitness=return"], "es.fitness='return'"),
                       (["es.fitness=pass_at_1_level7"], "has levels"),
                       (["es.warmup_pool=0"], "warmup_pool=0"),
                       (["es.fitness=pass_at_1x"], "es.fitness='pass_at_1x'"),
                       (["+warmup.sft_target=reference"], "teaches the answers' format"),
                       (["loss.init=grpo", "loss.q=0.5"], "loss.q=0.5 applies to loss.init=garl"),
                       (["num_generations=1"], "invalid inner llm rl config.*num_generations=1")):
        with pytest.raises(ConfigError, match=msg):
            validate_llm_meta(_meta_cfg(extra))


@pytest.mark.slow
def test_llm_meta_runs_resumes_exactly_and_hands_over_a_loadable_objective(tmp_path):
    import json

    from purejaxrl.llm.meta import run_llm_meta
    from purejaxrl.llm.run import run_llm

    whole = run_llm_meta(_meta_cfg(), tmp_path / "whole")
    assert whole["completed"] and whole["generations"] == 2
    assert [r[0] for r in whole["heldout"]] == [0, 1, 2]
    run_llm_meta(_meta_cfg(["stop_after_generations=1"]), tmp_path / "split")
    run_llm_meta({**_meta_cfg(), "resume": True}, tmp_path / "split")
    rows = lambda d: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                      for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "whole") == rows(tmp_path / "split")
    a, b = (LN.load(tmp_path / d / "mean", 5)[1] for d in ("whole", "split"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (tmp_path / "whole" / "plots" / "selected.png").exists()
    # the selected objective trains a fresh llm rl run from the command line's config
    from purejaxrl.reproduce import _compose_llm

    cfg = {**_compose_llm(["mode=rl", "task=cold_lock", "model=tiny", "model.d_model=16", "model.n_layers=1",
                           "model.n_heads=2", "model.d_mlp=32", "loss=learned",
                           f"loss.path={tmp_path / 'whole' / 'selected'}", "iterations=2", "num_prompts=2",
                           "num_generations=4", "eval_prompts=8", "eval_every=2", "checkpoint_every=2"]),
           "progress": False, "compilation_cache": False}
    assert 0 <= run_llm(cfg, tmp_path / "fresh")["test_pass_at_1"] <= 1
