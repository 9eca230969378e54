"""``purejaxrl meta``: evolve a PPO objective (``algo=ppo``: LPO / TA-LPO) or an LPG update rule
(``algo=lpg``: LPG / TA-LPG, :mod:`purejaxrl.meta.evolved`); the host loop runs one generation at a time.

Per generation: ask evosax for a population of parameters, train the inner algorithm with each
(× seeds, one compiled program), tell it the fitness; then log a row, save the ES mean and the best
member (``mean/``, ``best/``: loadable with ``algo.objective=learned algo.objective_path=...``, or
``algo.update_rule=learned algo.update_rule_path=...``) and checkpoint the ES state.
Same run-directory contract as ``train``: ``config.yaml``,
``metrics.jsonl``/``.csv`` (one row per generation), ``checkpoints/``, ``summary.json``.

Every ``es.eval_every`` generations (and before the first, and after the last) the ES *mean* is
trained on ``es.eval_seeds`` held-out seeds — one fixed set, from a key stream the ES never draws
its members' seeds from — and kept as ``mean/gen_NNNN``; ``heldout.jsonl`` records each evaluation
and ``selected/`` holds the mean with the best held-out fitness: the objective a run hands over.
``best/`` (the best single member, a maximum over every noisy member evaluation) is kept for
inspection; its fitness is optimistic by construction.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np

from purejaxrl import objectives
from purejaxrl.checkpoint import Checkpointer
from purejaxrl.config import ConfigError, dump_yaml, raise_errors, resume_errors, validate
from purejaxrl.logging import MetricsLogger, NullLogger
from purejaxrl.meta.es import FITNESS_KINDS, SHAPINGS, TASKS, PopulationFitness, make_strategy
from purejaxrl.meta.evolved import ALGOS, RULES, from_config
from purejaxrl.sharding import Placement, barrier, is_main_process, make_mesh, scale_summary

SUMMARY = "summary.json"
META_KEYS = {"algo", "env", "network", "objective", "es", "seed", "run_dir", "resume", "stop_after_generations",
             "compilation_cache", "progress", "hydra", "mesh", "distributed"}
ES_KEYS = {"strategy", "population", "generations", "antithetic", "sigma_init", "sigma_decay", "sigma_limit",
           "lr_init", "lr_decay", "lr_limit", "seeds_per_member", "envs", "normalize_fitness", "fitness",
           "fitness_shaping", "eval_every", "eval_seeds", "tasks"}
LATER_DEFAULTS = {"fitness": "greedy", "fitness_shaping": "centered_rank", "eval_seeds": 16, "tasks": "shared"}
HELDOUT = "heldout.jsonl"
HELDOUT_STREAM = 10**6 + 3  # fold_in(master, ·): the held-out seeds' stream (the ES draws from fold_in(master, g))
IDENTITY = ("algo", "env", "network", "objective", "es", "seed")


def inner_config(cfg: dict) -> dict:
    """The PPO training config every member's inner run uses (one seed, no vmap)."""
    return {"algo": cfg["algo"], "env": cfg["env"], "network": cfg.get("network") or {}, "logger": {}, "seed": 0,
            "num_seeds": 1, "chunks": 1, "run_dir": None, "resume": False, "vmap": {}, "stop_after_chunks": None,
            "compilation_cache": True}


