"""Aggregate training throughput vs device count: the run axis (seeds) split over 1, 2, 4 devices,
and over two ``jax.distributed`` processes, each configuration in its own process.

    python benchmarks/scale_throughput.py                       # PQN CartPole, 16 seeds, 1/2/4 devices + 2 processes
    python benchmarks/scale_throughput.py --seeds 128 --devices 1 2 4 8

On a CPU the devices are virtual (``jax_num_cpu_devices``): they share the machine's cores, so
these figures measure the overhead of sharding, not a speed-up; on a machine with several GPUs
the same command measures real scaling.  Compile time and steady-state throughput are reported
apart; the 1-device configuration is the reference measured in the same run.  Results go to
``benchmarks/results/scale/``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("benchmarks/results/scale")
CFG = ["algo=pqn", "env=cartpole", "algo.total_timesteps=262144", "logger.progress=false"]  # 128 updates


def worker(devices: int, seeds: int, chunks: int, process: tuple[int, int, str] | None) -> dict:
    import jax

    import purejaxrl
    from purejaxrl.sharding import visible_gpus

    purejaxrl.configure_cpu_runtime()  # as the purejaxrl command runs
    gpu = bool(visible_gpus())
    if process is None:
        jax.config.update("jax_num_cpu_devices", devices)  # CPU: virtual devices (no effect on GPUs)
    else:
        pid, n, coord = process
        per = devices // n
        jax.config.update("jax_num_cpu_devices", per)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coord, n, pid, local_device_ids=list(range(pid * per, (pid + 1) * per)) if gpu else None)
    import jax.numpy as jnp

    from purejaxrl.config import compose, run_grid
    from purejaxrl.sharding import make_mesh
    from purejaxrl.trainer import Trainer, batch_hparams, build_algorithm

    cfg = compose([*CFG, f"num_seeds={seeds}", "mesh.devices=all" if process else f"mesh.devices={devices}"])
    algo = build_algorithm(cfg)
    runs, hp, seed_list = run_grid(cfg, algo.HPARAMS)
    hp = batch_hparams(algo, hp, len(runs))
    mesh = make_mesh(cfg, len(runs))  # None for one device
    tr = Trainer(algo, len(runs), chunks, num_evals=1, mesh=mesh)
    tr.eval_every = 10**9  # timed chunks without evaluation
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seed_list])
    state = tr.init(keys, hp)
    t0 = time.perf_counter()
    tr.compile_chunk(state, hp, 0)
    compile_s = time.perf_counter() - t0
    state, m = tr.chunk(state, hp, 0)  # warm
    n = tr.updates_per_chunk
    times = []
    for c in range(1, 3):
        t0 = time.perf_counter()
        state, m = tr.chunk(state, hp, c * n)
        times.append(time.perf_counter() - t0)
    steps = n * algo.units_per_update * len(runs)
    return {"devices": 1 if mesh is None else mesh.size, "processes": jax.process_count(), "seeds": seeds,
            "compile_seconds": compile_s, "chunk_seconds": times,
            "env_steps_per_second": steps / min(times), "platform": jax.devices()[0].platform}


def argument_errors(a) -> list[str]:
    """What would stop a configuration before it compiles, or time past the run's end."""
    bad = [f"--{k}={getattr(a, k)!r} must be an integer >= 1" for k in ("seeds", "processes") if getattr(a, k) < 1]
    if a.chunks < 3:  # chunk 0 warms up, chunks 1 and 2 are timed
        bad.append(f"--chunks={a.chunks} must be >= 3: the first chunk warms up and the next two are timed")
    bad += [f"--devices {d}: a device count must be >= 1" for d in a.devices if d < 1]
    bad += [f"--seeds {a.seeds} do not divide over {d} devices" for d in a.devices if d >= 1 and a.seeds % d]
    if a.processes > 1 and max(a.devices) % a.processes:
        bad.append(f"--processes {a.processes} must divide the largest device count ({max(a.devices)})")
    return bad


def check(a) -> None:
    """The arguments and the config of every configuration, validated without a device or a compile."""
    from purejaxrl.config import compose, validate
    from purejaxrl.sharding import check_mesh_config

    bad = argument_errors(a)
    for d in a.devices:
        cfg = compose([*CFG, f"num_seeds={a.seeds}", f"mesh.devices={d}"])
        validate(cfg)
        bad += check_mesh_config(cfg)
    if bad:
        raise SystemExit(f"scale_throughput.py: error: {bad[0]}")
    print(f"check: ok ({a.seeds} seeds on {', '.join(map(str, a.devices))} device(s))")


def launch(devices: int, seeds: int, chunks: int, processes: int) -> dict:
    base = [sys.executable, __file__, "--worker", "--devices", str(devices), "--seeds", str(seeds), "--chunks", str(chunks)]
    if processes == 1:
        out = subprocess.run(base, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([*base, "--process", str(i), str(processes), f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for i in range(processes)]
    outs = [p.communicate()[0] for p in procs]
    return json.loads(outs[0].strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--chunks", type=int, default=8, help="the run is cut in this many chunks; 2 are timed")
    p.add_argument("--processes", type=int, default=2, help="also: this many jax.distributed processes over "
                   "the largest device count (1: skip)")
    p.add_argument("--out", type=Path, default=None, help="the JSON file (default: benchmarks/results/scale/pqn_cartpole_<platform>.json)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--process", nargs=3, default=None, help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true",
                   help="validate the arguments and configs, then stop: nothing of the benchmark is compiled or timed")
    a = p.parse_args()
    if a.check:
        return check(a)
    if a.worker:
        proc = None if a.process is None else (int(a.process[0]), int(a.process[1]), a.process[2])
        print(json.dumps(worker(a.devices[0], a.seeds, a.chunks, proc)))
        return
    if not Path("benchmarks").is_dir():
        raise SystemExit("run from the repository root")
    if argument_errors(a):
        raise SystemExit(f"scale_throughput.py: error: {argument_errors(a)[0]}")
    rows = [launch(d, a.seeds, a.chunks, 1) for d in a.devices]
    if a.processes > 1:
        rows.append(launch(max(a.devices), a.seeds, a.chunks, a.processes))
    ref = rows[0]["env_steps_per_second"]
    for r in rows:
        r["relative_to_first"] = r["env_steps_per_second"] / ref
        print(f"{r['devices']} device(s), {r['processes']} process(es): {r['env_steps_per_second']:,.0f} env steps/s "
              f"({r['relative_to_first']:.2f}x), compile {r['compile_seconds']:.1f} s")
    plat = rows[0]["platform"]
    res = {"config": CFG, "seeds": a.seeds, "cpu_count": os.cpu_count(), "platform": plat, "rows": rows,
           "note": "virtual CPU devices share the machine's cores" if plat == "cpu" else None}
    path = a.out or OUT / f"pqn_cartpole_{plat}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
