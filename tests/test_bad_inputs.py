"""Bad command lines: each one exits 2 with exactly one ``error:`` line naming the offending field,
prints no traceback, compiles nothing, writes nothing, and leaves an existing run directory
byte-for-byte unchanged.

One trained run directory (and a copy of it with a corrupted latest checkpoint) is built once for
the module; every case runs the CLI in-process, and a few also through the console script.
"""

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from purejaxrl.cli import main

# The fixture's run; train cases reuse these settings so that a resume differs only where a case says.
TINY = ["algo.total_timesteps=4096", "num_seeds=1", "chunks=2", "algo.num_evals=1", "algo.num_eval_envs=2",
        "logger.progress=false"]
# Small llm settings: a regression that lets an llm case run finishes in seconds.
LLM_TINY = ["model=tiny", "iterations=2", "num_prompts=4", "num_generations=2", "batch_size=4", "dataset_size=8",
            "eval_prompts=8", "progress=false"]


def train(*args, run_dir="{new}"):
    return ["train", *TINY, *args, *([f"run_dir={run_dir}"] if run_dir else [])]


def qgf(*args, data="{data_good}", run_dir="{new}"):
    return ["train", "algo=qgf", "env=pointmaze_medium", "algo.num_updates=10", "num_seeds=1", "logger.progress=false",
            *([f"dataset.path={data}"] if data else []), *args, *([f"run_dir={run_dir}"] if run_dir else [])]


def llm(mode, *args, run_dir="{new}"):
    return ["llm", mode, *LLM_TINY, *args, *([f"run_dir={run_dir}"] if run_dir else [])]


