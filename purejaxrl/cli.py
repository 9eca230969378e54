"""``purejaxrl`` command line: ``train`` (Hydra), ``plot``, ``eval``, ``reproduce``, ..."""

from __future__ import annotations

import sys

from purejaxrl.config import CONF_DIR, ConfigError, argument_parser, rewrite_overrides

USAGE = """usage: purejaxrl <command> [args]

commands:
  train [hydra overrides]     train (default: PQN on CartPole-v1, 4 seeds); e.g.
                              purejaxrl train algo=ppo env=minatar_breakout num_seeds=8
                              purejaxrl train vmap.algo.lr=[1e-4,3e-4,1e-3]   (one compile)
                              purejaxrl train -m algo=pqn,ppo env=cartpole,acrobot
                              purejaxrl train resume=true run_dir=PATH
  plot RUN_DIR [RUN_DIR ...]  learning curves (mean and 95% bootstrap CI over seeds) as PNG
  eval RUN_DIR [k=v ...]      greedy evaluation of the saved policy of every run; offline flow policies
                              take guidance settings, e.g. 'algo.guidance_weights=[0,0.01,0.02,0.04,0.08]'
  robustness RUN_DIR          greedy return over a mass x friction grid (DM Control envs), e.g.
                              purejaxrl robustness outputs/run --mass 0.5:1.5:11 --friction 0.5:1.5:11
  dataset NAME --out FILE     generate an offline dataset (OGBench .npz format), e.g.
                              purejaxrl dataset pointmaze_medium_navigate --episodes 1000 --out data/pm.npz
  meta [overrides]            evolve a PPO objective (LPO / TA-LPO) with evolution strategies, e.g.
                              purejaxrl meta objective=ta_lpo env=cartpole es.population=32 es.generations=200
  meta-eval META_RUN [k=v ...] the evolved objective vs PPO-clip and DPO across envs and horizons, e.g.
                              purejaxrl meta-eval outputs/meta1 env=acrobot,cartpole horizons=0.25,0.5,1,2,4
  reproduce STUDY [--tier smoke|cpu|gpu] [--seeds N] [--out DIR] [--reuse]
                              a paper's claims as verdicts with 95% CIs, computed from the runs, e.g.
                              purejaxrl reproduce pqn_cartpole --tier smoke;  purejaxrl reproduce --list
  llm {sft,rl,pref,meta} [overrides]  token-level LLM post-training on small transformers, e.g.
                              purejaxrl llm sft task=addition
                              purejaxrl llm rl task=combination_lock loss=garl loss.q=0.75
                              purejaxrl llm pref task=sort_letters loss=adpo_list noise=flip:0.2
                              purejaxrl llm meta loss.init=garl   (ES over a learned objective)
"""


def apply_runtime(argv: list[str]) -> None:
    """The command's process-wide settings (:func:`purejaxrl.configure_cpu_runtime`, and for the LLM
    commands :func:`purejaxrl.keep_heap`), in this process — and in every sweep job's process."""
    from purejaxrl import configure_cpu_runtime, keep_heap

    configure_cpu_runtime()  # process-wide settings belong to the command, not to the library
    llm = argv[:1] == ["llm"] or (argv[:1] == ["reproduce"] and any(a.startswith("llm") for a in argv[1:]))
    if llm:
        keep_heap()


