"""Tolerant parsing of LLM output, per-row checks, and the quarantine file.

LLMs wrap JSON in markdown fences, add a sentence before or after it, or return an object
around the list. :func:`extract_rows` accepts all of that and raises :class:`ParseError` only
when no JSON list of rows can be found. :func:`check_rows` then sorts every item into an
accepted row or a rejection with a reason; :class:`Quarantine` appends rejections durably so
that nothing is ever silently dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry.errors import InputDataError
from foundry.generate.rawstore import dump_line

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)```", re.DOTALL)
#: Keys under which models like to nest the list of rows.
_LIST_KEYS = ("rows", "samples", "examples", "data", "items", "results", "sentences")


class ParseError(InputDataError):
    """No list of rows could be recovered from a model answer."""


_NOTHING = object()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOTHING


def _json_candidates(text: str) -> Iterable[Any]:
    """JSON values found in ``text``: the whole text, fenced blocks, then the first value."""
    stripped = text.strip().lstrip("\ufeff")
    for candidate in (stripped, *(b.strip() for b in _FENCE.findall(stripped))):
        value = _loads(candidate)
        if value is not _NOTHING:
            yield value
    # Prose around the JSON: decode from the first bracket. A "{" is only tried when it comes
    # before the first "[", so a truncated array never passes off its first row as the answer.
    decoder = json.JSONDecoder()
    starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
    bracket = stripped.find("[")
    for i in sorted(starts):
        if stripped[i] == "{" and 0 <= bracket < i:
            continue
        try:
            yield decoder.raw_decode(stripped, i)[0]
        except ValueError:
            continue


def _as_items(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for k in _LIST_KEYS:
            if isinstance(value.get(k), list):
                return value[k]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
        if "text" in value:
            return [value]
    return None


def extract_rows(text: str | None) -> list[Any]:
    """The list of row candidates in a model answer.

    Accepts a bare JSON array, an object holding one (``{"rows": [...]}``), a single row
    object, JSON inside markdown fences, and JSON followed or preceded by prose.

    Raises
    ------
    ParseError
        With a short reason when nothing usable is found.
    """
    if text is None or not text.strip():
        raise ParseError("empty answer")
    for value in _json_candidates(text):
        items = _as_items(value)
        if items is not None:
            return items
    raise ParseError("no JSON array of rows found in the answer")


@dataclass(frozen=True)
class RowRules:
    """What a valid row looks like for one task."""

    labels: Mapping[str, Sequence[str]]  # label name -> its categories
    min_chars: int = 1
    max_chars: int = 120

    def canonical_label(self, raw: str) -> str | None:
        """The known label ``raw`` names, tolerating case and surrounding space."""
        raw = raw.strip()
        if raw in self.labels:
            return raw
        folded = {name.casefold(): name for name in self.labels}
        return folded.get(raw.casefold())


@dataclass
class Rejection:
    """An item that did not become a row, and why."""

    reason: str
    item: Any
    detail: str = ""


@dataclass
class Checked:
    """Result of :func:`check_rows`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    category_missing: int = 0


def check_row(item: Any, rules: RowRules) -> dict[str, Any] | Rejection:
    """Validate one item: a ``{"text", "label"[, "category"]}`` object.

    Returns the clean row (text stripped, label canonical, category or ``None``) or a
    :class:`Rejection`. Reasons: ``not_object``, ``missing_text``, ``text_not_string``,
    ``empty_text``, ``too_short``, ``too_long``, ``missing_label``, ``label_not_string``,
    ``unknown_label``.
    """
    if not isinstance(item, dict):
        return Rejection("not_object", item, f"got {type(item).__name__}")
    if "text" not in item:
        return Rejection("missing_text", item)
    text = item["text"]
    if not isinstance(text, str):
        return Rejection("text_not_string", item, f"got {type(text).__name__}")
    text = text.strip()
    if not text:
        return Rejection("empty_text", item)
    n = len(text)
    if n < rules.min_chars:
        return Rejection("too_short", item, f"{n} < min_chars {rules.min_chars}")
    if n > rules.max_chars:
        return Rejection("too_long", item, f"{n} > max_chars {rules.max_chars}")
    if "label" not in item:
        return Rejection("missing_label", item)
    raw_label = item["label"]
    if not isinstance(raw_label, str):
        return Rejection("label_not_string", item, f"got {type(raw_label).__name__}")
    label = rules.canonical_label(raw_label)
    if label is None:
        known = ", ".join(rules.labels)
        return Rejection("unknown_label", item, f"{raw_label!r} is not one of: {known}")
    category = item.get("category")
    # A category is a steering aid, not part of the label: a wrong one is dropped, the row kept.
    if not isinstance(category, str) or category.strip() not in rules.labels[label]:
        category = None
    else:
        category = category.strip()
    return {"text": text, "label": label, "category": category}


def check_rows(items: Iterable[Any], rules: RowRules) -> Checked:
    """Check every item; a text repeated within the answer is rejected as ``duplicate_in_answer``."""
    out = Checked()
    seen: set[str] = set()
    for item in items:
        result = check_row(item, rules)
        if isinstance(result, Rejection):
            out.rejected.append(result)
            continue
        if result["text"] in seen:
            out.rejected.append(Rejection("duplicate_in_answer", item))
            continue
        seen.add(result["text"])
        if result["category"] is None and rules.labels[result["label"]]:
            out.category_missing += 1
        out.rows.append(result)
    return out


class Quarantine:
    """Append-only JSONL of rejected rows and unparseable answers.

    Each record holds ``reason``, ``detail``, ``request_id``, ``batch``, the offending
    ``item`` (or ``raw`` answer text) and provenance. Records of one answer are written with
    one ``write`` and fsynced, like the raw store.
    """

    def __init__(self, path: Path, *, scrub: Callable[[str], str] | None = None) -> None:
        """``scrub`` rewrites each JSON line before it is written (the engine passes
        :func:`foundry.secrets.redact`: a server may echo a key into an answer or an error)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scrub = scrub or (lambda line: line)
        self._repair()

    def _repair(self) -> None:
        """Move a torn last line (a kill in the middle of a write) to ``<name>.torn.jsonl``."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(self.path.with_suffix(".torn.jsonl"), "ab") as fh:
            fh.write(data[cut:] + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        with open(self.path, "r+b") as fh:
            fh.truncate(cut)
            os.fsync(fh.fileno())

    def write(self, records: Sequence[Mapping[str, Any]]) -> int:
        if not records:
            return 0
        payload = "".join(self.scrub(dump_line(dict(r))) for r in records).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(records)
