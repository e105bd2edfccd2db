"""A trained micro-model: what stage 3 hands to evaluate and export, its size, its files.

:func:`foundry.train.train_task` (cross-validated) and :func:`foundry.train_dev.train_on_dev`
(selected on a dev split) both build a :class:`TrainedModel`, shrink it to the size budget
with :func:`prune_to_budget`, summarise it in a :class:`foundry.summaries.TrainSummary`
(:func:`train_summary`) and write ``train/<task>/`` with :func:`save_trained`; evaluate and
export read it back with :func:`load_trained`.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from foundry.pair import Provenance, artifact_bytes
from foundry.runs import (
    atomic_write_bytes,
    atomic_write_text,
    require_stage_output,
)
from foundry.summaries import TrainSummary
from foundry.textspec import TextSpec
from foundry.trainers import MIN_VOCABULARY

MODEL_FILE = "model.joblib"
TRAIN_JSON = TrainSummary.file_name
CV_RESULTS_FILE = "cv_results.csv"
SIZE_CURVE_FILE = "size_curve.csv"
CALIBRATION_FILE = "calibration.csv"
OOF_FILE = "oof.csv"
MODEL_FORMAT = 1
#: Bytes per KB of ``export.size_budget_kb``: decimal, so a pair that fits is under the
#: budget whichever way a reader counts.
KB = 1000

Log = Callable[[str], None]


@dataclass
class TrainedModel:
    """A fitted micro-model and where it came from.

    ``pipeline`` is ``Pipeline([("tfidf", TfidfVectorizer(analyzer=Analyzer(spec), ...)),
    ("clf", classifier)])`` trained on class indices, so ``predict_proba`` column ``k`` is
    ``labels[k]``.
    """

    pipeline: Pipeline
    labels: list[str]
    spec: TextSpec
    sublinear_tf: bool
    trainer: str
    data_sha256: str
    train_rows: int
    cv_results: pd.DataFrame
    task: str = ""
    best_params: dict[str, Any] = field(default_factory=dict)
    calibration: str = "none"
    size_curve: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Out-of-fold probabilities ``[n_train, K]`` of the final recipe on the training rows,
    #: and their gold class indices: held-out scores for choosing the threshold.
    oof_proba: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    oof_y: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Which out-of-fold rows are real (human-written) text.
    oof_real: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: The best candidate before size pruning (None when no pruning was needed).
    unpruned_pipeline: Pipeline | None = None
    #: What ``train.json`` holds (set by the train stage and by :func:`load_trained`).
    summary: TrainSummary | None = None

    @property
    def n_features(self) -> int:
        return len(self.pipeline.named_steps["tfidf"].vocabulary_)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities ``[N, K]`` (columns in ``labels`` order)."""
        return self.pipeline.predict_proba(list(texts))

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


def as_trained(pipe: Pipeline, labels: list[str], spec: TextSpec, sublinear_tf: bool,
                trainer: str, task: str, data_sha256: str = "", train_rows: int = 0
                ) -> TrainedModel:
    return TrainedModel(
        pipeline=pipe, labels=labels, spec=spec, sublinear_tf=sublinear_tf, trainer=trainer,
        data_sha256=data_sha256, train_rows=train_rows, cv_results=pd.DataFrame(), task=task,
    )


def artifact_size(trained: TrainedModel, opset: int, blueprint: str = "",
                  blueprint_sha256: str = "") -> tuple[int, int, str]:
    """``(.onnx bytes, .bin bytes, source)`` of the pair the export would write.

    Exact: built by ``foundry.pair.artifact_bytes`` with the provenance the export records
    (only the threshold's value differs, and a double costs the same bytes whatever it is).
    """
    provenance = Provenance(
        blueprint=blueprint, blueprint_sha256=blueprint_sha256,
        data_sha256=trained.data_sha256, trainer=trained.trainer,
        train_rows=int(trained.train_rows),
    )
    onnx_bytes, bin_bytes = artifact_bytes(trained, 0.5, task=trained.task or "task",
                                           opset=opset, provenance=provenance)
    return len(onnx_bytes), len(bin_bytes), "export.artifact_bytes"


@dataclass
class Pruned:
    pipeline: Pipeline
    vocabulary: list[str] | None
    onnx_bytes: int
    bin_bytes: int
    source: str
    #: Sparse int8 weights (:func:`sparsify_to_budget`): how many the budget left, and the
    #: dense model at the same vocabulary they were taken from (None: dense).
    max_weights: int | None = None
    dense: Pipeline | None = None

    @property
    def size(self) -> int:
        return self.onnx_bytes + self.bin_bytes


