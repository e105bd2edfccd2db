"""Run folders: ``runs/<blueprint>/<run_id>/`` with one sub-folder per stage.

Layout of a run (each stage reads the folders of the stages before it)::

    runs/<blueprint>/raw/<stream>/<task>.jsonl   append-only raw data, shared by runs
    runs/<blueprint>/<run_id>/
        notebooks/NN_<stage>.ipynb (+ .html)    executed notebooks: the audit record
        generate/<task>/manifest.json            which raw files feed this run
        refine/<task>/                           train.jsonl, test.jsonl, summary.json, report.md
        train/<task>/                            model.joblib, train.json, cv_results.csv
        evaluate/<task>/                         summary.json, errors.csv, plots
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from foundry.paths import RUNS_DIR

STAGES = ("generate", "refine", "train", "evaluate", "export")
LATEST_FILE = "LATEST"


def blueprint_runs_dir(blueprint_name: str, runs_root: Path | None = None) -> Path:
    return Path(runs_root or RUNS_DIR) / blueprint_name


def new_run_id() -> str:
    """A sortable, human-readable run id (UTC time)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def latest_run_dir(blueprint_name: str, runs_root: Path | None = None) -> Path | None:
    """The run folder most recently started by ``foundry forge`` for this blueprint, if any."""
    marker = blueprint_runs_dir(blueprint_name, runs_root) / LATEST_FILE
    if not marker.is_file():
        return None
    run = blueprint_runs_dir(blueprint_name, runs_root) / marker.read_text().strip()
    return run if run.is_dir() else None


def mark_latest(run_dir: Path) -> None:
    atomic_write_text(run_dir.parent / LATEST_FILE, run_dir.name + "\n")


def resolve_run_dir(blueprint_name: str, run_dir: str | Path | None) -> Path:
    """The run folder a notebook works in: the given one, else the latest run of the blueprint.

    Notebooks run by ``foundry forge`` always get ``run_dir``; opened by hand they fall back
    to the latest run so that a person can re-execute a stage and look at it.
    """
    if run_dir:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    latest = latest_run_dir(blueprint_name)
    if latest is None:
        raise FileNotFoundError(
            f"no run folder given and no previous run of {blueprint_name!r} under {RUNS_DIR}; "
            f"run `foundry forge {blueprint_name}` first or pass run_dir"
        )
    return latest


def stage_dir(run_dir: Path, stage: str, task: str) -> Path:
    """``<run_dir>/<stage>/<task>/``, created if missing."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    path = Path(run_dir) / stage / task
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_stage_output(run_dir: Path, stage: str, task: str, filename: str) -> Path:
    """Path of an earlier stage's output, or a FileNotFoundError that says what to run."""
    path = Path(run_dir) / stage / task / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the {stage!r} stage has not run for task {task!r} in this run; "
            f"run `foundry forge <blueprint> --steps {stage},...` first"
        )
    return path


def inherit_stage_outputs(run_dir: Path, source_run: Path, stages: list[str]) -> None:
    """Copy earlier stages' outputs from ``source_run`` so a partial forge can reuse them."""
    for stage in stages:
        src = Path(source_run) / stage
        if src.is_dir() and not (Path(run_dir) / stage).exists():
            shutil.copytree(src, Path(run_dir) / stage)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty, stable JSON (sorted keys, UTF-8 kept readable)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
