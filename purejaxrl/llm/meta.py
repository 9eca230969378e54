"""``purejaxrl llm meta``: evolve a learned token-level objective (:mod:`purejaxrl.llm.learned`) with
ES over populations of small-transformer RL runs.

Per generation: ask evosax for a population of objectives, train ``population × seeds_per_member``
LLM RL runs in one compiled program (:class:`purejaxrl.llm.population.Population`: every member of a
seed on the same prompts and sampler noise), score each member by the mean greedy pass@1 of its runs'
final models on their seeds' validation prompts (``es.fitness``: a key of the evaluation, e.g.
``pass_at_1`` or ``pass_at_1_level3``), tell the ES.  The loop, its files and its held-out
evaluation of the ES mean are :func:`purejaxrl.meta.run.evolve`'s, shared with ``purejaxrl meta``:
``metrics.jsonl`` (a row per generation), ``heldout.jsonl``, ``mean/``, ``best/``, ``selected/`` (each
a directory ``loss=learned loss.path=DIR`` loads), ``checkpoints/``, ``summary.json``, ``plots/``.

Every run starts from a supervised format warm-up (``warmup``: its settings; the answer's format
with random content, which teaches no answer) so that the cold-start task's rewards are rare but not
absent: ``es.warmup_pool`` warm-ups (warm-ups 0 .. pool−1) serve the members' runs, drawn per seed
each generation, and each held-out seed has its own (warm-ups pool, pool + 1, ...), so no held-out run
starts from a model the ES trained on; warm-up w trains with seed 10⁴ + w, so none is the warm-up of
a study's test seed.  Warm-ups are ordinary ``llm sft`` runs under
``run_dir/warmup/`` (reused when present).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from purejaxrl.config import ConfigError, raise_errors, resume_errors
from purejaxrl.llm import learned as LN

LLM_ES_KEYS = {"strategy", "population", "generations", "antithetic", "sigma_init", "sigma_decay", "sigma_limit",
               "lr_init", "lr_decay", "lr_limit", "seeds_per_member", "fitness", "fitness_shaping", "eval_every",
               "eval_seeds", "tasks", "warmup_pool"}
META_ONLY = ("es", "warmup", "stop_after_generations")
WARMUP_KEYS = {"iterations", "lr", "batch_size", "sft_target", "weight_decay", "max_grad_norm"}
WARMUP_SEED0 = 10**4  # warm-up w trains with seed WARMUP_SEED0 + w: never a study's test seed (0, 1, ...)


def inner_config(cfg: dict) -> dict:
    """The ``llm rl`` config every member's run uses (``loss=learned``)."""
    inner = {k: v for k, v in cfg.items() if k not in META_ONLY}
    return {**inner, "mode": "rl", "resume": False, "run_dir": None, "init_from": None, "progress": False}


