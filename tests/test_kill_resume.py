"""Generation survives SIGKILL and Ctrl-C: re-running ends with exactly the target rows.

The generator runs in a subprocess against a slow fake Gemini server living in this test
process, is killed mid-run several times (once with a torn line appended, as a crash in the
middle of a write would leave), and is re-run to completion. The audit then proves: exactly
``target`` rows, no torn line, no duplicated batch or row, every stored row is one the server
sent, and at most the batches in flight at each kill were lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeGemini, Faults
from fakes.audit import audit, read_lines_strict
from fakes.tiny_blueprint import write_tiny_blueprint

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "fakes" / "run_generation.py"
KEYS = "kill-test-key-one,kill-test-key-two"
CONCURRENCY = 4


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def start(bp: Path, raw: Path, quarantine: Path, target: int, base_url: str
          ) -> subprocess.Popen:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
           "GEMINI_API_KEYS": KEYS, "GEMINI_BASE_URL": base_url, "HOME": str(bp.parent)}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(bp), str(raw), str(quarantine),
                             str(target)], env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(proc: subprocess.Popen, raw: Path, rows: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while count_lines(raw) < rows:
        assert proc.poll() is None, f"generator ended early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {rows} rows after {timeout_s}s"
        time.sleep(0.02)


@pytest.fixture
def setup(tmp_path):
    bp = write_tiny_blueprint(tmp_path / "bp", samples_per_request=5,
                              concurrency=CONCURRENCY)
    return bp, tmp_path / "raw" / "is_question.jsonl", tmp_path / "raw" / "quarantine.jsonl"


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_exact_target_without_duplicates(setup):
    bp, raw, quarantine = setup
    target = 150
    faults = Faults(latency_s=(0.1, 0.3), p_wrong_label=0.05)
    with FakeGemini(faults, seed=21) as server:
        kills = 0
        for threshold in (20, 60, 100):
            proc = start(bp, raw, quarantine, target, server.base_url)
            wait_for_rows(proc, raw, threshold)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            kills += 1
            if threshold == 60:
                # What a crash in the middle of a write leaves: half a line, no newline.
                with open(raw, "ab") as fh:
                    fh.write('{"text": "样本r999999-000 半行'.encode())
        proc = start(bp, raw, quarantine, target, server.base_url)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        result = audit(server, raw, quarantine, target,
                       allow_unaccounted=kills * CONCURRENCY)
    assert report["rows_total"] == target and report["stopped"] == "target"
    assert report["rows_before"] >= 100
    torn = raw.with_suffix(".torn.jsonl")
    assert torn.exists() and "半行" in torn.read_text(encoding="utf-8")
    assert len({r["batch"] for r in result.rows}) >= target // 5


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_rerun_continues(setup):
    bp, raw, quarantine = setup
    # Slow enough that Ctrl-C, sent once 20 rows are stored, always lands mid-run: on a loaded
    # machine a faster server (120 rows at 0.1-0.3 s) finished before the signal arrived.
    target = 200
    with FakeGemini(Faults(latency_s=(0.3, 0.6)), seed=22) as server:
        proc = start(bp, raw, quarantine, target, server.base_url)
        wait_for_rows(proc, raw, 20)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err[-3000:]
        stopped = json.loads(out.strip().splitlines()[-1])
        assert stopped["interrupted"] and stopped["stopped"] == "interrupted"
        # Everything reported as stored is on disk, in complete lines.
        assert len(read_lines_strict(raw)) == stopped["rows_total"] < target
        assert "interrupted" in err
        proc = start(bp, raw, quarantine, target, server.base_url)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        audit(server, raw, quarantine, target, allow_unaccounted=CONCURRENCY)