def _hydra_entry(config_dir, argv: list[str], run_fn, report, config_name: str = "config") -> None:
    """Run ``run_fn(config_dict, run_dir) -> summary`` under ``@hydra.main`` with ``argv`` as
    overrides.  Config errors print one line and exit 2 (a multirun re-raises them); ``report``
    prints the summary and returns the value the Hydra sweepers optimise."""
    from pathlib import Path

    import hydra
    from omegaconf import DictConfig, OmegaConf

    if not config_dir.is_dir():
        sys.exit(f"error: config directory {config_dir} not found; install purejaxrl with pip install -e .")
    given = [a.partition("=")[2] for a in argv if a.startswith("run_dir=")]
    existed = bool(given) and Path(given[-1]).exists()

    def drop_if_new_and_empty(path: str) -> None:
        """Hydra creates the output directory before our checks; a rejected start removes it again
        (with Hydra's default ``outputs/<date>/<time>``, the empty folders above it too)."""
        p, cwd = Path(path).resolve(), Path.cwd().resolve()
        if existed:
            return
        if given:  # an explicit run_dir: only the folder itself
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
            return
        while p != cwd and cwd in p.parents and p.is_dir() and not any(p.iterdir()):
            p.rmdir()
            p = p.parent

    @hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> float | None:
        import logging

        from hydra.core.hydra_config import HydraConfig

        logging.getLogger("jax").setLevel(logging.WARNING)
        apply_runtime(["llm"] if config_dir.name == "llm" else ["train"])  # a launcher's job may be its own process
        hc = HydraConfig.get()
        container = OmegaConf.to_container(cfg, resolve=True)
        container.pop("hydra", None)
        run_dir = container.get("run_dir")
        if run_dir and hc.mode.name == "MULTIRUN":
            run_dir = f"{run_dir}/{hc.job.num}"
        run_dir = run_dir or hc.runtime.output_dir  # container keeps run_dir as given (resume=true needs one)
        from purejaxrl.experiment import TrainingDiverged

        try:
            from purejaxrl.config import raise_errors
            from purejaxrl.sharding import check_mesh_config, initialize

            raise_errors(check_mesh_config(container))
            jobs = _parallel_local_jobs(hc)
            spread = (container.get("mesh") or {}).get("devices") is not None or (container.get("distributed") or {}).get("coordinator")
            if jobs > 1 and not spread:  # parallel local jobs, each on one device (not when a job asks for a mesh)
                from purejaxrl.sharding import claim_local_device

                got = claim_local_device(jobs, hc.sweep.dir, hc.job.num)
                print(f"job {hc.job.num}: local device slot {got}", file=sys.stderr)
            initialize(container)  # jax.distributed / virtual CPU devices: before anything starts a JAX backend
            summary = run_fn(container, run_dir, list(hc.overrides.task))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            if hc.mode.name == "MULTIRUN":
                raise
            drop_if_new_and_empty(run_dir)
            sys.exit(2)
        except TrainingDiverged as e:  # one sweep point diverging does not end the sweep
            print(f"error: {e}", file=sys.stderr)
            if hc.mode.name == "MULTIRUN":
                return None
            sys.exit(3)
        from purejaxrl.sharding import is_main_process

        if not is_main_process():  # under jax.distributed, process 0 reports
            return None
        return report(summary, run_dir)

    sys.argv = [sys.argv[0]] + rewrite_overrides(argv)
    _main()


def _parallel_local_jobs(hc) -> int:
    """How many jobs a joblib multirun runs at once (1 for anything else)."""
    if hc.mode.name != "MULTIRUN" or "joblib" not in str(hc.launcher.get("_target_", "")):
        return 1
    import joblib

    return int(joblib.effective_n_jobs(hc.launcher.get("n_jobs") or 1))


def train_main(argv: list[str]) -> None:
    check_overrides(CONF_DIR, rewrite_overrides(argv))

    def run(cfg, run_dir, overrides):
        from purejaxrl.config import validate
        from purejaxrl.experiment import run as run_experiment

        validate(cfg)  # run_dir as given: resume=true without run_dir= is an error, not a new run
        return run_experiment(cfg, run_dir, overrides=overrides)

    def report(summary, run_dir):
        fr = summary["final_return"]
        print(f"final greedy return {fr['mean']} ± {fr['std']} over {len(fr['per_seed'])} run(s); "
              + (f"{summary['gradient_steps_per_second'] or 0:,.0f} gradient steps/s" if "gradient_steps" in summary
                 else f"{summary['env_steps_per_second'] or 0:,.0f} env steps/s")
              + (f"; training {summary['run_seconds']:,.0f} s, evaluation {summary['evaluation_seconds']:,.0f} s "
                 f"(+{summary['evaluation_compile_seconds']:,.0f} s compile; {summary['evaluation_episodes_per_run']} "
                 "episodes per run)" if "evaluation_seconds" in summary else "") + f"; results in {run_dir}")
        return fr["mean"]  # the Optuna sweeper maximises this

    _hydra_entry(CONF_DIR, argv, run, report)


