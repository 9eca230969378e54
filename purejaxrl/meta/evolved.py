"""What ``purejaxrl meta`` evolves: PPO's learned objective (``algo=ppo``, LPO / TA-LPO) or an LPG
update rule (``algo=lpg``, LPG / TA-LPG).

Both are a pytree of parameters the inner algorithm reads as a traced hyperparameter (``hp_key``),
so one compiled program trains a whole population; this adapter is the only place the ES loop tells
them apart: how the algorithm is built around a candidate, and how a candidate is saved (a directory
``algo.objective=learned algo.objective_path=DIR`` or ``algo.update_rule=learned
algo.update_rule_path=DIR`` loads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from purejaxrl import objectives, update_rules

ALGOS = ("ppo", "lpg")
RULES = ("lpg", "ta_lpg")  # the update rules algo=lpg evolves


@dataclass(frozen=True)
class Evolved:
    kind: str  # lpo / ta_lpo (objectives) or lpg / ta_lpg (update rules)
    hp_key: str  # the traced hyperparameter holding a candidate's parameters
    spec: dict
    params: Any  # the starting point (the ES mean at generation 0)
    spec_file: str  # what a saved candidate's directory holds its spec in

    @property
    def is_rule(self) -> bool:
        return self.hp_key == "update_rule"

    def algo_kwargs(self) -> dict:
        """The inner algorithm's constructor arguments (the candidate's structure; its parameters are traced)."""
        if self.is_rule:
            return {"rule": update_rules.UpdateRule(self.spec, self.params)}
        return {"objective": objectives.build(self.spec, self.params)}

    def save(self, params, directory: str | Path, extra: dict | None = None) -> None:
        params = jax.device_get(params)
        if self.is_rule:
            update_rules.save_rule(update_rules.UpdateRule(self.spec, params), directory, extra)
        else:
            objectives.save_objective(objectives.build(self.spec, params), directory, extra)


def from_objective(obj: objectives.Objective) -> Evolved:
    return Evolved(obj.name, "objective", obj.spec, obj.params, objectives.SPEC_FILE)


def from_config(cfg: dict, key: jax.Array) -> Evolved:
    """The starting point of a meta run: ``objective`` (drawn from ``key``) for PPO; for LPG the rule
    ``algo.update_rule`` initialised from ``key`` (the meta run's, from its seed: each ES seed its own
    starting rule; the reference's ES mean starts at all zeros instead, evosax's default), or from
    ``algo.update_rule_seed`` where that is set."""
    if cfg["algo"]["name"] == "lpg":
        from purejaxrl.algos.lpg import rule_sizes

        name = cfg["algo"].get("update_rule")
        fixed = cfg["algo"].get("update_rule_seed")
        rule = update_rules.make_rule(name, key if fixed is None else jax.random.PRNGKey(int(fixed)),
                                      **rule_sizes(cfg["algo"]))
        return Evolved(name, "update_rule", rule.spec, rule.params, update_rules.SPEC_FILE)
    return from_objective(objectives.build(cfg["objective"], key=key))


__all__ = ["ALGOS", "Evolved", "RULES", "from_config", "from_objective"]
