"""Stage 4: measure each trained model, choose its confidence threshold, run the exam gate.

Per task, :func:`evaluate_stage`

1. chooses the confidence threshold on held-out data: the lowest top-probability at which
   confident answers reach ``evaluate.target_precision`` (:func:`choose_threshold`), taken on
   the out-of-fold probabilities of the training rows (each from a fold model that did
   not see the row), on the refined test split (grouped away from the training rows, so
   closer to new input) and, when the task has one, on the real-text dev split (real,
   human-written text that never trained), and the highest kept. Out-of-fold scores alone
   proved optimistic, and generated text alone far too optimistic for real text;
2. scores the refined test split and the dev split (accuracy, macro-F1, expected calibration
   error, and the coverage and precision of confident answers at that threshold, with a
   one-sided 95% Clopper-Pearson lower bound on that precision), plus a cross-fitted,
   out-of-sample estimate of that coverage and precision (:func:`cross_fitted_confidence`);
   on the dev split also per sub-category and per length, and its most confident errors;
   the hand-written exam is the independent check;
3. takes the hand-written exam (``exam/<task>.jsonl``) and compares its accuracy with
   ``evaluate.exam_min_accuracy``;
4. writes ``evaluate/<task>/``: ``summary.json``, ``errors.csv`` (every misclassified test,
   dev and exam case with the n-grams that pushed it), ``exam.csv``, ``dev.csv``,
   ``risk_coverage.csv``, ``reliability.csv`` and PNG plots.

If an exam falls short and ``allow_exam_failures`` is false, :class:`ExamGateError` is
raised after every task has been evaluated and written, listing the failed cases.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from foundry.benchmark import answers, evaluate_heldout, out_of_scope_threshold
from foundry.blueprint import Blueprint, Task
from foundry.datasets import load_dataset
from foundry.errors import ConfigError, GateError
from foundry.familiarity import MIN_ORDER, Familiarity, gate_for, unfamiliarity_many
from foundry.jsonl import iter_jsonl
from foundry.realtext import corpus_family, load_real
from foundry.reflex import check_no_contradiction, rule_hits, task_reflex
from foundry.runs import (
    atomic_write_bytes,
    atomic_write_text,
    require_stage_output,
    stage_dir,
)
from foundry.stamps import check_fresh, write_stamp
from foundry.summaries import EvalSummary
from foundry.textspec import normalize
from foundry.train import Split, load_split
from foundry.trained import TrainedModel, expected_calibration_error, load_trained
from foundry.trainers import class_weights, get_trainer, log_odds_weights, vocabulary_terms

Log = Callable[[str], None]

SUMMARY_FILE = EvalSummary.file_name
ERRORS_FILE = "errors.csv"
EXAM_FILE = "exam.csv"
DEV_FILE = "dev.csv"
PLOTS = ("confusion_matrix.png", "reliability.png", "risk_coverage.png", "exam_categories.png")
#: Plots written only for a task with a real-text dev split.
DEV_PLOTS = ("dev_length.png",)
#: Length buckets (normalised characters, ``[low, high)``) of the dev split's length curve.
LENGTH_EDGES = (0, 6, 11, 21, 41, 10**9)
#: Confidence of the Clopper-Pearson lower bound reported for confident precision.
BOUND_CONFIDENCE = 0.95
#: How many failed exam cases an ExamGateError message lists (all are in errors.csv).
MAX_LISTED_FAILURES = 100
RELIABILITY_BINS = 15
#: Distance kept between a chosen threshold and the probabilities it was chosen from, far
#: above float32 rounding (~6e-8 near 1) and far below any meaningful probability step.
THRESHOLD_MARGIN = 1e-6
#: ``pushing_ngrams`` of an error whose n-grams are all unknown or push the other way: the
#: intercept (the class prior) decided.
NO_PUSH = "(no n-gram pushed it: unknown n-grams, the intercept decided)"
#: Columns an error table gains for a model of three or more labels whose weights give
#: log-odds (:func:`foundry.trainers.log_odds_weights`): the model's top label (``predicted``
#: unless the answer was the out-of-scope label), the runner-up, ``log(p_top / p_runner_up)``
#: and the n-grams' shares of it (:func:`runner_up_ngrams`).
RUNNER_UP_COLUMNS = ("top", "runner_up", "log_odds", "vs_runner_up")


class ExamGateError(GateError):
    """A model's exam accuracy is below ``evaluate.exam_min_accuracy``.

    ``failures`` maps each failing task to its evaluation summary.
    """

    def __init__(self, message: str, failures: dict[str, EvalSummary]) -> None:
        super().__init__(message)
        self.failures = failures


class ExamDataError(ConfigError):
    """An exam file is unusable; the message names the file, line and field."""


@dataclass
class EvalResult:
    """Evaluation of one task: its summary (``summary.json``) plus the per-case tables."""

    task: str
    summary: EvalSummary
    test: pd.DataFrame
    exam: pd.DataFrame
    errors: pd.DataFrame
    risk_coverage: pd.DataFrame
    reliability: pd.DataFrame
    out_dir: Path
    #: The risk-coverage curve of the held-out training predictions the threshold came from.
    oof_risk_coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Per-case predictions on the real-text dev split (empty when the task has none).
    dev: pd.DataFrame = field(default_factory=pd.DataFrame)
    dev_risk_coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return self.summary.threshold

    @property
    def exam_passed(self) -> bool:
        return self.summary.exam_passed


# --------------------------------------------------------------------------- measures


def choose_threshold(proba: np.ndarray, y: np.ndarray, target_precision: float, *,
                     margin: float = THRESHOLD_MARGIN) -> float:
    """The lowest top-probability threshold whose confident answers reach the target precision.

    Answers with ``max(p) >= threshold`` are confident. Among the distinct top-probabilities
    of ``proba`` the one keeping the most answers at ``precision >= target_precision`` wins,
    lowered by ``margin``; it is never below ``1/K`` (every answer's top probability is at
    least that). If even the most confident group misses the target, the threshold is
    ``margin`` above the highest probability seen, so that no answer is confident, but never
    above 1: a ``.bin`` holds a threshold in [0, 1] (docs/preprocessor-spec.md, rule B11), so
    when the model is wrong at probability ~1 only answers of probability exactly 1 stay
    confident.

    The margin exists because runtimes compute float32 probabilities: a group of answers
    sitting exactly on the threshold (calibration maps and texts with no known n-gram give
    many identical probabilities) must land on the same side in every runtime.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("cannot choose a threshold without held-out predictions")
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    precision = np.cumsum(correct) / np.arange(1, len(conf) + 1)
    # A threshold keeps a whole group of tied probabilities: judge only each group's end.
    last_of_group = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(last_of_group & (precision >= target_precision))
    if len(ok) == 0:
        return float(min(conf[0] + margin, 1.0))
    return float(max(conf[ok[-1]] - margin, 1.0 / proba.shape[1]))


