"""``purejaxrl reproduce STUDY``: a paper's claims as verdicts computed from run directories.

A study (``conf/reproduce/<study>.yaml``) names the paper, its arms (config overrides), the budget
per tier, the metric, and the claims, each a comparison with a direction and the paper's own words:

    effect(A, B) > 0          the mean over common seeds of A − B (paired: same seeds, same
                              evaluation keys); Student t interval; ``> -0.02`` states a margin
    mean(A) > 475             the mean of A against a number the paper states; t interval
    iqm(A) > iqm(B)           an aggregate (iqm, median, mean) of A against B's, arms resampled
                              independently (stratified bootstrap, expanded percentile interval)
    P(A > B) > 0.5            the probability of improvement (stratified bootstrap)

One rule turns every interval into a verdict (:func:`purejaxrl.stats.verdict`): *supported* when
the 95% interval excludes the null value in the paper's direction, *contradicted* when it excludes
it the other way, else *inconclusive at n seeds*.  Nothing in ``report.md`` is typed by hand.

An arm may be chosen rather than run: ``{choose: [a1, a2, ...]}`` takes the candidate with the best
mean on *validation* episodes and reports its *test* episodes, which are another stream of every
run's own evaluation key (:mod:`purejaxrl.evalkeys`).  Both streams are played by the same trained
runs, so choosing this way removes the optimism of picking on the reported episodes but not the
luck of the training seeds: a confirmatory figure is the choice run again on fresh seeds (an arm
with ``seed=100``, as ``pqn_cartpole``'s 1e5-step arms).

Runs are ordinary run directories under ``OUT/runs/`` (resumable; ``--reuse`` keeps the finished
ones and resumes the others); evaluations go to ``OUT/evals/``; the report to ``OUT/report.md``,
``OUT/report.json`` and ``OUT/*.png``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from purejaxrl import stats as S
from purejaxrl.config import CONF_DIR, ConfigError, argument_parser, read_yaml

STUDY_DIR = CONF_DIR / "reproduce"
TIERS = ("smoke", "cpu", "gpu")
KINDS = ("train", "llm", "meta")
SPLITS = ("validation", "test")
TRAIN_METRICS = ("return", "success", "grid_return")  # grid_return: mean greedy return over a physics grid
ARM = r"([A-Za-z0-9_.:@*+-]+)"
NUM = r"(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
CLAIM_FORMS = {
    "effect": re.compile(rf"^effect\(\s*{ARM}\s*,\s*{ARM}\s*\)\s*([<>])\s*{NUM}$"),
    "threshold": re.compile(rf"^mean\(\s*{ARM}\s*\)\s*([<>])\s*{NUM}$"),
    "aggregate": re.compile(rf"^(iqm|median|mean)\(\s*{ARM}\s*\)\s*([<>])\s*(iqm|median|mean)\(\s*{ARM}\s*\)$"),
    "improvement": re.compile(rf"^P\(\s*{ARM}\s*>\s*{ARM}\s*\)\s*([<>])\s*0\.5$"),
}
CLAIM_HELP = "effect(A, B) > 0 (or > a margin), mean(A) > NUMBER, iqm(A) > iqm(B) (or median, mean), P(A > B) > 0.5 (or <)"


# ================================================================ study files
def list_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name_or_path: str) -> dict:
    """A study file, checked: one :class:`ConfigError` line per problem, before anything runs."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"study {name_or_path!r} is unknown (no {path}); valid: {', '.join(list_studies())}")
    study = read_yaml(path)
    if not isinstance(study, dict):
        raise ConfigError(f"{path} must be a mapping (study, title, paper, kind, arms, metric, tiers, claims)")
    study.setdefault("study", path.stem)
    errs = study_errors(study, path.name)
    if errs:
        raise ConfigError(errs[0] if len(errs) == 1 else f"{len(errs)} problems in {path.name}: " + "; ".join(errs))
    return study


def study_errors(s: dict, where: str) -> list[str]:
    errs = []
    for key in ("title", "paper", "kind", "arms", "metric", "tiers", "claims"):
        if key not in s:
            errs.append(f"{where}: {key} is missing")
    if errs:
        return errs
    if s["kind"] not in KINDS:
        errs.append(f"{where}: kind={s['kind']!r}; valid: {', '.join(KINDS)}")
    if not isinstance(s["paper"], dict) or "cite" not in s["paper"]:
        errs.append(f"{where}: paper needs cite (authors, title, venue)")
    arms = s["arms"]
    if not isinstance(arms, dict) or not arms:
        return errs + [f"{where}: arms must map names to their overrides"]
    if s["kind"] == "meta":
        from purejaxrl.meta import study as meta_study

        errs += meta_study.study_errors(s, where)
    for name, arm in (arms.items() if s["kind"] != "meta" else ()):
        if not re.fullmatch(ARM, str(name)):
            errs.append(f"{where}: arm name {name!r} may use letters, digits and _ . : @ * + -")
        arm = arm or {}
        if not isinstance(arm, dict):
            errs.append(f"{where}: arms.{name} must be a mapping (overrides, eval, choose)")
            continue
        unknown = set(arm) - {"overrides", "eval", "choose", "label"}
        if unknown:
            errs.append(f"{where}: arms.{name} has unknown keys {sorted(unknown)}; valid: overrides, eval, choose, label")
        if "choose" in arm:
            cands = arm["choose"]
            if not isinstance(cands, list) or len(cands) < 2 or any(c not in arms or "choose" in (arms[c] or {}) for c in cands):
                errs.append(f"{where}: arms.{name}.choose must list two or more arms that are run (not chosen)")
        for key in ("overrides", "eval"):
            if key in arm and not (isinstance(arm[key], list) and all(isinstance(x, str) for x in arm[key])):
                errs.append(f"{where}: arms.{name}.{key} must be a list of override strings")
        if "eval" in arm and s["kind"] != "train":
            errs.append(f"{where}: arms.{name}.eval (evaluation-only settings) needs kind=train")
    m = s["metric"]
    if not isinstance(m, dict) or "name" not in m:
        errs.append(f"{where}: metric needs name (train: return or success; llm: a summary key such as test_pass_at_1)")
    elif s["kind"] == "train" and m["name"] not in TRAIN_METRICS:
        errs.append(f"{where}: metric.name={m['name']!r}; for kind=train use {', '.join(TRAIN_METRICS)}")
    elif s["kind"] == "meta" and m["name"] != "score":
        errs.append(f"{where}: metric.name={m['name']!r}; for kind=meta use score (the normalised final return)")
    elif s["kind"] == "llm" and not str(m["name"]).startswith("test_"):
        errs.append(f"{where}: metric.name={m['name']!r}; for kind=llm use a held-out summary key test_*")
    if isinstance(m, dict) and "bounds" in m and not (isinstance(m["bounds"], list) and len(m["bounds"]) == 2
                                                      and all(isinstance(b, (int, float)) for b in m["bounds"])
                                                      and m["bounds"][0] < m["bounds"][1]):
        errs.append(f"{where}: metric.bounds={m['bounds']!r} must be [low, high], the metric's floor and ceiling")
    tiers = s["tiers"]
    if not isinstance(tiers, dict) or not set(tiers) <= set(TIERS) or "smoke" not in tiers:
        errs.append(f"{where}: tiers must be a subset of {', '.join(TIERS)} and include smoke")
    else:
        for t, spec in tiers.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("seeds"), int) or spec["seeds"] < 1:
                errs.append(f"{where}: tiers.{t}.seeds must be an integer >= 1")
            elif "arms" in spec and (not isinstance(spec["arms"], list) or not set(spec["arms"]) <= set(arms or {})):
                errs.append(f"{where}: tiers.{t}.arms must list arms of the study (the subset this tier runs)")
            ao = spec.get("arm_overrides") if isinstance(spec, dict) else None
            if ao is not None and (not isinstance(ao, dict) or not set(ao) <= set(arms or {}) or not all(
                    isinstance(v, list) and all(isinstance(x, str) for x in v) for v in ao.values())):
                errs.append(f"{where}: tiers.{t}.arm_overrides must map arms of the study to lists of overrides")
    claims = s["claims"]
    if not isinstance(claims, list) or not claims:
        return errs + [f"{where}: claims must be a list"]
    for i, c in enumerate(claims):
        if not isinstance(c, dict) or "claim" not in c or "paper" not in c:
            errs.append(f"{where}: claims[{i}] needs claim (e.g. effect(A, B) > 0) and paper (the paper's words)")
            continue
        try:
            parsed = parse_claim(c["claim"])
        except ConfigError as e:
            errs.append(f"{where}: claims[{i}]: {e}")
            continue
        cm = c.get("metric")
        fits = (s["kind"] == "llm" and str(cm).startswith(LLM_CLAIM_METRICS)) or (s["kind"] == "train" and cm in TRAIN_METRICS) or (
            s["kind"] == "meta")  # a settings group, checked with the meta fields
        if cm is not None and not fits:
            errs.append(f"{where}: claims[{i}].metric={cm!r}; kind=llm takes a held-out key test_* or a whole-run "
                        f"training count train_successes_level*, kind=train {', '.join(TRAIN_METRICS)}")
        cb = c.get("bounds")
        if cb is not None and not (isinstance(cb, list) and len(cb) == 2 and all(isinstance(b, (int, float)) for b in cb)
                                   and cb[0] < cb[1]):
            errs.append(f"{where}: claims[{i}].bounds={cb!r} must be [low, high], the claim metric's floor and ceiling")
        for a in parsed["arms"]:
            if a not in arms:
                errs.append(f"{where}: claims[{i}] names arm {a!r}, which the study does not define; arms: {', '.join(arms)}")
    if not errs:
        for t, spec in tiers.items():
            if spec.get("arms") and not for_tier(s, t)["claims"]:
                errs.append(f"{where}: tiers.{t}.arms keeps no claim (each claim needs all its arms, and a chosen "
                            f"arm all it chooses from); add the arms of at least one claim")
    errs += _datasets_errors(s, where)
    errs += _grid_errors(s, where)
    errs += _fresh_adversary_errors(s, where)
    setup = s.get("setup") or {}
    if setup and (s["kind"] != "llm" or not isinstance(setup, dict)):
        errs.append(f"{where}: setup (runs every arm starts from) is for kind=llm, a mapping name -> overrides")
    evolve = s.get("evolve") or {}
    if evolve and (s["kind"] != "llm" or not isinstance(evolve, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in evolve.values())):
        errs.append(f"{where}: evolve (llm meta runs, once per study, whose objectives arms load as "
                    "loss.path={evolve.NAME}/selected) is for kind=llm, a mapping name -> llm meta overrides")
    return errs


