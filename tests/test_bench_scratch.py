"""bench/scratch.py: the benchmarks' temporary folder is removed, even when a benchmark fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import scratch_dir  # noqa: E402


def test_removed_after_use_and_after_a_failure():
    with scratch_dir("test-scratch-") as tmp:
        (tmp / "model.bin").write_bytes(b"x" * 10)
    assert not tmp.exists()
    with pytest.raises(RuntimeError), scratch_dir("test-scratch-") as failed:
        raise RuntimeError("benchmark failed")
    assert not failed.exists()


def test_kept_on_request(capsys):
    with scratch_dir("test-scratch-", keep=True) as tmp:
        pass
    try:
        assert tmp.is_dir() and f"kept: {tmp}" in capsys.readouterr().out
    finally:
        tmp.rmdir()
