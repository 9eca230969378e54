"""``purejaxrl robustness RUN --mass 1:9:11 --friction 0.1:1.9:11``: greedy return of a trained
policy over a grid of physics (DeepMind Control tasks), with no adversary and, for QARL / RARL runs,
against the trained adversary; every cell, episode and run one vmapped batch.

``--mass`` multiplies every body's mass and inertia and ``--friction`` every geom's sliding friction
(``LOW:HIGH:N`` — ``N`` values from ``LOW`` to ``HIGH``); 1 is the nominal task.  With ``--absolute``
they are the paper's axes instead: the torso's mass in kg (its inertia scaled with it, the other
bodies unchanged) and the sliding friction coefficient of every geom — e.g. hopper
``--absolute --mass 1:9:11 --friction 0.1:1.9:11`` (nominal 4.83 kg, 1.0), walker ``5:15`` × ``0.1:1.3``
(10.67 kg, 0.7), cheetah ``3:9`` × ``0.1:1.9`` (6.25 kg).  Writes ``robustness.json`` (returns
``[runs, mass, friction]``, the grid, nominal values) and ``robustness.png`` (heat maps of the mean
over runs) into the run directory.

``--fresh-adversary UPDATES`` (QARL, RARL and ``curriculum=none|phased`` runs): first train a new
adversary from scratch against each run's frozen protagonist, which acts greedily, for ``UPDATES``
updates of the run's own settings (envs, gradient steps, force budget): an ordinary SAC agent with
its own tuned temperature, as the reference's RARL adversary (``algo.adversary.alpha`` of the run
fixes it instead).  ``auto`` trains it for as many updates as the co-trained adversary learned (the
run's adversary phases; for a ``curriculum=none`` SAC run, those of its adversarial counterpart with
twice its updates), so it is not the weaker of the two by its budget; its grid is the
``fresh_adversary`` heat map, and ``fresh_adversary_stronger`` says per run whether it lowers the
mean return more than the trained adversary.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl import evalkeys
from purejaxrl.algos.base import greedy_episode_returns
from purejaxrl.config import ConfigError, argument_parser


def parse_range(text: str, name: str) -> np.ndarray:
    try:
        lo, hi, n = text.split(":")
        lo, hi, n = float(lo), float(hi), int(n)
    except ValueError:
        raise ConfigError(f"--{name}={text!r} must be LOW:HIGH:N, e.g. 0.5:1.5:11") from None
    if n < 1 or lo <= 0 or hi < lo:
        raise ConfigError(f"--{name}={text!r}: need 0 < LOW <= HIGH and N >= 1")
    return np.linspace(lo, hi, n, dtype=np.float32)


def _with_physics(state, mass, friction, base=None, bodies=None):
    """Set per-env physics in a stack's state (down to the DM Control env's own state): mass and
    friction multipliers (or absolute values), or with ``bodies`` the two bodies' masses in kg."""
    if hasattr(state, "mass_scale"):
        if bodies:
            return base.with_body_masses(state, {bodies[0]: mass, bodies[1]: friction})
        return state.replace(mass_scale=mass, friction_scale=friction)
    return state.replace(env_state=_with_physics(state.env_state, mass, friction, base, bodies))


def _for_each_run(fn, n_runs: int, hparams, *args):
    """``fn(hp, *args)`` for every run of a loaded run directory: vmapped when it holds several (the
    arguments carry a run axis), else called once — :func:`purejaxrl.evaluate.load_run` gives a
    single run's state without a run axis, its hyperparameters with one."""
    if n_runs > 1:
        return jax.jit(jax.vmap(fn))(hparams, *args)
    return jax.jit(fn)(jax.tree.map(lambda x: jnp.asarray(x)[0], hparams), *args)


def check_attackable(algo, cfg: dict) -> None:
    """A fresh adversary needs the QARL code's adversary machinery (QARL, RARL, or its SAC arms)."""
    from purejaxrl.algos.qarl import QARL

    if not isinstance(algo, QARL):
        raise ConfigError(f"--fresh-adversary needs a run of algo=qarl or algo=rarl, not algo={cfg['algo']['name']}; "
                          "for SAC, train algo=qarl algo.curriculum=none (SAC with the adversary's machinery)")


