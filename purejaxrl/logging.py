"""Per-run metric logs: JSONL and CSV in the run directory, optional TensorBoard / W&B streams.

Rows are never merged across vmapped runs: each row names its ``run`` index and ``seed`` (and the
vmapped hyperparameter values), and TensorBoard / W&B get one stream per run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from purejaxrl.errors import ConfigError

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"


def check_backends(logger_cfg: dict) -> None:
    """Fail before compiling if an optional backend is asked for but not installed."""
    for flag, module, extra in (("tensorboard", "tensorboardX", "tensorboard"), ("wandb", "wandb", "wandb")):
        if logger_cfg.get(flag):
            try:
                __import__(module)
            except ImportError as e:
                from envs.errors import install_hint

                raise ConfigError(f"logger.{flag}=true needs {module}: {install_hint(extra)}") from e


def _tags(tags) -> list[str]:
    """``logger.wandb_tags``: a list, or one tag given as a string."""
    if tags is None:
        return []
    return [tags] if isinstance(tags, str) else [str(t) for t in tags]


def backend_keys(key: str) -> list[str]:
    """The names a metric gets in TensorBoard and W&B, as the field reads them: ``eval/…`` for the
    greedy tests (Brax's ``eval/episode_reward`` among them), ``charts/…`` for training episodes and
    ``losses/…`` for losses (CleanRL's), ``train/…`` for the rest.  The JSONL/CSV files keep the
    flat keys."""
    if key.startswith("eval_"):
        rest = key[len("eval_"):]
        return ["eval/episode_reward", "eval/episode_return"] if rest == "return" else [f"eval/{rest}"]
    if key in ("episode_return", "episode_length"):
        return [f"charts/episodic_{key.split('_')[1]}", f"train/{key}"]
    if "loss" in key:
        return [f"losses/{key}"]
    return [f"train/{key}"]


class MetricsLogger:
    """Rows per run and logged update.  On resume, rows after the checkpoint are dropped from the
    JSONL/CSV files and the TensorBoard streams are rewritten from the kept rows (so no step
    appears twice); W&B runs keep their id (``wandb_ids.json``) and are resumed, not duplicated.
    Both backends step on one axis, ``global_step``: env steps (gradient steps for offline runs),
    under the names of :func:`backend_keys`; W&B writes its files into ``run_dir/wandb``."""

    def __init__(self, run_dir: Path, runs: list[dict], logger_cfg: dict, resume_update: int = 0,
                 project_cfg: dict | None = None):
        self.run_dir = Path(run_dir)
        self.runs = runs
        self.log_every = max(int(logger_cfg.get("log_every", 1)), 1)
        self.jsonl = self.run_dir / METRICS_JSONL
        self.csv = self.run_dir / METRICS_CSV
        self._csv_fields: list[str] | None = None
        self.kept: list[dict] = []
        if resume_update:
            self.kept = self._truncate(resume_update)
        elif self.jsonl.exists():
            self.jsonl.unlink()
            self.csv.unlink(missing_ok=True)
        self._tb = []
        if logger_cfg.get("tensorboard"):
            import shutil

            from tensorboardX import SummaryWriter

            for r in runs:
                d = self.run_dir / "tb" / f"run_{r['run']:03d}"
                if d.exists():  # rewritten from the kept rows: a resumed stream never repeats a step
                    shutil.rmtree(d)
                self._tb.append(SummaryWriter(str(d)))
            for row in self.kept:
                self._write_tb(row)
        self._wandb = []
        if logger_cfg.get("wandb"):
            import uuid

            import wandb

            ids_path = self.run_dir / "wandb_ids.json"
            ids = json.loads(ids_path.read_text()) if ids_path.exists() else {}
            for r in runs:
                run_id = ids.setdefault(str(r["run"]), uuid.uuid4().hex[:12])
                self._wandb.append(
                    wandb.init(
                        project=logger_cfg.get("wandb_project", "purejaxrl"),
                        entity=logger_cfg.get("wandb_entity"),
                        tags=_tags(logger_cfg.get("wandb_tags")),
                        dir=str(self.run_dir),  # wandb/ inside the run directory, not the working directory
                        group=self.run_dir.name,
                        name=f"{self.run_dir.name}-run{r['run']}",
                        id=run_id,
                        resume="allow",
                        config={**(project_cfg or {}), **r},
                        reinit="create_new",  # several runs open at once, one per vmapped run
                        mode=logger_cfg.get("wandb_mode", "online"),
                    )
                )
            ids_path.write_text(json.dumps(ids, indent=2))

    def last_values(self, metric: str) -> np.ndarray:
        """Per run, the last non-null value of ``metric`` in the kept rows (NaN if none)."""
        out = np.full(len(self.runs), np.nan)
        for row in self.kept:
            if row.get(metric) is not None and row["run"] < len(out):
                out[row["run"]] = row[metric]
        return out

    def _truncate(self, last_update: int) -> list[dict]:
        """Drop rows written after the checkpoint we resume from (they will be recomputed)."""
        if not self.jsonl.exists():
            return []
        keep = [l for l in self.jsonl.read_text().splitlines() if l and json.loads(l)["update"] <= last_update]
        self.jsonl.write_text("".join(l + "\n" for l in keep))
        rows = [json.loads(l) for l in keep]
        if self.csv.exists():
            with self.csv.open() as f:
                self._csv_fields = next(csv.reader(f), None)
        if self._csv_fields:
            with self.csv.open("w", newline="") as f:
                w = csv.DictWriter(f, self._csv_fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        return rows

    def _scalars(self, row: dict) -> dict:
        return {k: v for k, v in row.items() if isinstance(v, float) and k not in self.runs[0]}

    def _named(self, row: dict) -> dict:
        out = {}
        for k, v in self._scalars(row).items():
            for name in backend_keys(k):
                assert name not in out, f"metrics {k!r} and another both map to {name!r}"
                out[name] = v
        return out

    def _write_tb(self, row: dict) -> None:
        for k, v in self._named(row).items():
            self._tb[row["run"]].add_scalar(k, v, row["env_steps"])

    def log_chunk(self, start: int, metrics: dict[str, np.ndarray], steps_per_update: int, num_updates: int) -> None:
        """Write rows for updates ``start .. start + n`` every ``log_every`` updates (and whenever an
        evaluation happened)."""
        n = next(iter(metrics.values())).shape[1]
        rows = []
        for j in range(n):
            u = start + j + 1
            if u > num_updates:
                break
            has_eval = "eval_return" in metrics and not np.isnan(metrics["eval_return"][:, j]).all()
            if u % self.log_every and not has_eval and u != num_updates:
                continue
            for r, run in enumerate(self.runs):
                row = {**run, "update": u, "env_steps": u * steps_per_update}
                for k, v in metrics.items():
                    x = float(v[r, j])
                    row[k] = None if math.isnan(x) else x
                rows.append(row)
        if not rows:
            return
        with self.jsonl.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        if self._csv_fields is None:
            self._csv_fields = list(rows[0])
            write_header = True
        else:
            write_header = False
        with self.csv.open("a", newline="") as f:
            w = csv.DictWriter(f, self._csv_fields, extrasaction="ignore")
            if write_header:
                w.writeheader()
            w.writerows(rows)
        for row in rows:
            if self._tb:
                self._write_tb(row)
            if self._wandb:  # explicit steps: W&B ignores rows re-sent after a resume (identical ones)
                self._wandb[row["run"]].log({**self._named(row), "global_step": row["env_steps"]}, step=row["env_steps"])

    def close(self) -> None:
        for w in self._tb:
            w.close()
        for w in self._wandb:
            w.finish()


class NullLogger:
    """The logger of every process but 0 in a multi-host run: process 0 writes every run's rows
    (the metrics it logs are gathered from all processes)."""

    def __init__(self, runs: list[dict]):
        self.runs = runs
        self.kept: list[dict] = []

    def last_values(self, metric: str) -> np.ndarray:
        return np.full(len(self.runs), np.nan)

    def log_chunk(self, start: int, metrics: dict, steps_per_update: int, num_updates: int) -> None:
        return None

    def close(self) -> None:
        return None


EVALUATIONS_JSONL = "evaluations.jsonl"  # the evaluation rows alone, kept where per-update logs are not


def read_metrics(run_dir: str | Path) -> list[dict]:
    """A run's logged rows: ``metrics.jsonl``, or, in recorded results that keep only the rows with
    an evaluation, ``evaluations.jsonl``."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.exists():
        path = Path(run_dir) / EVALUATIONS_JSONL
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no {METRICS_JSONL}); give the run_dir of a purejaxrl run")
    return [json.loads(l) for l in path.read_text().splitlines() if l]