GRID_KEYS = ("mass", "friction", "episodes", "absolute", "bodies")


def _uses_grid(s: dict) -> bool:
    m = s.get("metric") or {}
    return (isinstance(m, dict) and m.get("name") == "grid_return") or any(
        isinstance(c, dict) and c.get("metric") == "grid_return" for c in s.get("claims") or [])


def _sections(s: dict, name: str) -> list[tuple[str, object]]:
    """``(where, value)`` of a section a study and each of its tiers may set (``grid``, ``fresh_adversary``)."""
    tiers = [(f"tiers.{t}.{name}", v.get(name)) for t, v in (s.get("tiers") or {}).items() if isinstance(v, dict)]
    return [(k, v) for k, v in [(name, s.get(name))] + tiers if v is not None]


def _grid_errors(s: dict, where: str) -> list[str]:
    """``grid:`` (study or tier): the physics grid of ``grid_return`` — ``purejaxrl robustness``'s
    ``mass`` / ``friction`` ranges (``LOW:HIGH:N``), ``episodes`` per cell, ``absolute`` or ``bodies``."""
    errs = []
    for key, g in _sections(s, "grid"):
        if s.get("kind") != "train" or not isinstance(g, dict) or set(g) - set(GRID_KEYS):
            errs.append(f"{where}: {key} (the physics grid of grid_return) is for kind=train, a mapping of "
                        f"{', '.join(GRID_KEYS)}")
    if _uses_grid(s) and s.get("grid") is None:
        errs.append(f"{where}: the metric grid_return needs a grid: section (mass, friction as LOW:HIGH:N, episodes per cell)")
    if _uses_grid(s) and any("eval" in (a or {}) for a in (s.get("arms") or {}).values()):
        errs.append(f"{where}: grid_return evaluates each arm's own run; arms with eval: overrides cannot use it")
    return errs


FRESH_ADVERSARY_KEYS = ("arms", "episodes", "updates")


def _fresh_adversary_errors(s: dict, where: str) -> list[str]:
    """``fresh_adversary:`` (study or tier): the arms whose final protagonists face an adversary trained
    from scratch against them (``purejaxrl robustness --fresh-adversary``) on the nominal task."""
    errs = []
    for key, f in _sections(s, "fresh_adversary"):
        if s.get("kind") != "train" or not isinstance(f, dict) or set(f) - set(FRESH_ADVERSARY_KEYS):
            errs.append(f"{where}: {key} is for kind=train, a mapping of {', '.join(FRESH_ADVERSARY_KEYS)}")
            continue
        arms = f.get("arms", [])
        if not isinstance(arms, list) or not set(arms) <= set(s.get("arms") or {}) or any(
                {"choose", "eval"} & set(s["arms"][a] or {}) for a in arms):
            errs.append(f"{where}: {key}.arms must list arms of the study that are run, not chosen and without eval: "
                        "overrides (those attacked by a fresh adversary)")
        e = f.get("episodes", 32)
        if not isinstance(e, int) or isinstance(e, bool) or e < 1:
            errs.append(f"{where}: {key}.episodes={e!r} must be an integer >= 1 (test episodes per seed)")
        u = f.get("updates", "auto")
        if u != "auto" and (not isinstance(u, int) or isinstance(u, bool) or u < 1):
            errs.append(f"{where}: {key}.updates={u!r} must be auto (as long as the co-trained adversary) or an "
                        "integer >= 1")
    return errs


def fresh_adversary_spec(study: dict, spec: dict) -> dict | None:
    """The study's ``fresh_adversary`` updated by the tier's, its arms those the tier runs; None without one."""
    f = {**(study.get("fresh_adversary") or {}), **(spec.get("fresh_adversary") or {})}
    arms = [a for a in f.get("arms", []) if a in study["arms"]]
    return {"episodes": 32, "updates": "auto", **f, "arms": arms} if arms else None


def _datasets_errors(s: dict, where: str) -> list[str]:
    """``datasets``: name -> recipe (``name`` of a ``purejaxrl dataset`` generator with ``episodes``,
    ``episode_length``, ``noise``, ``seed``; or ``from_policy`` with ``policies: {label: [train
    overrides]}`` and ``episodes`` per policy), used in overrides as ``{data.<name>}``."""
    from envs.datasets import GENERATORS

    data = s.get("datasets") or {}
    if not data:
        return []
    if s["kind"] != "train" or not isinstance(data, dict):
        return [f"{where}: datasets (offline data the runs train from) is for kind=train, a mapping name -> recipe"]
    errs = []
    tiers = [t.get("datasets") or {} for t in (s.get("tiers") or {}).values() if isinstance(t, dict)]
    for name, r in data.items():
        if not isinstance(r, dict) or r.get("name") not in (*GENERATORS, "from_policy"):
            errs.append(f"{where}: datasets.{name}.name must be a `purejaxrl dataset` name ({', '.join(GENERATORS)}) "
                        "or from_policy")
            continue
        unknown = set(r) - ({"name", "episodes", "seed", "policies"} if r["name"] == "from_policy"
                            else {"name", "episodes", "episode_length", "noise", "seed"})
        if unknown:
            errs.append(f"{where}: datasets.{name} has unknown keys {sorted(unknown)}")
        if r["name"] == "from_policy" and not (isinstance(r.get("policies"), dict) and r["policies"]):
            errs.append(f"{where}: datasets.{name} (from_policy) needs policies: {{label: [train overrides]}}")
    for t in tiers:
        for name in t:
            if name not in data:
                errs.append(f"{where}: a tier sets datasets.{name}, which the study does not define")
    return errs


def parse_claim(text: str) -> dict:
    t = " ".join(str(text).split())
    for form, rx in CLAIM_FORMS.items():
        m = rx.match(t)
        if not m:
            continue
        g = m.groups()
        if form == "effect":
            return {"form": form, "arms": [g[0], g[1]], "direction": g[2], "null": float(g[3])}
        if form == "threshold":
            return {"form": form, "arms": [g[0]], "direction": g[1], "null": float(g[2])}
        if form == "aggregate":
            if g[0] != g[3]:
                raise ConfigError(f"claim {t!r} compares {g[0]} with {g[3]}: use the same statistic on both sides")
            return {"form": form, "statistic": g[0], "arms": [g[1], g[4]], "direction": g[2], "null": 0.0}
        return {"form": form, "arms": [g[0], g[1]], "direction": g[2], "null": 0.5}
    raise ConfigError(f"claim {t!r} is not one of: {CLAIM_HELP}")


# ================================================================ running
def _runs(study: dict) -> dict[str, list[str]]:
    """Run name -> the arms evaluated from it (arms with the same overrides share one run)."""
    out: dict[str, list[str]] = {}
    by_overrides: dict[tuple, str] = {}
    for name, arm in study["arms"].items():
        arm = arm or {}
        if "choose" in arm:
            continue
        key = tuple(arm.get("overrides") or [])
        run = by_overrides.setdefault(key, name)
        out.setdefault(run, []).append(name)
    return out


def for_tier(study: dict, tier: str) -> dict:
    """The study as ``tier`` runs it: a tier may run a subset of the arms (``tiers.<tier>.arms``, e.g.
    a smoke test of the mechanics); claims about arms it does not run are listed, not evaluated."""
    keep = study["tiers"].get(tier, {}).get("arms")
    if not keep or "claims_not_run" in study:  # nothing to cut, or already cut
        return study
    arms = {k: v for k, v in study["arms"].items()
            if k in keep or ("choose" in (v or {}) and set(v["choose"]) <= set(keep))}
    claims = [c for c in study["claims"] if set(parse_claim(c["claim"])["arms"]) <= set(arms)]
    skipped = [c for c in study["claims"] if c not in claims]
    return {**study, "arms": arms, "claims": claims, "claims_not_run": skipped}


def tier_spec(study: dict, tier: str, seeds: int | None) -> dict:
    if tier not in study["tiers"]:
        raise ConfigError(f"--tier {tier}: study {study['study']} has tiers {', '.join(study['tiers'])}")
    spec = dict(study["tiers"][tier])
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds={seeds} must be >= 1")
        spec["seeds"] = seeds
    spec.setdefault("overrides", [])
    return spec


def _subst(items: list[str], seed: int | None, setup_dirs: dict[str, Path], evolve_dirs: dict | None = None) -> list[str]:
    out = []
    for x in items:
        if seed is not None:
            x = x.replace("{seed}", str(seed))
        for k, d in setup_dirs.items():
            x = x.replace("{setup." + k + "}", str(d))
        for k, d in (evolve_dirs or {}).items():
            x = x.replace("{evolve." + k + "}", str(d))
        out.append(x)
    return out


def _evolve_dirs(study: dict, out: Path) -> dict[str, Path]:
    return {k: out / "runs" / f"evolve_{k}" for k in (study.get("evolve") or {})}


def _evolve_config(study: dict, spec: dict, name: str) -> dict:
    from purejaxrl.config import compose

    over = list(study["evolve"][name]) + list(spec.get("evolve_overrides") or [])
    return {**compose(over, CONF_DIR / "llm", "meta"), "progress": False}


def _run_evolve(study: dict, spec: dict, out: Path, log) -> None:
    """The study's ``llm meta`` runs (once per study; a finished one is reused, an unfinished one resumed)."""
    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.llm.meta import run_llm_meta

    for name, d in _evolve_dirs(study, out).items():
        cfg = _evolve_config(study, spec, name)
        if _done(d):
            from purejaxrl.llm.run import with_later_defaults

            saved = yaml.safe_load((d / "config.yaml").read_text())
            drop = lambda c: {k: v for k, v in c.items() if k not in LLM_RUN_ONLY}  # noqa: E731
            _check_reused(d, drop(with_later_defaults(saved)), drop(with_later_defaults({**cfg, "run_dir": str(d)})))
            continue
        resuming = Checkpointer.exists(d / "checkpoints")
        log(f"{'resuming' if resuming else 'running'} llm meta {name}")
        run_llm_meta({**cfg, "resume": resuming}, d)


