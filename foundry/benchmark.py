"""Held-out test files, out-of-scope answers and many-label reports (the evaluate stage).

A task's dataset files of role ``test`` (see :mod:`foundry.datasets`) are read only here:
:func:`evaluate_heldout` scores the trained model on them, at the operating point chosen
before (the threshold of the evaluate stage, chosen on dev data), and writes
``evaluate/<task>/heldout.json`` with the predictions in ``heldout.csv``.

Out of scope: a task with ``out_of_scope: <label>`` answers that label whenever the model is
not confident (top probability below the threshold). :func:`out_of_scope_threshold` picks the
threshold on dev data: the best in-scope accuracy among the thresholds whose out-of-scope
recall reaches ``evaluate.out_of_scope_recall``. In-scope accuracy counts an in-scope row
answered out-of-scope as wrong; out-of-scope recall is the share of out-of-scope rows answered
out-of-scope (Larson et al., 2019).

Many labels: :func:`confused_pairs` (the most frequent gold -> predicted confusions, a table
that stays readable at 150 labels) and :func:`plot_confusion` (a heat map with labels grouped
by their name's prefix, row-normalised, log colour scale).

Baselines (``evaluate.baselines: true``): fastText and the original recipe (scikit-learn
``char_wb`` 1-4 TF-IDF + ``LogisticRegression(C=20)``) fitted on the same refined training rows
in the same run, scored on the same test rows (:func:`baseline_table`), beside the published
results shipped with the blueprint (``dataset.published``, a CSV).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from foundry.blueprint import Blueprint, Task
from foundry.datasets import load_dataset
from foundry.runs import atomic_write_text, stage_dir, write_json

Log = Callable[[str], None]
HELDOUT_JSON = "heldout.json"
HELDOUT_CSV = "heldout.csv"
PAIRS_CSV = "confused_pairs.csv"
OOS_CURVE_CSV = "oos_curve.csv"
BASELINES_CSV = "baselines.csv"


# --------------------------------------------------------------------------- out of scope


def answers(proba: np.ndarray, labels: Sequence[str], threshold: float,
            out_of_scope: str | None) -> np.ndarray:
    """The label each row is answered with: the top label, or ``out_of_scope`` when the top
    probability is below ``threshold`` (only for a task that declares one)."""
    top = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
    if out_of_scope is None:
        return top
    return np.where(proba.max(axis=1) >= threshold, top, out_of_scope)


def oos_metrics(gold: Sequence[str], answered: Sequence[str], out_of_scope: str
                ) -> dict[str, float]:
    """In-scope accuracy and out-of-scope recall (and precision) of answered labels."""
    gold, answered = np.asarray(gold, dtype=object), np.asarray(answered, dtype=object)
    ins = gold != out_of_scope
    said_oos = answered == out_of_scope
    return {
        "in_scope_accuracy": float((answered[ins] == gold[ins]).mean()) if ins.any() else float("nan"),
        "oos_recall": float(said_oos[~ins].mean()) if (~ins).any() else float("nan"),
        "oos_precision": float((~ins[said_oos]).mean()) if said_oos.any() else float("nan"),
        "in_scope_rows": int(ins.sum()), "oos_rows": int((~ins).sum()),
    }


def oos_curve(proba: np.ndarray, y: np.ndarray, oos_index: int,
              thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """In-scope accuracy and out-of-scope recall for each threshold (default: every distinct
    top probability, plus 0)."""
    top, arg = proba.max(axis=1), proba.argmax(axis=1)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([[0.0], top]))
    ins = y != oos_index
    right = arg == y
    rows = []
    for t in thresholds:
        confident = top >= t
        said_oos = (arg == oos_index) | ~confident
        rows.append({"threshold": float(t),
                     "in_scope_accuracy": float((right & confident & ins).sum() / max(ins.sum(), 1)),
                     "oos_recall": float((said_oos & ~ins).sum() / max((~ins).sum(), 1))})
    return pd.DataFrame(rows)


def out_of_scope_threshold(proba: np.ndarray, y: np.ndarray, oos_index: int,
                           target_recall: float) -> dict[str, Any]:
    """The threshold with the best in-scope accuracy among those whose out-of-scope recall
    is at least ``target_recall`` (ties: the lowest threshold), on held-out rows ``proba``/``y``.

    Raises
    ------
    ValueError
        If ``y`` holds no out-of-scope row (nothing to choose the threshold on).
    """
    if not (y == oos_index).any():
        raise ValueError("no out-of-scope row in the dev data: the out-of-scope threshold "
                         "cannot be chosen; add out-of-scope rows to a dataset file of role dev")
    curve = oos_curve(proba, y, oos_index)
    ok = curve[curve["oos_recall"] >= target_recall]
    best = ok.sort_values(["in_scope_accuracy", "threshold"], ascending=[False, True],
                          kind="stable").iloc[0]
    return {"threshold": float(best["threshold"]), "target_recall": target_recall,
            "dev_in_scope_accuracy": float(best["in_scope_accuracy"]),
            "dev_oos_recall": float(best["oos_recall"]), "dev_rows": int(len(y))}


# --------------------------------------------------------------------------- many labels


def confused_pairs(gold: Sequence[str], predicted: Sequence[str], k: int = 20) -> pd.DataFrame:
    """The ``k`` most frequent confusions ``gold -> predicted``, with the share of the gold
    label's rows each takes."""
    frame = pd.DataFrame({"gold": list(gold), "predicted": list(predicted)})
    per_gold = frame["gold"].value_counts()
    wrong = frame[frame["gold"] != frame["predicted"]]
    if wrong.empty:
        return pd.DataFrame(columns=["gold", "predicted", "count", "share_of_gold"])
    pairs = wrong.value_counts(["gold", "predicted"]).rename("count").reset_index()
    pairs = pairs.sort_values(["count", "gold", "predicted"], ascending=[False, True, True],
                              kind="stable").head(k)
    pairs["share_of_gold"] = (pairs["count"] / pairs["gold"].map(per_gold)).round(4)
    return pairs.reset_index(drop=True)


