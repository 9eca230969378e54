"""The TRL options of ``purejaxrl llm rl`` that fit a compiled loop, each checked by hand on a tiny
case: top-p / min-p sampling (and the old log-probs it needs), GSPO's sequence-level ratio,
``mask_truncated_completions``, ``steps_per_generation`` and exact gradient accumulation,
``grad_norm`` logging, and reward functions on decoded strings with ``reward_weights``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purejaxrl.config import ConfigError
from purejaxrl.llm import losses as L
from purejaxrl.llm import rewards
from purejaxrl.llm import trainer as T
from purejaxrl.llm.model import ModelConfig, init_params
from purejaxrl.llm.run import validate_llm
from purejaxrl.llm.sampler import _filter_logits
from purejaxrl.llm.tasks import EOS, VOCAB, CombinationLock, encode

MICRO = ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=1, n_heads=2, d_mlp=64, max_len=16)
HP = {k: jnp.float32(v) for k, v in dict(beta=0.0, epsilon=0.2, epsilon_high=0.2).items()}


class ParityLock(CombinationLock):
    """A reward a random policy earns about half the time."""

    def reward(self, completions, mask, batch):
        return (completions[:, 0] % 2).astype(jnp.float32)


def _kept(logits):
    return np.asarray(logits > -1e29)


def test_top_p_and_min_p_keep_the_tokens_worked_out_by_hand():
    logits = jnp.log(jnp.asarray([[0.05, 0.5, 0.15, 0.3]]))
    # sorted 0.5, 0.3, 0.15, 0.05: mass before each 0, 0.5, 0.8, 0.95
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 1.0, top_p=0.7)), [[False, True, False, True]])
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 1.0, top_p=0.45)), [[False, True, False, False]])
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 1.0, top_p=0.9)), [[False, True, True, True]])
    # min-p 0.4: keep p >= 0.2 (0.4 x the top 0.5)
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 1.0, min_p=0.4)), [[False, True, False, True]])
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 1.0, min_p=0.2)), [[False, True, True, True]])
    # off by default; applied after the temperature: T = 0.5 squares and renormalises (0.25 / 0.365 = 0.685 on the
    # top token), so top-p 0.6 keeps two tokens at T = 1 and one at T = 0.5
    assert _kept(_filter_logits(logits, 1.0)).all()
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 1.0, top_p=0.6)), [[False, True, False, True]])
    np.testing.assert_array_equal(_kept(_filter_logits(logits, 0.5, top_p=0.6)), [[False, True, False, False]])


def _iteration(settings, params=None, opt=None, key=1, task=None, hp=HP):
    task = task or ParityLock()
    opt = opt or optax.sgd(1.0)
    params = init_params(jax.random.PRNGKey(0), MICRO) if params is None else params
    it = jax.jit(T.make_rl_iteration(task, MICRO, settings, {"use_ref": False}, opt))
    p2, o2, m, _ = it(params, opt.init(params), params, jax.random.PRNGKey(key), hp, jnp.float32(1.0))
    return params, p2, o2, m


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
def test_filtered_sampling_takes_old_log_probs_from_the_unfiltered_policy():
    """With top-p the sampler's log-probs are of the filtered distribution; the ratio's denominator must
    be the policy at the sampling temperature (as TRL), so that ρ = 1 before the update: nothing is
    clipped even at GSPO's 1e-4 clip range."""
    hp = {**HP, "epsilon": jnp.float32(1e-4), "epsilon_high": jnp.float32(1e-4)}
    for kw in ({"top_p": 0.3}, {"min_p": 0.5}):
        *_, m = _iteration(T.RLSettings(num_prompts=4, num_generations=4, **kw), hp=hp)
        assert float(m["clip_ratio_low"]) == 0.0 and float(m["clip_ratio_high"]) == 0.0, kw


