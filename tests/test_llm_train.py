"""LLM tasks and trainers: verifiers, the split by prompt, every loss through a compiled
iteration, and the run-directory contract of ``purejaxrl llm``."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purejaxrl.llm import rl_losses as R
from purejaxrl.llm import trainer as T
from purejaxrl.llm.model import ModelConfig, init_params
from purejaxrl.llm.run import run_llm
from purejaxrl.llm.tasks import D0, EOS, TASKS, VOCAB, CombinationLock, decode, make_task

MICRO = ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=1, n_heads=2, d_mlp=64, max_len=16)


@pytest.mark.parametrize("name", list(TASKS))
def test_reference_answers_score_one_and_splits_are_disjoint(name):
    task = make_task(name)
    for test in (False, True):
        b = task.sample(jax.random.PRNGKey(0), 64, test=test)
        comp = jnp.pad(b.answers, ((0, 0), (0, task.max_new - b.answers.shape[1])))
        np.testing.assert_array_equal(task.reward(comp, comp != 0, b), 1.0)
        body = np.asarray(b.prompts[:, 1:])
        symbol_sum = np.where(body >= D0 + 10, body - (D0 + 10), body - D0)
        symbol_sum = np.where((body >= D0) & (body < D0 + 26), symbol_sum, 0)
        if name == "digit_sum":  # the last digit counts twice there, so the split is not the answer's residue
            symbol_sum[:, 4] *= 2
            assert len(set((np.asarray(b.answers[:, 2]) - D0) % 5)) > 1
        symbol_sum = symbol_sum.sum(1)
        assert np.all((symbol_sum % 5 == 0) == test), name


def test_one_digit_addition_holds_out_prompts_not_answers():
    """digits=1: held out iff (a + 2b) % 5 == 0, so the held-out sums end in every digit training sees
    (the digit-sum rule held out exactly the sums ending in 0 or 5, which training never rewards)."""
    task = make_task("addition", digits=1)
    last = {}
    for test in (False, True):
        b = task.sample(jax.random.PRNGKey(3), 512, test=test)
        a, c = np.asarray(b.prompts[:, 1]) - D0, np.asarray(b.prompts[:, 3]) - D0
        assert np.all(((a + 2 * c) % 5 == 0) == test)
        np.testing.assert_array_equal(np.asarray(b.answers[:, 1]) - D0, (a + c) % 10)
        last[test] = set(((a + c) % 10).tolist())
    assert last[True] == last[False] == set(range(10))


def test_wrong_answers_score_zero():
    task = make_task("addition")
    b = task.sample(jax.random.PRNGKey(1), 8)
    wrong = b.answers.at[:, 0].set(D0 + (b.answers[:, 0] - D0 + 1) % 10)
    assert float(task.reward(wrong, wrong != 0, b).sum()) == 0.0
    assert decode(b.answers[0]).isdigit()


class ParityLock(CombinationLock):
    """A reward every random policy earns half the time, so every loss has a learning signal."""

    def reward(self, completions, mask, batch):
        return (completions[:, 0] % 2).astype(jnp.float32)


@pytest.mark.parametrize("loss", [l if l == "grpo" else pytest.param(l, marks=pytest.mark.slow) for l in T.RL_LOSSES])
def test_every_rl_loss_runs_a_compiled_iteration(loss):
    task = ParityLock()
    cfg = MICRO
    hp = {k: jnp.float32(v) for k, v in dict(beta=0.04, epsilon=0.2, epsilon_high=0.28, q=0.75, p_floor=1e-3, entropy_coef=0.01).items()}
    loss_options = ()
    if loss == "learned":  # its structure is static (options), its parameters traced (hp["learned"]), as run.py builds it
        from purejaxrl.llm import learned as LN

        spec = LN.make_spec("grpo")
        hp["learned"] = LN.init_params(spec, jax.random.PRNGKey(2), task.max_new)
        loss_options = tuple(sorted(LN.options(spec).items()))
    settings = T.RLSettings(num_prompts=4, num_generations=4, num_iterations=2, loss=loss, loss_options=loss_options)
    opt = optax.adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), cfg)
    it = jax.jit(T.make_rl_iteration(task, cfg, settings, {"use_ref": True}, opt))
    p2, _, m, _ = it(params, opt.init(params), params, jax.random.PRNGKey(1), hp, jnp.float32(1.0))
    assert np.isfinite(float(m["loss"]))
    moved = sum(float(jnp.abs(a - b).sum()) for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params)))
    assert moved > 0
    # what TRL users read: entropy, reward spread, truncation; for the clipped surrogate clip ratios and KL
    for k in ("entropy", "reward_std", "frac_reward_zero_std", "truncated_fraction"):
        assert np.isfinite(float(m[k])), k
    assert 0 < float(m["entropy"]) <= np.log(len(VOCAB)) + 1e-4
    if R.REGISTRY[loss].options.get("loss_type"):
        assert {"clip_ratio_low", "clip_ratio_high", "kl"} <= set(m)
        assert 0 <= float(m["clip_ratio_low"]) <= 1 and float(m["kl"]) >= 0


def test_a_new_loss_is_one_registered_function():
    """The registry's contract: a loss declares what it needs and the iteration provides exactly that."""
    seen = {}

    @R.register("test_success_sft", needs=("old_logp",))
    def success_sft(x, hp, opts):
        seen.update({k: True for k in x})
        return -jnp.mean(x["rewards"] * x["seq_logp"]), {"seen_old_logp": jnp.float32("old_logp" in x)}

    try:
        settings = T.RLSettings(num_prompts=4, num_generations=4, loss="test_success_sft")
        opt = optax.adam(1e-3)
        params = init_params(jax.random.PRNGKey(0), MICRO)
        it = jax.jit(T.make_rl_iteration(ParityLock(), MICRO, settings, {"use_ref": True}, opt))
        p2, _, m, _ = it(params, opt.init(params), params, jax.random.PRNGKey(1), {}, jnp.float32(jnp.nan))
        assert float(m["seen_old_logp"]) == 1.0 and np.isfinite(float(m["loss"]))
        assert "ref_logp" not in seen and "old_logits" not in seen and "resample_idx" not in seen
        assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params)))
    finally:
        R.REGISTRY.pop("test_success_sft")
    with pytest.raises(ValueError, match="unknown needs"):
        R.register("bad", needs=("value_head",))


