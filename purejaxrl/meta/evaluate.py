"""``purejaxrl meta-eval``: PPO with an evolved objective beside PPO-clip and DPO (or the LPG agent
with an evolved update rule beside the hand-written A2C rule), on other envs and other training
horizons (multiples of the meta-training budget), seeds vmapped.

    purejaxrl meta-eval outputs/meta1 env=acrobot,minatar_breakout horizons=0.25,0.5,1,2,4
    purejaxrl meta-eval outputs/meta_lpg setup=gridworld_transfer horizons=0.25,1,2.5

Writes ``meta_eval.json`` (every run's final greedy return), ``meta_eval.md`` (a table) and
``meta_eval.png`` (return against horizon, one panel per env) into the meta run directory
(``meta_eval_best.*`` for ``objective=best``).  The learned objective is the one chosen on
held-out seeds (``selected/``) where the run has it; every objective trains on the same test
seeds (``PRNGKey(1234)``), which are neither the ES's seeds nor the held-out ones.  A ``setup``
(``conf/meta_eval/NAME.yaml``) gives each env its own PPO settings and 1× budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import yaml

from purejaxrl import objectives
from purejaxrl.config import CONF_DIR, ConfigError, run_grid
from purejaxrl.meta.run import inner_config
from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

USAGE = ("purejaxrl meta-eval META_RUN [env=a,b] [horizons=0.25,0.5,1,2,4] [objective=selected|mean|best] [seeds=4] "
         "[baselines=clip,dpo (algo=lpg runs: a2c)] [setup=NAME] [ablation=true|false]")


def rule_without_time(rule, meta_cfg: dict):
    """TA-LPG's time-input ablation for a rule meta-trained under ``meta_cfg``: the time inputs fixed
    at the middle of the lifetimes it was trained on (its ``algo.random_lifetime``, else the run's
    updates)."""
    from purejaxrl import update_rules

    a = meta_cfg["algo"]
    life = a.get("random_lifetime") or [int(a["total_timesteps"]) // (int(a["num_envs"]) * int(a["num_steps"]))] * 2
    return update_rules.without_time(rule, *update_rules.fixed_time_inputs(life))


def _baseline(name: str, lpg: bool):
    from purejaxrl import update_rules

    if lpg:
        if name != "a2c":
            raise ConfigError(f"meta-eval: baselines={name!r}; an LPG run's baseline is the hand-written rule: a2c")
        return update_rules.make_rule("a2c")
    if name == "a2c":
        raise ConfigError("meta-eval: baselines=a2c is an LPG update rule; a PPO run's baselines: clip, dpo")
    return objectives.builtin(name)


SETUP_DIR = CONF_DIR / "meta_eval"
TEST_SEED = 1234  # the evaluation seeds' key: PRNGKey(1234), never a meta run's ES or held-out stream


OPEN_ENDS = ("open_below", "open_above")


def training_entry(entry: dict) -> dict:
    """An env's setup entry without what does not change its training (the open ends): what a study's
    evaluation records as its source."""
    return {k: v for k, v in entry.items() if k not in OPEN_ENDS}


def load_setup(name: str) -> dict[str, dict]:
    """``conf/meta_eval/NAME.yaml``: ``envs: {env: {algo: {setting: value}, network: {...}, bounds: [low,
    high], open_below: bool, open_above: bool}}``, the settings each env is trained with (its 1× budget
    in ``algo.total_timesteps``; settings not given are the meta run's) and the range of its return (a
    study's normalised score; ``open_above`` / ``open_below``: that end normalises but is not a bound a
    return cannot pass)."""
    path = Path(name) if name.endswith(".yaml") else SETUP_DIR / f"{name}.yaml"
    if not path.exists():
        have = ", ".join(sorted(p.stem for p in SETUP_DIR.glob("*.yaml")))
        raise ConfigError(f"setup={name!r}: no {path.name}; valid: {have}")
    data = yaml.safe_load(path.read_text()) or {}
    envs = data.get("envs")
    ok = isinstance(envs, dict) and all(
        isinstance(v, dict) and set(v) <= {"algo", "network", "bounds", *OPEN_ENDS}
        and isinstance(v.get("algo", {}), dict) and all(isinstance(v.get(k, False), bool) for k in OPEN_ENDS)
        and isinstance(v.get("network", {}), dict)
        and (v.get("bounds") is None or (isinstance(v["bounds"], list) and len(v["bounds"]) == 2
                                        and v["bounds"][0] < v["bounds"][1])) for v in envs.values())
    if not ok:
        raise ConfigError(f"{path}: needs envs: {{env: {{algo: {{setting: value}}, network: {{setting: value}}, "
                          "bounds: [low, high], open_below/open_above: true|false}}}} (training settings and the "
                          "return's range per env; open_above: high is a normaliser, not a ceiling; open_below: the same "
                          "for low)")
    # "network" and the open ends only where given: a study's evaluations are keyed by their env's entry, kept
    # while it is unchanged (the open ends left out of that key: they do not change training)
    return {k: {"algo": dict(v.get("algo") or {}), "bounds": v.get("bounds"), **{e: True for e in OPEN_ENDS if v.get(e)},
                **({"network": dict(v["network"])} if v.get("network") else {})} for k, v in envs.items()}


def load_meta_run(run_dir: str | Path) -> dict:
    d = Path(run_dir)
    if not (d / "config.yaml").exists():
        raise ConfigError(f"{d} is not a run directory (no config.yaml); give the run_dir of a purejaxrl meta run")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    if not isinstance(cfg, dict) or "es" not in cfg:
        raise ConfigError(f"{d} is not a purejaxrl meta run (its config has no es settings)")
    return cfg


def setting_config(meta_cfg: dict, entry: dict | None, env: str, horizon: float) -> dict:
    """The training config of one evaluation setting: the meta run's inner setup, updated by the
    setup's ``entry`` for ``env`` (its ``algo`` and ``network`` settings and 1× budget), for ``horizon``
    × that budget in whole updates (``algo.total_timesteps``); an LPG agent lives the whole budget
    (no random lifetime)."""
    entry = entry or {}
    base = inner_config(meta_cfg)
    algo = {**meta_cfg["algo"], **entry.get("algo", {})}
    if algo["name"] == "lpg":
        algo["random_lifetime"] = None
    per_update = int(algo["num_envs"]) * int(algo["num_steps"])
    steps = max(int(round((int(algo["total_timesteps"]) // per_update) * horizon)), 1) * per_update
    env_cfg = meta_cfg["env"] if env == meta_cfg["env"]["name"] else {"name": env, "kwargs": {}}
    return {**base, "env": env_cfg, "algo": {**algo, "total_timesteps": steps},
            "network": {**base["network"], **entry.get("network", {})}}


def final_returns(cfg: dict, objective, seeds: int, seed: int = TEST_SEED) -> np.ndarray:
    """Final greedy return of PPO with ``objective`` (or of the LPG agent with ``objective`` an update
    rule) under ``cfg`` for ``seeds`` vmapped seeds."""
    from purejaxrl.update_rules import UpdateRule

    algo = build_algorithm(cfg, **({"rule": objective} if isinstance(objective, UpdateRule) else {"objective": objective}))
    _, hp, _ = run_grid({**cfg, "num_seeds": 1, "vmap": {}}, algo.HPARAMS)
    hp = batch_hparams(algo, {k: np.repeat(v, seeds) for k, v in hp.items()}, seeds)
    tr = Trainer(algo, seeds, chunks=1, num_evals=1)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    _, m = tr.chunk(tr.init(keys, hp), hp, 0)
    return m["eval_return"][:, -1]


def meta_eval(run_dir: str | Path, envs: list[str] | None = None, horizons=(0.25, 0.5, 1.0, 2.0, 4.0),
              which: str | None = None, seeds: int = 4, baselines=None, progress=print,
              setup: dict[str, dict] | None = None, ablation: bool = True) -> dict:
    """Every objective (the learned one — ``which``: ``selected`` by held-out evaluation where the run
    has it, else the final ``mean``, or ``best`` —, its time-input ablation for TA-LPO, and the
    baselines) trains PPO on each env at each horizon, on the same ``seeds`` test seeds."""
    run_dir = Path(run_dir)
    cfg = load_meta_run(run_dir)
    if which is None:
        which = "selected" if (run_dir / "selected").exists() else "mean"
    lpg = cfg["algo"]["name"] == "lpg"
    from purejaxrl import update_rules

    learned = update_rules.load_rule(run_dir / which) if lpg else objectives.load_objective(run_dir / which)
    baselines = (("a2c",) if lpg else ("clip", "dpo")) if baselines is None else baselines
    import envs as _envs

    setup = setup or {}
    envs = envs or ([e for e in setup] if setup else [cfg["env"]["name"]])
    bad = [e for e in envs if e not in _envs.list_envs()]
    if bad:
        raise ConfigError(f"env={bad[0]!r} is not an environment; valid: {', '.join(_envs.list_envs())}")
    if any(not h > 0 for h in horizons):
        raise ConfigError(f"horizons={list(horizons)} must all be positive multiples of the meta-training budget")
    if seeds < 1:
        raise ConfigError(f"seeds={seeds} must be >= 1")
    if lpg:
        name = "ta_lpg" if learned.spec.get("time_aware") else "lpg"
        objs = {f"{name} ({which})": learned}
        if ablation and learned.spec.get("time_aware"):
            objs[f"{name} ({which}, time inputs fixed)"] = rule_without_time(learned, cfg)
    else:
        objs = {f"{learned.name} ({which})": learned}
        if ablation and learned.spec.get("kind") == "ta_lpo":
            objs[f"{learned.name} ({which}, p·x = 0)"] = objectives.without_progress(learned)
    objs.update({b: _baseline(b, lpg) for b in baselines})
    rows = []
    for env in envs:
        for h in horizons:
            inner = setting_config(cfg, setup.get(env), env, h)
            steps = inner["algo"]["total_timesteps"]
            for label, obj in objs.items():
                r = final_returns(inner, obj, seeds)
                rows.append({"env": env, "horizon": h, "env_steps": steps, "objective": label,
                             "mean": float(r.mean()), "std": float(r.std()), "per_seed": [float(x) for x in r]})
                progress(f"{env} x{h:g} ({steps} steps) {label}: {r.mean():.1f} ± {r.std():.1f}")
    result = {"meta_run": str(run_dir), "objective": which, "seeds": seeds, "seed_key": TEST_SEED,
              "meta_budget": int(cfg["algo"]["total_timesteps"]), "meta_env": cfg["env"]["name"],
              "setup": setup, "rows": rows}
    stem = "meta_eval" if which in ("mean", "selected") else f"meta_eval_{which}"
    (run_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (run_dir / f"{stem}.md").write_text(table(result))
    plot_meta_eval(result, run_dir / f"{stem}.png")
    return result


def table(result: dict) -> str:
    """Markdown: one row per (env, horizon), one column per objective (mean ± std over seeds)."""
    labels = list(dict.fromkeys(r["objective"] for r in result["rows"]))
    lines = ["| env | horizon | steps | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    keys = list(dict.fromkeys((r["env"], r["horizon"]) for r in result["rows"]))
    for env, h in keys:
        cells = {r["objective"]: r for r in result["rows"] if r["env"] == env and r["horizon"] == h}
        best = max(c["mean"] for c in cells.values())
        fmt = lambda c: (f"**{c['mean']:.1f}**" if c["mean"] == best else f"{c['mean']:.1f}") + f" ± {c['std']:.1f}"  # noqa: E731
        steps = next(iter(cells.values()))["env_steps"]
        lines.append(f"| {env} | {h:g}× | {steps} | " + " | ".join(fmt(cells[lab]) for lab in labels) + " |")
    return "\n".join(lines) + "\n"


def plot_meta_eval(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(4.6 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for label in dict.fromkeys(r["objective"] for r in result["rows"]):
            rs = [r for r in result["rows"] if r["env"] == env and r["objective"] == label]
            x = [r["horizon"] for r in rs]
            m, s = np.array([r["mean"] for r in rs]), np.array([r["std"] for r in rs])
            line, = ax.plot(x, m, marker="o", label=label)
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training horizon (× meta-training budget)")
        ax.set_ylabel("final greedy return")
        from envs.registry import ALIASES

        same = ALIASES.get(env, env) == ALIASES.get(result["meta_env"], result["meta_env"])
        ax.set_title(env + (" (meta-training env)" if same else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def meta_eval_main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise ConfigError(f"purejaxrl meta-eval needs the meta run directory first; usage: {USAGE}")
    run_dir, opts = argv[0], {}
    for a in argv[1:]:
        k, eq, v = a.partition("=")
        if not eq or k not in ("env", "horizons", "objective", "seeds", "baselines", "setup", "ablation"):
            raise ConfigError(f"meta-eval: {a!r} is not an option; usage: {USAGE}")
        opts[k] = v
    try:
        horizons = [float(x) for x in opts.get("horizons", "0.25,0.5,1,2,4").split(",")]
        seeds = int(opts.get("seeds", 4))
    except ValueError as e:
        raise ConfigError(f"meta-eval: horizons must be numbers and seeds an integer ({e})") from None
    which = opts.get("objective")
    if which not in (None, "selected", "mean", "best"):
        raise ConfigError(f"meta-eval: objective={which!r}; valid: selected (the ES mean chosen on held-out seeds, the "
                          "default where the run has one), mean (the final ES mean), best (the best member)")
    if which and not (Path(run_dir) / which).exists():
        raise ConfigError(f"meta-eval: {Path(run_dir) / which} does not exist (runs without held-out evaluation, "
                          "es.eval_every=0, have no selected/); use objective=mean")
    if opts.get("ablation", "true") not in ("true", "false"):
        raise ConfigError(f"meta-eval: ablation={opts['ablation']!r}; valid: true, false")
    setup = load_setup(opts["setup"]) if "setup" in opts else None
    lpg = load_meta_run(run_dir)["algo"]["name"] == "lpg"
    baselines = [b for b in opts.get("baselines", "a2c" if lpg else "clip,dpo").split(",") if b]
    for b in baselines:
        _baseline(b, lpg)
    envs = opts["env"].split(",") if "env" in opts else None
    res = meta_eval(run_dir, envs, horizons, which, seeds, baselines, setup=setup,
                    ablation=opts.get("ablation", "true") == "true")
    print(table(res))
    print(Path(run_dir) / ("meta_eval.png" if res["objective"] in ("mean", "selected") else f"meta_eval_{res['objective']}.png"))