def prune_to_budget(
    full: Pipeline,
    fit_top: Callable[[int], tuple[Pipeline, list[str]]],
    measure: Callable[[Pipeline], tuple[int, int, str]],
    budget_bytes: int | None,
    log: Log = print,
    max_rounds: int = 12,
    vocabulary: list[str] | None = None,
) -> Pruned:
    """Shrink the vocabulary until the artifact pair fits ``budget_bytes``.

    ``fit_top(k)`` refits on the ``k`` best-ranked columns of ``full`` and returns the
    pipeline and its vocabulary; ``measure`` returns the pair's byte sizes. Sizes are nearly
    linear in ``k``, so each round rescales ``k`` by ``budget / size`` with a 2% margin.
    ``vocabulary`` is the fixed vocabulary ``full`` was fitted with, if any.
    """
    onnx_len, bin_len, source = measure(full)
    result = Pruned(full, vocabulary, onnx_len, bin_len, source)
    if budget_bytes is None or result.size <= budget_bytes:
        return result
    n_full = len(full.named_steps["tfidf"].vocabulary_)
    k = n_full
    for _ in range(max_rounds):
        k = max(MIN_VOCABULARY, min(k - 1, math.floor(k * budget_bytes / result.size * 0.98)))
        pipe, vocab = fit_top(k)
        onnx_len, bin_len, source = measure(pipe)
        result = Pruned(pipe, vocab, onnx_len, bin_len, source)
        log(f"  prune: {k} of {n_full} n-grams -> {result.size / 1024:.1f} KiB")
        if result.size <= budget_bytes or k == MIN_VOCABULARY:
            break
    if result.size > budget_bytes:
        raise ValueError(
            f"blueprint.yaml: export.size_budget_kb: {budget_bytes / KB:g} KB is unreachable: "
            f"{k} n-grams still take {result.size / KB:.1f} KB; raise the budget"
        )
    return result


def takes_sparse_weights(pipe: Pipeline) -> bool:
    """Whether the budget may thin ``pipe``'s weights (:func:`sparsify_to_budget`): an int8
    softmax model (:func:`foundry.quantized.takes_temperature`) of three labels or more. A
    binary model's one score per n-gram has nothing to spare but the n-gram itself."""
    from foundry.quantized import takes_temperature

    clf = pipe.named_steps["clf"]
    return takes_temperature(clf) and len(clf.classes_) >= 3


def with_sparse_weights(pipe: Pipeline, max_weights: int) -> Pipeline:
    """A copy of ``pipe`` whose int8 classifier keeps its ``max_weights`` largest weights
    (:meth:`foundry.quantized.Int8Linear.sparsify`); the vectorizer is shared."""
    clf = copy.deepcopy(pipe.named_steps["clf"]).sparsify(max_weights)
    return Pipeline([("tfidf", pipe.named_steps["tfidf"]), ("clf", clf)])


def vocabulary_meter(measure: Meter) -> Meter:
    """``measure`` counting the ``.bin`` only (the vocabulary's share of the pair)."""

    def measure_bin(pipe: Pipeline) -> tuple[int, int, str]:
        _, bin_len, source = measure(pipe)
        return 0, bin_len, source

    return measure_bin


def sparsify_to_budget(pruned: Pruned, measure: Meter, budget_bytes: int, log: Log = print,
                       max_rounds: int = 8) -> Pruned:
    """``pruned`` with as many of its int8 weights as fit ``budget_bytes`` beside its
    vocabulary (:func:`takes_sparse_weights` models; unchanged when it fits already).

    The ``.bin`` does not change (same vocabulary); the ``.onnx`` takes ~2 bytes a kept
    weight, so each round rescales the count by the room left over the weights' bytes, with
    a 0.5% margin, as :func:`prune_to_budget` does for n-grams.
    """
    from foundry.quantized import stored_weight_bytes

    dense = pruned.pipeline
    onnx_len, bin_len, source = measure(dense)
    if onnx_len + bin_len <= budget_bytes:
        return Pruned(dense, pruned.vocabulary, onnx_len, bin_len, source)
    clf = dense.named_steps["clf"]
    total = clf.n_weights_
    overhead = onnx_len - stored_weight_bytes(clf)  # all of the .onnx but the weights
    m = (budget_bytes - bin_len - overhead) // 2
    for _ in range(max_rounds):
        if m < 1:
            break
        pipe = with_sparse_weights(dense, m)
        onnx_len, _, source = measure(pipe)
        log(f"  sparse weights: {m} of {total} kept -> {(onnx_len + bin_len) / 1024:.1f} KiB")
        if onnx_len + bin_len <= budget_bytes:
            return Pruned(pipe, pruned.vocabulary, onnx_len, bin_len, source, m, dense)
        m = fewer_weights(m, pipe, onnx_len, bin_len, budget_bytes)
    raise ValueError(
        f"blueprint.yaml: export.size_budget_kb: {budget_bytes / KB:g} KB is unreachable: "
        f"the vocabulary alone takes {bin_len / KB:.1f} KB; raise the budget")