def test_every_registered_loss_has_a_config_and_valid_defaults():
    from purejaxrl.config import CONF_DIR, _load_yaml

    for name, entry in R.REGISTRY.items():
        cfg = _load_yaml(CONF_DIR / "llm" / "loss" / f"{name}.yaml")
        assert cfg["name"] == name
        assert R.option_errors(name, cfg) == [], name
        assert set(entry.defaults) <= set(entry.options)
        hp, opts = R.split_config(cfg)
        assert all(isinstance(v, (int, float)) for v in hp.values()) and set(opts) == set(entry.options)


@pytest.mark.parametrize("loss", [l if l == "dpo" else pytest.param(l, marks=pytest.mark.slow)
                                  for l in T.PREF_LOSSES if l not in ("sppo", "nash_mp")])
def test_every_preference_loss_steps(loss):
    task = make_task("sort_letters")
    opt = optax.adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), MICRO)
    step = jax.jit(T.make_pref_step(task, MICRO, loss, 8, 4, T.parse_noise("gauss:0.1"), 64, opt))
    hp = {"beta": jnp.float32(0.1), "tau": jnp.float32(10.0), "beta_r": jnp.float32(0.1)}
    _, _, m = step(params, opt.init(params), params, jax.random.PRNGKey(0), hp)
    assert np.isfinite(float(m["loss"])) and 0 <= float(m["data_true_reward"]) <= 1


def test_preference_candidates_have_graded_true_rewards():
    task = make_task("sort_letters")
    batch, cands, true, scores = T.make_preference_batch(task, jax.random.PRNGKey(0), 16, 4, ("none", 0.0))
    assert cands.shape == (16, 4, 6) and bool(jnp.all(cands[..., -1] == EOS))
    np.testing.assert_allclose(true, scores)
    assert float(true.max()) == 1.0 and float(true.min()) < 1.0
    with pytest.raises(ValueError, match="flip:P"):
        T.parse_noise("flips")


