"""Score forged models on the probe sets of ``bench/probes/`` (utterances written by other
hands, see its README): accuracy, coverage and precision of confident answers, per category.

    .venv/bin/python bench/probes.py                                  # models/, sets A and B
    .venv/bin/python bench/probes.py --sets C --models models /tmp/base_models
    .venv/bin/python bench/probes.py --tasks confirmation --errors 20

With two model folders it prints one row per folder, so a change is read on the same texts.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foundry.jsonl import iter_jsonl  # noqa: E402
from foundry.runtime import MicroModel  # noqa: E402

PROBES = Path(__file__).resolve().parent / "probes"


@dataclass
class Tally:
    """Counts of one group of probe rows."""

    n: int = 0
    right: int = 0
    confident: int = 0
    confident_right: int = 0

    def add(self, right: bool, confident: bool) -> None:
        self.n += 1
        self.right += right
        self.confident += confident
        self.confident_right += right and confident

    def row(self) -> str:
        """``accuracy | coverage | precision (confident errors)`` as table cells."""
        precision = self.confident_right / self.confident if self.confident else float("nan")
        return (f"{self.right / self.n:.1%} | {self.confident / self.n:.1%} | "
                f"{precision:.1%} ({self.confident - self.confident_right})")


def load_probe(path: Path) -> list[dict]:
    """Rows ``{"text", "label", "category"}`` of one probe file; a bad line stops the bench
    with its file and line."""
    rows = []
    for where, row in iter_jsonl(path, error=SystemExit):
        if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
            raise SystemExit(f"{where}: a probe row needs string 'text' and 'label'")
        rows.append(row)
    return rows


def score(model: MicroModel, rows: list[dict]) -> tuple[dict[str, Tally], list[tuple]]:
    """Tallies for ``"all"`` and every ``label/category``, and the errors as
    ``(score, confident, row)``, most confident first."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    errors = []
    for row, answer in zip(rows, model.predict_many([r["text"] for r in rows]), strict=True):
        right = answer.label == row["label"]
        for key in ("all", f"{row['label']}/{row.get('category', '')}"):
            tallies[key].add(right, answer.confident)
        if not right:
            errors.append((answer.score, answer.confident, row))
    return dict(tallies), sorted(errors, key=lambda e: -e[0])


def probe_sets(task: str) -> list[str]:
    """The names of the probe sets written for ``task`` (``<task>_<set>.jsonl`` in :data:`PROBES`)."""
    return sorted(p.stem.removeprefix(f"{task}_") for p in PROBES.glob(f"{task}_*.jsonl"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["models"], help="model folders to compare")
    ap.add_argument("--tasks", nargs="+", default=["is_question", "confirmation"])
    ap.add_argument("--sets", default="A,B", help="comma list of probe sets (A, B, …: the files in bench/probes)")
    ap.add_argument("--by-category", action="store_true", help="a row per label/category too")
    ap.add_argument("--errors", type=int, default=0, help="list this many errors per model")
    args = ap.parse_args(argv)
    for task in args.tasks:
        files = [PROBES / f"{task}_{s.strip()}.jsonl" for s in args.sets.split(",") if s.strip()]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SystemExit(f"no probe file {', '.join(missing)} (the sets of {task} are "
                             f"{', '.join(probe_sets(task)) or 'none'})")
        rows = [r for f in files for r in load_probe(f)]
        print(f"\n{task}, sets {args.sets} ({len(rows)} rows)\n")
        print("| models | group | accuracy | answered confidently | precision of confident (errors) |")
        print("|---|---|---:|---:|---:|")
        for folder in args.models:
            tallies, errors = score(MicroModel.load(task, folder), rows)
            keys = sorted(tallies) if args.by_category else ["all"]
            for key in keys:
                print(f"| {folder} | {key} | {tallies[key].row()} |")
            for p, confident, row in errors[: args.errors]:
                print(f"    {'C' if confident else ' '} {p:.2f} {row['label']}/{row.get('category')}: "
                      f"{row['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
