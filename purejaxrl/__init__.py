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


def _configure_cpu_runtime() -> None:
    """Run CPU computations without asynchronous dispatch.

    Our host loops wait for every compiled chunk before doing anything else, so async dispatch buys
    nothing; and with it on, XLA:CPU occasionally never completes a large vmapped program (the
    main thread waits on a result while every worker thread sits idle; seen here with a 4-seed PPO
    chunk, and reported upstream for async CPU dispatch).  Only effective before the first
    computation creates the CPU client; ``JAX_CPU_ENABLE_ASYNC_DISPATCH=true`` restores it.
    """
    import os

    import jax

    if os.environ.get("JAX_CPU_ENABLE_ASYNC_DISPATCH") is None:
        jax.config.update("jax_cpu_enable_async_dispatch", False)


_configure_cpu_runtime()
