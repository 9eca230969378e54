"""The default install before and after a change, in one measurement: packages, environment size,
install time and ``import purejaxrl`` time, each source tree installed into its own fresh venv.

    python benchmarks/install_footprint.py --before <git revision> [--rounds 2]

The trees are installed in alternation (before, after, before, after, ...) with pip's cache warm
for both (a first, untimed install of each fills it), so the times compare installs, not
downloads.  Writes ``benchmarks/results/install_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "install_cpu.json"


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def install(tree: Path, work: Path) -> dict:
    venv = work / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, capture_output=True)
    cmd = [py, "-m", "pip", "install", "-q"]
    if (tree / "constraints.txt").exists():  # the README's command: the tested set
        cmd += ["-c", str(tree / "constraints.txt")]
    t0 = time.perf_counter()
    subprocess.run(cmd + ["-e", str(tree)], check=True, capture_output=True, cwd=tree)
    seconds = time.perf_counter() - t0
    packages = subprocess.run([py, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True)
    names = sorted(p["name"] for p in json.loads(packages.stdout) if p["name"].lower() not in ("pip", "setuptools"))
    imports = []
    for _ in range(3):
        r = subprocess.run([py, "-X", "importtime", "-c", "import purejaxrl"], capture_output=True, text=True, cwd=work)
        last = [ln for ln in r.stderr.splitlines() if re.search(r"\|\s*purejaxrl$", ln)]
        imports.append(int(last[-1].split("|")[1]) / 1e6)
    return {"install_seconds": seconds, "packages": len(names), "venv_mb": _size_mb(venv),
            "import_purejaxrl_seconds": min(imports), "names": names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="git revision of the 'before' tree")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = tmp / "before_src"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--prefix=before_src/", a.before], check=True, capture_output=True)
        subprocess.run(["tar", "x", "-C", str(tmp)], input=archive.stdout, check=True)
        trees = {"before": before, "after": ROOT}
        for name, tree in trees.items():  # warm pip's cache for both
            install(tree, tmp / f"warm_{name}")
        rows = {name: [] for name in trees}
        for _ in range(a.rounds):
            for name, tree in trees.items():
                rows[name].append(install(tree, tmp / name))
    res = {"before_revision": a.before, "rounds": a.rounds, "python": sys.version.split()[0]}
    for name, rs in rows.items():
        res[name] = {"packages": rs[-1]["packages"], "venv_mb": round(rs[-1]["venv_mb"]),
                     "install_seconds": [round(r["install_seconds"], 1) for r in rs],
                     "import_purejaxrl_seconds": [round(r["import_purejaxrl_seconds"], 3) for r in rs]}
    res["removed_from_the_default_install"] = sorted(set(rows["before"][-1]["names"]) - set(rows["after"][-1]["names"]))
    OUT.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "removed_from_the_default_install"}, indent=1))


if __name__ == "__main__":
    main()
