"""Plots of a meta run: fitness per generation, and what the evolved thing does over training
progress p — the drift D(r, Â) of an evolved objective (the TA-LPO paper's main figure), or the
policy target π̂ an evolved LPG update rule gives a probe transition, against its reward, at several
progress values and lifetimes."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from purejaxrl import objectives
from purejaxrl.logging import read_metrics

PROGRESS = (0.0, 0.25, 0.5, 0.75)  # and the last update's p = (N − 1)/N: training never reaches p = 1


def progress_points(num_updates: int) -> tuple[float, ...]:
    """The progress values drawn: 0, ¼, ½, ¾ and the last update's ``(N − 1)/N`` (``p = n/N`` is
    read before update n, so a run of N updates never sees p = 1)."""
    last = (num_updates - 1) / num_updates
    return tuple(p for p in PROGRESS if p < last) + (last,)


def drift_grid(obj: objectives.Objective, clip_eps: float, progress: float, n: int = 101,
               r_range=(0.5, 1.5), a_range=(-2.0, 2.0)):
    """``(r, Â, D)`` on an ``n × n`` grid (D[i, j] at Â[i], r[j])."""
    r = np.linspace(*r_range, n)
    a = np.linspace(*a_range, n)
    R, A = np.meshgrid(r, a)
    hp = {"clip_eps": jnp.float32(clip_eps), "objective": obj.params}
    d = obj.drift(obj.params, jnp.asarray(R, jnp.float32), jnp.log(jnp.asarray(R, jnp.float32)),
                  jnp.asarray(A, jnp.float32), hp, jnp.float32(progress))
    return r, a, np.asarray(d)


LIFETIMES = (10, 50, 250)  # the paper's TA-LPG lifetimes run 10..250 updates


def lifetime_panels(random_lifetime) -> tuple[int, ...]:
    """The lifetimes a time-aware rule is drawn at: the ends and the log-middle of the range it was
    meta-trained on (``algo.random_lifetime``), else the paper's range."""
    if not random_lifetime:
        return LIFETIMES
    lo, hi = int(random_lifetime[0]), int(random_lifetime[1])
    return tuple(sorted({lo, int(round(float(np.sqrt(lo * hi)))), hi}))


def rule_response(rule, reward, progress: float, lifetime: int, prob: float = 0.2, terminal: bool = True):
    """π̂ of a one-step probe — reward ``reward`` (an array), the action taken with probability ``prob``,
    y(s) uniform, the episode terminating (``terminal``) or going on with y(s') uniform — at training
    progress n/N = ``progress`` of a lifetime of ``lifetime`` updates (read by a time-aware rule only)."""
    reward = jnp.asarray(reward, jnp.float32)
    y = jnp.full((rule.spec["y_dim"],), 1.0 / rule.spec["y_dim"])
    e = rule.embed(rule.params, y)
    d = jnp.float32(1.0 if terminal else 0.0)
    cols = [reward, jnp.full_like(reward, d), jnp.full_like(reward, prob), jnp.full_like(reward, e),
            jnp.full_like(reward, e * (1.0 - d))]
    if rule.spec.get("time_aware"):
        cols += [jnp.full_like(reward, progress), jnp.full_like(reward, np.log(lifetime))]
    x = jnp.stack(cols, -1)[None]  # [T = 1, B, F]
    reset = jnp.full(x.shape[:2], terminal)
    pi_hat, _ = rule.targets(rule.params, x, reset, 0.99)
    return np.asarray(pi_hat[0])


