"""Config validation: every problem is caught before compiling, with a message naming the fix."""

import pytest

from purejaxrl.config import ConfigError, compose, first_difference, run_grid, validate


def _err(overrides):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    return str(e.value)


@pytest.mark.slow
def test_default_and_experiment_configs_validate():
    for exp in (None, "pqn_cartpole", "pqn_minatar", "ppo_cartpole", "ppo_brax_hopper"):
        validate(compose([f"experiment={exp}"] if exp else []))
    validate(compose(["algo=ppo", "env=minatar_breakout", "num_seeds=8"]))


def test_minibatches_must_divide_batch():
    msg = _err(["algo.num_minibatches=7"])
    assert "algo.num_minibatches=7" in msg and "2048" in msg and "16" in msg


def test_wrong_type():
    msg = _err(["algo.num_envs=abc"])
    assert "algo.num_envs='abc'" in msg and "integer" in msg
    msg = _err(["algo.lr=fast"])
    assert "algo.lr" in msg and "number" in msg


def test_unknown_algo_key_from_another_algorithm():
    msg = _err(["algo=ppo", "+algo.eps_start=1.0"])
    assert "algo.eps_start is not a ppo setting" in msg


def test_unknown_environment_lists_valid_names():
    msg = _err(["env.name=CartPole-v9"])
    assert "CartPole-v9" in msg and "CartPole-v1" in msg and "brax/hopper" in msg


def test_vmap_only_traced_hyperparameters():
    msg = _err(["vmap.algo.num_envs=[8,16]"])
    assert "vmap.algo.num_envs cannot be vmapped" in msg and "lr" in msg
    msg = _err(["vmap.algo.lr=3"])
    assert "list of numbers" in msg


def test_resume_needs_run_dir_and_counts_must_be_positive():
    assert "resume=true needs run_dir" in _err(["resume=true"])
    assert "num_seeds=0" in _err(["num_seeds=0"])
    assert "total_timesteps" in _err(["algo.total_timesteps=100"])


def test_hydra_rejects_unknown_top_level_keys():
    with pytest.raises(Exception, match="num_seed"):
        compose(["num_seed=3"])


def test_run_grid_orders_combinations_then_seeds():
    cfg = compose(["vmap.algo.lr=[1e-4,1e-3]", "vmap.algo.gamma=[0.9,0.99]", "num_seeds=2", "seed=5"])
    runs, hp, seeds = run_grid(cfg, ("lr", "gamma", "lam"))
    assert len(runs) == 8 and list(seeds) == [5, 6] * 4
    assert hp["lr"].tolist() == pytest.approx([1e-4] * 4 + [1e-3] * 4)
    assert hp["gamma"].tolist() == pytest.approx([0.9, 0.9, 0.99, 0.99] * 2)
    assert hp["lam"].tolist() == pytest.approx([0.95] * 8)
    assert runs[3] == {"run": 3, "seed": 6, "algo.lr": 1e-4, "algo.gamma": 0.99}


def test_first_difference_names_the_field():
    a = {"algo": {"lr": 1e-4, "gamma": 0.99}, "seed": 0}
    assert first_difference(a, {"algo": {"lr": 1e-4, "gamma": 0.99}, "seed": 0}) is None
    assert first_difference(a, {"algo": {"lr": 1e-3, "gamma": 0.99}, "seed": 0}).startswith("algo.lr")
    assert first_difference({"x": 1}, {"x": 1.0}) is None
