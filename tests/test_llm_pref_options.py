"""Offline preference options of ``purejaxrl llm pref``: robust DPO (``loss_type=robust``), DPO on all
candidate pairs (``pairs=all``) and a per-seed offline dataset by default (``data_seed=null``), each
on hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purejaxrl.config import ConfigError, _load_yaml
from purejaxrl.llm import losses as L
from purejaxrl.llm import trainer as T
from purejaxrl.llm.model import ModelConfig, init_params
from purejaxrl.llm.run import LLM_CONF, data_seed, run_llm, validate_llm
from purejaxrl.llm.tasks import PAD, VOCAB, make_task

PREF = {"mode": "pref", "seed": 0, "iterations": 1, "lr": 1e-3, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "batch_size": 8, "num_candidates": 3, "dataset_size": 32, "noise": "none", "eval_prompts": 8,
        "eval_every": 1, "log_every": 1, "checkpoint_every": 1, "init_from": None, "resume": False,
        "compilation_cache": False, "progress": False, "task": {"name": "sort_letters", "kwargs": {}},
        "model": _load_yaml(LLM_CONF / "model" / "tiny.yaml"), "loss": {"name": "dpo", "beta": 0.1}}


def _tiny(task):
    return ModelConfig(vocab_size=len(VOCAB), max_len=task.prompt_len + task.max_new, **PREF["model"])


def _one_line_error(cfg, match):
    with pytest.raises(ConfigError, match=match) as e:
        validate_llm(cfg)
    assert "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------- rDPO
def test_robust_dpo_by_hand_and_unbiased_under_flips():
    c, r, rc, rr = jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0])  # margin h = 2
    beta, eps = 0.5, 0.2
    # βh = 1: log σ(1) = -0.3132616875, log σ(-1) = -1.3132616875;
    # (0.8 · 0.3132616875 - 0.2 · 1.3132616875) / 0.6 = -0.0120429875 / 0.6
    rob = float(L.dpo_loss(c, r, rc, rr, beta, loss_type="robust", label_smoothing=eps))
    assert rob == pytest.approx(-0.0200716458, abs=1e-7)
    # the reversed pair: (0.8 · 1.3132616875 - 0.2 · 0.3132616875) / 0.6
    rob_rev = float(L.dpo_loss(r, c, rr, rc, beta, loss_type="robust", label_smoothing=eps))
    assert rob_rev == pytest.approx(1.6465950208, abs=1e-7)
    # unbiased: its expectation under flips at rate ε is the clean DPO loss -log σ(βh) = 0.3132616875
    assert (1 - eps) * rob + eps * rob_rev == pytest.approx(0.3132616875, abs=1e-6)
    h = jnp.linspace(-6.0, 6.0, 13)
    for e in (0.0, 0.1, 0.3, 0.45):
        ell = lambda m: L.dpo_pair_losses(m, beta, loss_type="robust", label_smoothing=e)  # noqa: E731
        np.testing.assert_allclose((1 - e) * ell(h) + e * ell(-h), -jax.nn.log_sigmoid(beta * h), rtol=1e-5, atol=1e-6)
    # at ε = 0 it is DPO; cDPO (sigmoid with label smoothing) is not unbiased
    assert float(L.dpo_loss(c, r, rc, rr, beta, loss_type="robust")) == pytest.approx(float(L.dpo_loss(c, r, rc, rr, beta)))
    cdpo = lambda m: L.dpo_pair_losses(m, beta, label_smoothing=eps)  # noqa: E731
    assert abs(float((1 - eps) * cdpo(h[-1]) + eps * cdpo(-h[-1]) + jax.nn.log_sigmoid(beta * h[-1]))) > 0.1


def test_label_smoothing_is_accepted_with_robust_only_besides_sigmoid():
    validate_llm({**PREF, "loss": {"name": "dpo", "loss_type": "robust", "label_smoothing": 0.2}})
    validate_llm({**PREF, "loss": {"name": "dpo", "loss_type": "sigmoid", "label_smoothing": 0.2}})
    _one_line_error({**PREF, "loss": {"name": "dpo", "loss_type": "ipo", "label_smoothing": 0.2}},
                    r"label_smoothing=0.2 applies to loss.loss_type=sigmoid .* or robust .* not ipo")
    _one_line_error({**PREF, "loss": {"name": "dpo", "loss_type": "robust", "label_smoothing": 0.5}},
                    r"label_smoothing=0.5 must be in \[0, 0.5\)")


# ---------------------------------------------------------------- DPO on all candidate pairs
def test_candidate_pairs_by_hand_with_a_tie_and_a_flip():
    # pairs in order (0, 1), (0, 2), (1, 2); candidates 0 and 2 tie
    scores = jnp.array([[0.5, 0.2, 0.5], [0.5, 0.2, 0.5]])
    w, l, valid = L.candidate_pairs(scores, flip=jnp.array([False, True]))
    np.testing.assert_array_equal(valid, [[True, False, True], [True, False, True]])
    np.testing.assert_array_equal(np.where(valid, w, -1), [[0, -1, 2], [1, -1, 1]])  # a flip reverses every pair
    np.testing.assert_array_equal(np.where(valid, l, -1), [[1, -1, 1], [0, -1, 2]])
    w0, l0, _ = L.candidate_pairs(scores)
    np.testing.assert_array_equal(np.where(valid, w0, -1)[0], [0, -1, 2])


def test_all_pairs_dpo_loss_by_hand():
    lp, ref = jnp.array([[1.0, -1.0, 0.5]]), jnp.zeros((1, 3))  # log-ratios r = (1, -1, 0.5)
    scores = jnp.array([[0.5, 0.2, 0.5]])
    # valid pairs: 0 ≻ 1 (h = 2) and 2 ≻ 1 (h = 1.5); the tied pair (0, 2) counts for nothing:
    # (log(1 + e^-2) + log(1 + e^-1.5)) / 2 = (0.1269280110 + 0.2014132779) / 2
    assert float(L.all_pairs_dpo_loss(lp, ref, scores, 1.0)) == pytest.approx(0.1641706445, abs=1e-6)
    # flipped: 1 ≻ 0 (h = -2), 1 ≻ 2 (h = -1.5): (2.1269280110 + 1.7014132779) / 2
    flipped = L.all_pairs_dpo_loss(lp, ref, scores, 1.0, flip=jnp.array([True]))
    assert float(flipped) == pytest.approx(1.9141706445, abs=1e-6)
    # a fully tied prompt adds no pair (the mean is over the 2 valid pairs, not 6); all tied: 0, not NaN
    two = L.all_pairs_dpo_loss(jnp.concatenate([lp, lp]), jnp.zeros((2, 3)), jnp.array([[0.5, 0.2, 0.5], [0.3, 0.3, 0.3]]), 1.0)
    assert float(two) == pytest.approx(0.1641706445, abs=1e-6)
    tied = jnp.full((1, 3), 0.3)
    assert float(L.all_pairs_dpo_loss(lp, ref, tied, 1.0)) == 0.0
    assert np.all(np.isfinite(jax.grad(lambda x: L.all_pairs_dpo_loss(x, ref, tied, 1.0))(lp)))


def _dataset_draw(task, mcfg, params, key, K, noise, batch_size=8, dataset_size=32, ds=12345):
    """What make_pref_step draws for ``key``, recomputed outside it: the candidates' sequence
    log-probs under ``params`` [B, K], the recorded scores and the flips."""
    idx = jax.random.randint(key, (), 0, dataset_size // batch_size)
    dkey = jax.random.fold_in(jax.random.PRNGKey(ds), idx)
    kind, val = T.parse_noise(noise)
    batch, cands, _, scores = T.make_preference_batch(task, dkey, batch_size, K, (kind, val))
    comps = cands.reshape(batch_size * K, -1)
    lp = T._seq_logp(params, mcfg, batch.prompts, comps, comps != PAD)
    flip = jax.random.bernoulli(jax.random.fold_in(dkey, 7), val if kind == "flip" else 0.0, (batch_size,))
    return np.asarray(lp, np.float64), np.asarray(scores), np.asarray(flip)


@pytest.fixture(scope="module")
def setup():
    task = make_task("sort_letters")
    mcfg = _tiny(task)
    params = init_params(jax.random.PRNGKey(0), mcfg)
    ref = init_params(jax.random.PRNGKey(1), mcfg)
    return task, mcfg, params, ref


def _loss_with_ref(task, mcfg, K, noise, opts, params, ref, key, beta):
    opt = optax.sgd(0.0)
    step = jax.jit(T.make_pref_step(task, mcfg, "dpo", 8, K, T.parse_noise(noise), 32, opt, opts, 12345))
    return float(step(params, opt.init(params), ref, key, {"beta": jnp.float32(beta)})[2]["loss"])


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_pairs_best_worst_is_the_old_loss(setup):
    task, mcfg, params, ref = setup
    key, beta, K, noise = jax.random.PRNGKey(3), 0.5, 4, "flip:0.4"
    old = _loss_with_ref(task, mcfg, K, noise, None, params, ref, key, beta)
    assert _loss_with_ref(task, mcfg, K, noise, {"pairs": "best_worst"}, params, ref, key, beta) == old  # exactly
    # the loss as it was written before pairs existed: best vs worst by recorded score, swapped on a flip
    lp, scores, flip = _dataset_draw(task, mcfg, params, key, K, noise)
    lr_, *_ = _dataset_draw(task, mcfg, ref, key, K, noise)
    order = np.argsort(-scores, axis=1, kind="stable")
    best, worst = order[:, 0], order[:, -1]
    w, l = np.where(flip, worst, best), np.where(flip, best, worst)
    r = lp - lr_
    h = r[np.arange(8), w] - r[np.arange(8), l]
    assert flip.any() and not flip.all()
    assert old == pytest.approx(float(np.mean(np.log1p(np.exp(-beta * h)))), rel=1e-4)


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_pairs_all_in_the_step_matches_a_hand_loop(setup):
    task, mcfg, params, ref = setup
    key, beta, K, noise = jax.random.PRNGKey(5), 0.5, 3, "flip:0.4"  # flip: the scores are the true rewards, with ties
    got = _loss_with_ref(task, mcfg, K, noise, {"pairs": "all"}, params, ref, key, beta)
    lp, scores, flip = _dataset_draw(task, mcfg, params, key, K, noise)
    lr_, *_ = _dataset_draw(task, mcfg, ref, key, K, noise)
    r = lp - lr_
    terms, ties = [], 0
    for b in range(8):
        for i in range(K):
            for j in range(i + 1, K):
                if scores[b, i] == scores[b, j]:
                    ties += 1
                    continue
                w, l = (i, j) if scores[b, i] > scores[b, j] else (j, i)
                if flip[b]:
                    w, l = l, w
                terms.append(np.log1p(np.exp(-beta * (r[b, w] - r[b, l]))))
    assert ties > 0 and flip.any() and terms
    assert got == pytest.approx(float(np.mean(terms)), rel=1e-4)
    # with two candidates and no ties (Gaussian score noise) all pairs is best vs worst
    a = _loss_with_ref(task, mcfg, 2, "gauss:0.1", {"pairs": "all"}, params, ref, key, beta)
    assert a == pytest.approx(_loss_with_ref(task, mcfg, 2, "gauss:0.1", None, params, ref, key, beta), rel=1e-5)


def test_pairs_is_validated_and_reaches_the_step(monkeypatch, tmp_path):
    validate_llm({**PREF, "loss": {"name": "dpo", "pairs": "all"}})
    _one_line_error({**PREF, "loss": {"name": "dpo", "pairs": "every"}}, r"loss.pairs='every'; valid: best_worst .* all")
    with pytest.raises(ValueError, match="pairs"):
        T.make_pref_step(None, None, "dpo", 8, 3, ("none", 0.0), 32, None, {"pairs": "every"})
    seen = _capture_step(monkeypatch)
    with pytest.raises(_Stop):
        run_llm({**PREF, "loss": {"name": "dpo", "pairs": "all", "loss_type": "robust", "label_smoothing": 0.1}},
                tmp_path / "a")
    assert seen["opts"] == {"loss_type": "robust", "pairs": "all"}


# ---------------------------------------------------------------- data_seed: per seed by default
class _Stop(Exception):
    pass


def _capture_step(monkeypatch):
    seen = {}

    def fake(task, cfg, loss, batch_size, num_candidates, noise, dataset_size, optimizer, opts=None, data_seed=12345):
        seen.update(opts=opts, data_seed=data_seed)
        raise _Stop

    monkeypatch.setattr(T, "make_pref_step", fake)
    return seen


def test_data_seed_defaults_to_one_dataset_per_seed(monkeypatch, tmp_path):
    seen = _capture_step(monkeypatch)

    def resolved(**over):
        with pytest.raises(_Stop):
            run_llm({**PREF, **over}, tmp_path / str(len(list(tmp_path.iterdir()))))
        return seen["data_seed"]

    assert _load_yaml(LLM_CONF / "run" / "default.yaml")["data_seed"] is None
    s0, s1 = resolved(seed=0), resolved(seed=1)
    assert (s0, s1) == (12345, 12346)  # seed 0 keeps the dataset data_seed=12345 gave
    assert resolved(seed=0, data_seed=12345) == s0
    assert resolved(seed=0, data_seed=777) == resolved(seed=1, data_seed=777) == 777
    assert data_seed({"seed": 4, "data_seed": None}) == 12349 and data_seed({"seed": 4, "data_seed": 0}) == 0

    task = make_task("sort_letters")

    def data(ds):
        dkey = jax.random.fold_in(jax.random.PRNGKey(ds), 0)
        return np.asarray(T.make_preference_batch(task, dkey, 8, 3, ("gauss", 0.1))[3])

    assert not np.array_equal(data(s0), data(s1))  # seed 0 and seed 1: different datasets and noise
    np.testing.assert_array_equal(data(s0), data(12345))


def test_data_seed_must_be_an_integer_or_null():
    validate_llm({**PREF, "data_seed": None})
    validate_llm({**PREF, "data_seed": 3})
    for bad in ("abc", 1.5, True):
        _one_line_error({**PREF, "data_seed": bad}, r"data_seed=.* must be an integer, or null")


@pytest.mark.slow  # two short runs (~40 s on two cores)
def test_a_resume_compares_the_data_seed_it_resolves_to(tmp_path):
    # a run saved with the old explicit default (12345 at seed 0) resumes under data_seed=null: the same data
    run_llm({**PREF, "data_seed": 12345}, tmp_path / "r")
    with pytest.raises(ConfigError, match="data_seed"):
        run_llm({**PREF, "iterations": 2, "resume": True, "data_seed": 12346}, tmp_path / "r")
    run_llm({**PREF, "iterations": 2, "resume": True, "data_seed": None}, tmp_path / "r")
