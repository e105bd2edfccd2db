"""Reading JSON Lines files with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(
    path: str | Path, *, error: type[Exception] = ValueError, hint: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, obj)`` for every non-blank line of a JSONL file.

    ``where`` is ``"<path>:<line>"``, for the caller's own field checks. A line that is not
    valid JSON, or not a JSON object, raises ``error`` with ``where`` and ``hint`` (what the
    user should do) in its message.
    """
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: not valid JSON ({exc.msg}){hint}") from None
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object per line{hint}")
            yield where, obj