def es_errors(es: dict, keys, rl_fitness: bool = True) -> list[str]:
    """One line per problem of the ``es`` settings every ``purejaxrl meta`` inner loop shares (keys
    outside ``keys`` are unknown; ``es.fitness`` is checked against the RL kinds when ``rl_fitness``)."""
    errs = [f"es.{k} is not an es setting; valid: {', '.join(sorted(keys))}" for k in sorted(set(es) - set(keys))]
    from evosax import algorithms

    distribution_based = sorted(algorithms.distribution_based_algorithms)
    if es.get("strategy") not in distribution_based:
        errs.append(f"es.strategy={es.get('strategy')!r} is not a distribution-based evosax algorithm (one with a "
                    f"mean to evolve); valid: {', '.join(distribution_based)}")
    pop = es.get("population")
    if not isinstance(pop, int) or pop < 2:
        errs.append(f"es.population={pop!r} must be an integer >= 2")
    elif (es.get("antithetic", True) or es.get("strategy") == "Open_ES") and pop % 2:
        errs.append(f"es.population={pop} must be even for antithetic sampling (pairs ±ε); use {pop + 1} or es.antithetic=false")
    for k in ("generations", "seeds_per_member", "eval_seeds"):
        if not isinstance(es.get(k, 1), int) or es.get(k, 1) < 1:
            errs.append(f"es.{k}={es.get(k)!r} must be an integer >= 1")
    if not isinstance(es.get("eval_every", 0), int) or es.get("eval_every", 0) < 0:
        errs.append(f"es.eval_every={es.get('eval_every')!r} must be an integer >= 0 (0: no held-out evaluation)")
    if rl_fitness and es.get("fitness", "greedy") not in FITNESS_KINDS:
        errs.append(f"es.fitness={es.get('fitness')!r}; valid: {', '.join(FITNESS_KINDS)} (greedy: final greedy return; "
                    "training: the stochastic policy's final training return, LPO's)")
    if es.get("fitness_shaping", "centered_rank") not in SHAPINGS:
        errs.append(f"es.fitness_shaping={es.get('fitness_shaping')!r}; valid: {', '.join(SHAPINGS)}")
    if es.get("tasks", "shared") not in TASKS:
        errs.append(f"es.tasks={es.get('tasks')!r}; valid: {', '.join(TASKS)} (shared: the same seeds for every member; "
                    "per_pair: each antithetic pair its own)")
    for k, v in (("tasks", "per_pair"), ("fitness_shaping", "pairwise")):
        if es.get(k) == v and not (bool(es.get("antithetic", True)) and es.get("strategy") == "Open_ES"):
            errs.append(f"es.{k}={v} pairs members m and m + P/2 (OpenAI-ES's ±ε): needs es.strategy=Open_ES with "
                        "es.antithetic=true")
    for k in ("sigma_init", "lr_init", "sigma_limit", "lr_limit"):
        if not isinstance(es.get(k), (int, float)) or not es[k] > 0:
            errs.append(f"es.{k}={es.get(k)!r} must be a positive number")
    for k in ("sigma_decay", "lr_decay"):
        if not isinstance(es.get(k), (int, float)) or not 0 < es[k] <= 1:
            errs.append(f"es.{k}={es.get(k)!r} must be in (0, 1]")
    for k in ("sigma", "lr"):
        lim, init = es.get(f"{k}_limit"), es.get(f"{k}_init")
        if isinstance(lim, (int, float)) and isinstance(init, (int, float)) and lim > init:
            errs.append(f"es.{k}_limit={lim} is above es.{k}_init={init}: the schedule decays from init down to the limit")
    return errs


def validate_meta(cfg: dict) -> None:
    errs = [f"{k} is not a meta setting; valid: {', '.join(sorted(META_KEYS - {'hydra'}))}" for k in sorted(set(cfg) - META_KEYS)]
    algo = (cfg.get("algo") or {}).get("name")
    es = cfg.get("es") or {}
    if algo not in ALGOS:
        errs.append(f"algo={algo}: meta-evolution evolves PPO's objective or an LPG update rule; use algo=ppo or algo=lpg")
    elif algo == "lpg":
        rule = cfg["algo"].get("update_rule")
        if rule not in RULES:
            errs.append(f"algo.update_rule={rule!r}: meta-evolution evolves a meta-network; valid: {', '.join(RULES)}")
        if es.get("normalize_fitness"):
            errs.append("es.normalize_fitness=true scales returns by PPO-clip's, for algo=ppo; with algo=lpg set "
                        "es.normalize_fitness=false (es.fitness_shaping=pairwise compares members on the same task)")
    else:
        obj = cfg.get("objective") or {}
        if obj.get("kind") not in objectives.LEARNED_KINDS:
            errs.append(f"objective.kind={obj.get('kind')!r}; valid: {', '.join(objectives.LEARNED_KINDS)} (objective=lpo|ta_lpo)")
        if not isinstance(obj.get("hidden"), int) or obj.get("hidden", 0) < 1:
            errs.append(f"objective.hidden={obj.get('hidden')!r} must be an integer >= 1")
    errs += es_errors(es, ES_KEYS)
    envs = es.get("envs")
    if envs is not None:
        import envs as _envs

        if not isinstance(envs, list) or not envs:
            errs.append(f"es.envs={envs!r} must be null or a non-empty list of env names")
        else:
            from envs.registry import missing_extra

            errs += [f"es.envs: {e!r} is not an environment; valid: {', '.join(_envs.list_envs())}" for e in envs
                     if e not in _envs.list_envs()]
            errs += [f"es.envs: {e}: {missing_extra(e)}" for e in envs if missing_extra(e)]
            if len(envs) > 1 and not es.get("normalize_fitness"):
                errs.append("es.envs mixes several envs: set es.normalize_fitness=true (returns on different scales)")
    errs += resume_errors(cfg, "meta run")
    sag = cfg.get("stop_after_generations")
    if sag is not None and (not isinstance(sag, int) or sag < 1):
        errs.append(f"stop_after_generations={sag!r} must be null or an integer >= 1")
    raise_errors(errs)
    try:
        validate(inner_config(cfg))
    except ConfigError as e:
        raise ConfigError(str(e).replace("invalid config", f"invalid inner {algo.upper()} config", 1)) from None