def dataset_recipes(study: dict, spec: dict) -> dict[str, dict]:
    """The study's datasets as this tier makes them (a tier may change a recipe's keys, e.g. fewer episodes)."""
    return {k: {**r, **(spec.get("datasets") or {}).get(k, {})} for k, r in (study.get("datasets") or {}).items()}


def dataset_paths(study: dict, spec: dict, out: Path) -> dict[str, Path]:
    """``OUT/data/<name>-<recipe hash>.npz``: a changed recipe is another file (and so another config)."""
    return {k: Path(out) / "data" / f"{k}-{hashlib.sha1(json.dumps(r, sort_keys=True).encode()).hexdigest()[:8]}.npz"
            for k, r in dataset_recipes(study, spec).items()}


def _with_data(items: list[str], paths: dict[str, Path]) -> list[str]:
    out = []
    for x in items:
        for k, p in paths.items():
            x = x.replace("{data." + k + "}", str(p))
        out.append(x)
    return out


def _make_datasets(study: dict, spec: dict, out: Path, log) -> None:
    """Each dataset the study trains from, made once per recipe (kept across calls with --reuse)."""
    from envs.datasets import generate

    paths = dataset_paths(study, spec, out)
    for name, r in dataset_recipes(study, spec).items():
        p = paths[name]
        if p.exists() and p.with_suffix(".json").exists():  # the recipe's record is written last
            continue
        log(f"[{study['study']}] making dataset {name}: {json.dumps(r)}")
        if r["name"] == "from_policy":
            from purejaxrl.collect import collect_many
            from purejaxrl.config import compose
            from purejaxrl.experiment import run as train

            dirs = []
            for label, over in r["policies"].items():  # the behaviour policies, trained here
                d = out / "runs" / f"setup_{name}_{label}"
                if _done(d):  # reused only if trained with the overrides the recipe names now
                    from purejaxrl.config import identity

                    _check_reused(d, identity(yaml.safe_load((d / "config.yaml").read_text())), identity(compose(list(over))))
                else:
                    from purejaxrl.checkpoint import Checkpointer

                    train({**compose(list(over)), "resume": Checkpointer.exists(d / "checkpoints")}, d, progress=False,
                          overrides=list(over))
                dirs.append(str(d))
            info = collect_many(dirs, int(r.get("episodes", 100)), p, seed=int(r.get("seed", 0)))
        else:
            info = generate(r["name"], r.get("episodes"), p, seed=int(r.get("seed", 0)), noise=r.get("noise"),
                            episode_length=r.get("episode_length"))
        p.with_suffix(".json").write_text(json.dumps({"recipe": r, **info}, indent=1))


def check_out(out: Path, reuse: bool, study: str, tier: str) -> None:
    """An output folder with runs is only written with ``--reuse`` (nothing saved is lost); a folder
    of another study or tier is refused."""
    marker = out / "study.json"
    if marker.exists():
        got = json.loads(marker.read_text())
        if (got.get("study"), got.get("tier")) != (study, tier):
            raise ConfigError(f"--out {out} holds study {got.get('study')} at tier {got.get('tier')}; "
                              f"choose another --out for {study} at tier {tier}")
    if (out / "runs").exists() and any((out / "runs").iterdir()) and not reuse:
        raise ConfigError(f"--out {out} already holds runs; pass --reuse to keep the finished ones and resume the "
                          "others, or choose another --out (nothing was changed)")


def run_study(study: dict, tier: str, seeds: int | None = None, out: str | Path | None = None, reuse: bool = False,
              log=print) -> dict:
    """Run (or reuse) every arm of ``study`` at ``tier``, evaluate, and write the report."""
    spec = tier_spec(study, tier, seeds)
    study = for_tier(study, tier)
    out = Path(out or Path("reproduce") / study["study"] / tier)
    check_out(out, reuse, study["study"], tier)
    _check_configs(study, spec, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"study": study["study"], "tier": tier, "seeds": spec["seeds"]}, indent=1))
    t0 = time.time()
    if study["kind"] == "train":
        _make_datasets(study, spec, out, log)
        _run_train(study, spec, out, log)
    elif study["kind"] == "meta":
        from purejaxrl.meta import study as meta_study

        meta_study.run(study, spec, out, log)
    else:
        _run_llm(study, spec, out, log)
    report = make_report(study, out, tier)
    log(f"[{study['study']}] {time.time() - t0:.0f} s for this call; report in {out / 'report.md'}")
    return report


def _check_configs(study: dict, spec: dict, out: Path) -> None:
    """Compose and validate every run's config before anything runs (one line per problem; the
    datasets, made later, are checked when they exist)."""
    from purejaxrl.config import compose, validate

    if study["kind"] == "meta":
        from purejaxrl.meta import study as meta_study

        return meta_study.check_configs(study, spec)
    for r in dataset_recipes(study, spec).values():
        for over in (r.get("policies") or {}).values():
            validate(compose(list(over)))
    fa = fresh_adversary_spec(study, spec) if study["kind"] == "train" else None
    for run, arms in _runs(study).items():
        over = study.get("base", []) + spec["overrides"] + (study["arms"][run] or {}).get("overrides", [])
        if study["kind"] == "train":
            cfg = compose(_train_overrides(study, spec, run, out))
            validate(cfg, check_data=all(p.exists() for p in dataset_paths(study, spec, out).values()))
            for a in set(arms) & set((fa or {}).get("arms", [])):  # what would fail only after every arm trained
                c = cfg["algo"]
                if c["name"] not in ("qarl", "rarl"):
                    raise ConfigError(f"fresh_adversary.arms: arm {a} runs algo={c['name']}; a fresh adversary needs "
                                      "the QARL code (algo=qarl or algo=rarl, or algo=qarl algo.curriculum=none for SAC)")
                units = int(c["num_envs"]) * int(c.get("steps_per_update", 1))
                if fa["updates"] != "auto" and int(fa["updates"]) * units <= int(c["learning_starts"]):
                    raise ConfigError(f"fresh_adversary.updates={fa['updates']} ({int(fa['updates']) * units} env steps) "
                                      f"end before arm {a}'s algo.learning_starts={c['learning_starts']}: the adversary "
                                      f"would never learn; use auto or more than {int(c['learning_starts']) // units} updates")
            for a in arms:
                ev = (study["arms"][a] or {}).get("eval")
                if ev:
                    from purejaxrl.evaluate import parse_eval_overrides

                    parse_eval_overrides(ev)
        else:
            from purejaxrl.llm.run import validate_llm, with_defaults

            evolve = _evolve_dirs(study, out)
            cfg = _compose_llm(_subst(over, 0, {k: Path("setup") for k in (study.get("setup") or {})}, evolve))
            cfg = {k: v for k, v in with_defaults(cfg).items() if k != "init_from"}
            path = str((cfg.get("loss") or {}).get("path") or "")
            if any(path.startswith(str(d)) for d in evolve.values()) and not Path(path).exists():
                cfg["loss"] = {**cfg["loss"], "path": None}  # made by the study's llm meta run: checked when it exists
            validate_llm(cfg)
    if study["kind"] == "llm":
        from purejaxrl.llm.meta import validate_llm_meta

        for name in study.get("evolve") or {}:
            validate_llm_meta(_evolve_config(study, spec, name))


def _compose_llm(overrides: list[str]) -> dict:
    from purejaxrl.config import compose

    return compose(overrides, CONF_DIR / "llm")


def _done(run_dir: Path) -> bool:
    s = run_dir / "summary.json"
    return s.exists() and json.loads(s.read_text()).get("completed", True)


LLM_RUN_ONLY = ("run_dir", "resume", "progress", "compilation_cache", "init_from")  # not what a run computes


def _check_reused(run_dir: Path, saved_part: dict, now_part: dict) -> None:
    """A finished run is reused only if it was made with the settings the study asks for now."""
    from purejaxrl.config import first_difference

    diff = first_difference(saved_part, now_part)
    if diff:
        raise ConfigError(f"{run_dir} was run with other settings than the study now asks for ({diff}); "
                          "choose another --out, or delete that run to redo it")


def _run_train(study: dict, spec: dict, out: Path, log) -> None:
    from purejaxrl.checkpoint import Checkpointer
    from purejaxrl.config import compose
    from purejaxrl.evaluate import evaluate_run
    from purejaxrl.experiment import run as train

    n = spec["seeds"]
    episodes = int(spec.get("episodes", study["metric"].get("episodes", 32)))
    (out / "evals").mkdir(exist_ok=True)
    for run, arms in _runs(study).items():
        d = out / "runs" / run
        over = _train_overrides(study, spec, run, out)
        cfg = compose(over)
        if _done(d):
            from purejaxrl.config import identity

            _check_reused(d, identity(yaml.safe_load((d / "config.yaml").read_text())), identity(cfg))
        else:
            resuming = Checkpointer.exists(d / "checkpoints")
            log(f"[{study['study']}] {'resuming' if resuming else 'training'} {run} ({n} seeds): {' '.join(over) or 'defaults'}")
            train({**cfg, "resume": resuming}, d, progress=False, overrides=over)
        keep_evaluation_rows(d)
        if (cfg.get("algo") or {}).get("curriculum") == "self_paced":
            from purejaxrl.robustness import curriculum_record

            curriculum_record(d)  # the curriculum's path, kept where the per-update log is not (none: no log here)
        for arm in arms:
            ev_over = (study["arms"][arm] or {}).get("eval") or []
            source = {"run": run, "summary_sha1": hashlib.sha1((d / "summary.json").read_bytes()).hexdigest(),
                      "episodes": episodes, "eval": ev_over}
            for split in SPLITS:
                f = out / "evals" / f"{arm}_{split}.json"
                if f.exists() and json.loads(f.read_text()).get("source") == source:
                    continue  # this run, these settings: already evaluated
                ev = evaluate_run(d, episodes, split, 0, ev_over, write=False)
                f.write_text(json.dumps({**ev, "source": source}, indent=1))
        log(f"[{study['study']}] {run}: evaluated {', '.join(arms)} on {episodes} validation and test episodes per seed")
        if _uses_grid(study):
            for arm in arms:
                _grid_evaluations(study, spec, d, out, arm, log)
    fa = fresh_adversary_spec(study, spec)
    for arm in (fa or {}).get("arms", []):  # after every arm has its verdict files: the longest evaluations last
        run = next(r for r, names in _runs(study).items() if arm in names)
        _fresh_adversary_evaluation(study, fa, out / "runs" / run, out, arm, log)


