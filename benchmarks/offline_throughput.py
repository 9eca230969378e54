"""Gradient steps/s of our QGF and FQL beside the reference FQL implementation, one process, the
same network sizes, batch and dataset; compile and steady state apart.

    python benchmarks/offline_throughput.py --fql-reference PATH/TO/fql [--updates 300] [--hidden 512 --layers 4]

``--fql-reference`` is a checkout of the FQL authors' code (``seohongpark/fql``); it is imported
from that path as it is (its ``agents.fql.FQLAgent`` and ``utils.datasets.Dataset``; it needs
``ml_collections`` and ``distrax`` installed) and nothing of it is copied here.  The reference is
timed the way its ``main.py`` trains: a host-side ``Dataset.sample(batch_size)`` and one jitted
``agent.update(batch)`` per gradient step.  Ours run the training loop of ``purejaxrl train``
(:class:`purejaxrl.trainer.Trainer` chunks, the dataset on the device).  Every configuration uses the point-maze medium navigate data
(generated here, ``--episodes`` episodes of 1,001 steps), batch ``--batch``, ``--layers`` ×
``--hidden`` MLPs for every network, 10 flow steps, chunks of 1.  Without ``--fql-reference`` only
ours are timed.  Writes ``benchmarks/results/qgf/offline_throughput_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import purejaxrl
from envs.datasets import generate
from purejaxrl.config import compose
from purejaxrl.trainer import build_algorithm

purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs
OUT = Path(__file__).resolve().parent / "results" / "qgf" / "offline_throughput_cpu.json"


def ours_config(algo_name: str, data_path: Path, hidden: list[int], batch: int, updates: int, extra=()) -> dict:
    return compose([f"algo={algo_name}", "env=pointmaze_medium", f"dataset.path={data_path}", f"algo.batch_size={batch}",
                    f"algo.actor_hidden={hidden}".replace(" ", ""), f"algo.critic_hidden={hidden}".replace(" ", ""),
                    "num_seeds=1", f"algo.num_updates={3 * updates}", "algo.num_evals=3", *extra])


# the configurations timed: (row, algorithm, extra overrides)
CONFIGS = (("ours FQL (critic=fql)", "fql", ()), ("ours FQL (critic=iql)", "fql", ("algo.critic=iql",)),
           ("ours QGF", "qgf", ()))


def check(a) -> None:
    """The arguments and every configuration's config, validated without a dataset or a compile."""
    from purejaxrl.config import validate

    bad = [f"--{k}={getattr(a, k)!r} must be an integer >= 1" for k in ("updates", "hidden", "layers", "batch", "episodes")
           if getattr(a, k) < 1]
    if bad:
        raise SystemExit(f"offline_throughput.py: error: {bad[0]}")
    for _, name, extra in CONFIGS:
        validate(ours_config(name, Path("unused.npz"), [a.hidden] * a.layers, a.batch, a.updates, extra), check_data=False)
    print(f"check: ok ({len(CONFIGS)} configurations, {a.layers} x {a.hidden} networks, batch {a.batch})")


def ours(algo_name: str, data_path: Path, hidden: list[int], batch: int, updates: int, extra=()) -> dict:
    """Our training loop as ``purejaxrl train`` runs it (:class:`purejaxrl.trainer.Trainer` chunks,
    no evaluation inside them): compile, one warm-up chunk, then one chunk of ``updates`` timed."""
    from purejaxrl.config import run_grid
    from purejaxrl.trainer import Trainer, batch_hparams

    cfg = ours_config(algo_name, data_path, hidden, batch, updates, extra)
    algo = build_algorithm(cfg)
    runs, hparams, seeds = run_grid(cfg, algo.HPARAMS)
    tr = Trainer(algo, len(runs), 3)
    assert tr.updates_per_chunk == updates  # evaluated between chunks: one chunk per evaluation, none inside
    hp = batch_hparams(algo, hparams, len(runs))
    state = tr.init(jnp.stack([jax.random.PRNGKey(int(x)) for x in seeds]), hp)
    t0 = time.perf_counter()
    tr.compile_chunk(state, hp, 0)
    compile_s = time.perf_counter() - t0
    state, _ = tr.chunk(state, hp, 0)  # warm-up, not timed
    t0 = time.perf_counter()
    state, m = tr.chunk(state, hp, updates)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    return {"gradient_steps_per_second": updates / dt, "compile_seconds": compile_s, "timed_updates": updates,
            "final_critic_loss": float(np.asarray(m["critic_loss"]).reshape(-1)[-1])}


