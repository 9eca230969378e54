"""Generate docs/configuration.md from conf/: every group, every option, every key with its default
and the comment beside it in the YAML file — so the reference cannot drift from the configs.

    python docs/gen_config_reference.py           # write docs/configuration.md
    python docs/gen_config_reference.py --check   # exit 1 if it is not up to date
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
OUT = ROOT / "docs" / "configuration.md"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_@/.+-]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")

INTRO = {
    "": "The top-level configs: `config.yaml` (`purejaxrl train`), `meta.yaml` (`purejaxrl meta`).",
    "algo": "Every algorithm hyperparameter; those listed in the algorithm's `HPARAMS` are traced and vmappable "
            "(`vmap.algo.<name>=[...]`).",
    "env": "`name` (anything `envs.make` accepts) and `kwargs`.",
    "network": "The torso; `auto` takes the algorithm's defaults and picks the conv net for image observations.",
    "logger": "Log rows, progress bar and the optional TensorBoard / W&B backends (one stream per run).",
    "launcher": "Hydra launchers for `-m` sweeps.",
    "experiment": "Reference setups overriding the groups above.",
    "objective": "`purejaxrl meta`: the learned drift's architecture and initialisation.",
    "es": "`purejaxrl meta`: population, generations, σ / learning-rate schedules.",
    "run": "Seeds, chunks, run directory, resume (top-level keys).",
    "scale": "The device mesh and multi-host runs (train, meta, llm).",
    "dataset": "Offline algorithms: the dataset file.",
    "reproduce": "Studies for `purejaxrl reproduce` (see the reproduce page).",
    "llm": "`purejaxrl llm`: the top config.",
    "llm/run": "`purejaxrl llm`: run settings (top-level keys).",
    "llm/model": "`purejaxrl llm`: transformer sizes.",
    "llm/task": "`purejaxrl llm`: synthetic tasks.",
    "llm/loss": "`purejaxrl llm`: losses and their settings.",
    "llm/scale": "`purejaxrl llm`: device mesh.",
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|").strip()


def keys_of(path: Path, keep_hydra: bool = False) -> list[tuple[str, str, str]]:
    """``(dotted key, default, comment)`` for every key line of a YAML file (the defaults list, and
    Hydra's own section unless ``keep_hydra``, left out); a comment line right below a key continues
    its comment."""
    rows, stack = [], []
    skip_indent = None
    for line in path.read_text().splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#") and rows and line.startswith(" ") and not rows[-1][2].endswith("."):
            rows[-1] = (rows[-1][0], rows[-1][1], (rows[-1][2] + " " + stripped.lstrip("# ")).strip())
            continue
        if not line.strip() or stripped.startswith(("#", "- ")):
            continue
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m.group("indent"))
        if skip_indent is not None and indent > skip_indent:
            continue
        skip_indent = None
        key = m.group("key")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if indent == 0 and (key == "defaults" or (key == "hydra" and not keep_hydra)):
            skip_indent = 0
            continue
        dotted = ".".join([k for _, k in stack] + [key])
        value = m.group("value").strip()
        if value == "":
            stack.append((indent, key))
            if not m.group("comment"):
                continue
        rows.append((dotted, value, m.group("comment") or ""))
    return rows


def header_comment(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            continue
        if line.startswith("#"):
            lines.append(line.lstrip("# ").rstrip())
        elif line.strip():
            break
    return " ".join(x for x in lines if x)


def render() -> str:
    out = ["# Configuration reference", "",
           "Generated from `conf/` by `python docs/gen_config_reference.py` (a test fails when it is stale). "
           "Every key can be overridden on the command line (`algo.lr=3e-4`); a group option is chosen with "
           "`group=option` (`algo=ppo`).", ""]
    yamls = [Path(d, f) for d, _, fs in os.walk(CONF, followlinks=True) for f in fs if f.endswith(".yaml")]
    groups = sorted({p.parent.relative_to(CONF).as_posix() for p in yamls}, key=lambda g: (g.count("/"), g))
    for group in groups:
        title = group if group != "." else ""
        out += [f"## `{title or 'conf/'}`" if title else "## Top level", ""]
        if INTRO.get(title):
            out += [INTRO[title], ""]
        for f in sorted((CONF / group).glob("*.yaml")):
            name = f.stem
            spelled = title.split("/", 1)[1] if title.startswith("llm/") else title  # purejaxrl llm loss=...
            if title in ("reproduce", "llm"):
                spelled = ""
            out += [f"### `{(spelled + '=' if spelled else '') + name}`", ""]
            head = header_comment(f)
            if head:
                out += [head, ""]
            if title == "reproduce":  # studies: their own format, described on the reproduce page
                out += [f"`conf/reproduce/{f.name}`", ""]
                continue
            rows = keys_of(f, keep_hydra=title == "launcher")
            if rows:
                out += ["| key | default | |", "|---|---|---|"]
                out += [f"| `{k}` | `{_escape(v) or ' '}` | {_escape(c)} |" for k, v, c in rows]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    a = p.parse_args()
    text = render()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python docs/gen_config_reference.py")
            sys.exit(1)
        print(f"{OUT.relative_to(ROOT)} is up to date")
        return
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