def plot_rule(rule, path: Path, title: str, num_updates: int, random_lifetime=None) -> Path:
    """``π̂`` of the probe transition against its reward, one line per progress value, one panel per
    lifetime of the range the rule was meta-trained on (``random_lifetime``; a rule without time inputs:
    one panel, its lines coincide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.linspace(-1.0, 1.0, 41)
    lifetimes = lifetime_panels(random_lifetime) if rule.spec.get("time_aware") else (num_updates,)
    fig, axes = plt.subplots(1, len(lifetimes), figsize=(3.4 * len(lifetimes), 3.2), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], lifetimes):
        for p in progress_points(n):
            ax.plot(r, rule_response(rule, r, p, n), lw=1.2, label=f"n/N = {p:.2g}")
        ax.axhline(0.0, color="k", lw=0.5, alpha=0.5)
        ax.set_title(f"N = {n} updates")
        ax.set_xlabel("reward of a terminal step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("policy target π̂")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_meta(run_dir: str | Path, which: str | None = None) -> list[Path]:
    """``fitness.png`` and ``drift_<which>.png``; ``which`` defaults to ``selected`` (the mean chosen
    by held-out evaluation) where the run has one, else ``mean`` (the final ES mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = read_metrics(run_dir)
    out = []
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    g = [r["update"] for r in rows]
    for key, label in (("mean_fitness", "population mean"), ("best_fitness", "best member"),
                       ("best_fitness_so_far", "best so far")):
        ax.plot(g, [r[key] for r in rows], label=label, lw=1, alpha=0.8 if key == "mean_fitness" else 0.5)
    if (run_dir / "heldout.jsonl").exists():
        import json

        held = [json.loads(line) for line in (run_dir / "heldout.jsonl").read_text().splitlines() if line]
        seeds = held[0]["seeds"] if held else 0
        ax.plot([h["generation"] for h in held], [h["heldout_fitness"] for h in held], "ko-", ms=3, lw=1.5,
                label=f"ES mean, {seeds} held-out seeds")
    ax.set_xlabel("generation")
    measure = "final training return" if cfg["es"].get("fitness") == "training" else "final greedy return"
    ax.set_ylabel("fitness" + (f" ({measure}, normalised: 0 untrained, 1 PPO-clip)" if cfg["es"].get("normalize_fitness")
                               else f" ({measure})"))
    lpg = cfg["algo"]["name"] == "lpg"
    ax.set_title(f"{cfg['algo']['update_rule'] if lpg else cfg['objective']['kind']} on {cfg['env']['name']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(run_dir / "fitness.png")
    fig.savefig(out[-1], dpi=120)
    plt.close(fig)

    if which is None:
        which = "selected" if (run_dir / "selected").exists() else "mean"
    what = {"selected": "ES mean chosen on held-out seeds", "mean": "final ES mean", "best": "best member"}.get(which, which)
    algo = cfg["algo"]
    updates = max(int(algo["total_timesteps"]) // (int(algo["num_envs"]) * int(algo["num_steps"])), 1)
    if lpg:
        from purejaxrl import update_rules

        rule = update_rules.load_rule(run_dir / which)
        out.append(plot_rule(rule, run_dir / f"rule_{which}.png", f"{algo['update_rule']} ({what}): π̂ over training "
                             "progress", updates, algo.get("random_lifetime")))
        return out
    obj = objectives.load_objective(run_dir / which)
    clip = float(cfg["algo"]["clip_eps"])
    points = progress_points(updates)
    grids = [drift_grid(obj, clip, p) for p in points]
    vmax = max(float(np.percentile(d, 99)) for _, _, d in grids) or 1.0
    fig, axes = plt.subplots(1, len(points), figsize=(3.2 * len(points), 3.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, p, (r, a, d) in zip(axes, points, grids):
        im = ax.imshow(d, origin="lower", extent=(r[0], r[-1], a[0], a[-1]), aspect="auto", vmin=0, vmax=vmax,
                       cmap="viridis")
        ax.axvline(1.0, color="w", lw=0.6, alpha=0.7)
        ax.axhline(0.0, color="w", lw=0.6, alpha=0.7)
        ax.set_title(f"p = {p:.3g}")
        ax.set_xlabel("r = π/π_old")
    axes[0].set_ylabel("Â")
    fig.colorbar(im, ax=axes, fraction=0.02, label="drift D")
    fig.suptitle(f"{obj.name} drift ({what}) over training progress", y=1.06)
    out.append(run_dir / f"drift_{which}.png")
    fig.savefig(out[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