# Hydra plugins behind extras: (override, plugin module, extra)
PLUGINS = (("launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
           ("launcher=submitit_local", "hydra_plugins.hydra_submitit_launcher", "slurm"),
           ("hydra/launcher=submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
           ("hydra/launcher=submitit_local", "hydra_plugins.hydra_submitit_launcher", "slurm"),
           ("launcher=ray", "hydra_plugins.hydra_ray_launcher", "ray"),
           ("hydra/launcher=ray", "hydra_plugins.hydra_ray_launcher", "ray"),
           ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"))


def check_plugins(overrides: list[str]) -> None:
    """A launcher or sweeper whose extra is not installed: one line naming the install command."""
    import importlib.util

    from envs.errors import install_hint

    for arg in overrides:
        for want, module, extra in PLUGINS:
            if arg.lstrip("+") == want:
                try:
                    found = importlib.util.find_spec(module) is not None
                except ModuleNotFoundError:
                    found = False
                if not found:
                    raise ConfigError(f"{want} needs the '{extra}' extra: {install_hint(extra)}")


def check_overrides(config_dir, overrides: list[str], config_name: str = "config") -> None:
    """Compose the config once (cheap: nothing runs) so that an override Hydra cannot apply (an
    unknown group option or key, bad syntax) is one :class:`ConfigError` line rather than Hydra's
    multi-line report.  Command lines with flags (``-m`` sweeps, ``--cfg``) are left to Hydra, apart
    from the extras their launcher or sweeper needs."""
    check_plugins(overrides)
    if any(a.startswith("-") for a in overrides):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()  # an earlier in-process run may have left it initialised
    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            compose(config_name, overrides=[a for a in overrides if not a.lstrip("+~").startswith("hydra")])
    except MissingConfigException as e:
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        if group and e.options:
            raise ConfigError(f"{group}={name} is unknown (no {config_dir.name}/{group}/{name}.yaml); "
                              f"valid: {', '.join(e.options)}") from None
        raise ConfigError(_one_line(e)) from None
    except HydraException as e:
        cause = e.__cause__
        key = getattr(cause, "full_key", None)
        if isinstance(cause, OmegaConfBaseException) and key and "not in struct" in str(cause):
            parent = key.rpartition(".")[0]
            valid = _keys_at(config_dir, [a for a in overrides if a.lstrip("+~").partition("=")[0] != key], parent, config_name)
            where = f"a {parent} setting" if parent else "a setting"
            raise ConfigError(f"{key} is not {where}; valid: {', '.join(valid) or '(see ' + str(config_dir) + ')'}") from None
        raise ConfigError(_one_line(e)) from None


def _keys_at(config_dir, overrides: list[str], path: str, config_name: str = "config") -> list[str]:
    """The keys of the config node at dotted ``path`` (empty when it cannot be composed)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=[a for a in overrides if not a.lstrip("+~").startswith("hydra")])
    except Exception:  # noqa: BLE001 - only for the message
        return []
    node = OmegaConf.select(cfg, path) if path else cfg
    return sorted(str(k) for k in node if k != "hydra") if isinstance(node, DictConfig) else []


def _one_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    return " ".join(lines) or type(e).__name__


def meta_main(argv: list[str]) -> None:
    check_overrides(CONF_DIR, argv, "meta")

    def run(cfg, run_dir, overrides):
        from purejaxrl.meta.run import run_meta, validate_meta

        validate_meta(cfg)  # run_dir as given: resume=true without run_dir= is an error
        return run_meta(cfg, run_dir, overrides=overrides)

    def report(summary, run_dir):
        print(f"meta {summary['objective']}: best fitness {summary['best_fitness']}, mean fitness of the last generation "
              f"{summary['mean_fitness_last']}; {summary['seconds_per_generation']:.1f} s/generation; results in {run_dir}")
        return summary["mean_fitness_last"]

    _hydra_entry(CONF_DIR, argv, run, report, config_name="meta")


PREF_DEFAULT_LOSS = "dpo"


def llm_meta_main(argv: list[str]) -> None:
    """``purejaxrl llm meta [overrides]``: ES over a learned LLM objective (``conf/llm/meta.yaml``)."""
    check_overrides(CONF_DIR / "llm", argv, "meta")

    def run(cfg, run_dir, overrides):
        from purejaxrl.llm.meta import run_llm_meta, validate_llm_meta

        validate_llm_meta(cfg)
        return run_llm_meta(cfg, run_dir, overrides=overrides)

    def report(summary, run_dir):
        print(f"llm meta {summary['objective']} on {summary['task']}: held-out {summary['fitness']} of the selected mean "
              f"{summary['selected_heldout_fitness']}; {summary['seconds_per_generation']:.1f} s/generation; results in {run_dir}")
        return summary["selected_heldout_fitness"]

    _hydra_entry(CONF_DIR / "llm", argv, run, report, config_name="meta")


def llm_main(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if not argv or argv[0] not in ("sft", "rl", "pref", "meta"):
        got = f"mode {argv[0]!r} is unknown" if argv else "a mode is needed"
        raise ConfigError(f"purejaxrl llm: {got}; use purejaxrl llm sft|rl|pref|meta [overrides], "
                          "e.g. purejaxrl llm sft task=addition")
    mode, rest = argv[0], argv[1:]
    if mode == "meta":
        return llm_meta_main(rest)
    if mode == "pref" and not any(a.split("=", 1)[0].lstrip("+~") == "loss" for a in rest):
        rest = [f"loss={PREF_DEFAULT_LOSS}", *rest]  # each mode defaults to a loss of its kind (rl: grpo)
    if mode == "pref" and not any(a.split("=", 1)[0].lstrip("+~") == "task" for a in rest):
        rest = ["task=sort_letters", *rest]  # and to a task it can train on (the one with graded true rewards)
    check_overrides(CONF_DIR / "llm", [f"mode={mode}", *rest])

    def run(cfg, run_dir, overrides):
        from purejaxrl.llm.run import run_llm, validate_llm

        validate_llm(cfg)  # run_dir as given: resume=true without run_dir= is an error, not a new run
        return run_llm(cfg, run_dir, overrides=overrides)

    def report(summary, run_dir):
        shown = {k: round(v, 4) for k, v in summary.items() if k.startswith("test_")}
        print(f"{mode} {summary['task']}: {shown}; {summary['seconds_per_iteration']:.3f} s/iteration; results in {run_dir}")
        return summary.get("test_pass_at_1", summary.get("test_true_reward"))

    _hydra_entry(CONF_DIR / "llm", [f"mode={mode}", *rest], run, report)


def dataset_main(argv: list[str]) -> None:
    """``purejaxrl dataset NAME --out FILE``: generate an offline dataset locally (point maze: jitted
    and vmapped; OGBench manipulation: the ogbench package's oracles in MuJoCo)."""
    import json

    from envs.datasets import GENERATORS, DatasetError, generate

    p = argument_parser("purejaxrl dataset", "Generate an offline dataset in OGBench's .npz format.")
    p.add_argument("name", help=f"one of: {', '.join(GENERATORS)}, or from_policy (with --policy RUN_DIR)")
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.add_argument("--episodes", type=int, default=None, help="episodes (default: OGBench's count; from_policy: 100 per policy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=None,
                   help="the oracle's action noise (default: 0.5 for the point maze, OGBench's 0.1 for manipulation)")
    p.add_argument("--episode-length", type=int, default=None, help="steps per episode (default: OGBench's)")
    p.add_argument("--val-episodes", type=int, default=None,
                   help="episodes of the validation split written to OUT with -val.npz (default: episodes // 10, "
                        "as OGBench; 0: none)")
    p.add_argument("--policy", action="append", default=[], help="from_policy: a trained run's directory (repeat to mix)")
    a = p.parse_args(argv)
    if a.name == "from_policy":
        from purejaxrl.collect import collect_many

        if not a.policy:
            raise ConfigError("from_policy needs --policy RUN_DIR (a trained PPO run; repeat --policy to mix policies)")
        print(json.dumps(collect_many(a.policy, a.episodes or 100, a.out, a.seed)))
        return
    from envs.registry import missing_extra

    spec = GENERATORS.get(a.name)
    missing = missing_extra(spec.env) if spec is not None else None
    if missing:  # before the progress bar or any file
        raise ConfigError(f"purejaxrl dataset {a.name}: {missing}")
    try:
        info = generate(a.name, a.episodes, a.out, a.seed, a.noise, a.episode_length, a.val_episodes)
    except DatasetError as e:
        raise ConfigError(str(e)) from e
    print(json.dumps(info))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    apply_runtime(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    try:
        _dispatch(cmd, rest)
    except ConfigError as e:  # bad input to plot / eval: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _dispatch(cmd: str, rest: list[str]) -> None:
    if cmd == "train":
        train_main(rest)
    elif cmd == "plot":
        from purejaxrl.plotting import plot_main

        plot_main(rest)
    elif cmd == "llm":
        llm_main(rest)
    elif cmd == "meta":
        meta_main(rest)
    elif cmd == "meta-eval":
        from purejaxrl.meta.evaluate import meta_eval_main

        meta_eval_main(rest)
    elif cmd == "eval":
        from purejaxrl.evaluate import eval_main

        eval_main(rest)
    elif cmd == "robustness":
        from purejaxrl.robustness import robustness_main

        robustness_main(rest)
    elif cmd == "dataset":
        dataset_main(rest)
    elif cmd == "reproduce":
        from purejaxrl.reproduce import reproduce_main

        reproduce_main(rest)
    else:
        print(f"error: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
