"""``purejaxrl plot``: learning curves with the mean and a 95% bootstrap CI over seeds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from purejaxrl.logging import read_metrics


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over axis 0 (seeds) for every column."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    idx = rng.integers(0, n, size=(n_boot, n))
    means = values[idx].mean(axis=1)
    return np.quantile(means, alpha / 2, axis=0), np.quantile(means, 1 - alpha / 2, axis=0)


def curves(rows: list[dict], metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Group rows into one curve per hyperparameter setting: ``label -> (env_steps, [seeds, points])``."""
    groups: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get(metric) is None:
            continue
        label = ", ".join(f"{k.split('.')[-1]}={v:g}" for k, v in sorted(r.items()) if k.startswith("algo."))
        groups[label][r["seed"]][r["env_steps"]] = r[metric]
    out = {}
    for label, by_seed in groups.items():
        steps = sorted(set.intersection(*[set(d) for d in by_seed.values()]))
        if steps:
            out[label] = (np.asarray(steps), np.asarray([[d[s] for s in steps] for d in by_seed.values()]))
    return out


def run_label(cfg: dict) -> str:
    """``algo / env`` for RL runs, ``mode loss / task`` for ``purejaxrl llm`` runs."""
    if "algo" in cfg:
        return f"{cfg['algo']['name']} / {cfg['env']['name']}"
    extra = f" q={cfg['loss']['q']}" if "q" in cfg.get("loss", {}) else ""
    reward = f" {cfg['reward']}" if cfg.get("reward", "binary") != "binary" else ""
    noise = f" {cfg['noise']}" if cfg.get("mode") == "pref" else ""
    return f"{cfg['mode']} {cfg['loss']['name']}{extra}{reward}{noise} / {cfg['task']['name']}"


def plot_runs(run_dirs: list[str], metric: str = "eval_return", out: str | None = None, smooth: int = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    from purejaxrl.errors import ConfigError

    loaded = []
    for d in run_dirs:  # check every directory before drawing anything
        if not (Path(d) / "config.yaml").exists():
            raise ConfigError(f"{d} is not a run directory (no config.yaml); give run directories of purejaxrl runs")
        rows = read_metrics(d)
        available = sorted({k for r in rows for k, v in r.items() if isinstance(v, float) and not k.startswith("algo.")})
        if metric not in available:
            raise ConfigError(f"--metric {metric} is not logged in {d}; available: {', '.join(available)}")
        loaded.append((yaml.safe_load((Path(d) / "config.yaml").read_text()), rows))
    if smooth < 1:
        raise ConfigError(f"--smooth={smooth} must be >= 1")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for cfg, rows in loaded:
        name = run_label(cfg)
        for label, (x, y) in curves(rows, metric).items():
            if smooth > 1 and y.shape[1] >= smooth:
                k = np.ones(smooth) / smooth
                y = np.stack([np.convolve(row, k, mode="valid") for row in y])
                x = x[smooth - 1:]
            lo, hi = bootstrap_ci(y)
            line, = ax.plot(x, y.mean(0), label=f"{name} {label} (n={y.shape[0]})".strip())
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out) if out else Path(run_dirs[0]) / f"{metric}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_main(argv: list[str]) -> None:
    from purejaxrl.config import argument_parser

    p = argument_parser("purejaxrl plot", __doc__)
    p.add_argument("run_dirs", nargs="+", help="run directories (each with metrics.jsonl and config.yaml)")
    p.add_argument("--metric", default="eval_return", help="eval_return (greedy) or episode_return (training)")
    p.add_argument("--out", default=None, help="PNG path (default: <first run>/<metric>.png)")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window over logged points")
    a = p.parse_args(argv)
    metas = [d for d in a.run_dirs if _is_meta_run(d)]
    if metas:  # meta runs: fitness curves and drift maps, one set per run
        from purejaxrl.meta.plots import plot_meta

        for d in metas:
            for path in plot_meta(d):
                print(path)
        a.run_dirs = [d for d in a.run_dirs if d not in metas]
        if not a.run_dirs:
            return
    print(plot_runs(a.run_dirs, a.metric, a.out, a.smooth))


def _is_meta_run(d: str) -> bool:
    import yaml

    p = Path(d) / "config.yaml"
    try:
        return p.exists() and "es" in (yaml.safe_load(p.read_text()) or {})
    except yaml.YAMLError:
        return False
