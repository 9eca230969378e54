"""The Algorithm contract's extension points: an objective passed in with pytree parameters that
vmap like any hyperparameter, and an algorithm that trains from a dataset argument."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purejaxrl import evalkeys
from purejaxrl.algos.base import Algorithm
from purejaxrl.config import compose
from purejaxrl.objectives import Objective
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm, default_hparams


def test_objective_passed_in_with_vmapped_pytree_parameters():
    def drift(params, ratio, log_ratio, adv, hp, progress):  # loss −(r·Â − D) = −w·p·r·Â
        return (1.0 - params["w"][0] * progress) * ratio * adv

    obj = Objective("scaled_pg", drift, params={"w": jnp.ones((1,))})
    cfg = compose(["algo=ppo", "algo.num_envs=4", "algo.num_steps=16", "algo.num_minibatches=2",
                   "algo.total_timesteps=192", "algo.num_eval_envs=2", "algo.num_evals=1"])
    algo = build_algorithm(cfg, objective=obj)
    assert algo.objective is obj and default_hparams(cfg, algo)["objective"]["w"].shape == (1,)
    hp = batch_hparams(algo, {k: np.full((2,), cfg["algo"][k], np.float32) for k in algo.HPARAMS}, 2)
    hp["objective"]["w"] = jnp.array([[0.0], [2.0]])  # two members, one compile
    tr = Trainer(algo, 2)
    _, m = tr.chunk(tr.init(jnp.stack([jax.random.PRNGKey(0)] * 2), hp), hp, 0)
    assert len(tr._compiled) == 2  # init and one chunk program serve both members
    np.testing.assert_allclose(m["policy_loss"][0], 0.0, atol=1e-6)  # w = 0 (r·Â − D cancels up to rounding)
    assert abs(m["policy_loss"][1, 0]) < 1e-6  # progress = 0 at the first update
    assert abs(m["policy_loss"][1, 1]) > 1e-4 and abs(m["policy_loss"][1, 2]) > 1e-4  # the traced progress arrived


@struct.dataclass
class _MeanState:
    params: jax.Array
    rng: jax.Array
    eval_rng: jax.Array


class FitMean(Algorithm):
    """Offline toy: SGD on ½‖θ − x‖² over minibatches of a dataset passed as an argument."""

    name = "fit_mean"
    HPARAMS = ("lr",)
    unit = "update"

    def __init__(self, algo_cfg, env_cfg, network_cfg, data):
        super().__init__(algo_cfg, env_cfg, network_cfg)
        self.num_updates = 64
        self._data = data

    def load_data(self):
        return self._data

    def init(self, key, hp, data=None):
        return _MeanState(jnp.zeros(data["x"].shape[1]), key, evalkeys.run_key(key))

    def update(self, state, hp, i, data=None):
        rng, k = jax.random.split(state.rng)
        x = data["x"][jax.random.randint(k, (32,), 0, data["x"].shape[0])]
        grad = (state.params - x).mean(0)
        return state.replace(params=state.params - hp["lr"] * grad, rng=rng), {"loss": 0.5 * ((state.params - x) ** 2).sum(-1).mean()}

    def greedy_action(self, state, obs):
        return jnp.zeros(obs.shape[0], jnp.int32)


def test_algorithm_that_trains_from_a_dataset_argument():
    data = {"x": jax.random.normal(jax.random.PRNGKey(1), (20000, 3)) + jnp.array([1.0, -2.0, 3.0])}
    algo = FitMean({"num_eval_envs": 2}, {"name": "cartpole"}, {}, data)
    tr = Trainer(algo, 2, chunks=2, num_evals=1)
    hp = {"lr": np.full((2,), 0.2, np.float32)}
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    state = tr.init(keys, hp)
    for start in (0, 32):
        state, m = tr.chunk(state, hp, start)
    np.testing.assert_allclose(state.params, np.tile([1.0, -2.0, 3.0], (2, 1)), atol=0.25)
    assert not np.allclose(state.params[0], state.params[1])  # each run drew its own minibatches
    # the dataset is an argument of the compiled chunk, not a constant baked into it
    hlo = tr._chunk.lower(state, hp, jnp.int32(0), data, tr.updates_per_chunk, False).as_text()
    assert len(hlo) < 200_000 and "20000x3" in hlo