def test_gspo_sequence_ratio_and_its_clip_by_hand():
    logp = jnp.asarray([[0.1, 0.3, 5.0], [0.0, 0.0, 0.0]])
    old = jnp.zeros((2, 3))
    mask = jnp.asarray([[1, 1, 0], [1, 0, 0]], bool)
    rho = L.importance_ratio(logp, old, mask, "sequence")
    np.testing.assert_allclose(rho[0], np.exp(0.2), rtol=1e-6)  # the masked 5.0 does not count
    np.testing.assert_allclose(rho[1], 1.0)
    np.testing.assert_allclose(L.importance_ratio(logp, old, mask, "token"), np.exp(logp), rtol=1e-6)
    adv = jnp.asarray([1.0, -1.0])
    # row 0: ρ = e^0.2 > 1 + ε_hi, A > 0 -> clipped to (1 + 0.1)·1; row 1: ρ = 1 -> −1; grpo: mean of sequence means
    loss = L.clipped_pg_loss(logp, old, None, mask, adv, epsilon=0.1, epsilon_high=0.1, importance_sampling_level="sequence")
    assert float(loss) == pytest.approx(-(1.1 - 1.0) / 2, abs=1e-6)
    g = jax.grad(lambda lp: L.clipped_pg_loss(lp, old, None, mask, adv, epsilon=0.1, epsilon_high=0.1,
                                             importance_sampling_level="sequence"))(logp)
    np.testing.assert_allclose(g[0], 0.0)  # the clipped sequence passes no gradient to any of its tokens
    np.testing.assert_allclose(g[1], [0.5, 0.0, 0.0])  # −(−1)·ρ' / 2 sequences on the one token
    stats = L.pg_statistics(logp, old, None, mask, adv, epsilon=0.1, epsilon_high=0.1, importance_sampling_level="sequence")
    assert float(stats["clip_ratio_high"]) == pytest.approx(2 / 3)  # both tokens of row 0, of 3 completion tokens


@pytest.mark.slow
def test_gspo_is_registered_with_the_sequence_ratio():
    from purejaxrl.llm import rl_losses as R
    from purejaxrl.reproduce import _compose_llm

    assert R.get("gspo").resolve({})["importance_sampling_level"] == "sequence"
    cfg = _compose_llm(["mode=rl", "loss=gspo"])
    validate_llm(cfg)
    assert cfg["loss"]["epsilon"] == pytest.approx(3e-4) and cfg["loss"]["epsilon_high"] == pytest.approx(4e-4)
    hp = {**HP, "epsilon": jnp.float32(3e-4), "epsilon_high": jnp.float32(4e-4)}
    # on-policy (one step per generated batch) the ratio is 1: nothing is clipped, the step is GRPO's
    *_, m1 = _iteration(T.RLSettings(num_prompts=4, num_generations=4, loss="gspo"), hp=hp)
    assert float(m1["clip_ratio_low"]) + float(m1["clip_ratio_high"]) == 0.0
    # the second of two steps is off-policy: whole sequences are clipped (the same fraction for all their tokens)
    *_, m = _iteration(T.RLSettings(num_prompts=4, num_generations=4, loss="gspo", steps_per_generation=2), hp=hp)
    assert float(m["clip_ratio_low"]) + float(m["clip_ratio_high"]) > 0


@pytest.mark.slow
def test_mask_truncated_completions_drop_completions_that_never_end(monkeypatch):
    """With a stop token that never comes, every completion is truncated: masked, the loss and the
    gradient are exactly 0; unmasked they are not."""
    monkeypatch.setattr(T, "EOS", 10_000)  # no completion can end
    _, _, _, m_off = _iteration(T.RLSettings(num_prompts=4, num_generations=4))
    p, p2, _, m_on = _iteration(T.RLSettings(num_prompts=4, num_generations=4, mask_truncated_completions=True))
    assert float(m_off["truncated_fraction"]) == 1.0
    assert float(m_off["grad_norm"]) > 0
    assert float(m_on["loss"]) == 0.0 and float(m_on["grad_norm"]) == 0.0
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_grad_norm_is_the_norm_of_the_step_before_clipping():
    """SGD at lr 1 moves the parameters by the gradient: its norm is the logged grad_norm."""
    p, p2, _, m = _iteration(T.RLSettings(num_prompts=4, num_generations=4))
    moved = optax.tree.norm(jax.tree.map(lambda a, b: a - b, p, p2))
    assert float(m["grad_norm"]) == pytest.approx(float(moved), rel=1e-4)
    clip = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
    _, p3, _, m3 = _iteration(T.RLSettings(num_prompts=4, num_generations=4), opt=clip)
    assert float(m3["grad_norm"]) == pytest.approx(float(m["grad_norm"]), rel=1e-5)  # logged before the clip
    assert float(optax.tree.norm(jax.tree.map(lambda a, b: a - b, p, p3))) == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("loss,loss_type", [pytest.param(*c, marks=pytest.mark.slow) for c in
                                            (("dapo", "dapo"), ("grpo", "grpo"), ("dr_grpo", "dr_grpo"), ("grpo", "dapo"),
                                             ("dapo", "grpo"),
                                             ("rover", None), ("garl", None))])