def cross_fitted_confidence(
    proba: np.ndarray, y: np.ndarray, target_precision: float, floor: float, *,
    seed: int, folds: int = 2,
) -> tuple[float, float]:
    """Out-of-sample ``(coverage, precision)`` of the threshold rule on the test split.

    The rule is "``max(floor, threshold chosen on the test split)``", and it saw the test
    split, so its in-sample precision meets the target by construction. Cross-fitting
    measures it honestly: the split is cut in ``folds`` seeded, stratified parts; each part
    is scored with the threshold chosen on the others, and the answers are pooled.
    """
    y = np.asarray(y)
    if len(y) < 2 * folds:
        return float("nan"), float("nan")
    parts = np.zeros(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for k in np.unique(y):  # stratified: deal each class's shuffled rows round-robin
        idx = rng.permutation(np.flatnonzero(y == k))
        parts[idx] = np.arange(len(idx)) % folds
    confident = np.zeros(len(y), dtype=bool)
    for f in range(folds):
        rest = parts != f
        t = max(floor, choose_threshold(proba[rest], y[rest], target_precision))
        confident[~rest] = proba[~rest].max(axis=1) >= t
    correct = proba.argmax(axis=1) == y
    precision = float(correct[confident].mean()) if confident.any() else float("nan")
    return float(confident.mean()), precision


def risk_coverage_curve(proba: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Coverage, precision and risk (1 - precision) of confident answers at every threshold
    (the distinct top-probabilities, highest first)."""
    proba = np.asarray(proba, dtype=np.float64)
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    n = np.arange(1, len(conf) + 1)
    precision = np.cumsum(correct) / n
    last = np.r_[conf[1:] != conf[:-1], True] if len(conf) else np.zeros(0, dtype=bool)
    return pd.DataFrame({
        "threshold": conf[last],
        "coverage": n[last] / max(len(conf), 1),
        "precision": precision[last],
        "risk": 1.0 - precision[last],
        "answered": n[last],
    })


def reliability_table(confidence: np.ndarray, correct: np.ndarray,
                      bins: int = RELIABILITY_BINS) -> pd.DataFrame:
    """Per equal-width confidence bin: count, mean confidence and accuracy (empty bins kept)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    idx = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        rows.append({
            "bin_low": b / bins, "bin_high": (b + 1) / bins, "count": int(mask.sum()),
            "mean_confidence": float(confidence[mask].mean()) if mask.any() else np.nan,
            "accuracy": float(correct[mask].mean()) if mask.any() else np.nan,
        })
    return pd.DataFrame(rows)


def confident_stats(proba: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(coverage, precision)`` of answers with top probability >= ``threshold``
    (precision is NaN when nothing is confident)."""
    conf = np.asarray(proba).max(axis=1)
    confident = conf >= threshold
    correct = np.asarray(proba).argmax(axis=1) == np.asarray(y)
    coverage = float(confident.mean()) if len(conf) else float("nan")
    precision = float(correct[confident].mean()) if confident.any() else float("nan")
    return coverage, precision


def clopper_pearson_lower(successes: int, n: int,
                          confidence: float = BOUND_CONFIDENCE) -> float | None:
    """One-sided lower confidence bound of a binomial proportion, exact (Clopper-Pearson).

    With probability ``confidence`` the true proportion is at least the bound: for 700 of
    700 confident answers right it is 0.9957, for 693 of 700 (99%) 0.9813. None when
    ``n == 0``.
    """
    if n <= 0:
        return None
    if successes <= 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, successes, n - successes + 1))


@dataclass(frozen=True)
class ConfidentAnswers:
    """How the confident answers of a set of cases fared."""

    cases: int
    confident: int
    correct: int

    @property
    def coverage(self) -> float | None:
        return self.confident / self.cases if self.cases else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.confident if self.confident else None

    @property
    def precision_lower_bound(self) -> float | None:
        return clopper_pearson_lower(self.correct, self.confident)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> ConfidentAnswers:
        """From a :func:`predict_frame` table (``confident`` and ``correct`` columns)."""
        confident = frame["confident"].to_numpy(dtype=bool)
        correct = frame["correct"].to_numpy(dtype=bool)
        return cls(len(frame), int(confident.sum()), int((confident & correct).sum()))


#: The columns of :func:`category_table` and :func:`corpus_table` after their group keys.
ANSWER_COLUMNS = ("cases", "accuracy", "confident_share", "confident_precision",
                  "confident_errors", "precision_lower95")


def _answer_columns(part: pd.DataFrame) -> dict[str, Any]:
    """:data:`ANSWER_COLUMNS` of one group of a case table."""
    answers = ConfidentAnswers.of(part)
    return {"cases": len(part), "accuracy": float(part["correct"].mean()),
            "confident_share": answers.coverage, "confident_precision": answers.precision,
            "confident_errors": answers.confident - answers.correct,
            "precision_lower95": answers.precision_lower_bound}


def category_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (gold label, category) of a case table: cases, accuracy, confident share, and
    the precision of the confident answers with its Clopper-Pearson lower bound."""
    rows = [{"gold": gold, "category": category, **_answer_columns(part)}
            for (gold, category), part in frame.groupby(["gold", "category"], sort=True)]
    return pd.DataFrame(rows, columns=["gold", "category", *ANSWER_COLUMNS])


def corpus_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per source corpus of a real-text case table (its ``corpus`` column, file part dropped:
    ``kdconv/film_dev`` -> ``kdconv``): the columns of :func:`category_table`. Each corpus is
    one kind of text (replies to an assistant, chit-chat between friends, ...), so the table
    shows which kinds the model holds up on, which one overall figure hides."""
    rows = [{"corpus": corpus, **_answer_columns(part)}
            for corpus, part in frame.groupby(frame["corpus"].map(corpus_family), sort=True)]
    return pd.DataFrame(rows, columns=["corpus", *ANSWER_COLUMNS])


def length_table(frame: pd.DataFrame, edges: tuple[int, ...] = LENGTH_EDGES) -> pd.DataFrame:
    """Accuracy, confident share and confident precision per length bucket (characters of
    the normalised text, ``[low, high)``)."""
    from foundry.textspec import normalize

    lengths = np.asarray([len(normalize(t)) for t in frame["text"]])
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        part = frame[(lengths >= low) & (lengths < high)]
        answers = ConfidentAnswers.of(part)
        rows.append({"length": f"{low}-{high - 1}" if high < 10**9 else f"{low}+",
                     "cases": len(part),
                     "accuracy": float(part["correct"].mean()) if len(part) else None,
                     "confident_share": answers.coverage,
                     "confident_precision": answers.precision})
    return pd.DataFrame(rows)


def most_confident_errors(frame: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """The ``k`` wrong answers with the highest top probability, most confident first."""
    wrong = frame[~frame["correct"]]
    return wrong.sort_values("p", ascending=False, kind="stable").head(k).reset_index(drop=True)


# --------------------------------------------------------------------------- cases


def load_exam(path: Path, labels: list[str]) -> pd.DataFrame:
    """Read an exam JSONL file: ``{"text", "label", "category", "hard", "note"}`` rows.

    Raises
    ------
    FileNotFoundError
        If the exam file does not exist.
    ExamDataError
        On invalid JSON, a non-string text or an unknown label, naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exam file not found (named by the blueprint's tasks[].exam)")
    rows = []
    for where, row in iter_jsonl(path, error=ExamDataError):
        if not isinstance(row.get("text"), str):
            raise ExamDataError(f"{where}: field 'text' must be a string, got {row.get('text')!r}")
        if row.get("label") not in labels:
            raise ExamDataError(
                f"{where}: field 'label' is {row.get('label')!r}, not one of {', '.join(labels)}"
            )
        rows.append({
            "text": row["text"], "gold": row["label"], "category": str(row.get("category", "")),
            "hard": bool(row.get("hard", False)), "note": str(row.get("note", "")),
        })
    return pd.DataFrame(rows, columns=["text", "gold", "category", "hard", "note"])


def exam_examples(bp: Blueprint, task: Task, per_label: int = 3) -> pd.DataFrame:
    """A few exam cases per label (``text``, ``gold``, ``category``) to show a model answering.

    Cases are taken in file order, one category at a time, so the examples cover the label's
    sub-categories before repeating one.
    """
    exam = load_exam(bp.path(task.exam), task.label_names)
    picked = []
    for label in task.label_names:
        cases = exam[exam["gold"] == label]
        firsts = cases.groupby("category", sort=False).head(1)
        picked.append(pd.concat([firsts, cases.drop(firsts.index)]).head(per_label))
    return pd.concat(picked)[["text", "gold", "category"]].reset_index(drop=True)


def unfamiliar(trained: TrainedModel, texts: list[str], min_order: int) -> np.ndarray:
    """Unfamiliarity of each text for the model's vocabulary (:mod:`foundry.familiarity`)."""
    from foundry.textspec import Analyzer

    return unfamiliarity_many(texts, Analyzer(trained.spec),
                              trained.pipeline.named_steps["tfidf"].vocabulary_, min_order)


#: Non-admitted rows' probabilities are scaled by this in :func:`gated`: far below any
#: threshold, with the argmax (the answer) unchanged.
_SHUT = 1e-12


def gated(proba: np.ndarray, admitted: np.ndarray) -> np.ndarray:
    """Probabilities as the threshold functions should see them under the unfamiliarity gate:
    rows the gate does not admit can never be confident (their top probability becomes
    ~0), while their answer (the argmax) stays the same."""
    proba = np.asarray(proba, dtype=np.float64)
    return np.where(np.asarray(admitted, dtype=bool)[:, None], proba, proba * _SHUT)


def predict_frame(trained: TrainedModel, texts: list[str], gold: list[str],
                  threshold: float, familiarity: Familiarity | None = None,
                  out_of_scope: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-case predictions: ``predicted``, ``p`` (its probability), ``p_gold``,
    ``unfamiliar`` (with a gate), ``confident``, ``correct``; plus the probability matrix.

    ``confident`` is ``p >= threshold`` and, with ``familiarity``, the gate admitting it.
    With ``out_of_scope`` (the task's out-of-scope label) an answer that is not confident is
    that label, as at run time."""
    labels = trained.labels
    proba = trained.predict_proba(texts) if texts else np.zeros((0, len(labels)))
    pred = proba.argmax(axis=1)
    gold_idx = np.asarray([labels.index(g) for g in gold], dtype=np.int64)
    frame = pd.DataFrame({
        "text": texts,
        "gold": gold,
        "predicted": [labels[i] for i in pred],
        "p": proba.max(axis=1) if len(texts) else [],
        "p_gold": proba[np.arange(len(texts)), gold_idx] if len(texts) else [],
    })
    frame["confident"] = frame["p"] >= threshold
    if familiarity is not None:
        frame["unfamiliar"] = unfamiliar(trained, texts, familiarity.min_order) \
            if texts else []
        frame["confident"] &= frame["unfamiliar"] <= familiarity.max_unfamiliar
    if out_of_scope is not None:
        frame.loc[~frame["confident"], "predicted"] = out_of_scope
    frame["correct"] = frame["gold"] == frame["predicted"]
    return frame, proba


def pushing_ngrams(trained: TrainedModel, text: str, towards: str, against: str,
                   k: int = 6) -> list[tuple[str, float]]:
    """The n-grams of ``text`` that most pushed the model to ``towards`` rather than
    ``against``: feature value x (weight of ``towards`` - weight of ``against``), largest
    first, positive contributions only.

    For a calibrated model the weights are those of the linear model inside the calibrator
    (calibration is monotone in its score, so the direction of each push is the same). For a
    model of three or more labels with log-odds weights (:func:`log_odds_weights`: the int8
    SVM with its temperature, a multinomial logistic regression) the pushes are log-odds.
    """
    pipe = trained.pipeline
    x = pipe.named_steps["tfidf"].transform([text]).tocsr()
    if x.nnz == 0:
        return []
    a, b = trained.labels.index(towards), trained.labels.index(against)
    if get_trainer(trained.trainer).explained_by == "weights":
        clf, n = pipe.named_steps["clf"], len(trained.labels)
        odds = log_odds_weights(clf, n) if n >= 3 else None
        W = odds[0] if odds is not None else class_weights(clf, n)
        contrib = x.data * (W[a, x.indices] - W[b, x.indices])
    else:
        contrib = occlusion_pushes(pipe.named_steps["clf"], x, a, b)
    terms = vocabulary_terms(pipe)
    order = np.lexsort((x.indices, -contrib))
    return [(terms[x.indices[i]], float(contrib[i])) for i in order[:k] if contrib[i] > 0]


def occlusion_pushes(clf: Any, x: Any, towards: int, against: int) -> np.ndarray:
    """Per stored n-gram of the one-row feature matrix ``x``: how much it moved the
    log-odds ``log p[towards] - log p[against]`` of a classifier without weights per n-gram,
    measured by zeroing that one feature (occlusion; the row is not re-normalised)."""
    n = x.nnz
    rows = sp.vstack([x] * (n + 1)).tocsr()
    rows.data[(np.arange(n) + 1) * n + np.arange(n)] = 0.0  # row i + 1 loses feature i
    log_p = np.log(np.clip(clf.predict_proba(rows), 1e-12, 1.0))
    odds = log_p[:, towards] - log_p[:, against]
    return odds[0] - odds[1:]


def format_ngrams(pushes: list[tuple[str, float]]) -> str:
    """``'吗 ' +0.412; '什么' +0.300`` (quoted: padding spaces matter)."""
    return "; ".join(f"{gram!r} {value:+.3f}" for gram, value in pushes)


def runner_up_ngrams(x: Any, W: np.ndarray, b: np.ndarray, labels: list[str],
                     terms: list[str], k: int = 6) -> dict[str, Any]:
    """Why the model's top label beat the runner-up, for one feature row ``x`` (``1 x D``
    sparse) of a model with log-odds weights ``W [K, D]``, ``b [K]``
    (:func:`foundry.trainers.log_odds_weights`).

    Returns the :data:`RUNNER_UP_COLUMNS`: ``top`` and ``runner_up`` (the two highest scores,
    the first of equals first), ``log_odds`` = ``log(p_top / p_runner_up)``, and
    ``vs_runner_up``: the ``k`` n-grams with the largest ``|x_j * (W[top, j] -
    W[runner_up, j])|``, signed (+ pushes the top label); the rest of ``log_odds`` is the
    other n-grams and the intercept difference.
    """
    scores = np.asarray(x @ W.T).ravel() + b
    top, second = np.argsort(-scores, kind="stable")[:2]
    contrib = x.data * (W[top, x.indices] - W[second, x.indices])
    order = np.lexsort((x.indices, -np.abs(contrib)))[:k]
    return {"top": labels[top], "runner_up": labels[second],
            "log_odds": round(float(scores[top] - scores[second]), 6),
            "vs_runner_up": format_ngrams([(terms[x.indices[i]], float(contrib[i]))
                                           for i in order])}


def _runner_up_explainer(trained: TrainedModel) -> Callable[[str], dict[str, Any]] | None:
    """:func:`runner_up_ngrams` of a text, for a model of three or more labels with
    log-odds weights; None otherwise (a binary model's runner-up is the other label: its
    error rows keep ``pushing_ngrams`` alone)."""
    if len(trained.labels) < 3:
        return None
    pipe = trained.pipeline
    weights = log_odds_weights(pipe.named_steps["clf"], len(trained.labels))
    if weights is None:
        return None
    W, b = weights
    tfidf, terms = pipe.named_steps["tfidf"], vocabulary_terms(pipe)
    return lambda text: runner_up_ngrams(tfidf.transform([text]).tocsr(), W, b,
                                         trained.labels, terms)


def error_table(trained: TrainedModel, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every misclassified case of each named frame, with the n-grams that pushed it
    (towards the predicted label rather than the gold one) and, for a model of three or more
    labels with log-odds weights, the :data:`RUNNER_UP_COLUMNS`."""
    explain_top = _runner_up_explainer(trained)
    rows = []
    for split, frame in frames.items():
        for case in frame[~frame["correct"]].itertuples(index=False):
            rows.append({
                "split": split,
                "text": case.text,
                "gold": case.gold,
                "predicted": case.predicted,
                "p": round(float(case.p), 6),
                "p_gold": round(float(case.p_gold), 6),
                "confident": bool(case.confident),
                "category": getattr(case, "category", ""),
                "hard": bool(getattr(case, "hard", False)),
                "note": getattr(case, "note", ""),
                "pushing_ngrams": format_ngrams(
                    pushing_ngrams(trained, case.text, case.predicted, case.gold))
                or NO_PUSH,
            } | (explain_top(case.text) if explain_top else {}))
    columns = ["split", "text", "gold", "predicted", "p", "p_gold", "confident", "category",
               "hard", "note", "pushing_ngrams", *(RUNNER_UP_COLUMNS if explain_top else ())]
    return pd.DataFrame(rows, columns=columns)


def exam_by_category(exam: pd.DataFrame) -> pd.DataFrame:
    """Exam verdict per (gold label, category): cases, accuracy, confident share, hard cases."""
    if exam.empty:
        return pd.DataFrame(columns=["gold", "category", "cases", "accuracy", "confident_share",
                                     "hard_cases", "hard_accuracy"])
    grouped = exam.groupby(["gold", "category"], sort=True)
    table = grouped.agg(cases=("correct", "size"), accuracy=("correct", "mean"),
                        confident_share=("confident", "mean"), hard_cases=("hard", "sum"))
    hard = exam[exam["hard"]].groupby(["gold", "category"])["correct"].mean()
    table["hard_accuracy"] = hard.reindex(table.index)
    return table.reset_index()


# --------------------------------------------------------------------------- plots


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # No timestamps in the PNG metadata, so identical runs give identical plots.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


#: From this many labels the confusion matrices are drawn without a number per cell.
MANY_LABELS = 30


def write_plots(result: EvalResult, labels: list[str]) -> dict[str, Path]:
    """Confusion matrices, reliability diagram, risk-coverage curves, exam per category, and
    the dev split's length curve."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = result.out_dir
    paths = {
        "confusion_matrix": _save_figure(_confusion_figure(plt, result, labels),
                                         out / "confusion_matrix.png"),
        "reliability": _save_figure(_reliability_figure(plt, result, labels),
                                    out / "reliability.png"),
        "risk_coverage": _save_figure(_risk_coverage_figure(plt, result),
                                      out / "risk_coverage.png"),
        "exam_categories": _save_figure(_exam_figure(plt, result), out / "exam_categories.png"),
    }
    if len(result.dev):
        paths["dev_length"] = _save_figure(_dev_length_figure(plt, result), out / "dev_length.png")
    return paths


def _confusion_figure(plt: Any, result: EvalResult, labels: list[str]) -> Any:
    """One confusion matrix per case table (test, exam, real-text dev)."""
    # Each matrix gets room for its tick labels (constrained layout), growing with the labels,
    # so the second matrix's label names never run into the first one.
    k = len(labels)
    # Past MANY_LABELS the cells are not numbered (150 x 150 numbers are unreadable and take
    # minutes to draw) and the figure stops growing: the most confused pairs are a table
    # instead (foundry/benchmark.py confused_pairs).
    many = k > MANY_LABELS
    side = min(max(3.6, 0.32 * k + 1.8), 16.0)
    # Tick labels turn vertical once they would not fit under their column (~0.09 in a char).
    vertical = max(len(label) for label in labels) * 0.09 > 0.8 * side / k
    panels = [("test", result.test), ("exam", result.exam)]
    if len(result.dev):
        panels.append(("real-text dev", result.dev))
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * side + 1.5, side),
                             layout="constrained")
    for ax, (name, frame) in zip(axes, panels, strict=True):
        cm = confusion_matrix(frame["gold"], frame["predicted"], labels=labels) if len(frame) \
            else np.zeros((k, k), dtype=int)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm if not many else np.zeros((0, 0))):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9 if k <= 10 else 6,
                    color="white" if v > cm.max() / 2 else "black")
        tick_font = None if not many else max(3.0, 500.0 / k)
        ax.set_xticks(range(k), labels, rotation=90 if vertical else 0, fontsize=tick_font)
        ax.set_yticks(range(k), labels, fontsize=tick_font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{result.task}: {name} ({len(frame)} cases)")
    return fig


def _reliability_figure(plt: Any, result: EvalResult, labels: list[str]) -> Any:
    """The test split's reliability diagram."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    rel = result.reliability.dropna()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.plot(rel["mean_confidence"], rel["accuracy"], marker="o", label="test split")
    ax.set_xlim(1 / len(labels) - 0.02, 1.01)
    ax.set_ylim(1 / len(labels) - 0.02, 1.01)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result.task}: reliability, ECE {result.summary.ece:.3f}")
    ax.legend(loc="lower right")
    return fig


def _risk_coverage_figure(plt: Any, result: EvalResult) -> Any:
    """Risk-coverage curves of the test split, the out-of-fold rows and the dev split, with
    the chosen threshold's points and the target precision."""
    s = result.summary
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    rc = result.risk_coverage
    ax.plot(rc["coverage"], rc["precision"], label="test split")
    oof = result.oof_risk_coverage
    if len(oof):
        ax.plot(oof["coverage"], oof["precision"], ls=":", color="tab:orange",
                label="training rows, out-of-fold")
    dev_rc = result.dev_risk_coverage
    if len(dev_rc):
        ax.plot(dev_rc["coverage"], dev_rc["precision"], color="tab:green",
                label="real-text dev split")
    if s.confident_precision is not None:
        ax.scatter([s.coverage_at_threshold], [s.confident_precision], color="red",
                   zorder=3, label=f"threshold {s.threshold:.3f}")
    if s.dev_coverage is not None and s.dev_confident_precision is not None:
        ax.scatter([s.dev_coverage], [s.dev_confident_precision], color="darkgreen",
                   marker="s", zorder=3, label="threshold on dev")
    ax.axhline(s.target_precision, ls="--", color="grey", lw=1, label="target precision")
    ax.set_xlabel("coverage (share answered confidently)")
    ax.set_ylabel("precision of confident answers")
    ax.set_title(f"{result.task}: risk-coverage")
    lowest = min([rc["precision"].min(), s.target_precision]
                 + ([oof["precision"].min()] if len(oof) else [])
                 + ([dev_rc["precision"].min()] if len(dev_rc) else []))
    ax.set_ylim(max(0.0, lowest - 0.02), 1.005)
    ax.legend(loc="lower left")
    return fig


def _exam_figure(plt: Any, result: EvalResult) -> Any:
    """Exam accuracy per (label, category), red below ``exam_min_accuracy``."""
    s = result.summary
    cats = exam_by_category(result.exam)
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(cats), 3) + 1))
    if len(cats):
        names = [f"{g} / {c}" for g, c in zip(cats["gold"], cats["category"], strict=True)]
        ax.barh(names, cats["accuracy"], color=["tab:green" if a >= s.exam_min_accuracy
                                                 else "tab:red" for a in cats["accuracy"]])
        ax.axvline(s.exam_min_accuracy, ls="--", color="grey", lw=1)
        ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("exam accuracy")
    ax.set_title(f"{result.task}: exam per category "
                 f"({'passed' if s.exam_passed else 'FAILED'})")
    return fig


def _dev_length_figure(plt: Any, result: EvalResult) -> Any:
    """The real-text dev split's accuracy, confident share and precision per length."""
    curve = length_table(result.dev)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(curve))
    ax.plot(x, curve["accuracy"], marker="o", label="accuracy")
    ax.plot(x, curve["confident_share"], marker="s", label="answered confidently")
    ax.plot(x, curve["confident_precision"], marker="^", label="precision of confident")
    ax.set_xticks(x, [f"{r.length}\n({r.cases})" for r in curve.itertuples()])
    ax.set_xlabel("characters (cases)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{result.task}: real-text dev split by length")
    ax.legend(loc="lower left")
    return fig


