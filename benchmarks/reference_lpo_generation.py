"""Time ES generations of the LPO reference implementation (black-box LPO on gymnax CartPole-v1) at
the ``ta_lpo`` study's population and inner budget, for comparison with
``python benchmarks/meta_throughput.py experiment=meta_cartpole32 objective=lpo`` on the same machine.

    REF_PYTHON benchmarks/reference_lpo_generation.py --ref CHECKOUT --generations 3 --out FILE.json

``CHECKOUT`` is a checkout of github.com/AlexGoldie/learn-rl-algorithms that the user provides, and
``REF_PYTHON`` an interpreter with its stack (recorded here: jax/jaxlib 0.4.29 CPU, evosax 0.1.4,
flax 0.8.4, gymnax 0.0.8); nothing of it is copied into this repository.

Reference used
--------------
LPO = "Learned Policy Optimisation" from Lu et al. 2022, "Discovered Policy Optimisation".
The original repo (github:luchris429/discovered-policy-optimisation @ c412884c) is Brax-only
(no gymnax / CartPole path) and pins jax==0.3.0/jaxlib==0.3.0, numpy==1.22.1, brax==0.0.11,
which have no CPython 3.11 wheels, so it cannot run here. We therefore use the gymnax LPO
reference github:AlexGoldie/learn-rl-algorithms (Goldie et al., RLC 2025), file
algorithms/learning_algorithms/black_box_learning/lpo_bb.py, which re-implements LPO
(MetaDrift 8->128->1, tanh, no bias; inputs [r-1,(r-1)^2,log r,(log r)^2] and the same x GAE)
on PureJaxRL-style PPO with an OpenES (evosax 0.1.4) outer loop.

What is imported from --ref (not copied): make_train (the whole inner PPO+LPO training, jitted),
MetaDrift, all_configs["cartpole"]; evosax OpenES/ParameterReshaper/FitnessShaper as the
reference uses them.

Changes from the reference's defaults (only through the config dict / call arguments)
-------------------------------------------------------------------------------------
all_configs["cartpole"] (copied dict, reference file untouched):
  NUM_ENVS        4      -> 8
  NUM_STEPS       128    -> 64
  TOTAL_TIMESTEPS 5e5    -> 16384 (int; => NUM_UPDATES = 32; ref's float 5e5 gives 976.0)
  LR              1e-3   -> 5e-4
  unchanged: UPDATE_EPOCHS 4, NUM_MINIBATCHES 4, ANNEAL_LR True (linear to 0), GAMMA .99,
  GAE_LAMBDA .95, CLIP_EPS .2, ENT_COEF .01, VF_COEF .5, MAX_GRAD_NORM .5, HSIZE 64, tanh,
  adam B1 .9 / B2 .999, eps 1e-5.
lpo_bb.py __main__ arguments:
  --envs breakout -> cartpole ; --popsize 64 (same) ; --num-rollouts 1 -> 2 (seeds per member,
  shared across members as in the ref: split(rng_eval, R) tiled over the population);
  --num-generations 800 -> --generations ; OpenES(opt adam, lrate_init .03, sigma_init .03,
  sigma_decay .99, lrate_decay .99), FitnessShaper(centered_rank), MetaDrift(hsize 128),
  PRNGKey(42): all unchanged.

What could not be used as-is (written here after lpo_bb.py's __main__)
--------------------------------------------------------------------------------------------
* The generation loop and make_rollout live under `if __name__ == "__main__"` in lpo_bb.py, so
  they cannot be imported; the loop below does the same (jit(vmap(vmap(train)))) in the same
  ask -> reshape -> rollout -> fitness shaping -> tell sequence.
* Fitness reduction: on 1 device the ref takes the non-pmap branch, which leaves fitness with
  shape (pop, NUM_STEPS, NUM_ENVS) and cannot be passed to strategy.tell (bug). We use the
  ref's pmap-branch reduction instead: returned_episode_returns of the last update, last
  step, mean over envs, then mean over seeds -> (pop,). This is outside the jitted rollout.
* Dropped (logging/eval, not part of an ES generation): wandb.init/log (WANDB_MODE=disabled is
  set because the ref calls wandb.Api() at import), tqdm, per-gen prints, ESLog, np.save, and the
  eval_func(...) meta-evaluation the ref runs every 8 generations (incl. gen 0).
* Timing: each generation is wall-clock from ask to tell with block_until_ready on the new
  ES state. Generation 0 includes XLA compilation; steady state = median of generations 1..N-1.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True, help="checkout of AlexGoldie/learn-rl-algorithms")
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--seeds-per-member", type=int, default=2)
    p.add_argument("--generations", type=int, default=3, help="incl. the first (compile) one")
    p.add_argument("--updates", type=int, default=32, help="inner PPO updates (tiny runs: 2)")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args()
    assert args.population % 2 == 0, "OpenES antithetic sampling needs an even population"

    ref = os.path.abspath(args.ref)
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, ref)

    import jax
    import jax.numpy as jnp
    import jaxlib
    from algorithms.learning_algorithms.black_box_learning.lpo_bb import make_train
    from algorithms.utils.architectures.drift import MetaDrift
    from algorithms.utils.configs import all_configs
    from evosax import FitnessShaper, OpenES, ParameterReshaper

    commit = None  # .ref_commit is written when the source is extracted with `git archive`
    f = os.path.join(ref, ".ref_commit")
    if os.path.exists(f):
        commit = open(f).read().strip()
    else:
        try:
            commit = subprocess.run(["git", "-C", ref, "rev-parse", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        except Exception:
            pass

    env = "cartpole"
    config = dict(all_configs[env])
    config.update(
        NUM_ENVS=args.num_envs,
        NUM_STEPS=args.num_steps,
        TOTAL_TIMESTEPS=args.updates * args.num_steps * args.num_envs,
        UPDATE_EPOCHS=args.epochs,
        NUM_MINIBATCHES=args.minibatches,
        LR=args.lr,
    )
    # Same as lpo_bb.py __main__ (make_train recomputes it too).
    config["NUM_UPDATES"] = config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"] // config["NUM_ENVS"]
    config["VISUALISE"] = False
    assert config["NUM_UPDATES"] == args.updates

    popsize, num_rollouts = args.population, args.seeds_per_member
    hsize = 128  # lpo_bb.py --hsize default
    meta_network = MetaDrift(hsize)
    params = meta_network.init(jax.random.PRNGKey(0), jnp.zeros((8,)))
    param_reshaper = ParameterReshaper(params)

    train_fn = make_train(config)

    def single_rollout(rng_input, meta_params):
        _, metrics = train_fn(meta_params, rng_input)
        fitness = metrics["returned_episode_returns"][-1]
        return (fitness, metrics["returned_episode_returns"][-1])

    vmap_rollout = jax.vmap(single_rollout, in_axes=(0, None))
    rollout = jax.jit(jax.vmap(vmap_rollout, in_axes=(0, param_reshaper.vmap_dict)))

    rng = jax.random.PRNGKey(42)
    strategy = OpenES(popsize=popsize, num_dims=param_reshaper.total_params, opt_name="adam",
                      lrate_init=0.03, sigma_init=0.03, sigma_decay=0.99, lrate_decay=0.99)
    es_params = strategy.default_params
    fit_shaper = FitnessShaper(centered_rank=True, z_score=False, w_decay=0.0, maximize=True)
    state = strategy.initialize(rng, es_params)

    gen_times, mean_fit = [], []
    for gen in range(args.generations):
        t0 = time.perf_counter()
        rng, rng_ask, rng_eval = jax.random.split(rng, 3)
        x, state = jax.jit(strategy.ask)(rng_ask, state, es_params)
        reshaped_params = param_reshaper.reshape(x)
        rng, rng_eval = jax.random.split(rng)
        batch_rng = jax.random.split(rng_eval, num_rollouts)
        batch_rng = jnp.tile(batch_rng, (popsize, 1, 1))
        batch_rng = jnp.reshape(batch_rng, (-1, num_rollouts, 2))
        fitness, _ = rollout(batch_rng, reshaped_params)  # (pop, R, NUM_STEPS, NUM_ENVS)
        fitness = fitness[..., -1, :].mean(-1).mean(axis=1)  # ref's pmap-branch reduction
        fitness = jnp.nan_to_num(fitness, nan=-100000)
        fit_norm = fitness / config["PPO_TEMP"]
        fitnesses_mean = jnp.mean(jnp.stack([fit_norm], axis=0), axis=0)
        fitness_rerank = fit_shaper.apply(x, fitnesses_mean)
        state = jax.jit(strategy.tell)(x, fitness_rerank, state, es_params)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        gen_times.append(dt)
        mean_fit.append(float(fitness.mean()))
        print(f"gen {gen}: {dt:.3f} s  mean fitness {mean_fit[-1]:.2f}", flush=True)

    steady = gen_times[1:]
    steps_per_gen = popsize * num_rollouts * config["NUM_UPDATES"] * config["NUM_STEPS"] * config["NUM_ENVS"]
    result = {
        "reference": "AlexGoldie/learn-rl-algorithms algorithms/learning_algorithms/black_box_learning/lpo_bb.py",
        "reference_commit": commit,
        "env": config["ENV_NAME"],
        "population": popsize,
        "seeds_per_member": num_rollouts,
        "inner": {k: config[k] for k in ("NUM_ENVS", "NUM_STEPS", "NUM_UPDATES", "TOTAL_TIMESTEPS",
                                          "UPDATE_EPOCHS", "NUM_MINIBATCHES", "LR", "ANNEAL_LR")},
        "inner_env_steps_per_generation": steps_per_gen,
        "generations": args.generations,
        "first_generation_s": gen_times[0],
        "steady_s_per_generation_median": statistics.median(steady) if steady else None,
        "compile_estimate_s": (gen_times[0] - statistics.median(steady)) if steady else None,
        "generation_times_s": gen_times,
        "mean_fitness": mean_fit,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
