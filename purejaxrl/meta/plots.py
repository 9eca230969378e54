"""Plots of a meta run: fitness per generation, and the drift D(r, Â) of the evolved objective at
several points of training progress p (the TA-LPO paper's main figure)."""

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
    ax.set_title(f"{cfg['objective']['kind']} on {cfg['env']['name']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(run_dir / "fitness.png")
    fig.savefig(out[-1], dpi=120)
    plt.close(fig)

    if which is None:
        which = "selected" if (run_dir / "selected").exists() else "mean"
    obj = objectives.load_objective(run_dir / which)
    clip = float(cfg["algo"]["clip_eps"])
    algo = cfg["algo"]
    points = progress_points(max(int(algo["total_timesteps"]) // (int(algo["num_envs"]) * int(algo["num_steps"])), 1))
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
    what = {"selected": "ES mean chosen on held-out seeds", "mean": "final ES mean", "best": "best member"}.get(which, which)
    fig.suptitle(f"{obj.name} drift ({what}) over training progress")
    out.append(run_dir / f"drift_{which}.png")
    fig.savefig(out[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