# --------------------------------------------------------------------------- stage


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


@dataclass
class _Cases:
    """One task's held-out cases and their probabilities under the unfamiliarity gate
    (:func:`gated`: a row the gate does not admit can never be confident)."""

    familiarity: Familiarity
    test_split: Split
    dev_rows: list
    dev_y: np.ndarray
    oof_proba: np.ndarray
    test_proba: np.ndarray
    dev_proba: np.ndarray | None


def _checked_model(task: Task, run_dir: Path) -> TrainedModel:
    """The task's trained model, refused when its labels are no longer the blueprint's."""
    trained = load_trained(run_dir, task.name)
    if trained.labels != task.label_names:
        raise ValueError(
            f"{run_dir}/train/{task.name}: trained labels {trained.labels} differ from the "
            f"blueprint's {task.label_names}; re-run the train stage"
        )
    return trained


def _gated_cases(bp: Blueprint, task: Task, run_dir: Path, trained: TrainedModel) -> _Cases:
    """The unfamiliarity gate first (set on the dev split, else the test split), then every
    probability the threshold is chosen from, as the gate lets it be confident."""
    labels = trained.labels
    cfg = bp.spec.evaluate
    test_split = load_split(require_stage_output(run_dir, "refine", task.name, "test.jsonl"), labels)
    dev_rows = load_real(bp, task, "dev")
    dev_y = np.asarray([labels.index(r.label) for r in dev_rows], dtype=np.int64)
    u_test = unfamiliar(trained, test_split.texts, MIN_ORDER)
    u_dev = unfamiliar(trained, [r.text for r in dev_rows], MIN_ORDER) if dev_rows else None
    familiarity = gate_for(u_dev if dev_rows else u_test, cfg.familiarity_quantile)
    train_texts = load_split(require_stage_output(run_dir, "refine", task.name, "train.jsonl"),
                             labels).texts
    u_oof = unfamiliar(trained, train_texts, MIN_ORDER) \
        if familiarity.max_unfamiliar < 1.0 else np.zeros(len(trained.oof_y))
    oof_proba = gated(trained.oof_proba, u_oof <= familiarity.max_unfamiliar)
    raw_test_proba = trained.predict_proba(test_split.texts)
    test_proba = gated(raw_test_proba, u_test <= familiarity.max_unfamiliar)
    raw_dev_proba = trained.predict_proba([r.text for r in dev_rows]) if dev_rows else None
    dev_proba = gated(raw_dev_proba, u_dev <= familiarity.max_unfamiliar) if dev_rows else None
    return _Cases(familiarity, test_split, dev_rows, dev_y, oof_proba, test_proba, dev_proba)


