"""Labelled rows read from files shipped in a blueprint: the ``dataset`` provider's input.

A task may name labelled files (CSV or JSONL) with a role each::

    dataset:
      text: text            # column (CSV) or key (JSONL) of the text
      label: label_text     # column or key of the label
      label_map: {}         # source label -> task label (null drops the rows of that label)
      files:
        - {path: data/train.csv, role: train}       # the training pool (stage 1)
        - {path: data/validation.csv, role: dev}    # never trains; threshold and calibration
        - {path: data/test.csv, role: test}         # evaluation only, kept out like the exam

``train`` rows enter stage 1 when the blueprint's provider is ``dataset`` (``source:
dataset``) and go through the refinery like any other rows. ``dev`` rows are the task's dev
split (:func:`foundry.realtext.load_real` returns them with the real-text dev file). ``test``
rows are read only by the evaluate stage; the refinery removes training rows equal or near to
one of them, exactly as for exam texts.

:func:`read_dataset_file` reads one file and returns its rows and every problem found (file,
line, field, what to do); :func:`load_dataset` raises :class:`DatasetError` on the first ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from foundry.blueprint import Blueprint, DatasetFile, Task
from foundry.errors import ConfigError

#: Source name of dataset rows in the raw store and the refinery.
DATASET_SOURCE = "dataset"
#: Problems listed per file before the rest are only counted.
MAX_PROBLEMS = 20


class DatasetError(ConfigError):
    """A dataset file of a blueprint is unusable; the message names the file, line and field."""


@dataclass(frozen=True)
class DatasetRow:
    """One labelled row of a dataset file (``label`` already mapped to a task label)."""

    text: str
    label: str
    file: str
    line: int
    source_label: str = ""

    def as_row(self) -> dict[str, str]:
        """The row as stage 1 stores it and the refinery reads it."""
        return {"text": self.text, "label": self.label, "category": "",
                "source": DATASET_SOURCE, "corpus": self.file, "ref": str(self.line)}


@dataclass(frozen=True)
class DatasetProblem:
    """Something wrong at ``path:line`` in ``field`` (line 0: the file as a whole)."""

    path: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.field}: {self.message}"


@dataclass
class DatasetFileResult:
    """What :func:`read_dataset_file` found in one file."""

    rows: list[DatasetRow] = field(default_factory=list)
    problems: list[DatasetProblem] = field(default_factory=list)
    #: Rows dropped on purpose by a ``null`` entry of ``label_map``, per source label.
    dropped: dict[str, int] = field(default_factory=dict)
    more_problems: int = 0


def _records(path: Path, fmt: str) -> Iterator[tuple[int, dict | None, str]]:
    """Yield ``(line, record or None, problem)`` for every record of a CSV or JSONL file."""
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            start = 2  # the header is line 1
            for record in reader:
                yield start, record, ""
                start = reader.line_num + 1
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON ({exc.msg})"
                continue
            if not isinstance(obj, dict):
                yield lineno, None, "expected a JSON object per line"
                continue
            yield lineno, obj, ""


def _csv_header(path: Path) -> list[str] | None:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), None)


def read_dataset_file(root: Path, task: Task, dfile: DatasetFile) -> DatasetFileResult:
    """Read one dataset file of ``task`` (a blueprint folder ``root``); never raises for bad
    content: every problem is returned with its file, line and field."""
    spec = task.dataset
    assert spec is not None
    path = root / dfile.path
    out = DatasetFileResult()

    def problem(line: int, fld: str, message: str) -> None:
        if len(out.problems) < MAX_PROBLEMS:
            out.problems.append(DatasetProblem(path, line, fld, message))
        else:
            out.more_problems += 1

    if not path.is_file():
        problem(0, "path", "file not found (tasks[].dataset.files[].path)")
        return out
    fmt = dfile.file_format
    names = set(task.label_names)
    try:
        if fmt == "csv":
            header = _csv_header(path) or []
            missing = [c for c in (spec.text, spec.label) if c not in header]
            if missing:
                problem(1, "header", f"no column {', '.join(map(repr, missing))} (columns: "
                        f"{', '.join(header) or 'none'}); set dataset.text / dataset.label")
                return out
        for line, record, error in _records(path, fmt):
            if record is None:
                problem(line, "(line)", error)
                continue
            text, label = record.get(spec.text), record.get(spec.label)
            if not isinstance(text, str):
                problem(line, spec.text, "missing or not a string" if text is None
                        else f"expected a string, got {type(text).__name__}")
                continue
            if isinstance(label, bool) or not isinstance(label, str | int):
                problem(line, spec.label, "missing" if label is None
                        else f"expected a string or an integer, got {type(label).__name__}")
                continue
            text, source_label = text.strip(), str(label).strip()
            if not text:
                problem(line, spec.text, "empty text")
                continue
            mapped = spec.label_map.get(source_label, source_label)
            if mapped is None:
                out.dropped[source_label] = out.dropped.get(source_label, 0) + 1
                continue
            if mapped not in names:
                problem(line, spec.label, f"{source_label!r} is not a label of task "
                        f"{task.name!r}; add it to the labels or map it in dataset.label_map")
                continue
            out.rows.append(DatasetRow(text, mapped, dfile.path, line, source_label))
    except UnicodeDecodeError as exc:
        problem(0, "(encoding)", f"not UTF-8 ({exc.reason} at byte {exc.start})")
    return out


def load_dataset(bp: Blueprint, task: Task, role: str) -> list[DatasetRow]:
    """Rows of every file of ``role`` (``train``, ``dev``, ``test``) of ``task``, in file order;
    empty when the task has no dataset or no file of that role.

    Raises
    ------
    DatasetError
        Listing the problems found (file, line, field, what to do).
    """
    if task.dataset is None:
        return []
    rows: list[DatasetRow] = []
    problems: list[str] = []
    for dfile in task.dataset.files_of(role):
        result = read_dataset_file(bp.root, task, dfile)
        problems += [str(p) for p in result.problems]
        if result.more_problems:
            problems.append(f"{bp.root / dfile.path}: ... and {result.more_problems} more")
        rows += result.rows
    if problems:
        raise DatasetError("\n".join(problems))
    return rows


def dataset_fingerprint(bp: Blueprint, task: Task, role: str = "train") -> str:
    """SHA-256 (hex, 12 characters) of the files of ``role`` and the mapping that reads them."""
    h = hashlib.sha256()
    if task.dataset is not None:
        h.update(json.dumps(task.dataset.model_dump(exclude={"files", "source"}),
                            sort_keys=True).encode())
        for dfile in task.dataset.files_of(role):
            h.update(dfile.path.encode() + b"\0")
            path = bp.path(dfile.path)
            h.update(path.read_bytes() if path.is_file() else b"")
            h.update(b"\0")
    return h.hexdigest()[:12]
