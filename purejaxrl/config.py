"""Config validation and the run grid (seeds × vmapped hyperparameters).

Everything here runs before anything is compiled; each problem is reported as one line that
names the key and the fix.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from purejaxrl.errors import ConfigError  # re-exported: purejaxrl.config.ConfigError


def _conf_dir() -> Path:
    """The configs: ``purejaxrl/conf`` in an installed wheel, the repository's ``conf/`` in a source
    checkout (an editable install maps one onto the other)."""
    here = Path(__file__).resolve().parent
    return here / "conf" if (here / "conf" / "config.yaml").exists() else here.parent / "conf"


CONF_DIR = _conf_dir()

TOP_LEVEL = {
    "algo", "env", "network", "logger", "seed", "num_seeds", "chunks", "run_dir", "resume",
    "vmap", "stop_after_chunks", "compilation_cache", "hydra", "dataset", "mesh", "distributed",
}
NETWORK_KEYS = {"kind", "hidden_size", "num_layers", "layer_norm", "activation", "conv_channels", "conv_padding",
                "kernel_init", "input_scale"}
NETWORK_KINDS = {"auto", "mlp", "minatar_conv"}




def argument_parser(prog: str, description: str | None = None):
    """An ``argparse`` parser whose errors are :class:`ConfigError` (one ``error:`` line)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise ConfigError(f"{self.prog}: {message}; see {self.prog} --help")

    return Parser(prog=prog, description=description)


def _first_set(value, default):
    """``${purejaxrl_or:${run_dir},<default>}``: the value unless it is null (``oc.select`` only
    falls back for a missing key, not for ``run_dir: null``)."""
    return default if value is None or value == "" else value


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("purejaxrl_or"):
        OmegaConf.register_new_resolver("purejaxrl_or", _first_set)


register_resolvers()


def read_yaml(path: Path, fix: str = ""):
    """A YAML file's content; a file that does not parse is one :class:`ConfigError` line (+ ``fix``)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({str(e).splitlines()[0]}){'; ' + fix if fix else ''}") from e


def _load_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf  # its YAML loader reads 1e-4 as a float, as Hydra does

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def algo_defaults(name: str) -> dict:
    path = CONF_DIR / "algo" / f"{name}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in (CONF_DIR / "algo").glob("*.yaml"))
        raise ConfigError(f"algo={name!r} has no config file conf/algo/{name}.yaml; valid: {', '.join(valid)}")
    d = _load_yaml(path)
    d.pop("defaults", None)
    return d


OPTIONAL_INTS = {"total_timesteps_decay"}  # settings whose default is null


def _type_error(key: str, value: Any, default: Any) -> str | None:
    """Values must have the type of the default (ints may be given as integral floats)."""
    if default is None and key.rpartition(".")[2] in OPTIONAL_INTS and value is not None:
        default = 0
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        want = "true or false"
    elif isinstance(default, int):
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
        want = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        want = "a string"
    else:
        return None
    if ok:
        return None
    return f"{key}={value!r} has the wrong type: expected {want} (default {default!r})"


def validate(cfg: dict, check_data: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem in a resolved config (a plain dict);
    ``check_data=False`` skips reading an offline dataset (evaluation needs none)."""
    from purejaxrl.algos import REGISTRY

    errs: list[str] = []
    for k in sorted(set(cfg) - TOP_LEVEL):
        errs.append(f"unknown top-level key {k!r}; valid keys: {', '.join(sorted(TOP_LEVEL - {'hydra'}))}")
    algo = cfg.get("algo") or {}
    name = algo.get("name")
    if name not in REGISTRY:
        raise ConfigError(f"algo.name={name!r} is not a registered algorithm; valid: {', '.join(sorted(REGISTRY))}")
    defaults = algo_defaults(name)
    for k, v in algo.items():
        if k not in defaults:
            errs.append(f"algo.{k} is not a {name} setting; valid: {', '.join(sorted(defaults))}")
        else:
            e = _type_error(f"algo.{k}", v, defaults[k])
            if e:
                errs.append(e)
    cls = REGISTRY[name]
    for k in cls.HPARAMS:
        if any(e.startswith(f"algo.{k}=") for e in errs):
            continue  # already reported (wrong type)
        if not isinstance(algo.get(k), (int, float)) or isinstance(algo.get(k), bool):
            errs.append(f"algo.{k} must be a number (it is a traced hyperparameter), got {algo.get(k)!r}")
    if not errs:
        errs += cls.config_errors(algo)

    env = cfg.get("env") or {}
    if not isinstance(env.get("name"), str):
        errs.append("env.name must be an environment name, e.g. env=cartpole or env.name=CartPole-v1")
    else:
        import envs as _envs

        if env["name"] not in _envs.list_envs():
            errs.append(f"env.name={env['name']!r} is unknown; valid: {', '.join(_envs.list_envs())}")
        else:
            errs += _env_errors(env, cls, cfg.get("network") or {})
    for k in sorted(set(env) - {"name", "kwargs"}):
        errs.append(f"env.{k} is not an env setting; valid: name, kwargs")

    errs += _network_errors(cfg.get("network") or {})
    for k in sorted(set(cfg.get("dataset") or {}) - {"path"}):
        errs.append(f"dataset.{k} is not a dataset setting; valid: path")
    if getattr(cls, "NEEDS_DATASET", False) and not errs and check_data:
        import envs as _envs

        errs += cls.dataset_errors(cfg, _envs.make(env["name"], **dict(env.get("kwargs") or {})))

    for key, lo in (("num_seeds", 1), ("chunks", 1), ("seed", 0)):
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            errs.append(f"{key}={v!r} must be an integer >= {lo}")
    sac = cfg.get("stop_after_chunks")
    if sac is not None and (not isinstance(sac, int) or sac < 1):
        errs.append(f"stop_after_chunks={sac!r} must be null or an integer >= 1")
    errs += resume_errors(cfg, "run")

    errs += _vmap_errors(cfg.get("vmap") or {}, cls)
    raise_errors(errs)