@dataclass
class _Threshold:
    """The chosen confidence threshold, where it came from, and the candidates."""

    value: float
    source: str
    oof: float
    test: float
    dev: float | None
    out_of_scope: dict[str, Any] | None


def _choose_task_threshold(task: Task, trained: TrainedModel, cases: _Cases,
                           target_precision: float, out_of_scope_recall: float) -> _Threshold:
    """The highest of the lowest thresholds meeting ``target_precision`` on the out-of-fold
    training rows, the test split and (``threshold_on_dev``) the dev split; for a task with
    an out-of-scope label, the threshold reaching ``out_of_scope_recall`` instead."""
    oof_threshold = choose_threshold(cases.oof_proba, trained.oof_y, target_precision)
    test_threshold = choose_threshold(cases.test_proba, cases.test_split.y, target_precision)
    dev_threshold = choose_threshold(cases.dev_proba, cases.dev_y, target_precision) \
        if cases.dev_rows else None
    candidates = {"out-of-fold training rows": oof_threshold, "test split": test_threshold}
    if dev_threshold is not None and task.threshold_on_dev:
        candidates["real-text dev split"] = dev_threshold
    decided_by = max(candidates, key=candidates.__getitem__)
    threshold = candidates[decided_by]
    oos_choice = None
    if task.out_of_scope is not None:  # it trades in-scope accuracy for out-of-scope recall
        oos_choice = out_of_scope_threshold(trained.oof_proba, trained.oof_y,
                                            trained.labels.index(task.out_of_scope),
                                            out_of_scope_recall)
        threshold = oos_choice["threshold"]
        decided_by = "out-of-scope recall on out-of-fold training rows"
    source = ("the highest of the lowest thresholds meeting target_precision on "
              + ", ".join(candidates) + f"; decided by the {decided_by}")
    return _Threshold(threshold, source, oof_threshold, test_threshold, dev_threshold,
                      oos_choice)


