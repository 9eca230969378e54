"""``purejaxrl eval``: greedy episodes of the policy saved in a run directory, on validation or test
episodes drawn from each run's own evaluation key (independent across seeds, shared by arms on a seed)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from purejaxrl import evalkeys
from purejaxrl.checkpoint import Checkpointer
from purejaxrl.config import ConfigError, argument_parser, identity, read_yaml, run_grid, validate
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

EVAL_SETTINGS = ("guidance_weights", "guidance_weight", "guidance", "num_candidates", "best_of")  # what eval may change


def parse_eval_overrides(items: list[str]) -> dict:
    """``algo.<k>=<yaml value>`` (or ``qgf.<k>``) for the evaluation-only settings :data:`EVAL_SETTINGS`."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        name = key.split(".", 1)[1] if key.startswith(("algo.", "qgf.", "fql.")) else None
        if not sep or name not in EVAL_SETTINGS:
            raise ConfigError(f"{item!r}: eval takes RUN_DIR and evaluation settings algo.<k>=<v> with k in "
                              f"{', '.join(EVAL_SETTINGS)}, e.g. 'algo.guidance_weights=[0,0.01,0.02]'")
        try:
            out[name] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise ConfigError(f"{item!r}: {str(e).splitlines()[0]}") from e
    return out