# (argv, fragment the error line must contain).  Placeholders: {run} the trained run, {corrupt} its
# copy with the latest checkpoint overwritten ({corrupt_ckpt} that checkpoint), {new} a fresh run_dir,
# {empty} an empty directory, {missing} a path that does not exist.
CASES = [
    # train: values
    pytest.param(train("algo.lr=-0.001"), "algo.lr=-0.001", id="train-negative-lr"),
    pytest.param(train("algo.gamma=1.5"), "algo.gamma=1.5", id="train-gamma-above-1"),
    pytest.param(train("vmap.algo.gamma=[0.9,1.5]"), "vmap.algo.gamma=1.5", id="train-vmap-gamma-above-1"),
    pytest.param(train("algo.num_minibatches=7"), "algo.num_minibatches=7", id="train-minibatches-not-dividing"),
    pytest.param(train("algo.num_envs=abc"), "algo.num_envs", id="train-num-envs-not-int"),
    pytest.param(train("algo.num_envs=0"), "algo.num_envs=0", id="train-num-envs-zero"),
    pytest.param(train("algo.total_timesteps=10"), "algo.total_timesteps=10", id="train-budget-below-one-update"),
    pytest.param(train("algo.gamma=abc"), "algo.gamma", id="train-gamma-not-number"),
    pytest.param(train("num_seeds=0"), "num_seeds=0", id="train-num-seeds-zero"),
    pytest.param(train("chunks=0"), "chunks=0", id="train-chunks-zero"),
    pytest.param(train("seed=-1"), "seed=-1", id="train-negative-seed"),
    pytest.param(train("stop_after_chunks=0"), "stop_after_chunks=0", id="train-stop-after-zero-chunks"),
    pytest.param(train("network.activation=swish"), "network.activation", id="train-unknown-activation"),
    pytest.param(train("network.hidden_size=0"), "network.hidden_size=0", id="train-hidden-size-zero"),
    pytest.param(train("algo=ppo", "algo.objective=nosuch"), "algo.objective", id="train-ppo-unknown-objective"),
    # train: keys and config groups
    pytest.param(train("+algo.foo=1"), "algo.foo", id="train-unknown-algo-key"),
    pytest.param(train("+nosuchkey=1"), "nosuchkey", id="train-unknown-top-level-key-appended"),
    pytest.param(train("nosuchkey=1"), "nosuchkey", id="train-unknown-top-level-key"),
    pytest.param(train("algo=nosuch"), "algo=nosuch", id="train-unknown-algo"),
    pytest.param(train("env=nosuch"), "env=nosuch", id="train-unknown-env-group"),
    pytest.param(train("env.name=CartPole-v9"), "env.name='CartPole-v9'", id="train-unknown-env-name"),
    pytest.param(train("env.name=Pendulum-v1"), "algo=pqn needs discrete actions", id="train-pqn-continuous-env"),
    pytest.param(train("+env.kwargs.nosuch=3"), "env.kwargs", id="train-bad-env-kwargs"),
    pytest.param(train("+env.kwargs.gravity=abc"), "gravity='abc'", id="train-env-kwarg-wrong-type"),
    pytest.param(train("algo.total_timesteps_decay=abc"), "algo.total_timesteps_decay", id="train-decay-not-int"),
    pytest.param(train("network.kind=minatar_conv"), "network.kind=minatar_conv", id="train-conv-on-vector-obs"),
    pytest.param(train("network.layer_norm=maybe"), "network.layer_norm", id="train-layer-norm-not-bool"),
    pytest.param(train("algo.reward_scale=0"), "algo.reward_scale=0", id="train-reward-scale-zero"),
    pytest.param(train("algo.num_evals=0"), "algo.num_evals=0", id="train-zero-evals"),
    pytest.param(train("vmap.algo.num_envs=[8,16]"), "vmap.algo.num_envs", id="train-vmap-static-key"),
    pytest.param(train("vmap.algo.lr=[]"), "vmap.algo.lr", id="train-vmap-empty-list"),
    # train: run directories
    pytest.param(train("resume=true", run_dir=None), "run_dir", id="train-resume-without-run-dir"),
    pytest.param(train(run_dir="{run}"), "already holds checkpoints", id="train-into-existing-run"),
    pytest.param(train("network.hidden_size=32", "resume=true", run_dir="{run}"), "network.hidden_size",
                 id="train-resume-changed-network"),
    pytest.param(train("algo.lr=0.001", "resume=true", run_dir="{run}"), "algo.lr", id="train-resume-changed-lr"),
    pytest.param(train("resume=true", run_dir="{corrupt}"), "{corrupt_ckpt}", id="train-resume-corrupt-checkpoint"),
    pytest.param(train("resume=true", run_dir="{missing}"), "holds no run to continue", id="train-resume-nothing-there"),
    pytest.param(train("resume=maybe", run_dir="{missing}"), "resume='maybe'", id="train-resume-bad-value"),
    pytest.param(["meta", "resume=true", "run_dir={missing}"], "holds no run to continue", id="meta-resume-nothing-there"),
    # eval
    pytest.param(["eval", "{corrupt}"], "{corrupt_ckpt}", id="eval-corrupt-checkpoint"),
    pytest.param(["eval", "{empty}"], "{empty} is not a run directory", id="eval-empty-dir"),
    pytest.param(["eval", "{missing}"], "{missing}", id="eval-missing-dir"),
    pytest.param(["eval", "{run}", "--episodes", "0"], "--episodes=0", id="eval-zero-episodes"),
    pytest.param(["eval", "{run}", "--episodes", "abc"], "--episodes", id="eval-episodes-not-int"),
    # plot
    pytest.param(["plot", "{empty}"], "{empty} is not a run directory", id="plot-not-a-run-dir"),
    pytest.param(["plot", "--metric", "nosuch", "{run}"], "--metric nosuch", id="plot-unknown-metric"),
    pytest.param(["plot", "{run}", "--smooth", "0"], "--smooth=0", id="plot-smooth-zero"),
    pytest.param(["plot"], "run_dirs", id="plot-no-run-dir"),
    # llm
    pytest.param(["llm"], "sft|rl|pref", id="llm-no-mode"),
    pytest.param(["llm", "xx"], "mode 'xx'", id="llm-unknown-mode"),
    pytest.param(llm("rl", "loss=nosuch"), "loss=nosuch", id="llm-unknown-loss"),
    pytest.param(llm("sft", "task=nosuch"), "task=nosuch", id="llm-unknown-task"),
    pytest.param(llm("rl", "model=nosuch"), "model=nosuch", id="llm-unknown-model"),
    pytest.param(llm("rl", "nosuch=1"), "nosuch is not a setting", id="llm-unknown-key"),
    pytest.param(llm("rl", "+nosuch=1"), "nosuch is not an llm setting", id="llm-unknown-key-appended"),
    pytest.param(llm("rl", "+task.kwargs.nosuch=1"), "task.kwargs", id="llm-bad-task-kwargs"),
    pytest.param(llm("pref", "loss=dpo", "task=addition"), "task=sort_letters", id="llm-pref-wrong-task"),
    pytest.param(llm("pref", "loss=grpo", "task=sort_letters"), "loss='grpo' is not a preference loss", id="llm-pref-rl-loss"),
    pytest.param(llm("pref", "loss=dpo", "task=sort_letters", "noise=bogus"), "noise='bogus'", id="llm-pref-bad-noise"),
    pytest.param(llm("rl", "model.n_heads=3"), "model.n_heads=3", id="llm-heads-not-dividing"),
    # 64 / 32 heads = width 2 is fine; 64 / 64 = width 1 (odd): the rotary embedding needs an even head width
    pytest.param(llm("rl", "model.n_heads=64"), "even head width", id="llm-odd-head-width"),
    pytest.param(llm("rl", "lr=abc"), "lr='abc'", id="llm-lr-not-number"),
    pytest.param(llm("rl", "iterations=0"), "iterations=0", id="llm-zero-iterations"),
    pytest.param(llm("rl", "reward=nosuch"), "reward='nosuch'", id="llm-unknown-reward"),
    pytest.param(llm("rl", "loss=garl", "reward=logprob"), "needs non-negative rewards", id="llm-garl-negative-rewards"),
    pytest.param(llm("pref", "loss=sppo", "task=sort_letters", "pref_temperature=0"), "pref_temperature=0",
                 id="llm-pref-temperature-zero"),
    pytest.param(llm("rl", "curriculum_pool=3"), "curriculum_pool=3", id="llm-curriculum-pool-too-small"),
    pytest.param(llm("rl", "loss.scale_rewards=prompt"), "loss.scale_rewards='prompt'", id="llm-bad-scale-rewards"),
    pytest.param(llm("rl", "loss=dr_grpo", "loss.loss_type=token"), "loss.loss_type='token'", id="llm-bad-loss-type"),
    pytest.param(llm("rl", "loss=paft", "loss.num_resamples=-1"), "loss.num_resamples=-1", id="llm-paft-negative-k"),
    pytest.param(llm("rl", "loss=paft", "reward=prob"), "does not take a likelihood reward", id="llm-paft-likelihood"),
    pytest.param(llm("rl", "policy_gradient=false"), "needs a likelihood reward", id="llm-sft-control-binary"),
    pytest.param(llm("rl", "num_generations=1"), "num_generations=1", id="llm-one-generation"),
    pytest.param(llm("rl", "loss=garl", "loss.p_floor=0"), "loss.p_floor=0", id="llm-garl-zero-floor"),
    pytest.param(llm("rl", "loss=epo", "loss.kappa_low=1.5"), "loss.kappa_low=1.5", id="llm-epo-band-inverted"),
    pytest.param(llm("rl", "loss=epo", "loss.phase_boundary=2"), "loss.phase_boundary=2", id="llm-epo-phase-range"),
    pytest.param(llm("pref", "loss=dpo", "task=sort_letters", "loss.loss_type=ipo", "loss.label_smoothing=0.1"),
                 "applies to loss.loss_type=sigmoid", id="llm-ipo-label-smoothing"),
    pytest.param(llm("pref", "loss=dpo", "task=sort_letters", "loss.loss_type=bogus"), "loss.loss_type='bogus'",
                 id="llm-dpo-bad-loss-type"),
    pytest.param(llm("pref", "loss=dpo", "task=sort_letters", "loss.label_smoothing=0.7"), "loss.label_smoothing=0.7",
                 id="llm-dpo-label-smoothing-range"),
    pytest.param(llm("rl", "init_from={missing}"), "init_from={missing}", id="llm-init-from-missing"),
    pytest.param(llm("rl", "resume=true", run_dir=None), "resume=true needs run_dir", id="llm-resume-without-run-dir"),
    pytest.param(llm("rl", "resume=true", run_dir="{missing}"), "holds no run to continue", id="llm-resume-nothing-there"),
    pytest.param(llm("rl", run_dir="{run}"), "already holds checkpoints", id="llm-into-existing-run"),
    # offline datasets (algo=qgf / fql) and purejaxrl dataset
    pytest.param(qgf(data=None), "dataset.path=FILE.npz", id="qgf-no-dataset"),
    pytest.param(qgf(data="{missing}"), "no such file", id="qgf-dataset-missing"),
    pytest.param(qgf(data="{data_truncated}"), "cannot be read as .npz", id="qgf-dataset-truncated"),
    pytest.param(qgf(data="{data_nan}"), "actions has NaN", id="qgf-dataset-nan"),
    pytest.param(qgf(data="{data_action_dim}"), "action dimension is 2", id="qgf-dataset-action-dim"),
    pytest.param(qgf(data="{data_no_terminals}"), "missing key 'terminals'", id="qgf-dataset-missing-key"),
    pytest.param(qgf("env=cartpole"), "needs continuous actions", id="qgf-discrete-env"),
    pytest.param(["train", "algo=ppo", "env=ogbench_cube_single", "run_dir={new}"], "stepped on the host",
                 id="ppo-on-a-host-env"),
    pytest.param(["train", "algo=qarl", "env=pendulum", "algo.total_timesteps=1600", "run_dir={new}"],
                 "leaves the protagonist no learning phase in 100 updates", id="qarl-no-protagonist-phase"),
    pytest.param(qgf("env=ogbench_cube_single"), "observations have shape (2,) per step but the env observes (28,)",
                 id="qgf-dataset-of-another-env"),
    pytest.param(qgf("algo.guidance=magic"), "algo.guidance='magic'", id="qgf-unknown-guidance"),
    pytest.param(qgf("algo.guidance_weight=0.5"), "algo.guidance_weight=0.5", id="qgf-weight-not-in-list"),
    pytest.param(qgf("+dataset.kind=x"), "dataset.kind", id="qgf-unknown-dataset-key"),
    pytest.param(qgf("algo.q_agg=max"), "algo.q_agg='max'", id="qgf-unknown-q-agg"),
    pytest.param(qgf("env.kwargs.task=six"), "task='six'", id="qgf-unknown-task"),
    pytest.param(qgf("env=pointmaze_large"), "collected in another maze", id="qgf-dataset-of-another-maze"),
    pytest.param(["train", "algo=fql", "env=pointmaze_medium", "algo.num_updates=10", "dataset.path={data_good}",
                  "algo.best_of=4", "run_dir={new}"], "FQL acts with its one-step policy", id="fql-best-of"),
    pytest.param(qgf("env.kwargs.task=all", data="{data_rewards}"), "has rewards of one task, but env.kwargs.task=all",
                 id="qgf-task-all-with-one-tasks-rewards"),
    pytest.param(["train", "algo=ppo", "env=pointmaze_medium", "env.kwargs.task=all", "run_dir={new}"],
                 "env.kwargs.task=all (one run per task) is for the offline algorithms", id="ppo-task-all"),
    pytest.param(qgf("algo.critic_lr=-1"), "algo.critic_lr=-1", id="qgf-negative-network-lr"),
    pytest.param(qgf("algo.chunk=2", "algo.horizon=3"), "algo.horizon=3 with algo.chunk=2", id="qgf-horizon-not-chunk"),
    pytest.param(qgf("algo.guidance=best_of_n", "algo.best_of=4", "algo.guidance_weights=[0]", "algo.guidance_weight=0"),
                 "algo.best_of=4 with algo.guidance=best_of_n", id="qgf-best-of-twice"),
    pytest.param(["train", "algo=fql", "env=pointmaze_medium", "algo.num_updates=10", "dataset.path={data_good}",
                  "algo.critic=ddpg", "run_dir={new}"], "algo.critic='ddpg'", id="fql-unknown-critic"),
    pytest.param(["dataset", "pointmaze_tiny_navigate", "--out", "{new}/x.npz"], "unknown dataset", id="dataset-unknown"),
    pytest.param(["dataset", "pointmaze_medium_navigate"], "--out", id="dataset-no-out"),
    pytest.param(["eval", "{run}", "algo.lr=1"], "eval takes RUN_DIR and evaluation settings", id="eval-not-an-eval-setting"),
    # the command itself
    pytest.param(["bogus"], "unknown command 'bogus'", id="unknown-command"),
]
SUBPROCESS = ("train-negative-lr", "train-into-existing-run", "eval-corrupt-checkpoint", "llm-unknown-task")