RESUME = (False, True, "auto")


def resume_errors(cfg: dict, what: str) -> list[str]:
    """``resume``: ``false`` (a new run; a run directory holding one is refused), ``true`` (continue
    the run in ``run_dir``, which must hold one) or ``auto`` (continue it if there is one, else start),
    as W&B's resume="must" / "allow"."""
    r = cfg.get("resume", False)
    if r not in RESUME or isinstance(r, (int, float)) and not isinstance(r, bool):
        return [f"resume={r!r}; valid: false (a new run), true (continue the {what} in run_dir, which must hold one), "
                "auto (continue it if there is one, else start one there)"]
    if r and not cfg.get("run_dir"):
        return [f"resume={str(r).lower()} needs run_dir=PATH, the directory of the {what} to continue"]
    return []


def raise_errors(errs: list[str]) -> None:
    """One problem: one line; several: one line each."""
    if len(errs) == 1:
        raise ConfigError(f"invalid config: {errs[0]}")
    if errs:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errs))


def _env_errors(env_cfg: dict, cls, net: dict) -> list[str]:
    """Build the environment (cheap: no compilation) to check ``env.kwargs`` and that the
    algorithm can act in it."""
    import envs as _envs

    kwargs = env_cfg.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        return [f"env.kwargs={kwargs!r} must be a mapping of environment parameters, e.g. env.kwargs.max_steps_in_episode=200"]
    from envs.registry import missing_extra

    missing = missing_extra(str(env_cfg.get("name")))
    if missing:
        return [f"env.name={env_cfg['name']}: {missing}"]
    try:
        env = _envs.make(env_cfg["name"], **kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [f"env.kwargs {kwargs} do not fit {env_cfg['name']}: {msg}; fix or remove them"]
    except ImportError as e:  # an optional extra's env (ogbench_*) without the extra
        return [f"env.name={env_cfg['name']}: {e}"]
    errs = cls.env_errors(env)
    if net.get("kind") == "minatar_conv" and len(env.observation_shape) != 3:  # the conv torso needs [H, W, C]
        errs.append(f"network.kind=minatar_conv needs image observations [H, W, C]; {env_cfg['name']} has shape "
                    f"{tuple(env.observation_shape)}. Use network=auto or network=mlp")
    return errs


def _network_errors(net: dict) -> list[str]:
    from purejaxrl.networks import ACTIVATIONS, KERNEL_INITS

    errs = []
    for k in sorted(set(net) - NETWORK_KEYS):
        errs.append(f"network.{k} is not a network setting; valid: {', '.join(sorted(NETWORK_KEYS))}")
    if net.get("kind", "auto") not in NETWORK_KINDS:
        errs.append(f"network.kind={net.get('kind')!r}; valid: {', '.join(sorted(NETWORK_KINDS))}")
    choices = {"activation": ACTIVATIONS, "kernel_init": KERNEL_INITS, "conv_padding": ("SAME", "VALID")}
    for k, valid in choices.items():
        if net.get(k) is not None and net[k] not in valid:
            errs.append(f"network.{k}={net[k]!r} is unknown; valid: {', '.join(sorted(valid))}")
    for k in ("hidden_size", "num_layers", "conv_channels"):
        v, low = net.get(k), 0 if k == "num_layers" else 1  # 0 hidden layers: linear heads on the observation
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            errs.append(f"network.{k}={v!r} must be an integer >= {low} (or null for the algorithm's default)")
    if net.get("layer_norm") is not None and not isinstance(net["layer_norm"], bool):
        errs.append(f"network.layer_norm={net['layer_norm']!r} must be true or false (or null for the algorithm's default)")
    v = net.get("input_scale")
    if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0):
        errs.append(f"network.input_scale={v!r} must be a positive number")
    return errs