@pytest.mark.slow
def test_llm_sft_learns_and_writes_the_run_contract(tmp_path):
    cfg = {
        "mode": "sft", "seed": 0, "iterations": 150, "lr": 3e-3, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "batch_size": 64, "num_prompts": 8, "num_generations": 4, "num_iterations": 1, "temperature": 1.0,
        "top_k": 0, "num_candidates": 4, "dataset_size": 256, "noise": "none", "eval_prompts": 64,
        "eval_every": 150, "log_every": 10, "checkpoint_every": 150, "init_from": None, "run_dir": None,
        "resume": False, "compilation_cache": False, "progress": False,
        "task": {"name": "combination_lock", "kwargs": {"levels": [1]}},
        "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_mlp": 128},
        "loss": {"name": "grpo"},
    }
    s = run_llm(cfg, tmp_path / "sft")
    assert s["test_pass_at_1"] > 0.5, s
    for k in ("iterations", "seconds_per_iteration", "sampled_tokens_per_second", "test_pass_at_1_level1"):
        assert k in s
    rows = [json.loads(l) for l in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] > rows[-1]["loss"]
    # RL from the SFT warm start: per-level pass rates logged, and sampled tokens/s reported
    s2 = run_llm({**cfg, "mode": "rl", "iterations": 3, "eval_every": 3, "init_from": str(tmp_path / "sft"),
                  "loss": {"name": "garl", "q": 0.75, "p_floor": 1e-3}}, tmp_path / "rl")
    assert s2["sampled_tokens_per_second"] > 0 and s2["test_pass_at_1"] > 0.3


def test_reference_answer_is_placed_after_the_chain_of_thought():
    eq = make_task("digit_sum").separator
    prompts = jnp.array([[1, 5, 6], [1, 7, 8]])
    comps = jnp.array([[20, 21, eq, 4, 5, EOS], [22, 23, 24, 25, 26, 27]])  # row 1 never writes "="
    mask = jnp.ones_like(comps, bool)
    answers = jnp.array([[eq, 4, 9, EOS], [eq, 5, 5, EOS]])
    tok, valid, z, a = T.append_reference_answer(prompts, comps, mask, answers, eq)
    np.testing.assert_array_equal(tok[0], [1, 5, 6, 20, 21, eq, 4, 9, EOS, 0, 0, 0, 0])
    np.testing.assert_array_equal(tok[1], [1, 7, 8, 22, 23, 24, 25, 26, 27, eq, 5, 5, EOS])
    assert z.sum(1).tolist() == [2, 6] and a.sum(1).tolist() == [4, 4]
    assert valid[0].tolist() == [True] * 9 + [False] * 4


@pytest.mark.parametrize("reward", ["logprob", pytest.param("prob", marks=pytest.mark.slow),
                                    pytest.param("mean_prob", marks=pytest.mark.slow)])
def test_likelihood_rewards_iteration(reward):
    task = make_task("digit_sum")
    cfg = ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=1, n_heads=2, d_mlp=64, max_len=32)
    settings = T.RLSettings(num_prompts=4, num_generations=4, loss="dr_grpo", reward=reward)
    opt = optax.adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), cfg)
    hp = {"beta": jnp.float32(0.0), "epsilon": jnp.float32(0.2), "epsilon_high": jnp.float32(0.2)}
    it = jax.jit(T.make_rl_iteration(task, cfg, settings, {}, opt))
    _, _, m, _ = it(params, opt.init(params), params, jax.random.PRNGKey(1), hp, jnp.float32(1.0))
    assert np.isfinite(float(m["loss"])) and float(m["reward"]) != 0.0
    if reward == "logprob":
        assert float(m["reward"]) < 0


def test_sppo_round_step():
    task = make_task("sort_letters")
    opt = optax.adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), MICRO)
    step = jax.jit(T.make_sppo_step(task, MICRO, 4, 4, opt))
    p2, _, m = step(params, opt.init(params), params, jax.random.PRNGKey(0), {"beta": jnp.float32(0.1)})
    # at the start of a round ℓ_θ = ℓ_t, so the loss is ½η²[(P̂_w − ½)² + (P̂_l − ½)²] > 0 and the step moves θ
    assert float(m["loss"]) > 0
    assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params)))