def _exam_frame(bp: Blueprint, task: Task, trained: TrainedModel, threshold: float,
                familiarity: Familiarity) -> pd.DataFrame:
    """Per-case predictions on the task's exam, with its category, hard flag and note."""
    exam_rows = load_exam(bp.path(task.exam), trained.labels)
    exam, _ = predict_frame(trained, exam_rows["text"].tolist(), exam_rows["gold"].tolist(),
                            threshold, familiarity, task.out_of_scope)
    exam[["category", "hard", "note"]] = exam_rows[["category", "hard", "note"]]
    return exam


def _dev_frame(trained: TrainedModel, dev_rows: list, threshold: float,
               familiarity: Familiarity) -> pd.DataFrame:
    """Per-case predictions on the real-text dev split (empty without one)."""
    if not dev_rows:
        return pd.DataFrame()
    dev, _ = predict_frame(trained, [r.text for r in dev_rows], [r.label for r in dev_rows],
                           threshold, familiarity)
    dev["category"] = [r.category for r in dev_rows]
    dev["corpus"] = [r.corpus for r in dev_rows]
    dev["ref"] = [r.ref for r in dev_rows]
    return dev


def _exam_summary(task: Task, exam: pd.DataFrame, min_accuracy: float) -> dict[str, Any]:
    """The ``exam_*`` entries of ``summary.json``."""
    exam_cases = len(exam)
    exam_accuracy = float(exam["correct"].mean()) if exam_cases else None
    confident_exam = exam[exam["confident"]]
    return {
        "exam_cases": exam_cases,
        "exam_accuracy": exam_accuracy,
        "exam_confident_share": float(exam["confident"].mean()) if exam_cases else None,
        "exam_confident_precision": float(confident_exam["correct"].mean())
        if len(confident_exam) else None,
        "exam_hard_accuracy": float(exam.loc[exam["hard"], "correct"].mean())
        if exam["hard"].any() else None,
        "exam_min_accuracy": min_accuracy,
        "exam_passed": bool(exam_accuracy is not None and exam_accuracy >= min_accuracy),
        "failed_exam_cases": [
            {"text": r.text, "gold": r.gold, "predicted": r.predicted, "p": round(float(r.p), 6),
             "category": r.category, "hard": bool(r.hard), "note": r.note}
            for r in exam[~exam["correct"]].itertuples(index=False)
        ],
        "exam_by_category": json.loads(exam_by_category(exam).to_json(orient="records")),
        "exam_missing_categories": [
            f"{label.name}/{c}" for label in task.labels for c in label.categories
            if not ((exam["gold"] == label.name) & (exam["category"] == c)).any()
        ],
    }


