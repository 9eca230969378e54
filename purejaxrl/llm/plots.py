"""What a learned LLM objective does: the ``weight`` family's ``w_φ`` against the group success rate
p̂ at several training-progress values (beside the special points GRPO, Dr. GRPO and GARL), or the
``drift`` family's ``D_φ`` against the ratio for positive and negative advantages."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from purejaxrl.llm import learned as LN

PROGRESS = (0.0, 0.5, 0.95)


def plot_objective(directory, out, task_cfg: dict, G: int = 8) -> Path:
    """``out`` (a PNG) for the objective saved in ``directory``; ``G`` completions per group give the
    success rates p̂ = k / G at which the weight is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from purejaxrl.llm.tasks import make_task

    L_max = make_task(task_cfg["name"], **(task_cfg.get("kwargs") or {})).max_new
    spec, params = LN.load(directory, L_max)
    fig, ax = plt.subplots(figsize=(6, 4))
    if spec["kind"] == "weight":
        k = np.arange(1, G)  # groups with a success and a failure (the others have zero advantage)
        for t in PROGRESS:
            w = [float(LN.group_weight(params, spec, jnp.asarray([1.0] * int(kk) + [0.0] * (G - int(kk))), G, t)[0])
                 for kk in k]
            ax.plot(k / G, w, marker="o", label=f"learned, progress {t:g}")
        p = k / G
        sigma = np.sqrt(p * (1 - p) * G / (G - 1))
        ax.plot(p, 1 / (sigma + 1e-4), "k--", label="GRPO (1/σ̂)")
        ax.plot(p, np.full_like(p, 1.0), "k:", label="Dr. GRPO (1)")
        ax.plot(p, L_max * p ** -0.75, "k-.", label="GARL q=0.75 (L·p̂^-q)")
        ax.set_xlabel("group success rate p̂")
        ax.set_ylabel("advantage weight w")
        ax.set_yscale("log")
    else:
        from purejaxrl import objectives

        obj = objectives.build(LN._drift_spec(spec), params)
        r = jnp.linspace(0.5, 1.5, 101)
        for t in PROGRESS:
            for a in (1.0, -1.0):
                d = obj.drift(params, r, jnp.log(r), jnp.full_like(r, a), {"clip_eps": 0.2}, t)
                ax.plot(np.asarray(r), np.asarray(d), label=f"Â = {a:+g}, progress {t:g}")
        ax.set_xlabel("ratio ρ = π_θ / π_old")
        ax.set_ylabel("drift D")
    ax.set_title(f"learned {spec['kind']} (from {spec['init']})")
    ax.legend(fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
