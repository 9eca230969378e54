"""purejaxrl: reinforcement learning where the whole training loop is one compiled JAX program."""

__version__ = "0.1.0"


def _check_envs_module() -> None:
    """Make sure ``import envs`` gives our environments, not an unrelated package of that name."""
    import importlib

    try:
        mod = importlib.import_module("envs")
    except ImportError as e:  # pragma: no cover - only on a broken install
        raise ImportError("purejaxrl's 'envs' package is missing: reinstall with pip install -e .") from e
    if not getattr(mod, "__purejaxrl_envs__", False):
        raise ImportError(
            f"'import envs' found {getattr(mod, '__file__', mod)!r}, which is not purejaxrl's environments "
            "(an unrelated PyPI package is also called 'envs'). Uninstall it (pip uninstall envs) or "
            "put purejaxrl first on sys.path."
        )


_check_envs_module()