def _test_summary(bp: Blueprint, task: Task, trained: TrainedModel, cases: _Cases,
                  th: _Threshold, test: pd.DataFrame) -> dict[str, Any]:
    """``summary.json`` up to the exam: the model, the threshold and the test split."""
    cfg = bp.spec.evaluate
    labels = trained.labels
    oof_coverage, oof_precision = confident_stats(cases.oof_proba, trained.oof_y, th.value)
    cf_coverage, cf_precision = cross_fitted_confidence(
        cases.test_proba, cases.test_split.y, cfg.target_precision, th.oof,
        seed=bp.spec.train.seed)
    coverage, precision = confident_stats(cases.test_proba, cases.test_split.y, th.value)
    return {
        "task": task.name,
        "labels": labels,
        "trainer": trained.trainer,
        "calibration": trained.calibration,
        "n_features": trained.n_features,
        "size_bytes": trained.summary.size_bytes,
        "threshold": th.value,
        "threshold_source": th.source,
        "oof_threshold": th.oof,
        "out_of_scope": th.out_of_scope,
        "test_threshold": th.test,
        "dev_threshold": th.dev,
        "familiarity": {"min_order": cases.familiarity.min_order,
                        "max_unfamiliar": cases.familiarity.max_unfamiliar,
                        "quantile": cfg.familiarity_quantile,
                        "set_on": "real-text dev split" if cases.dev_rows else "test split"},
        "target_precision": cfg.target_precision,
        "oof_coverage_at_threshold": oof_coverage,
        "oof_confident_precision": _nan_to_none(oof_precision),
        # The threshold saw the test split: these two are the out-of-sample estimate.
        "crossfit_coverage": cf_coverage,
        "crossfit_confident_precision": _nan_to_none(cf_precision),
        "test_cases": len(test),
        "test_accuracy": float(accuracy_score(test["gold"], test["predicted"])),
        "test_macro_f1": float(f1_score(test["gold"], test["predicted"], labels=labels,
                                        average="macro", zero_division=0)),
        "coverage_at_threshold": coverage,
        "confident_precision": _nan_to_none(precision),
        "ece": expected_calibration_error(test["p"].to_numpy(), test["correct"].to_numpy()),
        "test_confusion": confusion_matrix(test["gold"], test["predicted"], labels=labels).tolist(),
    }


def _unpruned_summary(trained: TrainedModel, frames: dict[str, pd.DataFrame],
                      threshold: float) -> dict[str, Any]:
    """What the size budget cost: the same recipe without pruning, on the same cases
    (``frames``: the test, exam and dev tables). Empty when nothing was pruned."""
    if trained.unpruned_pipeline is None:
        return {}
    full = TrainedModel(**{**trained.__dict__, "pipeline": trained.unpruned_pipeline})

    def scored(frame: pd.DataFrame) -> pd.DataFrame:
        return predict_frame(full, frame["text"].tolist(), frame["gold"].tolist(), threshold)[0]

    t_full = scored(frames["test"])
    out: dict[str, Any] = {
        "unpruned_n_features": full.n_features,
        "unpruned_test_macro_f1": float(f1_score(
            t_full["gold"], t_full["predicted"], labels=trained.labels, average="macro",
            zero_division=0)),
    }
    if len(frames["exam"]):
        out["unpruned_exam_accuracy"] = float(scored(frames["exam"])["correct"].mean())
    if len(frames["dev"]):
        out["unpruned_dev_accuracy"] = float(scored(frames["dev"])["correct"].mean())
    return out


def _write_tables(result: EvalResult) -> None:
    """The per-case CSV tables of ``evaluate/<task>/`` (the plots and summary come after)."""
    out = result.out_dir
    atomic_write_text(out / ERRORS_FILE, result.errors.to_csv(index=False))
    atomic_write_text(out / EXAM_FILE, result.exam.to_csv(index=False))
    if len(result.dev):
        atomic_write_text(out / DEV_FILE, result.dev.to_csv(index=False))
    atomic_write_text(out / "risk_coverage.csv", result.risk_coverage.to_csv(index=False))
    atomic_write_text(out / "reliability.csv", result.reliability.to_csv(index=False))


