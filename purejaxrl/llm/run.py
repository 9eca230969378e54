"""Host loop for ``purejaxrl llm {sft,rl,pref}``: the same run-directory contract as RL training
(``config.yaml``, ``metrics.jsonl``/``.csv``, ``checkpoints/``, ``summary.json``)."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from purejaxrl import evalkeys
from purejaxrl.checkpoint import Checkpointer
from purejaxrl.config import CONF_DIR, ConfigError, _load_yaml, _type_error, dump_yaml, raise_errors, resume_errors
from purejaxrl.llm import learned as LN
from purejaxrl.llm import losses as L
from purejaxrl.llm import rl_losses as R
from purejaxrl.llm import trainer as T
from purejaxrl.llm.model import ModelConfig, init_params, num_params
from purejaxrl.llm.tasks import TASKS, VOCAB, make_task
from purejaxrl.logging import MetricsLogger, NullLogger
from purejaxrl.sharding import Placement, is_main_process, make_mesh, scale_summary

MODES = ("sft", "rl", "pref")
IDENTITY = ("mode", "task", "model", "loss", "reward", "anchor", "seed", "num_prompts", "num_generations", "batch_size",
            "eval_seed", "eval_prompts",
            # every other setting that changes the trajectory (a resume with another value is refused)
            "sft_target", "lr", "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon",
            "num_iterations", "temperature", "top_k", "top_p", "min_p",
            "mask_truncated_completions", "steps_per_generation", "gradient_accumulation_steps", "reward_funcs",
            "reward_weights", "curriculum_pool",
            "curriculum_sigma", "policy_gradient", "num_candidates", "dataset_size", "noise", "pref_temperature",
            "round_length", "data_seed", "init_from")
# settings added after runs were recorded, at the values those runs had: an older config or checkpoint
# without them compares equal to one that sets them so (a resume or a study's reuse is not refused)
LATER_DEFAULTS = {"top_p": 1.0, "min_p": 0.0, "mask_truncated_completions": False, "steps_per_generation": None,
                  "gradient_accumulation_steps": 1, "reward_funcs": ["verifier"], "reward_weights": None,
                  "sft_target": "reference",
                  # AdamW's moments: runs recorded before these settings used b2 = 0.99 (TRL's default is 0.999)
                  "adam_beta1": 0.9, "adam_beta2": 0.99, "adam_epsilon": 1e-8}
LATER_LOSS_DEFAULTS = {"importance_sampling_level": "token", "pairs": "best_worst"}


def with_later_defaults(cfg: dict) -> dict:
    """``cfg`` (a saved or a new llm config) with the later settings filled in at their old values and
    ``data_seed`` resolved, so that configs of the same run compare equal across versions."""
    out = {**LATER_DEFAULTS, **cfg, "data_seed": data_seed(cfg) if "seed" in cfg else cfg.get("data_seed")}
    if isinstance(out.get("loss"), dict):
        name, fill = out["loss"].get("name"), {}
        if name == "dpo":
            fill["pairs"] = LATER_LOSS_DEFAULTS["pairs"]
        if name in R.REGISTRY and "importance_sampling_level" in R.REGISTRY[name].options:
            fill["importance_sampling_level"] = LATER_LOSS_DEFAULTS["importance_sampling_level"]
        out["loss"] = {**fill, **out["loss"]}
    return out


LENGTH_DEPENDENT = ("epo",)  # losses whose schedule reads i / iterations: their iterations are part of the identity
MUST_BE_FINITE = ("loss", "grad_norm")  # a non-finite loss or gradient stops the run before the update is kept
# (the last checkpoint is kept)


LLM_CONF = CONF_DIR / "llm"
GROUPS = ("model", "task", "loss")
MODEL_KEYS = ("d_model", "n_layers", "n_heads", "d_mlp", "rope_base")  # vocab_size and max_len come from the task
POSITIVE = ("iterations", "batch_size", "num_prompts", "num_generations", "num_iterations", "num_candidates",
            "gradient_accumulation_steps",
            "dataset_size", "eval_prompts", "eval_every", "log_every", "checkpoint_every")


def validate_llm(cfg: dict) -> None:
    """Raise :class:`ConfigError` listing every problem of an llm config (one line for one problem);
    keys that are absent are left to their defaults."""
    errs = []
    defaults = _load_yaml(LLM_CONF / "run" / "default.yaml")
    defaults.pop("hydra", None)
    for k in sorted(set(cfg) - set(defaults) - set(GROUPS) - {"hydra", "mesh", "distributed"}, key=str):
        errs.append(f"{k} is not an llm setting; valid: {', '.join(sorted([*defaults, *GROUPS, 'mesh', 'distributed']))}")
    for k, v in cfg.items():
        if k not in defaults or defaults[k] is None or k == "resume":  # resume: false, true or auto
            continue
        if k == "max_grad_norm" and v is None:  # null (or 0): no clipping, as TRL reads it
            continue
        e = _type_error(k, v, defaults[k]) or (f"{k}=null must be set (default {defaults[k]!r})" if v is None else None)
        if e:
            errs.append(e)
    if cfg.get("data_seed") is not None and (not isinstance(cfg["data_seed"], int) or isinstance(cfg["data_seed"], bool)):
        errs.append(f"data_seed={cfg['data_seed']!r} must be an integer, or null (derived from seed: 12345 + seed)")
    if errs:  # the checks below compare values, which needs the right types
        raise_errors(errs)
    if cfg.get("mode") not in MODES:
        errs.append(f"mode={cfg.get('mode')!r}; run purejaxrl llm sft|rl|pref")
    for k in POSITIVE:
        if k in cfg and cfg[k] < 1:
            errs.append(f"{k}={cfg[k]!r} must be an integer >= 1")
    if cfg.get("top_k", 0) < 0:
        errs.append(f"top_k={cfg['top_k']!r} must be >= 0 (0 = off)")
    if not 0 < cfg.get("top_p", 1.0) <= 1:
        errs.append(f"top_p={cfg['top_p']!r} must be in (0, 1] (1 = off)")
    if not 0 <= cfg.get("min_p", 0.0) < 1:
        errs.append(f"min_p={cfg['min_p']!r} must be in [0, 1) (0 = off)")
    errs += _reward_func_errors(cfg)
    if cfg.get("sft_target", "reference") not in ("reference", "format"):
        errs.append(f"sft_target={cfg['sft_target']!r}; valid: reference, format")
    elif cfg.get("sft_target") == "format" and isinstance(cfg.get("task"), dict) and \
            not getattr(TASKS.get(cfg["task"].get("name"), object), "has_format", False):
        errs.append(f"sft_target=format: task {cfg['task'].get('name')} has no answer format to train on; "
                    f"tasks with one: {', '.join(k for k, v in TASKS.items() if getattr(v, 'has_format', False))}")
    spg = cfg.get("steps_per_generation")
    if spg is not None and (not isinstance(spg, int) or isinstance(spg, bool) or spg < 1):
        errs.append(f"steps_per_generation={spg!r} must be null (= gradient_accumulation_steps) or an integer >= 1")
    elif cfg.get("mode") == "rl" and not any(e.startswith(("gradient_acc", "num_prompts")) for e in errs):
        A = cfg.get("gradient_accumulation_steps", 1)
        S = spg or A
        lc = cfg.get("loss") or {}
        if S % A:
            errs.append(f"steps_per_generation={S} must be a multiple of gradient_accumulation_steps={A} "
                        f"(as TRL: {A} microbatches per optimiser step)")
        elif cfg.get("num_prompts", 32) % S:
            errs.append(f"num_prompts={cfg.get('num_prompts', 32)} must be divisible by steps_per_generation={S}: "
                        "microbatches hold whole prompt groups")
        if S > 1 and lc.get("scale_rewards") == "batch":
            errs.append("loss.scale_rewards=batch with steps_per_generation > 1: the std would be each microbatch's, "
                        "not the generated batch's; use scale_rewards=group or none")
        batchwide = {"epo": "EPO's entropy band", "fg_expo": "FG-ExPO's accuracy"}.get(lc.get("name"))
        if cfg.get("reward", "binary") != "binary" and lc.get("loss_type") == "grpo":
            batchwide = batchwide or "the likelihood reward's mean length (loss_type=grpo)"
        if A > 1 and batchwide:
            errs.append(f"gradient_accumulation_steps={A} with loss={lc.get('name')}: {batchwide} is a statistic of the "
                        "whole step, which microbatches would each compute on their own (not the step's gradient); "
                        "use gradient_accumulation_steps=1")
    for k in ("temperature", "curriculum_sigma", "pref_temperature"):
        if k in cfg and not cfg[k] > 0:
            errs.append(f"{k}={cfg[k]!r} must be > 0")
    for k in ("lr", "weight_decay", "max_grad_norm"):
        if cfg.get(k) is not None and cfg[k] < 0:
            errs.append(f"{k}={cfg[k]!r} must be >= 0")
    for k in ("adam_beta1", "adam_beta2"):
        if k in cfg and not (isinstance(cfg[k], (int, float)) and not isinstance(cfg[k], bool) and 0 <= cfg[k] < 1):
            errs.append(f"{k}={cfg[k]!r} must be a number in [0, 1) (TRL's defaults: adam_beta1=0.9, adam_beta2=0.999)")
    if "adam_epsilon" in cfg and not (isinstance(cfg["adam_epsilon"], (int, float))
                                      and not isinstance(cfg["adam_epsilon"], bool) and cfg["adam_epsilon"] > 0):
        errs.append(f"adam_epsilon={cfg['adam_epsilon']!r} must be a number > 0 (e.g. 1e-8)")
    loss_cfg = cfg.get("loss") or {}
    loss = loss_cfg.get("name")
    if cfg.get("mode") == "rl" and loss not in R.REGISTRY:  # the registry as it is now (losses registered later count)
        errs.append(f"loss={loss!r} is not an RL loss; valid: {', '.join(R.REGISTRY)}")
    if cfg.get("mode") == "pref" and loss not in T.PREF_LOSSES:
        errs.append(f"loss={loss!r} is not a preference loss (llm pref needs one, e.g. loss=dpo); "
                    f"valid: {', '.join(T.PREF_LOSSES)}")
    loss_file = LLM_CONF / "loss" / f"{loss}.yaml"
    if isinstance(loss, str) and loss_file.exists():
        loss_keys = _load_yaml(loss_file)
        static = set(R.REGISTRY[loss].options) if loss in R.REGISTRY else {"loss_type", "pairs"} if loss == "dpo" else set()
        if loss == "learned":
            static |= set(R.LEARNED_STRUCTURE)
        for k, v in loss_cfg.items():
            if k not in loss_keys:
                errs.append(f"loss.{k} is not a {loss} setting; valid: {', '.join(sorted(loss_keys))}")
            elif k != "name" and k not in static and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                errs.append(f"loss.{k}={v!r} must be a number")
        if loss in R.REGISTRY:
            errs += R.option_errors(loss, loss_cfg)
        if loss == "dpo" and loss_cfg.get("loss_type", "sigmoid") not in L.DPO_LOSS_TYPES:
            errs.append(f"loss.loss_type={loss_cfg['loss_type']!r}; valid: {', '.join(L.DPO_LOSS_TYPES)}")
        if loss == "dpo" and loss_cfg.get("pairs", "best_worst") not in L.DPO_PAIRS:
            errs.append(f"loss.pairs={loss_cfg['pairs']!r}; valid: best_worst (the best against the worst candidate), "
                        "all (every candidate pair, ties left out)")
        if not any(e.startswith("loss.") for e in errs):
            errs += _loss_value_errors(loss, loss_cfg)
        if loss == "learned" and not any(e.startswith("loss.") for e in errs):
            errs += _learned_errors(cfg)
    if cfg.get("mode") == "rl" and loss in ("garl", "paft") and cfg.get("num_iterations", 1) > 1:
        errs.append(f"loss={loss} with num_iterations={cfg['num_iterations']}: its loss has no importance ratio, so every "
                    "step after the first would be off-policy without correction; use num_iterations=1")
    elif cfg.get("mode") == "rl" and loss in ("garl", "paft") and isinstance(cfg.get("steps_per_generation"), int) \
            and cfg["steps_per_generation"] > cfg.get("gradient_accumulation_steps", 1):
        errs.append(f"loss={loss} with steps_per_generation={cfg['steps_per_generation']} > gradient_accumulation_steps="
                    f"{cfg.get('gradient_accumulation_steps', 1)}: several optimiser steps per generated batch, and its "
                    "loss has no importance ratio, so every step after the first would be off-policy without correction; "
                    "use steps_per_generation = gradient_accumulation_steps (or null)")
    filtered = [f"{k}={cfg[k]}" for k, off in (("top_k", 0), ("top_p", 1.0), ("min_p", 0.0))
                if cfg.get(k) is not None and cfg[k] != off]
    if cfg.get("mode") == "rl" and loss in ("garl", "paft") and filtered:
        errs.append(f"loss={loss} with {' '.join(filtered)}: completions would come from the filtered distribution while "
                    "its P̂ and log-likelihoods are the unfiltered policy's, and its loss has no importance ratio to correct "
                    "that; sample unfiltered (top_k=0 top_p=1.0 min_p=0.0)")
    if cfg.get("mode") == "rl" and cfg.get("num_generations", 2) < 2:
        errs.append(f"num_generations={cfg['num_generations']} must be >= 2: every RL loss compares a prompt's completions")
    m = cfg.get("model") or {}
    for k, v in m.items():
        if k not in MODEL_KEYS:
            errs.append(f"model.{k} is not a model setting; valid: {', '.join(MODEL_KEYS)}")
        elif k != "rope_base" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            errs.append(f"model.{k}={v!r} must be an integer >= 1")
    if not any(e.startswith("model.") for e in errs) and m.get("d_model", 1) % max(m.get("n_heads", 1), 1):
        errs.append(f"model.d_model={m.get('d_model')} must be divisible by model.n_heads={m.get('n_heads')}")
    elif not any(e.startswith("model.") for e in errs) and "d_model" in m and (m["d_model"] // m.get("n_heads", 1)) % 2:
        h = m.get("n_heads", 1)
        errs.append(f"model.d_model={m['d_model']} / model.n_heads={h} gives heads of width {m['d_model'] // h}: the "
                    f"rotary embedding needs an even head width; use a d_model that is a multiple of {2 * h}")
    errs += _task_errors(cfg.get("task"))
    if cfg.get("anchor", "fixed") not in ("fixed", "moving"):
        errs.append(f"anchor={cfg.get('anchor')!r}; valid: fixed (π_ref), moving (the policy at the start of each round)")
    if cfg.get("reward", "binary") not in ("binary", "logprob", "prob", "mean_prob"):
        errs.append(f"reward={cfg.get('reward')!r}; valid: binary, logprob, prob, mean_prob")
    elif cfg.get("mode") == "rl" and loss in ("garl", "paft") and cfg.get("reward") == "logprob":
        errs.append(f"loss={loss} needs non-negative rewards (P̂ is a success probability), and reward=logprob is <= 0; "
                    "use reward=prob, reward=mean_prob or reward=binary")
    elif cfg.get("mode") == "rl" and cfg.get("reward", "binary") != "binary" and loss in R.REGISTRY \
            and not R.REGISTRY[loss].likelihood:
        errs.append(f"loss={loss} does not take a likelihood reward (reward={cfg['reward']}); use reward=binary or one of "
                    f"{', '.join(k for k, v in R.REGISTRY.items() if v.likelihood)}")
    if cfg.get("policy_gradient") is False and cfg.get("reward", "binary") == "binary":
        errs.append("policy_gradient=false (the SFT-only control) needs a likelihood reward: reward=logprob, prob or mean_prob")
    if cfg.get("curriculum_pool", 0) and cfg.get("curriculum_pool", 0) < cfg.get("num_prompts", 0):
        errs.append(f"curriculum_pool={cfg['curriculum_pool']} must be 0 (off) or >= num_prompts={cfg['num_prompts']}")
    if cfg.get("mode") == "pref":
        try:
            T.parse_noise(cfg.get("noise", "none"))
        except ValueError as e:
            errs.append(str(e))
        if cfg.get("dataset_size", 1) < cfg.get("batch_size", 1):
            errs.append(f"dataset_size={cfg.get('dataset_size')} must be >= batch_size={cfg.get('batch_size')}")
        if loss == "nash_mp" and cfg.get("round_length", 2) < 2:
            errs.append(f"round_length={cfg.get('round_length')}: Nash-MP needs >= 2 (two half-steps per round)")
        if (cfg.get("task") or {}).get("name") != "sort_letters":
            errs.append(f"task={(cfg.get('task') or {}).get('name')}: llm pref needs task=sort_letters "
                        "(the task with graded true rewards)")
    if cfg.get("init_from") and not Checkpointer.exists(Path(cfg["init_from"]) / "checkpoints"):
        errs.append(f"init_from={cfg['init_from']}: no checkpoint there; give the run_dir of an earlier llm run")
    errs += resume_errors(cfg, "llm run")
    raise_errors(errs)


def _reward_func_errors(cfg: dict) -> list[str]:
    """``reward_funcs`` resolve (import) and ``reward_weights`` match them, before any compile."""
    funcs, weights = cfg.get("reward_funcs", ["verifier"]), cfg.get("reward_weights")
    if not isinstance(funcs, (list, tuple)) or not funcs or not all(isinstance(f, str) for f in funcs):
        return [f"reward_funcs={funcs!r} must be a non-empty list of verifier or module:function names"]
    errs = []
    for f in funcs:
        if f != "verifier":
            try:
                T.resolve_reward_func(f)
            except (ImportError, ValueError) as e:
                errs.append(f"reward_funcs: {e}" if isinstance(e, ValueError) else
                            f"reward_funcs: {f!r} cannot be imported ({e}); give module:function of an installed module")
    if len(set(funcs)) != len(funcs):
        errs.append(f"reward_funcs={list(funcs)} names a function twice; give each once (use reward_weights to weight it)")
    if weights is not None:
        if not isinstance(weights, (list, tuple)) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                             for w in weights):
            errs.append(f"reward_weights={weights!r} must be null or a list of numbers, one per reward function")
        elif len(weights) != len(funcs):
            errs.append(f"reward_weights has {len(weights)} values for {len(funcs)} reward_funcs ({', '.join(funcs)}); "
                        "give one weight per function")
    if list(funcs) != ["verifier"] and cfg.get("reward", "binary") != "binary":
        errs.append(f"reward_funcs with reward={cfg['reward']}: a likelihood reward replaces the reward functions; "
                    "use reward=binary with reward_funcs, or reward_funcs=[verifier]")
    return errs


def _learned_errors(cfg: dict) -> list[str]:
    """``loss=learned``: its structure from ``loss.path`` or from ``loss.init`` (not both), readable
    files, and a drift only where it can act (more than one optimiser step per generated batch)."""
    c = cfg["loss"]
    errs = []
    structure = [k for k in ("init", "hidden", "temporal", "q", "p_floor") if c.get(k) is not None]
    if c.get("path") is not None:
        if not isinstance(c["path"], str):
            return [f"loss.path={c['path']!r} must be a directory"]
        if structure:
            errs.append(f"loss.path={c['path']} holds the objective's structure; leave {', '.join('loss.' + k for k in structure)} "
                        "unset (they describe an objective built from loss.init)")
        try:
            spec, _ = LN.load(c["path"], 1)
        except ConfigError as e:
            return errs + [str(e)]
    else:
        inits = [i for v in LN.INITS.values() for i in v]
        if c.get("init") is not None and c["init"] not in inits:
            return [f"loss.init={c['init']!r}; valid: {', '.join(inits)} (or loss.path=DIR of a saved objective)"]
        if c.get("hidden") is not None and (not isinstance(c["hidden"], int) or isinstance(c["hidden"], bool)
                                            or c["hidden"] < 1):
            errs.append(f"loss.hidden={c['hidden']!r} must be an integer >= 1")
        if c.get("temporal") is not None and not isinstance(c["temporal"], bool):
            errs.append(f"loss.temporal={c['temporal']!r} must be true or false")
        if errs:
            return errs
        spec = LN.make_spec(c.get("init") or "dr_grpo")
    if spec["kind"] == "drift":
        if c.get("beta"):
            errs.append(f"loss.beta={c['beta']}: the drift family has no KL term; set loss.beta=0 (or use the weight family)")
        if c.get("epsilon_high") is not None and c.get("epsilon") is not None and c["epsilon_high"] != c["epsilon"]:
            errs.append(f"loss.epsilon_high={c['epsilon_high']}: the drift family starts from the symmetric clip "
                        f"loss.epsilon={c['epsilon']}; set loss.epsilon_high to the same value")
    if c.get("path") is None and c.get("q") is not None and spec["init"] not in ("garl", "paft"):
        errs.append(f"loss.q={c['q']} applies to loss.init=garl or paft, not {spec['init']}")
    steps = cfg.get("num_iterations", 1) * max(1, (cfg.get("steps_per_generation") or 1) //
                                                 max(1, cfg.get("gradient_accumulation_steps", 1)))
    if spec["kind"] == "drift" and steps < 2:
        errs.append("loss=learned with a drift objective and one optimiser step per generated batch: the drift is 0 at "
                    "ratio 1, so it would train as GRPO; set num_iterations >= 2 (or steps_per_generation above "
                    "gradient_accumulation_steps)")
    return errs


def _loss_value_errors(loss: str, c: dict) -> list[str]:
    """Ranges of the loss settings (a wrong value must not reach the compiled code as a NaN)."""
    c = {k: v for k, v in c.items() if v is not None}  # unset (null) settings take their defaults
    errs = []
    for k in ("beta", "epsilon", "epsilon_high", "entropy_coef", "smooth_coef", "early_smooth_coef", "sharpness", "rho",
              "kappa_low"):
        if k in c and c[k] < 0:
            errs.append(f"loss.{k}={c[k]!r} must be >= 0")
    for k in ("p_floor", "tau", "beta_r", "eta"):
        if k in c and not c[k] > 0:
            errs.append(f"loss.{k}={c[k]!r} must be > 0")
    for k in ("q", "phase_boundary", "midpoint"):
        if k in c and not 0 <= c[k] <= 1:
            errs.append(f"loss.{k}={c[k]!r} must be in [0, 1]")
    if c.get("kappa_low", 0) > c.get("kappa_high", float("inf")):
        errs.append(f"loss.kappa_low={c['kappa_low']} must be <= loss.kappa_high={c['kappa_high']}")
    if loss == "dpo":
        if not c.get("beta", 1.0) > 0:
            errs.append(f"loss.beta={c['beta']!r} must be > 0 for DPO")
        if not 0 <= c.get("label_smoothing", 0.0) < 0.5:
            errs.append(f"loss.label_smoothing={c['label_smoothing']!r} must be in [0, 0.5)")
        elif c.get("label_smoothing", 0.0) > 0 and c.get("loss_type", "sigmoid") not in ("sigmoid", "robust"):
            errs.append(f"loss.label_smoothing={c['label_smoothing']} applies to loss.loss_type=sigmoid (conservative "
                        f"DPO) or robust (rDPO's flip rate) only, not {c['loss_type']}")
    return errs


def data_seed(cfg: dict) -> int:
    """The seed of the offline preference set (and the rl curriculum's pool): ``data_seed``, or when
    it is null (the default) ``12345 + seed``, so every seed has its own data and seed 0 keeps 12345."""
    return 12345 + cfg.get("seed", 0) if cfg.get("data_seed") is None else cfg["data_seed"]


def _task_errors(task_cfg) -> list[str]:
    """Build the task (cheap: no compilation) to check its name and ``task.kwargs``."""
    if not isinstance(task_cfg, dict) or not isinstance(task_cfg.get("name"), str):
        return [f"task={task_cfg!r} must name a task, e.g. task=addition; valid: {', '.join(TASKS)}"]
    name, kwargs = task_cfg["name"], task_cfg.get("kwargs") or {}
    if name not in TASKS:
        return [f"task.name={name!r} is unknown; valid: {', '.join(TASKS)}"]
    if not isinstance(kwargs, dict):
        return [f"task.kwargs={kwargs!r} must be a mapping of task parameters, e.g. task.kwargs.digits=2"]
    params = [p for p in inspect.signature(TASKS[name]).parameters]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        return [f"task.kwargs {unknown} are not parameters of task {name}; valid: {', '.join(params) or '(none)'}"]
    try:
        make_task(name, **kwargs)
    except (TypeError, ValueError) as e:
        return [f"task.kwargs {kwargs} do not fit task {name}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"]
    return []


def _load_params(run_dir: str, template):
    ck = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        return ck.restore_subtree("params", template)
    finally:
        ck.close()


def with_defaults(cfg: dict) -> dict:
    """``cfg`` with every absent setting at its default (``conf/llm/run/default.yaml``, the loss's
    own ``conf/llm/loss/<name>.yaml``, the ``small`` model), as the CLI composes it — so that
    ``run_llm`` called from Python with a partial config runs what the command line would."""
    defaults = _load_yaml(LLM_CONF / "run" / "default.yaml")
    defaults.pop("hydra", None)
    out = {**defaults, **cfg}
    out.setdefault("model", _load_yaml(LLM_CONF / "model" / "small.yaml"))
    out.setdefault("task", _load_yaml(LLM_CONF / "task" / "addition.yaml"))
    loss = out.get("loss") or {"name": "grpo"}
    loss_file = LLM_CONF / "loss" / f"{loss.get('name')}.yaml"
    if isinstance(loss, dict) and isinstance(loss.get("name"), str) and loss_file.exists():
        out["loss"] = {**_load_yaml(loss_file), **loss}
    return out


@dataclass
class Program:
    """What one llm run compiles: ``init_state(params)`` (the run's state around its starting model),
    ``fn(state, key, i, hp) -> (state, metrics)`` (one iteration), the traced hyperparameters ``hp`` (a
    learned objective's parameters under ``hp["learned"]``), the sampled tokens per iteration and,
    for ``loss=learned``, the objective's structure."""

    init_state: Callable
    fn: Callable
    hp: dict
    tokens_per_iteration: int
    learned_spec: dict | None = None


def build_program(cfg: dict, task, train_task, mcfg: ModelConfig, key: jax.Array) -> Program:
    """The iteration of ``cfg``'s mode and loss (``key``: the run's, from its seed; a learned objective
    built from ``loss.init`` draws its learned layer from it)."""
    mode, loss_cfg = cfg["mode"], dict(cfg.get("loss") or {})
    lr = cfg["lr"]
    clip = optax.clip_by_global_norm(cfg["max_grad_norm"]) if cfg.get("max_grad_norm") else optax.identity()
    opt = optax.chain(clip, optax.adamw(lr, b1=cfg["adam_beta1"], b2=cfg["adam_beta2"],
                                        eps=cfg["adam_epsilon"], weight_decay=cfg["weight_decay"]))
    learned_params, spec = None, None
    if mode == "rl" and loss_cfg["name"] == "learned":  # structure static, parameters traced (hp["learned"])
        spec, learned_params = LN.from_config(loss_cfg, task.max_new, jax.random.fold_in(key, 10**6))
        loss_opts = LN.options(spec)
        hp = {k: v for k, v in loss_cfg.items() if k not in R.LEARNED_STRUCTURE and k != "name" and v is not None}
    elif mode == "rl":
        hp, loss_opts = R.split_config(loss_cfg)
    else:
        loss_opts = {k: v for k, v in loss_cfg.items() if k in ("loss_type", "pairs")}
        hp = {k: v for k, v in loss_cfg.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    hp = {k: jnp.float32(v) for k, v in hp.items()}
    if learned_params is not None:
        hp["learned"] = learned_params
    extra_state = {}

    if mode == "sft":
        step = T.make_sft_step(train_task, mcfg, cfg["batch_size"], opt, cfg.get("sft_target", "reference"))
        fn = lambda s, k, i, hp: _wrap(step(s["params"], s["opt_state"], k, hp), s)  # noqa: E731
        tokens_per_it = 0
    elif mode == "rl":
        settings = T.RLSettings(cfg["num_prompts"], cfg["num_generations"], cfg["num_iterations"], cfg["temperature"],
                                cfg["top_k"], loss_cfg["name"], cfg.get("reward", "binary"),
                                cfg.get("curriculum_pool", 0), cfg.get("curriculum_sigma", 0.2),
                                loss_options=tuple(sorted(loss_opts.items())),
                                policy_gradient=cfg.get("policy_gradient", True), data_seed=data_seed(cfg),
                                top_p=float(cfg.get("top_p", 1.0)), min_p=float(cfg.get("min_p", 0.0)),
                                mask_truncated_completions=bool(cfg.get("mask_truncated_completions", False)),
                                steps_per_generation=cfg.get("steps_per_generation") or 0,
                                gradient_accumulation_steps=cfg.get("gradient_accumulation_steps", 1),
                                reward_funcs=tuple(cfg.get("reward_funcs") or ("verifier",)),
                                reward_weights=tuple(float(w) for w in (cfg.get("reward_weights") or ())))
        if settings.curriculum_pool:
            extra_state["p_hat"] = jnp.full((settings.curriculum_pool,), 0.5)
        it = T.make_rl_iteration(train_task, mcfg, settings, {"use_ref": loss_cfg.get("beta", 0.0) > 0}, opt)

        def fn(s, k, i, hp):
            p, o, m, p_hat = it(s["params"], s["opt_state"], s["ref_params"], k, hp, s["running_entropy"], s.get("p_hat"),
                                progress=i / cfg["iterations"])
            re = s["running_entropy"]
            if "entropy" in m:  # the first measurement starts the running mean; an iteration without one leaves it
                re = jnp.where(jnp.isnan(m["entropy"]), re,
                               jnp.where(jnp.isnan(re), m["entropy"], 0.9 * re + 0.1 * m["entropy"]))
            out = {**s, "params": p, "opt_state": o, "running_entropy": re}
            if p_hat is not None:
                out["p_hat"] = p_hat
            return out, m

        tokens_per_it = cfg["num_prompts"] * cfg["num_generations"] * task.max_new
    elif loss_cfg["name"] == "nash_mp":
        step = T.make_nash_mp_step(train_task, mcfg, cfg["batch_size"], cfg["num_candidates"], opt,
                                   pref_temperature=cfg.get("pref_temperature", 0.1))
        extra_state["anchor_params"] = extra_state["opponent_params"] = None  # π_k, then the midpoint: copies of params

        def fn(s, k, i, hp):
            out = step(s["params"], s["opt_state"], s["ref_params"], s["anchor_params"], s["opponent_params"], k, hp)
            return _wrap(out, s)

        tokens_per_it = 2 * cfg["batch_size"] * cfg["num_candidates"] * task.max_new
    elif loss_cfg["name"] == "sppo":
        step = T.make_sppo_step(train_task, mcfg, cfg["batch_size"], cfg["num_candidates"], opt,
                                pref_temperature=cfg.get("pref_temperature", 0.1))
        fn = lambda s, k, i, hp: _wrap(step(s["params"], s["opt_state"], s["ref_params"], k, hp), s)  # noqa: E731
        tokens_per_it = cfg["batch_size"] * cfg["num_candidates"] * task.max_new
    else:
        step = T.make_pref_step(train_task, mcfg, loss_cfg["name"], cfg["batch_size"], cfg["num_candidates"],
                                T.parse_noise(cfg["noise"]), cfg["dataset_size"], opt, loss_opts, data_seed(cfg))
        fn = lambda s, k, i, hp: _wrap(step(s["params"], s["opt_state"], s["ref_params"], k, hp), s)  # noqa: E731
        tokens_per_it = 0

    def init_state(params):
        state = {"params": params, "opt_state": opt.init(params), "ref_params": jax.tree.map(jnp.copy, params),
                 "running_entropy": jnp.float32(jnp.nan)}  # ref_params: a separate buffer (the state is donated)
        for k, v in extra_state.items():
            state[k] = jax.tree.map(jnp.copy, params) if v is None else v
        return state

    return Program(init_state, fn, hp, tokens_per_it, spec)


def run_llm(cfg: dict, run_dir: str | Path | None = None, progress: bool | None = None,
            overrides: list[str] | None = None) -> dict:
    from purejaxrl.experiment import prepare_run

    cfg, run_dir, ckpt_dir, resuming = prepare_run(with_defaults(cfg), run_dir, validate_llm, "outputs/llm")

    task = make_task(cfg["task"]["name"], **(cfg["task"].get("kwargs") or {}))
    mcfg = ModelConfig(vocab_size=len(VOCAB), max_len=task.prompt_len + task.max_new, **cfg["model"])
    mode, loss_cfg = cfg["mode"], dict(cfg.get("loss") or {})
    # data parallel: the prompt axis of every training batch split over the mesh, the model replicated
    per_step, name = (cfg["num_prompts"], "num_prompts") if mode == "rl" else (cfg["batch_size"], "batch_size")
    mesh = make_mesh(cfg, per_step, f"prompts per step ({name})", (name, per_step, 1, 1))
    place, main = Placement(mesh), is_main_process()
    train_task = ShardedTask(task, place.constrain_runs) if mesh is not None else task
    key = jax.random.PRNGKey(cfg["seed"])
    params = init_params(jax.random.fold_in(key, 0), mcfg)
    if cfg.get("init_from"):
        params = _load_params(cfg["init_from"], params)
    prog = build_program(cfg, task, train_task, mcfg, key)
    state, fn, hp, tokens_per_it = prog.init_state(params), prog.fn, prog.hp, prog.tokens_per_iteration
    spec, learned_params = prog.learned_spec, hp.get("learned")

    # held-out prompts drawn per seed (shared by every loss on it), in three draws: the tests during
    # training (progress, logged as eval_*), test (the summary's test_*) and validation (val_*, for choosing)
    eval_base = evalkeys.for_seed(cfg["seed"])
    evals = {name: jax.jit(T.make_eval(task, mcfg, cfg["eval_prompts"], evalkeys.stream(eval_base, name, cfg.get("eval_seed", 0))))
             for name in ("progress", "test", "validation")}
    ckpt = Checkpointer(ckpt_dir)
    # a later setting at its old value is left out, so checkpoints written before it existed still resume
    identity = {k: cfg.get(k) for k in IDENTITY if not (k in LATER_DEFAULTS and cfg.get(k) == LATER_DEFAULTS[k])}
    identity["data_seed"] = data_seed(cfg)  # the seed it resolves to (null: from seed), so the same data compares equal
    if isinstance(identity.get("loss"), dict):
        identity["loss"] = {k: v for k, v in identity["loss"].items()
                            if not (k in LATER_LOSS_DEFAULTS and v == LATER_LOSS_DEFAULTS[k])}
    if learned_params is not None:  # the parameters themselves (a resume with another file at loss.path is refused)
        identity["learned_objective"] = {**spec, "params_sha256": LN.digest(learned_params)}
    if (cfg.get("loss") or {}).get("name") in LENGTH_DEPENDENT or (spec is not None and spec["temporal"]):
        identity["iterations"] = cfg["iterations"]
    start = 0
    totals = RunTotals()
    state = place.replicate(state)
    if resuming:  # into the replicated layout, whatever the device count that wrote it
        state, meta = ckpt.restore(place.abstract(jax.eval_shape(lambda: state), place.replicated), identity)
        start = int(meta["update"])
        totals = RunTotals(meta.get("totals"))
        if start >= cfg["iterations"] and (run_dir / "summary.json").exists():
            ckpt.close()
            print(f"{run_dir} already completed all {cfg['iterations']} iterations; nothing to do")
            return json.loads((run_dir / "summary.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    one_run = [{"run": 0, "seed": cfg["seed"]}]
    if main:  # under jax.distributed only process 0 writes files (checkpoints: every process)
        dump_yaml(cfg, run_dir / "config.yaml")
        if overrides is not None:
            dump_yaml(overrides, run_dir / "overrides.yaml")
        if learned_params is not None:  # the objective this run trains with, loadable with loss.path
            LN.save(spec, learned_params, run_dir / "objective")
    logger = (MetricsLogger(run_dir, one_run, {"log_every": cfg["log_every"]}, resume_update=start) if main
              else NullLogger(one_run))
    trace = Trace(run_dir / "trace.csv", start) if main and mode == "rl" else None

    t0 = time.perf_counter()
    out = {"out_shardings": place.replicated} if mesh is not None else {}
    rep = place.replicate
    hp = rep(hp)
    step_c = jax.jit(fn, donate_argnums=0, **out).lower(state, rep(key), rep(jnp.int32(0)), hp).compile()
    compile_s = time.perf_counter() - t0
    iters, total = cfg["iterations"], 0.0
    last_eval: dict = {}
    diverged = None
    bar = None
    if (cfg.get("progress", True) if progress is None else progress) and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=iters, initial=start, unit="it", dynamic_ncols=True, mininterval=1.0)
    try:
        for i in range(start, iters):
            t = time.perf_counter()
            state, m = step_c(state, rep(jax.random.fold_in(key, i + 1)), rep(jnp.int32(i)), hp)
            m = place.to_host(m)
            bad = [k for k in MUST_BE_FINITE if k in m and not np.isfinite(float(m[k]))]
            if bad:  # nothing of this iteration is logged or saved
                diverged = (i + 1, bad[0])
                break
            dt = time.perf_counter() - t
            total += dt
            totals.add(i + 1, m)
            if trace is not None:
                trace.write(i + 1, m)
            row = {k: np.asarray([[float(v)]]) for k, v in m.items()}
            row["seconds"] = np.asarray([[dt]])
            if (i + 1) % cfg["eval_every"] == 0 or i + 1 == iters:
                last_eval = {f"eval_{k}": float(v) for k, v in place.to_host(evals["progress"](state["params"])).items()}
                row.update({k: np.asarray([[v]]) for k, v in last_eval.items()})
            logger.log_chunk(i, row, 1, iters)
            if bar is not None:
                bar.update(1)
                shown = {k.replace("eval_", ""): f"{v:.3f}" for k, v in list(last_eval.items())[:3]}
                bar.set_postfix(shown | {"loss": f"{float(m['loss']):.3f}"})
            state = _next_round(state, cfg, i + 1)
            if (i + 1) % cfg["checkpoint_every"] == 0 or i + 1 == iters:
                ckpt.save(i + 1, state, {"identity": identity, "update": i + 1, "totals": totals.state})
    finally:
        if trace is not None:
            trace.close()
        if bar is not None:
            bar.close()
        logger.close()
        ckpt.close()
    if diverged:
        from purejaxrl.errors import TrainingDiverged

        last = max(start, (diverged[0] - 1) // cfg["checkpoint_every"] * cfg["checkpoint_every"])
        kept = f"the last checkpoint (iteration {last}) is kept" if last else "no checkpoint was saved"
        raise TrainingDiverged(f"llm run (seed {cfg['seed']}) in {run_dir} diverged: {diverged[1]} is not finite at "
                               f"iteration {diverged[0]}; {kept}. Lower lr (or set max_grad_norm) and start a new run_dir")
    # the final model on the test and validation prompts (evaluated once, at the end)
    final = {f"{prefix}_{k}": float(v) for name, prefix in (("test", "test"), ("validation", "val"))
             for k, v in place.to_host(evals[name](state["params"])).items()}
    n_done = max(iters - start, 1)
    spi = total / n_done
    summary = {
        **final,
        "iterations": iters,
        "seconds_per_iteration": spi,
        "sampled_tokens_per_second": tokens_per_it / spi if tokens_per_it else None,
        "compile_seconds": compile_s,
        "num_params": num_params(state["params"]),
        **totals.summary(),
        "mode": mode,
        "task": task.name,
        "loss": loss_cfg.get("name"),
    }
    summary.update(scale_summary(mesh))
    if main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class RunTotals:
    """Whole-run readouts summed from every iteration (not the logged rows): per level the sampled
    completions, the successes among them and the first iteration with one; the entropy's minimum
    and the first iteration below 0.5 nats.  Saved in each checkpoint's metadata, so a resumed run
    continues them."""

    def __init__(self, state: dict | None = None):
        self.state = dict(state or {})

    def add(self, it: int, m: dict) -> None:
        st = self.state
        for k, v in m.items():
            if k.startswith("train_successes_level"):
                lv = k.removeprefix("train_successes_level")
                st[f"train_successes_level{lv}"] = st.get(f"train_successes_level{lv}", 0) + int(round(float(v)))
                st[f"train_samples_level{lv}"] = st.get(f"train_samples_level{lv}", 0) + \
                    int(round(float(m[f"train_samples_level{lv}"])))
                if float(v) > 0 and st.get(f"first_success_iteration_level{lv}") is None:
                    st[f"first_success_iteration_level{lv}"] = it
                st.setdefault(f"first_success_iteration_level{lv}", None)
        if "entropy" in m and np.isfinite(float(m["entropy"])):  # NaN: no token took part in the loss
            h = float(m["entropy"])
            st["entropy_min"] = min(st.get("entropy_min", h), h)
            if h < 0.5 and st.get("first_iteration_entropy_below_0.5") is None:
                st["first_iteration_entropy_below_0.5"] = it
            st.setdefault("first_iteration_entropy_below_0.5", None)

    def summary(self) -> dict:
        return dict(sorted(self.state.items()))


class Trace:
    """``trace.csv``: one row per iteration, whatever ``log_every`` (entropy, loss, reward, and per
    level the successes and samples); a resume keeps the rows up to its checkpoint."""

    KEYS = ("entropy", "loss", "reward", "verifier_reward")

    def __init__(self, path: Path, start: int):
        self.path, self.cols = path, None
        kept = []
        if start and path.exists():
            lines = path.read_text().splitlines()
            kept = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) <= start
                                and len(ln.split(",")) == len(lines[0].split(","))]
            self.cols = lines[0].split(",")[1:] if lines else None
        path.write_text("".join(ln + "\n" for ln in kept))
        self.f = path.open("a")

    def write(self, it: int, m: dict) -> None:
        if self.cols is None:
            self.cols = [k for k in self.KEYS if k in m] + sorted(k for k in m if k.startswith(("train_successes_level",
                                                                                             "train_samples_level")))
            self.f.write(",".join(["iteration", *self.cols]) + "\n")
        self.f.write(",".join([str(it), *(f"{float(m[k]):.6g}" if k in m else "" for k in self.cols)]) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class ShardedTask:
    """A task whose training batches ask for their prompt axis split over the mesh (inside ``jit``:
    the sampler, the reward and the loss then run data parallel, GSPMD summing the gradients)."""

    def __init__(self, task, constrain):
        self._task, self._constrain = task, constrain

    def __getattr__(self, name):
        return getattr(self._task, name)

    def sample(self, key, n: int, test: bool = False):
        return self._constrain(self._task.sample(key, n, test=test))

    def constrain(self, batch):
        """A batch built otherwise (the curriculum's draw from its pool), split the same way."""
        return self._constrain(batch)


def _next_round(state: dict, cfg: dict, done: int) -> dict:
    """Round boundaries after ``done`` iterations: SPPO's π_t and ADPO's moving anchor become the
    current policy every ``round_length`` iterations; Nash-MP's opponent becomes the midpoint half
    way through a round, and anchor and opponent become the new iterate at its end."""
    R, name = cfg.get("round_length") or 0, (cfg.get("loss") or {}).get("name")
    if cfg["mode"] != "pref" or R <= 0:
        return state
    copy = lambda: jax.tree.map(jnp.copy, state["params"])  # noqa: E731
    if name == "nash_mp":
        if done % R == R // 2:
            return {**state, "opponent_params": copy()}
        if done % R == 0:
            return {**state, "anchor_params": copy(), "opponent_params": copy()}
    elif (name == "sppo" or cfg.get("anchor", "fixed") == "moving") and done % R == 0:
        return {**state, "ref_params": copy()}
    return state


def _wrap(out, s):
    p, o, m = out
    return {**s, "params": p, "opt_state": o}, m
