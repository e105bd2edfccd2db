"""Input fingerprints of stage outputs: a stage refuses outputs made from other inputs.

When a stage finishes a task it writes ``<run>/<stage>/<task>/stamp.json``: the fingerprint of
the outputs it wrote (the files the next stages read, :data:`OUTPUTS`) and of the inputs it
read: the outputs of the stages before it (:data:`READS`), the blueprint as that stage uses it
(its files and the settings of its section, :func:`blueprint_fingerprint`), and for the
refinery the lab's corrections. Before a stage reads anything, :func:`check_fresh` walks the
chain back to generation: a stamp's outputs must still be the files on disk, and its inputs
the current ones. Otherwise it raises :class:`StaleInputError` naming the earliest stage to run
again and the exact command, e.g. after ``--steps refine`` in a run whose later stages were made
from the previous refinery output, or after the blueprint changed.

Outputs without a stamp are taken as they are only at the start of the chain (a run made before
stamps existed, or earlier stages assembled by hand, as tests do): once a stage of the chain is
stamped, every later one must be too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from foundry.errors import StaleInputError
from foundry.runs import STAGES, read_json, write_json

STAMP_FILE = "stamp.json"
#: The files of a stage that later stages read (what its fingerprint covers).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "generate": ("manifest.json",),
    "refine": ("train.jsonl", "test.jsonl", "summary.json"),
    "train": ("model.joblib", "train.json"),
    "evaluate": ("summary.json",),
}
#: The earlier stages whose outputs a stage reads.
READS: dict[str, tuple[str, ...]] = {
    "generate": (),
    "refine": ("generate",),
    "train": ("refine",),
    "evaluate": ("train", "refine"),
    "export": ("evaluate", "train", "refine"),
}
#: The blueprint settings each stage depends on (besides the blueprint's files).
SECTIONS: dict[str, tuple[str, ...]] = {
    "generate": ("generation",),
    "refine": ("refine",),
    "train": ("train", "export"),  # the size budget (export.size_budget_kb) shapes training
    "evaluate": ("evaluate",),
    "export": ("export",),
}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def outputs_fingerprint(run_dir: Path, stage: str, task: str) -> str | None:
    """SHA-256 over the names and contents of a stage's :data:`OUTPUTS`; None if one is missing."""
    folder = Path(run_dir) / stage / task
    h = hashlib.sha256()
    for name in OUTPUTS[stage]:
        path = folder / name
        if not path.is_file():
            return None
        h.update(f"{name}\0{_sha256_file(path)}\0".encode())
    return h.hexdigest()


def blueprint_fingerprint(bp: Any, stage: str) -> str:
    """The blueprint as ``stage`` uses it: every file but ``blueprint.yaml`` and the lab's
    corrections, plus the tasks and the settings of the stage's sections."""
    from foundry.blueprint import BLUEPRINT_FILE

    h = hashlib.sha256()
    for path in sorted(Path(bp.root).rglob("*")):
        rel = path.relative_to(bp.root)
        if path.is_file() and rel.as_posix() != BLUEPRINT_FILE and "corrections" not in rel.parts:
            h.update(f"{rel.as_posix()}\0{_sha256_file(path)}\0".encode())
    spec = bp.spec.model_dump(mode="json")
    settings = {"name": spec["name"], "tasks": spec["tasks"],
                **{s: spec.get(s) for s in SECTIONS[stage]}}
    h.update(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def corrections_fingerprint(bp: Any, task: str) -> str:
    path = Path(bp.root) / "corrections" / f"{task}.jsonl"
    return _sha256_file(path) if path.is_file() else ""


def expected_inputs(bp: Any, run_dir: Path, stage: str, task: str) -> dict[str, str | None]:
    """The inputs ``stage`` of ``task`` would read now: upstream outputs and the blueprint."""
    inputs: dict[str, str | None] = {"blueprint": blueprint_fingerprint(bp, stage)}
    if stage == "refine":
        inputs["corrections"] = corrections_fingerprint(bp, task)
    for before in READS[stage]:
        inputs[before] = outputs_fingerprint(run_dir, before, task)
    return inputs


def read_stamp(run_dir: Path, stage: str, task: str) -> dict | None:
    path = Path(run_dir) / stage / task / STAMP_FILE
    try:
        stamp = read_json(path)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(bp: Any, run_dir: Path, stage: str, task: str,
                inputs: dict[str, str | None] | None = None) -> None:
    """Record that ``stage`` made its outputs of ``task`` from ``inputs`` (default: the current
    inputs). Call it after every output is written."""
    write_json(Path(run_dir) / stage / task / STAMP_FILE, {
        "stage": stage, "task": task,
        "inputs": inputs if inputs is not None else expected_inputs(bp, run_dir, stage, task),
        "outputs": outputs_fingerprint(run_dir, stage, task),
    })


def _chain(stage: str) -> list[str]:
    """The stages whose outputs ``stage`` depends on, directly or not, in pipeline order."""
    needed: set[str] = set()
    todo = list(READS[stage])
    while todo:
        s = todo.pop()
        if s not in needed:
            needed.add(s)
            todo.extend(READS[s])
    return [s for s in STAGES if s in needed]


_WHAT = {"blueprint": "blueprint (its files or its settings for this stage)",
         "corrections": "lab corrections"}


def check_fresh(bp: Any, run_dir: Path, stage: str, task: str) -> dict[str, str | None]:
    """Refuse to run ``stage`` on outputs made from other inputs; return its inputs.

    Raises
    ------
    StaleInputError
        Naming the earliest stale stage, why, and the command that refreshes it.
    """
    stamped_before = False
    for s in _chain(stage):
        stamp = read_stamp(run_dir, s, task)
        problem = None
        if stamp is None:
            if stamped_before:
                problem = "has no input fingerprint (it was made by an older version, or by hand)"
        elif outputs_fingerprint(run_dir, s, task) != stamp.get("outputs"):
            problem = ("has outputs that changed after it finished (edited by hand, or a "
                       "re-run of it was interrupted)")
        else:
            recorded = stamp.get("inputs") or {}
            for name, value in expected_inputs(bp, run_dir, s, task).items():
                if recorded.get(name) != value:
                    problem = (f"was made from other {_WHAT.get(name, name + ' outputs')} than "
                               "the current ones")
                    break
        if problem:
            _stale(bp, run_dir, stage, task, s, problem)
        stamped_before = stamped_before or stamp is not None
    return expected_inputs(bp, run_dir, stage, task)


def _stale(bp: Any, run_dir: Path, stage: str, task: str, earliest: str, problem: str) -> None:
    from foundry.paths import BLUEPRINTS_DIR

    steps = ",".join(STAGES[STAGES.index(earliest): STAGES.index(stage) + 1])
    run_dir = Path(run_dir)
    named = Path(bp.root).resolve().parent == Path(BLUEPRINTS_DIR).resolve()
    raise StaleInputError(
        f"{run_dir}: cannot run {stage} for task {task!r}: its input is out of date: the "
        f"{earliest} stage {problem}. Refresh it with `foundry forge "
        f"{bp.name if named else bp.root} --run-id {run_dir.name} --steps {steps}` "
        "(or run those stage notebooks in this run)."
    )
