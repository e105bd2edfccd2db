"""Real, human-written utterances: the ``real`` training pool and the ``dev`` split of a task.

A task of a blueprint may name two hand-labelled files of real text (see
``blueprints/text_classification/real/SOURCES.md`` for how the default ones were made):

``real: real/<task>.jsonl``
    a training source: the refine stage adds its rows as ``source: real`` (preferred over
    generated rows, never undersampled, never put in the test split);
``dev: dev/<task>.jsonl``
    the real-text dev split: it never trains (training rows equal or near to a dev text are
    removed, like exam overlaps); it chooses the calibration and the confidence threshold, and
    is reported on its own in the evaluate notebook and the model card.

One JSON object per line: ``{"text", "label", "category", "corpus", "ref"}`` plus optional
``"context"`` (the preceding turn of a dialogue reply) and ``"note"``. :func:`load_real_file`
validates every row and raises :class:`RealDataError` naming the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from foundry.blueprint import Blueprint, Task
from foundry.check import REAL_KEYS, REAL_OPTIONAL, real_row_problems
from foundry.errors import ConfigError
from foundry.jsonl import iter_jsonl
from foundry.textspec import TextSpec, normalize

#: Source name of real rows in the refinery and the training split.
REAL_SOURCE = "real"
_COMPARE = TextSpec(max_chars=1_000_000)

Which = Literal["real", "dev"]


class RealDataError(ConfigError):
    """A real-text file of a blueprint is unusable; the message names the file and line."""


def corpus_family(corpus: str) -> str:
    """The corpus a real row's ``corpus`` field names, without its file part:
    ``"kdconv/film_dev"`` -> ``"kdconv"`` (one kind of text: assistant commands, chit-chat, ...)."""
    return corpus.split("/", 1)[0]


@dataclass(frozen=True)
class RealRow:
    """One hand-labelled real utterance."""

    text: str
    label: str
    category: str
    corpus: str
    ref: str
    context: str = ""
    note: str = ""

    def as_row(self) -> dict[str, str]:
        """The row as the refine stage reads generated rows (``source: real``)."""
        return {"text": self.text, "label": self.label, "category": self.category,
                "source": REAL_SOURCE, "corpus": self.corpus, "ref": self.ref}


def load_real_file(path: str | Path, task: Task) -> list[RealRow]:
    """Read and validate a real-text JSONL file of ``task``.

    Raises
    ------
    RealDataError
        For a missing file, invalid JSON, a missing, unknown or non-string key, an empty
        text, a label or category the task does not declare, or two rows that are the same
        text after normalisation.
    """
    path = Path(path)
    if not path.is_file():
        raise RealDataError(f"{path}: real-text file of task {task.name!r} not found")
    hint = ('; one {"text", "label", "category", "corpus", "ref"} object per line '
            "(docs/refine.md, real text)")
    rows: list[RealRow] = []
    first: dict[str, str] = {}
    for where, obj in iter_jsonl(path, error=RealDataError, hint=hint):
        problems = real_row_problems(obj, task)
        if problems:
            field, message = problems[0]
            raise RealDataError(f"{where}: {field}: {message}")
        key = normalize(obj["text"], _COMPARE)
        if key in first:
            raise RealDataError(f"{where}: same text as {first[key]} after normalisation "
                                f"({key!r}); keep one of them")
        first[key] = where
        rows.append(RealRow(**{k: obj[k] for k in (*REAL_KEYS, *REAL_OPTIONAL) if k in obj}))
    return rows


def load_real(bp: Blueprint, task: Task, which: Which) -> list[RealRow]:
    """The task's ``real`` pool or ``dev`` split; empty when the blueprint names none."""
    relative = task.real if which == "real" else task.dev
    if relative is None:
        return []
    return load_real_file(bp.path(relative), task)
