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


@pytest.mark.slow  # over 20 s with cold caches on 2 cores
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


@pytest.mark.slow
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

    def record(task, cfg, num_prompts, key):  # run_llm builds three: progress, test, validation
        seen.append(np.asarray(key))
        if len(seen) % 3 == 0:
            raise Stop
        return lambda params: {}

    monkeypatch.setattr(T, "make_eval", record)
    base = ["mode=rl", "task=combination_lock", "model=tiny", "iterations=1", "num_prompts=2", "num_generations=2"]
    for loss, seed in (("grpo", 0), ("garl", 0), ("grpo", 1)):
        with pytest.raises(Stop):
            run_llm(compose(base + [f"loss={loss}", f"seed={seed}"], CONF_DIR / "llm"), tmp_path / f"{loss}{seed}")
    runs = [seen[i:i + 3] for i in (0, 3, 6)]
    for a, b in zip(runs[0], runs[1]):  # another loss on the same seed: the same prompts in every stream
        np.testing.assert_array_equal(a, b)
    for a, b in zip(runs[0], runs[2]):  # another seed: other prompts
        assert not np.array_equal(a, b)
    base0 = evalkeys.for_seed(0)
    for got, stream in zip(runs[0], ("progress", "test", "validation")):
        np.testing.assert_array_equal(got, evalkeys.stream(base0, stream, 0))
    seen[2] = seen[6]  # compare seed 0's and seed 1's test prompts below
    seen[0] = runs[0][1]
    monkeypatch.undo()
    task = make_task("combination_lock")
    from purejaxrl.llm.model import ModelConfig
    from purejaxrl.llm.tasks import VOCAB

    mcfg = ModelConfig(vocab_size=len(VOCAB), max_len=task.prompt_len + task.max_new, d_model=16, n_layers=1, n_heads=2,
                       d_mlp=32)
    p0 = T.make_eval(task, mcfg, 16, jnp.asarray(seen[0])).batch.prompts
    p1 = T.make_eval(task, mcfg, 16, jnp.asarray(seen[2])).batch.prompts
    assert not np.array_equal(p0, p1)


@pytest.mark.slow
def test_qgf_host_evaluation_seeds_per_run_shared_by_weights(monkeypatch):
    from envs import ogbench

    cfg = compose(["algo=qgf", "env=ogbench_cube_single", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]",
                   "algo.guidance_weights=[0,0.1]", "algo.flow_steps=2"])
    algo = build_algorithm(cfg)
    runs, hp, _ = run_grid({**cfg, "num_seeds": 2}, algo.HPARAMS)
    state = jax.vmap(algo.init, in_axes=(0, None))(jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]),
                                                   {k: jnp.float32(v[0]) for k, v in hp.items()})
    got = {}

    def fake_run(self, act, shape, chunk, reset_seeds, policy_keys, tasks=None):
        got["seeds"], got["keys"] = np.asarray(reset_seeds), np.asarray(policy_keys)
        obs = np.zeros(shape[:2] + (1, 28), np.float32)
        got["actions"] = np.asarray(act(obs, np.asarray(policy_keys)[:, None]))  # [R, W, 1, H·A]
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    monkeypatch.setattr(ogbench.HostEvaluator, "run", fake_run)
    monkeypatch.setattr(ogbench.HostEvaluator, "prepare", lambda self, shape, tasks=None: None)
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


@pytest.mark.slow
def test_qgf_in_program_weights_share_the_episodes():
    """Every guidance weight of a run is evaluated on the same start states and flow noise: two equal
    weights give equal results; another key gives other episodes."""
    cfg = compose(["algo=qgf", "env=pendulum", "algo.actor_hidden=[8]", "algo.critic_hidden=[8]",
                   "algo.flow_steps=2", "algo.chunk=1", "+env.kwargs.max_steps_in_episode=20"])
    algo = build_algorithm(cfg)
    hp = {k: jnp.float32(cfg["algo"][k]) for k in algo.HPARAMS}
    state = algo.init(jax.random.PRNGKey(0), hp)
    ev = jax.jit(lambda s, k: algo.evaluate_weights(s, k, 4, [0.5, 0.5, 0.0]))
    k0 = evalkeys.progress(state.eval_rng, 3, algo.num_updates)
    ret, _ = ev(state, k0)
    np.testing.assert_array_equal(ret[0], ret[1])
    ret_other, _ = ev(state, evalkeys.progress(evalkeys.for_seed(1), 3, algo.num_updates))
    assert not np.array_equal(ret[0], ret_other[0])


def test_a_checkpoint_from_before_evaluation_keys_still_restores(tmp_path):
    """A state saved without ``eval_rng`` (as before evaluation keys were kept in the state) is
    restored with the keys derived from the runs' seeds."""
    import shutil

    from flax import struct

    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.config import identity
    from purejaxrl.evaluate import load_run
    from purejaxrl.experiment import run

    @struct.dataclass
    class OldPQNState:
        params: object
        opt_state: object
        env_state: object
        obs: jax.Array
        rng: jax.Array

    cfg = compose(TINY_PQN + ["num_seeds=2"])
    run(cfg, tmp_path / "r", progress=False)
    _, state, *_ = load_run(tmp_path / "r")
    ckdir = tmp_path / "r" / "checkpoints"
    ck = Checkpointer(ckdir)
    step, meta = ck.latest_step(), ck.read_meta(ck.latest_step())
    ck.close()
    shutil.rmtree(ckdir)
    ck = Checkpointer(ckdir)
    ck.save(step, OldPQNState(state.params, state.opt_state, state.env_state, state.obs, state.rng), meta)
    ck.close()
    _, restored, *_ = load_run(tmp_path / "r")
    np.testing.assert_array_equal(restored.eval_rng, np.stack([evalkeys.for_seed(0), evalkeys.for_seed(1)]))
    np.testing.assert_array_equal(restored.params["params"]["Dense_0"]["kernel"], state.params["params"]["Dense_0"]["kernel"])
    assert identity(cfg) == meta["identity"]
