"""Why a run's no-adversary return differs between ``purejaxrl eval`` and the robustness evaluation at
scale 1 (the figure a study's fresh-adversary table shows beside its arms table).

Three evaluations of one trained run directory (with its checkpoints), each on the same test episodes
(every run's own evaluation key, split ``test``, draw 0):

* ``eval_path``: :func:`purejaxrl.evaluate.evaluate_run`, as a study's arms table;
* ``grid_path_scale_1``: :func:`purejaxrl.robustness.robustness` at mass and friction x 1, as the
  fresh-adversary evaluation (the physics set at run time, per cell);
* ``grid_path_no_override``: the robustness code with the physics left as the env resets it (the episode
  then no longer depends on the vmapped cell, so its cell axis drops out of the compiled program);
* ``grid_path_unbatched_ones``: the override kept, its values an unbatched constant 1 instead of the
  vmapped cell's (separates the override itself from the batching over cells).

The file also records whether the env's model at scales of 1, as the env steps with it (with the reset's
per-body scales of 1, subtree masses recomputed), equals the nominal model, field by field, bit for bit.

    python benchmarks/eval_paths.py RUN_DIR --out FILE.json [--episodes 32]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from purejaxrl.config import ConfigError


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--episodes", type=int, default=32)
    a = p.parse_args(argv)
    if not (Path(a.run_dir) / "checkpoints").is_dir():
        sys.exit(f"error: {a.run_dir} has no checkpoints/; this needs a trained run directory with its checkpoints")
    if a.episodes < 1:
        sys.exit(f"error: --episodes={a.episodes} must be >= 1")
    try:
        run(a)
    except ConfigError as e:
        sys.exit(f"error: {e}")


def run(a) -> None:
    import jax
    import jax.numpy as jnp

    import purejaxrl

    purejaxrl.configure_cpu_runtime()
    import purejaxrl.robustness as R
    from purejaxrl.evaluate import evaluate_run, load_run

    algo = load_run(a.run_dir)[0]
    base = algo.env.unwrapped
    if not hasattr(base, "with_physics"):
        raise ConfigError(f"{a.run_dir} is not a DM Control run (env=dmc_*): it has no physics to set")
    out = {"run_dir": a.run_dir, "episodes": a.episodes, "split": "test", "seconds": {}}
    t = time.time()
    ev = evaluate_run(a.run_dir, a.episodes, "test", 0, write=False)
    out["eval_path"] = [r["mean_return"] for r in ev["per_run"]]
    out["seeds"] = [r["seed"] for r in ev["per_run"]]
    out["seconds"]["eval_path"] = time.time() - t
    one = np.ones(1, np.float32)
    orig = R._with_physics

    def grid(name, with_physics):  # the robustness evaluation at scale 1, its physics override replaced
        R._with_physics = with_physics
        try:
            t = time.time()
            res = R.robustness(a.run_dir, one, one, a.episodes, 0, 0, split="test", write=False,
                               adversary_grids=False)
        finally:
            R._with_physics = orig
        out[name] = np.asarray(res["returns"]["no_adversary"]).reshape(-1).tolist()
        out["seconds"][name] = time.time() - t

    grid("grid_path_scale_1", orig)
    grid("grid_path_no_override", lambda state, mass, friction, base=None, bodies=None: state)  # as reset
    grid("grid_path_unbatched_ones", lambda state, mass, friction, base=None, bodies=None: orig(
        state, jnp.ones(mass.shape, mass.dtype), jnp.ones(friction.shape, friction.dtype), base, bodies))

    nb = len(base.body_names)
    model = jax.jit(lambda m, f, b: base._model(m, f, b))(jnp.float32(1), jnp.float32(1), jnp.ones(nb, jnp.float32))
    nominal = base._env.mjx_model
    fields = ("body_mass", "body_inertia", "body_subtreemass", "body_invweight0", "dof_invweight0", "geom_friction")
    out["model_at_scale_1_bitwise_nominal"] = {f: bool(np.array_equal(np.asarray(getattr(model, f)),
                                                                      np.asarray(getattr(nominal, f))))
                                               for f in fields}
    e, g, n, u = (np.asarray(out[k]) for k in ("eval_path", "grid_path_scale_1", "grid_path_no_override",
                                               "grid_path_unbatched_ones"))
    out["grid_scale_1_minus_eval"] = (g - e).tolist()
    out["no_override_bitwise_eval"] = bool(np.array_equal(n, e))
    out["unbatched_ones_bitwise_eval"] = bool(np.array_equal(u, e))
    out["unbatched_ones_minus_eval"] = (u - e).tolist()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("grid_scale_1_minus_eval", "no_override_bitwise_eval",
                                          "unbatched_ones_bitwise_eval", "model_at_scale_1_bitwise_nominal")}))


if __name__ == "__main__":
    main()