def test_nash_mp_step_and_round_boundaries(tmp_path):
    task = make_task("sort_letters")
    opt = optax.adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), MICRO)
    step = jax.jit(T.make_nash_mp_step(task, MICRO, 4, 4, opt))
    hp = {"beta": jnp.float32(0.1), "eta": jnp.float32(1.0)}
    p2, _, m = step(params, opt.init(params), params, params, params, jax.random.PRNGKey(0), hp)
    # θ = π_k = π_ref: the residual is the centred c₁·P̂, non-zero when the samples' rewards differ
    assert float(m["loss"]) > 0
    assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params)))
    # the opponent becomes the midpoint half way through a round; anchor and opponent the new iterate at its end
    from purejaxrl.llm.run import _next_round

    cfg = {"mode": "pref", "round_length": 4, "loss": {"name": "nash_mp"}}
    st = {"params": jnp.float32(3.0), "anchor_params": jnp.float32(0.0), "opponent_params": jnp.float32(0.0)}
    assert float(_next_round(st, cfg, 1)["opponent_params"]) == 0.0
    mid = _next_round(st, cfg, 2)
    assert (float(mid["opponent_params"]), float(mid["anchor_params"])) == (3.0, 0.0)
    end = _next_round(st, cfg, 4)
    assert (float(end["opponent_params"]), float(end["anchor_params"])) == (3.0, 3.0)
    with pytest.raises(Exception, match="round_length"):
        run_llm({"mode": "pref", "seed": 0, "round_length": 1, "loss": {"name": "nash_mp"}, "model": {},
                 "task": {"name": "sort_letters"}, "noise": "none", "batch_size": 8, "dataset_size": 64}, tmp_path)


@pytest.mark.slow
def test_llm_resume_continues_exactly(tmp_path):
    cfg = {
        "mode": "pref", "seed": 0, "iterations": 8, "lr": 1e-3, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "batch_size": 8, "num_candidates": 4, "dataset_size": 64, "noise": "flip:0.2", "eval_prompts": 16,
        "eval_every": 4, "log_every": 1, "checkpoint_every": 4, "init_from": None, "resume": False,
        "compilation_cache": False, "progress": False, "anchor": "moving", "round_length": 3,
        "task": {"name": "sort_letters", "kwargs": {}},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64},
        "loss": {"name": "adpo_list", "tau": 10.0, "beta_r": 0.1},
    }
    full = run_llm(cfg, tmp_path / "full")
    run_llm({**cfg, "iterations": 4}, tmp_path / "part")
    resumed = run_llm({**cfg, "resume": True}, tmp_path / "part")
    rows = lambda d: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(tmp_path / "part") == rows(tmp_path / "full")
    assert resumed["test_true_reward"] == full["test_true_reward"]
    # resuming a completed run (resume=auto, as a sweep would) says so and changes nothing
    files = {f: f.read_bytes() for f in (tmp_path / "full").rglob("*") if f.is_file()}
    again = run_llm({**cfg, "resume": "auto"}, tmp_path / "full")
    assert again == json.loads((tmp_path / "full" / "summary.json").read_text())
    assert {f: f.read_bytes() for f in (tmp_path / "full").rglob("*") if f.is_file()} == files


@pytest.mark.slow
def test_fg_expo_curriculum_prefers_prompts_near_half_success():
    task = ParityLock()
    settings = T.RLSettings(num_prompts=4, num_generations=4, loss="fg_expo", curriculum_pool=16, curriculum_sigma=0.1)
    opt = optax.adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), MICRO)
    hp = {"beta": jnp.float32(0.04), "epsilon": jnp.float32(0.2), "epsilon_high": jnp.float32(0.2)}
    it = jax.jit(T.make_rl_iteration(task, MICRO, settings, {"use_ref": True}, opt))
    # prompts 0-3 sit at p̂ = 0.5, the rest are solved or hopeless: the curriculum picks 0-3
    p_hat = jnp.concatenate([jnp.full(4, 0.5), jnp.full(6, 1.0), jnp.zeros(6)])
    _, _, m, p_new = it(params, opt.init(params), params, jax.random.PRNGKey(3), hp, jnp.float32(1.0), p_hat)
    changed = np.nonzero(np.asarray(p_new) != np.asarray(p_hat))[0]
    assert set(changed.tolist()) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(np.asarray(p_new)[4:], np.asarray(p_hat)[4:])