def load_run(run_dir: str | Path, eval_overrides: dict | None = None):
    """``(algo, state, hparams, runs, cfg)`` of the latest checkpoint in ``run_dir`` (state and
    hyperparameters batched over runs when the run directory holds several); ``eval_overrides``
    change evaluation-only algorithm settings (guidance weights), never what was trained."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); give the run_dir of a purejaxrl train run")
    cfg = read_yaml(cfg_path, "restore it from the run's overrides")
    if not isinstance(cfg, dict) or "algo" not in cfg:
        raise ConfigError(f"{cfg_path} is not a purejaxrl train config (llm runs have no greedy evaluation)")
    if not Checkpointer.exists(run_dir / "checkpoints"):
        raise ConfigError(f"{run_dir} has no checkpoint (checkpoints/ is empty or missing): train it first")
    validate(cfg, check_data=False)  # evaluation needs the policy, not the dataset it was trained on
    ev_cfg = cfg
    if eval_overrides:
        unused = set(eval_overrides) - set(cfg["algo"])
        if unused:
            raise ConfigError(f"{sorted(unused)} are not settings of algo={cfg['algo']['name']}")
        ev_cfg = {**cfg, "algo": {**cfg["algo"], **eval_overrides}}
        ws = eval_overrides.get("guidance_weights")
        if "guidance_weights" in eval_overrides and "guidance_weight" not in eval_overrides:
            if not isinstance(ws, list) or not ws or not all(isinstance(w, (int, float)) for w in ws):
                raise ConfigError(f"algo.guidance_weights={ws!r} must be a non-empty list of numbers, e.g. [0,0.01,0.02]")
            ev_cfg["algo"]["guidance_weight"] = float(ws[0])
        validate(ev_cfg, check_data=False)
    algo = build_algorithm(cfg)
    runs, hparams, seeds = run_grid(cfg, algo.HPARAMS, algo.grid_axes())
    hparams = batch_hparams(algo, hparams, len(runs))
    trainer = Trainer(algo, len(runs), 1, load_data=False)
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        # the policy is what was trained; the dataset it was trained on does not matter to evaluation
        state, _ = ckpt.restore(trainer.abstract_state(keys, hparams), identity(cfg), ignore=("dataset",),
                                eval_rng=lambda: trainer.eval_keys(keys))
    finally:
        ckpt.close()
    if ev_cfg is not cfg:  # the trained state, evaluated with other evaluation-only settings
        algo = build_algorithm(ev_cfg)
    return algo, state, hparams, runs, ev_cfg


def evaluate_run(run_dir: str | Path, num_episodes: int = 32, split: str = "test", index: int = 0,
                 overrides: list[str] | None = None, write: bool = True) -> dict:
    """Greedy returns of every saved policy, in the same env stack as training (offline flow
    policies: return and success per guidance weight, every weight in one compile).

    Episodes come from each run's own evaluation key (:mod:`purejaxrl.evalkeys`, stream ``split``,
    draw ``index``): runs on different seeds see independent episodes; runs on the same seed (other
    hyperparameter values, other algorithms, other guidance weights) see the same ones.  Writes
    ``eval_<split>.json`` into the run directory unless ``write=False``."""
    if num_episodes < 1:
        raise ConfigError(f"--episodes={num_episodes} must be >= 1")
    if split not in ("validation", "test"):
        raise ConfigError(f"--split={split!r}; valid: validation (for choosing), test (for reporting)")
    algo, state, hparams, runs, _ = load_run(run_dir, parse_eval_overrides(overrides or []))
    if hasattr(algo, "evaluate_weights"):
        res = _evaluate_weights(algo, state, hparams, runs, num_episodes, split, index)
    else:
        rets = np.asarray(_for_runs(lambda s, hp, k: algo.greedy_returns(s, hp, k, num_episodes), algo, state, hparams,
                                    len(runs), split, index))
        res = {
            "per_run": [{**r, "mean_return": float(x.mean()), "std_return": float(x.std())} for r, x in zip(runs, rets)],
            "mean": float(rets.mean(1).mean()),
        }
    res.update({"split": split, "index": index, "episodes_per_run": num_episodes})
    if write:
        (Path(run_dir) / f"eval_{split}.json").write_text(json.dumps(res, indent=2))
    return res


def _for_runs(fn, algo, state, hparams, num_runs: int, split: str, index: int):
    """``fn(state, hp, key)`` for every run (vmapped when there are several), each run with the key
    of its own evaluation stream; results ``[runs, ...]``."""
    def one(s, hp):
        return fn(s, hp, evalkeys.stream(algo.eval_key(s), split, index))

    if num_runs > 1:
        return jax.jit(jax.vmap(one))(state, hparams)
    return jax.tree.map(lambda x: x[None], jax.jit(one)(state, jax.tree.map(lambda x: jnp.asarray(x)[0], hparams)))


def _evaluate_weights(algo, state, hparams, runs, num_episodes: int, split: str, index: int) -> dict:
    # [runs, W, episodes]: every weight of a run on the same episodes, each run on its own task
    # (env.kwargs.task=all), one compile for every run and weight
    tasks = np.asarray(hparams["task"]) if "task" in hparams else None
    ret, succ = algo.host_evaluate_weights(state, len(runs) > 1, num_episodes, split, index, tasks)
    ret, succ = np.asarray(ret), np.asarray(succ)
    ws = algo.eval_weights()
    per_w = [{"w": w, "mean_return": float(ret[:, j].mean()), "success_rate": float(succ[:, j].mean()),
              "per_run_success": [float(x) for x in succ[:, j].mean(1)],
              "per_run_return": [float(x) for x in ret[:, j].mean(1)]} for j, w in enumerate(ws)]
    k = ws.index(algo.guidance_weight) if algo.guidance_weight in ws else 0  # the deployed w, as eval_return
    return {"per_weight": per_w, "guidance": algo.name if algo.name == "fql" else algo.guidance,
            "guidance_weight": ws[k],
            "per_run": [{**r, "mean_return": float(ret[i, k].mean()), "std_return": float(ret[i, k].std())}
                        for i, r in enumerate(runs)],
            "mean": float(ret[:, k].mean())}


def eval_main(argv: list[str]) -> None:
    p = argument_parser("purejaxrl eval", __doc__)
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="evaluation settings, e.g. 'algo.guidance_weights=[0,0.01,0.02]'")
    p.add_argument("--episodes", type=int, default=32, help="greedy episodes per run")
    p.add_argument("--split", default="test", choices=("validation", "test"),
                   help="episodes to choose on (validation) or to report (test); disjoint streams of each run's own key")
    p.add_argument("--seed", type=int, default=0, help="which draw of episodes within the split (default 0)")
    a = p.parse_args(argv)
    res = evaluate_run(a.run_dir, a.episodes, a.split, a.seed, a.overrides)
    for r in res.get("per_weight", []):
        print(f"w={r['w']:g}: success {r['success_rate']:.3f}, return {r['mean_return']:.1f}")
    for r in res["per_run"]:
        extra = " ".join(f"{k}={v}" for k, v in r.items() if k.startswith(("algo.", "env.")))
        print(f"run {r['run']} seed {r['seed']} {extra}: {r['mean_return']:.1f} ± {r['std_return']:.1f}")
    print(f"mean greedy return over runs ({a.split} episodes): {res['mean']:.1f}; "
          f"written to {Path(a.run_dir) / f'eval_{a.split}.json'}")
