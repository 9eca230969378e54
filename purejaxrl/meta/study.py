"""``kind: meta`` studies for ``purejaxrl reproduce``: objectives (PPO's, ``algo=ppo``) or update rules
(the LPG agent's, ``algo=lpg``) meta-trained by ``purejaxrl meta`` on several ES seeds, then every arm
trains fresh agents on the same test seeds in a set of *settings* (``env@horizon``: an env of the
evaluation setup at a multiple of its 1× budget).

A study file adds to the common fields (title, paper, arms, metric, tiers, claims)::

    meta:          {name: [purejaxrl meta overrides]}      objectives to meta-train (one run per ES seed)
    eval_setup:    NAME                                    conf/meta_eval/NAME.yaml: training settings, 1×
                                                           budget and return range per env
    settings:      {group: [env@horizon, ...]}             claims pick a group with ``metric: GROUP``
    arms:          {arm: {objective: NAME|BUILTIN, ablation: true}}
                   BUILTIN: clip, dpo (algo=ppo) or a2c (algo=lpg: the hand-written rule); ablation: a
                   time-aware objective or rule with its time inputs removed
    tiers.<t>:     seeds (test seeds), meta_seeds, meta_overrides, settings (a smaller set for smoke)

An arm's score on a test seed is its return normalised by the env's range, ``(R − low)/(high − low)``,
averaged over the settings of the group and, for a learned objective, over its ES seeds (each the
objective its run chose on held-out seeds, ``selected/``).  Every arm trains on the same test seeds
(:data:`purejaxrl.meta.evaluate.TEST_SEED`), so claims pair arms per test seed.  What the verdicts
cover: the test seeds' variation at these ES seeds — a learned arm averages its few ES seeds before
pairing, so the ES runs' own variation is not in the intervals (``evals/<arm>.json`` keeps each one).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import yaml

from purejaxrl.config import ConfigError

ARM_KEYS = {"objective", "ablation", "label"}
DEFAULT_GROUP = "all"
BUILTIN_RULES = ("a2c",)  # hand-written LPG update rules an arm can name (algo=lpg studies)


def builtin_names() -> tuple[str, ...]:
    from purejaxrl import objectives

    return (*objectives.BUILTIN, *BUILTIN_RULES)


def _setting(text: str) -> tuple[str, float]:
    env, sep, h = str(text).partition("@")
    try:
        hv = float(h)
    except ValueError:
        hv = -1.0
    if not sep or not env or not hv > 0:
        raise ConfigError(f"setting {text!r} must be ENV@HORIZON, e.g. acrobot@0.5 (a positive multiple of the 1x budget)")
    return env, hv


def settings(study: dict, spec: dict | None = None) -> dict[str, list[str]]:
    """Group -> settings (a tier's ``settings`` replace the study's), plus ``all``: every setting."""
    groups = dict((spec or {}).get("settings") or study["settings"])
    groups[DEFAULT_GROUP] = list(dict.fromkeys(x for v in groups.values() for x in v))
    return groups


def study_errors(s: dict, where: str) -> list[str]:
    errs = []
    meta = s.get("meta")
    if not isinstance(meta, dict) or not meta or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in meta.values()):
        errs.append(f"{where}: meta must map objective names to lists of purejaxrl meta overrides")
        meta = {}
    builtin = builtin_names()
    for name, arm in (s.get("arms") or {}).items():
        arm = arm or {}
        if not isinstance(arm, dict) or set(arm) - ARM_KEYS or "objective" not in arm:
            errs.append(f"{where}: arms.{name} needs objective (a meta: name or {', '.join(builtin)}); "
                        f"valid keys: {', '.join(sorted(ARM_KEYS))}")
            continue
        if arm["objective"] not in meta and arm["objective"] not in builtin:
            errs.append(f"{where}: arms.{name}.objective={arm['objective']!r}; valid: {', '.join([*meta, *builtin])}")
        if arm.get("ablation") and arm["objective"] in builtin:
            errs.append(f"{where}: arms.{name}.ablation applies to a meta-trained time-aware objective or rule "
                        "(ta_lpo, ta_lpg)")
    if not isinstance(s.get("eval_setup"), str):
        errs.append(f"{where}: eval_setup must name conf/meta_eval/NAME.yaml (PPO settings and return range per env)")
    else:
        from purejaxrl.meta.evaluate import load_setup

        try:
            setup = load_setup(s["eval_setup"])
        except ConfigError as e:
            errs.append(f"{where}: {e}")
            setup = None
    groups = [("settings", s.get("settings"))] + [(f"tiers.{t}.settings", v.get("settings"))
                                                  for t, v in (s.get("tiers") or {}).items()
                                                  if isinstance(v, dict) and v.get("settings") is not None]
    for key, g in groups:
        if not isinstance(g, dict) or not g or not all(isinstance(v, list) and v for v in g.values()):
            errs.append(f"{where}: {key} must map group names to lists of ENV@HORIZON settings")
            continue
        for v in g.values():
            for x in v:
                try:
                    env, _ = _setting(x)
                except ConfigError as e:
                    errs.append(f"{where}: {key}: {e}")
                    continue
                if setup is not None and (env not in setup or setup[env].get("bounds") is None):
                    errs.append(f"{where}: {key}: {env} needs an entry with bounds in conf/meta_eval/{s['eval_setup']}.yaml")
    for t, v in (s.get("tiers") or {}).items():
        if not isinstance(v, dict):
            continue
        if not isinstance(v.get("meta_seeds", 1), int) or v.get("meta_seeds", 1) < 1:
            errs.append(f"{where}: tiers.{t}.meta_seeds must be an integer >= 1 (ES runs per objective)")
        mo = v.get("meta_overrides", [])
        if not (isinstance(mo, list) and all(isinstance(x, str) for x in mo)):
            errs.append(f"{where}: tiers.{t}.meta_overrides must be a list of purejaxrl meta overrides")
    known = set(settings(s)) if isinstance(s.get("settings"), dict) else set()
    for i, c in enumerate(s.get("claims") or []):
        if isinstance(c, dict) and c.get("metric") is not None and known and c["metric"] not in known:
            errs.append(f"{where}: claims[{i}].metric={c['metric']!r}; for kind=meta use a settings group: "
                        f"{', '.join(sorted(known))}")
    if any("choose" in (a or {}) for a in (s.get("arms") or {}).values()):
        errs.append(f"{where}: kind=meta arms are objectives; the choice of an objective is made on held-out seeds "
                    "inside each meta run (selected/), not by choose")
    return errs


def meta_overrides(study: dict, spec: dict, name: str, seed: int) -> list[str]:
    return list(study["meta"][name]) + list(spec.get("meta_overrides", [])) + [f"seed={seed}", "progress=false"]


def compose_meta(overrides: list[str]) -> dict:
    from purejaxrl.config import compose

    return compose(overrides, config_name="meta")


def reuse_difference(saved: dict, cfg: dict) -> str | None:
    """What differs between a finished ES run's saved config and the one a study asks for now, or None:
    es.generations may grow and es.eval_every change (a finished run is continued), and ES settings
    added after the run was saved compare equal at their defaults (``meta.run.es_identity``)."""
    from purejaxrl.config import first_difference
    from purejaxrl.meta.run import es_identity

    keys = ("algo", "env", "network", "objective", "es", "seed")
    part = lambda c: {k: (es_identity(c[k]) if k == "es" else c.get(k)) for k in keys}  # noqa: E731
    return first_difference(part(saved), part(cfg))


def meta_dirs(study: dict, spec: dict, out: Path) -> dict[str, list[Path]]:
    return {name: [out / "runs" / f"meta_{name}_seed{m}" for m in range(int(spec.get("meta_seeds", 1)))]
            for name in study["meta"]}


def check_configs(study: dict, spec: dict) -> None:
    """Every meta run's config composes and validates; they share one inner setup (the built-in
    arms are trained with it; LPG rules differ only in which rule is evolved, ``algo.update_rule``)."""
    from purejaxrl import objectives
    from purejaxrl.meta.run import validate_meta

    inner = None
    for name in study["meta"]:
        cfg = compose_meta(meta_overrides(study, spec, name, 0))
        validate_meta(cfg)
        mine = {"algo": {k: v for k, v in cfg["algo"].items() if k != "update_rule"},
                "env": cfg["env"], "network": cfg["network"]}
        if inner is not None and mine != inner:
            from purejaxrl.config import first_difference

            diff = first_difference(inner, mine, labels=("the others have", "this one has"))
            raise ConfigError(f"meta.{name}: its inner setup differs from the other objectives' ({diff}); every "
                              "objective is meta-trained on the same task")
        inner = mine
    algo = inner["algo"]["name"]
    fits = BUILTIN_RULES if algo == "lpg" else tuple(objectives.BUILTIN)
    for name, arm in study["arms"].items():
        if arm["objective"] not in study["meta"] and arm["objective"] not in fits:
            raise ConfigError(f"arms.{name}.objective={arm['objective']!r} does not train algo={algo} (the meta runs'); "
                              f"valid built-ins here: {', '.join(fits)}")
        if arm.get("ablation") and arm["objective"] in study["meta"]:
            cfg = compose_meta(meta_overrides(study, spec, arm["objective"], 0))
            ta = (cfg["algo"].get("update_rule") == "ta_lpg" if algo == "lpg"
                  else (cfg.get("objective") or {}).get("kind") == "ta_lpo")
            if not ta:
                raise ConfigError(f"arms.{name}.ablation removes the time inputs of a time-aware objective or rule; "
                                  f"meta.{arm['objective']} is not one (ta_lpo or algo.update_rule=ta_lpg)")


def run(study: dict, spec: dict, out: Path, log) -> None:
    """Meta-train every objective on each ES seed (resumable), then evaluate every arm."""
    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.meta.run import run_meta

    for name, dirs in meta_dirs(study, spec, out).items():
        for m, d in enumerate(dirs):
            over = meta_overrides(study, spec, name, m)
            cfg = compose_meta(over)
            summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
            if summary.get("completed"):
                saved = yaml.safe_load((d / "config.yaml").read_text())
                diff = reuse_difference(saved, cfg)
                # the generations the summary records as finished: a continuation stopped before it wrote
                # its summary has already saved the larger es.generations in config.yaml
                ran = int(summary.get("generations", saved["es"]["generations"]))
                asked = int(cfg["es"]["generations"])
                if diff or ran > asked:
                    what = diff or f"es.generations: the run has {ran}, the study asks for {asked}"
                    raise ConfigError(f"{d} was run with other settings than the study now asks for ({what}); "
                                      "choose another --out, or delete that run to redo it")
                if ran == asked:
                    continue
                log(f"[{study['study']}] continuing {name} ES seed {m} from {ran} to {asked} generations")
                run_meta({**cfg, "resume": True}, d, progress=False, overrides=over)
                continue
            resuming = Checkpointer.exists(d / "checkpoints")
            log(f"[{study['study']}] {'resuming' if resuming else 'meta-training'} {name} ES seed {m}: {' '.join(over)}")
            run_meta({**cfg, "resume": resuming}, d, progress=False, overrides=over)
    evaluate(study, spec, out, log)


def _objective(study: dict, arm: dict, run_dir: Path | None):
    """What an arm trains with: a PPO objective or an LPG update rule (a meta run's choice on held-out
    seeds, ``selected/``, else its final ``mean/``; or a built-in)."""
    from purejaxrl import objectives, update_rules

    if arm["objective"] in objectives.BUILTIN:
        return objectives.BUILTIN[arm["objective"]]
    if arm["objective"] in BUILTIN_RULES:
        return update_rules.make_rule(arm["objective"])
    from purejaxrl.meta.evaluate import load_meta_run, rule_without_time

    src = run_dir / "selected" if (run_dir / "selected").exists() else run_dir / "mean"
    cfg = load_meta_run(run_dir)
    if cfg["algo"]["name"] == "lpg":
        rule = update_rules.load_rule(src)
        return rule_without_time(rule, cfg) if arm.get("ablation") else rule
    obj = objectives.load_objective(src)
    return objectives.without_progress(obj) if arm.get("ablation") else obj


def _digest(obj) -> str:
    """What an evaluation was made with: the objective's or rule's spec and (flat) parameters."""
    params = None if obj.params is None else {k: np.asarray(v).tolist() for k, v in obj.params.items()}
    return hashlib.sha1(json.dumps({"spec": obj.spec, "params": params}, sort_keys=True).encode()).hexdigest()


def same_source(recorded: dict | None, source: dict) -> bool:
    """Whether a recorded evaluation came from this objective and env entry (an entry's open ends, which
    do not change training, may differ: marking an end open does not redo evaluations)."""
    from purejaxrl.meta.evaluate import training_entry

    if not recorded:
        return False
    return {**recorded, "setup": training_entry(recorded.get("setup") or {})} == \
        {**source, "setup": training_entry(source.get("setup") or {})}


def evaluate(study: dict, spec: dict, out: Path, log) -> None:
    """``evals/<arm>.json``: per setting and ES seed, the final greedy return on each test seed.
    Each (setting, ES seed) is written when done, and kept while its source is unchanged."""
    from purejaxrl.meta.evaluate import final_returns, load_meta_run, load_setup, setting_config

    setup = load_setup(study["eval_setup"])
    n = int(spec["seeds"])
    dirs = meta_dirs(study, spec, out)
    first = next(iter(dirs.values()))[0]
    base_cfg = load_meta_run(first)
    (out / "evals").mkdir(parents=True, exist_ok=True)
    for arm_name, arm in study["arms"].items():
        f = out / "evals" / f"{arm_name}.json"
        rec = json.loads(f.read_text()) if f.exists() else {}
        if rec.get("seeds") != n:
            rec = {"seeds": n, "results": {}}
        sources = dirs[arm["objective"]] if arm["objective"] in study["meta"] else [first]
        for m, d in enumerate(sources):
            obj = _objective(study, arm, d)
            cfg = load_meta_run(d) if arm["objective"] in study["meta"] else base_cfg
            digest = _digest(obj)
            for x in settings(study, spec)[DEFAULT_GROUP]:
                env, h = _setting(x)
                key = f"{x}|es{m}"
                source = {"objective": digest, "setup": setup[env]}
                if same_source(rec["results"].get(key, {}).get("source"), source):
                    continue
                inner = setting_config(cfg, setup[env], env, h)
                steps = inner["algo"]["total_timesteps"]
                r = final_returns(inner, obj, n)
                rec["results"][key] = {"returns": [float(v) for v in r], "env_steps": steps, "source": source}
                f.write_text(json.dumps(rec, indent=1))
                log(f"[{study['study']}] {arm_name} (ES seed {m}) {x} ({steps} steps): {np.mean(r):.2f}")


def scores(study: dict, out: Path, metric: str, spec: dict) -> dict:
    """``arm -> {"seeds", "validation", "test", "episodes", "settings"}``: per test seed, the mean over the
    group's settings (and the arm's ES seeds) of the normalised final return."""
    from purejaxrl.meta.evaluate import load_setup

    setup = load_setup(study["eval_setup"])
    groups = settings(study, spec)
    group = groups[DEFAULT_GROUP if metric == study["metric"]["name"] else metric]
    meta_seeds = int(spec.get("meta_seeds", 1))
    res = {}
    for arm_name in study["arms"]:
        f = out / "evals" / f"{arm_name}.json"
        if not f.exists():
            raise ConfigError(f"{f} is missing: run the study (purejaxrl reproduce ... --reuse) to evaluate arm {arm_name}")
        rec = json.loads(f.read_text())
        cols = []
        es_runs = meta_seeds if study["arms"][arm_name]["objective"] in study["meta"] else 1
        for x in group:
            lo, hi = setup[_setting(x)[0]]["bounds"]
            runs = [v["returns"] for k, v in sorted(rec["results"].items())
                    if k.split("|")[0] == x and int(k.split("|es")[1]) < es_runs]  # not an earlier run's extra ES seeds
            if not runs:
                raise ConfigError(f"{f} has no results for {x}: rerun the study with --reuse")
            cols.append((np.asarray(runs, float).mean(0) - lo) / (hi - lo))
        test = np.mean(cols, 0)
        # "episodes" behind a seed's score: here PPO runs (settings x ES seeds), each scored by its final greedy return
        res[arm_name] = {"seeds": list(range(len(test))), "validation": [], "test": [float(v) for v in test],
                         "episodes": len(group) * es_runs, "settings": group}
    return res


def per_es_seed(study: dict, out: Path, spec: dict, pairs: list) -> dict:
    """What the verdicts average over: per learned arm and settings group, the mean score (over test
    seeds) of each ES seed's objective; per claim, its effect with the m-th ES seed of each learned arm
    (a built-in arm is the same for every m; ``pairs``: ``(claim, metric, arm, other arm)`` for the
    claims that compare two arms).  One lucky ES run carrying a verdict shows here."""
    from purejaxrl.meta.evaluate import load_setup

    setup = load_setup(study["eval_setup"])
    groups = settings(study, spec)
    M = int(spec.get("meta_seeds", 1))

    def score(arm, group, m):
        rec = json.loads((out / "evals" / f"{arm}.json").read_text())
        m = m if study["arms"][arm]["objective"] in study["meta"] else 0
        cols = []
        for x in groups[group]:
            lo, hi = setup[_setting(x)[0]]["bounds"]
            cols.append((np.asarray(rec["results"][f"{x}|es{m}"]["returns"], float) - lo) / (hi - lo))
        return np.mean(cols, 0)  # per test seed

    learned = [a for a, v in study["arms"].items() if v["objective"] in study["meta"]]
    arms = {a: {g: [float(score(a, g, m).mean()) for m in range(M)] for g in groups} for a in learned}
    effects = {}
    for label, metric, a, b in pairs:  # (claim, its metric, the two arms it compares)
        if not {a, b} & set(learned):
            continue
        g = metric if metric in groups else DEFAULT_GROUP
        effects[label + (f" on {g}" if g != DEFAULT_GROUP else "")] = [
            float((score(a, g, m) - score(b, g, m)).mean()) for m in range(M)]
    return {"es_seeds": M, "arms": arms, "effects": effects}


def bound_hits(study: dict, out: Path, spec: dict) -> dict:
    """``setting -> arm -> {"floor", "ceiling", "runs"}``: how many of an arm's runs in a setting (test
    seeds × its ES seeds) ended exactly at the env's lowest or highest return (the setup's ``bounds``; no
    floor or ceiling where the setup marks that end open: ``open_below`` / ``open_above``).
    Runs at a bound cannot show a difference between arms, so a claim read mostly there is weak."""
    from purejaxrl.meta.evaluate import load_setup

    setup = load_setup(study["eval_setup"])
    M = int(spec.get("meta_seeds", 1))
    res: dict = {}
    for arm, v in study["arms"].items():
        rec = json.loads((out / "evals" / f"{arm}.json").read_text())
        es_runs = M if v["objective"] in study["meta"] else 1
        for x in settings(study, spec)[DEFAULT_GROUP]:
            entry = setup[_setting(x)[0]]
            lo, hi = (float(b) for b in entry["bounds"])
            tol = 1e-6 * (hi - lo)
            r = np.concatenate([np.asarray(rec["results"][f"{x}|es{m}"]["returns"], float) for m in range(es_runs)])
            floor = 0 if entry.get("open_below") else int(np.sum(r <= lo + tol))
            ceiling = 0 if entry.get("open_above") else int(np.sum(r >= hi - tol))
            res.setdefault(x, {})[arm] = {"floor": floor, "ceiling": ceiling, "runs": int(r.size)}
    return res


def at_bounds(hits: dict, group: list[str], arms: list[str]) -> tuple[int, int]:
    """Of the runs of ``arms`` in ``group``'s settings: how many sit at a bound, out of how many."""
    at = sum(hits[x][a]["floor"] + hits[x][a]["ceiling"] for x in group for a in arms)
    return at, sum(hits[x][a]["runs"] for x in group for a in arms)


