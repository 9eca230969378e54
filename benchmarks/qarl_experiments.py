"""SAC, QARL and RARL on DeepMind Control tasks (MuJoCo Playground, MJX): throughput beside raw MJX
stepping, SAC learning, and the side-by-side robustness comparison.

    python benchmarks/qarl_experiments.py throughput --env dmc_cartpole_balance --num-envs 16
    python benchmarks/qarl_experiments.py learn --env dmc_cartpole_balance --steps 100000 --seeds 3
    python benchmarks/qarl_experiments.py compare --env dmc_cartpole_balance --steps 100000 --seeds 3
    python benchmarks/qarl_experiments.py vs-brax --env dmc_cartpole_balance --num-envs 16

``throughput`` times, in one process and on the same env count: a jitted scan of raw env steps
(zero actions), one SAC update chunk and one QARL update chunk (compile time reported apart).
``learn`` trains SAC (seeds vmapped) and records its evaluation curve.  ``compare`` trains SAC
(``curriculum=none``: the same networks, no adversary), RARL and QARL with the same budget and
evaluates each on a mass × friction grid (``purejaxrl robustness``).  ``vs-brax`` times our SAC and
brax's SAC trainer (``brax.training.agents.sac``, the one MuJoCo Playground's examples use) in one
process on the same Playground task, env count, 2 × 256 networks, batch 256, gradient steps per
env step, observation normalisation and LayerNorm critics (Playground's tuned SAC settings): compile
apart from steady state, env steps/s and gradient steps/s.  Results go to ``benchmarks/results/qarl/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import purejaxrl

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs

OUT = Path("benchmarks/results/qarl")


def small(env: str, steps: int, seeds: int, num_envs: int) -> list[str]:
    return [f"env={env}", f"algo.total_timesteps={steps}", f"algo.num_envs={num_envs}", f"num_seeds={seeds}",
            "algo.buffer_size=100000", "logger.progress=false"]


def throughput_config(algo: str, env: str, num_envs: int, updates: int) -> dict:
    """The config ``throughput`` times for ``algo`` (sac or qarl): one gradient step per update, three chunks."""
    from purejaxrl.config import compose

    one_phase = ["algo.phase_updates=1000000"] if algo == "qarl" else []  # the adversary learns throughout
    return compose([f"algo={algo}", *small(env, updates * num_envs * 3, 1, num_envs), "algo.learning_starts=0",
                    "algo.gradient_steps=1", "algo.num_evals=1", *one_phase])


def vs_brax_config(env: str, num_envs: int, updates: int, grad_updates: int, batch: int) -> dict:
    """Our side of ``vs-brax``: one update = one step of every env + ``grad_updates`` gradient steps (brax's training step)."""
    from purejaxrl.config import compose

    return compose(["algo=sac", *small(env, updates * num_envs * 3, 1, num_envs), "algo.learning_starts=0",
                    f"algo.gradient_steps={grad_updates}", f"algo.batch_size={batch}", "algo.num_evals=1",
                    "algo.normalize_observations=true", "algo.critic_layer_norm=true"])


def check(a) -> None:
    """throughput and vs-brax: the arguments and each of our configs validated (validation builds the env),
    nothing of the benchmark compiled.  QARL's throughput config is validated with its phases alternating: the
    timing runs one adversary phase longer than the run on purpose, which the training command's rule on phase
    length refuses.  vs-brax: brax's side is checked only for its replay-size condition."""
    from envs.registry import missing_extra
    from purejaxrl.config import validate

    if a.what not in ("throughput", "vs-brax"):
        raise SystemExit(f"qarl_experiments.py: error: --check validates throughput and vs-brax, not {a.what}")
    bad = [f"--{k.replace('_', '-')}={getattr(a, k)!r} must be an integer >= 1"
           for k in ("num_envs", "updates", "grad_updates", "batch") if getattr(a, k) < 1]
    if a.what == "vs-brax" and a.batch >= 2 * a.updates * a.num_envs:  # brax's trainer refuses it after ours is timed
        bad.append(f"vs-brax: --batch {a.batch} (brax's min_replay_size) must be below its 2 x --updates x --num-envs = "
                   f"{2 * a.updates * a.num_envs} env steps")
    if missing_extra(a.env):
        bad.append(f"--env {a.env}: {missing_extra(a.env)}")
    if bad:
        raise SystemExit(f"qarl_experiments.py: error: {bad[0]}")
    cfgs = ([throughput_config(x, a.env, a.num_envs, a.updates) for x in ("sac", "qarl")] if a.what == "throughput"
            else [vs_brax_config(a.env, a.num_envs, a.updates, a.grad_updates, a.batch)])
    for cfg in cfgs:
        if cfg["algo"]["name"] == "qarl":  # the phase-length rule aside (see the docstring), validated as timed
            cfg = {**cfg, "algo": {**cfg["algo"], "phase_updates": a.updates}}
        validate(cfg)
    print(f"check: ok ({a.what} on {a.env}, {a.num_envs} envs, {len(cfgs)} config(s))")


def throughput(env: str, num_envs: int, updates: int) -> dict:
    from envs import make, make_stack
    from purejaxrl.config import run_grid
    from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

    venv = make_stack(make(env), num_envs)
    A = venv.action_space.shape[0]

    @jax.jit
    def raw(key):
        obs, st = venv.reset(key)

        def body(c, k):
            st, = c
            _, st, r, *_ = venv.step(k, st, jnp.zeros((num_envs, A)))
            return (st,), r

        return jax.lax.scan(body, (st,), jax.random.split(key, 1000))[1].sum()

    t0 = time.perf_counter()
    raw.lower(jax.random.PRNGKey(0)).compile()
    out = {"env": env, "num_envs": num_envs, "device": jax.devices()[0].device_kind,
           "raw": {"compile_seconds": time.perf_counter() - t0}}
    jax.block_until_ready(raw(jax.random.PRNGKey(0)))
    t0 = time.perf_counter()
    jax.block_until_ready(raw(jax.random.PRNGKey(1)))
    out["raw"]["env_steps_per_second"] = 1000 * num_envs / (time.perf_counter() - t0)
    for algo in ("sac", "qarl"):
        cfg = throughput_config(algo, env, num_envs, updates)
        a = build_algorithm(cfg)
        runs, hparams, seeds = run_grid(cfg, a.HPARAMS)
        tr = Trainer(a, 1, 3, num_evals=1)
        tr.eval_every = 10**9  # the middle chunk is timed: no evaluation inside it
        hp = batch_hparams(a, hparams, 1)
        state = tr.init(jnp.stack([jax.random.PRNGKey(0)]), hp)
        t0 = time.perf_counter()
        tr.compile_chunk(state, hp, 0)
        comp = time.perf_counter() - t0
        state, _ = tr.chunk(state, hp, 0)  # warm
        t0 = time.perf_counter()
        state, m = tr.chunk(state, hp, tr.updates_per_chunk)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        n = tr.updates_per_chunk
        # gradient_steps=1 per update; QARL: one player learns at a time (the adversary in this phase)
        out[algo] = {"compile_seconds": comp, "env_steps_per_second": n * num_envs / dt,
                     "gradient_steps_per_second": n * a.gradient_steps / dt, "updates_timed": n}
    return out


def vs_brax(env: str, num_envs: int, updates: int, grad_updates: int, batch: int) -> dict:
    """Our SAC and brax's SAC trainer, the same settings, timed in one process (see the module doc)."""
    import functools

    from brax.training.agents.sac import networks as brax_sac_networks
    from brax.training.agents.sac import train as brax_sac
    from mujoco_playground import wrapper

    from envs import make
    from purejaxrl.config import run_grid
    from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

    out = {"env": env, "num_envs": num_envs, "batch_size": batch, "gradient_steps_per_env_step": grad_updates,
           "hidden": [256, 256], "normalize_observations": True, "critic_layer_norm": True,
           "device": jax.devices()[0].device_kind}
    cfg = vs_brax_config(env, num_envs, updates, grad_updates, batch)
    a = build_algorithm(cfg)
    _, hparams, _ = run_grid(cfg, a.HPARAMS)
    tr = Trainer(a, 1, 3, num_evals=1)
    tr.eval_every = 10**9
    hp = batch_hparams(a, hparams, 1)
    state = tr.init(jnp.stack([jax.random.PRNGKey(0)]), hp)
    t0 = time.perf_counter()
    tr.compile_chunk(state, hp, 0)
    comp = time.perf_counter() - t0
    state, _ = tr.chunk(state, hp, 0)
    t0 = time.perf_counter()
    state, _ = tr.chunk(state, hp, tr.updates_per_chunk)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    n = tr.updates_per_chunk
    out["purejaxrl"] = {"compile_seconds": comp, "env_steps_per_second": n * num_envs / dt,
                        "gradient_steps_per_second": n * grad_updates / dt, "updates_timed": n}
    # brax: num_evals=3 -> two training epochs of `updates` training steps each; the first includes the
    # compile, the second is steady state (brax's own 'training/sps', evaluation excluded)
    base = make(env).playground
    if not hasattr(jax, "device_put_replicated"):  # brax's SAC trainer calls it; this JAX removed it
        def device_put_replicated(x, devices):
            stacked = jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
            return jax.device_put(stacked, jax.sharding.PositionalSharding(devices).reshape(len(devices))
                                  if len(devices) > 1 else devices[0])

        jax.device_put_replicated = device_put_replicated
    times, metrics = [time.perf_counter()], []

    def progress(step, m):
        times.append(time.perf_counter())
        metrics.append({k: float(v) for k, v in m.items() if k.startswith("training/")})

    brax_sac.train(environment=base, wrap_env_fn=wrapper.wrap_for_brax_training, num_timesteps=2 * updates * num_envs,
                   episode_length=1000, num_envs=num_envs, num_eval_envs=num_envs, batch_size=batch, num_evals=3,
                   normalize_observations=True, grad_updates_per_step=grad_updates, min_replay_size=batch,
                   max_replay_size=100_000, seed=0, progress_fn=progress,
                   network_factory=functools.partial(brax_sac_networks.make_sac_networks,
                                                     hidden_layer_sizes=(256, 256), q_network_layer_norm=True))
    sps = [m.get("training/sps") for m in metrics if "training/sps" in m]
    steady = sps[-1] if sps else None
    out["brax"] = {"env_steps_per_second": steady, "gradient_steps_per_second":
                   None if steady is None else steady / num_envs * grad_updates,
                   "first_epoch_env_steps_per_second_with_compile": sps[0] if len(sps) > 1 else None,
                   "wall_seconds_total": times[-1] - times[0], "training_steps_per_epoch": updates}
    if steady:
        out["speedup_env_steps"] = out["purejaxrl"]["env_steps_per_second"] / steady
    return out


def eval_rows(d: Path) -> list[dict]:
    """A run's logged rows that carry an evaluation: from ``metrics.jsonl``, or — for the long runs whose
    per-update log is not kept in the repository — from ``evaluations.jsonl``, its evaluation rows."""
    f = d / "metrics.jsonl" if (d / "metrics.jsonl").exists() else d / "evaluations.jsonl"
    rows = (json.loads(line) for line in f.read_text().splitlines() if line)
    return [r for r in rows if r.get("eval_return") is not None]


def learn(env: str, steps: int, seeds: int, num_envs: int, extra: list[str]) -> dict:
    from purejaxrl.config import compose
    from purejaxrl.experiment import run

    d = OUT / f"sac_{env}"
    cfg = compose(["algo=sac", *small(env, steps, seeds, num_envs), *extra])
    if not (d / "summary.json").exists():
        run(cfg, d, progress=False)
    s = json.loads((d / "summary.json").read_text())
    curve = sorted({(r["env_steps"], r["run"], r["eval_return"]) for r in eval_rows(d) if np.isfinite(r["eval_return"])})
    return {"env": env, "steps": steps, "seeds": seeds, "overrides": extra, "final": s["final_return"],
            "run_seconds": s["run_seconds"], "compile_seconds": s["compile_seconds"],
            "env_steps_per_second": s["env_steps_per_second"], "curve": curve}


def stopped_summary(d: Path) -> dict:
    """For a run stopped before its end (``--stopped``): the last greedy evaluations per seed from
    its log and the env steps of the checkpoint the grids restore."""
    from purejaxrl.checkpoint import Checkpointer

    ck = Checkpointer(d / "checkpoints")
    step = ck.latest_step()
    ck.close()
    rows = eval_rows(d)
    out: dict = {"updates": step, "run_seconds": None}
    for key in ("eval_return", "eval_return_adversary"):
        last = {}
        for r in rows:
            if r["update"] <= step and r.get(key) is not None:
                last[r["run"]] = (r["env_steps"], r[key])
        vals = [last[k][1] for k in sorted(last)]
        out[key] = {"mean": float(np.mean(vals)), "per_seed": vals, "env_steps": sorted({v[0] for v in last.values()})}
    out["final_return"] = out["eval_return"]
    out["final_eval"] = {"eval_return_adversary": out["eval_return_adversary"]}
    return out


def reusable_grid(d: Path, mass, friction, episodes: int, fresh: int, absolute: bool) -> dict | None:
    """The run's ``robustness.json`` when it holds exactly this grid (e.g. from ``purejaxrl robustness``
    runs of the three methods side by side), else None."""
    from purejaxrl.robustness import grid_axes

    f = d / "robustness.json"
    if mass is None or friction is None or not f.exists():
        return None
    g = json.loads(f.read_text())
    (mk, _), (fk, _) = grid_axes(g)
    same = (g.get("physics", "scale") == ("absolute" if absolute else "scale") and g["episodes_per_cell"] == episodes
            and g["fresh_adversary_updates"] == fresh and np.allclose(g[mk], mass) and np.allclose(g[fk], friction))
    return g if same else None


def compare(env: str, steps: int, seeds: int, num_envs: int, extra: list[str], grid: tuple[str, str],
            fresh: int = 0, stopped: bool = False, episodes: int = 4, absolute: bool = False, reuse: bool = False) -> dict:
    from purejaxrl.config import compose
    from purejaxrl.experiment import run
    from purejaxrl.robustness import grid_axes, nominal_cell, parse_range, robustness

    res = {"env": env, "steps": steps, "seeds": seeds, "overrides": extra, "fresh_adversary_updates": fresh, "methods": {}}
    mass, friction = grid[0] and parse_range(grid[0], "mass"), grid[1] and parse_range(grid[1], "friction")
    for name, over in (("sac", ["algo=qarl", "algo.curriculum=none"]), ("rarl", ["algo=rarl"]),
                       ("qarl", ["algo=qarl"])):
        d = OUT / f"compare_{env}" / name
        if stopped and not (d / "summary.json").exists():  # evaluated from its latest checkpoint
            s = stopped_summary(d)
            res.setdefault("stopped_at_updates", {})[name] = s["updates"]
        else:
            if not (d / "summary.json").exists():
                run(compose([*over, *small(env, steps, seeds, num_envs), *extra]), d, progress=False)
            s = json.loads((d / "summary.json").read_text())
        g = reusable_grid(d, mass, friction, episodes, fresh, absolute) if reuse else None
        if g is None:
            g = robustness(d, mass, friction, episodes, fresh_adversary=fresh, absolute=absolute)
        (mk, _), (fk, _) = grid_axes(g)
        i, j = nominal_cell(g)
        res["methods"][name] = {"nominal": s["final_return"], "grid_mean": g["mean"],
                                "grid_cell": {mk: g[mk][i], fk: g[fk][j],
                                              **{k: [r[i][j] for r in v] for k, v in g["returns"].items()}},
                                "against_adversary": (s.get("final_eval") or {}).get("eval_return_adversary"),
                                "run_seconds": s["run_seconds"]}
    plot_grids(env)
    plot_curves(env)
    return res


def plot_grids(env: str) -> None:
    """Side by side: the grids of SAC, RARL and QARL (mean over seeds), one colour scale per row —
    no adversary, and (when recorded) against a freshly trained worst-case adversary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from purejaxrl.robustness import grid_axes

    root = OUT / f"compare_{env}"
    grids = {m: json.loads((root / m / "robustness.json").read_text()) for m in ("sac", "rarl", "qarl")}
    modes = ["no_adversary"] + (["fresh_adversary"] if all("fresh_adversary" in g["returns"] for g in grids.values()) else [])
    fig, axes = plt.subplots(len(modes), 3, figsize=(14, 4 * len(modes)), constrained_layout=True, squeeze=False)
    for row, mode in zip(axes, modes):
        means = {m: np.asarray(g["returns"][mode]).mean(0) for m, g in grids.items()}
        lo, hi = min(v.min() for v in means.values()), max(v.max() for v in means.values())
        for ax, (m, v) in zip(row, means.items()):
            g = grids[m]
            (mk, ml), (fk, fl) = grid_axes(g)
            im = ax.imshow(v, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="viridis")
            ax.set_xticks(range(len(g[fk])), [f"{x:.3g}" for x in g[fk]])
            ax.set_yticks(range(len(g[mk])), [f"{x:.3g}" for x in g[mk]])
            ax.set_xlabel(fl)
            ax.set_ylabel(ml)
            ax.set_title(f"{m.upper()}: mean {v.mean():.1f} ({len(g['runs'])} seeds, {mode.replace('_', ' ')})", fontsize=9)
        fig.colorbar(im, ax=list(row), label="return")
    fig.savefig(OUT / f"compare_{env}.png", dpi=100)
    plt.close(fig)


def plot_curves(env: str) -> None:
    """Greedy evaluation return over env steps of the three compared runs (mean and each seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for (m, colour) in zip(("sac", "rarl", "qarl"), ("C0", "C1", "C2")):
        pts: dict = {}
        for r in eval_rows(OUT / f"compare_{env}" / m):
            if np.isfinite(r["eval_return"]):
                pts.setdefault(r["env_steps"], {})[r["run"]] = r["eval_return"]
        steps = sorted(pts)
        per = np.array([[pts[x][k] for k in sorted(pts[x])] for x in steps])
        ax.plot(steps, per, color=colour, alpha=0.25, lw=1)
        ax.plot(steps, per.mean(1), color=colour, lw=2, label=f"{m.upper()} (mean of {per.shape[1]})")
    ax.set_xlabel("agent steps per run (all its envs)")
    ax.set_ylabel("greedy return, no adversary")
    ax.set_title(f"{env}: evaluation during training", fontsize=9)
    ax.legend()
    fig.savefig(OUT / f"compare_{env}_curves.png", dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["throughput", "learn", "compare", "vs-brax"])
    p.add_argument("--env", default="dmc_cartpole_balance")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--updates", type=int, default=200, help="throughput, vs-brax: updates per timed chunk")
    p.add_argument("--grad-updates", type=int, default=4, help="vs-brax: gradient steps per env step of all envs")
    p.add_argument("--batch", type=int, default=256, help="vs-brax: minibatch size")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--mass", default=None, help="compare: LOW:HIGH:N (default: robustness's, 0.5:1.5:11 multipliers)")
    p.add_argument("--friction", default=None, help="compare: LOW:HIGH:N (default: robustness's)")
    p.add_argument("--absolute", action="store_true",
                   help="compare: grids over torso mass (kg) x friction coefficient (the paper's), not multipliers")
    p.add_argument("--stopped", action="store_true",
                   help="compare: runs stopped before their end are evaluated from their latest checkpoint")
    p.add_argument("--reuse", action="store_true",
                   help="compare: take a run's robustness.json when it already holds this grid (same axes, episodes, "
                        "fresh adversary) instead of evaluating again")
    p.add_argument("--episodes", type=int, default=4, help="compare: greedy episodes per grid cell and seed")
    p.add_argument("--fresh-adversary", type=int, default=0, metavar="UPDATES",
                   help="compare: also attack each trained protagonist with a new adversary trained for UPDATES updates")
    p.add_argument("--out", type=Path, default=None, help="the JSON file (default: its file under benchmarks/results/qarl/)")
    p.add_argument("--check", action="store_true",
                   help="throughput, vs-brax: validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    p.add_argument("overrides", nargs="*", help="extra config overrides, e.g. algo.gradient_steps=8")
    a = p.parse_intermixed_args()
    if not Path("benchmarks").is_dir():
        raise SystemExit("run from the repository root")
    if a.check:
        return check(a)
    OUT.mkdir(parents=True, exist_ok=True)
    if a.what == "throughput":
        res = throughput(a.env, a.num_envs, a.updates)
        path = OUT / f"throughput_{a.env}_{res['device'].replace(' ', '_')}.json"
    elif a.what == "vs-brax":
        res = vs_brax(a.env, a.num_envs, a.updates, a.grad_updates, a.batch)
        path = OUT / f"vs_brax_{a.env}_{res['device'].replace(' ', '_')}.json"
    elif a.what == "learn":
        res = learn(a.env, a.steps, a.seeds, a.num_envs, a.overrides)
        path = OUT / f"learn_sac_{a.env}.json"
    else:
        res = compare(a.env, a.steps, a.seeds, a.num_envs, a.overrides, (a.mass, a.friction), a.fresh_adversary,
                      a.stopped, a.episodes, a.absolute, a.reuse)
        path = OUT / f"compare_{a.env}.json"
    path = a.out or path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
