"""``purejaxrl eval``: greedy episodes of the policy saved in a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from purejaxrl.checkpoint import Checkpointer
from purejaxrl.config import ConfigError, argument_parser, identity, run_grid, validate
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm


def load_run(run_dir: str | Path):
    """``(algo, state, hparams, runs, cfg)`` of the latest checkpoint in ``run_dir`` (state and
    hyperparameters batched over runs when the run directory holds several)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); give the run_dir of a purejaxrl train run")
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{cfg_path} is not valid YAML ({str(e).splitlines()[0]}); restore it from the run's overrides") from e
    if not isinstance(cfg, dict) or "algo" not in cfg:
        raise ConfigError(f"{cfg_path} is not a purejaxrl train config (llm runs have no greedy evaluation)")
    if not Checkpointer.exists(run_dir / "checkpoints"):
        raise ConfigError(f"{run_dir} has no checkpoint (checkpoints/ is empty or missing): train it first")
    validate(cfg)
    algo = build_algorithm(cfg)
    runs, hparams, seeds = run_grid(cfg, algo.HPARAMS)
    hparams = batch_hparams(algo, hparams, len(runs))
    trainer = Trainer(algo, len(runs), 1)
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        state, _ = ckpt.restore(trainer.abstract_state(keys, hparams), identity(cfg))
    finally:
        ckpt.close()
    return algo, state, hparams, runs, cfg


def evaluate_run(run_dir: str | Path, num_episodes: int = 32, seed: int = 123) -> dict:
    """Greedy returns of every saved policy, in the same env stack as training."""
    if num_episodes < 1:
        raise ConfigError(f"--episodes={num_episodes} must be >= 1")
    algo, state, hparams, runs, _ = load_run(run_dir)

    def one(s, hp, key):
        return algo.greedy_returns(s, hp, key, num_episodes)

    key = jax.random.PRNGKey(seed)
    if len(runs) > 1:
        rets = jax.jit(jax.vmap(one, in_axes=(0, 0, None)))(state, hparams, key)
    else:
        rets = jax.jit(one)(state, jax.tree.map(lambda x: jnp.asarray(x)[0], hparams), key)[None]
    rets = np.asarray(rets)
    return {
        "per_run": [{**r, "mean_return": float(x.mean()), "std_return": float(x.std())} for r, x in zip(runs, rets)],
        "mean": float(rets.mean(1).mean()),
        "episodes_per_run": num_episodes,
    }


def eval_main(argv: list[str]) -> None:
    p = argument_parser("purejaxrl eval", __doc__)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=32, help="greedy episodes per run")
    p.add_argument("--seed", type=int, default=123)
    a = p.parse_args(argv)
    res = evaluate_run(a.run_dir, a.episodes, a.seed)
    for r in res["per_run"]:
        extra = " ".join(f"{k}={v}" for k, v in r.items() if k.startswith("algo."))
        print(f"run {r['run']} seed {r['seed']} {extra}: {r['mean_return']:.1f} ± {r['std_return']:.1f}")
    print(f"mean greedy return over runs: {res['mean']:.1f}")
    (Path(a.run_dir) / "eval.json").write_text(json.dumps(res, indent=2))
