"""Evaluation keys on every path: runs on different seeds are evaluated on independent episodes,
arms on the same seed (other hyperparameters, algorithms, objectives, losses, guidance weights,
robustness cells) on the same ones.  A spy in place of the episode runner turns the key it receives
into the reported return, so each path's keys can be read off its own output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxrl import evalkeys
from purejaxrl.config import compose, run_grid
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

TINY_PQN = ["algo=pqn", "algo.total_timesteps=256", "algo.num_envs=4", "algo.num_steps=16", "algo.num_epochs=1",
            "algo.num_minibatches=2", "algo.num_eval_envs=2", "network.hidden_size=8"]
TINY_PPO = ["algo=ppo", "algo.total_timesteps=512", "algo.num_envs=4", "algo.num_steps=16", "algo.num_epochs=1",
            "algo.num_minibatches=2", "algo.num_eval_envs=2", "network.hidden_size=8"]


def key_value(key) -> jax.Array:
    """What the spy reports for a key: a number only that key gives."""
    return jax.random.uniform(key)


def spy_returns(self, state, hp, key, num_envs):  # stands in for Algorithm.greedy_returns
    return jnp.full((num_envs,), key_value(key))


def _train_metrics(overrides, monkeypatch, num_evals=2):
    cfg = compose(overrides)
    algo = build_algorithm(cfg)
    monkeypatch.setattr(type(algo), "greedy_returns", spy_returns)
    runs, hp, seeds = run_grid(cfg, algo.HPARAMS)
    hp = batch_hparams(algo, hp, len(runs))
    tr = Trainer(algo, len(runs), num_evals=num_evals)
    state = tr.init(jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds]), hp)
    state, m = tr.chunk(state, hp, 0)
    return runs, m["eval_return"], algo, state


def test_in_program_greedy_tests(monkeypatch):
    runs, ev, algo, state = _train_metrics(TINY_PQN + ["num_seeds=2", "+vmap.algo.lr=[0.001,0.003]"], monkeypatch)
    assert [(r["seed"], r["algo.lr"]) for r in runs] == [(0, 0.001), (1, 0.001), (0, 0.003), (1, 0.003)]
    done = ~np.isnan(ev[0])
    assert done.sum() == 2  # a test half way and one at the end
    np.testing.assert_array_equal(ev[0], ev[2])  # same seed, other learning rate: the same episodes
    np.testing.assert_array_equal(ev[1], ev[3])
    assert np.all(ev[0][done] != ev[1][done])  # another seed: other episodes
    n = algo.num_updates
    for r, seed in ((0, 0), (1, 1)):
        want = [float(key_value(evalkeys.progress(evalkeys.for_seed(seed), i, n))) for i in np.flatnonzero(done)]
        np.testing.assert_allclose(ev[r][done], want)
    # the key is a function of the seed alone: it never changes while training
    np.testing.assert_array_equal(state.eval_rng[0], evalkeys.for_seed(0))
    # another algorithm with another update count on the same seed: the same final episodes
    _, ev_ppo, algo_ppo, _ = _train_metrics(TINY_PPO + ["num_seeds=2"], monkeypatch)
    assert algo_ppo.num_updates != n
    np.testing.assert_array_equal(ev_ppo[:, -1], ev[:2, -1])


def test_eval_command_validation_and_test_splits(monkeypatch, tmp_path):
    from purejaxrl.algos.pqn import PQN
    from purejaxrl.evaluate import evaluate_run
    from purejaxrl.experiment import run

    cfg = compose(TINY_PQN + ["num_seeds=2", "+vmap.algo.lr=[0.001,0.003]", "logger.progress=false"])
    run(cfg, tmp_path / "r", progress=False)
    monkeypatch.setattr(PQN, "greedy_returns", spy_returns)
    res = {s: evaluate_run(tmp_path / "r", 3, s) for s in ("validation", "test")}
    for split, ev in res.items():
        got = [r["mean_return"] for r in ev["per_run"]]
        assert got[0] == got[2] and got[1] == got[3] and got[0] != got[1]
        assert got[0] == pytest.approx(float(key_value(evalkeys.stream(evalkeys.for_seed(0), split, 0))))
        assert (tmp_path / "r" / f"eval_{split}.json").exists()
    assert res["validation"]["per_run"][0]["mean_return"] != res["test"]["per_run"][0]["mean_return"]
    other = evaluate_run(tmp_path / "r", 3, "test", index=1, write=False)  # another draw of test episodes
    assert other["per_run"][0]["mean_return"] != res["test"]["per_run"][0]["mean_return"]


def test_meta_eval_objectives_share_each_seeds_episodes(monkeypatch):
    from purejaxrl import objectives
    from purejaxrl.algos.ppo import PPO
    from purejaxrl.meta.evaluate import final_returns

    monkeypatch.setattr(PPO, "greedy_returns", spy_returns)
    cfg = compose(TINY_PPO)
    clip = final_returns(cfg, objectives.builtin("clip"), 3)
    dpo = final_returns(cfg, objectives.builtin("dpo"), 3)
    np.testing.assert_array_equal(clip, dpo)
    assert len(set(clip.tolist())) == 3


def test_llm_held_out_prompts_per_seed_shared_by_losses(monkeypatch, tmp_path):
    from purejaxrl.config import CONF_DIR
    from purejaxrl.llm import trainer as T
    from purejaxrl.llm.run import run_llm
    from purejaxrl.llm.tasks import make_task

    seen = []

    class Stop(Exception):
        pass

    def record(task, cfg, num_prompts, key):
        seen.append(np.asarray(key))
        raise Stop

    monkeypatch.setattr(T, "make_eval", record)
    base = ["mode=rl", "task=combination_lock", "model=tiny", "iterations=1", "num_prompts=2", "num_generations=2"]
    for loss, seed in (("grpo", 0), ("garl", 0), ("grpo", 1)):
        with pytest.raises(Stop):
            run_llm(compose(base + [f"loss={loss}", f"seed={seed}"], CONF_DIR / "llm"), tmp_path / f"{loss}{seed}")
    np.testing.assert_array_equal(seen[0], seen[1])
    assert not np.array_equal(seen[0], seen[2])
    np.testing.assert_array_equal(seen[0], evalkeys.stream(evalkeys.for_seed(0), "test", 0))
    monkeypatch.undo()
    task = make_task("combination_lock")
    from purejaxrl.llm.model import ModelConfig
    from purejaxrl.llm.tasks import VOCAB

    mcfg = ModelConfig(vocab_size=len(VOCAB), max_len=task.prompt_len + task.max_new, d_model=16, n_layers=1, n_heads=2,
                       d_mlp=32)
    p0 = T.make_eval(task, mcfg, 16, jnp.asarray(seen[0])).batch.prompts
    p1 = T.make_eval(task, mcfg, 16, jnp.asarray(seen[2])).batch.prompts
    assert not np.array_equal(p0, p1)


def test_qgf_host_evaluation_seeds_per_run_shared_by_weights(monkeypatch):
    from envs import ogbench

    cfg = compose(["algo=qgf", "env=ogbench_cube_single", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]",
                   "algo.guidance_weights=[0,0.1]", "algo.flow_steps=2"])
    algo = build_algorithm(cfg)
    runs, hp, _ = run_grid({**cfg, "num_seeds": 2}, algo.HPARAMS)
    state = jax.vmap(algo.init, in_axes=(0, None))(jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]),
                                                   {k: jnp.float32(v[0]) for k, v in hp.items()})
    got = {}

    def fake_run(self, act, shape, chunk, reset_seeds, policy_keys):
        got["seeds"], got["keys"] = np.asarray(reset_seeds), np.asarray(policy_keys)
        obs = np.zeros(shape[:2] + (1, 28), np.float32)
        got["actions"] = np.asarray(act(obs, policy_keys))  # [R, W, 1, H·A]
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    monkeypatch.setattr(ogbench.HostEvaluator, "run", fake_run)
    monkeypatch.setattr(ogbench.HostEvaluator, "envs", lambda self, n: [])
    algo.host_evaluate_weights(state, True, 3, "test", 0)
    want = [evalkeys.host_seeds(evalkeys.for_seed(s), "test", 0, 3) for s in (0, 1)]
    np.testing.assert_array_equal(got["seeds"], np.stack(want))
    assert not np.array_equal(got["seeds"][0], got["seeds"][1])
    np.testing.assert_array_equal(got["keys"][0], evalkeys.stream(evalkeys.for_seed(0), "test", 0))
    # both weights of a run draw the same flow noise: identical weights would act identically
    algo.weights, algo._host = [0.0, 0.0], None
    algo.host_evaluate_weights(state, True, 3, "test", 0)
    np.testing.assert_array_equal(got["actions"][:, 0], got["actions"][:, 1])
    assert not np.array_equal(got["actions"][0, 0], got["actions"][1, 0])  # but not across runs
