"""What one minibatch SGD step of PQN CartPole is made of: the step measured whole and in cumulative
parts, beside the time of its matrix products alone, each part run ``--steps`` times inside one
compiled ``lax.scan`` (as the training loop runs it) after a warm-up, best of ``--repeats``.

    python benchmarks/sgd_step_profile.py                  # PQN's default: 128 x 4 -> 256 -> 256 -> 2, LayerNorm, RAdam
    python benchmarks/sgd_step_profile.py --hidden 512
    python benchmarks/sgd_step_profile.py --also experiment=pqn_minatar   # + MinAtar's conv network

Parts (each includes the ones above it):

- ``matmul``: the step's eight matrix products alone, chained so none can be skipped: the forward
  ``x·W1, h1·W2, h2·W3`` and the backward ``dy·W3ᵀ, h2ᵀ·dy, dh2·W2ᵀ, h1ᵀ·dh2, xᵀ·dh1`` (the
  input-gradient product of the first layer is not needed);
- ``forward``: the network's loss ``½(Q(s, a) − G)²`` (bias, LayerNorm, ReLU, action gather);
- ``forward_backward``: its gradient (``jax.value_and_grad``);
- ``clip``: + clip-by-global-norm;
- ``step``: + RAdam and the parameter update: the whole step as ``purejaxrl.rollout.minibatch_sgd``
  runs it (its minibatch rows unpacked from the packed ``[obs, action, target]`` array).

Also the whole step without LayerNorm and with Adam in place of RAdam, and the update as the training
loop runs it (``in_loop``: rollout, targets, the epochs of SGD steps, the whole update).

``--run-breakdown SEEDS`` (repeatable) adds what a whole run is made of at the anchor pair's config
(``benchmarks/anchors.py``'s ``pqn`` / ``pqn8``: ``algo.num_eval_envs=128``, SEEDS vmapped): the run
timed as the pair times it (one jit, compile apart, best of ``--repeats``), once with the trainer's
greedy tests and once with only the last update's, beside its updates at the in-loop rate
(``--updates`` per timed scan, laid out as the trainer lays them out: one seed unbatched, several a
vmap of the scan).  The difference of the two runs is the tests' cost; what the one-test run takes
beyond its updates is the rest (one test, the step counter, the metrics the run returns).

    python benchmarks/sgd_step_profile.py --run-breakdown 1 --run-breakdown 8

Writes ``benchmarks/results/sgd_step_profile_<platform>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import purejaxrl
from purejaxrl.config import compose
from purejaxrl.rollout import pack
from purejaxrl.trainer import build_algorithm

purejaxrl.configure_cpu_runtime()
RESULTS = Path(__file__).resolve().parent / "results"


def timed_scan(body, carry, steps: int, repeats: int) -> float:
    """Seconds per iteration of ``body`` run ``steps`` times in one compiled scan (best of ``repeats``)."""
    run = jax.jit(lambda c: jax.lax.scan(lambda c, _: (body(c), None), c, None, steps)[0])
    return best_seconds(run, carry, repeats) / steps


def best_seconds(run, arg, repeats: int) -> float:
    """The best of ``repeats`` timed calls of the compiled ``run(arg)``, after one untimed call."""
    jax.block_until_ready(run(arg))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(arg))
        best = min(best, time.perf_counter() - t)
    return best


def _step_parts(algo, hp, batch, steps: int, repeats: int, optimizer: str = "radam") -> tuple[dict, dict]:
    """The step's cumulative parts (forward, forward_backward, clip, step) on ``batch`` with the algorithm's
    network, loss and optimiser, and the parameters they start from."""
    rows, unpack = pack(batch)
    params = algo.network.init(jax.random.PRNGKey(3), batch["obs"][:1])
    tx = algo._tx(hp) if optimizer == "radam" else algo.make_optimizer(hp, algo.num_epochs * algo.num_minibatches, optax.adam)
    clip = optax.clip_by_global_norm(hp["max_grad_norm"])

    def loss_fn(p, mb):  # the algorithm's own loss
        return algo.loss(p, mb)[0]

    def nudge(p, g):  # keep each iteration dependent on the last without an optimiser
        return jax.tree.map(lambda a, b: a - 1e-6 * b, p, g)

    out = {}
    out["forward"] = timed_scan(lambda c: (c[0], c[1] + loss_fn(c[0], unpack(rows + c[1] * 1e-30))), (params, jnp.float32(0)),
                                steps, repeats)
    out["forward_backward"] = timed_scan(lambda p: nudge(p, jax.grad(loss_fn)(p, unpack(rows))), params, steps, repeats)

    def clipped(p):
        g = jax.grad(loss_fn)(p, unpack(rows))
        g, _ = clip.update(g, clip.init(p))
        return nudge(p, g)

    out["clip"] = timed_scan(clipped, params, steps, repeats)

    def step(c):
        p, s = c
        g = jax.grad(loss_fn)(p, unpack(rows))
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    out["step"] = timed_scan(step, (params, tx.init(params)), steps, repeats)
    cost = jax.jit(lambda p: jax.grad(loss_fn)(p, unpack(rows))).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return out, {"forward_backward_flops": float((cost or {}).get("flops", float("nan")))}


def _hparams(cfg, algo) -> dict:
    return {k: jnp.float32(cfg["algo"][k]) for k in algo.HPARAMS}


def profile(hidden: int, layer_norm: bool, steps: int, repeats: int, optimizer: str = "radam") -> dict:
    cfg = compose(["num_seeds=1", f"network.hidden_size={hidden}", f"network.layer_norm={str(layer_norm).lower()}"])
    algo = build_algorithm(cfg)
    hp = _hparams(cfg, algo)
    n = algo.num_envs * algo.num_steps // algo.num_minibatches  # minibatch rows
    obs_dim = int(algo.env.observation_shape[0])
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    batch = {"obs": jax.random.normal(k1, (n, obs_dim)), "action": jax.random.randint(k2, (n,), 0, algo.num_actions),
             "target": jax.random.normal(k3, (n,))}
    out, _ = _step_parts(algo, hp, batch, steps, repeats, optimizer)

    # the eight matrix products of one step, chained through a scalar so that none is loop-invariant
    ws = [jax.random.normal(k, s) * 0.05 for k, s in zip(jax.random.split(k1, 3),
                                                          [(obs_dim, hidden), (hidden, hidden), (hidden, algo.num_actions)])]
    x = batch["obs"]
    dy0 = jax.random.normal(k2, (n, algo.num_actions))

    def matmuls(c):
        e = c * 1e-9
        h1 = x @ (ws[0] + e)
        h2 = h1 @ (ws[1] + e)
        y = h2 @ (ws[2] + e)
        dy = dy0 + y * 1e-9
        dh2 = dy @ ws[2].T
        dw3 = h2.T @ dy
        dh1 = dh2 @ ws[1].T
        dw2 = h1.T @ dh2
        dw1 = x.T @ dh1
        return c + dw1[0, 0] + dw2[0, 0] + dw3[0, 0]

    out["matmul"] = timed_scan(matmuls, jnp.float32(0), steps, repeats)
    flops = 2 * n * (obs_dim * hidden + hidden * hidden + hidden * algo.num_actions) * 3 - 2 * n * obs_dim * hidden
    return {"ms": {k: round(v * 1e3, 4) for k, v in out.items()}, "matmul_gflops_per_s": round(flops / out["matmul"] / 1e9, 1),
            "minibatch": n, "hidden": hidden, "layer_norm": layer_norm, "optimizer": optimizer}


def network_step(overrides: list[str], steps: int, repeats: int) -> dict:
    """One minibatch SGD step of another PQN configuration (e.g. ``experiment=pqn_minatar``, its conv
    network) in cumulative parts, with the FLOPs XLA counts for its forward + backward pass, so the
    achieved rate can be set beside the plain matmul rate of the CartPole profile."""
    cfg = compose(["num_seeds=1", *overrides])
    algo = build_algorithm(cfg)
    n = algo.num_envs * algo.num_steps // algo.num_minibatches
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    shape = tuple(algo.env.observation_shape)
    batch = {"obs": (jax.random.uniform(k1, (n, *shape)) < 0.1).astype(jnp.float32),  # sparse binary planes
             "action": jax.random.randint(k2, (n,), 0, algo.num_actions), "target": jax.random.normal(k3, (n,))}
    out, cost = _step_parts(algo, _hparams(cfg, algo), batch, steps, repeats)
    ms = {k: round(v * 1e3, 4) for k, v in out.items()}
    return {"overrides": overrides, "ms": ms, "minibatch": n, "observation_shape": list(shape), **cost,
            "forward_backward_gflops_per_s": round(cost["forward_backward_flops"] / out["forward_backward"] / 1e9, 1)}


def in_loop(updates: int, repeats: int, overrides: list[str] = ()) -> dict:
    """PQN's update (CartPole unless ``overrides``) as the training loop runs it, whole and in parts (ms per update, each part
    ``updates`` times in one compiled scan, best of ``repeats``): ``collect`` (the ε-greedy rollout of
    ``num_steps`` × ``num_envs`` env steps), ``collect_targets`` (+ Peng's Q(λ) targets), ``learn``
    (``minibatch_sgd``'s epochs on one fixed batch: permutation, gather, the SGD steps and their metrics)
    and ``update`` (the algorithm's whole update).  ``learn`` divided by its SGD steps is the in-loop
    step to set beside the isolated ``step``; ``update − collect_targets − learn`` is what is left."""
    from purejaxrl.rollout import flatten_time, minibatch_sgd

    cfg = compose(["num_seeds=1", *overrides])
    algo = build_algorithm(cfg)
    hp = _hparams(cfg, algo)
    state = algo.init(jax.random.PRNGKey(0), hp)
    out = {}

    def whole(c):
        s, i = c
        return algo.update(s, hp, i)[0], i + 1

    out["update"] = timed_scan(whole, (state, jnp.int32(0)), updates, repeats)

    def collect(c):
        s, i = c
        (obs, env_state, rng), _, _ = algo.collect(s, hp, i)
        return s.replace(obs=obs, env_state=env_state, rng=rng), i + 1

    out["collect"] = timed_scan(collect, (state, jnp.int32(0)), updates, repeats)

    def collect_targets(c):
        s, i, acc = c
        (obs, env_state, rng), traj, _ = algo.collect(s, hp, i)
        t = algo.targets(traj, obs, s.params, hp)
        return s.replace(obs=obs, env_state=env_state, rng=rng), i + 1, acc + t.sum() * 1e-30

    out["collect_targets"] = timed_scan(collect_targets, (state, jnp.int32(0), jnp.float32(0)), updates, repeats)

    (obs, _, _), traj, _ = jax.jit(algo.collect)(state, hp, jnp.int32(0))
    targets = jax.jit(algo.targets)(traj, obs, state.params, hp)
    batch = flatten_time({"obs": traj.obs, "action": traj.action.astype(jnp.int32), "target": targets})

    def learn(c):
        p, o, rng = c
        p, o, rng, _ = minibatch_sgd(algo.loss, algo._tx(hp), p, o, batch, rng, algo.num_epochs, algo.num_minibatches)
        return p, o, rng

    out["learn"] = timed_scan(learn, (state.params, state.opt_state, state.rng), updates, repeats)
    sgd_steps = algo.num_epochs * algo.num_minibatches
    ms = {k: round(v * 1e3, 4) for k, v in out.items()}
    return {"ms_per_update": ms, "sgd_steps_per_update": sgd_steps, "env_steps_per_update": algo.num_envs * algo.num_steps,
            "learn_ms_per_sgd_step": round(ms["learn"] / sgd_steps, 4),
            "rest_ms": round(ms["update"] - ms["collect_targets"] - ms["learn"], 4)}


def run_breakdown(seeds: int, updates: int, repeats: int, overrides: list[str] = ()) -> dict:
    """The whole PQN CartPole run of the anchor pair (``seeds`` vmapped, 128 test envs) with its greedy tests
    and with only the last one, beside its updates at the in-loop rate (seconds)."""
    from throughput import time_training  # benchmarks/throughput.py: the anchor pair's own timing of our side

    over = [f"num_seeds={seeds}", "algo.num_eval_envs=128", *overrides]
    cfg = compose(over)
    tests = int(cfg["algo"]["num_evals"])
    with_tests, one_test = [], []
    for _ in range(repeats):  # alternated, each a best of one, so a slow spell does not land on one side only
        with_tests.append(time_training(cfg, repeats=1)["run_seconds"])
        one_test.append(time_training(cfg, repeats=1, num_evals=1)["run_seconds"])
    algo = build_algorithm(cfg)
    hp = _hparams(cfg, algo)
    # the updates laid out as the trainer runs them: one seed unbatched, several as a vmap of the scan (a
    # scan of the vmapped update, or a vmap over one seed, compiles to a slower program on CPU)
    def scan(s):
        return jax.lax.scan(lambda c, i: (algo.update(c, hp, i)[0], None), s, jnp.arange(updates))[0]

    if seeds == 1:
        state, run_updates = algo.init(jax.random.PRNGKey(0), hp), jax.jit(scan)
    else:
        state = jax.vmap(lambda k: algo.init(k, hp))(jax.random.split(jax.random.PRNGKey(0), seeds))
        run_updates = jax.jit(jax.vmap(scan))
    per_update = best_seconds(run_updates, state, repeats) / updates
    run, run_one = min(with_tests), min(one_test)
    n = algo.num_updates
    return {"seeds": seeds, "overrides": over,
            "updates": n, "num_evals": tests, "run_seconds": with_tests, "run_one_test_seconds": one_test,
            "update_ms": round(per_update * 1e3, 4), "updates_seconds": round(n * per_update, 3),
            "best_run_seconds": run, "best_run_one_test_seconds": run_one,
            "tests_seconds": round(run - run_one, 3), "rest_seconds": round(run_one - n * per_update, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=2000, help="iterations per timed scan")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--updates", type=int, default=100, help="PQN updates per timed scan of the in-loop parts")
    p.add_argument("--also", action="append", default=[], metavar="OVERRIDES",
                   help="another PQN configuration to profile (step and in-loop parts), e.g. experiment=pqn_minatar; "
                   "space-separated overrides; repeatable")
    p.add_argument("--run-breakdown", type=int, action="append", default=[], metavar="SEEDS",
                   help="also break a whole PQN CartPole run of SEEDS vmapped seeds down (tests, updates, rest); repeatable")
    p.add_argument("--run-overrides", default="", metavar="OVERRIDES",
                   help="space-separated overrides for --run-breakdown's runs (e.g. algo.total_timesteps=4096)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if any(n < 1 for n in a.run_breakdown):
        raise SystemExit(f"sgd_step_profile.py: --run-breakdown {a.run_breakdown}: seeds must be >= 1")
    jax.config.update("jax_enable_compilation_cache", False)
    res = {"what": "one PQN CartPole minibatch SGD step, whole and in cumulative parts (ms per step, best of "
                   f"{a.repeats} scans of {a.steps} steps)",
           "machine": {"platform": jax.devices()[0].platform, "cpu_count": os.cpu_count(), "jax": jax.__version__},
           "default": profile(a.hidden, True, a.steps, a.repeats),
           "no_layer_norm": profile(a.hidden, False, a.steps, a.repeats),
           "adam": profile(a.hidden, True, a.steps, a.repeats, optimizer="adam")}
    res["in_loop"] = in_loop(a.updates, a.repeats)
    for also in a.also:
        over = also.split()
        res.setdefault("also", []).append({"step": network_step(over, a.steps, a.repeats),
                                           "in_loop": in_loop(max(1, a.updates // 10), a.repeats, over)})
    for seeds in a.run_breakdown:
        res.setdefault("run_breakdown", []).append(run_breakdown(seeds, a.updates, a.repeats, a.run_overrides.split()))
    d = res["default"]["ms"]
    res["step_over_matmul"] = round(d["step"] / d["matmul"], 2)
    res["in_loop_step_over_step"] = round(res["in_loop"]["learn_ms_per_sgd_step"] / d["step"], 2)
    for name in ("default", "no_layer_norm", "adam"):
        print(name, res[name]["ms"], flush=True)
    print("step / matmul:", res["step_over_matmul"])
    print("in the loop (ms per update):", res["in_loop"]["ms_per_update"], "| per SGD step in learn:",
          res["in_loop"]["learn_ms_per_sgd_step"], "| rest:", res["in_loop"]["rest_ms"])
    for x in res.get("also", []):
        print(" ".join(x["step"]["overrides"]), "step:", x["step"]["ms"], "|", x["step"]["forward_backward_gflops_per_s"],
              "GFLOP/s (matmul alone:", res["default"]["matmul_gflops_per_s"], ") | in the loop:", x["in_loop"]["ms_per_update"],
              "per SGD step in learn:", x["in_loop"]["learn_ms_per_sgd_step"])
    for r in res.get("run_breakdown", []):
        print(f"whole run, {r['seeds']} seed(s): {r['best_run_seconds']} s with {r['num_evals']} tests and the last, "
              f"{r['best_run_one_test_seconds']} s with the last only | {r['updates']} updates x {r['update_ms']} ms = "
              f"{r['updates_seconds']} s | tests {r['tests_seconds']} s, rest {r['rest_seconds']} s")
    out = a.out or RESULTS / f"sgd_step_profile_{res['machine']['platform']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(out)


if __name__ == "__main__":
    main()
