"""How much do the exam results depend on the seed? Forge the same blueprint at several seeds.

    .venv/bin/python bench/seeds.py                         # text_classification, seeds 42,7,1,3
    .venv/bin/python bench/seeds.py --seeds 42,7,1,3,5,11   # more seeds (about 50 s each)
    .venv/bin/python bench/seeds.py my_blueprint --keep     # keep the temporary runs

For each seed the blueprint folder is copied to a temporary directory with ``generation.seed``,
``refine.seed`` and ``train.seed`` set to it (task names unchanged, so seed 42 reproduces the
default forge exactly), and forged offline through the real notebooks (``foundry.forge``, HTML
renderings skipped, exam failures allowed so every seed is measured). It prints one row per
seed and task (exam accuracy, share of exam cases answered confidently and their precision,
the confidence threshold, test macro-F1, test coverage and the cross-fitted precision of the
threshold rule), then the minimum, median and maximum over the seeds.

A single forge is one draw: the offline grammar, the grouped train/test split and the CV folds
all follow the seed, and an exam of ~200 cases moves by 0.5 points per case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from bench.scratch import scratch_dir  # noqa: E402
from foundry.blueprint import BLUEPRINT_FILE, load_blueprint  # noqa: E402
from foundry.forge import forge  # noqa: E402

#: (summary key, column title, format) of the per-seed table.
COLUMNS = [
    ("exam_accuracy", "exam acc", "{:.1%}"),
    ("exam_confident_share", "exam confident", "{:.1%}"),
    ("exam_confident_precision", "exam conf. precision", "{:.1%}"),
    ("threshold", "threshold", "{:.3f}"),
    ("test_macro_f1", "test macro-F1", "{:.3f}"),
    ("coverage_at_threshold", "test coverage", "{:.1%}"),
    ("crossfit_confident_precision", "cross-fitted precision", "{:.1%}"),
]


def parse_seeds(text: str) -> list[int]:
    """``"42,7,1"`` → ``[42, 7, 1]`` (an argparse ``type``: a bad list is a usage error)."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def seeded_copy(blueprint: str, seed: int, folder: Path) -> Path:
    """Copy the blueprint folder into ``folder`` with every seed set to ``seed``."""
    source = load_blueprint(blueprint).root
    target = folder / source.name
    shutil.copytree(source, target)
    raw = yaml.safe_load((target / BLUEPRINT_FILE).read_text(encoding="utf-8"))
    for section in ("generation", "refine", "train"):
        raw.setdefault(section, {})["seed"] = seed
    (target / BLUEPRINT_FILE).write_text(
        yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


def forge_seeded(blueprint: str, seed: int, tmp: Path, *, steps: str | None = None,
                 target: int | None = None):
    """Forge ``seeded_copy(blueprint, seed)`` offline in ``tmp/seed-<seed>`` (its own runs and
    models folders; ``steps`` and ``target`` as ``foundry forge``); return the copy's folder
    and the forge result."""
    folder = tmp / f"seed-{seed}"
    folder.mkdir()
    bp_dir = seeded_copy(blueprint, seed, folder)
    return bp_dir, forge(bp_dir, steps=steps, provider="offline", runs_root=folder / "runs",
                         models_dir=folder / "models", target_per_task=target, html=False,
                         allow_exam_failures=True, log=lambda _: None)


def forge_seed(blueprint: str, seed: int, tmp: Path) -> tuple[dict[str, dict], float]:
    """Forge one seed; return ``{task: evaluate summary}`` and the forge's wall seconds."""
    start = time.perf_counter()
    _, result = forge_seeded(blueprint, seed, tmp)
    seconds = time.perf_counter() - start
    summaries = {}
    for task in load_blueprint(blueprint).tasks:  # a seeded copy keeps the task names
        path = result.run_dir / "evaluate" / task.name / "summary.json"
        summaries[task.name] = json.loads(path.read_text(encoding="utf-8"))
    return summaries, seconds


def _cell(fmt: str, value: float | None) -> str:
    return "n/a" if value is None else fmt.format(value)


def format_tables(results: dict[int, dict[str, dict]]) -> str:
    """The per-seed table and the min / median / max table, as markdown."""
    head = "| seed | task | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [head, "|---:|---|" + "---:|" * len(COLUMNS)]
    tasks = list(next(iter(results.values())))
    for task in tasks:
        for seed, by_task in results.items():
            s = by_task[task]
            cells = [_cell(fmt, s.get(key)) for key, _, fmt in COLUMNS]
            lines.append(f"| {seed} | {task} | " + " | ".join(cells) + " |")
    lines += ["", "| task | over seeds | " + " | ".join(t for _, t, _ in COLUMNS) + " |",
              "|---|---|" + "---:|" * len(COLUMNS)]
    for task in tasks:
        for name, reduce in (("min", min), ("median", statistics.median), ("max", max)):
            cells = []
            for key, _, fmt in COLUMNS:
                values = [r[task][key] for r in results.values() if r[task].get(key) is not None]
                cells.append(_cell(fmt, reduce(values) if values else None))
            lines.append(f"| {task} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("blueprint", nargs="?", default="text_classification")
    ap.add_argument("--seeds", type=parse_seeds, default="42,7,1,3",
                    help="comma-separated seeds (default: 42,7,1,3)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary runs and models")
    args = ap.parse_args(argv)
    seeds = args.seeds
    if not seeds:
        ap.error("--seeds: give at least one seed")

    results: dict[int, dict[str, dict]] = {}
    with scratch_dir("bench-seeds-", keep=args.keep) as tmp:
        for seed in seeds:
            results[seed], seconds = forge_seed(args.blueprint, seed, tmp)
            print(f"seed {seed}: forged in {seconds:.1f} s", file=sys.stderr)
        print(f"# bench/seeds.py — offline forges of {args.blueprint!r} at seeds "
              f"{', '.join(map(str, seeds))}\n")
        print(format_tables(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
