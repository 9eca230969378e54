"""D4RL-style offline datasets collected from the policies of trained runs (``purejaxrl dataset
from_policy --policy RUN_DIR [--policy RUN_DIR ...]``): each policy's actions are *sampled* (the
behaviour a dataset records), episodes run in the env stack it trained in, and the file is in the
OGBench format plus ``rewards`` and ``masks`` (``terminals`` marks each episode's last stored step;
``masks`` is 0 only where the env really terminated).  An expert set comes from a fully trained run,
a medium one from a run stopped early, a mixed one from several ``--policy`` runs together.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxrl.errors import ConfigError


def collect(run_dir: str | Path, episodes: int, seed: int = 0, run: int = 0) -> dict[str, np.ndarray]:
    from purejaxrl.evaluate import load_run

    algo, state, hparams, runs, cfg = load_run(run_dir)
    if not hasattr(algo, "behaviour_action"):
        raise ConfigError(f"{run_dir}: algo={cfg['algo']['name']} has no stochastic policy to collect from; use a PPO run")
    if not 0 <= run < len(runs):
        raise ConfigError(f"--run={run}: {run_dir} holds runs 0..{len(runs) - 1}")
    if len(runs) > 1:
        state = jax.tree.map(lambda x: x[run], state)
        hparams = jax.tree.map(lambda x: x[run], hparams)
    else:
        hparams = jax.tree.map(lambda x: jnp.asarray(x)[0], hparams)
    venv = algo.make_venv(episodes, hparams, evaluation=True)
    T = venv.max_episode_steps

    @jax.jit
    def rollout(key):
        k0, key = jax.random.split(key)
        obs, st = venv.reset(k0)

        def step(c, k):
            obs, st = c
            ka, ke = jax.random.split(k)
            a = algo.behaviour_action(state, obs, ka)
            nobs, st, r, term, trunc, info = venv.step(ke, st, a)
            return (nobs, st), (obs, a, r, term, info["final_observation"])

        return jax.lax.scan(step, (obs, st), jax.random.split(key, T))[1]

    obs, act, rew, term, final = (np.asarray(x) for x in rollout(jax.random.PRNGKey(seed)))  # [T, E, ...]
    space = algo.env.action_space
    act = np.clip(act, space.low, space.high)
    # one episode per env, cut at its first termination; its final observation is stored as one more
    # row (marked terminal, OGBench's convention) so that the last transition has a next state too
    out = {k: [] for k in ("observations", "actions", "rewards", "masks", "terminals")}
    for e in range(episodes):
        ends = np.flatnonzero(term[:, e])
        n = int(ends[0]) + 1 if len(ends) else T
        out["observations"].append(np.concatenate([obs[:n, e], final[n - 1, e][None]]))
        out["actions"].append(np.concatenate([act[:n, e], np.zeros_like(act[:1, e])]))
        out["rewards"].append(np.concatenate([rew[:n, e], [0.0]]))
        out["masks"].append(np.concatenate([1.0 - term[:n, e].astype(np.float32), [0.0]]))
        t = np.zeros(n + 1, bool)
        t[-1] = True
        out["terminals"].append(t)
    return {k: np.concatenate(v).astype(np.float32 if k != "terminals" else bool) for k, v in out.items()}


def collect_many(run_dirs: list[str], episodes: int, out: str | Path, seed: int = 0) -> dict:
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} must be >= 1")
    import yaml

    env_names = {str(d): (yaml.safe_load((Path(d) / "config.yaml").read_text()) or {}).get("env", {}).get("name")
                 if (Path(d) / "config.yaml").exists() else None for d in run_dirs}
    if len(set(env_names.values())) > 1:
        raise ConfigError(f"--policy runs were trained in different envs {env_names}; mix policies of one env")
    parts = [collect(d, episodes, seed + i) for i, d in enumerate(run_dirs)]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(out)
    n_ep = int(data["terminals"].sum())
    return {"path": str(out), "policies": list(map(str, run_dirs)), "episodes": n_ep,
            "transitions": int(len(data["observations"])),
            "mean_episode_return": float(data["rewards"].sum() / n_ep)}
