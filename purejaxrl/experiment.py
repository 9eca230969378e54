"""The host loop: validate, compile, run chunks, log, checkpoint, summarise.

Every run directory gets ``config.yaml``, ``metrics.jsonl`` / ``metrics.csv`` (one row per run and
logged update), ``checkpoints/`` and ``summary.json`` (keys documented in the README).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl.checkpoint import Checkpointer, open_run_dir
from purejaxrl.config import ConfigError, dump_yaml, identity, raise_errors, run_grid, validate
from purejaxrl.logging import MetricsLogger, NullLogger, check_backends
from purejaxrl.sharding import barrier, check_mesh_config, initialize, is_main_process, make_mesh, scale_summary
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

SUMMARY = "summary.json"


def enable_compilation_cache(path: str | None = None) -> None:
    path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser("~/.cache/purejaxrl/jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


from purejaxrl.errors import TrainingDiverged  # noqa: E402  (re-exported)


# Metrics that are NaN by design (no episode ended, no evaluation in that update).
MAY_BE_NAN = ("episode_return", "episode_length", "eval_return")


def prepare_run(cfg: dict, run_dir, validate_fn, default: str):
    """What every host loop (train, meta, llm) does first: put ``run_dir`` into the config,
    validate it, start ``jax.distributed`` when asked, quieten orbax, check the run directory
    (:func:`open_run_dir`; every process has checked before any writes) and turn on the
    persistent compilation cache.  Returns ``(cfg, run_dir, checkpoint_dir, resuming)``."""
    if run_dir is not None:
        cfg = {**cfg, "run_dir": str(run_dir)}
    raise_errors(check_mesh_config(cfg))
    initialize(cfg)
    validate_fn(cfg)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    run_dir, ckpt_dir, resuming = open_run_dir(cfg, default)
    barrier("run_dir_checked")
    if cfg.get("compilation_cache", True):
        enable_compilation_cache()
    return cfg, run_dir, ckpt_dir, resuming


def run(cfg: dict, run_dir: str | Path | None = None, progress: bool | None = None, overrides: list[str] | None = None,
        **algo_kwargs) -> dict:
    """Train as ``cfg`` says; returns the summary (also written to ``run_dir/summary.json``).

    ``algo_kwargs`` go to the algorithm's constructor (e.g. ``objective=`` for PPO); ``overrides``
    (the command line's, from the CLI) are saved as ``overrides.yaml``.  Every check
    (config, environment, run directory, checkpoint compatibility) happens before anything is
    compiled or written.
    """
    cfg, run_dir, ckpt_dir, resuming = prepare_run(
        cfg, run_dir, lambda c: (validate(c), check_backends(c.get("logger") or {})), "outputs/run")
    logger_cfg = cfg.get("logger") or {}

    algo = build_algorithm(cfg, **algo_kwargs)
    runs, hparams, seeds = run_grid(cfg, algo.HPARAMS)
    hparams = batch_hparams(algo, hparams, len(runs))
    per_seed = len(runs) // cfg["num_seeds"]  # vmapped hyperparameter values per seed
    mesh = make_mesh(cfg, len(runs), "runs", ("num_seeds", cfg["num_seeds"], per_seed, 1))  # None: one device
    trainer = Trainer(algo, len(runs), cfg["chunks"], mesh=mesh)
    hparams = trainer.place.runs_tree(hparams)  # placed once: every chunk reuses them
    main = is_main_process()  # under jax.distributed only process 0 writes files (checkpoints: every process)
    if getattr(algo, "host_eval", False) and jax.process_count() > 1:
        raise ConfigError(f"env={cfg['env']['name']} is evaluated on the host (MuJoCo outside the compiled program), "
                          "which runs in one process; drop distributed.* (a single process may still use mesh.devices)")
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    spu = algo.units_per_update

    start, prior_seconds = 0, 0.0
    if resuming:
        ckpt = Checkpointer(ckpt_dir)
        try:
            state, meta = ckpt.restore(trainer.abstract_state(keys, hparams), identity(cfg),
                                       eval_rng=trainer.eval_keys(keys))
        finally:
            ckpt.close()
        start, prior_seconds = int(meta["update"]), float(meta.get("run_seconds", 0.0))
        if start >= trainer.num_updates and (run_dir / SUMMARY).exists():
            print(f"{run_dir} already completed all {trainer.num_updates} updates; nothing to do")
            return json.loads((run_dir / SUMMARY).read_text())
        print(f"resuming {run_dir} from update {start}/{trainer.num_updates}")
    else:
        state = trainer.init(keys, hparams)
    trainer.compile_chunk(state, hparams, start)  # a program that cannot be built fails here, before any write
    # Everything is checked: from here on the run directory is written.
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        dump_yaml(cfg, run_dir / "config.yaml")
        if overrides is not None:
            dump_yaml(overrides, run_dir / "overrides.yaml")
    ckpt = Checkpointer(ckpt_dir)
    logger = (MetricsLogger(run_dir, runs, logger_cfg, resume_update=start, project_cfg=identity(cfg)) if main
              else NullLogger(runs))
    last_eval = logger.last_values("eval_return")
    last_evals = {k: logger.last_values(k) for k in sorted({k for row in logger.kept for k in row if k.startswith("eval_")})}
    last_evals["eval_return"] = last_eval

    show = (logger_cfg.get("progress", True) if progress is None else progress) and main
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.num_updates * spu, initial=start * spu, unit=algo.unit, unit_scale=True,
                   dynamic_ncols=True, mininterval=1.0)

    run_seconds, chunks_done = prior_seconds, 0
    stop_after = cfg.get("stop_after_chunks")
    diverged = None
    try:
        while start < trainer.num_updates:
            compiled_before = trainer.compile_seconds
            t0 = time.perf_counter()
            state, metrics, finite = trainer.chunk(state, hparams, start, with_finite=True)
            dt = time.perf_counter() - t0 - (trainer.compile_seconds - compiled_before)
            run_seconds += dt
            n = min(trainer.updates_per_chunk, trainer.num_updates - start)
            diverged = _first_divergence(metrics, finite, n, start, runs)
            if diverged:
                break  # nothing of this chunk is kept: the last good checkpoint and its rows stay the latest
            if getattr(algo, "host_eval", False):  # envs stepped on the host: evaluated at the chunk's last update
                width = next(iter(metrics.values())).shape[1]
                for k, v in algo.host_evaluate(state, trainer.batched, start + n).items():
                    metrics[k] = np.full((len(runs), width), np.nan, np.float32)
                    metrics[k][:, n - 1] = v
            for k in (k for k in metrics if k.startswith("eval_")):
                ev, last = metrics[k][:, :n], last_evals.setdefault(k, np.full(len(runs), np.nan))
                for r in range(len(runs)):
                    seen = ev[r][~np.isnan(ev[r])]
                    if seen.size:
                        last[r] = seen[-1]
            logger.log_chunk(start, metrics, spu, trainer.num_updates)
            start += n
            chunks_done += 1
            ckpt.save(start, state, {"identity": identity(cfg), "update": start, "run_seconds": run_seconds})
            if bar is not None:
                ret = metrics.get("episode_return", np.full((len(runs), n), np.nan))[:, :n]
                bar.update(n * spu)
                post = {f"{algo.unit}s/s": f"{n * spu * len(runs) / max(dt, 1e-9):,.0f}"}
                if "episode_return" in metrics:
                    post["return"] = f"{np.nanmean(ret[:, -1]) if not np.isnan(ret[:, -1]).all() else float('nan'):.1f}"
                post["eval"] = f"{np.nanmean(last_eval):.1f}" if not np.isnan(last_eval).all() else "-"
                bar.set_postfix(post, refresh=True)
            if stop_after and chunks_done >= stop_after and start < trainer.num_updates:
                print(f"stopping after {chunks_done} chunk(s) at update {start}; resume with resume=true run_dir={run_dir}")
                break
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        ckpt.close()

    completed = start >= trainer.num_updates
    env_steps = start * spu
    summary = {
        "final_return": {
            "mean": _f(np.nanmean(last_eval)) if not np.isnan(last_eval).all() else None,
            "std": _f(np.nanstd(last_eval)) if not np.isnan(last_eval).all() else None,
            "per_seed": [_f(x) for x in last_eval],
        },
        "runs": runs,
        "completed": completed,
        "updates": start,
        "env_steps": env_steps,
        "total_env_steps": env_steps * len(runs),
        "compile_seconds": trainer.compile_seconds,
        "run_seconds": run_seconds,
        "env_steps_per_second": env_steps * len(runs) / run_seconds if run_seconds > 0 else None,
        "algo": cfg["algo"]["name"],
        "env": cfg["env"]["name"],
    }
    if algo.unit == "update":  # offline: the budget is gradient steps; no environment steps were taken
        evals = start // trainer.eval_every + int(completed and trainer.num_updates % trainer.eval_every != 0)
        summary.update({"env_steps": 0, "total_env_steps": 0, "env_steps_per_second": None, "gradient_steps": start,
                        "gradient_steps_per_second": start * len(runs) / run_seconds if run_seconds > 0 else None,
                        "evaluation_episodes_per_run": evals * algo.episodes_per_evaluation})
        if getattr(algo, "host_eval", False) and algo.eval_seconds > 0:
            # MuJoCo steps and policy calls of the host evaluations of this process (env builds and compiles excluded)
            summary["evaluation_env_steps_per_second"] = algo.eval_env_steps / algo.eval_seconds
    others = {k: v for k, v in last_evals.items() if k != "eval_return"}
    if others:  # e.g. success rate, and per guidance weight
        summary["final_eval"] = {k: {"mean": _f(np.nanmean(v)) if not np.isnan(v).all() else None,
                                     "per_seed": [_f(x) for x in v]} for k, v in others.items()}
    if diverged:
        summary["diverged"] = diverged
    summary.update(scale_summary(mesh))
    if main:
        (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    if diverged:
        kept = f"the last good checkpoint (update {start}) is kept" if start else "no checkpoint was saved"
        raise TrainingDiverged(
            f"run {diverged['run']} (seed {diverged['seed']}) in {run_dir} diverged: {diverged['metric']} is not finite "
            f"at update {diverged['update']}; stopped at the end of that chunk, {kept}. "
            "Lower algo.lr (or algo.max_grad_norm) and start a new run_dir"
        )
    return summary


def _first_divergence(metrics: dict, finite: np.ndarray, n: int, start: int, runs: list[dict]) -> dict | None:
    """The first run whose metrics (other than :data:`MAY_BE_NAN`) or parameters are not finite in
    the first ``n`` updates of a chunk, with the update and the metric (array checks: one pass per
    chunk, whatever the number of runs)."""
    names = [k for k in metrics if k not in MAY_BE_NAN and not k.startswith("eval_")]
    bad = np.stack([~np.isfinite(metrics[k][:, :n]) for k in names]) if names else np.zeros((0, len(runs), n), bool)
    for r in np.flatnonzero(bad.any(axis=(0, 2)) | ~np.asarray(finite, bool)):
        info = {"run": int(r), "seed": runs[r]["seed"]}
        hits = bad[:, r, :]  # [metric, update]
        if hits.any():
            j = int(np.argmax(hits.any(axis=0)))
            return {**info, "update": start + j + 1, "metric": names[int(np.argmax(hits[:, j]))]}
        return {**info, "update": start + n, "metric": "parameters"}
    return None


def _f(x):
    x = float(x)
    return None if np.isnan(x) else x
