"""The intent benchmarks: forge ``assistant_intents_zh`` and ``clinc150`` and print what they show.

    .venv/bin/python bench/intents.py                     # both blueprints, fresh run folders
    .venv/bin/python bench/intents.py --blueprints clinc150

For each blueprint it runs ``foundry forge`` (offline, the whole pipeline, baselines included)
into a scratch models folder and prints: the wall time per stage and in total (the issue's
limit: 10 minutes on 2 cores), the artifact sizes (limit 1 MB per task), the test-file numbers
(accuracy; with an out-of-scope label in-scope accuracy and out-of-scope recall at the
operating point chosen on dev), and the baselines fitted on the same rows in the same run.
The load average is printed with every forge: a busy machine stretches the times.

``--latency MODELS_DIR`` then times single queries (``MicroModel.predict``, p50 over the same
texts, engines interleaved round by round) of the benchmark tasks forged into MODELS_DIR beside
the default binary models in ``models/``, per backend. The full runtime tables (fastText, the
Rust CLI, batches) come from
    .venv/bin/python bench/runtime.py --many-labels <run folder> <models folder>
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from foundry.summaries import EvalSummary, TrainSummary

ROOT = Path(__file__).resolve().parent.parent
BLUEPRINTS = ("assistant_intents_zh", "clinc150")


def forge(blueprint: str, models_dir: Path) -> tuple[Path, float, str]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "foundry", "forge", blueprint, "--models-dir",
                          str(models_dir)], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"forge {blueprint} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    folder = Path(re.search(r"run folder (\S+?);", out.stdout).group(1))
    return folder, wall, out.stdout


def report(blueprint: str, folder: Path, models_dir: Path, wall: float, log: str) -> None:
    print(f"## {blueprint}  (run folder {folder}, models {models_dir})\n")
    print("| stage | seconds |\n|---|---:|")
    for stage, secs in re.findall(r"^\s+(\w+)\s+([\d.]+) s", log, flags=re.M):
        print(f"| {stage} | {secs} |")
    print(f"| **total (wall)** | **{wall:.1f}** |\n")
    for task_dir in sorted((folder / "evaluate").iterdir()):
        task = task_dir.name
        summary = EvalSummary.read(task_dir / EvalSummary.file_name)
        held = summary.heldout or {}
        sizes = {p.suffix: p.stat().st_size for p in models_dir.glob(f"{task}_*")
                 if p.suffix in (".onnx", ".bin")}
        train = TrainSummary.load(folder, task)
        print(f"- `{task}`: {len(summary.labels)} labels, {train.n_features} n-grams, "
              f"best {train.best_params} on dev; artifacts {sizes.get('.onnx', 0):,} B .onnx + "
              f"{sizes.get('.bin', 0):,} B .bin = {sum(sizes.values()) / 1e6:.3f} MB")
        if held:
            line = f"  test files: {held['rows']} rows, accuracy {held['accuracy']:.4f}"
            if "out_of_scope" in held:
                o = held["out_of_scope"]
                line += (f", in-scope accuracy {o['in_scope_accuracy']:.4f}, out-of-scope recall "
                         f"{o['oos_recall']:.4f} at threshold {held['threshold']:.4f} (chosen on "
                         f"dev for recall >= {summary.out_of_scope['target_recall']})")
            print(line)
        table = task_dir / "baselines.csv"
        if table.is_file():
            print("\n" + table.read_text(encoding="utf-8"))
    print()


def latency(models_dir: Path, rounds: int = 7) -> None:
    """p50 single-query latency per task and backend on the same texts, per text set (MASSIVE
    zh-CN validation, CLINC150 val: every model answers both languages; a model does the
    most work on its own language, the least on the other) and over both."""
    import csv
    import statistics

    from foundry import native
    from foundry.runtime import MicroModel

    with open(ROOT / "blueprints/assistant_intents_zh/data/validation.csv", encoding="utf-8") as fh:
        zh = [r["text"] for r in csv.DictReader(fh)][:500]
    en = [json.loads(line)["text"] for line in (
        ROOT / "blueprints/clinc150/data/val.jsonl").read_text(encoding="utf-8").splitlines()][:500]
    sets = {"MASSIVE zh val": zh, "CLINC val": en, "both": zh + en}
    tasks = {"is_question": ROOT / "models", "confirmation": ROOT / "models",
             "intent_zh": models_dir, "intent_clinc": models_dir}
    backends = ["numpy"] + (["native"] if native.available() else [])
    models = {(t, b): MicroModel.load(t, models_dir=d, backend=b)
              for t, d in tasks.items() for b in backends
              if (Path(d) / f"{t}_preprocessor.bin").is_file()}
    samples: dict[tuple[str, str], list[list[float]]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            predict, times = model.predict, []
            for text in zh + en:
                t0 = time.perf_counter_ns()
                predict(text)
                times.append(time.perf_counter_ns() - t0)
            samples[key].append(times)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"## Single-query latency (`MicroModel.predict`), p50 µs per text set, median of "
          f"{rounds} rounds (load average {load})\n")
    print("| task | labels | backend | " + " | ".join(f"{name} ({len(t)})" for name, t in
                                                        sets.items())
          + " | ratio to the binary models' mean, per set |")
    print("|---|---:|---|" + "---:|" * len(sets) + "---|")

    def p50(key: tuple[str, str], lo: int, hi: int) -> float:
        return statistics.median(statistics.median(r[lo:hi]) for r in samples[key]) / 1000

    bounds = {"MASSIVE zh val": (0, len(zh)), "CLINC val": (len(zh), len(zh) + len(en)),
              "both": (0, len(zh) + len(en))}
    for b in backends:
        base = {s: statistics.mean(p50((t, b), *bounds[s]) for t in ("is_question",
                                                                      "confirmation")
                                   if (t, b) in samples) for s in sets}
        for t in tasks:
            if (t, b) not in samples:
                continue
            cells = [p50((t, b), *bounds[s]) for s in sets]
            ratios = " / ".join(f"{c / base[s]:.2f}x" for c, s in zip(cells, sets, strict=True))
            print(f"| {t} | {len(models[(t, b)].labels)} | {b} | "
                  + " | ".join(f"{c:.2f}" for c in cells) + f" | {ratios} |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blueprints", nargs="+", default=list(BLUEPRINTS))
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/foundry-bench-intents"))
    parser.add_argument("--latency", type=Path, default=None, metavar="MODELS_DIR",
                        help="only time single queries of the benchmark tasks in MODELS_DIR")
    args = parser.parse_args(argv)
    if args.latency is not None:
        latency(args.latency)
        return 0
    print(f"# bench/intents.py — {os.cpu_count()} CPUs\n")
    for blueprint in args.blueprints:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        folder, wall, log = forge(blueprint, args.models_dir)
        print(f"(load average before the forge: {load}; after: "
              f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())})\n")
        report(blueprint, folder, args.models_dir, wall, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