def run_meta(cfg: dict, run_dir: str | Path | None = None, progress: bool | None = None,
             overrides: list[str] | None = None) -> dict:
    """Evolve ``cfg["objective"]`` for ``es.generations`` generations; returns the summary."""
    from purejaxrl.experiment import prepare_run

    cfg, run_dir, ckpt_dir, resuming = prepare_run(cfg, run_dir, validate_meta, "outputs/meta/run")

    es_cfg = cfg["es"]
    master = jax.random.PRNGKey(int(cfg["seed"]))
    objective = from_config(cfg, key=jax.random.fold_in(master, 10**6))
    inner = {**inner_config(cfg), "es": es_cfg}
    seeds = int(es_cfg["seeds_per_member"])

    pairs = es_cfg.get("antithetic", True) or es_cfg.get("strategy") == "Open_ES"  # the population stays even
    mesh = make_mesh(cfg, int(es_cfg["population"]) * seeds, "runs (members × seeds)",
                     ("es.population", int(es_cfg["population"]), seeds, 2 if pairs else 1))
    fitness_fn = PopulationFitness(inner, objective, mesh=mesh)
    # settings added later are left out at their defaults, so runs saved before them still resume
    identity = {**{k: cfg.get(k) for k in IDENTITY}, "es": es_identity(es_cfg)}
    describe = {"objective": objective.kind, "env": cfg["env"]["name"] if not es_cfg.get("envs") else es_cfg["envs"]}
    return evolve(cfg, run_dir, ckpt_dir, resuming, objective, fitness_fn, identity, describe, mesh=mesh,
                  progress=progress, overrides=overrides)


