"""The host loop: validate, compile, run chunks, log, checkpoint, summarise.

Every run directory gets ``config.yaml``, ``metrics.jsonl`` / ``metrics.csv`` (one row per run and
logged update), ``checkpoints/`` and ``summary.json`` (keys documented in the README).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl.checkpoint import Checkpointer, open_run_dir
from purejaxrl.config import dump_yaml, identity, raise_errors, run_grid, validate
from purejaxrl.errors import ConfigError, TrainingDiverged  # TrainingDiverged re-exported: purejaxrl.experiment.TrainingDiverged
from purejaxrl.logging import MetricsLogger, NullLogger, check_backends
from purejaxrl.sharding import barrier, check_mesh_config, initialize, is_main_process, make_mesh, scale_summary
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

SUMMARY = "summary.json"


def enable_compilation_cache(path: str | None = None) -> None:
    path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser("~/.cache/purejaxrl/jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


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


@dataclass
class RunSetup:
    """What the phases of one training run share (built by :func:`setup`, before anything is written)."""

    cfg: dict
    run_dir: Path
    ckpt_dir: Path
    algo: Any
    runs: list[dict]
    hparams: Any
    keys: jax.Array
    mesh: Any
    trainer: Trainer
    main: bool  # under jax.distributed only process 0 writes files (checkpoints: every process)


@dataclass
class Progress:
    """Where the chunk loop stands: updates done, training seconds, the last evaluation of each run."""

    start: int
    run_seconds: float
    last_evals: dict = field(default_factory=dict)
    diverged: dict | None = None


def run(cfg: dict, run_dir: str | Path | None = None, progress: bool | None = None, overrides: list[str] | None = None,
        **algo_kwargs) -> dict:
    """Train as ``cfg`` says; returns the summary (also written to ``run_dir/summary.json``).

    The host loop, phase by phase: :func:`prepare_run` (validate, check the run directory) →
    :func:`setup` (algorithm, runs, mesh, compiled trainer) → :func:`init_or_restore` → compile
    (a program that cannot be built fails here, before any write) → :func:`write_run_files` →
    :func:`train_chunks` (chunks, host evaluations, logs, checkpoints, progress bar) →
    :func:`summarise` → :func:`finish` (``summary.json``; a divergence raises).  ``algo_kwargs`` go
    to the algorithm's constructor (e.g. ``objective=`` for PPO); ``overrides`` (the command line's)
    are saved as ``overrides.yaml``.
    """
    cfg, run_dir, ckpt_dir, resuming = prepare_run(
        cfg, run_dir, lambda c: (validate(c), check_backends(c.get("logger") or {})), "outputs/run")
    s = setup(cfg, run_dir, ckpt_dir, **algo_kwargs)
    state, prog = init_or_restore(s, resuming)
    if state is None:  # a completed run: nothing to do
        return json.loads((run_dir / SUMMARY).read_text())
    s.trainer.compile_chunk(state, s.hparams, prog.start)
    write_run_files(s, overrides)  # everything is checked: from here on the run directory is written
    prog = train_chunks(s, state, prog, progress)
    summary = summarise(s, prog)
    finish(s, summary, prog)
    return summary


def setup(cfg: dict, run_dir: Path, ckpt_dir: Path, **algo_kwargs) -> RunSetup:
    algo = build_algorithm(cfg, **algo_kwargs)
    raise_errors(algo.scale_errors(jax.process_count()))
    runs, hparams, seeds = run_grid(cfg, algo.HPARAMS, algo.grid_axes())
    hparams = batch_hparams(algo, hparams, len(runs))
    per_seed = len(runs) // cfg["num_seeds"]  # vmapped hyperparameter values per seed
    mesh = make_mesh(cfg, len(runs), "runs", ("num_seeds", cfg["num_seeds"], per_seed, 1))  # None: one device
    trainer = Trainer(algo, len(runs), cfg["chunks"], mesh=mesh)
    hparams = trainer.place.runs_tree(hparams)  # placed once: every chunk reuses them
    keys = jnp.stack([jax.random.PRNGKey(int(x)) for x in seeds])
    return RunSetup(cfg, run_dir, ckpt_dir, algo, runs, hparams, keys, mesh, trainer, is_main_process())


def init_or_restore(s: RunSetup, resuming: bool):
    """``(state, progress)``: a fresh state, or the latest checkpoint's; ``(None, ...)`` when the run
    already completed."""
    if not resuming:
        return s.trainer.init(s.keys, s.hparams), Progress(0, 0.0)
    ckpt = Checkpointer(s.ckpt_dir)
    try:
        state, meta = ckpt.restore(s.trainer.abstract_state(s.keys, s.hparams), identity(s.cfg),
                                   eval_rng=lambda: s.trainer.eval_keys(s.keys))
    finally:
        ckpt.close()
    prog = Progress(int(meta["update"]), float(meta.get("run_seconds", 0.0)))
    if (s.algo.host_eval and prog.start < s.trainer.num_updates
            and (prog.start % s.trainer.eval_every) % s.trainer.updates_per_chunk):
        raise ConfigError(f"cannot resume {s.run_dir} at update {prog.start}: with chunks={s.cfg['chunks']} its chunks of "
                          f"{s.trainer.updates_per_chunk} updates would pass the evaluations at multiples of "
                          f"{s.trainer.eval_every}; resume with the chunks value the run was started with")
    if prog.start >= s.trainer.num_updates and (s.run_dir / SUMMARY).exists():
        print(f"{s.run_dir} already completed all {s.trainer.num_updates} updates; nothing to do")
        return None, prog
    print(f"resuming {s.run_dir} from update {prog.start}/{s.trainer.num_updates}")
    return state, prog


def write_run_files(s: RunSetup, overrides: list[str] | None) -> None:
    s.run_dir.mkdir(parents=True, exist_ok=True)
    if s.main:
        dump_yaml(s.cfg, s.run_dir / "config.yaml")
        if overrides is not None:
            dump_yaml(overrides, s.run_dir / "overrides.yaml")


def train_chunks(s: RunSetup, state, prog: Progress, progress: bool | None) -> Progress:
    """The compiled chunks, each followed on the host by the algorithm's host evaluation (if any),
    the divergence check, the log rows, a checkpoint and the progress bar."""
    algo, trainer, runs, spu = s.algo, s.trainer, s.runs, s.algo.units_per_update
    logger_cfg = s.cfg.get("logger") or {}
    logger = (MetricsLogger(s.run_dir, runs, logger_cfg, resume_update=prog.start, project_cfg=identity(s.cfg))
              if s.main else NullLogger(runs))
    prog.last_evals = {k: logger.last_values(k)
                       for k in sorted({k for row in logger.kept for k in row if k.startswith("eval_")} | {"eval_return"})}
    ckpt = Checkpointer(s.ckpt_dir)
    bar = None
    if (logger_cfg.get("progress", True) if progress is None else progress) and s.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.num_updates * spu, initial=prog.start * spu, unit=algo.unit, unit_scale=True,
                   dynamic_ncols=True, mininterval=1.0)
    chunks_done, stop_after = 0, s.cfg.get("stop_after_chunks")
    try:
        while prog.start < trainer.num_updates:
            compiled_before = trainer.compile_seconds
            t0 = time.perf_counter()
            state, metrics, finite = trainer.chunk(state, s.hparams, prog.start, with_finite=True)
            dt = time.perf_counter() - t0 - (trainer.compile_seconds - compiled_before)
            prog.run_seconds += dt
            n = min(trainer.updates_per_chunk, trainer.num_updates - prog.start)
            prog.diverged = _first_divergence(metrics, finite, n, prog.start, runs)
            if prog.diverged:
                break  # nothing of this chunk is kept: the last good checkpoint and its rows stay the latest
            _add_host_evaluation(algo, state, trainer, metrics, n, prog.start + n, bar, s.hparams)
            _remember_evaluations(prog.last_evals, metrics, n)
            logger.log_chunk(prog.start, metrics, spu, trainer.num_updates)
            prog.start += n
            chunks_done += 1
            ckpt.save(prog.start, state, {"identity": identity(s.cfg), "update": prog.start, "run_seconds": prog.run_seconds})
            if bar is not None:
                _show(bar, algo, metrics, n, dt, len(runs), prog.last_evals["eval_return"])
            if stop_after and chunks_done >= stop_after and prog.start < trainer.num_updates:
                print(f"stopping after {chunks_done} chunk(s) at update {prog.start}; "
                      f"resume with resume=true run_dir={s.run_dir}")
                break
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        ckpt.close()
    return prog


def _add_host_evaluation(algo, state, trainer, metrics: dict, n: int, update: int, bar=None, hparams=None) -> None:
    """Evaluations made between chunks (``Algorithm.host_evaluate``): at the chunk's last update,
    the progress bar saying so while they run."""
    if not algo.host_eval:
        return
    width = next(iter(metrics.values())).shape[1]
    if update % trainer.eval_every and update < trainer.num_updates:  # a chunk between evaluations: a
        for k in algo.host_evaluation_keys():                          # checkpoint only, the columns kept
            metrics[k] = np.full((trainer.num_runs, width), np.nan, np.float32)
        return
    if bar is not None:
        bar.set_description_str(algo.evaluation_label(trainer.num_runs), refresh=True)
    try:
        evaluations = algo.host_evaluate(state, trainer.batched, update, hparams)
    finally:
        if bar is not None:
            bar.set_description_str("", refresh=True)
    for k, v in evaluations.items():
        metrics[k] = np.full((trainer.num_runs, width), np.nan, np.float32)
        metrics[k][:, n - 1] = v


def _remember_evaluations(last_evals: dict, metrics: dict, n: int) -> None:
    """Per run, the latest non-NaN value of every ``eval_*`` metric."""
    for k in (k for k in metrics if k.startswith("eval_")):
        ev = metrics[k][:, :n]
        last = last_evals.setdefault(k, np.full(ev.shape[0], np.nan))
        for r in range(ev.shape[0]):
            seen = ev[r][~np.isnan(ev[r])]
            if seen.size:
                last[r] = seen[-1]


def _show(bar, algo, metrics: dict, n: int, dt: float, num_runs: int, last_eval: np.ndarray) -> None:
    spu = algo.units_per_update
    bar.update(n * spu)
    post = {f"{algo.unit}s/s": f"{n * spu * num_runs / max(dt, 1e-9):,.0f}"}
    if "episode_return" in metrics:
        ret = metrics["episode_return"][:, :n]
        post["return"] = f"{np.nanmean(ret[:, -1]) if not np.isnan(ret[:, -1]).all() else float('nan'):.1f}"
    post["eval"] = f"{np.nanmean(last_eval):.1f}" if not np.isnan(last_eval).all() else "-"
    bar.set_postfix(post, refresh=True)


def summarise(s: RunSetup, prog: Progress) -> dict:
    algo, trainer, runs, start = s.algo, s.trainer, s.runs, prog.start
    last_eval = prog.last_evals["eval_return"]
    completed = start >= trainer.num_updates
    env_steps = start * algo.units_per_update
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
        "run_seconds": prog.run_seconds,
        "env_steps_per_second": env_steps * len(runs) / prog.run_seconds if prog.run_seconds > 0 else None,
        "algo": s.cfg["algo"]["name"],
        "env": s.cfg["env"]["name"],
    }
    evals = start // trainer.eval_every + int(completed and trainer.num_updates % trainer.eval_every != 0)
    summary.update(algo.summary_fields(start, evals, len(runs), prog.run_seconds))  # e.g. offline: gradient steps
    others = {k: v for k, v in prog.last_evals.items() if k != "eval_return"}
    if others:  # e.g. success rate, and per guidance weight
        summary["final_eval"] = {k: {"mean": _f(np.nanmean(v)) if not np.isnan(v).all() else None,
                                     "per_seed": [_f(x) for x in v]} for k, v in others.items()}
    if prog.diverged:
        summary["diverged"] = prog.diverged
    summary.update(scale_summary(s.mesh))
    return summary


def finish(s: RunSetup, summary: dict, prog: Progress) -> None:
    if s.main:
        (s.run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    d = prog.diverged
    if d:
        kept = f"the last good checkpoint (update {prog.start}) is kept" if prog.start else "no checkpoint was saved"
        raise TrainingDiverged(
            f"run {d['run']} (seed {d['seed']}) in {s.run_dir} diverged: {d['metric']} is not finite "
            f"at update {d['update']}; stopped at the end of that chunk, {kept}. "
            "Lower algo.lr (or algo.max_grad_norm) and start a new run_dir"
        )


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
