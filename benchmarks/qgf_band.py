"""Why some guidance weights fail on the point maze: trajectories of a trained QGF run, recorded.

    python benchmarks/qgf_band.py benchmarks/results/reproduce/qgf_pointmaze/runs/flow_bc \\
        --weights 0,0.1,0.3,1,3,10 --episodes 10

For every seed of the run (on each task it was trained on, or ``--task``) and every weight w, the
greedy-flow policy plays ``--episodes`` episodes on the run's *validation* stream (the weights share
the draws), and at every decision the script records:

- the unclipped guided output ``a_T`` (its norm, and whether a component leaves the box, where the
  env's clip takes over),
- ``‖∇_a Q(s, a)‖`` of the target critics at the executed chunk (what guidance follows), and the
  cosine between the first action's guided shift ``a_w − a_0`` (same noise, w against 0) and the
  BFS oracle's direction — whether the critic's gradient points along the maze's shortest path or
  straight at the goal through a wall,
- each episode's final position, success, and whether it ended stuck (moved < 0.5 in its last
  100 steps), with the cell it stuck in.

Writes ``--out`` (default ``<run>/band.json``): per (task, w) summaries and the per-episode finals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl import evalkeys
from purejaxrl.evaluate import load_run


def record(algo, state1, task: int, weights: list[float], episodes: int, key) -> dict:
    """Roll out ``episodes`` episodes per weight of one run (``state1``, unbatched) on ``task``."""
    from envs.pointmaze import TASKS, move, oracle_action

    env = algo.env.unwrapped.with_task(task)
    maze = env.maze
    arrays = (jnp.asarray(maze.walls), jnp.asarray(maze.id_grid), jnp.asarray(maze.next_cell), jnp.asarray(maze.centers))
    goal_cell = maze.index[TASKS[maze.name][task - 1][1]]
    W, E, H, A = len(weights), episodes, algo.chunk, algo.act_dim
    ws = jnp.asarray(weights, jnp.float32)

    @jax.jit
    def decide(pos, k):  # pos [W, E, 2], k: this decision's key (shared by the weights)
        keys = jax.random.split(k, E)

        def one(w, p):  # p [E, 2]
            raw = jax.vmap(lambda p_, k_: algo.flow_sample(state1, p_[None], k_, w, algo.guidance, clip=False)[0])(p, keys)
            base = jax.vmap(lambda p_, k_: algo.flow_sample(state1, p_[None], k_, 0.0, "none", clip=False)[0])(p, keys)
            a = jnp.clip(raw, -1.0, 1.0)
            g = jax.vmap(jax.grad(lambda a_, p_: algo.agg_q(state1, p_[None], a_[None])[0]))(a, p)
            oracle = jax.vmap(lambda p_: oracle_action(arrays, p_, goal_cell))(p)
            shift = (raw - base)[:, :A]
            cos = jnp.sum(shift * oracle, -1) / (jnp.linalg.norm(shift, axis=-1) * jnp.linalg.norm(oracle, axis=-1) + 1e-8)
            return a, jnp.linalg.norm(raw, axis=-1), jnp.any(jnp.abs(raw) > 1.0, -1), jnp.linalg.norm(g, axis=-1), cos

        return jax.vmap(one)(ws, pos)

    step = jax.jit(jax.vmap(jax.vmap(lambda p, a: move(arrays[0], p, a))))
    k_reset, k_act = jax.random.split(key)
    pos = jax.vmap(lambda k: env.reset(k)[0])(jax.random.split(k_reset, E))
    pos = jnp.broadcast_to(pos[None], (W, E, 2))
    goal = np.asarray(env.goal_xy)
    done = np.zeros((W, E), bool)
    succ = np.zeros((W, E), bool)
    trail = []  # positions per env step
    stats = {"a_norm": [], "off_box": [], "grad_norm": [], "cos_oracle": []}
    live_mask = []
    t = 0
    while t < env.max_episode_steps and not done.all():
        a, an, off, gn, cos = decide(pos, jax.random.fold_in(k_act, t))
        live = ~done
        live_mask.append(live)
        for name, v in zip(stats, (an, off, gn, cos)):
            stats[name].append(np.asarray(v))
        a = np.asarray(a).reshape(W, E, H, A)
        for h in range(H):
            at_goal = np.linalg.norm(np.asarray(pos) - goal, axis=-1) <= 1.0  # success is checked before the step
            succ |= at_goal & ~done
            done |= at_goal
            pos = jnp.where(jnp.asarray(done)[..., None], pos, step(pos, jnp.asarray(a[:, :, h])))
            trail.append(np.asarray(pos))
            t += 1
            if t >= env.max_episode_steps:
                break
    trail = np.stack(trail)  # [T, W, E, 2]
    live = np.stack(live_mask)  # [D, W, E]
    final = trail[-1]
    moved = np.linalg.norm(trail[-1] - trail[max(0, len(trail) - 100)], axis=-1)
    stuck = (moved < 0.5) & ~succ
    out = []
    for j, w in enumerate(weights):
        m = live[:, j]

        def mean(name):
            v = np.stack(stats[name])[:, j].astype(np.float64)
            return float(v[m].mean()) if m.any() else None

        cells = [(int((p[1] + 6) // 4), int((p[0] + 6) // 4)) for p in final[j][stuck[j]]]  # (i, j) cells
        out.append({"w": w, "success": float(succ[j].mean()), "stuck": float(stuck[j].mean()),
                    "mean_a_norm": mean("a_norm"), "off_box_fraction": mean("off_box"),
                    "mean_grad_norm": mean("grad_norm"), "mean_cos_shift_oracle": mean("cos_oracle"),
                    "final_distance_to_goal": float(np.linalg.norm(final[j] - goal, axis=-1).mean()),
                    "stuck_cells": sorted({tuple(c): cells.count(c) for c in cells}.items(), key=lambda x: -x[1])[:3],
                    "finals": [[round(float(x), 2) for x in p] for p in final[j]],
                    "successes": [bool(s) for s in succ[j]]})
    return {"task": task, "goal_xy": goal.tolist(), "per_weight": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--weights", default="0,0.1,0.3,1,3,10")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--task", type=int, default=None, help="only runs of this task (default: every task of the run)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    weights = [float(x) for x in a.weights.split(",")]
    algo, state, hparams, runs, _ = load_run(a.run_dir)
    if not hasattr(algo.env.unwrapped, "maze"):
        raise SystemExit(f"{a.run_dir} was not trained on a point maze")
    results = []
    for i, r in enumerate(runs):
        task = int(r.get("env.task", algo.env.unwrapped.task))
        if a.task is not None and task != a.task:
            continue
        s1 = jax.tree.map(lambda x: x[i], state) if len(runs) > 1 else state
        key = evalkeys.stream(algo.eval_key(s1), "validation", 0)
        res = record(algo, s1, task, weights, a.episodes, key)
        results.append({"run": i, "seed": r["seed"], **res})
        print(json.dumps({"seed": r["seed"], "task": task,
                          "success": {x["w"]: x["success"] for x in res["per_weight"]},
                          "stuck": {x["w"]: x["stuck"] for x in res["per_weight"]}}), flush=True)
    summary = []
    for task in sorted({x["task"] for x in results}):
        rs = [x for x in results if x["task"] == task]
        for j, w in enumerate(weights):
            rows = [x["per_weight"][j] for x in rs]
            summary.append({"task": task, "w": w, "seeds": len(rows),
                            **{k: float(np.mean([r_[k] for r_ in rows if r_[k] is not None]))
                               for k in ("success", "stuck", "mean_a_norm", "off_box_fraction", "mean_grad_norm",
                                         "mean_cos_shift_oracle", "final_distance_to_goal")}})
    out = Path(a.out or Path(a.run_dir) / "band.json")
    out.write_text(json.dumps({"run_dir": a.run_dir, "weights": weights, "episodes": a.episodes,
                               "summary": summary, "per_run": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