def fewer_weights(m: int, pipe: Pipeline, onnx_len: int, bin_len: int, budget_bytes: int
                  ) -> int:
    """The weight count to try after ``pipe``, with ``m`` int8 weights kept, measured
    ``onnx_len + bin_len`` bytes over ``budget_bytes``: ``m`` rescaled by the room left for
    the weights' bytes over what they took (the rest of the ``.onnx``, the sparse layout's
    own constants and nodes included, is fixed), with a 0.5% margin; at least one fewer."""
    from foundry.quantized import stored_weight_bytes

    overhead = onnx_len - stored_weight_bytes(pipe.named_steps["clf"])
    room = budget_bytes - bin_len - overhead
    return min(m - 1, math.floor(m * room / max(1, onnx_len - overhead) * 0.995))


def fit_to_budget(full: Pipeline, fit_top: Callable[[int], tuple[Pipeline, list[str]]],
                  measure: Meter, budget_bytes: int | None, log: Log = print) -> Pruned:
    """``full`` cut to ``budget_bytes``: for a :func:`takes_sparse_weights` model, its
    vocabulary pruned until the ``.bin`` takes at most half the budget, then its weights
    thinned to fit the rest (:func:`sparsify_to_budget`); otherwise the vocabulary pruned
    until the pair fits (:func:`prune_to_budget`).

    Why half: an n-gram costs ~7 bytes in the ``.bin`` and a kept weight 2 in the ``.onnx``;
    half and half leaves ~3.5 weights an n-gram. On CLINC150 (151 labels) the whole
    vocabulary with 4% of its weights loses nothing measurable on validation, while the
    dense int8 matrix fits with one n-gram in eight (``docs/training.md``).
    """
    if budget_bytes is None or not takes_sparse_weights(full):
        return prune_to_budget(full, fit_top, measure, budget_bytes, log)
    vocab = prune_to_budget(full, fit_top, vocabulary_meter(measure), budget_bytes // 2, log)
    return sparsify_to_budget(vocab, measure, budget_bytes, log)


def clip_proba(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class probability: bin-weighted ``|accuracy - confidence|`` over
    ``bins`` equal-width bins of [0, 1]."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return float("nan")
    idx = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def train_summary(trained: TrainedModel, pruned: Pruned, *, seed: int, cv_macro_f1: float,
                  candidates: tuple[int, int], budget_hit: bool, n_features_unpruned: int,
                  size_budget_bytes: int | None, elapsed_s: float, **dev: Any) -> TrainSummary:
    """The train stage's summary of ``trained`` (what ``train.json`` holds): the facts of the
    model itself are read from it, the search's from the arguments. ``candidates`` is
    (evaluated, total); ``dev`` holds the dev-selected trainer's ``selected_on``, ``dev_rows``,
    ``temperature`` and ``refit_on_dev``."""
    return TrainSummary(
        task=trained.task, trainer=trained.trainer, labels=trained.labels,
        spec=trained.spec.to_dict(), sublinear_tf=trained.sublinear_tf,
        best_params=trained.best_params, cv_macro_f1=cv_macro_f1,
        candidates_evaluated=candidates[0], candidates_total=candidates[1],
        budget_hit=budget_hit, calibration=trained.calibration, n_features=trained.n_features,
        n_features_unpruned=n_features_unpruned,
        n_weights=None if pruned.max_weights is None
        else trained.pipeline.named_steps["clf"].n_weights_,
        onnx_bytes=pruned.onnx_bytes,
        bin_bytes=pruned.bin_bytes, size_bytes=pruned.size, size_budget_bytes=size_budget_bytes,
        size_source=pruned.source, data_sha256=trained.data_sha256,
        train_rows=trained.train_rows, seed=seed, elapsed_s=elapsed_s,
        model_format=MODEL_FORMAT, **dev,
    )


def save_trained(trained: TrainedModel, out_dir: Path) -> None:
    """Write ``model.joblib`` and the tables; every file atomically, ``train.json`` last."""
    buf = io.BytesIO()
    joblib.dump({
        "format": MODEL_FORMAT,
        "pipeline": trained.pipeline,
        "unpruned_pipeline": trained.unpruned_pipeline,
    }, buf)
    atomic_write_bytes(out_dir / MODEL_FILE, buf.getvalue())
    atomic_write_text(out_dir / CV_RESULTS_FILE, trained.cv_results.to_csv(index=False))
    atomic_write_text(out_dir / SIZE_CURVE_FILE, trained.size_curve.to_csv(index=False))
    atomic_write_text(out_dir / CALIBRATION_FILE, trained.calibration_table.to_csv(index=False))
    oof = pd.DataFrame(trained.oof_proba, columns=[f"p_{lab}" for lab in trained.labels])
    oof.insert(0, "y", trained.oof_y)
    oof.insert(1, "real", trained.oof_real.astype(int) if len(trained.oof_real) == len(oof)
               else 0)
    atomic_write_text(out_dir / OOF_FILE, oof.to_csv(index=False))  # round-trip floats
    trained.summary.write(out_dir)


def load_trained(run_dir: Path, task: str) -> TrainedModel:
    """Load what :func:`train_stage` wrote for ``task`` in ``run_dir``.

    Raises
    ------
    FileNotFoundError
        If the train stage has not run for this task (says what to run).
    ValueError
        If ``model.joblib`` has an unknown format or disagrees with ``train.json``.
    """
    info = TrainSummary.load(run_dir, task)
    model_path = require_stage_output(run_dir, "train", task, MODEL_FILE)
    blob = joblib.load(model_path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{model_path}: unknown model format; re-run the train stage")
    pipeline = blob["pipeline"]
    n = len(pipeline.named_steps["tfidf"].vocabulary_)
    if n != info.n_features:
        raise ValueError(
            f"{model_path}: has {n} features but train.json says {info.n_features}; "
            "the train folder is inconsistent, re-run the train stage"
        )
    folder = Path(run_dir) / "train" / task
    oof = pd.read_csv(folder / OOF_FILE)
    return TrainedModel(
        pipeline=pipeline,
        labels=list(info.labels),
        spec=TextSpec(**info.spec),
        sublinear_tf=info.sublinear_tf,
        trainer=info.trainer,
        data_sha256=info.data_sha256,
        train_rows=info.train_rows,
        cv_results=pd.read_csv(folder / CV_RESULTS_FILE),
        task=task,
        best_params=dict(info.best_params),
        calibration=info.calibration,
        size_curve=pd.read_csv(folder / SIZE_CURVE_FILE),
        calibration_table=pd.read_csv(folder / CALIBRATION_FILE),
        oof_proba=oof[[f"p_{lab}" for lab in info.labels]].to_numpy(dtype=np.float64),
        oof_y=oof["y"].to_numpy(dtype=np.int64),
        oof_real=oof["real"].to_numpy(dtype=bool) if "real" in oof
        else np.zeros(len(oof), dtype=bool),
        unpruned_pipeline=blob.get("unpruned_pipeline"),
        summary=info,
    )


Meter = Callable[[Pipeline], tuple[int, int, str]]


def size_meter(labels: list[str], spec: TextSpec, sublinear_tf: bool, trainer: str, task: str,
               data_sha256: str, train_rows: int, opset: int, blueprint: str,
               blueprint_sha256: str) -> Meter:
    """A function giving a fitted pipeline's exact ``(.onnx bytes, .bin bytes, source)``
    (:func:`artifact_size`) with everything else the pair records fixed, as it ships: a
    binary logistic model with int8 weights (:func:`foundry.quantized.int8_pipeline`)."""
    from foundry.quantized import int8_pipeline

    def measure(pipe: Pipeline) -> tuple[int, int, str]:
        model = as_trained(int8_pipeline(pipe), labels, spec, sublinear_tf, trainer, task,
                           data_sha256, train_rows)
        return artifact_size(model, opset, blueprint, blueprint_sha256)

    return measure