def _vmap_errors(vmap: dict, cls) -> list[str]:
    errs = []
    for group, entries in vmap.items():
        if group != "algo" or not isinstance(entries, dict):
            errs.append(f"vmap.{group}: only algorithm hyperparameters vmap (vmap.algo.<name>=[...])")
            continue
        for k, values in entries.items():
            if k not in cls.HPARAMS:
                errs.append(
                    f"vmap.algo.{k} cannot be vmapped (shapes and counts are static); "
                    f"vmappable: {', '.join(cls.HPARAMS)}; sweep it with -m algo.{k}=a,b instead"
                )
            elif not isinstance(values, (list, tuple)) or not values or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in values
            ):
                errs.append(f"vmap.algo.{k}={values!r} must be a non-empty list of numbers, e.g. [1e-4,3e-4]")
            else:
                errs += cls.hparam_errors(f"vmap.algo.{k}", k, values)
    return errs


def run_grid(cfg: dict, hparam_names: tuple[str, ...], axes: dict[str, list] | None = None
             ) -> tuple[list[dict], dict[str, np.ndarray], np.ndarray]:
    """All runs of one call: the product of the vmapped value lists, times ``num_seeds`` seeds.

    Returns ``(runs, hparams, seeds)``: a description per run (its seed and the vmapped values),
    a float32 array ``[num_runs]`` per hyperparameter, and the seeds ``[num_runs]``.
    Run ``(combo c, seed index j)`` uses seed ``seed + j``, so it equals a separate run with that
    seed and those values.  ``axes``: further run axes set outside ``vmap`` (the algorithm's
    :meth:`~purejaxrl.algos.base.Algorithm.grid_axes`, e.g. ``{"task": [1, 2, 3, 4, 5]}`` for
    ``env.kwargs.task=all``), outermost; traced like hyperparameters, described as ``env.<name>``
    when they have more than one value.
    """
    axes = dict(axes or {})
    vm = (cfg.get("vmap") or {}).get("algo") or {}
    names = list(vm)
    combos = list(itertools.product(*[vm[n] for n in names])) or [()]
    outer = list(itertools.product(*axes.values())) or [()]
    runs, hp_rows, seeds = [], [], []
    for ax in outer:
        ax_values = dict(zip(axes, ax))
        shown = {f"env.{k}": v for k, v in ax_values.items() if len(axes[k]) > 1}
        for combo in combos:
            for j in range(cfg["num_seeds"]):
                values = dict(zip(names, combo))
                runs.append({"run": len(runs), "seed": cfg["seed"] + j, **shown,
                             **{f"algo.{k}": v for k, v in values.items()}})
                hp_rows.append({**{k: float(values.get(k, cfg["algo"][k])) for k in hparam_names},
                                **{k: float(v) for k, v in ax_values.items()}})
                seeds.append(cfg["seed"] + j)
    hparams = {k: np.asarray([r[k] for r in hp_rows], np.float32) for k in (*hparam_names, *axes)}
    return runs, hparams, np.asarray(seeds, np.int64)


