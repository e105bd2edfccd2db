"""Exclusive locks between processes: one writer at a time for shared files.

Three things are shared between concurrent forges and must have one writer at a time: the raw
store of a stream (:class:`foundry.generate.rawstore.RawStore`), a models folder during an
export (:mod:`foundry.export`), and a run folder during a forge. Each is guarded by an advisory
``flock``: on a lock file beside the raw store (the holder writes its pid into it, so that a
waiting process can say whom it waits for), and on the folder itself for a models folder or a
run folder (nothing is added to them). A lock dies with its process, so a killed forge never
leaves a stale lock behind.

Within one process the locks are re-entrant (by path): the export stage holds the models
folder's lock and calls :func:`foundry.export.install_artifacts`, which takes it too.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from foundry.errors import BusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None

_held: dict[str, int] = {}
_held_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def exclusive_lock(path: Path, *, doing: str, wait: bool = True, timeout: float | None = None,
                   log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Parameters
    ----------
    path : the lock file, or an existing folder (locked itself, no file is created).
    doing : what the holder does, for messages ("generating into runs/.../raw/x.jsonl").
    wait : wait for the holder to finish (logging once whom it waits for), or raise at once.
    timeout : seconds to wait at most (None: as long as it takes).
    log : receives the "waiting for ..." message.

    Raises
    ------
    BusyError
        When the lock is held elsewhere and ``wait`` is false or ``timeout`` runs out.
    """
    key = str(Path(path).resolve())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    folder = Path(path).is_dir()
    if folder:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, doing=doing, wait=wait, timeout=timeout, log=log, records_pid=not folder)
        if not folder:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
            if not folder:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, *, doing: str, wait: bool, timeout: float | None,
             log: Callable[[str], None] | None, records_pid: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    holder = _holder(fd) if records_pid else "another process"
    if not wait:
        raise BusyError(f"{holder} is {doing}; wait for it to finish or stop it first")
    if log is not None:
        log(f"waiting for {holder}, which is {doing} ...")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                raise BusyError(f"{holder} is still {doing} after {timeout:g} s; try again "
                                "when it has finished") from None
            time.sleep(0.05)


def lock_path(target: Path) -> Path:
    """The lock file that guards ``target``: ``<target>.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")
