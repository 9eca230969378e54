"""Populations of LLM RL runs in one compiled program.

``members × seeds`` runs of one ``llm rl`` config (``loss=learned``), each member training with its
own learned objective (``hp["learned"]``, :mod:`purejaxrl.llm.learned`), every run its own model,
optimiser, sampler and task stream — vmapped, the whole run (every iteration and the final held-out
evaluation) inside one ``jit``.  Run ``(m, s)`` is exactly the run ``purejaxrl llm rl`` trains with
``seed=s`` and member m's objective (the same keys, the same iteration function,
:func:`purejaxrl.llm.run.build_program`), so the members of a seed meet the same prompts and the same
sampler noise (common random numbers), and a population of one member equals the single run up to
float rounding.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl import evalkeys
from purejaxrl.llm import learned as LN
from purejaxrl.llm import trainer as T
from purejaxrl.llm.model import ModelConfig, init_params
from purejaxrl.llm.tasks import VOCAB, make_task


class Population:
    """``population(objectives [M, ...], seeds [S], start=None) -> dict of [M, S] arrays``: the final
    greedy pass@1 (overall and per level) on the ``stream`` prompts of each run's seed, the run's
    sampled successes per level over every iteration, its mean loss over the iterations, and whether
    every iteration's loss and gradient norm stayed finite.  ``start``: per-seed starting models ``[S, ...]`` (e.g. each seed's format
    warm-up, ``init_from``); None initialises each run from its seed as ``llm rl`` does."""

    def __init__(self, cfg: dict, stream: str = "test"):
        from purejaxrl.llm.run import build_program, validate_llm, with_defaults

        cfg = with_defaults(cfg)
        if cfg.get("mode") != "rl" or (cfg.get("loss") or {}).get("name") != "learned":
            from purejaxrl.errors import ConfigError

            raise ConfigError("a population of LLM runs trains learned objectives: mode=rl loss=learned")
        validate_llm({**cfg, "resume": False, "init_from": None})
        self.cfg = cfg
        self.task = make_task(cfg["task"]["name"], **(cfg["task"].get("kwargs") or {}))
        self.mcfg = ModelConfig(vocab_size=len(VOCAB), max_len=self.task.prompt_len + self.task.max_new, **cfg["model"])
        self.program = build_program(cfg, self.task, self.task, self.mcfg, jax.random.PRNGKey(int(cfg["seed"])))
        self.spec = self.program.learned_spec
        self.iterations = int(cfg["iterations"])
        self.stream = stream
        self.tokens_per_run = self.program.tokens_per_iteration * self.iterations
        self.seconds = 0.0
        self._compiled = {}

    def initial_objective(self, key: jax.Array):
        """The special point the config names (``loss.init`` or ``loss.path``), its learned layer from ``key``."""
        return LN.from_config(self.cfg["loss"], self.task.max_new, key)[1]

    def _one_run(self, learned, seed, start):
        prog, task, mcfg = self.program, self.task, self.mcfg
        key = jax.random.PRNGKey(seed)
        params = init_params(jax.random.fold_in(key, 0), mcfg) if start is None else start
        hp = {**prog.hp, "learned": learned}

        def body(s, i):
            s, m = prog.fn(s, jax.random.fold_in(key, i + 1), i, hp)
            finite = jnp.isfinite(m["loss"]) & jnp.isfinite(m["grad_norm"])
            return s, {"finite": finite, "loss": m["loss"],
                       **{k: v for k, v in m.items() if k.startswith("train_successes_level")}}

        state, ms = jax.lax.scan(body, prog.init_state(params), jnp.arange(self.iterations))
        ev_key = evalkeys.stream(evalkeys.run_key(key), self.stream, self.cfg.get("eval_seed", 0))
        ev = T.make_eval(task, mcfg, self.cfg["eval_prompts"], ev_key)(state["params"])
        out = {f"{self.stream}_{k}": v for k, v in ev.items()}
        out.update({k: v.sum() for k, v in ms.items() if k.startswith("train_successes_level")})
        out["loss_mean"] = ms["loss"].mean()  # over the run's iterations
        out["finite"] = jnp.all(ms["finite"])
        return out

    def _fn(self, with_start: bool):
        """One compiled program per layout (runs with per-seed starting models, or from their seeds)."""
        if with_start not in self._compiled:
            axes = (0, 0, 0 if with_start else None)
            self._compiled[with_start] = jax.jit(jax.vmap(self._one_run, in_axes=axes))
        return self._compiled[with_start]

    def __call__(self, objectives, seeds, start=None) -> dict:
        t = time.perf_counter()
        M = jax.tree.leaves(objectives)[0].shape[0]
        seeds = jnp.asarray(seeds, jnp.int32)
        S = seeds.shape[0]
        learned = jax.tree.map(lambda x: jnp.repeat(x, S, axis=0), objectives)  # run m·S + s
        run_seeds = jnp.tile(seeds, M)
        if start is not None:
            start = jax.tree.map(lambda x: jnp.tile(x, (M,) + (1,) * (x.ndim - 1)), start)
        out = self._fn(start is not None)(learned, run_seeds, start)
        out = {k: np.asarray(v).reshape(M, S) for k, v in jax.device_get(out).items()}
        self.seconds = time.perf_counter() - t
        return out


def load_starts(run_dirs: list[str], cfg: dict):
    """Per-seed starting models ``[S, ...]`` from the run directories of earlier llm runs (``init_from``)."""
    from purejaxrl.llm.run import _load_params

    task = make_task(cfg["task"]["name"], **(cfg["task"].get("kwargs") or {}))
    mcfg = ModelConfig(vocab_size=len(VOCAB), max_len=task.prompt_len + task.max_new, **cfg["model"])
    template = init_params(jax.random.PRNGKey(0), mcfg)
    trees = [_load_params(d, template) for d in run_dirs]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