def snapshot(root: Path) -> dict:
    """Every file's bytes and every directory under ``root`` (directories map to None)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A trained run, a copy whose latest checkpoint is garbage, and their snapshots."""
    base = tmp_path_factory.mktemp("bad_inputs")
    run = base / "run"
    argv, handlers, level = sys.argv, list(logging.root.handlers), logging.root.level
    try:
        main(["train", *TINY, f"run_dir={run}"])
    finally:  # main() hands its arguments to Hydra through sys.argv; Hydra configures logging
        sys.argv, logging.root.handlers, logging.root.level = argv, handlers, level
    assert (run / "summary.json").exists() and (run / "checkpoints").is_dir()
    corrupt = base / "corrupt"
    shutil.copytree(run, corrupt)
    latest = corrupt / "checkpoints" / str(max(int(p.name) for p in (corrupt / "checkpoints").iterdir() if p.name.isdigit()))
    files = [p for p in latest.rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\xff\x00 not a checkpoint \x00\xfe" * 3)
    data = base / "data"  # a small valid dataset and defective copies of it
    from envs.datasets import generate

    generate("pointmaze_medium_navigate", 2, data / "good.npz")
    raw = dict(np.load(data / "good.npz"))
    good = (data / "good.npz").read_bytes()
    (data / "truncated.npz").write_bytes(good[: len(good) // 2])
    nan = {**raw, "actions": raw["actions"].copy()}
    nan["actions"][3, 0] = np.nan
    np.savez(data / "nan.npz", **nan)
    np.savez(data / "action_dim.npz", **{**raw, "actions": np.zeros((len(raw["actions"]), 3), np.float32)})
    np.savez(data / "no_terminals.npz", **{k: v for k, v in raw.items() if k != "terminals"})
    np.savez(data / "rewards.npz", **raw, rewards=np.zeros(len(raw["actions"]), np.float32))
    files = {f"data_{p.stem}": p for p in data.iterdir()}
    return {"run": run, "corrupt": corrupt, "corrupt_ckpt": latest, **files,
            "snapshots": {run: snapshot(run), corrupt: snapshot(corrupt), data: snapshot(data)}}


def place(dirs, tmp_path):
    """Per-case paths (fresh ones under tmp_path) for the placeholders, and the process's cwd."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "cwd").mkdir()  # where a run without run_dir would go (outputs/...)
    paths = {k: str(v) for k, v in dirs.items() if k != "snapshots"}
    return {**paths, "new": str(tmp_path / "new"), "empty": str(tmp_path / "empty"),
            "missing": str(tmp_path / "missing")}, tmp_path / "cwd"


def check(dirs, paths, cwd, code, out, err, fragment):
    assert "Traceback" not in out + err, err
    assert code == 2, f"exit {code!r}\n{err}"
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert fragment.format_map(paths) in errors[0], err
    assert not [ln for ln in lines if ln.startswith("  - ")], f"one bad input, several problems:\n{err}"
    for root, before in dirs["snapshots"].items():
        assert snapshot(root) == before, f"{root} changed"
    # nothing was written: Hydra may create the (empty) run_dir of a rejected start, but no file
    for d in (paths["new"], paths["empty"], paths["missing"], cwd):
        assert not [p for p in Path(d).rglob("*") if p.is_file()], f"files written under {d}"


@contextlib.contextmanager
def compiled_programs():
    """Programs XLA compiled (or loaded from the persistent cache) in the block, as ``(name, seconds)``;
    the single operations eager ``jnp`` calls compile in milliseconds are left out."""
    found = []

    def on_duration(event, seconds, **kw):
        if event == "/jax/core/compile/backend_compile_duration" and seconds > 0.25:
            found.append((kw.get("fun_name"), seconds))
        elif event == "/jax/compilation_cache/compile_time_saved_sec" and seconds > 0.25:
            found.append(("<persistent cache hit>", seconds))

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield found
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)


@pytest.mark.parametrize("argv, fragment", CASES)
def test_bad_input_is_one_line_before_compiling(argv, fragment, dirs, tmp_path, monkeypatch, capsys):
    paths, cwd = place(dirs, tmp_path)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["purejaxrl"])  # main() rewrites it for Hydra
    # Hydra points a root-logger handler at this test's captured stdout; a later case must not log to it
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    with compiled_programs() as compiled, pytest.raises(SystemExit) as e:
        main([a.format_map(paths) for a in argv])
    out, err = capsys.readouterr()
    check(dirs, paths, cwd, e.value.code, out, err, fragment)
    assert not compiled, f"compiled before rejecting: {compiled}"


@pytest.mark.parametrize("argv, fragment", [c for c in CASES if c.id in SUBPROCESS])
def test_console_script_prints_no_traceback(argv, fragment, dirs, tmp_path):
    paths, cwd = place(dirs, tmp_path)
    exe = os.path.join(os.path.dirname(sys.executable), "purejaxrl")
    p = subprocess.run([exe, *[a.format_map(paths) for a in argv]], capture_output=True, text=True, cwd=cwd,
                       timeout=300)
    check(dirs, paths, cwd, p.returncode, p.stdout, p.stderr, fragment)
