"""Plots of a meta run: fitness per generation, and the drift D(r, Â) of the evolved objective at
several points of training progress p (the TA-LPO paper's main figure)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from purejaxrl import objectives
from purejaxrl.logging import read_metrics

PROGRESS = (0.0, 0.25, 0.5, 0.75, 1.0)


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


def plot_meta(run_dir: str | Path, which: str = "mean") -> list[Path]:
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
        ax.plot(g, [r[key] for r in rows], label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness" + (" (normalised: 0 untrained, 1 PPO-clip)" if cfg["es"].get("normalize_fitness") else
                               " (final greedy return)"))
    ax.set_title(f"{cfg['objective']['kind']} on {cfg['env']['name']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(run_dir / "fitness.png")
    fig.savefig(out[-1], dpi=120)
    plt.close(fig)

    obj = objectives.load_objective(run_dir / which)
    clip = float(cfg["algo"]["clip_eps"])
    grids = [drift_grid(obj, clip, p) for p in PROGRESS]
    vmax = max(float(np.percentile(d, 99)) for _, _, d in grids) or 1.0
    fig, axes = plt.subplots(1, len(PROGRESS), figsize=(3.2 * len(PROGRESS), 3.2), sharey=True)
    for ax, p, (r, a, d) in zip(axes, PROGRESS, grids):
        im = ax.imshow(d, origin="lower", extent=(r[0], r[-1], a[0], a[-1]), aspect="auto", vmin=0, vmax=vmax,
                       cmap="viridis")
        ax.axvline(1.0, color="w", lw=0.6, alpha=0.7)
        ax.axhline(0.0, color="w", lw=0.6, alpha=0.7)
        ax.set_title(f"p = {p:g}")
        ax.set_xlabel("r = π/π_old")
    axes[0].set_ylabel("Â")
    fig.colorbar(im, ax=axes, fraction=0.02, label="drift D")
    fig.suptitle(f"{obj.name} drift ({which} of the ES) over training progress")
    out.append(run_dir / f"drift_{which}.png")
    fig.savefig(out[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
