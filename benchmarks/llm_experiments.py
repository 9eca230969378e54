"""The LLM-loss experiments, several seeds each, with plots and a JSON summary.

    python benchmarks/llm_experiments.py cold_start --seeds 3   # (a) GRPO, Dr. GRPO, GARL q=.75, PAFT q=.75; 1M model, 600 iterations
    python benchmarks/llm_experiments.py cold_start_lr3e-4 --seeds 3   # the same at learning rate 3e-4
    python benchmarks/llm_experiments.py noise           # (b) DPO, conservative DPO, ADPO variants under label / score noise
    python benchmarks/llm_experiments.py likelihood      # (c) log-prob / prob vs binary reward on digit sum, with an SFT-only control
    python benchmarks/llm_experiments.py self_play       # SPPO (4 and 8 samples per prompt) vs Nash-MP from the same warm start
    python benchmarks/llm_experiments.py tables          # the README's markdown tables, from the recorded JSON files

Runs go to ``benchmarks/results/llm/<experiment>/<config>/seed<k>``; the summary and the plots to
``benchmarks/results/llm/<experiment>.json`` / ``.png``.  A run's trajectory does not depend on its
length (iteration i's key is ``fold_in(key, i + 1)``), so a table at an earlier iteration reads the
same runs' logged evaluations.
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
SMALL = {"d_model": 128, "n_layers": 4, "n_heads": 4, "d_mlp": 512}  # 1.05M parameters
PG = {"beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2}
NOISES = ("none", "flip:0.2", "flip:0.4", "gauss:0.3", "cauchy:0.2")


def experiments(name: str, seeds: int, iterations: int | None):
    if name in ("cold_start", "cold_start_lr3e-4"):  # the 1M model at the tiny model's lr 1e-3, and at 3e-4
        task = {"name": "combination_lock", "kwargs": {}}
        lr = 3e-4 if name.endswith("lr3e-4") else 1e-3
        losses = {
            "grpo": {"name": "grpo", **PG},
            "dr_grpo": {"name": "dr_grpo", **PG},
            "garl_q0.75": {"name": "garl", "q": 0.75, "p_floor": 1e-3},
            "paft_q0.75": {"name": "paft", "q": 0.75},
        }
        if name.endswith("lr3e-4"):  # the check of the learning rate: PAFT left out (compute)
            losses.pop("paft_q0.75")
        for label, loss in losses.items():
            yield label, {**BASE, "task": task, "loss": loss, "model": SMALL, "iterations": iterations or 600, "lr": lr}
    elif name == "noise":
        task = {"name": "sort_letters", "kwargs": {}}
        init = _sft_init(task)
        for noise in NOISES:
            losses = {"dpo": {"name": "dpo", "beta": 0.1}}
            if noise.startswith("flip:"):  # conservative DPO told the true flip rate: what ADPO's soft pair target also knows
                losses["cdpo"] = {"name": "dpo", "beta": 0.1, "label_smoothing": float(noise.split(":")[1])}
            losses.update({
                "adpo_pair": {"name": "adpo_pair", "tau": 10.0, "beta_r": 0.1},
                "adpo_list": {"name": "adpo_list", "tau": 10.0, "beta_r": 0.1},
                "adpo_pl": {"name": "adpo_pl", "tau": 10.0, "beta_r": 0.1},
            })
            for label, loss in losses.items():
                yield f"{label}_{noise}", {**BASE, "mode": "pref", "task": task, "loss": loss, "noise": noise,
                                           "iterations": iterations or 150, "lr": 3e-4, "init_from": str(init)}
    elif name == "self_play":  # online preferences (Bradley–Terry on the true reward) from the noise warm start
        task = {"name": "sort_letters", "kwargs": {}}
        init = _sft_init(task)
        # samples per prompt per iteration: SPPO K; Nash-MP K from the anchor + K from the opponent
        runs = {"sppo_k4": ({"name": "sppo", "beta": 0.1}, 4), "sppo_k8": ({"name": "sppo", "beta": 0.1}, 8),
                "nash_mp_k4": ({"name": "nash_mp", "beta": 0.1, "eta": 1.0}, 4)}
        for label, (loss, k) in runs.items():
            yield label, {**BASE, "mode": "pref", "task": task, "loss": loss, "round_length": 20, "num_candidates": k,
                          "iterations": iterations or 200, "lr": 3e-4, "init_from": str(init)}
    elif name == "likelihood":
        task = {"name": "digit_sum", "kwargs": {}}
        runs = {"binary": ("binary", True), "logprob": ("logprob", True), "prob": ("prob", True),
                "sft_only": ("logprob", False)}  # the log-prob reward's teacher-forced term alone
        for label, (reward, pg) in runs.items():
            yield label, {**BASE, "task": task, "loss": {"name": "dr_grpo", **PG}, "reward": reward,
                          "policy_gradient": pg, "iterations": iterations or 150}
    else:
        raise SystemExit(f"unknown experiment {name!r}; valid: cold_start, cold_start_lr3e-4, noise, likelihood, self_play, tables")


def _sft_init(task):
    """A short supervised warm-up: every preference run starts from the same partly competent model."""
    init = OUT / "sft_init"
    if not (init / "summary.json").exists():
        run_llm({**BASE, "mode": "sft", "task": task, "loss": {"name": "grpo"}, "iterations": 60, "lr": 1e-3}, init)
    return init


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=None)
    a = p.parse_args()
    if not Path("benchmarks").is_dir():
        raise SystemExit("run from the repository root")
    if a.experiment == "tables":
        return tables()
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
                at = int(np.argmax(xs >= 150))  # the same runs, read at iteration 150
                entry[f"pass_at_1_level{lv}_iteration{int(xs[at])}"] = [float(y[at]) for y in ys]
            last = [[r["train_pass_level3"] for r in ps["rows"] if "train_pass_level3" in r][-3:] for ps in per_seed]
            entry["final_train_pass_level3"] = [float(np.mean(x)) for x in last]
        out[label] = entry
    return out


def plot(name, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if name.startswith("cold_start"):
        metrics = ["test_pass_at_1_level1", "test_pass_at_1_level2", "test_pass_at_1_level3"]
    elif name == "noise":
        return _plot_noise(results)
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


def _plot_noise(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(NOISES), figsize=(4 * len(NOISES), 3.6), squeeze=False, sharey=True)
    for ax, noise in zip(axes[0], NOISES):
        for label, per_seed in results.items():
            if not label.endswith("_" + noise):
                continue
            xs, ys = _curve(per_seed, "test_true_reward")
            lo, hi = bootstrap_ci(ys)
            line, = ax.plot(xs, ys.mean(0), label=label[: -len(noise) - 1])
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_title(f"noise {noise}: held-out true reward", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "noise.png", dpi=110)


def _fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def cold_start_table(cs, exp, names):
    """Per seed: pass@1 per level at iteration 150 (the same runs' logged evaluation) and at the end."""
    if not cs:
        return
    it150 = next(k.rsplit("iteration", 1)[1] for k in cs["grpo"] if k.startswith("pass_at_1_level1_iteration"))
    n = len(cs["grpo"]["test_pass_at_1"]["per_seed"])
    print(f"\n(a) {exp}: held-out greedy pass@1 per seed ({n} seeds), at iteration {it150} and at the end\n")
    print("| loss | level 1 @150 | level 2 @150 | level 1 end | level 2 end | level 3 end | level 2 passes 0.5 at |")
    print("|---|---|---|---|---|---|---|")
    for k, e in cs.items():
        if not isinstance(e, dict) or k not in names:
            continue
        ps = lambda key: ", ".join(_fmt(v) for v in e[key])  # noqa: E731
        end = lambda lv: ", ".join(_fmt(v) for v in e[f"test_pass_at_1_level{lv}"]["per_seed"])  # noqa: E731
        esc = ", ".join("never" if v is None else str(v) for v in e["escape_iteration_level2"])
        print(f"| {names[k]} | {ps(f'pass_at_1_level1_iteration{it150}')} | {ps(f'pass_at_1_level2_iteration{it150}')} "
              f"| {end(1)} | {end(2)} | {end(3)} | {esc} |")


def tables() -> None:
    """Print the README's tables from the recorded JSON files (nothing typed by hand)."""
    def load(n):
        f = OUT / f"{n}.json"
        return json.loads(f.read_text()) if f.exists() else None

    names = {"grpo": "GRPO", "dr_grpo": "Dr. GRPO", "garl_q0.75": "GARL q = 0.75", "paft_q0.75": "PAFT q = 0.75"}
    for exp in ("cold_start", "cold_start_lr3e-4"):
        cold_start_table(load(exp), exp, names)
    nz = load("noise")
    if nz:
        print("\n(b) held-out greedy true reward, mean of seeds (per seed)\n")
        labels = ["dpo", "cdpo", "adpo_pair", "adpo_list", "adpo_pl"]
        print("| loss | " + " | ".join(NOISES) + " |")
        print("|---|" + "---|" * len(NOISES))
        for lab in labels:
            cells = []
            for noise in NOISES:
                e = nz.get(f"{lab}_{noise}")
                cells.append("–" if e is None else f"{e['test_true_reward']['mean']:.3f} ("
                             + ", ".join(f"{v:.3f}" for v in e["test_true_reward"]["per_seed"]) + ")")
            print(f"| {lab} | " + " | ".join(cells) + " |")
    per_seed_table(load("likelihood"), "(c) digit sum, per seed",
                   {"held-out greedy pass@1": "test_pass_at_1", "sampled training success (last logged)": "final_train_verifier_reward"})
    per_seed_table(load("self_play"), "self-play, per seed",
                   {"held-out pass@1": "test_pass_at_1", "held-out true reward": "test_true_reward",
                    "mass on the true best answer": "test_best_answer_prob"}, nd=3)


def per_seed_table(report, title, columns: dict, nd: int = 2) -> None:
    """A markdown table: one row per configuration, one column per metric, values per seed."""
    if not report:
        return
    print(f"\n{title}\n")
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for k, e in report.items():
        if isinstance(e, dict) and "test_pass_at_1" in e:
            print(f"| {k} | " + " | ".join(", ".join(_fmt(v, nd) for v in e[m]["per_seed"]) for m in columns.values()) + " |")


if __name__ == "__main__":
    main()
