"""Learning results at the reference budget: PQN and PPO solve CartPole-v1 (4 seeds, 5e5 steps)."""

import pytest

from purejaxrl.config import compose
from purejaxrl.experiment import run

pytestmark = pytest.mark.slow  # two 5e5-step trainings: run by .ci/run as its second step


@pytest.mark.parametrize("algo", ["pqn", "ppo"])
def test_solves_cartpole(algo, tmp_path):
    cfg = compose([f"experiment={algo}_cartpole", "num_seeds=4", "chunks=2", "logger.progress=false", "logger.log_every=10"])
    assert cfg["algo"]["total_timesteps"] == 500_000
    summary = run(cfg, tmp_path)
    per_seed = summary["final_return"]["per_seed"]
    assert len(per_seed) == 4
    assert summary["final_return"]["mean"] >= 475, per_seed
