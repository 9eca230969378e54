"""Algorithms.  Each module defines one :class:`~purejaxrl.algos.base.Algorithm` subclass built
from the shared pieces (``returns``, ``networks``, ``schedules``, ``envs`` wrappers); the
training loop around them (``purejaxrl.trainer``) is written once."""

from purejaxrl.algos.base import Algorithm
from purejaxrl.algos.lpg import LPG
from purejaxrl.algos.ppo import PPO
from purejaxrl.algos.pqn import PQN
from purejaxrl.algos.qarl import QARL, RARL
from purejaxrl.algos.qgf import FQL, QGF
from purejaxrl.algos.sac import SAC

REGISTRY: dict[str, type[Algorithm]] = {"pqn": PQN, "ppo": PPO, "qgf": QGF, "fql": FQL, "sac": SAC, "qarl": QARL,
                                        "rarl": RARL, "lpg": LPG}


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in REGISTRY:
        raise ValueError(f"Unknown algorithm {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def register(name: str, cls: type[Algorithm]) -> None:
    """Make ``algo=<name>`` available (add ``conf/algo/<name>.yaml`` with its defaults too)."""
    REGISTRY[name] = cls


__all__ = ["Algorithm", "FQL", "LPG", "PPO", "PQN", "QARL", "QGF", "RARL", "REGISTRY", "SAC", "get_algorithm", "register"]