def curves(study: dict, out: Path) -> dict:
    """``name (ES) -> (generations, [ES seeds, evaluations])``: each objective's held-out fitness of the
    ES mean over meta-training."""
    res = {}
    for name in study["meta"]:
        rows = []
        for d in sorted((out / "runs").glob(f"meta_{name}_seed*")):
            f = d / "heldout.jsonl"
            if f.exists():
                rows.append({r["generation"]: r["heldout_fitness"] for r in map(json.loads, f.read_text().splitlines())})
        if rows:
            xs = sorted(set.intersection(*[set(r) for r in rows]))
            ys = np.array([[np.nan if r[x] is None else r[x] for x in xs] for r in rows], float)
            res[f"{name} (ES mean, held-out seeds)"] = (np.asarray(xs), ys)
    return res


def draw_selected(out: Path) -> list[str]:
    """The objective (or update rule) each ES run handed over, drawn over training progress at the
    progress values its training reaches (``runs/<run>/drift_selected.png`` or ``rule_selected.png``, with
    the run's ``fitness.png``); paths relative to ``out``."""
    from purejaxrl.meta.plots import plot_meta

    drawn = []
    for d in sorted((Path(out) / "runs").glob("meta_*")):
        if (d / "selected").exists():
            drawn += [str(p.relative_to(out)) for p in plot_meta(d, "selected") if p.name != "fitness.png"]
    return drawn