def es_identity(es_cfg: dict) -> dict:
    """The ES settings a resume must match: es.generations may grow on resume (continue a finished run
    for longer) and es.eval_every change (it only says when the mean is evaluated); settings added
    later are left out at their defaults, so runs saved before them still resume."""
    return {k: v for k, v in es_cfg.items() if k not in ("generations", "eval_every")
            and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


def evolve(cfg: dict, run_dir: Path, ckpt_dir: Path, resuming: bool, objective, fitness_fn, identity: dict,
           describe: dict, mesh=None, progress: bool | None = None, overrides: list[str] | None = None) -> dict:
    """The ES loop every ``purejaxrl meta`` inner loop shares (PPO objectives, LPG rules, LLM
    objectives): ``objective`` saves a candidate and holds the starting point; ``fitness_fn(population,
    key) -> (fitness [P], {group: [P]})`` trains the members, ``fitness_fn.held_out(params, key, seeds)``
    the ES mean on held-out seeds; ``fitness_fn.work`` names what one generation computes (``(name,
    count)``, e.g. inner env steps) for the summary's throughput; ``describe`` joins the summary."""
    es_cfg, gens = cfg["es"], int(cfg["es"]["generations"])
    master = jax.random.PRNGKey(int(cfg["seed"]))
    main, place = is_main_process(), Placement(mesh)
    strategy = make_strategy(es_cfg, objective.params)
    es_params = strategy.default_params
    eval_every, eval_seeds = int(es_cfg.get("eval_every", 0)), int(es_cfg.get("eval_seeds", 16))
    heldout_key = held_out_key(master)  # the same held-out seeds at every evaluation

    ckpt = Checkpointer(ckpt_dir)
    start, prior_seconds, baselines = 0, 0.0, None
    es_state = strategy.init(jax.random.fold_in(master, 10**6 + 1), objective.params, es_params)
    if resuming:
        try:
            abstract = place.abstract(jax.eval_shape(lambda: es_state), place.replicated)
            es_state, meta = ckpt.restore(abstract, identity)
            es_state = place.local(es_state)
        finally:
            ckpt.close()
        start, prior_seconds, baselines = int(meta["update"]), float(meta["run_seconds"]), meta.get("baselines")
        if start >= gens and (run_dir / SUMMARY).exists() and json.loads((run_dir / SUMMARY).read_text())["completed"]:
            print(f"{run_dir} already completed all {gens} generations; nothing to do")
            return json.loads((run_dir / SUMMARY).read_text())
        print(f"resuming {run_dir} from generation {start}/{gens}")
        if main and (run_dir / SUMMARY).exists():  # a finished run continued for more generations: not
            stale = json.loads((run_dir / SUMMARY).read_text())  # complete until this one writes its summary
            (run_dir / SUMMARY).write_text(json.dumps({**stale, "completed": False}, indent=2))
        ckpt = Checkpointer(ckpt_dir)
    if getattr(fitness_fn, "normalize", False):
        if baselines is None:
            fitness_fn.baselines(jax.random.fold_in(master, 10**6 + 2))
            baselines = {e.name: [e.r_untrained, e.r_clip] for e in fitness_fn.envs}
        for e in fitness_fn.envs:
            e.r_untrained, e.r_clip = baselines[e.name]
    run_dir.mkdir(parents=True, exist_ok=True)
    one_run = [{"run": 0, "seed": cfg["seed"]}]
    if main:  # under jax.distributed only process 0 writes files (checkpoints: every process)
        dump_yaml(cfg, run_dir / "config.yaml")
        if overrides is not None:
            dump_yaml(overrides, run_dir / "overrides.yaml")
    logger = MetricsLogger(run_dir, one_run, {"log_every": 1}, resume_update=start) if main else NullLogger(one_run)
    heldout_rows = _heldout_rows(run_dir, start, objective.spec_file) if main else []

    def evaluate_mean(generation: int) -> float:
        """Train with the ES mean on the held-out seeds; append a row to heldout.jsonl, keep the mean as
        mean/gen_NNNN and, when it is the best so far, as selected/."""
        t = time.perf_counter()
        params = strategy.get_mean(es_state)
        fit, per_env, greedy = fitness_fn.held_out(params, heldout_key, eval_seeds)
        row = {"generation": generation, "heldout_fitness": fit, "per_env": per_env, "greedy_returns": greedy,
               "seeds": eval_seeds, "seconds": time.perf_counter() - t}
        if main:
            objective.save(params, run_dir / "mean" / f"gen_{generation:04d}", {"generation": generation,
                                                                               "heldout_fitness": fit})
            best = max((r["heldout_fitness"] for r in heldout_rows if r["heldout_fitness"] is not None), default=None)
            if np.isfinite(fit) and (best is None or fit > best):
                objective.save(params, run_dir / "selected", {"generation": generation, "heldout_fitness": fit,
                                                              "chosen_by": f"held-out fitness, {eval_seeds} seeds"})
            heldout_rows.append({**row, "heldout_fitness": fit if np.isfinite(fit) else None})
            with (run_dir / HELDOUT).open("a") as f:
                f.write(json.dumps(heldout_rows[-1]) + "\n")
        return fit

    if eval_every and start == 0 and not heldout_rows:
        evaluate_mean(0)  # the starting point (PPO: PPO-clip with the PPO initialisation; LPG: the initial rule)

    bar = None
    if (cfg.get("progress", True) if progress is None else progress) and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=gens, initial=start, unit="gen", dynamic_ncols=True)
    run_seconds, done, fitness_hist = prior_seconds, 0, []
    stop_after = cfg.get("stop_after_generations")
    try:
        for g in range(start, gens):
            t0 = time.perf_counter()
            k_ask, k_fit, k_tell = generation_keys(master, g)
            population, es_state = strategy.ask(k_ask, es_state, es_params)
            sigma = float(np.mean(es_state.std))  # the σ this population was drawn with
            fitness, per_env = fitness_fn(population, k_fit)
            es_state, _ = strategy.tell(k_tell, population, -fitness, es_state, es_params)  # evosax minimises
            dt = time.perf_counter() - t0
            run_seconds += dt
            fitness_hist.append(fitness)
            heldout = float("nan")
            if eval_every and ((g + 1) % eval_every == 0 or g + 1 == gens):
                heldout = evaluate_mean(g + 1)
            row = {"best_fitness": [[_nan(np.nanmax, fitness)]], "mean_fitness": [[_nan(np.nanmean, fitness)]],
                   "best_fitness_so_far": [[float(-es_state.best_fitness)]], "sigma": [[sigma]],
                   "diverged_members": [[float(np.isnan(fitness).sum())]], "heldout_fitness": [[heldout]],
                   "seconds": [[dt]]}
            if len(per_env) > 1:
                row.update({f"return_{k}": [[_nan(np.nanmean, v)]] for k, v in per_env.items()})
            logger.log_chunk(g, {k: np.asarray(v) for k, v in row.items()}, 1, gens)
            if main:
                _save_objectives(run_dir, strategy, es_state, objective, g + 1, float(-es_state.best_fitness))
            # on a mesh the ES state is saved as a global (replicated) array: orbax's multi-host form
            ckpt.save(g + 1, place.replicate(es_state), {"identity": identity, "update": g + 1, "run_seconds": run_seconds,
                                                         "baselines": baselines})
            done += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"best": f"{fitness.max():.1f}", "mean": f"{fitness.mean():.1f}", "s/gen": f"{dt:.1f}"})
            if stop_after and done >= stop_after and g + 1 < gens:
                print(f"stopping after {done} generation(s); resume with resume=true run_dir={run_dir}")
                break
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        ckpt.close()

    barrier("meta_metrics_written")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    generations = start + done  # one row per generation (rows 1..generations)
    secs = run_seconds / max(generations, 1)
    chosen = max((r for r in heldout_rows if r["heldout_fitness"] is not None), key=lambda r: r["heldout_fitness"],
                 default=None)  # the first of equal ones, as selected/ keeps it
    summary = {
        "generations": generations,
        "heldout": [[r["generation"], r["heldout_fitness"]] for r in heldout_rows],
        "selected_generation": chosen["generation"] if chosen else None,
        "selected_heldout_fitness": chosen["heldout_fitness"] if chosen else None,
        "heldout_seeds": eval_seeds if eval_every else None,
        "completed": generations >= gens,
        "best_fitness": max((r["best_fitness"] for r in rows if r["best_fitness"] is not None), default=None),
        "best_fitness_so_far": rows[-1]["best_fitness_so_far"] if rows else None,
        "mean_fitness_last": rows[-1]["mean_fitness"] if rows else None,
        "seconds_per_generation": secs,
        "generations_per_hour": 3600.0 / secs if secs > 0 else None,
        f"{fitness_fn.work[0]}_per_generation": fitness_fn.work[1],
        f"{fitness_fn.work[0]}_per_second": fitness_fn.work[1] / secs if secs > 0 else None,
        "run_seconds": run_seconds,
        "population": es_cfg["population"],
        "seeds_per_member": es_cfg["seeds_per_member"],
        **describe,
        "baselines": baselines,
    }
    summary.update(scale_summary(mesh))
    if main:
        (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def generation_keys(master: jax.Array, g: int):
    """Generation g's keys: ``(ask, fitness, tell)``; the members' training seeds come from ``fitness``."""
    return jax.random.split(jax.random.fold_in(master, g), 3)


def held_out_key(master: jax.Array) -> jax.Array:
    """The held-out evaluations' key, a stream no generation's keys are drawn from."""
    return jax.random.fold_in(master, HELDOUT_STREAM)


def _heldout_rows(run_dir: Path, start: int, spec_file: str = objectives.SPEC_FILE) -> list[dict]:
    """The held-out rows of generations ``<= start`` (a resume drops rows written after the checkpoint
    it continues from, and rewrites the file without them)."""
    path = run_dir / HELDOUT
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    kept = [r for r in rows if r["generation"] <= start]
    if len(kept) != len(rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        for r in rows[len(kept):]:  # what those rows saved goes with them, and selected/ is the kept rows' best
            shutil.rmtree(run_dir / "mean" / f"gen_{r['generation']:04d}", ignore_errors=True)
        shutil.rmtree(run_dir / "selected", ignore_errors=True)
        best = max((r for r in kept if r["heldout_fitness"] is not None), key=lambda r: r["heldout_fitness"], default=None)
        if best is not None:
            shutil.copytree(run_dir / "mean" / f"gen_{best['generation']:04d}", run_dir / "selected")
            spec = json.loads((run_dir / "selected" / spec_file).read_text())
            (run_dir / "selected" / spec_file).write_text(json.dumps(
                {**spec, "chosen_by": "held-out fitness"}, indent=2))
    return kept


def _nan(fn, x) -> float:
    """``fn`` (a NaN-ignoring reduction) of ``x``, NaN when every entry is NaN (no warning)."""
    x = np.asarray(x, float)
    return float(fn(x)) if np.isfinite(x).any() else float("nan")


def _save_objectives(run_dir: Path, strategy, es_state, objective, generation: int, best_fitness: float) -> None:
    """``mean/``: the ES mean after this generation; ``best/``: the best member evaluated so far."""
    mean = strategy.get_mean(es_state)
    best = strategy._unravel_solution(es_state.best_solution)
    for name, params, extra in (("mean", mean, {}), ("best", best, {"fitness": best_fitness})):
        objective.save(params, run_dir / name, {"generation": generation, **extra})
