"""The package as researchers install it: no process-wide side effects on import, a missing extra is
one line naming the install command, one version, configs found from the package, no import circles."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from purejaxrl.config import ConfigError, compose, validate

ROOT = Path(__file__).resolve().parent.parent


def test_importing_changes_no_process_wide_setting():
    code = ("import purejaxrl, purejaxrl.llm, purejaxrl.experiment, jax\n"
            "called = []\n"
            "purejaxrl.keep_heap = lambda: called.append(1)\n"
            "import importlib; importlib.reload(purejaxrl.llm)\n"
            "assert jax.config.read('jax_cpu_enable_async_dispatch'), 'async dispatch was turned off by an import'\n"
            "assert not called, 'an import changed the heap settings'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("env, algo, extra", [("dmc_cartpole_balance", "sac", "dmc"), ("brax_hopper", "ppo", "brax"),
                                              ("ogbench_cube_single", "qgf", "ogbench")])
def test_an_env_without_its_extra_is_one_line_with_the_install_command(env, algo, extra, monkeypatch):
    cfg = compose([f"env={env}", f"algo={algo}"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("mujoco_playground", "brax", "ogbench") else real(name, *a))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert f'pip install -e ".[{extra}]"' in msg and f'purejaxrl[{extra}]' in msg and "\n" not in msg


def test_a_launcher_or_sweeper_without_its_extra_is_one_line(monkeypatch):
    from purejaxrl import cli

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for arg, extra in (("launcher=slurm", "slurm"), ("launcher=ray", "ray"), ("hydra/sweeper=optuna", "optuna")):
        with pytest.raises(ConfigError, match=rf"needs the '{extra}' extra: pip install"):
            cli.check_plugins(["-m", arg])


def test_one_version_and_configs_from_the_package():
    import importlib.metadata

    import purejaxrl
    from purejaxrl.config import CONF_DIR

    assert importlib.metadata.version("purejaxrl") == purejaxrl.__version__
    assert (CONF_DIR / "config.yaml").exists() and (CONF_DIR / "reproduce").is_dir()
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and "version =" not in text.split("[project.optional-dependencies]")[0]


def test_every_conf_folder_ships_in_the_wheel():
    """Each folder of conf/ is a package of the wheel with its yaml files as package data (a folder
    left out installs without its configs and only a non-editable install shows it)."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"purejaxrl." + ".".join(p.relative_to(ROOT).parts) for p in (ROOT / "conf").rglob("*")
               if p.is_dir() and any(p.glob("*.yaml"))} | {"purejaxrl.conf"}
    assert folders - set(setup["packages"]) == set()
    assert folders - set(setup["package-data"]) == set()


def _imports(path: Path, package_roots=("purejaxrl", "envs")) -> set[str]:
    """Modules of ours a file imports, at module level or inside functions (a deferred import still
    ties the layers together), with the packages those imports load on the way (``a.b.c`` loads
    ``a`` and ``a.b``).  A relative import fails the test (none is used, and the graph would miss it)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import at line {node.lineno}"
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in out if m.split(".")[0] in package_roots}


def _module_graph() -> dict[str, set[str]]:
    files = {}
    for root in ("purejaxrl", "envs"):
        for f in (ROOT / root).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = f
    def ancestors(m):  # a module's own packages are loaded before it, whatever it imports
        parts = m.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    return {m: {d for d in _imports(f) if d in files and d != m and d not in ancestors(m)} for m, f in files.items()}


def test_no_import_circles():
    """The imports of purejaxrl/ and envs/ form no cycle (errors live at the bottom)."""
    graph = _module_graph()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle.extend(path[path.index(d):] + [d] if d in path else [m, d])
                return True
            if state.get(d) is None and visit(d, path + [d]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)
    assert graph["purejaxrl.errors"] == set()  # the bottom layer imports nothing of ours


def test_configuration_reference_is_generated_from_conf():
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_config_reference.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docs_build_strictly(tmp_path):
    """mkdocs with strict link checking: a broken link or image between the pages fails here."""
    pytest.importorskip("mkdocs")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_rejected_start_leaves_an_empty_folder_empty(tmp_path):
    r = subprocess.run([sys.executable, "-m", "purejaxrl", "train", "algo.lr=-1"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "algo.lr=-1" in r.stderr
    assert list(tmp_path.iterdir()) == []  # not even Hydra's outputs/<date>/<time>
