"""The one training loop every algorithm runs in.

``make_train(config)`` returns ``train(key, hparams) -> (state, metrics)``: the whole run as a
pure, jittable function (a ``lax.scan`` over updates).  :class:`Trainer` cuts the same scan into
compiled chunks for the host loop in :mod:`purejaxrl.experiment`, vmapping over runs (seeds ×
hyperparameter values) only when there is more than one: a size-1 vmap costs ~1.85× on CPU.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl.algos import Algorithm, get_algorithm
from purejaxrl.sharding import Placement


def build_algorithm(cfg: dict, **kwargs) -> Algorithm:
    """The algorithm a config names; ``kwargs`` go to its constructor (e.g. ``objective=`` for PPO)."""
    cls = get_algorithm(cfg["algo"]["name"])
    if getattr(cls, "NEEDS_DATASET", False):
        kwargs.setdefault("dataset", cfg.get("dataset") or {})
    return cls(cfg["algo"], cfg["env"], cfg.get("network") or {}, **kwargs)


class Trainer:
    """Compiled pieces of a training run over ``num_runs`` runs."""

    def __init__(self, algo: Algorithm, num_runs: int, chunks: int = 1, num_evals: int | None = None, vmap_single: bool = False,
                 load_data: bool = True, mesh=None):
        self.algo = algo
        self.place = Placement(mesh)  # the run axis split over a device mesh (None: one device)
        self.num_runs = int(num_runs)
        self.num_updates = algo.num_updates
        self.updates_per_chunk = math.ceil(self.num_updates / max(int(chunks), 1))
        evals = int(algo.cfg.get("num_evals", 10) if num_evals is None else num_evals)
        self.eval_every = max(self.num_updates // max(evals, 1), 1)
        if algo.host_eval:  # evaluated on the host between chunks: chunks end at every evaluation (and may
            # be shorter, for more checkpoints: the longest that divides the evaluation period within `chunks`)
            e, cap = self.eval_every, max(self.updates_per_chunk, 1)
            divisors = {d for k in range(1, math.isqrt(e) + 1) if e % k == 0 for d in (k, e // k)}
            self.updates_per_chunk = max(d for d in divisors if d <= cap)
        batched = self.num_runs > 1 or vmap_single or mesh is not None  # vmap_single: the reference codes' layout
        self.batched = batched
        init = algo.init
        chunk = self._run_updates
        if batched:
            init = jax.vmap(algo.init, in_axes=(0, 0, None))
            chunk = jax.vmap(chunk, in_axes=(0, 0, None, None, None, None))
        # on a mesh, every output (state, metrics, finite) is split along its run axis
        out = {"out_shardings": self.place.runs} if mesh is not None else {}
        self._init = jax.jit(init, **out)
        self._chunk = jax.jit(chunk, static_argnums=(4, 5), donate_argnums=0, **out)
        # an offline dataset: one argument shared by every run (a copy on every device of a mesh)
        self.data = self.place.replicate(algo.load_data() if load_data else None)
        self._compiled: dict[Any, Any] = {}
        self.compile_seconds = 0.0
        self.trace_lower_seconds = 0.0  # the part of compile_seconds spent tracing and lowering (before XLA)

    # ---- pure functions ----
    def _run_updates(self, state, hp, start, data, n: int, guard: bool = True):
        """``n`` updates from update index ``start`` (unbatched, so the ``cond``s below stay
        branches under vmap); with ``guard``, updates past the end of training are skipped (needed
        when the chunks from ``start`` do not divide the remaining updates).  Besides the metrics
        per update, returns ``params_finite``: whether every learned parameter is finite at the end."""
        algo, last = self.algo, self.num_updates - 1

        eval_shapes = None

        def one_update(state, i):
            nonlocal eval_shapes
            state, m = algo.update(state, hp, i, data)
            do_eval = jnp.logical_or((i + 1) % self.eval_every == 0, i == last)
            if eval_shapes is None:  # whatever the algorithm's evaluation reports, NaN between evaluations
                eval_shapes = jax.eval_shape(lambda s: algo.evaluate(s, hp, i), state)
            nan = lambda s: jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), eval_shapes)  # noqa: E731
            ev = jax.lax.cond(do_eval, lambda s: algo.evaluate(s, hp, i), nan, state)
            return state, {**m, **ev}

        idx = start + jnp.arange(n, dtype=jnp.int32)
        if not guard:  # every chunk from here is full
            state, metrics = jax.lax.scan(one_update, state, idx)
        else:
            # A short last chunk skips its surplus updates; their metrics are NaN (shapes from one trace).
            shapes = jax.eval_shape(one_update, state, jnp.int32(0))[1]
            nan_metrics = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

            def body(state, i):
                return jax.lax.cond(i <= last, one_update, lambda s, _: (s, nan_metrics), state, i)

            state, metrics = jax.lax.scan(body, state, idx)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(algo.params(state))]))
        return state, metrics, finite

    def train_fn(self):
        """``train(key, hparams) -> (state, metrics)`` for a single run, whole training in one scan."""
        data = self.data

        def train(key, hp):
            state = self.algo.init(key, hp, data)
            state, metrics, _ = self._run_updates(state, hp, jnp.int32(0), data, self.num_updates, False)
            return state, metrics

        return train

    # ---- compiled entry points ----
    def _compile(self, name, fn, *args):
        if name not in self._compiled:
            t0 = time.perf_counter()
            lowered = fn.lower(*args)
            self.trace_lower_seconds += time.perf_counter() - t0
            self._compiled[name] = lowered.compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[name]

    def init(self, keys, hparams):
        keys, hparams = self._maybe_squeeze(keys), self._maybe_squeeze(hparams)
        return self._compile("init", self._init, keys, hparams, self.data)(keys, hparams, self.data)

    def eval_keys(self, keys):
        """The runs' evaluation keys (:func:`purejaxrl.evalkeys.run_key` of their training keys), laid
        out as the state holds them (for checkpoints that predate them)."""
        from purejaxrl import evalkeys

        return self._maybe_squeeze(jax.vmap(evalkeys.run_key)(keys))

    def abstract_state(self, keys, hparams):
        """The state's shapes (and, on a mesh, its layout: a checkpoint restores into it)."""
        keys, hparams = self._maybe_squeeze(keys), self._maybe_squeeze(hparams)
        return self.place.abstract(jax.eval_shape(self._init, keys, hparams, self.data))

    def chunk(self, state, hparams, start: int, with_finite: bool = False):
        """Run one chunk from update ``start``; metrics come back as numpy ``[num_runs, n]``
        (and, with ``with_finite``, a boolean ``[num_runs]``: all parameters finite)."""
        fn = self.compile_chunk(state, hparams, start)
        state, metrics, finite = fn(state, self._maybe_squeeze(hparams), self._start(start), self.data)
        metrics, finite = self.place.to_host((metrics, finite))
        finite = finite.reshape(-1)
        if not self.batched:
            metrics = {k: v[None] for k, v in metrics.items()}
        return (state, metrics, finite) if with_finite else (state, metrics)

    def needs_guard(self, start: int) -> bool:
        """Whether chunks of ``updates_per_chunk`` from ``start`` overrun the end of training (a
        short last chunk, also after a resume with another ``chunks``)."""
        return (self.num_updates - int(start)) % self.updates_per_chunk != 0

    def compile_chunk(self, state, hparams, start: int):
        """The compiled chunk program for chunks from ``start`` (compiled once per run)."""
        guard = self.needs_guard(start)
        return self._compile(f"chunk_guard={guard}", self._chunk, state, self._maybe_squeeze(hparams), self._start(start),
                             self.data, self.updates_per_chunk, guard)

    def _start(self, start: int):
        return self.place.replicate(jnp.int32(start))

    def _maybe_squeeze(self, tree):
        """Run-batched inputs as the compiled programs take them: split over the mesh, or without
        their run axis when a single run is not vmapped."""
        if self.batched:
            return self.place.runs_tree(tree)
        return jax.tree.map(lambda x: jnp.asarray(x)[0], tree)


