"""purejaxrl: reinforcement learning where the whole training loop is one compiled JAX program."""

__version__ = "0.1.0"


def configure_cpu_runtime() -> None:
    """Async CPU dispatch off (call before the first computation creates the CPU client): our host
    loops wait for every chunk anyway, and a hang with it on is reported upstream;
    ``JAX_CPU_ENABLE_ASYNC_DISPATCH=true`` keeps it on.  The ``purejaxrl`` command calls this;
    importing the library changes no process-wide setting, so a notebook opts in by calling it."""
    import os

    import jax

    if os.environ.get("JAX_CPU_ENABLE_ASYNC_DISPATCH") is None:
        jax.config.update("jax_cpu_enable_async_dispatch", False)


# keep_heap()'s settings as glibc's environment variables (for a child process, e.g. a benchmark's reference)
KEEP_HEAP_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_ARENA_MAX": "1"}


def keep_heap_enabled() -> bool:
    """False where ``PUREJAXRL_KEEP_HEAP=0`` turns :func:`keep_heap` off."""
    import os

    return os.environ.get("PUREJAXRL_KEEP_HEAP", "1") not in ("0", "false", "False")


def keep_heap() -> None:
    """Keep freed memory in the process (glibc): no mmap for large blocks, no trimming.

    XLA:CPU allocates its scratch buffers per call; by default glibc returns them to the OS and
    the next call faults them in again (about 10^6 minor page faults per LLM train step here).
    Keeping them made the 1M-parameter transformer's train step 15-25% faster, but not the RL
    loops, whose compiles it slowed by ~1 s (benchmarks/results/cpu_runtime_flags_cpu.json): so
    only the LLM commands call it.  The cost: the process
    keeps its peak heap.  Like ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1G MALLOC_ARENA_MAX=1``
    (``KEEP_HEAP_MALLOC_ENV``);
    ``PUREJAXRL_KEEP_HEAP=0`` makes it a no-op, as it is where glibc is not the C library.
    ``purejaxrl llm`` (and ``purejaxrl reproduce`` on LLM studies) call this; importing does not.
    """
    import ctypes
    import platform

    if not keep_heap_enabled():
        return

    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # mallopt parameters from <malloc.h>
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_arena_max, 1)


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