@pytest.mark.slow
def test_same_seed_gives_the_same_trajectory_whatever_the_run_length(tmp_path):
    """Iteration i's key is fold_in(seed key, i + 1), the learning rate is constant and EPO's phase is
    the only thing that reads the run length: a 2-iteration run is the first 2 iterations of a 4-iteration one."""
    cfg = {"mode": "rl", "seed": 3, "iterations": 4, "num_prompts": 4, "num_generations": 4, "eval_prompts": 16,
           "eval_every": 1, "log_every": 1, "checkpoint_every": 100, "compilation_cache": False, "progress": False,
           "task": {"name": "combination_lock", "kwargs": {"levels": [1]}},
           "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64}, "loss": {"name": "grpo"}}
    run_llm(cfg, tmp_path / "long")
    run_llm({**cfg, "iterations": 2}, tmp_path / "short")
    rows = lambda d: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(tmp_path / "long")[:2] == rows(tmp_path / "short")


@pytest.mark.slow
def test_loss_and_gradient_do_not_depend_on_prompt_sharing():
    """``share_prompts=False`` (what the throughput benchmark compares against) computes the same loss."""
    from purejaxrl.llm.sampler import sample

    task = ParityLock()
    params = init_params(jax.random.PRNGKey(0), MICRO)
    batch = task.sample(jax.random.PRNGKey(1), 3)
    comps, mask, logp = sample(params, MICRO, batch.prompts, jax.random.PRNGKey(2), max_new=task.max_new, stop_id=EOS,
                               pad_id=0, num_samples=4)
    d = {"prompts": batch.prompts, "comps": comps, "comp_valid": mask, "mask": mask, "old_logp": logp,
         "rewards": (comps[:, 0] % 2).astype(jnp.float32)}
    hp = {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2}
    lf = T.rl_loss("grpo", hp, 4, task.max_new)
    (l1, _), g1 = jax.value_and_grad(lambda p: lf(p, MICRO, d), has_aux=True)(params)
    (l2, _), g2 = jax.value_and_grad(lambda p: lf(p, MICRO, {**d, "share_prompts": False}), has_aux=True)(params)
    assert float(l1) == pytest.approx(float(l2), rel=1e-4, abs=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_rover_q_values_are_zero_before_the_update_at_any_temperature():
    """ROVER's Q_t = log π_θ − log π_old must vanish at θ = θ_old, also at T ≠ 1 (both at logits / T)."""
    from purejaxrl.llm import losses as L
    from purejaxrl.llm.sampler import sample

    task = ParityLock()
    params = init_params(jax.random.PRNGKey(0), MICRO)
    batch = task.sample(jax.random.PRNGKey(1), 2)
    comps, mask, logp = sample(params, MICRO, batch.prompts, jax.random.PRNGKey(2), max_new=task.max_new, stop_id=EOS,
                               pad_id=0, num_samples=4, temperature=0.7)
    rewards = (comps[:, 0] % 2).astype(jnp.float32)
    d = {"prompts": batch.prompts, "comps": comps, "comp_valid": mask, "mask": mask, "rewards": rewards}
    d["old_logits"] = T._group_logits(params, MICRO, d)
    loss, _ = T.rl_loss("rover", {}, 4, task.max_new, temperature=0.7)(params, MICRO, d)
    r_tilde = np.asarray(L.group_advantages(rewards, 4))
    m = np.asarray(mask, np.float32)
    assert float(loss) == pytest.approx(float((r_tilde[:, None] ** 2 * m).sum() / m.sum()), rel=1e-5)
