"""How much should labels share their groups' scores? Cross-validate ``prefix_weight`` and
``suffix_weight`` of ``tfidf_svm_int8`` on a dataset blueprint's train files.

    .venv/bin/python bench/label_groups.py                          # assistant_intents_zh
    .venv/bin/python bench/label_groups.py --prefix 0,1,2 --suffix 0,0.5 --folds 3

Only the rows of role ``train`` are read (never dev, never test). They are split into
stratified folds; per fold the blueprint's text spec is fitted on the other folds, and one
:class:`foundry.quantized.QuantizedLinearSVC` (the classifier the forge ships, int8 rounding
included) is fitted per (prefix, suffix) pair at the blueprint's first ``C``. It prints the
mean accuracy and macro-F1 over the folds per pair, best first; the (0, 0) row is the plain
SVM. ``docs/training.md``, "Many labels: label groups", quotes its table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foundry.blueprint import load_blueprint  # noqa: E402
from foundry.datasets import load_dataset  # noqa: E402
from foundry.train import text_spec  # noqa: E402
from foundry.trainers import Recipe, get_trainer  # noqa: E402


def parse_floats(text: str) -> list[float]:
    """``"0,0.5,1"`` → ``[0.0, 0.5, 1.0]`` (an argparse ``type``)."""
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def cross_validate(recipe: Recipe, texts: list[str], y: np.ndarray, pairs: list[tuple[float, float]],
                   params: dict, folds: int, seed: int) -> dict[tuple[float, float], list[tuple[float, float]]]:
    """``(accuracy, macro-F1)`` per fold for every ``(prefix_weight, suffix_weight)`` pair."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    scores: dict[tuple[float, float], list[tuple[float, float]]] = {p: [] for p in pairs}
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    texts_arr = np.asarray(texts, dtype=object)
    for fit_rows, held in split.split(texts_arr, y):
        vectorizer = recipe.vectorizer(params)
        x_fit = vectorizer.fit_transform(list(texts_arr[fit_rows]))
        x_held = vectorizer.transform(list(texts_arr[held]))
        for prefix, suffix in pairs:
            clf = recipe.classifier({**params, "prefix_weight": prefix,
                                     "suffix_weight": suffix}, "none")
            pred = clf.fit(x_fit, y[fit_rows]).predict(x_held)
            scores[(prefix, suffix)].append((float((pred == y[held]).mean()),
                                             float(f1_score(y[held], pred, average="macro"))))
    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("blueprint", nargs="?", default="assistant_intents_zh")
    ap.add_argument("--prefix", type=parse_floats, default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--suffix", type=parse_floats, default=[0.0, 0.5, 1.0])
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)

    bp = load_blueprint(args.blueprint)
    task = bp.tasks[0]
    rows = load_dataset(bp, task, "train")
    if not rows:
        ap.error(f"{args.blueprint}: task {task.name!r} has no dataset rows of role train")
    labels = task.label_names
    texts = [r.text for r in rows]
    y = np.asarray([labels.index(r.label) for r in rows])
    cfg = bp.spec.train
    params = {"C": cfg.grid.get("C", [1.0])[0]}
    recipe = Recipe(get_trainer("tfidf_svm_int8"), text_spec(bp, task),
                    bp.features(task).sublinear_tf, cfg.seed, labels)
    pairs = [(p, s) for p in args.prefix for s in args.suffix]
    t0 = time.monotonic()
    scores = cross_validate(recipe, texts, y, pairs, params, args.folds, cfg.seed)
    print(f"{args.blueprint} / {task.name}: {len(rows)} train rows, {len(labels)} labels, "
          f"{args.folds}-fold CV, C={params['C']}, {time.monotonic() - t0:.0f} s\n")
    print("| prefix_weight | suffix_weight | CV accuracy | CV macro-F1 |")
    print("|---:|---:|---:|---:|")
    table = sorted(((np.mean([a for a, _ in s]), np.mean([f for _, f in s]), p)
                    for p, s in scores.items()), reverse=True)
    for acc, f1, (prefix, suffix) in table:
        print(f"| {prefix:g} | {suffix:g} | {acc:.2%} | {f1:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