def plot_confusion(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str],
                   path: Path, title: str) -> Path:
    """A row-normalised confusion heat map readable at 60-150 labels: labels sorted (so a
    name prefix such as ``iot_`` or ``play_`` forms a block), a log colour scale (rare
    confusions stay visible), tick labels sized to the count, the diagonal kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from sklearn.metrics import confusion_matrix

    order = sorted(labels)
    cm = confusion_matrix(list(gold), list(predicted), labels=order).astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(order)
    side = min(22.0, max(6.0, n * 0.14))
    font = max(3.0, min(9.0, 600.0 / max(n, 1)))
    fig, ax = plt.subplots(figsize=(side, side * 0.92))
    masked = np.ma.masked_where(share <= 0, share)
    im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=max(1e-3, 1.0 / max(rows.max(), 1)),
                                                        vmax=1.0), interpolation="nearest")
    ax.set_xticks(range(n), order, rotation=90, fontsize=font)
    ax.set_yticks(range(n), order, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03, label="share of the gold label's rows (log)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_oos_curve(curve: pd.DataFrame, point: dict[str, float], path: Path, title: str,
                   dev_curve: pd.DataFrame | None = None) -> Path:
    """In-scope accuracy against out-of-scope recall as the threshold moves, with the
    operating point (chosen on dev) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.plot(curve["oos_recall"], curve["in_scope_accuracy"], label="test files")
    if dev_curve is not None:
        ax.plot(dev_curve["oos_recall"], dev_curve["in_scope_accuracy"], ls="--", alpha=0.7,
                label="dev (where the threshold was chosen)")
    ax.scatter([point["oos_recall"]], [point["in_scope_accuracy"]], color="red", zorder=3,
               label=f"operating point (threshold {point['threshold']:.3f})")
    ax.set_xlabel("out-of-scope recall")
    ax.set_ylabel("in-scope accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- held-out test


def evaluate_heldout(bp: Blueprint, task: Task, run_dir: Path, trained: Any, threshold: float,
                     *, log: Log = print) -> dict[str, Any] | None:
    """Score the task's ``test`` dataset files once at ``threshold``; None when it has none.

    Writes ``heldout.json`` (metrics), ``heldout.csv`` (every row), ``confused_pairs.csv``,
    ``confusion_heldout.png`` and, with an out-of-scope label, ``oos_curve.csv`` and
    ``oos_curve.png`` (test curve for information: nothing is chosen from it).
    """
    rows = load_dataset(bp, task, "test")
    if not rows:
        return None
    labels = trained.labels
    texts, gold = [r.text for r in rows], [r.label for r in rows]
    proba = trained.predict_proba(texts)
    oos = task.out_of_scope
    answered = answers(proba, labels, threshold, oos)
    argmax = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
    out = stage_dir(run_dir, "evaluate", task.name)
    frame = pd.DataFrame({"text": texts, "gold": gold, "answer": answered, "argmax": argmax,
                          "p": proba.max(axis=1), "file": [r.file for r in rows],
                          "line": [r.line for r in rows]})
    summary: dict[str, Any] = {
        "rows": len(rows), "files": sorted({r.file for r in rows}), "threshold": threshold,
        "accuracy": float(accuracy_score(gold, answered)),
        "macro_f1": float(f1_score(gold, answered, labels=sorted(set(gold)), average="macro",
                                   zero_division=0)),
        "argmax_accuracy": float(accuracy_score(gold, argmax)),
        "labels_in_test": len(set(gold)),
    }
    if oos is not None:
        summary["out_of_scope"] = {**oos_metrics(gold, answered, oos), "label": oos}
        summary["out_of_scope_argmax"] = oos_metrics(gold, argmax, oos)
        index = {lab: i for i, lab in enumerate(labels)}
        curve = oos_curve(proba, np.array([index[g] for g in gold]), index[oos],
                          np.linspace(0.0, 1.0, 101))
        atomic_write_text(out / OOS_CURVE_CSV, curve.to_csv(index=False))
        dev_curve = None
        if len(trained.oof_y):
            dev_curve = oos_curve(trained.oof_proba, trained.oof_y, index[oos],
                                  np.linspace(0.0, 1.0, 101))
        point = {"threshold": threshold, **{k: summary["out_of_scope"][k]
                                            for k in ("in_scope_accuracy", "oos_recall")}}
        plot_oos_curve(curve, point, out / "oos_curve.png",
                       f"{task.name}: in-scope accuracy vs out-of-scope recall", dev_curve)
    pairs = confused_pairs(gold, answered)
    atomic_write_text(out / PAIRS_CSV, pairs.to_csv(index=False))
    plot_confusion(gold, answered, labels, out / "confusion_heldout.png",
                   f"{task.name}: test files ({len(rows)} rows), row-normalised")
    atomic_write_text(out / HELDOUT_CSV, frame.to_csv(index=False))
    write_json(out / HELDOUT_JSON, summary)
    line = f"{task.name}: test files {len(rows)} rows: accuracy {summary['accuracy']:.4f}"
    if oos is not None:
        o = summary["out_of_scope"]
        line += (f"; in-scope accuracy {o['in_scope_accuracy']:.4f}, out-of-scope recall "
                 f"{o['oos_recall']:.4f} at threshold {threshold:.4f}")
    log(line)
    return summary


def load_heldout(run_dir: Path, task: str) -> dict[str, Any] | None:
    path = Path(run_dir) / "evaluate" / task / HELDOUT_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --------------------------------------------------------------------------- baselines


def _refined_train(run_dir: Path, task: str) -> tuple[list[str], list[str]]:
    from foundry.generate.rawstore import read_jsonl

    rows = list(read_jsonl(Path(run_dir) / "refine" / task / "train.jsonl"))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def baseline_rows(bp: Blueprint, task: Task, run_dir: Path) -> tuple[list[str], list[str]]:
    """The rows the baselines are fitted on: the rows our model was fitted on (the refined
    training rows, plus the dev rows that join training with ``train.refit_on_dev``)."""
    texts, labels = _refined_train(run_dir, task.name)
    if bp.spec.train.refit_on_dev:
        from foundry.train_dev import dev_rows, dev_rows_near_held_out

        dev_texts, dev_labels = dev_rows(bp, task)
        excluded = dev_rows_near_held_out(bp, task, dev_texts)
        keep = [i for i in range(len(dev_texts)) if i not in excluded]
        texts, labels = texts + [dev_texts[i] for i in keep], labels + [dev_labels[i] for i in keep]
    return texts, labels


def original_recipe(train_texts: list[str], train_labels: list[str], seed: int = 42) -> Any:
    """The project's original recipe: scikit-learn ``char_wb`` 1-4 TF-IDF +
    ``LogisticRegression(C=20)`` (lbfgs), as in the issue's reference numbers."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4)),
                         LogisticRegression(C=20, max_iter=3000, random_state=seed)
                         ).fit(train_texts, train_labels)


def _fasttext_input(text: str) -> str:
    """Normalised text with every character spaced (CJK) or word tokens (space-separated
    scripts), so fastText's word n-grams see characters or words."""
    from foundry.textspec import TextSpec, normalize

    norm = normalize(text, TextSpec())
    if any("\u4e00" <= ch <= "\u9fff" for ch in norm):
        return " ".join(ch for ch in norm if ch != " ")
    return norm


class FastTextBaseline:
    """fastText supervised (char/word uni+bigrams, 50 epochs, lr 0.5, dim 100, one thread)."""

    def __init__(self, train_texts: list[str], train_labels: list[str], seed: int = 0) -> None:
        import fasttext

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False,
                                         encoding="utf-8") as fh:
            for text, label in zip(train_texts, train_labels, strict=True):
                fh.write(f"__label__{label} {_fasttext_input(text)}\n")
            path = fh.name
        try:
            self.model = fasttext.train_supervised(path, epoch=50, lr=0.5, wordNgrams=2,
                                                   dim=100, verbose=0, thread=1, seed=seed)
        finally:
            os.unlink(path)

    def predict_proba_top(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        # model.predict breaks under NumPy 2 (copy=False); the C++ binding does not.
        labels, probs = [], []
        for text in texts:
            p, label = self.model.f.predict(_fasttext_input(text) + "\n", 1, 0.0, "strict")[0]
            labels.append(label.removeprefix("__label__"))
            probs.append(p)
        return labels, np.asarray(probs)


def baseline_table(bp: Blueprint, task: Task, run_dir: Path, heldout: dict[str, Any],
                   *, log: Log = print) -> pd.DataFrame:
    """Our model, fastText and the original recipe on the same test rows; each baseline is
    fitted on the same rows as our model in this run (:func:`baseline_rows`). With an out-of-scope label the
    baselines answer it by argmax (they were trained with it as a class) and, for the original
    recipe, also with the issue's fixed 0.3 probability threshold. Also written to
    ``evaluate/<task>/baselines.csv``."""
    train_texts, train_labels = baseline_rows(bp, task, run_dir)
    frame = pd.read_csv(Path(run_dir) / "evaluate" / task.name / HELDOUT_CSV,
                        keep_default_na=False)
    texts, gold = frame["text"].tolist(), frame["gold"].tolist()
    oos = task.out_of_scope
    rows = [_row("Model Foundry (this run)", gold, frame["answer"].tolist(), oos, None,
                 f"threshold {heldout['threshold']:.3f} chosen on dev"
                 + (" (cross-fitted halves; fitted on train + dev)"
                    if bp.spec.train.refit_on_dev else ""))]
    t0 = time.monotonic()
    try:
        ft = FastTextBaseline(train_texts, train_labels)
    except ImportError:
        log("fastText is not installed (pip install fasttext-wheel): its row is skipped")
    else:
        pred, _ = ft.predict_proba_top(texts)
        rows.append(_row("fastText (same rows, this run)", gold, pred, oos,
                         time.monotonic() - t0, "argmax"))
    t0 = time.monotonic()
    orig = original_recipe(train_texts, train_labels, bp.spec.train.seed)
    fit_s = time.monotonic() - t0
    proba = orig.predict_proba(texts)
    classes = list(orig.classes_)
    rows.append(_row("original recipe: char_wb 1-4 + LR C=20 (same rows, this run)", gold,
                     answers(proba, classes, 0.0, None).tolist(), oos, fit_s, "argmax"))
    if oos is not None:
        rows.append(_row("original recipe, threshold 0.3", gold,
                         answers(proba, classes, 0.3, oos).tolist(), oos, fit_s, "threshold 0.3"))
    table = pd.DataFrame(rows)
    atomic_write_text(Path(run_dir) / "evaluate" / task.name / BASELINES_CSV,
                      table.to_csv(index=False))
    return table


def _row(system: str, gold: list[str], predicted: list[str], oos: str | None,
         fit_s: float | None, rule: str) -> dict[str, Any]:
    row: dict[str, Any] = {"system": system, "rule": rule,
                           "accuracy": round(float(accuracy_score(gold, predicted)), 4)}
    if oos is not None:
        m = oos_metrics(gold, predicted, oos)
        row["in_scope_accuracy"] = round(m["in_scope_accuracy"], 4)
        row["oos_recall"] = round(m["oos_recall"], 4)
    row["fit_s"] = None if fit_s is None else round(fit_s, 1)
    return row


def published_table(bp: Blueprint, task: Task) -> pd.DataFrame | None:
    """The published results shipped with the blueprint (``dataset.published``), if any."""
    if task.dataset is None or not task.dataset.published:
        return None
    return pd.read_csv(bp.path(task.dataset.published))