def reference_fql(ref: Path, data_path: Path, hidden: list[int], batch: int, updates: int, alpha: float) -> dict:
    sys.path.insert(0, str(ref))
    try:
        import ml_collections  # noqa: F401
        from agents.fql import FQLAgent, get_config
        from utils.datasets import Dataset
    except ImportError as e:
        raise SystemExit(f"the reference FQL at {ref} could not be imported ({e}); pip install ml_collections distrax") from e
    import envs
    from envs.datasets import load

    env = envs.make("pointmaze_medium")
    d = load(data_path, env, 1)  # the same transitions, actions in [-1, 1], rewards relabelled as ours
    i = np.asarray(d.starts)
    obs, acts = np.asarray(d.observations), np.asarray(d.actions)
    dataset = Dataset.create(observations=obs[i], actions=acts[i], rewards=np.asarray(d.rewards)[i],
                             masks=np.asarray(d.masks)[i], terminals=np.zeros(len(i), np.float32),
                             next_observations=obs[i + 1])
    config = get_config()
    config["actor_hidden_dims"] = tuple(hidden)
    config["value_hidden_dims"] = tuple(hidden)
    config["batch_size"] = batch
    config["alpha"] = alpha
    b = dataset.sample(batch)
    agent = FQLAgent.create(0, b["observations"], b["actions"], dict(config))
    t0 = time.perf_counter()
    agent, info = agent.update(dataset.sample(batch))  # the first call compiles
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    for _ in range(20):  # warm-up
        agent, info = agent.update(dataset.sample(batch))
    jax.block_until_ready(info)
    t0 = time.perf_counter()
    for _ in range(updates):
        agent, info = agent.update(dataset.sample(batch))
    jax.block_until_ready(info)
    dt = time.perf_counter() - t0
    return {"gradient_steps_per_second": updates / dt, "first_update_seconds": compile_s, "timed_updates": updates,
            "final_critic_loss": float(info["critic/critic_loss"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fql-reference", type=Path, default=None, help="a checkout of seohongpark/fql")
    p.add_argument("--updates", type=int, default=300, help="gradient steps timed per configuration")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--episodes", type=int, default=200, help="point-maze episodes in the dataset (1,001 steps each)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--check", action="store_true",
                   help="validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    a = p.parse_args()
    if a.fql_reference is not None and not (a.fql_reference / "agents" / "fql.py").exists():
        raise SystemExit(f"--fql-reference={a.fql_reference} has no agents/fql.py; give a checkout of seohongpark/fql")
    if a.check:
        return check(a)
    hidden = [a.hidden] * a.layers
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pm.npz"
        generate("pointmaze_medium_navigate", a.episodes, data)
        if a.fql_reference is not None:
            rows["reference FQL (seohongpark/fql, its update loop)"] = reference_fql(a.fql_reference, data, hidden, a.batch,
                                                                                     a.updates, 10.0)
            print(rows)
        for row, name, extra in CONFIGS:
            rows[row] = ours(name, data, hidden, a.batch, a.updates, extra)
    out = {"setup": {"dataset": f"pointmaze_medium_navigate, {a.episodes} episodes", "hidden": hidden, "batch": a.batch,
                     "flow_steps": 10, "chunk": 1, "seeds": 1, "timed_updates": a.updates, "machine": platform.processor()
                     or platform.machine(), "jax": jax.__version__, "devices": [str(x) for x in jax.devices()]},
           "results": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    for k, v in rows.items():
        print(f"{k:55s} {v['gradient_steps_per_second']:8.1f} gradient steps/s")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