def grid_spec(study: dict, spec: dict) -> dict:
    """The physics grid of ``grid_return``: the study's ``grid``, updated by the tier's."""
    return {"episodes": 8, **(study.get("grid") or {}), **(spec.get("grid") or {})}


def _grid_evaluations(study: dict, spec: dict, d: Path, out: Path, arm: str, log) -> None:
    """Every run's mean greedy return over the physics grid (no adversary), on validation and on test
    episodes (each run's own key; every cell of a run plays the same episodes), written to
    ``OUT/evals/<arm>_<split>_grid.json``."""
    from purejaxrl.robustness import parse_range, robustness

    g = grid_spec(study, spec)
    source = {"run": arm, "summary_sha1": hashlib.sha1((d / "summary.json").read_bytes()).hexdigest(), "grid": g}
    for split in SPLITS:
        f = out / "evals" / f"{arm}_{split}_grid.json"
        if f.exists() and json.loads(f.read_text()).get("source") == source:
            continue
        mass = parse_range(g["mass"], "mass") if g.get("mass") else None
        friction = parse_range(g["friction"], "friction") if g.get("friction") else None
        bodies = tuple(g["bodies"]) if g.get("bodies") else None
        res = robustness(d, mass, friction, int(g["episodes"]), 0, 0, bool(g.get("absolute")), bodies, split=split,
                         write=False, adversary_grids=False)
        grid = np.asarray(res["returns"]["no_adversary"])  # [runs, M, F]
        per_run = [{**r, "grid_return": float(x.mean())} for r, x in zip(res["runs"], grid)]
        cells = int(grid.shape[1] * grid.shape[2])
        f.write_text(json.dumps({"per_run": per_run, "cells": cells, "episodes_per_cell": int(g["episodes"]),
                                 "axes": {k: res[k] for k in res if k in ("physics", "bodies", "mass_scale", "friction_scale",
                                                                         "torso_mass", "friction", "mass_1", "mass_2")},
                                 "source": source}, indent=1))
    log(f"[{study['study']}] {arm}: grid_return on validation and test episodes ({g})")


def _fresh_adversary_evaluation(study: dict, fa: dict, d: Path, out: Path, arm: str, log) -> None:
    """Every run's greedy return on ``fa['episodes']`` test episodes of the nominal task with no adversary,
    against its co-trained adversary (adversarial arms) and against a fresh one trained ``fa['updates']``
    updates from scratch against the frozen protagonist at the run's force budget (each seed's own key,
    the same for every arm on that seed): ``OUT/evals/<arm>_fresh_adversary.json``."""
    from purejaxrl.robustness import auto_updates, robustness

    def source(updates: int) -> dict:  # the count itself, not "auto": a file made under another rule is not reused
        return {"run": arm, "summary_sha1": hashlib.sha1((d / "summary.json").read_bytes()).hexdigest(),
                "episodes": fa["episodes"], "updates": updates}

    f = out / "evals" / f"{arm}_fresh_adversary.json"
    if f.exists():
        from purejaxrl.experiment import build_algorithm

        updates = fa["updates"]
        if updates == "auto":  # resolved from the run's own schedule (no checkpoint loaded)
            updates = auto_updates(build_algorithm(yaml.safe_load((d / "config.yaml").read_text())))
        if json.loads(f.read_text()).get("source") == source(int(updates)):
            return
    t0 = time.time()
    one = np.ones(1, np.float32)  # the nominal task: every mass and friction times 1
    res = robustness(d, one, one, int(fa["episodes"]), 0, fa["updates"], split="test", write=False)
    per_run = [{**r, **{mode: float(np.asarray(v)[i].mean()) for mode, v in res["returns"].items()},
                "fresh_adversary_alpha": res["fresh_adversary_alpha"][i]} for i, r in enumerate(res["runs"])]
    f.write_text(json.dumps({"per_run": per_run, "episodes_per_run": int(fa["episodes"]), "split": "test",
                             "updates": res["fresh_adversary_updates"],
                             "learning_updates": res["fresh_adversary_learning_updates"],
                             "co_trained_learning_updates": res["co_trained_adversary_learning_updates"],
                             "max_force": res["fresh_adversary_max_force"],
                             "protagonist_context": res["fresh_adversary_temperature"],
                             "seconds": round(time.time() - t0, 1),
                             "source": source(res["fresh_adversary_updates"])}, indent=1))
    log(f"[{study['study']}] {arm}: against a fresh adversary ({res['fresh_adversary_updates']} updates) on "
        f"{fa['episodes']} test episodes per seed")


def fresh_adversary_summary(study: dict, spec: dict, out: Path) -> list[dict] | None:
    """Per arm of ``fresh_adversary``: the mean greedy return with no adversary, against the co-trained
    adversary and against the fresh one, and the paired per-seed effect of the fresh attack over the
    co-trained one (fresh − co-trained; below 0: the fresh adversary is the stronger) with its t interval
    and verdict on "the fresh adversary is stronger"; arms not yet evaluated are listed as such."""
    fa = fresh_adversary_spec(study, spec)
    if not fa:
        return None
    rows = []
    for arm in fa["arms"]:
        f = out / "evals" / f"{arm}_fresh_adversary.json"
        if not f.exists():
            rows.append({"arm": arm, "evaluated": False})
            continue
        ev = json.loads(f.read_text())
        pr = ev["per_run"]
        get = lambda m: [float(r[m]) for r in pr] if all(m in r for r in pr) else None  # noqa: E731
        none, trained, fresh = get("no_adversary"), get("trained_adversary"), get("fresh_adversary")
        row = {"arm": arm, "evaluated": True, "seeds": [int(r["seed"]) for r in pr],
               "episodes_per_seed": int(ev["episodes_per_run"]), "updates": ev["updates"], "max_force": ev["max_force"],
               "learning_updates": ev.get("learning_updates"), "co_trained_learning_updates": ev.get("co_trained_learning_updates"),
               "fresh_alpha": [r.get("fresh_adversary_alpha") for r in pr],
               "no_adversary": none, "trained_adversary": trained, "fresh_adversary": fresh,
               "seconds": ev.get("seconds")}
        for name, vals in (("no_adversary", none), ("trained_adversary", trained), ("fresh_adversary", fresh)):
            row[f"{name}_mean"] = None if vals is None else float(np.mean(vals))
        if trained is not None:
            d = np.asarray(fresh) - np.asarray(trained)
            iv = S.mean_interval(d, method="t")
            row.update(effect=iv["estimate"], effect_ci=iv["ci"], fresh_stronger_seeds=int((d < 0).sum()),
                       verdict=S.verdict(iv["ci"], "<", 0.0, len(d)))
        rows.append(row)
    return rows