def _warn(task: Task, summary: EvalSummary, log: Log) -> None:
    """Warn about a model that is never confident and about exam categories without a case."""
    if summary.coverage_at_threshold == 0.0:
        log(f"{task.name}: warning: no test answer reaches the threshold "
            f"{summary.threshold:.4f}; the model can never be confident at target "
            f"precision {summary.target_precision}")
    if summary.exam_missing_categories:
        log(f"{task.name}: warning: the exam has no case for "
            + ", ".join(summary.exam_missing_categories))


def _log_scores(task: Task, s: EvalSummary, log: Log) -> None:
    """One line on the dev split (when there is one) and one on the test split and exam."""
    if s.dev_cases:
        log(f"{task.name}: real-text dev: accuracy {s.dev_accuracy:.4f}, coverage "
            f"{s.dev_coverage:.1%} at precision {_fmt(s.dev_confident_precision)} (lower "
            f"bound {_fmt(s.dev_precision_lower95)}, {s.dev_confident} confident "
            f"of {s.dev_cases})")
    log(
        f"{task.name}: test acc {s.test_accuracy:.4f}, macro-F1 "
        f"{s.test_macro_f1:.4f}, ECE {s.ece:.4f}; threshold "
        f"{s.threshold:.4f} -> coverage {s.coverage_at_threshold:.1%} at "
        f"precision {_nan_if_none(s.confident_precision):.4f}; exam "
        + (f"{s.exam_accuracy:.1%} of {s.exam_cases} "
           f"({'passed' if s.exam_passed else 'FAILED'}, "
           f"{s.exam_confident_share:.0%} confident)" if s.exam_cases else "has no cases")
    )


def evaluate_task(bp: Blueprint, task: Task, run_dir: Path, *, log: Log = print) -> EvalResult:
    """Evaluate one task and write ``evaluate/<task>/``; never raises for a failed exam."""
    inputs = check_fresh(bp, run_dir, "evaluate", task.name)
    cfg = bp.spec.evaluate
    trained = _checked_model(task, run_dir)
    labels = trained.labels
    cases = _gated_cases(bp, task, run_dir, trained)
    th = _choose_task_threshold(task, trained, cases, cfg.target_precision,
                                cfg.out_of_scope_recall)
    split = cases.test_split
    test, _ = predict_frame(trained, split.texts, [labels[i] for i in split.y], th.value,
                            cases.familiarity, task.out_of_scope)
    test["category"] = split.categories
    exam = _exam_frame(bp, task, trained, th.value, cases.familiarity)
    fields = {**_test_summary(bp, task, trained, cases, th, test),
              **_exam_summary(task, exam, cfg.exam_min_accuracy)}
    dev = _dev_frame(trained, cases.dev_rows, th.value, cases.familiarity)
    if len(dev):
        fields.update(dev_summary(
            dev, cases.dev_proba, cases.dev_y, labels, cfg.target_precision,
            max(th.oof, th.test) if task.threshold_on_dev else None, bp.spec.train.seed))
    fields["familiarity"]["effect"] = gate_effect(dev if len(dev) else test, th.value,
                                                  cases.familiarity)
    fields.update(_unpruned_summary(trained, {"test": test, "exam": exam, "dev": dev},
                                    th.value))
    summary = EvalSummary(**fields)
    _warn(task, summary, log)
    result = EvalResult(
        task=task.name, summary=summary, test=test, exam=exam,
        errors=error_table(trained, {"test": test, "exam": exam}
                           | ({"dev": dev} if len(dev) else {})),
        risk_coverage=risk_coverage_curve(cases.test_proba, split.y),
        oof_risk_coverage=risk_coverage_curve(cases.oof_proba, trained.oof_y),
        reliability=reliability_table(test["p"].to_numpy(), test["correct"].to_numpy()),
        out_dir=stage_dir(run_dir, "evaluate", task.name), dev=dev,
        dev_risk_coverage=risk_coverage_curve(cases.dev_proba, cases.dev_y)
        if cases.dev_rows else pd.DataFrame(),
    )
    _write_tables(result)
    result.plots = write_plots(result, labels)
    # The test files of a dataset: scored once, at the threshold chosen above.
    summary.heldout = evaluate_heldout(bp, task, run_dir, trained, th.value, log=log)
    summary.rules = rule_report(bp, task, run_dir, trained, th.value, exam, log=log)
    summary.write(result.out_dir)  # last: its presence means complete
    write_stamp(bp, run_dir, "evaluate", task.name, inputs)
    _log_scores(task, summary, log)
    return result


def rule_splits(bp: Blueprint, task: Task, run_dir: Path, exam: pd.DataFrame
                ) -> dict[str, tuple[list[str], list[str]]]:
    """The task's labelled splits a reflex rule must never contradict: ``(texts, gold)`` of
    the refined train and test splits, the real-text dev split, the exam, and a dataset's
    dev and test files."""
    splits = {}
    for name in ("train", "test"):
        path = require_stage_output(run_dir, "refine", task.name, f"{name}.jsonl")
        rows = [row for _, row in iter_jsonl(path)]
        splits[name] = ([r["text"] for r in rows], [r["label"] for r in rows])
    real_dev = load_real(bp, task, "dev")
    if real_dev:
        splits["dev"] = ([r.text for r in real_dev], [r.label for r in real_dev])
    splits["exam"] = (exam["text"].tolist(), exam["gold"].tolist())
    for role in ("dev", "test"):
        rows = load_dataset(bp, task, role)
        if rows:
            splits[f"dataset {role}"] = ([r.text for r in rows], [r.label for r in rows])
    return splits


def rule_report(bp: Blueprint, task: Task, run_dir: Path, trained: TrainedModel,
                threshold: float, exam: pd.DataFrame, *, log: Log = print
                ) -> dict[str, Any] | None:
    """What the task's reflex rules do on every labelled split; None without rules.

    Per split: its rows, each rule's hits, the model errors each rule takes over
    (``taken_over``: hits the model alone answers wrongly; ``model_wrong_on_hits`` is their
    sum), and the model's accuracy without and with the rules (the model answers at
    ``threshold``, with the out-of-scope label when unsure).

    Raises
    ------
    foundry.reflex.RuleContradictionError
        If a rule answers any labelled text with another label than its gold one: a reflex
        rule answers without the model and must never be wrong on the task's own data.
    """
    reflex = task_reflex(bp, task, trained)
    if not reflex:
        return None
    splits = rule_splits(bp, task, run_dir, exam)
    results = [rule_hits(reflex, name, texts, gold, trained.spec)
               for name, (texts, gold) in splits.items()]
    check_no_contradiction(reflex, results, task.name)
    report: dict[str, Any] = {"rules": [r.name for r in reflex.rules], "splits": {}}
    for res, (texts, gold) in zip(results, splits.values(), strict=True):
        model = answers(trained.predict_proba(texts), trained.labels, threshold,
                        task.out_of_scope) if texts else np.array([], dtype=object)
        model_right = np.asarray(model == np.asarray(gold, dtype=object), dtype=bool)
        first = np.asarray([-1 if (i := reflex.first(normalize(t, trained.spec))) is None
                            else i for t in texts], dtype=np.int64)
        hit = first >= 0
        report["splits"][res.split] = {
            "rows": res.rows,
            "hits": dict(zip(report["rules"], res.hits, strict=True)),
            "taken_over": {name: int(((first == i) & ~model_right).sum())
                           for i, name in enumerate(report["rules"])},
            "model_wrong_on_hits": int((hit & ~model_right).sum()),
            "accuracy_model": float(model_right.mean()) if texts else None,
            "accuracy_with_rules": float((model_right | hit).mean()) if texts else None,
        }
    log(f"{task.name}: reflex rules: " + "; ".join(
        f"{name} {sum(v['hits'].values())} hits of {v['rows']} "
        f"({v['model_wrong_on_hits']} model errors taken over)"
        for name, v in report["splits"].items()))
    return report


