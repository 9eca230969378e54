"""The three LLM-loss experiments, several seeds each, with plots and a JSON summary.

    python benchmarks/llm_experiments.py cold_start      # (a) GRPO, Dr. GRPO, GARL q∈{.5,.75,1}, PAFT q=.75
    python benchmarks/llm_experiments.py cold_start_long --iterations 500   # (a) Dr. GRPO, GARL, PAFT, longer
    python benchmarks/llm_experiments.py cold_start_longer --iterations 1500  # (a) Dr. GRPO vs GARL q=.75, level 3
    python benchmarks/llm_experiments.py noise           # (b) DPO vs ADPO variants under label noise
    python benchmarks/llm_experiments.py likelihood      # (c) log-prob vs binary reward on digit sum
    python benchmarks/llm_experiments.py self_play       # SPPO vs Nash-MP rounds from the same warm start

Runs go to ``benchmarks/results/llm/<experiment>/<config>/seed<k>``; the summary and the plots to
``benchmarks/results/llm/<experiment>.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from purejaxrl.llm.run import run_llm
from purejaxrl.logging import read_metrics
from purejaxrl.plotting import bootstrap_ci

OUT = Path("benchmarks/results/llm")  # relative, so the recorded configs carry no machine paths

BASE = {
    "mode": "rl", "seed": 0, "iterations": 200, "lr": 1e-3, "weight_decay": 0.0, "max_grad_norm": 1.0,
    "batch_size": 64, "num_prompts": 32, "num_generations": 16, "num_iterations": 1, "temperature": 1.0,
    "top_k": 0, "reward": "binary", "num_candidates": 4, "dataset_size": 2048, "noise": "none",
    "eval_prompts": 300, "eval_every": 10, "log_every": 10, "checkpoint_every": 1000, "init_from": None,
    "run_dir": None, "resume": False, "compilation_cache": True, "progress": False,
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_mlp": 256},
}
PG = {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2}


def experiments(name: str, seeds: int, iterations: int | None):
    if name in ("cold_start", "cold_start_long", "cold_start_longer"):
        task = {"name": "combination_lock", "kwargs": {}}
        losses = {
            "grpo": {"name": "grpo", **PG},
            "dr_grpo": {"name": "dr_grpo", **PG},
            "garl_q0.5": {"name": "garl", "q": 0.5, "p_floor": 1e-3},
            "garl_q0.75": {"name": "garl", "q": 0.75, "p_floor": 1e-3},
            "garl_q1": {"name": "garl", "q": 1.0, "p_floor": 1e-3},
            "paft_q0.75": {"name": "paft", "q": 0.75},
        }
        if name == "cold_start_long":  # longer runs of the three that matter for level 3
            losses = {k: losses[k] for k in ("dr_grpo", "garl_q0.75", "paft_q0.75")}
        if name == "cold_start_longer":  # the paper's claim itself: does GARL q = 0.75 escape level 3?
            losses = {k: losses[k] for k in ("dr_grpo", "garl_q0.75")}
        for label, loss in losses.items():
            yield label, {**BASE, "task": task, "loss": loss, "iterations": iterations or 200}
    elif name == "noise":
        task = {"name": "sort_letters", "kwargs": {}}
        # a short supervised warm-up gives every preference run the same partly competent start
        init = OUT / "noise" / "sft_init"
        if not (init / "summary.json").exists():
            run_llm({**BASE, "mode": "sft", "task": task, "loss": {"name": "grpo"}, "iterations": 60, "lr": 1e-3}, init)
        losses = {
            "dpo": {"name": "dpo", "beta": 0.1},
            "adpo_pair": {"name": "adpo_pair", "tau": 10.0, "beta_r": 0.1},
            "adpo_list": {"name": "adpo_list", "tau": 10.0, "beta_r": 0.1},
            "adpo_pl": {"name": "adpo_pl", "tau": 10.0, "beta_r": 0.1},
        }
        for noise in ("none", "flip:0.2", "flip:0.4"):
            for label, loss in losses.items():
                yield f"{label}_{noise}", {**BASE, "mode": "pref", "task": task, "loss": loss, "noise": noise,
                                           "iterations": iterations or 300, "lr": 3e-4, "init_from": str(init)}
    elif name == "self_play":  # online preferences (Bradley–Terry on the true reward) from the noise warm start
        task = {"name": "sort_letters", "kwargs": {}}
        init = OUT / "noise" / "sft_init"
        if not (init / "summary.json").exists():
            raise SystemExit("run the noise experiment first: it writes the shared warm start")
        losses = {"sppo": {"name": "sppo", "beta": 0.1}, "nash_mp": {"name": "nash_mp", "beta": 0.1, "eta": 1.0}}
        for label, loss in losses.items():
            yield label, {**BASE, "mode": "pref", "task": task, "loss": loss, "round_length": 20,
                          "iterations": iterations or 200, "lr": 3e-4, "init_from": str(init)}
    elif name == "likelihood":
        task = {"name": "digit_sum", "kwargs": {}}
        for reward in ("binary", "logprob", "prob"):
            yield reward, {**BASE, "task": task, "loss": {"name": "dr_grpo", **PG}, "reward": reward,
                           "iterations": iterations or 200}
    else:
        raise SystemExit(f"unknown experiment {name!r}; valid: cold_start, cold_start_long, cold_start_longer, noise, likelihood, self_play")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=None)
    a = p.parse_args()
    if not Path("benchmarks").is_dir():
        raise SystemExit("run from the repository root")
    root = OUT / a.experiment
    results = {}
    t0 = time.time()
    for label, cfg in experiments(a.experiment, a.seeds, a.iterations):
        per_seed = []
        for s in range(a.seeds):
            d = root / label / f"seed{s}"
            summary_path = d / "summary.json"
            if summary_path.exists():
                summary = json.loads(summary_path.read_text())
            else:
                if d.exists():
                    import shutil

                    shutil.rmtree(d)
                summary = run_llm({**cfg, "seed": s}, d)
            rows = read_metrics(d)
            per_seed.append({"summary": summary, "rows": rows})
            print(f"{label} seed {s}: " + ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if k.startswith("test_")), flush=True)
        results[label] = per_seed
    report = summarise(a.experiment, results)
    report["wall_seconds"] = time.time() - t0
    (OUT / f"{a.experiment}.json").write_text(json.dumps(report, indent=2))
    plot(a.experiment, results)
    print(json.dumps(report, indent=2))


def _curve(per_seed, metric):
    xs = [r["update"] for r in per_seed[0]["rows"] if r.get(metric) is not None]
    ys = np.array([[r[metric] for r in ps["rows"] if r.get(metric) is not None] for ps in per_seed])
    return np.asarray(xs), ys


def summarise(name, results):
    out = {}
    for label, per_seed in results.items():
        finals = {k: [ps["summary"][k] for ps in per_seed] for k in per_seed[0]["summary"] if k.startswith("test_")}
        entry = {k: {"mean": float(np.mean(v)), "per_seed": v} for k, v in finals.items()}
        entry["seconds_per_iteration"] = float(np.mean([ps["summary"]["seconds_per_iteration"] for ps in per_seed]))
        if name not in ("noise", "self_play"):  # sampled (temperature 1) training success at the end: mean of the last 3 logged rows
            last = [[r["verifier_reward"] for r in ps["rows"] if "verifier_reward" in r][-3:] for ps in per_seed]
            entry["final_train_verifier_reward"] = {"mean": float(np.mean(last)), "per_seed": [float(np.mean(x)) for x in last]}
        if name.startswith("cold_start"):  # first evaluation at which pass@1 on level k exceeds 0.5
            for lv in (1, 2, 3):
                xs, ys = _curve(per_seed, f"test_pass_at_1_level{lv}")
                esc = [int(xs[np.argmax(y > 0.5)]) if (y > 0.5).any() else None for y in ys]
                entry[f"escape_iteration_level{lv}"] = esc
        out[label] = entry
    return out


def plot(name, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if name.startswith("cold_start"):
        metrics = ["test_pass_at_1_level1", "test_pass_at_1_level2", "test_pass_at_1_level3"]
    elif name in ("noise", "self_play"):
        metrics = ["test_true_reward", "test_best_answer_prob"]
    else:
        metrics = ["test_pass_at_1", "verifier_reward"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, per_seed in results.items():
            xs, ys = _curve(per_seed, metric)
            lo, hi = bootstrap_ci(ys)
            line, = ax.plot(xs, ys.mean(0), label=label)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_title(metric.replace("test_", "held-out ").replace("verifier_reward", "sampled training success"))
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110)


if __name__ == "__main__":
    main()