def train_fresh_adversary(algo, state, hparams, runs: list, cfg: dict, updates: int, seed: int = 0):
    """``(attacker, attack_state, temperatures)``: a new adversary (its own tuned α) trained for ``updates``
    updates against the frozen protagonist of every run (vmapped over runs), from the run's own
    settings, on the nominal task (a run's training-only domain randomisation is left out, as in
    every evaluation).  The protagonist sees the context of the final evaluations (temperature 0, the
    reference's; the full budget for ``force_budget``), so all three grids show it the same input."""
    from purejaxrl.algos.qarl import QARL

    check_attackable(algo, cfg)
    if updates * algo.units_per_update <= algo.learning_starts:
        need = algo.learning_starts // algo.units_per_update + 1
        raise ConfigError(f"--fresh-adversary={updates} updates ({updates * algo.units_per_update} env steps) end before "
                          f"the run's algo.learning_starts={algo.learning_starts}: the adversary would never learn; "
                          f"use more than {need} updates")
    # curriculum "fixed" at the run's evaluation temperature: the protagonist's input; the attacker's own α (attack_only)
    acfg = {**cfg["algo"], "curriculum": "fixed", "total_timesteps": updates * algo.units_per_update, "phase_updates": 1}
    attacker = QARL(acfg, cfg["env"], cfg.get("network") or {}, attack_only=True)
    attacker.env = attacker.env.for_evaluation()  # the physics the grids and evaluations run

    def train(hp, protagonist, obs_norm, temperature, key):
        st = attacker.init(key, hp)
        shape = temperature * attacker.rate
        st = st.replace(protagonist=protagonist, obs_norm=obs_norm, curriculum=st.curriculum.replace(shape=shape),
                        temperature=jnp.full_like(st.temperature, temperature), drawn=jnp.full_like(st.drawn, shape))
        return jax.lax.scan(lambda s, i: (attacker.update(s, hp, i)[0], None), st, jnp.arange(updates))[0]

    many = len(runs) > 1
    # each run's own key (arms on one seed meet the same attacker's randomness; seeds independent)
    attack_key = lambda base: jax.random.fold_in(evalkeys.stream(base, "test", seed), 1)  # noqa: E731
    keys = jax.vmap(attack_key)(algo.eval_key(state)) if many else attack_key(algo.eval_key(state))[None]
    temps = jax.vmap(algo.eval_temperature)(state) if many else algo.eval_temperature(state)
    attack = _for_each_run(train, len(runs), hparams, state.protagonist, state.obs_norm, temps, keys if many else keys[0])
    return attacker, attack, np.asarray(temps).reshape(-1)