IDENTITY_KEYS = ("algo", "env", "network", "seed", "num_seeds", "vmap", "dataset")


def identity(cfg: dict) -> dict:
    """The part of a config that determines the results; a checkpoint only resumes into a config
    whose identity is the same."""
    return without_unread({k: cfg.get(k) for k in IDENTITY_KEYS if k != "dataset" or (cfg.get("dataset") or {}).get("path")})


def without_unread(ident: dict) -> dict:
    """``ident`` less the settings its algorithm never reads, so that a finished run is reused (and a
    checkpoint resumes) whatever their values.  A QARL-code run without an adversary (curriculum
    ``none`` or ``phased``) zeroes the adversary's action before the env sees it, so its force budget
    ``algo.adversary.max_force`` changes nothing: the SAC arm a budget is calibrated on is the same run
    at any budget."""
    algo = ident.get("algo") if isinstance(ident, dict) else None
    if not (isinstance(algo, dict) and algo.get("name") in ("qarl", "rarl") and isinstance(algo.get("adversary"), dict)):
        return ident
    from purejaxrl.algos.qarl import NO_ADVERSARY

    if algo.get("curriculum") not in NO_ADVERSARY:
        return ident
    return {**ident, "algo": {**algo, "adversary": {k: v for k, v in algo["adversary"].items() if k != "max_force"}}}


def first_difference(saved: Any, current: Any, prefix: str = "",
                     labels: tuple[str, str] = ("checkpoint has", "config now has")) -> str | None:
    """Dotted path and values of the first difference between two nested configs (``labels``: how
    the two sides are named in the message)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in sorted(set(saved) | set(current), key=str):
            d = first_difference(saved.get(k, "<absent>"), current.get(k, "<absent>"), f"{prefix}{k}.", labels)
            if d:
                return d
        return None
    if saved != current and not (_num(saved) and _num(current) and float(saved) == float(current)):
        return f"{prefix.rstrip('.')}: {labels[0]} {saved!r}, {labels[1]} {current!r}"
    return None


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


ALGO_ALIASES = {"adversary.": "algo.adversary.", "qarl.": "algo.", "qgf.": "algo.", "sac.": "algo.", "fql.": "algo."}


def rewrite_overrides(args) -> list[str]:
    """``vmap.algo.lr=[...]`` adds a key to the empty ``vmap`` node: Hydra needs ``+`` for that;
    ``adversary.max_force=1`` and ``qarl.curriculum=linear`` (``qgf.``, ``sac.``, ``fql.``) are
    short for ``algo.adversary.max_force=1`` and ``algo.curriculum=linear``."""
    out = []
    for a in args:
        for short, full in ALGO_ALIASES.items():
            if a.startswith(short) and "=" in a:
                a = full + a[len(short):]
                break
        out.append("+" + a if a.startswith("vmap.") and "=" in a else a)
    return out


def compose(overrides=(), config_dir: Path | None = None, config_name: str = "config") -> dict:
    """The resolved training config for Hydra-style ``overrides`` (for notebooks, scripts, tests)::

        cfg = compose(["algo=ppo", "env=acrobot", "num_seeds=2"])
        summary = purejaxrl.experiment.run(cfg, "outputs/my_run")

    ``config_dir=CONF_DIR / "llm"`` composes an ``llm`` config (with ``mode=sft|rl|pref``);
    ``config_name="meta"`` a ``purejaxrl meta`` config."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()  # an earlier in-process compose may have left it initialised
    with initialize_config_dir(str(config_dir or CONF_DIR), version_base="1.3"):
        cfg = _compose(config_name, overrides=rewrite_overrides(overrides))
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out


def dump_yaml(cfg, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