def fresh_adversary_table(rows: list[dict]) -> str:
    lines = ["| arm | no adversary | co-trained adversary | fresh adversary | fresh − co-trained [95% CI] "
             "| fresh stronger (seeds) | “the fresh adversary is stronger” | updates learned: co-trained / fresh "
             "| force budget | fresh α at the end (per seed) | min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["evaluated"]:
            lines.append(f"| {r['arm']} | not evaluated yet (`--reuse` runs it) |" + " |" * 9)
            continue
        m = lambda k: "–" if r[f"{k}_mean"] is None else _fmt(r[f"{k}_mean"])  # noqa: E731
        eff = (_est(r["effect"], r["effect_ci"]), f"{r['fresh_stronger_seeds']} of {len(r['seeds'])}",
               f"**{r['verdict']}**") if "effect" in r else ("– (no co-trained adversary)", "–", "–")
        n = lambda x: "–" if x is None else str(x)  # noqa: E731
        alpha = ", ".join("–" if a is None else f"{a:.2g}" for a in r.get("fresh_alpha") or [])
        mins = "–" if r.get("seconds") is None else f"{r['seconds'] / 60:.1f}"
        lines.append(f"| {r['arm']} | {m('no_adversary')} | {m('trained_adversary')} | {m('fresh_adversary')} | "
                     + " | ".join(eff) + f" | {n(r.get('co_trained_learning_updates'))} / {n(r.get('learning_updates'))} "
                     f"| {r['max_force']:g} | {alpha or '–'} | {mins} |")
    return "\n".join(lines) + "\n"


def _train_overrides(study: dict, spec: dict, run: str, out: Path | None = None) -> list[str]:
    """A train run's overrides: the study's, the tier's, its seeds (``seed=0`` and up, vmapped in one
    program), then the arm's own (which may move its seeds, e.g. ``seed=100`` for a fresh set), then the
    tier's for that arm (``tiers.<tier>.arm_overrides.<arm>``, e.g. a budget that is a fraction of the tier's);
    ``{data.<name>}`` is the path of the study's dataset ``name`` under ``out``."""
    items = [*study.get("base", []), *spec["overrides"], f"num_seeds={spec['seeds']}", "seed=0",
             *(study["arms"][run] or {}).get("overrides", []), *(spec.get("arm_overrides") or {}).get(run, [])]
    return _with_data(items, dataset_paths(study, spec, out)) if out is not None else items


def _run_llm(study: dict, spec: dict, out: Path, log) -> None:
    from purejaxrl.llm.run import run_llm

    n = spec["seeds"]
    _run_evolve(study, spec, out, log)
    evolve_dirs = _evolve_dirs(study, out)
    for seed in range(n):
        setup_dirs = {}
        for name, over in (study.get("setup") or {}).items():
            d = out / "runs" / f"setup_{name}" / f"seed{seed}"
            setup_dirs[name] = d
            _one_llm(run_llm, d, _subst(over + spec.get("setup_overrides", []), seed, {}) + [f"seed={seed}"],
                     log, f"setup {name} seed {seed}")
        for run in _runs(study):
            over = study.get("base", []) + spec["overrides"] + (study["arms"][run] or {}).get("overrides", [])
            d = out / "runs" / run / f"seed{seed}"
            _one_llm(run_llm, d, _subst(over, seed, setup_dirs, evolve_dirs) + [f"seed={seed}"], log, f"{run} seed {seed}")


def _one_llm(run_llm, d: Path, over: list[str], log, what: str) -> None:
    from purejaxrl.checkpoint import Checkpointer

    cfg = _compose_llm(over)
    if (d / "summary.json").exists():
        saved = yaml.safe_load((d / "config.yaml").read_text())
        drop = lambda c: {k: v for k, v in c.items() if k not in LLM_RUN_ONLY}  # noqa: E731
        from purejaxrl.llm.run import with_defaults, with_later_defaults

        _check_reused(d, drop(with_later_defaults(saved)), drop(with_later_defaults(with_defaults(cfg))))
    else:
        resuming = Checkpointer.exists(d / "checkpoints")
        log(f"{'resuming' if resuming else 'running'} llm {what}: {' '.join(over)}")
        run_llm({**cfg, "resume": resuming, "progress": False}, d, overrides=over)
    keep_evaluation_rows(d)


def keep_evaluation_rows(run_dir: Path) -> None:
    """``evaluations.jsonl``: the logged rows that hold an evaluation, with only the step keys and
    the evaluation columns — what learning curves and per-seed tables read, without the per-update
    training logs (which are not kept in results)."""
    src = Path(run_dir) / "metrics.jsonl"
    if not src.exists():
        return
    step = ("run", "seed", "update", "env_steps")
    rows = []
    for line in src.read_text().splitlines():
        if not line:
            continue
        r = json.loads(line)
        ev = {k: v for k, v in r.items() if (k.startswith(("eval_", "test_", "val_")) or k.startswith("algo.")) and v is not None
              and not (isinstance(v, float) and np.isnan(v))}
        if any(k.startswith(("eval_", "test_", "val_")) for k in ev):
            rows.append({**{k: r[k] for k in step if k in r}, **ev})
    dst, text = Path(run_dir) / "evaluations.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
    if not dst.exists() or dst.read_text() != text:  # a reused run's files stay as they were
        dst.write_text(text)


# ================================================================ scores
def arm_scores(study: dict, out: Path, metric: str | None = None) -> dict:
    """``arm -> {"seeds": [...], "validation": [...], "test": [...], "episodes": int}`` from the
    files of ``out`` for ``metric`` (default: the study's; chosen arms resolved on validation)."""
    metric = metric or study["metric"]["name"]
    marker = out / "study.json"
    n = json.loads(marker.read_text())["seeds"] if marker.exists() else None
    if study["kind"] == "meta":
        from purejaxrl.meta import study as meta_study

        tier = json.loads(marker.read_text())["tier"] if marker.exists() else "smoke"
        return meta_study.scores(study, out, metric, {**study["tiers"].get(tier, {}), "seeds": n})
    scores = {}
    for run, arms in _runs(study).items():
        for arm in arms:
            scores[arm] = _train_scores(out, arm, metric) if study["kind"] == "train" else _llm_scores(out, run, metric, n)
    for name, arm in study["arms"].items():
        if "choose" in (arm or {}):
            cands = arm["choose"]
            val = {c: float(np.mean(scores[c]["validation"])) for c in cands}
            if not all(np.isfinite(v) for v in val.values()):
                raise ConfigError(f"arm {name} chooses on validation episodes, but {[c for c in cands if not np.isfinite(val[c])]} "
                                  "have no validation score; rerun them with --reuse to evaluate them")
            best = max(cands, key=lambda c: val[c])  # ties: the first listed
            # a choice at either end of a list of 3 or more (a grid, in order): the best value may lie
            # outside the grid tried
            scores[name] = {**scores[best], "chosen": best, "validation_means": val,
                            "chosen_at_edge": len(cands) >= 3 and best in (cands[0], cands[-1])}
    return scores


def _read_eval(out: Path, name: str, arm: str) -> dict:
    f = out / "evals" / name
    if not f.exists():
        raise ConfigError(f"{f} is missing: run the study (purejaxrl reproduce ... --reuse) to evaluate arm {arm}")
    return json.loads(f.read_text())


def _train_scores(out: Path, arm: str, metric: str) -> dict:
    if metric == "grid_return":
        return _grid_scores(out, arm)
    res = {}
    for split in SPLITS:
        ev = _read_eval(out, f"{arm}_{split}.json", arm)
        if metric == "success":
            w = next(p for p in ev["per_weight"] if p["w"] == ev["guidance_weight"])
            vals = w["per_run_success"]
        else:
            vals = [r["mean_return"] for r in ev["per_run"]]
        seeds = [int(r["seed"]) for r in ev["per_run"]]
        res["episodes"] = int(ev["episodes_per_run"])
        tasks = [r.get("env.task") for r in ev["per_run"]]
        if tasks[0] is not None:  # env.kwargs.task=all: a seed's score is its mean over the tasks (OGBench's)
            order = sorted(set(seeds))
            by_seed = {s_: [float(v) for v, s2 in zip(vals, seeds) if s2 == s_] for s_ in order}
            if len({len(v) for v in by_seed.values()}) != 1:
                raise ConfigError(f"arm {arm}: seeds ran different numbers of tasks; rerun it")
            vals, seeds = [float(np.mean(by_seed[s_])) for s_ in order], order
            res["episodes"] *= len(set(tasks))  # episodes behind a seed's score: every task's
            res["tasks"] = sorted(set(tasks))
        res[split] = [float(v) for v in vals]
        res["seeds"] = seeds
        if len(set(res["seeds"])) != len(res["seeds"]):
            raise ConfigError(f"arm {arm}'s run holds several runs per seed (a vmap grid); a study arm is one "
                              "configuration per seed: make each value its own arm")
    return res


def _grid_scores(out: Path, arm: str) -> dict:
    res = {}
    for split in SPLITS:
        ev = _read_eval(out, f"{arm}_{split}_grid.json", arm)
        res[split] = [float(r["grid_return"]) for r in ev["per_run"]]
        res["seeds"] = [int(r["seed"]) for r in ev["per_run"]]
        res["episodes"] = int(ev["cells"]) * int(ev["episodes_per_cell"])
    if len(set(res["seeds"])) != len(res["seeds"]):
        raise ConfigError(f"arm {arm}'s run holds several runs per seed (a vmap grid); a study arm is one "
                          "configuration per seed: make each value its own arm")
    return res


def _llm_scores(out: Path, run: str, metric: str, n: int | None = None) -> dict:
    d = out / "runs" / run
    seeds = sorted(int(p.name[4:]) for p in d.glob("seed*") if (p / "summary.json").exists())
    if n is not None:  # the seeds of this call's study, not leftovers of a larger earlier one
        seeds = [s for s in seeds if s < n]
    if not seeds:
        raise ConfigError(f"{d} holds no finished seed: run the study (purejaxrl reproduce ... --reuse)")
    res = {"seeds": seeds, "validation": [], "test": []}
    for s in seeds:
        summ = json.loads((d / f"seed{s}" / "summary.json").read_text())
        cfg = yaml.safe_load((d / f"seed{s}" / "config.yaml").read_text())
        if metric not in summ:
            raise ConfigError(f"{d / f'seed{s}'}/summary.json has no {metric}; the study's metric must be a held-out key")
        res["test"].append(float(summ[metric]))
        val = "val_" + metric[len("test_"):] if metric.startswith("test_") else None  # a training count has no validation
        res["validation"].append(float(summ.get(val, np.nan)) if val else np.nan)
        res["episodes"] = int(cfg.get("eval_prompts", 0))
    return res


# ================================================================ claims
# what an llm claim may be computed on: a held-out summary key, or a whole-run count of sampled
# training successes (the run's totals, every iteration counted: whether a run escaped a cold start)
LLM_CLAIM_METRICS = ("test_", "train_successes_level")
SIGN_TEST_SEEDS = 6  # 2^-6 < 0.025: seeds that all agree exactly are evidence only from this many


def evaluate_claim(claim: dict, scores: dict, metric: str, bounds=None) -> dict:
    p = parse_claim(claim["claim"])
    a = [np.asarray(scores[x]["test"], np.float64) for x in p["arms"]]
    notes = []
    if p["form"] == "effect":
        sa, sb = scores[p["arms"][0]]["seeds"], scores[p["arms"][1]]["seeds"]
        common = sorted(set(sa) & set(sb))
        if len(common) < max(len(sa), len(sb)):
            notes.append(f"paired on the {len(common)} seeds both arms ran ({len(sa)} and {len(sb)} in all)")
        x = np.array([a[0][sa.index(s)] for s in common])
        y = np.array([a[1][sb.index(s)] for s in common])
        r = S.paired_difference(x, y, method="t")
        stat = "mean over common seeds of the paired difference A − B (t interval)" + (
            f", against the margin {p['null']:g}" if p["null"] else "")
        n = len(common)
    elif p["form"] == "threshold":
        r = S.mean_interval(a[0], method="t", null=p["null"])
        stat = f"mean (t interval), against {p['null']:g}"
        n = len(a[0])
    elif p["form"] == "aggregate":
        method = "t" if p["statistic"] == "mean" else "expanded"
        r = S.unpaired_difference(a[0], a[1], p["statistic"], method=method)
        how = "Welch t" if method == "t" else "stratified bootstrap, expanded percentile"
        stat = f"{p['statistic']}(A) − {p['statistic']}(B) ({how} interval)"
        n = min(len(x) for x in a)
    else:
        r = S.probability_of_improvement_interval(a[0], a[1])
        stat = "P(A > B) (stratified bootstrap, expanded percentile interval)"
        n = min(len(x) for x in a)
    v = S.verdict(r["ci"], p["direction"], p["null"], n)
    decisive = not v.startswith("inconclusive")
    bootstrap = p["form"] == "improvement" or (p["form"] == "aggregate" and p["statistic"] != "mean")
    if decisive and bootstrap and n < S.MIN_BOOTSTRAP_RUNS:
        v, decisive = f"inconclusive at {n} seeds", False
        notes.append(f"a bootstrap interval needs {S.MIN_BOOTSTRAP_RUNS} or more runs per arm to cover 95% (below that "
                     "it is little wider than the runs' range); a paired effect(A, B) uses a t interval")
    if decisive and r["ci"][0] == r["ci"][1] and n < SIGN_TEST_SEEDS:
        v, decisive = f"inconclusive at {n} seeds", False
        notes.append(f"every seed gives exactly the same value, so the t interval has no width; with fewer than "
                     f"{SIGN_TEST_SEEDS} seeds that agreement alone is not evidence (sign test)")
    missing = int(sum(np.isnan(x).sum() for x in a))
    if missing:
        notes.append(f"{missing} run(s) have no score (NaN: diverged or not evaluated)")
    if not decisive:
        info = _informativeness(p, a, r.get("per_seed"), bounds)
        if info:
            notes.append(info)
    episodes = sorted({scores[x]["episodes"] for x in p["arms"]})
    return {"id": claim.get("id"), "claim": claim["claim"], "paper": claim["paper"], "where": claim.get("where"),
            "metric": metric, "statistic": stat, "estimate": r["estimate"], "ci": r["ci"], "null": p["null"],
            "direction": p["direction"], "seeds": n, "episodes_per_seed": episodes[0] if len(episodes) == 1 else episodes,
            "verdict": v, "note": "; ".join(notes) or None, "per_seed": r.get("per_seed")}


def claim_bounds(study: dict, claim: dict):
    """The floor and ceiling a claim's metric has: the claim's own ``bounds``, else the study's
    ``metric.bounds`` when the claim is on the study's metric (they describe that metric only)."""
    if claim.get("bounds") is not None:
        return claim["bounds"]
    return study["metric"].get("bounds") if claim.get("metric", study["metric"]["name"]) == study["metric"]["name"] else None


def _informativeness(p: dict, arms: list[np.ndarray], paired: list[float] | None, bounds=None) -> str | None:
    """A computed remark when the data could not separate the arms: identical scores, or most runs
    of every arm at a bound of the metric (``metric.bounds``: a task solved by all, or by none)."""
    vals = np.concatenate(arms)
    if vals.size and np.all(vals == vals[0]) and p["form"] != "threshold":
        return (f"uninformative: every run of {' and '.join(p['arms'])} scored {vals[0]:g}; the metric cannot separate "
                "them at this budget")
    if paired is not None and len(paired) and np.all(np.asarray(paired) == 0):
        return "uninformative: both arms scored exactly the same on every seed (the same test episodes, the same returns)"
    if bounds is not None and p["form"] != "threshold":
        lo, hi = (float(b) for b in bounds)
        tol = 1e-6 * max(hi - lo, 1.0)
        for b, what in ((hi, "ceiling"), (lo, "floor")):
            at = [int(np.sum(np.abs(x - b) <= tol)) for x in arms]
            if all(k * 2 > len(x) for k, x in zip(at, arms)):
                counts = " and ".join(f"{k} of {len(x)} runs of {a}" for k, x, a in zip(at, arms, p["arms"]))
                return (f"uninformative: {counts} sit at the metric's {what} ({b:g}); at this budget the task "
                        "cannot separate the arms")
    return None


# ================================================================ report
def make_report(study: dict, out: Path, tier: str) -> dict:
    out = Path(out)
    study = for_tier(study, tier)
    metric = study["metric"]["name"]
    scores = arm_scores(study, out)
    by_metric = {metric: scores}
    for c in study["claims"]:
        m = c.get("metric", metric)
        if m not in by_metric:
            by_metric[m] = arm_scores(study, out, m)
    bounds = study["metric"].get("bounds")
    claims = [evaluate_claim(c, by_metric[c.get("metric", metric)], c.get("metric", metric), claim_bounds(study, c))
              for c in study["claims"]]
    arms = {}
    for name, sc in scores.items():
        t = np.asarray(sc["test"], np.float64)
        iqm_pt, iqm_ci = S.get_interval_estimates({name: t}, S.aggregate_iqm, reps=20_000)
        if len(t) < S.MIN_BOOTSTRAP_RUNS:  # too few runs for a bootstrap interval to mean 95%
            iqm_ci = {name: np.full(2, np.nan)}
        mean_ci = S.mean_interval(t, method="t")["ci"]
        if bounds is not None:  # a mean cannot leave the metric's range
            mean_ci = [float(np.clip(c, *bounds)) for c in mean_ci]
        arms[name] = {"overrides": (study["arms"][name] or {}).get("overrides", []),
                      "eval": (study["arms"][name] or {}).get("eval", []),
                      "label": (study["arms"][name] or {}).get("label", name),
                      "seeds": sc["seeds"], "test": sc["test"], "validation": sc["validation"],
                      "episodes_per_seed": sc["episodes"], "mean": float(t.mean()),
                      "mean_ci": mean_ci,
                      "iqm": float(iqm_pt[name]), "iqm_ci": [float(x) for x in iqm_ci[name]]}
        if "chosen" in sc:
            arms[name]["chosen"] = sc["chosen"]
            arms[name]["validation_means"] = sc["validation_means"]
            arms[name]["chosen_at_edge"] = sc["chosen_at_edge"]
    spec = study["tiers"][tier]
    seeds = json.loads((out / "study.json").read_text()).get("seeds") if (out / "study.json").exists() else spec["seeds"]
    report = {"study": study["study"], "title": study["title"], "paper": study["paper"], "kind": study["kind"], "tier": tier,
              "seeds": seeds, "metric": study["metric"], "base": study.get("base", []),
              "tier_overrides": spec.get("overrides", []), "arms": arms, "claims": claims,
              "claims_not_run": [c["claim"] + (f" on `{c['metric']}`" if c.get("metric") not in (None, study["metric"]["name"])
                                               else "") for c in study.get("claims_not_run", [])],
              "arm_overrides": {k: v for k, v in (spec.get("arm_overrides") or {}).items() if k in arms},
              "command": f"purejaxrl reproduce {study['study']} --tier {tier}"}
    report["compute_seconds"] = compute_seconds(study, out)
    if study["kind"] == "train" and (fa := fresh_adversary_summary(study, spec, out)) is not None:
        report["fresh_adversary"] = fa
    if study["kind"] == "meta":
        from purejaxrl.meta import study as meta_study

        pairs = [(c["claim"], c.get("metric"), *parse_claim(c["claim"])["arms"][:2]) for c in study["claims"]
                 if parse_claim(c["claim"])["form"] != "threshold"]
        report["per_es_seed"] = meta_study.per_es_seed(study, out, spec, pairs)
        report["bound_hits"] = meta_study.bound_hits(study, out, spec)
        meta_claim_checks(claims, report, meta_study.settings(study, spec))
        report["selected_plots"] = meta_study.draw_selected(out)
    report["curves"] = plot_curves(study, out)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(report_markdown(report))
    plot_report(report, out)
    return report


def meta_claim_checks(claims: list, report: dict, groups: dict) -> None:
    """Two readings of a meta study's comparisons the paired interval cannot make by itself.

    - Its interval covers the test seeds' variation at the ES seeds run, not the ES runs' own: a
      decisive verdict stands only when every ES run's objective points the same way (the effect with
      the m-th ES seed of each learned arm, strictly on the same side of the null as the estimate: a
      run with no effect at all does not agree); otherwise it is *inconclusive: ES runs disagree*, the
      per-run effects named in the note.
    - A comparison read mostly where runs end at an env's lowest or highest return cannot show an
      effect there: when a quarter or more of the two arms' runs behind it sit at a bound, the note
      says how many."""
    from purejaxrl.meta.study import DEFAULT_GROUP, at_bounds

    effects = report["per_es_seed"]["effects"]
    for c in claims:
        pc = parse_claim(c["claim"])
        if pc["form"] == "threshold":
            continue
        a, b = pc["arms"][:2]
        g = c["metric"] if c["metric"] in groups else DEFAULT_GROUP
        notes = [c["note"]] if c.get("note") else []
        per_run = effects.get(c["claim"] + (f" on {g}" if g != DEFAULT_GROUP else ""))
        if per_run and len(per_run) > 1 and not c["verdict"].startswith("inconclusive"):
            side = np.sign(c["estimate"] - c["null"])
            if any(np.sign(e - c["null"]) != side for e in per_run):
                c["verdict"] = "inconclusive: ES runs disagree"
                notes.append("the interval is decisive at these ES seeds, but the ES runs point different ways (effect "
                             "with the m-th ES seed of each learned arm: "
                             + ", ".join(f"{_fmt(e)}" for e in per_run) + "): the verdict would rest on one ES run")
        at, n = at_bounds(report["bound_hits"], groups[g], [a, b])
        if n and at * 4 >= n:
            notes.append(f"{at} of the {n} runs behind it ({100 * at / n:.0f}%) end at their env's lowest or highest "
                         "return, where no difference can show (see 'At the floor or ceiling')")
        c["note"] = "; ".join(notes) or None


def compute_seconds(study: dict, out: Path) -> float:
    """Compile plus run time of every run of the study (from the runs' ``summary.json``; setup runs
    included), on whatever machine ran them."""
    total = 0.0
    for f in (out / "runs").rglob("summary.json"):
        sm = json.loads(f.read_text())
        if "run_seconds" in sm:
            total += float(sm.get("run_seconds") or 0) + float(sm.get("compile_seconds") or 0)
        else:
            total += float(sm.get("seconds_per_iteration") or 0) * int(sm.get("iterations") or 0)
            total += float(sm.get("compile_seconds") or 0)
    return total


def learning_curves(study: dict, out: Path) -> dict:
    """``arm -> (x, [seeds, points])`` from the runs' ``evaluations.jsonl``: the greedy tests during
    training (``eval_return`` over env steps) or the held-out metric over iterations (llm)."""
    if study["kind"] == "meta":
        from purejaxrl.meta import study as meta_study

        return meta_study.curves(study, out)
    metric = "eval_return" if study["kind"] == "train" else "eval_" + study["metric"]["name"][len("test_"):]
    curves = {}
    for run, arms in _runs(study).items():
        d = out / "runs" / run
        files = [d / "evaluations.jsonl"] if study["kind"] == "train" else sorted(d.glob("seed*/evaluations.jsonl"))
        per_seed: dict = {}
        for i, f in enumerate(files):
            if not f.exists():
                continue
            rows = [json.loads(line) for line in f.read_text().splitlines() if line]
            name = metric if study["kind"] == "train" or any(metric in r for r in rows) else "test_" + metric[len("eval_"):]
            for r in rows:  # (llm runs from before the tests during training had their own prompts logged test_*)
                if r.get(name) is None:
                    continue
                key = r.get("seed", i) if study["kind"] == "train" else i
                x = r.get("env_steps") if study["kind"] == "train" else r.get("update", 0) + 1
                per_seed.setdefault(key, {})[x] = r[name]
        if not per_seed:
            continue
        xs = sorted(set.intersection(*[set(v) for v in per_seed.values()]))
        ys = np.array([[per_seed[k][x] for x in xs] for k in sorted(per_seed)], np.float64)
        for arm in arms:
            if not (study["arms"][arm] or {}).get("eval"):  # evaluation-only arms share the run's curve
                curves[arm] = (np.asarray(xs), ys)
    return curves


def plot_curves(study: dict, out: Path) -> str | None:
    """``curves.png``: mean and 95% interval over seeds of each arm's learning curve."""
    curves = learning_curves(study, out)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for arm, (x, ys) in curves.items():
        mean = ys.mean(0)
        band = np.array([S.mean_interval(ys[:, j], method="t")["ci"] for j in range(ys.shape[1])]).T
        line, = ax.plot(x, mean, label=f"{arm} ({ys.shape[0]} seeds)")
        if ys.shape[0] > 1:
            ax.fill_between(x, band[0], band[1], color=line.get_color(), alpha=0.15)
    ax.set_xlabel({"train": "env steps", "meta": "ES generation"}.get(study["kind"], "iteration"))
    ax.set_ylabel("greedy return during training" if study["kind"] == "train" else
                  "held-out fitness of the ES mean" if study["kind"] == "meta" else
                  study["metric"]["name"].replace("test_", "") + " during training (other prompts than the test's)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    return "curves.png"


def _digits(*xs) -> int:
    """Decimals for numbers shown together: 3 below 10, 1 below 1,000, else 0 (by the largest)."""
    finite = [abs(float(x)) for x in xs if x is not None and np.isfinite(float(x))]
    ax = max(finite, default=0.0)
    return 3 if ax < 10 else 1 if ax < 1000 else 0


def _fmt(x: float, nd: int | None = None) -> str:
    if x is None or not np.isfinite(float(x)):
        return "–"
    return f"{float(x):,.{_digits(x) if nd is None else nd}f}"


def _est(est: float, ci) -> str:
    """``estimate [low, high]`` with one number of decimals for the three."""
    nd = _digits(est, *ci)
    return f"{_fmt(est, nd)} [{_fmt(ci[0], nd)}, {_fmt(ci[1], nd)}]"


def _unit(report: dict) -> str:
    """What stands behind one seed's score: prompts (llm), training runs (meta) or episodes."""
    return {"llm": "prompts", "meta": "runs"}.get(report.get("kind"), "episodes")


def claims_table(report: dict) -> str:
    default = report["metric"]["name"]
    unit = _unit(report)
    lines = [f"| claim | the paper says | estimate [95% CI] | seeds × {unit} | verdict |", "|---|---|---|---|---|"]
    for c in report["claims"]:
        where = f" ({c['where']})" if c.get("where") else ""
        quote = " ".join(str(c["paper"]).split())
        verdict = f"**{c['verdict']}**" + (f" — {c['note']}" if c.get("note") else "")
        on = f" on `{c['metric']}`" if c["metric"] != default else ""
        lines.append(f"| `{c['claim']}`{on} | “{quote}”{where} | {_est(c['estimate'], c['ci'])} "
                     f"| {c['seeds']} × {c['episodes_per_seed']} | {verdict} |")
    return "\n".join(lines) + "\n"


def start_arm(name: str, arms) -> str | None:
    """The arm ``name`` starts from: ``<prefix>_start`` for an arm ``<prefix>_...`` when the study has
    one (e.g. ``add_grpo`` from ``add_start``), else ``start``; None for a start arm or without one."""
    prefix = name.split("_", 1)[0]
    own = f"{prefix}_start"
    if name in ("start", own) and name.endswith("start"):
        return None
    return own if own in arms else "start" if "start" in arms else None


def below_start(report: dict) -> dict:
    """``arm -> (seeds below its start, seeds paired)``: where a study has ``start`` arms (the model
    every arm of a seed begins from), on how many seeds each arm ends below its own."""
    arms = report["arms"]
    out = {}
    for name, a in arms.items():
        ref = start_arm(name, arms)
        if ref is None:
            continue
        st = dict(zip(arms[ref]["seeds"], arms[ref]["test"]))
        pairs = [(v, st[s_]) for s_, v in zip(a["seeds"], a["test"]) if s_ in st]
        out[name] = (sum(v < b for v, b in pairs), len(pairs))
    return out


def arms_table(report: dict) -> str:
    m = report["metric"]["name"]
    unit = _unit(report)
    below = below_start(report)
    extra = " below its `start` (seeds) |" if below else ""
    lines = [f"| arm | {m}: mean [95% CI] | IQM [95% CI] | per seed (test) | {unit} per seed |{extra}",
             "|---|---|---|---|---|" + ("---|" if below else "")]
    for name, a in report["arms"].items():
        label = name + (f" → {a['chosen']} (on validation{'; at the edge of its grid' if a.get('chosen_at_edge') else ''})"
                        if a.get("chosen") else "")
        nd = _digits(*a["test"])
        per = ", ".join(_fmt(v, nd) for v in a["test"])
        col = (f" {below[name][0]} of {below[name][1]} |" if name in below else " – |") if below else ""
        lines.append(f"| {label} | {_est(a['mean'], a['mean_ci'])} | {_est(a['iqm'], a['iqm_ci'])} | {per} "
                     f"| {a['episodes_per_seed']} |{col}")
    return "\n".join(lines) + "\n"


def readme_block(report: dict) -> str:
    """What the README shows of a study: its claims and arms tables, and the fresh-adversary table where
    the study has one (the same text as report.md)."""
    fa = ("\n" + fresh_adversary_table(report["fresh_adversary"])) if report.get("fresh_adversary") else ""
    return claims_table(report) + "\n" + arms_table(report) + fa


def report_markdown(report: dict) -> str:
    p = report["paper"]
    over = lambda xs: " ".join(f"`{x}`" for x in xs) or "–"  # noqa: E731
    lines = [f"# {report['title']} — `{report['study']}`, tier {report['tier']}", "",
             f"Paper: {p['cite']}" + (f" ({p['url']})" if p.get("url") else ""), "",
             f"Generated by `{report['command']}` from the run directories under `runs/` and the evaluations "
             "under `evals/`; every number below is computed from those files, and every verdict by one rule: "
             "*supported* when the 95% interval excludes the null value in the paper's direction, *contradicted* "
             "when it excludes it the other way, else *inconclusive at n seeds*.", "",
             f"Metric: `{report['metric']['name']}` — {report['metric'].get('description', '')}. "
             f"Seeds: {report['seeds']} (independent evaluation keys per seed; arms on a seed share theirs). "
             f"Compute: {report['compute_seconds'] / 60:.1f} min of "
             + ("ES generations (compile included) over all meta-training runs; the held-out evaluations of the ES "
                "mean and the arms' evaluations are not counted." if report.get("kind") == "meta"
                else "compile and training over all runs."), "",
             "## Claims", "", claims_table(report)]
    if report.get("claims_not_run"):
        lines += ["Not decided here (the arms they compare were not run for this report): "
                  + ", ".join(f"`{c}`" if " on `" not in c else "`" + c.replace(" on `", "` on `", 1)
                              for c in report["claims_not_run"]) + ".", ""]
    lines += ["## Arms", "", arms_table(report)]
    if report.get("fresh_adversary"):
        ep = {r["episodes_per_seed"] for r in report["fresh_adversary"] if r["evaluated"]}
        lines += ["## Against a fresh adversary", "",
                  "Each seed's final protagonist (greedy) on the nominal task with no adversary, against the adversary "
                  "it was trained with (greedy), and against a new one (greedy) trained from scratch against it, frozen, "
                  "at the same force budget, after a random warm-up as long as the run's, for as many learning updates as "
                  "the co-trained adversary had (the table gives both counts and the new adversary's final entropy "
                  "temperature α)" + (f"; {', '.join(map(str, sorted(ep)))} test episodes per seed" if ep else "")
                  + ". Mean greedy returns over seeds; the effect is paired per seed. The fresh adversaries' training "
                  "time (min) is not in the compute figure above.", "",
                  fresh_adversary_table(report["fresh_adversary"])]
    lines += ["## Setup", "",
             f"Shared overrides: {over(report['base'])}; tier overrides: {over(report['tier_overrides'])}.", ""]
    for name, a in report["arms"].items():
        if a.get("chosen"):
            vm = ", ".join(f"{k} {_fmt(v)}" for k, v in a["validation_means"].items())
            lines.append(f"- `{name}`: chosen on validation episodes (means: {vm}); its test episodes are reported. "
                         "Both come from the same trained runs, so this removes the optimism of choosing on the "
                         "reported episodes, not the luck of the training seeds; a confirmatory figure runs the "
                         "choice on fresh seeds as an arm of its own.")
        else:
            tier_own = (report.get("arm_overrides") or {}).get(name)
            lines.append(f"- `{name}`: {over(a['overrides'])}" + (f"; at this tier {over(tier_own)}" if tier_own else "")
                         + (f"; evaluated with {over(a['eval'])}" if a["eval"] else ""))
    lines += ["", "Statistics for each claim:", ""]
    for c in report["claims"]:
        on = f" on `{c['metric']}`" if c["metric"] != report["metric"]["name"] else ""
        lines.append(f"- `{c['claim']}`{on}: {c['statistic']}, n = {c['seeds']} seeds"
                     + (f"; per seed {', '.join(_fmt(v) for v in c['per_seed'])}" if c.get("per_seed") else ""))
    es = report.get("per_es_seed")
    if es and es["arms"]:
        M = es["es_seeds"]
        groups = list(next(iter(es["arms"].values())))
        lines += ["", "Per ES seed (the verdicts average a learned arm over its ES seeds before pairing; "
                  "means over test seeds):", "",
                  "| arm | " + " | ".join(f"{g} (ES seeds {', '.join(map(str, range(M)))})" for g in groups) + " |",
                  "|---|" + "---|" * len(groups)]
        for arm, row in es["arms"].items():
            lines.append(f"| {arm} | " + " | ".join(" / ".join(_fmt(v) for v in row[g]) for g in groups) + " |")
        lines.append("")
        for claim, vals in es["effects"].items():
            lines.append(f"- `{claim}` with the m-th ES seed of each learned arm: "
                         + ", ".join(f"m={m}: {_fmt(v)}" for m, v in enumerate(vals)))
    hits = report.get("bound_hits")
    if hits:
        rows = [(x, by_arm) for x, by_arm in hits.items()
                if any(v["floor"] + v["ceiling"] for v in by_arm.values())]
        lines += ["", "## At the floor or ceiling", ""]
        if rows:
            arm_names = list(next(iter(hits.values())))
            lines += ["Runs (test seeds × ES seeds) that ended exactly at the env's lowest / highest return, per "
                      "setting with any:", "", "| setting | " + " | ".join(arm_names) + " |",
                      "|---|" + "---|" * len(arm_names)]
            for x, by_arm in rows:
                lines.append(f"| {x} | " + " | ".join(f"{v['floor']} / {v['ceiling']} of {v['runs']}"
                                                       for v in by_arm.values()) + " |")
        else:
            lines.append("No run ended at its env's lowest or highest return.")
    if report.get("selected_plots"):
        lines += ["", "## What each ES run handed over", "",
                  "Each run's chosen objective (or rule) over training progress, at progress values its training "
                  "reaches:", ""] + [f"![{p}]({p})" for p in report["selected_plots"]]
    lines += ["", "![aggregates](aggregate.png)", "", "![profiles](profile.png)", ""]
    if report.get("curves"):
        lines += ["![learning curves (mean and 95% t interval over seeds)](curves.png)", ""]
    if any(parse_claim(c["claim"])["form"] != "threshold" for c in report["claims"]):
        lines += ["![probability of improvement](improvement.png)", ""]
    return "\n".join(lines)


def plot_report(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["arms"])
    arms = report["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(names) + 1.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], (("mean", "mean"), ("iqm", "IQM"))):
        est = np.array([arms[n][key] for n in names])
        ci = np.array([arms[n][f"{key}_ci"] for n in names], dtype=np.float64)
        err = np.stack([est - np.nan_to_num(ci[:, 0], nan=est), np.nan_to_num(ci[:, 1], nan=est) - est])
        ax.errorbar(est, range(len(names)), xerr=np.maximum(err, 0), fmt="o", capsize=4)
        ax.set_yticks(range(len(names)), names)
        ax.set_title(f"{title} of {report['metric']['name']} (95% CI)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "aggregate.png", dpi=100)
    plt.close(fig)

    allv = np.concatenate([np.asarray(arms[n]["test"], np.float64) for n in names])
    taus = np.linspace(allv.min(), allv.max(), 50) if allv.size else np.zeros(1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for n in names:
        t, f, band = S.performance_profile(np.asarray(arms[n]["test"]), taus, reps=1000)
        line, = ax.plot(t, f, label=n)
        ax.fill_between(t, band[0], band[1], color=line.get_color(), alpha=0.15)
    ax.set_xlabel(report["metric"]["name"] + " τ")
    ax.set_ylabel("fraction of runs > τ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "profile.png", dpi=100)
    plt.close(fig)

    pairs = []
    for c in report["claims"]:
        p = parse_claim(c["claim"])
        if p["form"] != "threshold" and tuple(p["arms"]) not in pairs:
            pairs.append(tuple(p["arms"]))
    if pairs:
        fig, ax = plt.subplots(figsize=(6, 0.5 * len(pairs) + 1.4))
        for i, (x, y) in enumerate(pairs):
            r = S.probability_of_improvement_interval(arms[x]["test"], arms[y]["test"], reps=5000)
            ax.errorbar(r["estimate"], i, xerr=[[r["estimate"] - r["ci"][0]], [r["ci"][1] - r["estimate"]]], fmt="o", capsize=4)
        ax.axvline(0.5, color="gray", ls="--")
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(range(len(pairs)), [f"P({x} > {y})" for x, y in pairs])
        ax.set_title("probability of improvement (95% CI)", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "improvement.png", dpi=100)
        plt.close(fig)


# ================================================================ README sync
BLOCK = re.compile(r"(<!-- reproduce:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /reproduce -->)", re.S)


def readme_blocks(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def summary_block(results: Path) -> str:
    """One table of every recorded study's claims and verdicts (the README's front page)."""
    lines = ["| study | claim | the paper | estimate [95% CI] | seeds | verdict |", "|---|---|---|---|---|---|"]
    for f in sorted(Path(results).glob("*/report.json")):
        r = json.loads(f.read_text())
        cite = r["paper"]["cite"].split(". ")
        short = cite[1] if len(cite) > 1 else cite[0]
        for c in r["claims"]:
            on = f" on `{c['metric']}`" if c["metric"] != r["metric"]["name"] else ""
            uninformative = " (uninformative)" if "uninformative" in (c.get("note") or "") else ""
            lines.append(f"| `{r['study']}` | `{c['claim']}`{on} | {short} | {_est(c['estimate'], c['ci'])} | {c['seeds']} "
                         f"| **{c['verdict']}**{uninformative} |")
    return "\n".join(lines) + "\n"


def sync_readme(readme: Path, results: Path, check: bool = False) -> list[str]:
    """Replace every ``<!-- reproduce:NAME -->`` block of ``readme`` (a README or a docs page) with
    the tables of ``results/NAME/report.json`` (``summary``: every study's claims in one table);
    with ``check``, only list the blocks that differ."""
    text = readme.read_text()
    stale = []

    def repl(m):
        if m.group("name") == "summary":
            body = summary_block(results)
            if body != m.group("body"):
                stale.append("summary")
            return m.group(1) + body + m.group(4)
        f = results / m.group("name") / "report.json"
        if not f.exists():
            raise ConfigError(f"{readme} shows study results {m.group('name')} but {f} does not exist")
        body = readme_block(json.loads(f.read_text()))
        if body != m.group("body"):
            stale.append(m.group("name"))
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(repl, text)
    if not check and new != text:
        readme.write_text(new)
    return stale


# ================================================================ CLI
USAGE = """purejaxrl reproduce STUDY [--tier smoke|cpu|gpu] [--seeds N] [--out DIR] [--reuse]
       purejaxrl reproduce STUDY --report-only --out DIR      (the report again, from the files)
       purejaxrl reproduce --list
       purejaxrl reproduce --readme [README.md docs/*.md] [--results DIR] [--check]"""


def reproduce_main(argv: list[str]) -> None:
    p = argument_parser("purejaxrl reproduce", "A paper's claims as verdicts with confidence intervals, from run directories.")
    p.add_argument("study", nargs="?", help=f"a study in conf/reproduce/ ({', '.join(list_studies())}) or a .yaml file")
    p.add_argument("--tier", default="smoke", choices=TIERS, help="the budget (default smoke: minutes, mechanics only)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the tier's)")
    p.add_argument("--out", default=None, help="output folder (default reproduce/STUDY/TIER)")
    p.add_argument("--reuse", action="store_true", help="keep finished runs in --out, resume unfinished ones")
    p.add_argument("--report-only", action="store_true", help="write the report from the files in --out, run nothing")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.add_argument("--readme", nargs="*", default=None, metavar="FILE",
                   help="update the <!-- reproduce:NAME --> blocks of these files (default: README.md and docs/*.md)")
    p.add_argument("--results", default="benchmarks/results/reproduce", help="with --readme: the folder of recorded studies")
    p.add_argument("--check", action="store_true", help="with --readme: exit 1 if a block differs, change nothing")
    a = p.parse_args(argv)
    if a.list:
        for name in list_studies():
            s = load_study(name)
            print(f"{name}: {s['title']} — {len(s['arms'])} arms, {len(s['claims'])} claims, tiers {', '.join(s['tiers'])}")
        return
    if a.readme is not None:
        files = [Path(x) for x in a.readme] or [Path("README.md"), *sorted(Path("docs").glob("*.md"))]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise ConfigError(f"--readme: {', '.join(missing)} does not exist (run from the repository root, or name the files)")
        stale = {str(f): sync_readme(f, Path(a.results), check=a.check) for f in files}
        stale = {k: v for k, v in stale.items() if v}
        if a.check and stale:
            print("; ".join(f"{k} differs from the reports for {', '.join(v)}" for k, v in stale.items())
                  + "; run purejaxrl reproduce --readme")
            sys.exit(1)
        blocks = sum(len(readme_blocks(f.read_text())) for f in files)
        print(f"{len(files)} file(s), {blocks} study blocks " + ("checked" if a.check else "in step"))
        return
    if not a.study:
        raise ConfigError(f"purejaxrl reproduce needs a study; usage: {USAGE}")
    study = load_study(a.study)
    if a.report_only:
        out = Path(a.out or Path("reproduce") / study["study"] / a.tier)
        if not (out / "study.json").exists():
            raise ConfigError(f"--report-only: {out} holds no study run (no study.json); run the study first")
        tier = json.loads((out / "study.json").read_text())["tier"]
        report = make_report(study, out, tier)
    else:
        report = run_study(study, a.tier, a.seeds, a.out, a.reuse)
        out = Path(a.out or Path("reproduce") / study["study"] / a.tier)
    print(claims_table(report))
    print(f"report: {out / 'report.md'}")


def remove_logs(out: Path) -> None:
    """Delete per-update logs and checkpoints below ``out`` (what results keep is the rest)."""
    for pat in ("metrics.jsonl", "metrics.csv"):
        for f in Path(out).rglob(pat):
            f.unlink()
    for d in Path(out).rglob("checkpoints"):
        shutil.rmtree(d)
