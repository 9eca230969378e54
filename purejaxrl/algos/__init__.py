"""Algorithms.  Each module defines one :class:`~purejaxrl.algos.base.Algorithm` subclass built
from the shared pieces (``returns``, ``networks``, ``schedules``, ``envs`` wrappers); the
training loop around them (``purejaxrl.trainer``) is written once."""

from purejaxrl.algos.base import Algorithm
from purejaxrl.algos.ppo import PPO
from purejaxrl.algos.pqn import PQN

REGISTRY: dict[str, type[Algorithm]] = {"pqn": PQN, "ppo": PPO}


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in REGISTRY:
        raise ValueError(f"Unknown algorithm {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def register(name: str, cls: type[Algorithm]) -> None:
    """Make ``algo=<name>`` available (add ``conf/algo/<name>.yaml`` with its defaults too)."""
    REGISTRY[name] = cls


__all__ = ["Algorithm", "PPO", "PQN", "REGISTRY", "get_algorithm", "register"]
