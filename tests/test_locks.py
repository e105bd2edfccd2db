"""foundry.locks: one holder at a time across processes, re-entrant within one, gone with its
process; and the three things it guards (a raw store, a models dir, a run folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from foundry.errors import BusyError
from foundry.locks import exclusive_lock

TESTS = Path(__file__).resolve().parent


def hold_in_child(code: str, ready: Path) -> subprocess.Popen:
    """Run ``code`` (which must create ``ready`` once it holds its lock) in a child process."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [str(TESTS), os.environ.get("PYTHONPATH", "")])})
    for _ in range(600):
        if ready.exists():
            return child
        if child.poll() is not None:
            raise AssertionError(f"the child exited with {child.returncode} before holding")
        time.sleep(0.05)
    child.kill()
    raise AssertionError("the child never took its lock")


def test_a_lock_held_elsewhere_is_refused_or_waited_for(tmp_path):
    lock, ready = tmp_path / "x.lock", tmp_path / "ready"
    child = hold_in_child(f"""
        import time
        from pathlib import Path
        from foundry.locks import exclusive_lock
        with exclusive_lock(Path({str(lock)!r}), doing="testing"):
            Path({str(ready)!r}).touch()
            time.sleep(60)
    """, ready)
    try:
        with pytest.raises(BusyError, match=rf"process {child.pid} is testing"), \
                exclusive_lock(lock, doing="testing", wait=False):
            pass
        logs: list[str] = []
        with pytest.raises(BusyError, match="still testing after 0.2 s"), \
                exclusive_lock(lock, doing="testing", timeout=0.2, log=logs.append):
            pass
        assert logs == [f"waiting for process {child.pid}, which is testing ..."]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # A killed holder leaves no stale lock behind.
    with exclusive_lock(lock, doing="testing", wait=False):
        pass


def test_locks_are_reentrant_within_a_process(tmp_path):
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, doing="outer", wait=False), \
            exclusive_lock(lock, doing="inner", wait=False):
        pass
    with exclusive_lock(lock, doing="again", wait=False):
        pass


def test_a_raw_store_is_locked_before_it_is_read(tmp_path):
    """Issue 15: generation opened (and could rewrite) the raw store before taking its lock."""
    from foundry.generate.rawstore import RawStore

    raw = tmp_path / "raw" / "t.jsonl"
    raw.parent.mkdir()
    ready = tmp_path / "ready"
    child = hold_in_child(f"""
        import time
        from pathlib import Path
        from foundry.generate.rawstore import RawStore
        store = RawStore(Path({str(raw)!r}), log=None)
        Path({str(ready)!r}).touch()
        time.sleep(60)
    """, ready)
    try:
        raw.write_text('{"text": "半行', encoding="utf-8")  # a torn line a reader would set aside
        with pytest.raises(BusyError, match=rf"process {child.pid} is still generating into"):
            RawStore(raw, timeout=0.3, log=None)
        assert raw.read_text(encoding="utf-8") == '{"text": "半行'
        assert not raw.with_suffix(".torn.jsonl").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with RawStore(raw, log=None) as store:
        assert store.set_aside == 1 and len(store) == 0


def test_two_concurrent_offline_generations_store_each_batch_once(tmp_path):
    """Issue 15: two generations of one blueprint stored every batch twice (4,600 rows for a
    target of 2,300, both manifests claiming 2,300)."""
    target = 300
    code = f"""
        import sys
        from pathlib import Path
        from foundry.blueprint import load_blueprint
        from foundry.generate import generate_stage
        bp = load_blueprint("text_classification")
        run = Path({str(tmp_path)!r}) / "runs" / bp.name / sys.argv[1]
        generate_stage(bp, run, provider="offline", target={target}, log=lambda m: None)
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), run_id])
             for run_id in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    raws = sorted((tmp_path / "runs" / "text_classification" / "raw").glob("*/*.jsonl"))
    raws = [r for r in raws if r.name.count(".") == 1]
    assert len(raws) == 2  # one stream per task
    for raw in raws:
        lines = raw.read_text(encoding="utf-8").splitlines()
        assert len(lines) == target, raw
        assert len(set(lines)) == target
    import json

    for run_id in ("a", "b"):
        for task in ("is_question", "confirmation"):
            manifest = json.loads((tmp_path / "runs" / "text_classification" / run_id / "generate"
                                   / task / "manifest.json").read_text(encoding="utf-8"))
            assert manifest["rows"] == target


def test_a_second_forge_of_the_same_run_folder_is_refused(tmp_path):
    run = tmp_path / "runs" / "text_classification" / "r1"
    run.mkdir(parents=True)
    ready = tmp_path / "ready"
    child = hold_in_child(f"""
        import time
        from pathlib import Path
        from foundry.locks import exclusive_lock
        with exclusive_lock(Path({str(run)!r}), doing="forging run r1"):
            Path({str(ready)!r}).touch()
            time.sleep(60)
    """, ready)
    try:
        proc = subprocess.run([sys.executable, "-m", "foundry", "forge", "text_classification",
                               "--run-id", "r1", "--steps", "generate"],
                              env={**os.environ, "FOUNDRY_RUNS_DIR": str(tmp_path / "runs")},
                              capture_output=True, text=True, timeout=300)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert proc.returncode == 1, proc.stderr
    assert "another process is forging run" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "notebooks").exists()
