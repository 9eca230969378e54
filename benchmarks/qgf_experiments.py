"""QGF against its baselines on a locally generated offline dataset, several seeds, per-w results.

    python benchmarks/qgf_experiments.py pointmaze_medium --seeds 3 --updates 20000
    python benchmarks/qgf_experiments.py cube_single --seeds 3 --updates 20000 --episodes 16
    python benchmarks/qgf_experiments.py throughput      # after cube_single: gradient steps/s, eval and generation rates

One QGF training run (flow BC actor + IQL critic, seeds vmapped) gives every test-time method:
QGF (gradient at the denoised action) and the QFQL baseline (gradient at the noisy action) at each
guidance weight w, flow BC (w = 0) and best-of-N by Q — all evaluated from the same checkpoint with
``purejaxrl eval`` (one compile per method).  FQL, the train-time baseline, is trained on the same
data with the same networks and budget.  Writes ``benchmarks/results/qgf/<dataset>.json`` and
``.png`` (success rate vs w, baselines as lines) and keeps the run directories beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import purejaxrl
from envs.datasets import generate
from purejaxrl.config import compose
from purejaxrl.evaluate import evaluate_run
from purejaxrl.experiment import run

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs

OUT = Path("benchmarks/results/qgf")  # relative: the recorded configs carry no machine paths
DATA = Path("data")  # generated datasets (not committed): regenerate with the same seed
SETUPS = {
    "pointmaze_medium": {"dataset": "pointmaze_medium_navigate", "env": "pointmaze_medium", "episodes": 1000,
                         "chunk": 5, "weights": [0.0, 0.1, 0.3, 1.0, 3.0, 10.0], "w": 1.0},
    "pointmaze_large": {"dataset": "pointmaze_large_navigate", "env": "pointmaze_large", "episodes": 1000,
                        "chunk": 5, "weights": [0.0, 0.1, 0.3, 1.0, 3.0, 10.0], "w": 1.0},
    # OGBench cube-single, play data from the ogbench package's oracle (300 of OGBench's 1000 episodes),
    # task 1; evaluated in MuJoCo on the host; FQL at the reference's cube distillation weight
    "cube_single": {"dataset": "ogbench_cube_single_play", "env": "ogbench_cube_single", "episodes": 300,
                    "chunk": 5, "weights": [0.0, 0.01, 0.03, 0.1, 0.3, 1.0], "w": 0.1, "fql": ["algo.alpha=300"],
                    "eval_envs": 8, "evals": 2},
    # D4RL-style "medium-expert": half the episodes from a PPO expert, half from a PPO run stopped early
    "pendulum_mixed": {"dataset": "from_policy", "env": "pendulum", "episodes": 250, "chunk": 1,
                       "weights": [0.0, 0.001, 0.003, 0.01, 0.03, 0.1], "w": 0.01,
                       "policies": {"expert": 1_000_000, "weak": 65_536}},
}
PPO_PENDULUM = ["algo=ppo", "env=pendulum", "algo.num_envs=16", "algo.num_steps=256", "algo.num_minibatches=16",
                "algo.num_epochs=10", "algo.lr=0.001", "algo.gamma=0.95", "algo.normalize_obs=true",
                "algo.normalize_reward=true", "algo.ent_coef=0.0", "num_seeds=1", "logger.progress=false"]


def make_dataset(name: str, s: dict) -> Path:
    data = DATA / f"{name}.npz"
    if data.exists():
        return data
    if s["dataset"] != "from_policy":
        info = generate(s["dataset"], s["episodes"], data, seed=0)
        (DATA / f"{name}.json").write_text(json.dumps(info))
        print(info)
        return data
    from purejaxrl.collect import collect_many

    dirs = []
    for label, steps in s["policies"].items():  # the behaviour policies, trained here
        d = OUT / f"{name}_policies" / label
        if not (d / "summary.json").exists():
            run(compose([*PPO_PENDULUM, f"algo.total_timesteps={steps}"]), d, progress=False)
        dirs.append(str(d))
    print(collect_many(dirs, s["episodes"], data, seed=0))
    return data


def throughput(updates: int = 1000) -> dict:
    """Gradient steps/s of QGF and FQL (1 and 3 seeds vmapped, the benchmark's networks, no
    evaluation inside the timed chunks), host-evaluation env steps/s on OGBench cube-single, and
    dataset generation transitions/s, all in this process."""
    import jax
    import jax.numpy as jnp

    from purejaxrl.config import run_grid
    from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

    out = {"device": jax.devices()[0].device_kind, "updates_timed": updates, "training": {}}
    data = DATA / "cube_single.npz"
    for algo in ("qgf", "fql"):
        for seeds in (1, 3):
            cfg = compose([f"algo={algo}", "env=ogbench_cube_single", f"dataset.path={data}", f"num_seeds={seeds}",
                           f"algo.num_updates={3 * updates}", "algo.actor_hidden=[256,256,256]",
                           "algo.critic_hidden=[256,256,256]", "algo.chunk=5", "algo.num_evals=3"])
            a = build_algorithm(cfg)
            runs, hparams, seed_list = run_grid(cfg, a.HPARAMS)
            tr = Trainer(a, len(runs), 3)
            hp = batch_hparams(a, hparams, len(runs))
            state = tr.init(jnp.stack([jax.random.PRNGKey(int(x)) for x in seed_list]), hp)
            t0 = time.perf_counter()
            tr.compile_chunk(state, hp, 0)
            comp = time.perf_counter() - t0
            state, _ = tr.chunk(state, hp, 0)
            t0 = time.perf_counter()
            state, _ = tr.chunk(state, hp, updates)
            dt = time.perf_counter() - t0
            assert tr.updates_per_chunk == updates  # (host-evaluated: one chunk per evaluation, none inside)
            out["training"][f"{algo}_{seeds}_seeds"] = {"compile_seconds": comp,
                                                        "gradient_steps_per_second": updates * seeds / dt}
    ev = evaluate_run(OUT / "cube_single" / "qgf", 8, "test", 1, ["algo.guidance_weights=[0,0.03]"], write=False)
    from purejaxrl.evaluate import load_run  # the evaluator's own counters, from a fresh load

    algo, state, *_ = load_run(OUT / "cube_single" / "qgf", {"guidance_weights": [0.0, 0.03]})
    algo.host_evaluate_weights(state, True, 8, "test", 1)
    out["evaluation"] = {"env": "ogbench_cube_single", "runs_x_weights_x_episodes": [3, 2, 8],
                         "env_steps_per_second": algo.eval_env_steps / algo.eval_seconds,
                         "success_w0.03": ev["per_weight"][1]["success_rate"]}
    t0 = time.perf_counter()
    pm = generate("pointmaze_medium_navigate", 1000, DATA / "throughput_pm.npz", seed=1)
    out["generation"] = {"pointmaze_medium_navigate": {"transitions": pm["transitions"],
                                                       "seconds_with_compile": time.perf_counter() - t0,
                                                       "transitions_per_second": pm["transitions_per_second"]}}
    og = generate("ogbench_cube_single_play", 5, DATA / "throughput_cube.npz", seed=1)
    out["generation"]["ogbench_cube_single_play"] = {"transitions": og["transitions"],
                                                     "transitions_per_second": og["transitions_per_second"]}
    (OUT / "throughput.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setup", choices=[*SETUPS, "throughput"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--updates", type=int, default=20000)
    p.add_argument("--episodes", type=int, default=32, help="evaluation episodes per seed and method")
    a = p.parse_args()
    if not Path("benchmarks").is_dir():
        raise SystemExit("run from the repository root")
    if a.setup == "throughput":
        throughput()
        return
    s = SETUPS[a.setup]
    data = make_dataset(a.setup, s)
    common = [f"env={s['env']}", f"dataset.path={data}", f"algo.num_updates={a.updates}", f"num_seeds={a.seeds}",
              "algo.actor_hidden=[256,256,256]", "algo.critic_hidden=[256,256,256]", f"algo.chunk={s['chunk']}",
              f"algo.num_evals={s.get('evals', 4)}", f"algo.num_eval_envs={s.get('eval_envs', 16)}", "chunks=4",
              "logger.progress=false"]
    w_list = f"algo.guidance_weights={s['weights']}".replace(" ", "")
    root = OUT / a.setup
    t0 = time.time()
    runs = {}
    for algo, extra in (("qgf", [w_list, f"algo.guidance_weight={s['w']}"]), ("fql", s.get("fql", []))):
        d = root / algo
        if not (d / "summary.json").exists():
            run(compose([f"algo={algo}", *common, *extra]), d, progress=False)
        runs[algo] = json.loads((d / "summary.json").read_text())
    results = {"setup": s, "seeds": a.seeds, "updates": a.updates, "episodes_per_seed": a.episodes, "methods": {}}
    for name, overrides in (("qgf", [w_list, "algo.guidance=denoised"]), ("qfql", [w_list, "algo.guidance=noisy"]),
                            ("best_of_n", ["algo.guidance=best_of_n", "algo.guidance_weights=[0]"])):
        ev = evaluate_run(root / "qgf", a.episodes, "test", 0, overrides, write=False)
        results["methods"][name] = ev["per_weight"]
    ev = evaluate_run(root / "fql", a.episodes, "test", 0, write=False)
    results["methods"]["fql"] = ev["per_weight"]
    results["training"] = {k: {"gradient_steps_per_second": v.get("gradient_steps_per_second"),
                               "compile_seconds": v["compile_seconds"], "run_seconds": v["run_seconds"],
                               **{f: v[f] for f in ("evaluation_env_steps_per_second",) if f in v}}
                           for k, v in runs.items()}
    if (DATA / f"{a.setup}.json").exists():  # how the dataset was made, and how fast
        results["dataset"] = json.loads((DATA / f"{a.setup}.json").read_text())
    results["wall_seconds"] = time.time() - t0
    (OUT / f"{a.setup}.json").write_text(json.dumps(results, indent=2))
    plot(a.setup, results)
    print(json.dumps(results["methods"], indent=1))


def plot(setup, results):
    key = "per_run_success" if setup.startswith(("pointmaze", "cube")) else "per_run_return"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("qgf", "o-"), ("qfql", "s--")):
        rows = results["methods"][name]
        ws = np.array([r["w"] for r in rows])
        succ = np.array([r[key] for r in rows])  # [W, seeds]
        x = np.where(ws == 0, ws[ws > 0].min() / 3, ws)
        ax.errorbar(x, succ.mean(1), yerr=succ.std(1), fmt=style, capsize=3,
                    label={"qgf": "QGF (∇Q at the denoised action)", "qfql": "QFQL (∇Q at the noisy action)"}[name])
    for name, color in (("best_of_n", "tab:green"), ("fql", "tab:red")):
        r = results["methods"][name][0]
        ax.axhline(np.mean(r[key]), color=color, ls=":", label={"best_of_n": "best-of-32 by Q", "fql": "FQL (train-time)"}[name])
    ax.set_xscale("log")
    ax.set_xlabel("guidance weight w (leftmost point: w = 0, flow BC)")
    ax.set_ylabel("success rate" if key == "per_run_success" else "return")
    ax.set_title(f"{setup}: {results['seeds']} seeds × {results['episodes_per_seed']} episodes, "
                 f"{results['updates']} gradient steps", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / f"{setup}.png", dpi=110)


if __name__ == "__main__":
    main()