def gate_effect(frame: pd.DataFrame, threshold: float, familiarity: Familiarity
                ) -> dict[str, Any]:
    """What the unfamiliarity gate does at the threshold on a case table: the answers it
    keeps from being confident, how many of them were wrong, and the coverage it costs."""
    by_threshold = frame["p"] >= threshold
    shut = by_threshold & ~(frame["unfamiliar"] <= familiarity.max_unfamiliar)
    wrong = ~frame["correct"]
    n = max(len(frame), 1)
    return {
        "cases": len(frame),
        "confident_without_gate": int(by_threshold.sum()),
        "confident_errors_without_gate": int((by_threshold & wrong).sum()),
        "withheld": int(shut.sum()),
        "confident_errors_removed": int((shut & wrong).sum()),
        "coverage_cost": float(shut.sum() / n),
    }


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else x


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def dev_summary(dev: pd.DataFrame, proba: np.ndarray, y: np.ndarray, labels: list[str],
                target_precision: float, floor: float | None, seed: int) -> dict[str, Any]:
    """The ``dev_*`` entries of ``summary.json``: the real-text dev split at the threshold.

    ``floor`` is the threshold the rest of the rule sets (out-of-fold and test split) when
    the dev split took part in the threshold: the cross-fitted estimate then scores each half
    of the dev split with ``max(floor, threshold chosen on the other half)``, an out-of-sample
    view of a threshold that saw the dev split. None when the dev split did not take part
    (``tasks[].threshold_on_dev: false``): the numbers at the threshold are out of sample.
    """
    answers = ConfidentAnswers.of(dev)
    cf_coverage, cf_precision = (float("nan"), float("nan")) if floor is None else \
        cross_fitted_confidence(proba, y, target_precision, floor, seed=seed)
    errors = most_confident_errors(dev)
    return {
        "dev_cases": len(dev),
        "dev_in_threshold": floor is not None,
        "dev_accuracy": float(dev["correct"].mean()),
        "dev_macro_f1": float(f1_score(dev["gold"], dev["predicted"], labels=labels,
                                       average="macro", zero_division=0)),
        "dev_coverage": answers.coverage,
        "dev_confident": answers.confident,
        "dev_confident_correct": answers.correct,
        "dev_confident_precision": answers.precision,
        "dev_precision_lower95": answers.precision_lower_bound,
        "dev_crossfit_coverage": _nan_to_none(cf_coverage),
        "dev_crossfit_confident_precision": _nan_to_none(cf_precision),
        "dev_ece": expected_calibration_error(dev["p"].to_numpy(), dev["correct"].to_numpy()),
        "dev_confusion": confusion_matrix(dev["gold"], dev["predicted"], labels=labels).tolist(),
        "dev_by_category": json.loads(category_table(dev).to_json(orient="records")),
        "dev_by_corpus": json.loads(corpus_table(dev).to_json(orient="records")),
        "dev_by_length": json.loads(length_table(dev).to_json(orient="records")),
        "dev_most_confident_errors": [
            {"text": r.text, "gold": r.gold, "predicted": r.predicted,
             "p": round(float(r.p), 6), "confident": bool(r.confident), "category": r.category}
            for r in errors.itertuples(index=False)],
    }


def exam_gate_message(failures: dict[str, EvalSummary]) -> str:
    """The :class:`ExamGateError` text: per failing task, its score and failed cases."""
    lines = []
    for task, s in failures.items():
        if not s.exam_cases:
            lines.append(f"task {task!r}: the exam has no cases, so it cannot pass "
                         f"(evaluate.exam_min_accuracy = {s.exam_min_accuracy:.1%})")
            continue
        n_failed = len(s.failed_exam_cases)
        lines.append(
            f"task {task!r}: exam accuracy {s.exam_accuracy:.1%} "
            f"({s.exam_cases - n_failed}/{s.exam_cases}) is below "
            f"evaluate.exam_min_accuracy {s.exam_min_accuracy:.1%}; failed cases "
            "(text | gold -> predicted, p):"
        )
        for case in s.failed_exam_cases[:MAX_LISTED_FAILURES]:
            lines.append(f"  {case['text']!r} | {case['gold']} -> {case['predicted']}, "
                         f"p={case['p']:.3f} [{case['category']}]")
        if n_failed > MAX_LISTED_FAILURES:
            lines.append(f"  ... and {n_failed - MAX_LISTED_FAILURES} more "
                         f"(see evaluate/{task}/{ERRORS_FILE})")
    lines.append(
        "Export is blocked. Improve the data (grammar, seeds) and forge again, or override with "
        "`foundry forge <blueprint> --allow-exam-failures` "
        "(notebook parameter allow_exam_failures = True)."
    )
    return "\n".join(lines)


def evaluate_tasks(bp: Blueprint, run_dir: Path, *, log: Log = print) -> dict[str, EvalResult]:
    """Evaluate and write every task of ``bp``; does not apply the exam gate."""
    return {t.name: evaluate_task(bp, t, Path(run_dir), log=log) for t in bp.tasks}


def check_exam_gate(
    results: dict[str, EvalResult], *, allow_exam_failures: bool = False, log: Log = print
) -> None:
    """Raise :class:`ExamGateError` if any task failed its exam, unless allowed (then log it)."""
    failures = {name: r.summary for name, r in results.items() if not r.exam_passed}
    if not failures:
        return
    message = exam_gate_message(failures)
    if not allow_exam_failures:
        raise ExamGateError(message, failures)
    log("exam gate overridden (allow_exam_failures):\n" + message)


def evaluate_stage(
    bp: Blueprint, run_dir: Path, *, allow_exam_failures: bool = False, log: Log = print
) -> dict[str, EvalResult]:
    """Evaluate every task of ``bp`` in ``run_dir``, then apply the exam gate.

    Raises
    ------
    ExamGateError
        After all tasks are written, if any exam accuracy is below
        ``evaluate.exam_min_accuracy`` and ``allow_exam_failures`` is false.
    """
    results = evaluate_tasks(bp, run_dir, log=log)
    check_exam_gate(results, allow_exam_failures=allow_exam_failures, log=log)
    return results
