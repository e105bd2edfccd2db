"""Where does a full offline forge of the default blueprint spend its time?

    .venv/bin/python bench/forge.py                      # text_classification, offline
    .venv/bin/python bench/forge.py --no-html            # without the HTML audit renderings
    .venv/bin/python bench/forge.py --keep               # keep the temp runs/models dirs
    .venv/bin/python bench/forge.py --blas-threads 1     # one BLAS thread per kernel

Runs :func:`foundry.forge.forge` (exactly what ``make forge`` runs: every stage notebook
executed by papermill in a fresh kernel) into a temporary runs and models dir, so the real
``runs/`` and ``models/`` are left alone, and prints one table:

- per stage: wall seconds as ``forge`` measures them (kernel start-up included), the part
  spent inside cells (papermill records each cell's duration), the rest (kernel start-up,
  papermill and nbformat overhead), and the slowest cell with the functions it calls;
- the HTML renderings of the executed notebooks (timed outside the stages by ``forge``);
- one empty notebook executed by papermill: the fixed cost every stage pays.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_dir  # noqa: E402

TARGET_S = 90.0
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class CellTime:
    seconds: float
    calls: str


@dataclass
class StageTime:
    stage: str
    seconds: float
    in_cells: float
    slowest: CellTime | None


def cell_times(notebook: Path) -> list[CellTime]:
    """Durations papermill recorded for each code cell of an executed notebook."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    out = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        duration = (cell.get("metadata", {}).get("papermill", {}) or {}).get("duration")
        source = "".join(cell.get("source", []))
        out.append(CellTime(float(duration or 0.0), called_names(source)))
    return out


_NOT_INTERESTING = {"print", "len", "display", "list", "dict", "set", "sorted", "range", "zip",
                    "enumerate", "str", "int", "float", "round", "max", "min", "sum", "isinstance"}


def called_names(source: str, limit: int = 4) -> str:
    """The first few functions a cell calls, which say what it does better than its first line."""
    names: list[str] = []
    for line in source.splitlines():
        if line.lstrip().startswith(("#", "import ", "from ")):
            continue
        for name in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\(", line):
            if name not in _NOT_INTERESTING and not name[0].isupper() and name not in names:
                names.append(name)
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def stage_times(result) -> list[StageTime]:
    rows = []
    for stage in result.steps:
        cells = cell_times(result.notebooks[stage])
        slowest = max(cells, key=lambda c: c.seconds, default=None)
        rows.append(StageTime(stage, result.seconds[stage], sum(c.seconds for c in cells), slowest))
    return rows


def empty_notebook_seconds(folder: Path, repeats: int = 3) -> float:
    """Median wall time of papermill executing a one-cell notebook (the per-stage fixed cost)."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x + 1")]
    source = folder / "empty.ipynb"
    nbformat.write(nb, source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pm.execute_notebook(str(source), str(folder / "empty.out.ipynb"), parameters={"x": 2},
                            progress_bar=False, log_output=False, kernel_name="python3",
                            cwd=str(ROOT), extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def format_table(rows: list[StageTime], total: float, html_s: float, empty_s: float) -> str:
    lines = [
        "| stage | seconds | in cells | kernel + papermill | share | slowest cell |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        slow = f"{r.slowest.seconds:.1f} s: {r.slowest.calls}" if r.slowest else ""
        lines.append(f"| {r.stage} | {r.seconds:.1f} | {r.in_cells:.1f} | "
                     f"{r.seconds - r.in_cells:.1f} | {100 * r.seconds / total:.0f}% | {slow} |")
    lines.append(f"| HTML renderings | {html_s:.1f} | | | {100 * html_s / total:.0f}% | |")
    verdict = "within" if total <= TARGET_S else "over"
    lines.append(f"| **total** | **{total:.1f}** | | | 100% | {verdict} the {TARGET_S:.0f} s aim |")
    lines.append("")
    lines.append("Fixed cost of one papermill stage (empty notebook, fresh kernel): "
                 f"{empty_s:.1f} s "
                 f"× {len(rows)} stages = {empty_s * len(rows):.1f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("blueprint", nargs="?", default="text_classification")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML renderings")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dirs")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="set OMP/OPENBLAS/MKL_NUM_THREADS for the stage kernels "
                             "(default: inherit the environment)")
    args = parser.parse_args(argv)
    if args.blas_threads is not None:  # the kernels papermill starts inherit the environment
        for var in BLAS_THREAD_VARS:
            os.environ[var] = str(args.blas_threads)
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"

    from foundry.forge import forge

    with scratch_dir("bench-forge-", keep=args.keep) as tmp:
        start = time.perf_counter()
        result = forge(args.blueprint, provider="offline", runs_root=tmp / "runs",
                       models_dir=tmp / "models", html=not args.no_html, log=lambda _: None)
        total = time.perf_counter() - start
        rows = stage_times(result)
        html_s = total - sum(r.seconds for r in rows)  # everything forge does between stages
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())  # before the extra probe
        empty_s = empty_notebook_seconds(tmp)
        print(f"# bench/forge.py — offline forge of {args.blueprint!r}, BLAS threads: {blas}, "
              f"load average {load}, {os.cpu_count()} CPUs\n")
        print(format_table(rows, total, html_s, empty_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
