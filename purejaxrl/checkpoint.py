"""Checkpoints with orbax ``CheckpointManager``: the whole training state of every run (params,
optimiser state, RNG, environment state) plus a JSON record (config identity, update counter)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from purejaxrl.config import first_difference, without_unread
from purejaxrl.errors import ConfigError


def open_run_dir(cfg: dict, default: str) -> tuple[Path, Path, bool]:
    """``(run_dir, checkpoint_dir, resuming)`` for a host loop, after the checks every command shares:
    a run directory that holds checkpoints needs ``resume=true`` or ``auto`` (nothing is changed
    otherwise); ``resume=true`` needs a run to continue (a mistyped run_dir must not start a new
    one), ``resume=auto`` continues one or starts one."""
    run_dir = Path(cfg.get("run_dir") or default).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file, not a directory; choose another run_dir")
    ckpt_dir = run_dir / "checkpoints"
    resuming = Checkpointer.exists(ckpt_dir)
    if resuming and not cfg.get("resume"):
        raise ConfigError(f"run_dir {run_dir} already holds checkpoints; pass resume=true to continue that run "
                          "or choose another run_dir (nothing was changed)")
    if cfg.get("resume") is True and not resuming:
        raise ConfigError(f"resume=true: {run_dir} holds no run to continue (no checkpoint); check run_dir, or pass "
                          "resume=auto to start a new run there when there is none")
    if cfg.get("resume") == "auto" and not resuming:
        print(f"resume=auto: {run_dir} holds no run yet; starting one there")
    return run_dir, ckpt_dir, resuming


def _empty(x) -> bool:
    return math.prod(x.shape) == 0


def _replicated_like(sharding):
    """A replicated sharding on the same devices (a placeholder's), or this process's first device."""
    from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    return SingleDeviceSharding(jax.local_devices()[0])


def _fill_empty(tree):
    """Zero-size arrays (MJX's ``act`` of an env without actuator state) cannot be written by orbax:
    a one-element placeholder (replicated on the array's mesh) stands in for them, and
    :meth:`Checkpointer.restore` puts them back."""
    def fill(x):
        if not _empty(x):
            return x
        rep = _replicated_like(getattr(x, "sharding", None))
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((1,), x.dtype, sharding=rep)
        return jax.device_put(jnp.zeros((1,), x.dtype), rep)

    return jax.tree.map(fill, tree)


def _placed(abstract):
    """Every leaf of a restore template with a sharding: a template without one (a run restored on
    one device) is placed on this process's first device, whatever mesh wrote the checkpoint."""
    def place(x):
        if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_replicated_like(None))
        return x

    return jax.tree.map(place, abstract)


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).resolve()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    @staticmethod
    def exists(directory: str | Path) -> bool:
        d = Path(directory)
        return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._mngr.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(_fill_empty(state)), meta=ocp.args.JsonSave(meta))
        )
        self._mngr.wait_until_finished()

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        try:
            meta = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any failure here means an unreadable checkpoint
            raise self._unreadable(step, e) from e
        if not isinstance(meta, dict) or "identity" not in meta or "update" not in meta:
            raise self._unreadable(step, ValueError("its metadata has no identity/update record"))
        return meta

    def _unreadable(self, step, e: Exception) -> ConfigError:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        steps = sorted(self._mngr.all_steps())
        older = [s for s in steps if s != step]
        fix = (f"move {self.directory / str(step)} away to resume from step {older[-1]}" if older
               else "start a new run_dir")
        return ConfigError(f"checkpoint {self.directory / str(step)} cannot be read ({type(e).__name__}: {first}); {fix}")

    def restore(self, abstract_state: Any, identity: dict, step: int | None = None, ignore: tuple = (),
                eval_rng: Any = None) -> tuple[Any, dict]:
        """Restore the state after checking that the checkpoint was written by a config with the same
        identity, apart from the ``ignore`` keys (raises :class:`ConfigError` naming the first
        differing field otherwise).  ``eval_rng``: the runs' evaluation keys (a function of their
        seeds, or a function returning them), filled in when the checkpoint predates them in the state."""
        step = self.latest_step() if step is None else step
        meta = self.read_meta(step)
        drop = lambda d: {k: v for k, v in d.items() if k not in ignore} if isinstance(d, dict) else d  # noqa: E731
        diff = first_difference(drop(without_unread(meta["identity"])), drop(without_unread(identity)))
        if diff:
            raise ConfigError(
                f"cannot resume from {self.directory}: the config differs from the one that wrote it ({diff}); "
                "restore the original value or start a new run_dir"
            )
        try:
            restored = self._mngr.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_fill_empty(_placed(abstract_state))))
            )
        except Exception as e:  # noqa: BLE001 - corrupted files, or a state of another shape
            restored = self._restore_without_eval_rng(step, abstract_state, eval_rng)
            if restored is None:
                raise self._unreadable(step, e) from e
        def put_back(a, r):
            if not _empty(a):
                return r
            z = jnp.zeros(a.shape, a.dtype)
            return jax.device_put(z, a.sharding) if getattr(a, "sharding", None) is not None else z

        state = jax.tree.map(put_back, abstract_state, restored["state"])
        return state, meta

    def _restore_without_eval_rng(self, step, abstract_state, eval_rng):
        """A checkpoint written before the state kept its evaluation key: everything else restored,
        ``eval_rng`` (a function of each run's seed) filled in; None if that does not fit either."""
        if eval_rng is None or not hasattr(abstract_state, "eval_rng"):
            return None
        item = _fill_empty(_placed(abstract_state.replace(eval_rng=None)))
        mngr = ocp.CheckpointManager(self.directory)  # its own handler registry: the state read as a partial pytree
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item=item, partial_restore=True)))
        except Exception:  # noqa: BLE001 - another kind of mismatch: reported as unreadable
            return None
        finally:
            mngr.close()
        if callable(eval_rng):  # derived only when needed: a refused resume computes nothing
            eval_rng = eval_rng()
        target = getattr(abstract_state.eval_rng, "sharding", None)
        fill = jax.device_put(eval_rng, target) if target is not None else eval_rng
        print(f"note: {self.directory / str(step)} predates evaluation keys in the state; they were derived from the "
              "runs' seeds")
        return {"state": restored["state"].replace(eval_rng=fill)}

    def restore_subtree(self, key: str, template: Any, step: int | None = None) -> Any:
        """Restore only ``state[key]`` (e.g. the parameters of an earlier run, to start a new one)."""
        step = self.latest_step() if step is None else step
        abstract = {key: _placed(jax.eval_shape(lambda: template))}
        restored = self._mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item=abstract, partial_restore=True))
        )
        return restored["state"][key]

    def close(self) -> None:
        self._mngr.close()
