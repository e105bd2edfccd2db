"""What do int8 weights cost? The shipped binary model against the float model it was folded
from, on the real-text dev split and the run's test split.

    .venv/bin/python bench/int8.py                       # default blueprint, latest run
    .venv/bin/python bench/int8.py --run-dir runs/text_classification/<id>

The train stage folds a binary logistic model (a logistic regression, or a linear model
under a Platt map) into two int8 columns (``foundry.quantized.Int8Logistic``, 2 bytes an
n-gram in the ``.onnx`` instead of 8) and keeps the float model it came from
(``source_``). This prints, per task, the accuracy of both on the same rows, how many answers
differ, and the largest difference of the top probability. A task whose model could not be
folded (an isotonic map, more than two labels) says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from foundry.blueprint import load_blueprint  # noqa: E402
from foundry.quantized import Int8Logistic  # noqa: E402
from foundry.realtext import load_real  # noqa: E402
from foundry.runs import latest_run_dir, require_stage_output, resolve_run_dir  # noqa: E402
from foundry.train import load_split  # noqa: E402
from foundry.trained import load_trained  # noqa: E402


def compare(pipe, texts: list[str], gold: np.ndarray) -> dict:
    """Accuracy of the int8 pipeline and of its float source on ``texts``."""
    x = pipe.named_steps["tfidf"].transform(texts)
    x32 = x.astype(np.float32).astype(np.float64)  # the row every runtime feeds the graph
    clf = pipe.named_steps["clf"]
    p_int8 = clf.predict_proba(x32)
    p_float = clf.source_.predict_proba(x32)
    return {"n": len(texts), "acc_float": float((p_float.argmax(1) == gold).mean()),
            "acc_int8": float((p_int8.argmax(1) == gold).mean()),
            "changed": int((p_int8.argmax(1) != p_float.argmax(1)).sum()),
            "max_dp": float(np.abs(p_int8 - p_float).max()) if len(texts) else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("blueprint", nargs="?", default="text_classification")
    ap.add_argument("--run-dir", default="", help="run folder or id; default: the latest run")
    args = ap.parse_args(argv)
    bp = load_blueprint(args.blueprint)
    run = resolve_run_dir(bp.name, args.run_dir or latest_run_dir(bp.name))
    print(f"run {run}\n")
    print("| task | split | rows | float acc | int8 acc | answers changed | max |Δp| |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for task in bp.tasks:
        trained = load_trained(run, task.name)
        if not isinstance(trained.pipeline.named_steps["clf"], Int8Logistic):
            print(f"| {task.name} | not folded ({type(trained.pipeline.named_steps['clf']).__name__}) "
                  "| | | | | |")
            continue
        labels = task.label_names
        dev = load_real(bp, task, "dev")
        test = load_split(require_stage_output(run, "refine", task.name, "test.jsonl"), labels)
        splits = {"real-text dev": ([r.text for r in dev],
                                    np.array([labels.index(r.label) for r in dev])),
                  "test": (test.texts, np.asarray(test.y))}
        for name, (texts, gold) in splits.items():
            r = compare(trained.pipeline, texts, gold)
            print(f"| {task.name} | {name} | {r['n']} | {r['acc_float']:.2%} | "
                  f"{r['acc_int8']:.2%} | {r['changed']} | {r['max_dp']:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
