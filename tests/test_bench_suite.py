"""bench/suite.py: per-file test time of two pytest runs, from their JUnit XML files."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import comparison_rows, main, read_junit  # noqa: E402


def _junit(path: Path, wall: float, cases: list[tuple[str, str, float]]) -> Path:
    body = "".join(f'<testcase classname="tests.{module}" name="{name}" time="{seconds}"/>'
                   for module, name, seconds in cases)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" '
                    f'tests="{len(cases)}" time="{wall}">{body}</testsuite></testsuites>',
                    encoding="utf-8")
    return path


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    before = _junit(tmp_path / "before.xml", 30.0, [
        ("test_e2e", "test_a", 20.0), ("test_e2e", "test_b", 1.0), ("test_cli", "test_c", 2.0)])
    after = _junit(tmp_path / "after.xml", 18.0, [
        ("test_e2e", "test_a", 21.0), ("test_e2e", "test_b", 1.0), ("test_cli", "test_c", 1.5),
        ("test_mlp", "test_d", 9.0)])
    return before, after


def test_rows_per_file_largest_growth_first(runs):
    (before, wall_before), (after, wall_after) = map(read_junit, runs)
    assert (wall_before, wall_after) == (30.0, 18.0)
    assert comparison_rows(before, after) == [
        ("test_mlp", 0, 0.0, 1, 9.0), ("test_e2e", 2, 21.0, 2, 22.0),
        ("test_cli", 1, 2.0, 1, 1.5)]


def test_report_separates_work_from_wall_time(runs, capsys):
    assert main([str(p) for p in runs]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[0] == "test_mlp"
    assert re.search(r"summed test time \(s\) +23\.0 +32\.5\n", out), out
    assert re.search(r"of the 3 tests in both \(s\) +23\.0 +23\.5\n", out), out
    assert re.search(r"wall time of the session \(s\) +30\.0 +18\.0\n", out), out


def test_a_file_that_is_not_junit_is_named(tmp_path):
    bad = tmp_path / "log.txt"
    bad.write_text("1070 passed", encoding="utf-8")
    with pytest.raises(SystemExit, match="log.txt: not a readable JUnit XML file"):
        read_junit(bad)
