"""How long, and how much memory, does each runtime take to reject a hostile model file?

    .venv/bin/python bench/hostile.py                # every case of tests/fakes/hostile.py
    .venv/bin/python bench/hostile.py --rounds 5     # more rounds, steadier medians
    .venv/bin/python bench/hostile.py --huge-line 50 # also a 50 MB input line, every CLI

Each case damages a copy of a tiny exported pair (docs/preprocessor-spec.md, section 1, the
rule it breaks) and runs ``foundry predict``, ``node runtimes/node/cli.js`` and, when built
(``make rust``), the Rust ``foundry-rt`` on it in fresh processes. The table gives, per
runtime, the median wall time of the whole process (start-up included) over ``--rounds``, its
exit status and the peak RSS (``wait4``). The suite in
``tests/test_hostile_artifacts.py`` asserts the rule, the exit status and the memory bound; the
time is measured here, on a quiet machine (check ``uptime``), not asserted in a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from conftest import write_tiny_models  # noqa: E402
from fakes.hostile import CASES, TASK, make_case, run_measured  # noqa: E402
from scratch import scratch_dir  # noqa: E402

NODE_CLI = ROOT / "runtimes" / "node" / "cli.js"
RUST_CLI = ROOT / "runtimes" / "rust" / "target" / "release" / "foundry-rt"


def commands(models: Path) -> dict[str, list[str]]:
    out = {
        "python": [sys.executable, "-m", "foundry", "predict", TASK, "--json", "--models-dir",
                   str(models)],
        "node": ["node", str(NODE_CLI), "--models-dir", str(models), "--task", TASK],
    }
    if RUST_CLI.is_file():
        out["rust"] = [str(RUST_CLI), "--models-dir", str(models), "--task", TASK]
    return out


def measure(cmd: list[str], stdin: bytes, rounds: int) -> tuple[float, int, float]:
    """(median seconds, exit status, max peak RSS in MB) over ``rounds`` runs."""
    runs = [run_measured(cmd, stdin, timeout=60) for _ in range(rounds)]
    return (statistics.median(r.seconds for r in runs), runs[-1].returncode,
            max(r.max_rss_mb for r in runs))


def hostile_table(tmp: Path, rounds: int) -> str:
    good = tmp / "good"
    write_tiny_models(good, task=TASK)
    names = list(commands(good))
    lines = [f"{'case':<36} {'rule':<4}" + "".join(f" {n + ' s':>8} {'exit':>4} {'MB':>5}"
                                                   for n in names)]

    def row(label: str, rule: str, models: Path) -> str:
        cells = [measure(cmd, "你好吗\n".encode(), rounds) for cmd in commands(models).values()]
        return f"{label:<36} {rule:<4}" + "".join(f" {s:8.2f} {c:>4} {m:5.0f}"
                                                  for s, c, m in cells)

    for i, case in enumerate(CASES):
        lines.append(row(case.name, case.rule, make_case(good, case, tmp / f"case{i}")))
    lines.append(row("(the good pair, answering)", "", good))
    return "\n".join(lines)


def huge_line_table(tmp: Path, megabytes: int) -> str:
    good = tmp / "good"
    if not good.is_dir():
        write_tiny_models(good, task=TASK)
    names = list(commands(good))
    lines = [f"{'one line of':<22}" + "".join(f" {n + ' s':>8} {'MB':>6}" for n in names)]
    for name, unit in (("words (ab cd ...)", b"ab cd "), ("CJK (字字字...)", "字字字".encode()),
                       ("spaces", b" ")):
        stdin = unit * (megabytes * 10**6 // len(unit)) + b"x\n"
        cells = [measure(cmd, stdin, 1) for cmd in commands(good).values()]
        lines.append(f"{name:<22}" + "".join(f" {s:8.1f} {m:6.0f}" for s, _, m in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--huge-line", type=int, default=0, metavar="MB",
                        help="also measure one input line of this many megabytes")
    args = parser.parse_args(argv)
    with scratch_dir("foundry-bench-hostile-") as tmp:
        print(f"Rejecting hostile model files (median of {args.rounds} fresh processes each)\n")
        print(hostile_table(tmp, args.rounds))
        if args.huge_line:
            print(f"\nOne {args.huge_line} MB input line, answered (peak RSS of the process)\n")
            print(huge_line_table(tmp, args.huge_line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