def make_train(cfg: dict, **algo_kwargs):
    """``train(key, hparams)`` for a config: pure and jittable; ``jax.vmap`` it over seeds and
    hyperparameters (``hparams``: :func:`default_hparams`, a pytree of float32 arrays)."""
    algo = build_algorithm(cfg, **algo_kwargs)
    return Trainer(algo, num_runs=1, chunks=1).train_fn()


def default_hparams(cfg: dict, algo: Algorithm | None = None) -> dict[str, Any]:
    """The traced hyperparameters of one run: a float32 scalar per ``Algorithm.HPARAMS`` plus the
    algorithm's pytree-valued ones (:meth:`Algorithm.extra_hparams`, e.g. ``hp["objective"]``)."""
    cls = get_algorithm(cfg["algo"]["name"])
    hp = {k: jnp.float32(cfg["algo"][k]) for k in cls.HPARAMS}
    if algo is not None:  # run axes set outside vmap (e.g. env.kwargs.task=all): their first value
        hp.update({k: jnp.float32(v[0]) for k, v in algo.grid_axes().items()})
    return {**hp, **(algo.extra_hparams() if algo is not None else {})}


def batch_hparams(algo: Algorithm, hparams: dict[str, np.ndarray], num_runs: int) -> dict[str, Any]:
    """Add the algorithm's pytree-valued hyperparameters to a run grid's ``[num_runs]`` arrays,
    broadcast over runs (every run starts from the same values)."""
    extra = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (num_runs,) + jnp.shape(x)), algo.extra_hparams())
    return {**hparams, **extra}
