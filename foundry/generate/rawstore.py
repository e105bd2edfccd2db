"""Append-only raw data: one JSON object per line, written a whole batch at a time.

Every row of a batch carries ``batch`` (its id) and ``batch_size``. A batch counts as
done once all its lines are written, flushed and fsynced. On open, the store reads the
file back and sets aside (into ``<name>.torn.jsonl``, never deleting anything) a torn last
line and the rows of any batch that is incomplete, so a run killed at any moment can be
re-run and continue without duplicating a batch.

One process at a time: opening a store takes an exclusive lock on ``<name>.lock`` *before*
reading (or repairing) the file, and holds it until :meth:`RawStore.close`. A second forge of
the same stream waits, then opens the store as the first one left it, so two concurrent
generations never store a batch twice, whatever the provider.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from foundry.jsonl import iter_jsonl
from foundry.locks import exclusive_lock, lock_path

Row = dict[str, Any]


def read_jsonl(path: Path) -> Iterator[Row]:
    """Yield the objects of a JSONL file; a line that is not a JSON object raises ValueError."""
    for _, obj in iter_jsonl(path):
        yield obj


def dump_line(row: Row) -> str:
    """One row as a JSONL line: UTF-8 text kept readable, keys in a stable order."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


class RawStore:
    """Durable, append-only store of generated rows for one task.

    Parameters
    ----------
    path : the JSONL file.
    timeout : seconds to wait for another process holding the store (None: as long as it
        takes); then :class:`foundry.errors.BusyError`.
    log : receives the "waiting for process N" message.

    Use it as a context manager, or call :meth:`close`, to release the lock.
    """

    def __init__(self, path: Path, *, timeout: float | None = None,
                 log: Callable[[str], None] | None = print) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        self.batches: set[str] = set()
        self.set_aside = 0
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(exclusive_lock(
            lock_path(self.path), doing=f"generating into {self.path}", timeout=timeout, log=log))
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the store's lock (the rows stay readable in :attr:`rows`)."""
        self._lock.close()

    def __enter__(self) -> RawStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._lock.close()

    @property
    def torn_path(self) -> Path:
        return self.path.with_suffix(".torn.jsonl")

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good: list[Row] = []
        bad_lines: list[str] = []
        for raw_line in data.splitlines(keepends=True):
            text = raw_line.decode("utf-8", errors="replace")
            try:
                if not raw_line.endswith(b"\n"):
                    raise ValueError("no trailing newline")
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError:
                bad_lines.append(text.rstrip("\n"))
                continue
            good.append(obj)
        sizes = Counter(r.get("batch") for r in good)
        complete: list[Row] = []
        incomplete: list[Row] = []
        for r in good:
            done = r.get("batch") is None or sizes[r["batch"]] >= r.get("batch_size", 0)
            (complete if done else incomplete).append(r)
        if bad_lines or incomplete:
            with open(self.torn_path, "a", encoding="utf-8") as fh:
                for line in bad_lines:
                    fh.write(json.dumps({"torn_line": line}, ensure_ascii=False) + "\n")
                for r in incomplete:
                    fh.write(dump_line({"incomplete_batch_row": r}))
                fh.flush()
                os.fsync(fh.fileno())
            self.set_aside = len(bad_lines) + len(incomplete)
            self._rewrite(complete)
        self.rows = complete
        self.batches = {r["batch"] for r in complete if r.get("batch") is not None}

    def _rewrite(self, rows: list[Row]) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(dump_line(r) for r in rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def __len__(self) -> int:
        return len(self.rows)

    def append_batch(self, batch_id: str, rows: Iterable[Row]) -> int:
        """Append one batch durably; returns the number of rows written.

        A batch id already in the store is ignored (returns 0), so replaying a batch after
        a crash never duplicates it.
        """
        if batch_id in self.batches:
            return 0
        rows = list(rows)
        if not rows:
            self.batches.add(batch_id)
            return 0
        stamped = [{**r, "batch": batch_id, "batch_size": len(rows)} for r in rows]
        payload = "".join(dump_line(r) for r in stamped).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows.extend(stamped)
        self.batches.add(batch_id)
        return len(stamped)