def validate_llm_meta(cfg: dict) -> None:
    from purejaxrl.llm.run import validate_llm
    from purejaxrl.meta.run import es_errors

    es = cfg.get("es") or {}
    errs = es_errors(es, LLM_ES_KEYS, rl_fitness=False)
    if es.get("tasks", "shared") != "shared":
        errs.append(f"es.tasks={es.get('tasks')!r}: llm meta draws the same seeds for every member (shared)")
    fit = es.get("fitness", "pass_at_1")
    if not isinstance(fit, str) or not (fit == "pass_at_1" or fit.startswith("pass_at_1_level")):
        errs.append(f"es.fitness={fit!r}; valid: pass_at_1 or pass_at_1_levelK (the final model's greedy pass@1 on "
                    "its seed's validation prompts)")
    if not isinstance(es.get("warmup_pool", 1), int) or es.get("warmup_pool", 1) < 1:
        errs.append(f"es.warmup_pool={es.get('warmup_pool')!r} must be an integer >= 1")
    if (cfg.get("loss") or {}).get("name") != "learned":
        errs.append(f"loss={(cfg.get('loss') or {}).get('name')!r}: llm meta evolves a learned objective; use loss=learned "
                    "(loss.init= the special point it starts from)")
    warm = cfg.get("warmup")
    if warm is not None and (not isinstance(warm, dict) or set(warm) - WARMUP_KEYS):
        errs.append(f"warmup={warm!r} must be null (runs start from their seed's initialisation) or a mapping of "
                    f"{', '.join(sorted(WARMUP_KEYS))}")
    elif warm is not None:
        if warm.get("sft_target", "format") != "format":
            errs.append(f"warmup.sft_target={warm['sft_target']!r}: the warm-up teaches the answers' format, not the "
                        "answers (format)")
        for k in ("iterations", "batch_size"):
            if k in warm and (not isinstance(warm[k], int) or isinstance(warm[k], bool) or warm[k] < 1):
                errs.append(f"warmup.{k}={warm[k]!r} must be an integer >= 1")
        for k in ("lr", "weight_decay", "max_grad_norm"):
            if k in warm and warm[k] is not None and (not isinstance(warm[k], (int, float)) or warm[k] < 0):
                errs.append(f"warmup.{k}={warm[k]!r} must be a number >= 0")
    sag = cfg.get("stop_after_generations")
    if sag is not None and (not isinstance(sag, int) or sag < 1):
        errs.append(f"stop_after_generations={sag!r} must be null or an integer >= 1")
    errs += resume_errors(cfg, "llm meta run")
    raise_errors(errs)
    task = cfg.get("task") or {}
    fit_level = fit[len("pass_at_1_level"):] if isinstance(fit, str) and fit.startswith("pass_at_1_level") else ""
    if fit_level:
        from purejaxrl.llm.tasks import make_task

        try:
            levels = make_task(task["name"], **(task.get("kwargs") or {})).levels
        except Exception:  # noqa: BLE001 (the inner validation names the task's problem)
            levels = None
        if levels is not None and (not fit_level.isdigit() or int(fit_level) not in levels):
            raise_errors([f"es.fitness={fit}: task {task.get('name')} has levels {list(levels)}"])
    try:
        validate_llm(inner_config(cfg))
    except ConfigError as e:
        raise ConfigError(str(e).replace("invalid config", "invalid inner llm rl config", 1)) from None


@dataclass(frozen=True)
class LearnedObjective:
    """The ES loop's view of a learned LLM objective: its starting parameters and how a candidate is saved."""

    spec: dict
    params: Any
    spec_file: str = LN.SPEC_FILE

    @property
    def kind(self) -> str:
        return f"learned_{self.spec['kind']} (from {self.spec['init']})"

    def save(self, params, directory, extra: dict | None = None) -> None:
        LN.save(self.spec, params, directory, extra)


class LLMFitness:
    """``fitness(population, key) -> ([P], {"llm": [P]})``: each member's mean ``es.fitness`` over its
    ``seeds_per_member`` runs (NaN when a run's loss or gradient went non-finite: it ranks last)."""

    normalize = False

    def __init__(self, cfg: dict, warmups):
        from purejaxrl.llm.population import Population

        es = cfg["es"]
        self.pop = Population(inner_config(cfg), stream="validation")
        self.population, self.seeds = int(es["population"]), int(es["seeds_per_member"])
        self.key = f"validation_{es.get('fitness', 'pass_at_1')}"
        self.warmups = warmups  # [pool + eval_seeds, ...] starting models, or None
        self.pool = int(es.get("warmup_pool", 8))
        self.work = ("sampled_tokens", self.pop.tokens_per_run * self.population * self.seeds)
        self.seconds = 0.0

    def _starts(self, idx):
        return None if self.warmups is None else jax.tree.map(lambda x: x[np.asarray(idx)], self.warmups)

    def _score(self, out: dict) -> np.ndarray:
        return np.where(out["finite"], out[self.key], np.nan)

    def __call__(self, population, key: jax.Array):
        t = time.perf_counter()
        k_seed, k_start = jax.random.split(key)
        seeds = np.asarray(jax.random.randint(k_seed, (self.seeds,), 0, 2**31 - 1))
        idx = np.asarray(jax.random.randint(k_start, (self.seeds,), 0, self.pool))
        r = self._score(self.pop(population, seeds, self._starts(idx))).mean(1)
        self.seconds = time.perf_counter() - t
        return r, {"llm": r}

    def held_out(self, params, key: jax.Array, seeds: int):
        """The ES mean on ``seeds`` held-out seeds, each from its own held-out warm-up."""
        s = np.asarray(jax.random.randint(key, (seeds,), 0, 2**31 - 1))
        one = jax.tree.map(lambda x: np.asarray(x)[None], params)
        per_seed = self._score(self.pop(one, s, self._starts(self.pool + np.arange(seeds))))[0]
        fit = float(np.mean(per_seed)) if np.isfinite(per_seed).all() else float("nan")
        return fit, {"llm": fit}, {"llm": [float(x) for x in per_seed]}