def test_gradient_accumulation_gives_the_full_batch_step(loss, loss_type):
    """Microbatches weighted by their share of the loss's normaliser reproduce the one-batch gradient
    exactly, for per-sequence and per-token aggregations and with DAPO's dropped groups."""
    opts = (("loss_type", loss_type), ("scale_rewards", "group")) if loss_type else ()
    hp = {**HP, "q": jnp.float32(0.75), "rho": jnp.float32(1.0)}

    class Sparse(CombinationLock):
        def reward(self, completions, mask, batch):
            return ((completions[:, 0] % 3) == 0).astype(jnp.float32)

    task = Sparse(levels=(1,))  # a third of the samples succeed: DAPO drops some groups and keeps others
    full = T.RLSettings(num_prompts=8, num_generations=4, loss=loss, loss_options=opts)
    acc = T.RLSettings(num_prompts=8, num_generations=4, loss=loss, loss_options=opts, gradient_accumulation_steps=4)
    _, p_full, _, m_full = _iteration(full, task=task, hp=hp)
    _, p_acc, _, m_acc = _iteration(acc, task=task, hp=hp)
    if loss == "dapo":
        assert 0 < float(m_full["kept_fraction"]) < 1  # the case where the weights matter
        assert float(m_acc["kept_fraction"]) == pytest.approx(float(m_full["kept_fraction"]))  # metrics: plain means
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_acc)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert float(m_acc["loss"]) == pytest.approx(float(m_full["loss"]), rel=1e-4, abs=1e-6)
    assert float(m_acc["grad_norm"]) == pytest.approx(float(m_full["grad_norm"]), rel=1e-4)


@pytest.mark.slow
def test_steps_per_generation_counts_microbatches_as_trl():
    """TRL's meaning: the generated batch is split into steps_per_generation microbatches, A of them
    per optimiser step, so Adam counts (S / A) x num_iterations steps; S = A (or S unset) is one step
    on the whole batch, the same step as without accumulation."""
    opt = optax.adam(1e-3)
    for S, A, it, steps in ((0, 1, 1, 1), (2, 1, 1, 2), (4, 2, 2, 4), (0, 4, 1, 1), (8, 2, 1, 4)):
        _, _, o, m = _iteration(T.RLSettings(num_prompts=8, num_generations=4, steps_per_generation=S,
                                             gradient_accumulation_steps=A, num_iterations=it), opt=opt)
        assert int(o[0].count) == steps, (S, A, it)
        assert np.isfinite(float(m["loss"]))
    with pytest.raises(ValueError, match="multiple of gradient_accumulation_steps"):
        T.make_rl_iteration(ParityLock(), MICRO, T.RLSettings(num_prompts=8, steps_per_generation=3,
                                                              gradient_accumulation_steps=2), {}, opt)


def test_minibatches_hold_whole_prompt_groups():
    """Minibatch j holds prompts j·n .. j·n+n−1 and exactly their completions; scalars are shared."""
    d = {"prompts": jnp.arange(8).reshape(4, 2), "rewards": jnp.arange(8.0), "mask": jnp.ones((8, 3), bool),
         "progress": jnp.float32(0.5), "share_prompts": True}
    split, const = T.split_batch(d, 2)
    np.testing.assert_array_equal(split["prompts"][0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(split["rewards"][1], [4.0, 5.0, 6.0, 7.0])  # the completions of prompts 2 and 3
    assert set(const) == {"progress", "share_prompts"}


def test_string_reward_functions_are_called_on_decoded_text():
    prompts = jnp.asarray([[1] + encode("12+34=")])  # BOS first
    comps = jnp.asarray([encode("46") + [EOS, 0], encode("4a") + [EOS, 0]])
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 0]], bool)
    answers = jnp.asarray([encode("46") + [EOS], encode("46") + [EOS]])
    seen = {}

    def spy(prompts, completions, answers, **kw):
        seen.update(p=prompts, c=completions, a=answers)
        return [1.0, None]

    f = jax.jit(lambda *a: T.string_reward(spy, *a))
    out = np.asarray(f(prompts, comps, mask, answers))
    assert seen == {"p": ["12+34=", "12+34="], "c": ["46", "4a"], "a": ["46", "46"]}
    assert out[0] == 1.0 and np.isnan(out[1])
    assert rewards.exact_answer(["x"], ["46", "4a"], ["46", "46"]) == [1.0, 0.0]
    assert rewards.digits_only(["x"] * 3, ["46", "4a", ""], ["", "", ""]) == [1.0, 0.5, None]


