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

from purejaxrl.checkpoint import Checkpointer
from purejaxrl.config import ConfigError, dump_yaml, identity, run_grid, validate
from purejaxrl.logging import MetricsLogger, check_backends
from purejaxrl.trainer import Trainer, build_algorithm

SUMMARY = "summary.json"


def enable_compilation_cache(path: str | None = None) -> None:
    path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser("~/.cache/purejaxrl/jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run(cfg: dict, run_dir: str | Path | None = None, progress: bool | None = None) -> dict:
    """Train as ``cfg`` says; returns the summary (also written to ``run_dir/summary.json``)."""
    if run_dir is not None:
        cfg = {**cfg, "run_dir": str(run_dir)}
    validate(cfg)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    check_backends(cfg.get("logger") or {})
    run_dir = Path(run_dir or cfg.get("run_dir") or "outputs/run").resolve()
    ckpt_dir = run_dir / "checkpoints"
    resuming = Checkpointer.exists(ckpt_dir)
    if resuming and not cfg.get("resume"):
        raise ConfigError(
            f"run_dir {run_dir} already holds checkpoints; pass resume=true to continue that run "
            "or choose another run_dir (nothing was changed)"
        )
    if cfg.get("compilation_cache", True):
        enable_compilation_cache()
    logger_cfg = cfg.get("logger") or {}

    algo = build_algorithm(cfg)
    runs, hparams, seeds = run_grid(cfg, algo.HPARAMS)
    trainer = Trainer(algo, len(runs), cfg["chunks"])
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    spu = algo.steps_per_update

    ckpt = Checkpointer(ckpt_dir)
    start, prior_seconds = 0, 0.0
    if resuming:
        state, meta = ckpt.restore(trainer.abstract_state(keys, hparams), identity(cfg))
        start, prior_seconds = int(meta["update"]), float(meta.get("run_seconds", 0.0))
        print(f"resuming {run_dir} from update {start}/{trainer.num_updates}")
    else:
        state = trainer.init(keys, hparams)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run_dir / "config.yaml")
    logger = MetricsLogger(run_dir, runs, logger_cfg, resume_update=start, project_cfg=identity(cfg))

    show = logger_cfg.get("progress", True) if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.num_updates * spu, initial=start * spu, unit="step", unit_scale=True, dynamic_ncols=True, mininterval=1.0)

    last_eval = np.full(len(runs), np.nan)
    run_seconds, chunks_done = prior_seconds, 0
    stop_after = cfg.get("stop_after_chunks")
    try:
        while start < trainer.num_updates:
            compiled_before = trainer.compile_seconds
            t0 = time.perf_counter()
            state, metrics = trainer.chunk(state, hparams, start)
            dt = time.perf_counter() - t0 - (trainer.compile_seconds - compiled_before)
            run_seconds += dt
            n = min(trainer.updates_per_chunk, trainer.num_updates - start)
            ev = metrics["eval_return"][:, :n]
            for r in range(len(runs)):
                seen = ev[r][~np.isnan(ev[r])]
                if seen.size:
                    last_eval[r] = seen[-1]
            logger.log_chunk(start, metrics, spu, trainer.num_updates)
            start += n
            chunks_done += 1
            ckpt.save(start, state, {"identity": identity(cfg), "update": start, "run_seconds": run_seconds})
            if bar is not None:
                ret = metrics["episode_return"][:, :n]
                bar.update(n * spu)
                bar.set_postfix(
                    {
                        "steps/s": f"{n * spu * len(runs) / max(dt, 1e-9):,.0f}",
                        "return": f"{np.nanmean(ret[:, -1]) if not np.isnan(ret[:, -1]).all() else float('nan'):.1f}",
                        "eval": f"{np.nanmean(last_eval):.1f}" if not np.isnan(last_eval).all() else "-",
                    },
                    refresh=True,
                )
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
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def _f(x):
    x = float(x)
    return None if np.isnan(x) else x