def warmup_models(cfg: dict, run_dir: Path, count: int):
    """The starting models ``[count, ...]``: the format warm-ups of warm-up seeds ``0 .. count−1``
    (each an ``llm sft`` run under ``run_dir/warmup/seed{w}``, reused when finished), or None."""
    from purejaxrl.llm.population import load_starts
    from purejaxrl.llm.run import run_llm

    warm = cfg.get("warmup")
    if warm is None:
        return None
    dirs = []
    for w in range(count):
        d = run_dir / "warmup" / f"seed{w}"
        if not (d / "summary.json").exists():
            wcfg = {**inner_config(cfg), "mode": "sft", "sft_target": "format", **warm, "seed": WARMUP_SEED0 + w,
                    "eval_every": int(warm.get("iterations", cfg["iterations"])), "log_every": 10,
                    "checkpoint_every": int(warm.get("iterations", cfg["iterations"])), "resume": "auto"}
            wcfg["loss"] = {"name": "grpo"}  # unused by sft; a loss the config accepts
            run_llm(wcfg, d)
        dirs.append(str(d))
    return load_starts(dirs, inner_config(cfg))


def run_llm_meta(cfg: dict, run_dir: str | Path | None = None, progress: bool | None = None,
                 overrides: list[str] | None = None) -> dict:
    """Evolve ``cfg["loss"]`` (``loss=learned``) for ``es.generations`` generations; returns the summary."""
    from purejaxrl.experiment import prepare_run
    from purejaxrl.meta.run import es_identity, evolve

    cfg, run_dir, ckpt_dir, resuming = prepare_run(cfg, run_dir, validate_llm_meta, "outputs/llm_meta/run")
    es = cfg["es"]
    run_dir = Path(run_dir)
    held_out = int(es.get("eval_seeds", 16)) if int(es.get("eval_every", 0)) else 0  # one warm-up per held-out seed
    # the run directory as given (relative stays relative: the warm-ups' configs name no machine's paths)
    warmups = warmup_models(cfg, Path(cfg.get("run_dir") or run_dir), int(es.get("warmup_pool", 8)) + held_out)
    fitness_fn = LLMFitness(cfg, warmups)
    spec = fitness_fn.pop.spec
    params = fitness_fn.pop.initial_objective(jax.random.fold_in(jax.random.PRNGKey(int(cfg["seed"])), 10**6))
    objective = LearnedObjective(spec, params)
    from purejaxrl.llm.run import IDENTITY as RUN_IDENTITY
    from purejaxrl.llm.run import with_defaults, with_later_defaults

    inner = with_later_defaults(with_defaults(inner_config(cfg)))  # every setting that changes an inner run
    identity = {**{k: inner.get(k) for k in RUN_IDENTITY if k != "init_from"}, "iterations": cfg["iterations"],
                "warmup": cfg.get("warmup"), "es": es_identity(es)}
    describe = {"objective": objective.kind, "task": cfg["task"]["name"], "fitness": fitness_fn.key}
    summary = evolve(cfg, run_dir, ckpt_dir, resuming, objective, fitness_fn, identity, describe,
                     progress=progress, overrides=overrides)
    try:
        from purejaxrl.llm.plots import plot_objective

        for name in ("selected", "mean"):
            if (run_dir / name / LN.SPEC_FILE).exists():
                plot_objective(run_dir / name, run_dir / "plots" / f"{name}.png", cfg["task"], G=cfg["num_generations"])
    except ImportError:  # matplotlib is optional
        pass
    return summary