def calibrate_budget(run_dir, budgets: list[float], updates="auto", episodes: int = 32, drop: float = 0.3,
                     write: bool = True) -> dict:
    """The smallest force budget that bites: for each budget F (ascending), a fresh adversary with
    ``adversary.max_force = F`` trained against each run's frozen greedy protagonist, then the
    protagonist's greedy return with no adversary and against it on the same ``episodes``
    *validation* episodes per run (the budget is a choice; studies report on test episodes).  The
    chosen budget is the smallest whose mean relative drop over runs, ``(nominal − attacked) / |nominal|``,
    reaches ``drop``; ``None`` when none does.  Writes ``calibration.json`` into the run directory."""
    from purejaxrl.algos.qarl import NO_ADVERSARY, QARL
    from purejaxrl.evaluate import load_run

    algo, state, hparams, runs, cfg = load_run(run_dir)
    if not isinstance(algo, QARL) or algo.curriculum not in NO_ADVERSARY:
        raise ConfigError("--calibrate needs a trained SAC protagonist from the QARL code: a run of algo=qarl "
                          "algo.curriculum=none (or phased)")
    budgets = sorted(float(b) for b in budgets)
    if not budgets or budgets[0] <= 0:
        raise ConfigError(f"--calibrate={budgets}: budgets must be numbers > 0")
    n = auto_updates(algo) if updates == "auto" else int(updates)
    n = max(n, algo.learning_starts // algo.units_per_update + 1)
    bases = algo.eval_key(state)

    def nominal_returns(hp, s, base):
        venv = algo.make_venv(episodes, hp, evaluation=True)
        return greedy_episode_returns(venv, lambda o: algo.greedy_action(s, o), evalkeys.stream(base, "validation", 0))

    nominal = np.asarray(_for_each_run(nominal_returns, len(runs), hparams, state, bases)).reshape(len(runs), -1).mean(-1)
    rows = []
    for F in budgets:
        t0 = time.perf_counter()
        attacker, attack_state, _ = train_fresh_adversary(algo, state, hparams, runs, with_budget(cfg, F), n)

        def attacked_returns(hp, s, base, attacker=attacker):
            venv = attacker.make_venv(episodes, hp, evaluation=True)
            return greedy_episode_returns(venv, lambda o: attacker.adversarial_action(s, o),
                                          evalkeys.stream(base, "validation", 0))

        att = np.asarray(_for_each_run(attacked_returns, len(runs), hparams, attack_state, bases)).reshape(len(runs), -1)
        att = att.mean(-1)
        rel = (nominal - att) / np.maximum(np.abs(nominal), 1e-8)  # 1 − attacked/nominal for positive returns
        rows.append({"max_force": F, "attacked_return": att.tolist(), "relative_drop": rel.tolist(),
                     "mean_relative_drop": float(rel.mean()), "seconds": round(time.perf_counter() - t0, 1)})
    res = {"runs": runs, "env": cfg["env"]["name"], "episodes": int(episodes), "split": "validation",
           "adversary_updates": int(n), "target_drop": float(drop), "nominal_return": nominal.tolist(),
           "budgets": rows}
    f = Path(run_dir, "calibration.json")
    if write and f.exists():
        res = _merge_calibration(json.loads(f.read_text()), res, f)
    res["chosen_max_force"] = next((r["max_force"] for r in res["budgets"] if r["mean_relative_drop"] >= drop), None)
    if write:
        f.write_text(json.dumps(res, indent=1))
    return res


CALIBRATION_SAME = ("runs", "env", "episodes", "split", "adversary_updates", "nominal_return")


def _merge_calibration(old: dict, new: dict, f: Path) -> dict:
    """A calibration of the same run, episodes and adversary length adds its budgets to the recorded
    ones (each budget's attack depends on nothing but its own budget, so calling with 0.25 and then
    with 0.5 records what one call with both would); one made otherwise is kept beside it as
    ``calibration.<its adversary updates>_updates.json`` (nothing saved is lost)."""
    if all(old.get(k) == new[k] for k in CALIBRATION_SAME):
        given = {r["max_force"] for r in new["budgets"]}
        rows = [r for r in old.get("budgets", []) if r["max_force"] not in given] + new["budgets"]
        return {**new, "budgets": sorted(rows, key=lambda r: r["max_force"])}
    stem, k = f"calibration.{old.get('adversary_updates', 'earlier')}_updates", 1
    keep = f.with_name(f"{stem}.json")
    while keep.exists():
        k += 1
        keep = f.with_name(f"{stem}.{k}.json")
    f.rename(keep)
    print(f"note: the earlier calibration (another adversary length or run) is kept as {keep.name}", file=sys.stderr)
    return new


def curriculum_record(run_dir, write: bool = True) -> dict | None:
    """The self-paced curriculum's path per run, from the run's per-update log (``metrics.csv``): every
    step's update, Gamma shape, the gate's measure (the importance-weighted return) and whether the gate
    held the shape back; ``None`` for runs that log no curriculum steps.  Writes ``curriculum.json``
    (small, kept with the recorded results where the per-update log is not)."""
    import pandas as pd

    f = Path(run_dir, "metrics.csv")
    if not f.exists():
        return None
    cols = ["run", "update", "curriculum_shape", "curriculum_performance", "curriculum_held", "curriculum_steps"]
    head = pd.read_csv(f, nrows=0).columns
    if any(c not in head for c in cols):
        return None
    d = pd.read_csv(f, usecols=cols).dropna()
    runs = []
    for r, g in d.sort_values(["run", "update"]).groupby("run"):
        diff = g["curriculum_steps"].diff().fillna(g["curriculum_steps"])
        if (diff > 1).any():  # logged less often than the curriculum steps (logger.log_every > 1)
            print(f"note: {f} skips curriculum steps between logged rows; curriculum.json lists the logged ones "
                  "(logger.log_every=1 logs them all)", file=sys.stderr)
        step = g[diff > 0]
        runs.append({"run": int(r), "steps": int(g["curriculum_steps"].max()),
                     "held_steps": int(step["curriculum_held"].sum()),
                     "final_shape": float(g["curriculum_shape"].iloc[-1]),
                     "path": [{"update": int(u), "shape": float(c), "performance": float(pf), "held": bool(h)}
                              for u, c, pf, h in zip(step["update"], step["curriculum_shape"],
                                                     step["curriculum_performance"], step["curriculum_held"])]})
    res = {"what": "the self-paced curriculum's steps per run (from metrics.csv)", "runs": runs}
    if write:
        Path(run_dir, "curriculum.json").write_text(json.dumps(res, indent=1))
    return res


def with_budget(cfg: dict, max_force: float) -> dict:
    """``cfg`` with the adversary's force budget set to ``max_force``."""
    return {**cfg, "algo": {**cfg["algo"], "adversary": {**(cfg["algo"].get("adversary") or {}), "max_force": max_force}}}


def check_budget(max_force: float) -> float:
    """A force budget given on the command line: a finite number > 0 (one line otherwise)."""
    if not (isinstance(max_force, (int, float)) and 0 < max_force < float("inf")):
        raise ConfigError(f"--max-force={max_force} must be a finite number > 0")
    return float(max_force)


def fresh_budget(algo, cfg: dict, max_force: float | None, fresh_adversary) -> float:
    """The fresh adversary's force budget: ``max_force`` if given, else the run's own.  A run without an
    adversary (curriculum none or phased) never used its recorded budget (it is not part of the run's
    identity), so attacking it at that budget is a note's worth: give the budget to compare at."""
    from purejaxrl.algos.qarl import NO_ADVERSARY

    if max_force is not None:
        return check_budget(max_force)
    own = float((cfg["algo"].get("adversary") or {}).get("max_force", 1.0))
    if fresh_adversary and getattr(algo, "curriculum", None) in NO_ADVERSARY:
        print(f"note: this run has no adversary, so its recorded algo.adversary.max_force={own:g} never acted; the "
              "fresh adversary uses it (--max-force F to attack at the budget the adversarial runs used)", file=sys.stderr)
    return own


def co_trained_updates(algo) -> int:
    """The number of updates a run's co-trained adversary *learned* in: the updates of its phases of the
    alternation that come after the random warm-up (``algo.learning_starts`` env steps, the same test as
    the run's own).  A SAC run (``curriculum=none``) learns every update, so its adversarial counterpart
    has twice its updates: the count is that run's, the one every adversarial arm of a study co-trains for."""
    n, p, u = algo.num_updates, algo.phase_updates, algo.units_per_update
    if getattr(algo, "curriculum", None) == "none":
        n = 2 * n
    i = np.arange(n)
    return int(np.sum(((i // p) % 2 == 0) & ((i + 1) * u > algo.learning_starts)))


def fresh_warmup_updates(algo) -> int:
    """The updates a fresh adversary spends acting at random before it learns (every one of its updates
    is an adversary update; it starts learning after ``algo.learning_starts`` env steps, as the run did)."""
    return int(algo.learning_starts // algo.units_per_update)


def auto_updates(algo) -> int:
    """``--fresh-adversary auto``: the fresh adversary's warm-up plus :func:`co_trained_updates`, so that it
    learns in exactly as many updates as the co-trained adversary did; with a note when it assumes the
    adversarial counterpart of a SAC run (which a study gives half the adversarial arms' env steps)."""
    n = co_trained_updates(algo) + fresh_warmup_updates(algo)
    if getattr(algo, "curriculum", None) == "none":
        print(f"note: auto trains the fresh adversary for {n} updates, so that it learns in as many as the co-trained "
              f"adversary of an adversarial run with twice this run's {algo.num_updates} updates (a SAC baseline runs "
              "half the env steps); give --fresh-adversary N otherwise", file=sys.stderr)
    return n


def robustness(run_dir, mass: np.ndarray | None = None, friction: np.ndarray | None = None, episodes: int = 4, seed: int = 0,
               fresh_adversary: int = 0, absolute: bool = False, bodies: tuple[str, str] | None = None,
               split: str = "test", write: bool = True, adversary_grids: bool = True,
               max_force: float | None = None) -> dict:
    """``max_force``: the fresh adversary's force budget (default the run's own ``algo.adversary.max_force``)."""
    from purejaxrl.evaluate import load_run

    algo, state, hparams, runs, cfg = load_run(run_dir)
    base = algo.env.unwrapped
    if not hasattr(base, "with_physics"):
        raise ConfigError(f"{cfg['env']['name']} has no per-env physics; robustness grids need a DM Control env "
                          "(env=dmc_*)")
    nominal = base.nominal_physics
    if bodies:  # the grid: the first body's mass (kg) x the second's, every other body nominal
        if absolute:
            raise ConfigError("--bodies and --absolute are two different grids; give one")
        bad = [b for b in bodies if b not in base.body_names[1:]]
        if bad or len(bodies) != 2 or bodies[0] == bodies[1]:
            raise ConfigError(f"--bodies={','.join(bodies)} must name two different bodies of {cfg['env']['name']}; "
                              f"valid: {', '.join(base.body_names[1:])}")
        kg = {b: float(base.playground.mj_model.body_mass[base.body_names.index(b)]) for b in bodies}
        nominal = {**nominal, "body_mass": kg}
        mass = np.linspace(kg[bodies[0]] / 2, kg[bodies[0]] * 1.5, 11, dtype=np.float32) if mass is None else mass
        friction = np.linspace(kg[bodies[1]] / 2, kg[bodies[1]] * 1.5, 11, dtype=np.float32) if friction is None else friction
    if absolute and nominal["torso_mass"] is None:
        raise ConfigError(f"--absolute: {cfg['env']['name']} has no torso (absolute grids are torso mass x friction, "
                          "for hopper, walker and cheetah); drop --absolute to scale every mass and friction")
    if mass is None:  # defaults: half to one and a half times nominal; friction 0.1 to symmetric about nominal
        mass = (np.linspace(nominal["torso_mass"] / 2, nominal["torso_mass"] * 1.5, 11, dtype=np.float32) if absolute
                else np.linspace(0.5, 1.5, 11, dtype=np.float32))
    if friction is None:
        friction = (np.linspace(0.1, 2 * max(nominal["friction"]) - 0.1, 11, dtype=np.float32) if absolute
                    else np.linspace(0.5, 1.5, 11, dtype=np.float32))
    if absolute:
        lo, hi = (r * nominal["torso_mass"] for r in base.TABLE_RANGE)
        if mass.min() < lo or mass.max() > hi:
            raise ConfigError(f"--mass {mass.min():g}..{mass.max():g} kg leaves {lo:.3g}..{hi:.3g} kg (1/50 to 50 x the "
                              f"nominal torso mass {nominal['torso_mass']:.3g} kg of {cfg['env']['name']}); narrow --mass")
    M, F, E = len(mass), len(friction), int(episodes)
    ms = jnp.asarray(np.repeat(mass, F))  # cell c = (m, f) = (c // F, c % F)
    fs = jnp.asarray(np.tile(friction, M))
    modes = {"no_adversary": (algo.greedy_action, state)}
    from purejaxrl.algos.qarl import NO_ADVERSARY

    if adversary_grids and hasattr(algo, "adversarial_action") and getattr(algo, "curriculum", None) not in NO_ADVERSARY:
        modes["trained_adversary"] = (algo.adversarial_action, state)
    fresh_temps = fresh_alpha = None
    if fresh_adversary:
        check_attackable(algo, cfg)
    fresh_learning = co = None  # learning updates of the fresh and of the co-trained adversary
    if fresh_adversary:
        co = co_trained_updates(algo)
        fresh_adversary = auto_updates(algo) if fresh_adversary == "auto" else fresh_adversary
        fresh_learning = max(int(fresh_adversary) - fresh_warmup_updates(algo), 0)
        if fresh_learning < co:
            print(f"note: the fresh adversary learns in {fresh_learning} updates, the co-trained one learned in {co}: "
                  "a weaker attack may only mean a shorter one (--fresh-adversary auto matches them)", file=sys.stderr)
    budget = fresh_budget(algo, cfg, max_force, fresh_adversary)
    if fresh_adversary:
        attacker, attack_state, fresh_temps = train_fresh_adversary(algo, state, hparams, runs, with_budget(cfg, budget),
                                                                    fresh_adversary, seed)
        modes["fresh_adversary"] = (attacker.adversarial_action, attack_state)
        fresh_alpha = (np.exp(np.asarray(attack_state.adversary.log_alpha)).reshape(-1) if attacker.adv_alpha == "auto"
                       else np.full(len(runs), float(attacker.adv_alpha)))
    bases = algo.eval_key(state)  # the run's own evaluation key: runs independent, cells and modes paired
    out = {}
    for mode, (act, st_all) in modes.items():
        def one(hp, s, eval_base):
            venv = algo.make_venv(E, hp, evaluation=True)
            key = evalkeys.stream(eval_base, split, seed)  # the same E episodes in every cell and mode of a run

            def cell(m, f):
                return greedy_episode_returns(venv, lambda o: act(s, o), key,
                                              lambda st: _with_physics(st, jnp.full((E,), m), jnp.full((E,), f), base, bodies))

            return jax.vmap(cell)(ms, fs)  # [M·F, E]

        with base.absolute_physics() if absolute else contextlib.nullcontext():  # read while tracing
            ret = _for_each_run(one, len(runs), hparams, st_all, bases)
        out[mode] = np.asarray(ret).reshape(len(runs), M, F, E).mean(-1)
    axes = ({"physics": "absolute", "torso_mass": mass.tolist(), "friction": friction.tolist()} if absolute else
            {"physics": "bodies", "bodies": list(bodies), "mass_1": mass.tolist(), "mass_2": friction.tolist()} if bodies
            else {"physics": "scale", "mass_scale": mass.tolist(), "friction_scale": friction.tolist()})
    res = {**axes, "nominal": nominal, "episodes_per_cell": E,
           "runs": runs, "env": cfg["env"]["name"], "algo": cfg["algo"]["name"],
           "fresh_adversary_updates": int(fresh_adversary),
           "fresh_adversary_max_force": budget if fresh_adversary else None,
           # the context the attacked protagonist sees (the evaluation temperature), not the attacker's own α
           "fresh_adversary_temperature": None if fresh_temps is None else [float(t) for t in fresh_temps],
           "fresh_adversary_alpha": None if fresh_alpha is None else [float(a) for a in fresh_alpha],  # its final α
           "fresh_adversary_learning_updates": fresh_learning,
           "co_trained_adversary_learning_updates": co,
           "returns": {k: v.tolist() for k, v in out.items()},
           "mean": {k: float(v.mean()) for k, v in out.items()}}
    if "fresh_adversary" in out and "trained_adversary" in out:  # per run: the fresh attack the stronger one?
        res["fresh_adversary_stronger"] = (out["fresh_adversary"].mean((1, 2)) < out["trained_adversary"].mean((1, 2))).tolist()
    if write:
        Path(run_dir, "robustness.json").write_text(json.dumps(res, indent=1))
        _plot(Path(run_dir, "robustness.png"), res, out)
    return res


def grid_axes(res: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """``((mass key, label), (friction key, label))`` of a ``robustness.json``."""
    if res.get("physics") == "absolute":
        return ("torso_mass", "torso mass (kg)"), ("friction", "friction coefficient")
    if res.get("physics") == "bodies":
        b1, b2 = res["bodies"]
        return ("mass_1", f"{b1} mass (kg)"), ("mass_2", f"{b2} mass (kg)")
    return ("mass_scale", "mass × nominal"), ("friction_scale", "friction × nominal")


def nominal_cell(res: dict) -> tuple[int, int]:
    """Indices of the grid cell nearest the nominal task."""
    (mk, _), (fk, _) = grid_axes(res)
    if res.get("physics") == "absolute":
        m0, f0 = res["nominal"]["torso_mass"], max(res["nominal"]["friction"])
    elif res.get("physics") == "bodies":
        m0, f0 = (res["nominal"]["body_mass"][b] for b in res["bodies"])
    else:
        m0 = f0 = 1.0
    return int(np.argmin(np.abs(np.asarray(res[mk]) - m0))), int(np.argmin(np.abs(np.asarray(res[fk]) - f0)))


def _plot(path: Path, res: dict, out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (mk, ml), (fk, fl) = grid_axes(res)
    fig, axes = plt.subplots(1, len(out), figsize=(5 * len(out), 4), squeeze=False)
    vmin = min(float(v.mean(0).min()) for v in out.values())
    vmax = max(float(v.mean(0).max()) for v in out.values())
    for ax, (mode, v) in zip(axes[0], out.items()):
        im = ax.imshow(v.mean(0), origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        for axis, vals in ((ax.xaxis, res[fk]), (ax.yaxis, res[mk])):
            step = max(1, len(vals) // 6)
            axis.set_ticks(range(0, len(vals), step))
            axis.set_ticklabels([f"{x:.3g}" for x in vals[::step]])
        ax.set_xlabel(fl)
        ax.set_ylabel(ml)
        ax.set_title(f"{res['algo']} on {res['env']}: {mode.replace('_', ' ')}\nmean {v.mean():.1f}", fontsize=9)
        fig.colorbar(im, ax=ax, label="return")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def robustness_main(argv: list[str]) -> None:
    p = argument_parser("purejaxrl robustness", __doc__)
    p.add_argument("run_dir")
    p.add_argument("--mass", default=None, help="mass multipliers LOW:HIGH:N (default 0.5:1.5:11); "
                   "with --absolute the torso's mass in kg (default nominal/2 to 1.5 x nominal, 11; the paper: hopper "
                   "1:9, walker 5:15, cheetah 3:9)")
    p.add_argument("--friction", default=None, help="friction multipliers LOW:HIGH:N (default 0.5:1.5:11); "
                   "with --absolute the friction coefficient (default 0.1 to 2 x nominal - 0.1, 11)")
    p.add_argument("--bodies", default=None, metavar="B1,B2",
                   help="the grid is two bodies' masses in kg instead: --mass for B1, --friction for B2 (default half to "
                   "1.5 x nominal, 11 each); the reference's cartpole grid: --bodies pole_1,cart")
    p.add_argument("--absolute", action="store_true",
                   help="the paper's axes: torso mass (kg) x friction coefficient instead of multipliers")
    p.add_argument("--episodes", type=int, default=None, help="greedy episodes per cell and run (default 8; with "
                   "--calibrate per budget and run, default 32)")
    p.add_argument("--seed", type=int, default=0, help="which draw of test episodes (each run's own key; every cell "
                   "and mode of a run plays the same episodes)")
    p.add_argument("--fresh-adversary", default="0", metavar="UPDATES",
                   help="also train a new adversary (its own tuned α) against the frozen protagonist for this many updates "
                   "(auto: as many as the co-trained adversary learned)")
    p.add_argument("--calibrate", default=None, metavar="F1,F2,...",
                   help="instead of a grid: the smallest of these force budgets whose fresh adversary (trained "
                   "--fresh-adversary updates, default auto) cuts the run's nominal return by --drop "
                   "(a run of algo=qarl algo.curriculum=none; validation episodes; writes calibration.json)")
    p.add_argument("--drop", type=float, default=0.3, help="with --calibrate: the relative drop a budget must reach")
    p.add_argument("--max-force", type=float, default=None, metavar="F",
                   help="the fresh adversary's force budget per component (default the run's own "
                   "algo.adversary.max_force; a run without an adversary never used its own)")
    a = p.parse_args(argv)
    if a.episodes is not None and a.episodes < 1:
        raise ConfigError(f"--episodes={a.episodes} must be >= 1")
    if a.calibrate is not None:
        try:
            budgets = [float(x) for x in a.calibrate.split(",")]
        except ValueError:
            raise ConfigError(f"--calibrate={a.calibrate!r} must be comma-separated numbers, e.g. 0.5,1,2,4") from None
        if not 0 < a.drop < 1:
            raise ConfigError(f"--drop={a.drop} must be in (0, 1)")
        fresh = "auto" if a.fresh_adversary in ("0", 0) else a.fresh_adversary
        res = calibrate_budget(a.run_dir, budgets, fresh, a.episodes or 32, a.drop)
        for r in res["budgets"]:
            print(f"max_force {r['max_force']:g}: mean relative drop {r['mean_relative_drop']:.2f} "
                  f"(attacked {np.mean(r['attacked_return']):.1f} vs nominal {np.mean(res['nominal_return']):.1f})")
        print(f"chosen: {res['chosen_max_force']} (the smallest reaching a drop of {a.drop:g}); "
              f"wrote {Path(a.run_dir, 'calibration.json')}")
        return
    a.episodes = 8 if a.episodes is None else a.episodes
    if a.episodes < 1:
        raise ConfigError(f"--episodes={a.episodes} must be >= 1")
    if a.fresh_adversary != "auto":
        try:
            a.fresh_adversary = int(a.fresh_adversary)
            assert a.fresh_adversary >= 0
        except (ValueError, AssertionError):
            raise ConfigError(f"--fresh-adversary={a.fresh_adversary} must be auto or an integer >= 0 (updates; 0: none)") from None
    mass, friction = a.mass and parse_range(a.mass, "mass"), a.friction and parse_range(a.friction, "friction")
    bodies = tuple(a.bodies.split(",")) if a.bodies else None
    if not a.absolute and not bodies and mass is not None and mass.max() > 4:  # the paper's torso masses typed as multipliers?
        print(f"note: --mass {a.mass} multiplies every body's mass (up to {mass.max():g} x nominal); for the paper's "
              "torso mass in kg add --absolute", file=sys.stderr)
    if a.max_force is not None:
        check_budget(a.max_force)
    res = robustness(a.run_dir, mass, friction, a.episodes, a.seed, a.fresh_adversary, a.absolute, bodies,
                     max_force=a.max_force)
    (mk, ml), (fk, fl) = grid_axes(res)
    nom = res["nominal"]
    torso = "" if nom["torso_mass"] is None else f"torso mass {nom['torso_mass']:.3g} kg, "
    print(f"grid: {ml} {res[mk][0]:.3g}..{res[mk][-1]:.3g} ({len(res[mk])}) x {fl} {res[fk][0]:.3g}..{res[fk][-1]:.3g} "
          f"({len(res[fk])}); nominal {torso}friction {', '.join(f'{f:g}' for f in nom['friction'])}")
    for mode, m in res["mean"].items():
        print(f"{mode}: mean return over the grid {m:.1f}")
    if "fresh_adversary_stronger" in res:
        k = sum(res["fresh_adversary_stronger"])
        print(f"the fresh adversary lowers the mean return more than the trained one in {k} of "
              f"{len(res['fresh_adversary_stronger'])} runs")
    print(f"wrote {Path(a.run_dir, 'robustness.json')} and robustness.png")
