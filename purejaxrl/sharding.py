"""Scale-out: a 1-D device mesh over the run axis, placement of run-batched trees on it, gathering
them back to the host, and multi-host start-up through ``jax.distributed``.

The run axis is whatever a host loop vmaps: seeds × vmapped hyperparameters (``train``), ES
members × seeds (``meta``), prompts (``llm``).  Runs never talk to each other, so sharding that axis
over devices needs no collective: arrays carry a ``NamedSharding(mesh, P("runs"))`` and plain
``jit`` partitions the vmapped program.  Under ``jax.distributed`` the mesh spans every process's
devices; each process holds the same host copy of the inputs and contributes its own shards.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from purejaxrl.errors import ConfigError

AXIS = "runs"
DISTRIBUTED_KEYS = {"coordinator", "num_processes", "process_id", "local_device_ids", "cpu_devices"}
MESH_KEYS = {"devices"}


# ---------------------------------------------------------------- configuration (no JAX backend yet)
def check_mesh_config(cfg: dict) -> list[str]:
    """Problems with the ``mesh`` and ``distributed`` settings (type and range only: the device
    count is known once the backend starts)."""
    errs = []
    mesh = cfg.get("mesh") or {}
    errs += [f"mesh.{k} is not a mesh setting; valid: {', '.join(sorted(MESH_KEYS))}" for k in sorted(set(mesh) - MESH_KEYS)]
    d = mesh.get("devices")
    if not (d is None or d == "all" or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)):
        errs.append(f"mesh.devices={d!r} must be null (one device; every device under jax.distributed), all, "
                    "or a device count >= 1")
    dist = cfg.get("distributed") or {}
    errs += [f"distributed.{k} is not a distributed setting; valid: {', '.join(sorted(DISTRIBUTED_KEYS))}"
             for k in sorted(set(dist) - DISTRIBUTED_KEYS)]
    n, pid = dist.get("num_processes", 1), dist.get("process_id", 0)
    if not isinstance(n, int) or n < 1:
        errs.append(f"distributed.num_processes={n!r} must be an integer >= 1")
    elif not isinstance(pid, int) or not 0 <= pid < n:
        errs.append(f"distributed.process_id={pid!r} must be an integer in [0, {n}) (this process's rank)")
    elif n > 1 and not dist.get("coordinator"):
        errs.append(f"distributed.num_processes={n} needs distributed.coordinator=HOST:PORT (process 0's address), "
                    "or distributed.coordinator=auto under SLURM")
    if dist.get("coordinator") and not cfg.get("run_dir"):
        errs.append("distributed.coordinator is set but run_dir is not: give every process the same run_dir=PATH on a "
                    "filesystem they all see (the default directory has the start time in it, which differs per process)")
    cpu = dist.get("cpu_devices")
    if cpu is not None and (not isinstance(cpu, int) or cpu < 1):
        errs.append(f"distributed.cpu_devices={cpu!r} must be null or an integer >= 1 (virtual CPU devices per process)")
    return errs


_INITIALIZED = False


def initialize(cfg: dict) -> None:
    """Start this process's part of a multi-host run (``distributed.coordinator`` set), or set the
    number of virtual CPU devices.  Must run before anything touches a JAX backend; a second call
    (an in-process sweep) is a no-op."""
    global _INITIALIZED
    if _INITIALIZED:
        return
    import jax

    dist = cfg.get("distributed") or {}
    if not dist.get("cpu_devices") and not dist.get("coordinator"):
        return  # nothing to set up (and nothing that must come before JAX starts)
    try:
        if dist.get("cpu_devices"):
            jax.config.update("jax_num_cpu_devices", int(dist["cpu_devices"]))
            _patient_cpu_collectives()
        if dist.get("coordinator"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes gather metrics over TCP
        if dist.get("coordinator") == "auto":  # SLURM (and other clusters JAX knows): everything from the environment
            jax.distributed.initialize()
        elif dist.get("coordinator"):
            jax.distributed.initialize(str(dist["coordinator"]), int(dist.get("num_processes", 1)),
                                       int(dist.get("process_id", 0)), local_device_ids=dist.get("local_device_ids"))
    except RuntimeError as e:  # JAX had already started in this process
        raise ConfigError(f"distributed.* must take effect before JAX starts, but this process already started it "
                          f"({str(e).splitlines()[0][:120]}); pass them on the command line of a fresh process") from None
    _INITIALIZED = True


# Virtual CPU devices share the host's cores: on a small, busy machine one device can leave a
# collective minutes after another, and XLA's default wait for that (40 s) aborts the process; the
# wait to enter one is raised to match.  These are emulated devices, so waiting is right; a value the
# user set is kept.
_CPU_COLLECTIVE_WAIT_S = 1800
_CPU_COLLECTIVE_FLAGS = ("xla_cpu_collective_timeout_seconds", "xla_cpu_collective_call_terminate_timeout_seconds")


def _patient_cpu_collectives() -> None:
    """Add generous CPU-collective timeouts to ``XLA_FLAGS`` (read when the backend starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{f}={_CPU_COLLECTIVE_WAIT_S}" for f in _CPU_COLLECTIVE_FLAGS if f not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def is_main_process() -> bool:
    """Whether this process writes metrics, summaries and configs (process 0)."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here (no-op in a single process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"purejaxrl:{name}")


# ---------------------------------------------------------------- the mesh
def make_mesh(cfg: dict, num_runs: int | None = None, what: str = "runs", pad: tuple | None = None):
    """The 1-D mesh ``mesh.devices`` asks for, or ``None`` for the single-device path.  With
    ``num_runs``, a count the devices do not divide is a :class:`ConfigError` naming the fix;
    ``pad = (setting, value, runs per unit of it, step of its valid values)`` names the smallest
    valid value of that setting at or above ``value`` whose run count the devices divide."""
    import jax

    spec = (cfg.get("mesh") or {}).get("devices")
    devices = jax.devices()
    if spec is None:
        n = len(devices) if jax.process_count() > 1 else 1
    elif spec == "all":
        n = len(devices)
    else:
        n = int(spec)
        if n > len(devices):
            raise ConfigError(f"mesh.devices={n} but only {len(devices)} device(s) are visible "
                              f"({devices[0].platform}); use mesh.devices=all or a smaller count")
    if jax.process_count() > 1 and n != len(devices):
        raise ConfigError(f"mesh.devices={spec} under jax.distributed: the mesh must span every process's devices "
                          f"({len(devices)}); use mesh.devices=all")
    if n == 1:
        return None
    if num_runs is not None and num_runs % n:
        if pad:
            setting, v, per, step = pad
            while (v * per) % n or v % step:
                v += 1
            pad = f"{setting}={v}"
        else:
            pad = f"{-(-num_runs // n) * n} {what}"
        if jax.process_count() > 1:  # the mesh must span every process's devices: padding is the fix
            raise ConfigError(f"{num_runs} {what} do not divide over the {n} devices of {jax.process_count()} processes; "
                              f"pad to a multiple of {n} ({pad})")
        divisors = [d for d in range(1, len(devices) + 1) if num_runs % d == 0]
        raise ConfigError(f"{num_runs} {what} do not divide over {n} devices; pad to a multiple of {n} ({pad}) "
                          f"or use mesh.devices={max(divisors)}")
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices[:n]), (AXIS,))


class Placement:
    """How one host loop's arrays live on a mesh: run-batched trees split along their first axis,
    everything else replicated.  ``Placement(None)`` is the single-device path (a no-op)."""

    def __init__(self, mesh):
        self.mesh = mesh
        if mesh is not None:
            from jax.sharding import NamedSharding
            from jax.sharding import PartitionSpec as P

            self.runs = NamedSharding(mesh, P(AXIS))
            self.replicated = NamedSharding(mesh, P())
        else:
            self.runs = self.replicated = None

    def _put(self, tree, sharding):
        if self.mesh is None or tree is None:
            return tree
        import jax

        def put(x):
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            host = np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable else None
            if host is None:  # already a global array with another layout
                return jax.jit(lambda y: y, out_shardings=sharding)(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

        return jax.tree.map(put, tree)

    def runs_tree(self, tree):
        """Split along the first (run) axis over the mesh."""
        return self._put(tree, self.runs)

    def replicate(self, tree):
        return self._put(tree, self.replicated)

    def local(self, tree):
        """A replicated tree as plain arrays of this process (e.g. a state restored replicated)."""
        if self.mesh is None:
            return tree
        import jax
        import jax.numpy as jnp

        return jax.tree.map(lambda x: jnp.asarray(np.asarray(x.addressable_data(0))), tree)

    def constrain_runs(self, tree):
        """Inside ``jit``: ask for the first axis split over the mesh (a no-op without one)."""
        if self.mesh is None:
            return tree
        import jax

        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.runs), tree)

    def abstract(self, tree, sharding=None):
        """``ShapeDtypeStruct``s carrying the run sharding: orbax restores into this layout, whatever
        the device count that wrote the checkpoint."""
        if self.mesh is None:
            return tree
        import jax

        s = self.runs if sharding is None else sharding
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree)

    def to_host(self, tree) -> Any:
        """numpy copies of a tree, gathered from every process when its arrays span processes."""
        import jax

        def get(x):
            if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
                from jax.experimental import multihost_utils

                return np.asarray(multihost_utils.process_allgather(x, tiled=True))
            return np.asarray(jax.device_get(x))

        return jax.tree.map(get, tree)


# ---------------------------------------------------------------- parallel local jobs
_SLOT: tuple | None = None  # (the lock file held for this process's life, what was claimed)


def claim_local_device(num_jobs: int, sweep_dir: str, job: int = 0) -> dict:
    """Give this local sweep job a device of its own before JAX starts: the first free GPU (a lock
    file per GPU id, shared by every sweep on the machine) → ``CUDA_VISIBLE_DEVICES``; without
    GPUs, the first free of ``num_jobs`` equal blocks of CPU cores (per sweep) → CPU affinity.
    The lock lives as long as the process, so a joblib worker that runs several jobs keeps its
    device.  With more jobs than slots, a job shares the slot of its job number, GPU memory then
    allocated on demand rather than preallocated (said in the returned record)."""
    global _SLOT
    if _SLOT is not None:
        return _SLOT[1]
    import fcntl
    import hashlib
    import tempfile
    from pathlib import Path

    gpus = visible_gpus()
    if gpus:
        slots, root = [[g] for g in gpus], Path(tempfile.gettempdir()) / "purejaxrl-gpu-slots"
        names = [f"gpu{g}.lock" for g in gpus]  # by id: sweeps that see other GPU subsets never collide
    else:
        cpus = sorted(os.sched_getaffinity(0))
        k = max(1, min(int(num_jobs), len(cpus)))
        slots = [list(map(int, b)) for b in np.array_split(np.asarray(cpus), k)]
        tag = hashlib.sha1(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:12]
        root = Path(tempfile.gettempdir()) / f"purejaxrl-cpu-slots-{tag}"
        names = [f"slot{i}.lock" for i in range(len(slots))]
    lock, slot = None, None
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        names = []  # no lock directory we may use: share by job number
    for i, name in enumerate(names):
        try:
            f = open(root / name, "a")  # noqa: SIM115 - held until the process exits
        except OSError:
            continue
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        lock, slot = f, i
        break
    shared = slot is None
    if shared:  # every slot is held (more jobs than devices): share the job number's
        slot = int(job) % len(slots)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = slots[slot][0]
        if shared:
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        info = {"slot": slot, "gpu": slots[slot][0]}
    else:
        os.sched_setaffinity(0, slots[slot])
        info = {"slot": slot, "cpus": slots[slot]}
    info["shared"] = shared
    _SLOT = (lock, info)
    return info


def local_device() -> dict | None:
    """What :func:`claim_local_device` gave this process (``None`` outside a local sweep)."""
    return None if _SLOT is None else _SLOT[1]


def scale_summary(mesh) -> dict:
    """The ``summary.json`` keys of a scaled-out run: ``devices`` and ``processes`` with a mesh,
    ``local_device`` in a parallel local sweep."""
    import jax

    out = {}
    if mesh is not None:
        out.update(devices=mesh.size, processes=jax.process_count())
    if local_device() is not None:
        out["local_device"] = local_device()
    return out


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, without starting a JAX backend."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() not in ("", "-1")]
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
