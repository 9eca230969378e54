import os

import pytest

# One persistent compilation cache for the whole session: identical programs compiled by several
# tests (and by CLI subprocesses) are compiled once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jax"))

if os.environ.get("PYTEST_XDIST_WORKER"):  # several workers share one accelerator: allocate as needed
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import purejaxrl  # noqa: E402

purejaxrl.configure_cpu_runtime()  # the command's dispatch setting (tests call the library in-process)

from purejaxrl.config import compose  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module: a worker that runs many modules
    keeps its memory bounded (two workers share a 24 GB machine); programs compiled again come from
    the persistent cache."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()

TINY = [
    "algo.total_timesteps=16384",  # 8 updates of 32 envs x 64 steps
    "algo.num_evals=4",
    "algo.num_eval_envs=4",
    "logger.progress=false",
]


@pytest.fixture
def tiny_cfg():
    def make(*overrides):
        return compose(TINY + list(overrides))

    return make