@pytest.mark.slow
def test_weighted_reward_functions_sum_to_the_reward():
    """reward = 1·verifier + 0.5·digits_only, each function's mean logged as rewards/<name>."""
    s = T.RLSettings(num_prompts=4, num_generations=4,
                     reward_funcs=("verifier", "purejaxrl.llm.rewards:digits_only"), reward_weights=(1.0, 0.5))
    *_, m = _iteration(s)
    parts = {k: float(v) for k, v in m.items() if k.startswith("rewards/")}
    assert set(parts) == {"rewards/verifier", "rewards/purejaxrl.llm.rewards:digits_only"}
    assert float(m["verifier_reward"]) == pytest.approx(parts["rewards/verifier"])
    # an empty completion (EOS first) is unscored by digits_only: the mean reward is at most the weighted means' sum
    assert float(m["reward"]) <= parts["rewards/verifier"] + 0.5 * parts["rewards/purejaxrl.llm.rewards:digits_only"] + 1e-6
    assert float(m["reward"]) >= parts["rewards/verifier"]


def test_bad_trl_options_are_refused_in_one_line_before_any_compile():
    from purejaxrl.reproduce import _compose_llm

    base = _compose_llm(["mode=rl", "loss=grpo"])
    cases = [
        ({"top_p": 0.0}, "top_p=0.0 must be in"),
        ({"min_p": 1.0}, "min_p=1.0 must be in"),
        ({"reward_funcs": ["verifier", "nosuchmodule:f"]}, "cannot be imported"),
        ({"reward_funcs": ["purejaxrl.llm.rewards:nothing"]}, "has no function nothing"),
        ({"reward_funcs": ["verifier"], "reward_weights": [1.0, 2.0]}, "2 values for 1 reward_funcs"),
        ({"steps_per_generation": 3}, "divisible by steps_per_generation"),
        ({"steps_per_generation": 4, "gradient_accumulation_steps": 3}, "multiple of gradient_accumulation_steps"),
        ({"gradient_accumulation_steps": 2, "loss": {**base["loss"], "scale_rewards": "batch"}}, "scale_rewards=batch"),
        ({"gradient_accumulation_steps": 2, "reward": "logprob"}, "likelihood reward's mean length"),
        ({"reward_funcs": ["verifier", "purejaxrl.llm.rewards:digits_only"], "reward": "prob"}, "likelihood reward"),
    ]
    for change, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            validate_llm({**base, **change})
    garl = _compose_llm(["mode=rl", "loss=garl", "steps_per_generation=2"])
    with pytest.raises(ConfigError, match="steps_per_generation=2 > gradient_accumulation_steps=1.*off-policy"):
        validate_llm(garl)
    validate_llm(_compose_llm(["mode=rl", "loss=garl", "gradient_accumulation_steps=2"]))
    validate_llm(_compose_llm(["mode=rl", "loss=garl", "gradient_accumulation_steps=2", "steps_per_generation=2"]))
    for loss, what in (("epo", "EPO's entropy band"), ("fg_expo", "FG-ExPO's accuracy")):
        with pytest.raises(ConfigError, match=f"gradient_accumulation_steps=2 with loss={loss}: {what}"):
            validate_llm(_compose_llm(["mode=rl", f"loss={loss}", "gradient_accumulation_steps=2"]))
    validate_llm({**base, "top_p": 0.9, "min_p": 0.05, "steps_per_generation": 2, "gradient_accumulation_steps": 2,
                  "reward_funcs": ["verifier", "purejaxrl.llm.rewards:digits_only"], "reward_weights": [1, 0.1]})
