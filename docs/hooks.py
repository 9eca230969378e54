"""mkdocs hook: the pages show the recorded results' plots (``../benchmarks/results/...``, which is
also how GitHub renders them); the site copies those files in and links them from its root."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "benchmarks/results"


def on_files(files, config):
    for f in sorted((ROOT / RESULTS).rglob("*.png")):
        files.append(File(f.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    return markdown.replace(f"](../{RESULTS}/", f"]({RESULTS}/")
