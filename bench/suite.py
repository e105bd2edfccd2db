"""Where does ``make test`` spend its time? Compare the per-test times of two pytest runs.

    PYTEST_ADDOPTS="--junitxml=/tmp/before.xml" make test     # on the old commit
    PYTEST_ADDOPTS="--junitxml=/tmp/after.xml" make test      # on the new one
    .venv/bin/python bench/suite.py /tmp/before.xml /tmp/after.xml [--top 15]

It prints, per test file, the number of tests and the summed time of their calls, setups and
teardowns (JUnit ``time``) in each run and the difference, largest growth first; then the
totals: tests, summed test time (the work, whatever the number of pytest-xdist workers) and
the session's wall time (the ``testsuite`` element's ``time``: what a developer waits for), and
the tests present in both runs alone, so that new tests and slower old ones can be told apart.
Machines are noisy: compare runs of one machine, and read differences of a second or two as
noise.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def read_junit(path: Path) -> tuple[dict[str, float], float]:
    """``({test id: seconds}, wall seconds)`` of a JUnit XML file written by pytest."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SystemExit(f"{path}: not a readable JUnit XML file ({exc})") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        raise SystemExit(f"{path}: no <testsuite> element; write it with pytest --junitxml")
    times: dict[str, float] = {}
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        times[test_id] = times.get(test_id, 0.0) + float(case.get("time") or 0.0)
    return times, sum(float(s.get("time") or 0.0) for s in suites)


def file_of(test_id: str) -> str:
    """``tests.test_e2e::test_x`` -> ``test_e2e`` (the module part of the class name)."""
    classname = test_id.split("::", 1)[0]
    parts = classname.split(".")
    modules = [p for p in parts if p.startswith("test_")]
    return modules[0] if modules else parts[-1]


def by_file(times: dict[str, float]) -> dict[str, tuple[int, float]]:
    """``{file: (tests, seconds)}``."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for test_id, seconds in times.items():
        row = out[file_of(test_id)]
        row[0] += 1
        row[1] += seconds
    return {name: (int(n), s) for name, (n, s) in out.items()}


def comparison_rows(before: dict[str, float], after: dict[str, float]
                    ) -> list[tuple[str, int, float, int, float]]:
    """``(file, tests before, seconds before, tests after, seconds after)``, largest growth
    first."""
    b, a = by_file(before), by_file(after)
    rows = [(name, *b.get(name, (0, 0.0)), *a.get(name, (0, 0.0))) for name in set(b) | set(a)]
    return sorted(rows, key=lambda r: (-(r[4] - r[2]), r[0]))


def print_report(before: Path, after: Path, top: int) -> None:
    t_before, wall_before = read_junit(before)
    t_after, wall_after = read_junit(after)
    rows = comparison_rows(t_before, t_after)
    print(f"{'file':<34} {'tests':>11} {'seconds':>17} {'change':>8}")
    for name, n_b, s_b, n_a, s_a in rows[:top]:
        print(f"{name:<34} {n_b:>5} -> {n_a:<4} {s_b:>7.1f} -> {s_a:<7.1f} {s_a - s_b:>+8.1f}")
    if len(rows) > top:
        rest = rows[top:]
        print(f"{'(' + str(len(rest)) + ' more files)':<34} {'':>11} {'':>17} "
              f"{sum(r[4] - r[2] for r in rest):>+8.1f}")
    common = set(t_before) & set(t_after)
    print()
    print(f"{'':<34} {'before':>10} {'after':>10}")
    print(f"{'tests':<34} {len(t_before):>10} {len(t_after):>10}")
    print(f"{'summed test time (s)':<34} {sum(t_before.values()):>10.1f} "
          f"{sum(t_after.values()):>10.1f}")
    print(f"{'  of the ' + str(len(common)) + ' tests in both (s)':<34} "
          f"{sum(t_before[t] for t in common):>10.1f} {sum(t_after[t] for t in common):>10.1f}")
    print(f"{'wall time of the session (s)':<34} {wall_before:>10.1f} {wall_after:>10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="JUnit XML of the earlier run")
    parser.add_argument("after", type=Path, help="JUnit XML of the later run")
    parser.add_argument("--top", type=int, default=15, help="files to list (default 15)")
    args = parser.parse_args(argv)
    print_report(args.before, args.after, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
