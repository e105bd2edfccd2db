"""Stage 3: train one micro-model per task from the refined split.

For each task of the blueprint, :func:`train_stage`

1. reads ``refine/<task>/train.jsonl`` (and ``summary.json`` for the data hash and the
   balancing mode);
2. cross-validates every candidate of ``train.grid`` (macro-F1) and keeps the best (a search
   that takes longer than ``train.time_budget_s`` is reported, never cut short). Folds are stratified and keep
   near-duplicate groups whole (:func:`similarity_groups`, the refine split's grouping), so a
   model is never scored on near-copies of its training rows;
3. refits it on all rows and, if ``.onnx + .bin`` exceed ``export.size_budget_kb``, prunes the
   vocabulary (by coefficient spread or chi², see :func:`foundry.trainers.feature_ranking`)
   and refits until the pair fits; an accuracy-against-size ladder is measured on the way;
4. picks a calibration (none, sigmoid, isotonic, or ``sigmoid_real``: Platt scaling fitted on
   the real rows' out-of-fold scores) by log loss on the task's real-text dev split when it
   has one (the dev split only selects: it never fits anything), else by out-of-fold log
   loss; and keeps the out-of-fold probabilities: held-out scores for the evaluate stage;
5. writes ``train/<task>/``: ``model.joblib``, ``train.json``, ``cv_results.csv``,
   ``size_curve.csv``, ``calibration.csv``, ``oof.csv``.

Same data, same blueprint, same seed -> same model, on any machine at any load: the time
budget only warns (see :func:`search_grid`), so machine speed never changes which candidates
are compared.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import normalize as l2_normalize
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from foundry.blueprint import Blueprint, Refine, Task
from foundry.errors import InputDataError
from foundry.jsonl import iter_jsonl
from foundry.pair import Provenance, artifact_bytes
from foundry.realtext import REAL_SOURCE, load_real
from foundry.runs import (
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    require_stage_output,
    stage_dir,
    write_json,
)
from foundry.stamps import check_fresh, write_stamp
from foundry.textspec import Analyzer, TextSpec, normalize
from foundry.trainers import (
    MIN_VOCABULARY,
    NGRAM_KEY,
    REAL_SIGMOID,
    VECTORIZER_KEYS,
    Trainer,
    decision_scores,
    describe_params,
    expand_grid,
    feature_ranking,
    fit_platt,
    get_trainer,
    make_classifier,
    make_pipeline,
    make_vectorizer,
    prefit_sigmoid,
    size_ladder,
    spec_for,
    vocabulary_terms,
)

MODEL_FILE = "model.joblib"
TRAIN_JSON = "train.json"
CV_RESULTS_FILE = "cv_results.csv"
SIZE_CURVE_FILE = "size_curve.csv"
CALIBRATION_FILE = "calibration.csv"
OOF_FILE = "oof.csv"
MODEL_FORMAT = 1
#: A calibrator is used only if it lowers the out-of-fold log loss by at least this share:
#: a fitted calibration map is extra ONNX weight and a chance to overfit.
CALIBRATION_MIN_GAIN = 0.02
#: Bytes per KB of ``export.size_budget_kb``: decimal, so a pair that fits is under the
#: budget whichever way a reader counts.
KB = 1000
#: ``sigmoid_real`` is a candidate only with at least this many real training rows per class.
MIN_REAL_PER_CLASS = 30
#: Largest near-duplicate group, as a share of the rarest class's rows in one fold.
MAX_GROUP_SHARE_OF_FOLD = 0.25
#: Normalisation for near-duplicate comparison (the refine stage's: no truncation).
_COMPARE_SPEC = TextSpec(max_chars=1_000_000)

Log = Callable[[str], None]


class TrainDataError(InputDataError):
    """A refined split file is unusable; the message names the file, line and field."""


@dataclass
class Split:
    """Rows of one refined split file, with labels as class indices."""

    texts: list[str]
    y: np.ndarray
    weight: np.ndarray
    categories: list[str]
    path: Path
    #: Near-duplicate group ids from the refine stage (``"group"`` on every row), if given.
    groups: np.ndarray | None = None
    #: Each row's ``source`` (``grammar``, ``real``, ...; empty when not given).
    sources: list[str] = field(default_factory=list)

    @property
    def real(self) -> np.ndarray:
        """Boolean mask of the real (human-written) rows."""
        return np.asarray([s == REAL_SOURCE for s in self.sources], dtype=bool) \
            if self.sources else np.zeros(len(self.texts), dtype=bool)

    def __len__(self) -> int:
        return len(self.texts)


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
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.pipeline.named_steps["tfidf"].vocabulary_)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities ``[N, K]`` (columns in ``labels`` order)."""
        return self.pipeline.predict_proba(list(texts))

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_stage` reports per task (also in ``train.json``)."""

    task: str
    trainer: str
    best_params: dict[str, Any]
    cv_macro_f1: float
    candidates_evaluated: int
    candidates_total: int
    budget_hit: bool  # the search took longer than train.time_budget_s (a warning only)
    calibration: str
    n_features: int
    n_features_unpruned: int
    onnx_bytes: int
    bin_bytes: int
    size_budget_bytes: int | None
    size_source: str
    elapsed_s: float
    out_dir: Path

    @property
    def size_bytes(self) -> int:
        return self.onnx_bytes + self.bin_bytes


# --------------------------------------------------------------------------- data


def load_split(path: Path, labels: list[str]) -> Split:
    """Read a refined JSONL split: ``{"text", "label", ...}`` rows, optional ``"weight"``.

    Raises
    ------
    TrainDataError
        On invalid JSON, a missing/non-string text, an unknown label, a bad weight, or an
        empty file, naming the file and line.
    """
    index = {name: i for i, name in enumerate(labels)}
    texts, ys, weights, cats, groups, sources = [], [], [], [], [], []
    for where, row in iter_jsonl(path, error=TrainDataError):
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str):
            raise TrainDataError(f"{where}: field 'text' must be a string, got {text!r}")
        if label not in index:
            raise TrainDataError(
                f"{where}: field 'label' is {label!r}, not one of the task's labels "
                f"{', '.join(labels)}"
            )
        weight = row.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            math.isfinite(weight) and weight > 0
        ):
            raise TrainDataError(f"{where}: field 'weight' must be a positive number, got {weight!r}")
        texts.append(text)
        ys.append(index[label])
        weights.append(float(weight))
        cats.append(str(row.get("category", "")))
        sources.append(str(row.get("source", "")))
        group = row.get("group")
        groups.append(group if isinstance(group, int) and not isinstance(group, bool) else None)
    if not texts:
        raise TrainDataError(f"{path}: no rows")
    have_groups = all(g is not None for g in groups)
    return Split(texts, np.asarray(ys, dtype=np.int64), np.asarray(weights), cats, Path(path),
                 np.asarray(groups, dtype=np.int64) if have_groups else None, sources)


def sample_weights(split: Split, balance: str,
                   source_weights: dict[str, float] | None = None) -> np.ndarray:
    """Row weights for fitting.

    With ``refine.balance: class_weight`` the refine stage already wrote each row's
    inverse-class-frequency ``weight`` (``n / (k * n_label)``); rows without one weigh 1.
    Applying ``compute_sample_weight("balanced")`` on top would square the correction.
    ``source_weights`` (``train.source_weights``) multiplies the weight of each row by the
    weight of its source (e.g. ``{"real": 2.0}``).
    """
    if balance == "class_weight" and np.all(split.weight == 1.0):
        # A hand-made split without weights: balance it here instead.
        w = compute_sample_weight("balanced", split.y)
    else:
        w = split.weight.copy()
    if source_weights and split.sources:
        w = w * np.asarray([source_weights.get(s, 1.0) for s in split.sources])
    return w


def check_exam_not_in_training(split: Split, exam_path: Path) -> None:
    """Refuse to train on exam sentences (after normalisation): the exam must stay unseen.

    The refine stage removes exam texts and their near-duplicates; this is the last line of
    defence against a hand-edited or stale split.
    """
    if not Path(exam_path).is_file():
        return
    exam = set()
    for line in Path(exam_path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            text = json.loads(line).get("text")
            if isinstance(text, str):
                exam.add(normalize(text, _COMPARE_SPEC))
    leaked = [t for t in split.texts if normalize(t, _COMPARE_SPEC) in exam]
    if leaked:
        shown = ", ".join(repr(t) for t in leaked[:5])
        raise TrainDataError(
            f"{split.path}: {len(leaked)} training row(s) are exam sentences from {exam_path} "
            f"(e.g. {shown}); the exam must never be trained on: re-run the refine stage"
        )


def similarity_groups(texts: list[str], y: np.ndarray, cfg: Refine, n_folds: int) -> np.ndarray:
    """Near-duplicate groups of the training rows, as the refine stage builds them for its split.

    Rows whose character-shingle Jaccard similarity reaches ``refine.split_threshold`` are
    linked (MinHash LSH, verified exactly); the connected components are the groups, and
    components too large for a fold are re-clustered at stricter thresholds. Folds that keep
    each group whole score a model on rows as far from its training rows as the test split
    is, instead of on near-copies of them (which made out-of-fold confidence too rosy).
    """
    from foundry import minhash as mh

    norm = [normalize(t, _COMPARE_SPEC) for t in texts]
    uniq = sorted(set(norm))
    position = {t: i for i, t in enumerate(uniq)}
    sets = [mh.shingles(t, cfg.shingle_size) for t in uniq]
    sigs = mh.signatures(sets, num_perm=cfg.num_perm, seed=cfg.seed, progress=False)
    max_size = max(2, int(MAX_GROUP_SHARE_OF_FOLD * np.bincount(y).min() / n_folds))
    comp, _ = mh.refined_components(
        sets, sigs, threshold=cfg.split_threshold, max_size=max_size,
        ceiling=max(cfg.split_threshold, min(cfg.dedup_threshold, 0.95)),
        num_perm=cfg.num_perm, progress=False,
    )
    return np.asarray([comp[position[t]] for t in norm], dtype=np.int64)


def make_folds(y: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled folds (kept group-whole when ``groups`` is given); fewer folds
    if the rarest class has fewer rows or groups."""
    rarest = int(np.bincount(y).min()) if len(y) else 0
    if groups is not None:
        rarest = min(rarest, *(len(np.unique(groups[y == k])) for k in np.unique(y)))
    k = min(n_folds, rarest)
    if k < 2:
        raise TrainDataError(
            f"cannot cross-validate: the rarest class has {rarest} training row(s) or "
            "similarity group(s), need >= 2"
        )
    x = np.zeros(len(y))
    if groups is None:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
    folds = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups))
    if any(len(np.unique(y[tr])) < len(np.unique(y)) for tr, _ in folds):
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
    return folds


class _MemoAnalyzer:
    """``Analyzer`` with a per-text cache: cross-validation re-analyses each text many times."""

    def __init__(self, spec: TextSpec) -> None:
        self.analyzer = Analyzer(spec)
        self.cache: dict[str, list[str]] = {}

    def __call__(self, text: str) -> list[str]:
        grams = self.cache.get(text)
        if grams is None:
            grams = self.cache[text] = self.analyzer(text)
        return grams


class Recipe:
    """Builds pipelines and classifiers for one task: trainer, base spec, seed, and the
    analyzer caches shared by every fit."""

    def __init__(self, trainer: Trainer, spec: TextSpec, sublinear_tf: bool, seed: int) -> None:
        self.trainer, self.spec, self.sublinear_tf, self.seed = trainer, spec, sublinear_tf, seed
        self._memo: dict[TextSpec, _MemoAnalyzer] = {}
        #: The Platt map of ``sigmoid_real`` (fitted by :func:`choose_calibration`).
        self.real_platt: Any = None

    def analyzer(self, params: dict[str, Any]) -> _MemoAnalyzer:
        spec = spec_for(self.spec, params)
        return self._memo.setdefault(spec, _MemoAnalyzer(spec))

    def pipeline(self, params: dict[str, Any], *, calibration: str = "none",
                 vocabulary: list[str] | None = None) -> Pipeline:
        """An unfitted pipeline that analyses through the cache (see :func:`_final`)."""
        return make_pipeline(
            self.trainer, self.spec, self.sublinear_tf, params, self.seed,
            calibration=calibration, vocabulary=vocabulary, analyzer=self.analyzer(params),
        )

    def vectorizer(self, params: dict[str, Any], vocabulary: list[str] | None = None,
                   norm: str | None = "l2") -> TfidfVectorizer:
        vec = make_vectorizer(spec_for(self.spec, params), self.sublinear_tf, params,
                              vocabulary=vocabulary, analyzer=self.analyzer(params))
        return vec.set_params(norm=norm)

    def classifier(self, params: dict[str, Any], calibration: str) -> Any:
        return make_classifier(self.trainer, params, self.seed, calibration)

    def default_calibration(self) -> str:
        return "none" if self.trainer.has_proba else "sigmoid"


def _take(texts: list[str], idx: np.ndarray) -> list[str]:
    return [texts[i] for i in idx]


def _final(recipe: Recipe, params: dict[str, Any], calibration: str,
           vocabulary: list[str] | None, texts: list[str], y: np.ndarray,
           w: np.ndarray) -> Pipeline:
    """Fit on all rows, then give the vectorizer the plain, picklable ``Analyzer`` (the cached
    one returns the same n-grams, so the fitted state is identical)."""
    pipe = recipe.pipeline(params, calibration=calibration, vocabulary=vocabulary)
    pipe.fit(texts, y, clf__sample_weight=w)
    pipe.named_steps["tfidf"].analyzer = Analyzer(spec_for(recipe.spec, params))
    if calibration == REAL_SIGMOID:
        if recipe.real_platt is None:
            raise RuntimeError(f"{REAL_SIGMOID}: choose_calibration fits the Platt map first")
        pipe.steps[-1] = ("clf", prefit_sigmoid(pipe.named_steps["clf"], recipe.real_platt))
    return pipe


def _vectorizer_key(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in params.items() if k in (*VECTORIZER_KEYS, NGRAM_KEY)},
                      sort_keys=True)


class FoldFeatures:
    """Per-fold TF-IDF matrices, computed once per vectorizer setting and shared by every
    classifier setting, calibration method and vocabulary size of the cross-validation.

    Cached matrices are un-normalised; :meth:`get` selects columns and L2-normalises, which
    is exactly what a vectorizer fitted with that sub-vocabulary would produce (counts, df and
    idf of a term do not depend on the other terms; only the norm does).
    """

    def __init__(self, recipe: Recipe, texts: list[str],
                 folds: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.recipe, self.texts, self.folds = recipe, texts, folds
        self._cache: dict[tuple[int, str, int], tuple[Any, Any, list[str]]] = {}

    def raw(self, i: int, params: dict[str, Any], vocabulary: list[str] | None = None
            ) -> tuple[Any, Any, list[str]]:
        """``(train, test, terms)`` of fold ``i``, un-normalised."""
        key = (i, _vectorizer_key(params), hash(tuple(vocabulary)) if vocabulary else 0)
        if key not in self._cache:
            tr, te = self.folds[i]
            vec = self.recipe.vectorizer(params, vocabulary, norm=None)
            x_tr = vec.fit_transform(_take(self.texts, tr)).tocsc()
            x_te = vec.transform(_take(self.texts, te)).tocsc()
            terms = [""] * len(vec.vocabulary_)
            for term, j in vec.vocabulary_.items():
                terms[j] = term
            self._cache[key] = (x_tr, x_te, terms)
        return self._cache[key]

    def get(self, i: int, params: dict[str, Any], *, vocabulary: list[str] | None = None,
            columns: np.ndarray | None = None) -> tuple[Any, Any]:
        """L2-normalised ``(train, test)`` of fold ``i``, optionally restricted to ``columns``."""
        x_tr, x_te, _ = self.raw(i, params, vocabulary)
        if columns is not None:
            x_tr, x_te = x_tr[:, columns], x_te[:, columns]
        return l2_normalize(x_tr.tocsr()), l2_normalize(x_te.tocsr())


def _fit_clf(recipe: Recipe, params: dict[str, Any], calibration: str, x: Any,
             y: np.ndarray, w: np.ndarray) -> Any:
    return recipe.classifier(params, calibration).fit(x, y, sample_weight=w)


# --------------------------------------------------------------------------- search


def search_grid(
    recipe: Recipe,
    candidates: list[dict[str, Any]],
    features: FoldFeatures,
    y: np.ndarray,
    w: np.ndarray,
    time_budget_s: float,
    log: Log = print,
) -> pd.DataFrame:
    """Cross-validate every candidate, in order.

    Returns one row per candidate: its parameters, mean/std macro-F1 and accuracy over the
    folds, the mean vocabulary size, fit seconds, ``status`` ("done") and ``rank`` (1 = best
    macro-F1; ties go to the earlier candidate).

    ``time_budget_s`` only warns: a search that takes longer is logged, never cut short. A
    budget that stopped the search would let a busy machine compare fewer candidates and pick
    other hyper-parameters, so the same blueprint and seed would forge different artifacts.
    """
    start = time.monotonic()
    rows = []
    calibration = recipe.default_calibration()
    for c, params in enumerate(candidates):
        row: dict[str, Any] = {"candidate": c, "params": describe_params(params)}
        row.update({f"param_{k}": json.dumps(v) if isinstance(v, list) else v
                    for k, v in params.items()})
        t0 = time.monotonic()
        f1s, accs, dims = [], [], []
        for i, (tr, te) in enumerate(features.folds):
            x_tr, x_te = features.get(i, params)
            pred = _fit_clf(recipe, params, calibration, x_tr, y[tr], w[tr]).predict(x_te)
            f1s.append(f1_score(y[te], pred, average="macro"))
            accs.append(accuracy_score(y[te], pred))
            dims.append(x_tr.shape[1])
        row.update(
            mean_macro_f1=float(np.mean(f1s)), std_macro_f1=float(np.std(f1s)),
            mean_accuracy=float(np.mean(accs)), mean_features=float(np.mean(dims)),
            fit_seconds=round(time.monotonic() - t0, 3), status="done",
        )
        log(f"  cv {c + 1}/{len(candidates)} {row['params']}: macro-F1 "
            f"{row['mean_macro_f1']:.4f} ± {row['std_macro_f1']:.4f}")
        rows.append(row)
    elapsed = time.monotonic() - start
    if elapsed > time_budget_s:
        log(f"  warning: the grid search took {elapsed:.0f} s, over train.time_budget_s = "
            f"{time_budget_s:g} s (every candidate was still evaluated; shrink train.grid "
            "or cv_folds to make it faster)")
    table = pd.DataFrame(rows)
    done = table["status"] == "done"
    # Rank by F1 descending, ties by candidate order (stable sort), so the seed decides.
    order = table[done].sort_values("mean_macro_f1", ascending=False, kind="stable")
    table["rank"] = pd.NA
    table.loc[order.index, "rank"] = np.arange(1, len(order) + 1)
    return table


def best_candidate(cv_results: pd.DataFrame, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of the rank-1 row of :func:`search_grid`'s table."""
    best = cv_results.loc[cv_results["rank"] == 1, "candidate"]
    return dict(candidates[int(best.iloc[0])])


# --------------------------------------------------------------------------- size


def _as_trained(pipe: Pipeline, labels: list[str], spec: TextSpec, sublinear_tf: bool,
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
class _Pruned:
    pipeline: Pipeline
    vocabulary: list[str] | None
    onnx_bytes: int
    bin_bytes: int
    source: str

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
) -> _Pruned:
    """Shrink the vocabulary until the artifact pair fits ``budget_bytes``.

    ``fit_top(k)`` refits on the ``k`` best-ranked columns of ``full`` and returns the
    pipeline and its vocabulary; ``measure`` returns the pair's byte sizes. Sizes are nearly
    linear in ``k``, so each round rescales ``k`` by ``budget / size`` with a 2% margin.
    ``vocabulary`` is the fixed vocabulary ``full`` was fitted with, if any.
    """
    onnx_len, bin_len, source = measure(full)
    result = _Pruned(full, vocabulary, onnx_len, bin_len, source)
    if budget_bytes is None or result.size <= budget_bytes:
        return result
    n_full = len(full.named_steps["tfidf"].vocabulary_)
    k = n_full
    for _ in range(max_rounds):
        k = max(MIN_VOCABULARY, min(k - 1, math.floor(k * budget_bytes / result.size * 0.98)))
        pipe, vocab = fit_top(k)
        onnx_len, bin_len, source = measure(pipe)
        result = _Pruned(pipe, vocab, onnx_len, bin_len, source)
        log(f"  prune: {k} of {n_full} n-grams -> {result.size / 1024:.1f} KiB")
        if result.size <= budget_bytes or k == MIN_VOCABULARY:
            break
    if result.size > budget_bytes:
        raise ValueError(
            f"blueprint.yaml: export.size_budget_kb: {budget_bytes / KB:g} KB is unreachable: "
            f"{k} n-grams still take {result.size / KB:.1f} KB; raise the budget"
        )
    return result


# --------------------------------------------------------------------------- calibration


def _clip_proba(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def out_of_fold_proba(
    recipe: Recipe,
    params: dict[str, Any],
    calibration: str,
    vocabulary: list[str] | None,
    features: FoldFeatures,
    y: np.ndarray,
    w: np.ndarray,
    n_classes: int,
) -> np.ndarray:
    """Probabilities of each row from the fold model that did not see it."""
    proba = np.zeros((len(y), n_classes))
    for i, (tr, te) in enumerate(features.folds):
        x_tr, x_te = features.get(i, params, vocabulary=vocabulary)
        proba[te] = _fit_clf(recipe, params, calibration, x_tr, y[tr], w[tr]).predict_proba(x_te)
    return proba


def out_of_fold_scores(
    recipe: Recipe,
    params: dict[str, Any],
    vocabulary: list[str] | None,
    features: FoldFeatures,
    y: np.ndarray,
    w: np.ndarray,
) -> np.ndarray:
    """Binary decision scores of each row from the bare fold model that did not see it."""
    scores = np.zeros(len(y))
    for i, (tr, te) in enumerate(features.folds):
        x_tr, x_te = features.get(i, params, vocabulary=vocabulary)
        scores[te] = decision_scores(_fit_clf(recipe, params, REAL_SIGMOID, x_tr, y[tr], w[tr]),
                                     x_te)
    return scores


def _platt_proba(calibrator: Any, scores: np.ndarray) -> np.ndarray:
    p1 = calibrator.predict(scores)
    return np.stack([1.0 - p1, p1], axis=1)


def real_calibration_possible(real: np.ndarray | None, y: np.ndarray, n_classes: int) -> bool:
    """``sigmoid_real`` needs a binary task with enough real rows of each class."""
    if real is None or n_classes != 2 or not real.any():
        return False
    return bool(np.bincount(y[real], minlength=2).min() >= MIN_REAL_PER_CLASS)


@dataclass
class DevSet:
    """The real-text dev split as the train stage uses it: only to select a calibration."""

    texts: list[str]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def choose_calibration(
    recipe: Recipe,
    params: dict[str, Any],
    vocabulary: list[str] | None,
    features: FoldFeatures,
    y: np.ndarray,
    w: np.ndarray,
    n_classes: int,
    mode: str = "auto",
    *,
    real: np.ndarray | None = None,
    dev: DevSet | None = None,
) -> tuple[str, np.ndarray, pd.DataFrame]:
    """Pick the calibration; return it, its out-of-fold probabilities and the comparison table.

    Candidates (``mode="auto"``): the trainer's options, plus ``sigmoid_real`` (a Platt map
    fitted on the out-of-fold scores of the ``real`` rows) for a binary task with real rows.
    With a ``dev`` split, the candidate with the lowest dev log loss of its final model wins
    (the dev split selects among ready-made candidates; it fits nothing); without one, the
    lowest out-of-fold log loss. The first (uncalibrated) candidate is kept unless another
    lowers that log loss by ``CALIBRATION_MIN_GAIN``. Any other mode is taken as is.
    (Isotonic calibration exports through :mod:`foundry.onnx_isotonic`, which interpolates as
    scikit-learn does.)
    """
    methods = list(recipe.trainer.calibrations) if mode == "auto" else [mode]
    if mode == "auto" and real_calibration_possible(real, y, n_classes):
        methods.append(REAL_SIGMOID)
    if REAL_SIGMOID in methods and not real_calibration_possible(real, y, n_classes):
        raise TrainDataError(
            f"blueprint.yaml: train.calibration: {REAL_SIGMOID} needs a binary task with at "
            f"least {MIN_REAL_PER_CLASS} real training rows per label (tasks[].real)")
    rows, probas = [], {}
    for m in methods:
        if m == REAL_SIGMOID:
            scores = out_of_fold_scores(recipe, params, vocabulary, features, y, w)
            recipe.real_platt = fit_platt(scores[real], y[real], w[real])
            p = _platt_proba(recipe.real_platt, scores)
        else:
            p = out_of_fold_proba(recipe, params, m, vocabulary, features, y, w, n_classes)
        probas[m] = p
        top = p.max(axis=1)
        correct = p.argmax(axis=1) == y
        row = {
            "calibration": m,
            "log_loss": float(log_loss(y, _clip_proba(p), labels=list(range(n_classes)))),
            "brier": float(np.mean(np.sum((p - np.eye(n_classes)[y]) ** 2, axis=1))),
            "ece": expected_calibration_error(top, correct),
            "accuracy": float(correct.mean()),
        }
        if real is not None and real.any():
            row["real_log_loss"] = float(log_loss(y[real], _clip_proba(p[real]),
                                                  labels=list(range(n_classes))))
        if dev is not None and len(dev):
            final = _final(recipe, params, m, vocabulary, features.texts, y, w)
            p_dev = final.predict_proba(dev.texts)
            row["dev_log_loss"] = float(log_loss(dev.y, _clip_proba(p_dev),
                                                 labels=list(range(n_classes))))
            row["dev_accuracy"] = float((p_dev.argmax(axis=1) == dev.y).mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    key = "dev_log_loss" if "dev_log_loss" in table else "log_loss"
    chosen = methods[0]
    if len(methods) > 1:
        ref = table.iloc[0][key]
        best = table.sort_values(key, kind="stable").iloc[0]
        if best["calibration"] != methods[0] and best[key] <= ref * (1 - CALIBRATION_MIN_GAIN):
            chosen = str(best["calibration"])
    table["chosen"] = table["calibration"] == chosen
    table["chosen_by"] = key
    return chosen, probas[chosen], table


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


# --------------------------------------------------------------------------- stage


def text_spec(bp: Blueprint) -> TextSpec:
    f = bp.spec.train.features
    return TextSpec(max_chars=f.max_chars, min_n=f.min_n, max_n=f.max_n,
                    word_boundary_padding=f.word_boundary_padding)


def train_task(bp: Blueprint, task: Task, run_dir: Path, *, log: Log = print) -> TrainResult:
    """Train, prune and calibrate one task; write ``train/<task>/``."""
    t_start = time.monotonic()
    inputs = check_fresh(bp, run_dir, "train", task.name)
    cfg = bp.spec.train
    labels = task.label_names
    n_classes = len(labels)
    summary = read_json(require_stage_output(run_dir, "refine", task.name, "summary.json"))
    split = load_split(require_stage_output(run_dir, "refine", task.name, "train.jsonl"), labels)
    missing = [labels[k] for k in range(n_classes) if not (split.y == k).any()]
    if missing:
        raise TrainDataError(f"{split.path}: no training rows for label(s) {', '.join(missing)}")
    check_exam_not_in_training(split, bp.path(task.exam))
    texts, y = split.texts, split.y
    w = sample_weights(split, str(summary.get("balance", "none")), cfg.source_weights)
    real = split.real
    dev_rows = load_real(bp, task, "dev")
    dev = DevSet([r.text for r in dev_rows],
                 np.asarray([labels.index(r.label) for r in dev_rows], dtype=np.int64))
    trainer = get_trainer(cfg.trainer)
    recipe = Recipe(trainer, text_spec(bp), cfg.features.sublinear_tf, cfg.seed)
    candidates = expand_grid(trainer, cfg.grid)
    if cfg.select_on == "dev":
        from foundry.train_dev import train_on_dev

        return train_on_dev(bp, task, run_dir, split=split, w=w, recipe=recipe,
                            candidates=candidates, inputs=inputs, t_start=t_start, log=log)
    groups = split.groups if split.groups is not None else similarity_groups(
        texts, y, bp.spec.refine, cfg.cv_folds)
    folds = make_folds(y, cfg.cv_folds, cfg.seed, groups)
    log(f"{task.name}: {len(texts)} training rows ({int(real.sum())} real), trainer "
        f"{trainer.name}, {len(candidates)} candidate(s) x {len(folds)} folds")

    features = FoldFeatures(recipe, texts, folds)
    t_search = time.monotonic()
    cv_results = search_grid(recipe, candidates, features, y, w, cfg.time_budget_s, log)
    over_budget = time.monotonic() - t_search > cfg.time_budget_s
    evaluated = int((cv_results["status"] == "done").sum())
    params = best_candidate(cv_results, candidates)
    cv_f1 = float(cv_results.loc[cv_results["rank"] == 1, "mean_macro_f1"].iloc[0])
    spec = spec_for(recipe.spec, params)
    sublinear = bool(params.get("sublinear_tf", cfg.features.sublinear_tf))
    budget = bp.spec.export.size_budget_kb
    budget_bytes = None if budget is None else int(budget * KB)
    opset = bp.spec.export.opset

    data_sha256 = str(summary.get("data_sha256", ""))
    train_rows = int(summary.get("train_rows", len(texts)))
    bp_sha256 = bp.content_sha256()

    def measure(pipe: Pipeline) -> tuple[int, int, str]:
        model = _as_trained(pipe, labels, spec, sublinear, trainer.name, task.name,
                            data_sha256, train_rows)
        return artifact_size(model, opset, bp.name, bp_sha256)

    # Size budget: rank the unpruned model's columns, then refit on the top k.
    calibration = recipe.default_calibration()
    full = _final(recipe, params, calibration, None, texts, y, w)
    full_terms = vocabulary_terms(full)
    ranking = feature_ranking(full.named_steps["clf"], trainer,
                              full.named_steps["tfidf"].transform(texts), y, n_classes)

    def top_terms(k: int, order: np.ndarray = ranking, terms: list[str] = full_terms) -> list[str]:
        return sorted(terms[j] for j in order[:k])

    def fit_top(k: int, cal: str) -> tuple[Pipeline, list[str]]:
        vocab = top_terms(k)
        return _final(recipe, params, cal, vocab, texts, y, w), vocab

    pruned = prune_to_budget(full, lambda k: fit_top(k, calibration), measure, budget_bytes, log)
    cal_mode = getattr(cfg, "calibration", "auto")
    chosen, oof, cal_table = choose_calibration(
        recipe, params, pruned.vocabulary, features, y, w, n_classes, cal_mode,
        real=real, dev=dev if len(dev) else None)
    if chosen != calibration:
        # The calibration map adds bytes: re-check the budget with the chosen calibrator.
        start_k = len(pruned.vocabulary) if pruned.vocabulary else len(full_terms)
        refit = _final(recipe, params, chosen, pruned.vocabulary, texts, y, w)
        pruned = prune_to_budget(
            refit,
            lambda k: fit_top(min(k, start_k), chosen),
            measure, budget_bytes, log, vocabulary=pruned.vocabulary,
        )
        if pruned.vocabulary is not None and len(pruned.vocabulary) != start_k:
            if chosen == REAL_SIGMOID:  # the map belongs to the scores of this vocabulary
                scores = out_of_fold_scores(recipe, params, pruned.vocabulary, features, y, w)
                recipe.real_platt = fit_platt(scores[real], y[real], w[real])
                oof = _platt_proba(recipe.real_platt, scores)
                pruned.pipeline = _final(recipe, params, chosen, pruned.vocabulary, texts, y, w)
            else:
                oof = out_of_fold_proba(recipe, params, chosen, pruned.vocabulary, features, y,
                                        w, n_classes)
    by = cal_table["chosen_by"].iloc[0]
    log(f"  calibration: {chosen} ({by.replace('_', ' ')}: "
        + ", ".join(f"{r['calibration']} {r[by]:.4f}" for _, r in cal_table.iterrows()) + ")")

    curve = accuracy_size_curve(
        recipe, params, chosen, full, ranking, pruned, features, y, w, n_classes, measure)
    unpruned = None
    if pruned.vocabulary is not None:
        unpruned = _final(recipe, params, chosen, None, texts, y, w)

    trained = TrainedModel(
        pipeline=pruned.pipeline, labels=labels, spec=spec, sublinear_tf=sublinear,
        trainer=trainer.name, data_sha256=data_sha256, train_rows=train_rows,
        cv_results=cv_results,
        task=task.name, best_params=params, calibration=chosen, size_curve=curve,
        calibration_table=cal_table, oof_proba=oof, oof_y=y.copy(), oof_real=real,
        unpruned_pipeline=unpruned,
    )
    result = TrainResult(
        task=task.name, trainer=trainer.name, best_params=params, cv_macro_f1=cv_f1,
        candidates_evaluated=evaluated, candidates_total=len(candidates),
        budget_hit=over_budget, calibration=chosen,
        n_features=trained.n_features, n_features_unpruned=len(full_terms),
        onnx_bytes=pruned.onnx_bytes, bin_bytes=pruned.bin_bytes, size_budget_bytes=budget_bytes,
        size_source=pruned.source, elapsed_s=round(time.monotonic() - t_start, 2),
        out_dir=stage_dir(run_dir, "train", task.name),
    )
    trained.info = train_info(result, trained, cfg.seed)
    save_trained(trained, result.out_dir)
    write_stamp(bp, run_dir, "train", task.name, inputs)
    log(f"{task.name}: best {describe_params(params)} (CV macro-F1 {cv_f1:.4f}); "
        f"{trained.n_features} n-grams, {result.size_bytes / 1024:.1f} KiB; "
        f"{result.elapsed_s:.1f}s")
    return result


def accuracy_size_curve(
    recipe: Recipe, params: dict[str, Any], calibration: str, full: Pipeline,
    ranking: np.ndarray, pruned: _Pruned, features: FoldFeatures, y: np.ndarray,
    w: np.ndarray, n_classes: int, measure: Callable[[Pipeline], tuple[int, int, str]],
) -> pd.DataFrame:
    """Cross-validated macro-F1 and artifact size for a ladder of vocabulary sizes.

    In each fold the columns are ranked by a model fitted on that fold's training part only,
    so the scores are honest. Scores come from the uncalibrated classifier (a calibration map
    is monotone and barely moves decisions, and it would multiply the fits by 1 + its folds);
    sizes are measured on all-rows fits with ``calibration`` (the ones that ship), pruned by
    ``ranking`` (the ranking of ``full``'s columns).
    """
    n_full = len(full.named_steps["tfidf"].vocabulary_)
    n_final = len(pruned.vocabulary) if pruned.vocabulary is not None else n_full
    ladder = size_ladder(n_full, n_final)
    f1: dict[int, list[float]] = {k: [] for k in ladder}
    acc: dict[int, list[float]] = {k: [] for k in ladder}
    base_cal = recipe.default_calibration()
    for i, (tr, te) in enumerate(features.folds):
        x_tr, _ = features.get(i, params)
        fold_full = _fit_clf(recipe, params, base_cal, x_tr, y[tr], w[tr])
        order = feature_ranking(fold_full, recipe.trainer, x_tr, y[tr], n_classes)
        for k in ladder:
            cols = None if k >= x_tr.shape[1] else np.sort(order[:k])
            xk_tr, xk_te = features.get(i, params, columns=cols)
            pred = _fit_clf(recipe, params, base_cal, xk_tr, y[tr], w[tr]).predict(xk_te)
            f1[k].append(f1_score(y[te], pred, average="macro"))
            acc[k].append(accuracy_score(y[te], pred))
    full_terms = vocabulary_terms(full)
    rows = []
    for k in ladder:
        if k == n_final:
            size = pruned.size
        else:
            vocab = None if k == n_full else sorted(full_terms[j] for j in ranking[:k])
            onnx_len, bin_len, _ = measure(_final(recipe, params, calibration, vocab,
                                                  features.texts, y, w))
            size = onnx_len + bin_len
        rows.append({
            "n_features": k, "size_bytes": int(size), "size_kib": round(size / 1024, 1),
            "cv_macro_f1": float(np.mean(f1[k])), "cv_accuracy": float(np.mean(acc[k])),
            "chosen": k == n_final,
        })
    return pd.DataFrame(rows)


def train_info(result: TrainResult, trained: TrainedModel, seed: int) -> dict[str, Any]:
    """The ``train.json`` record."""
    return {
        "task": result.task,
        "trainer": result.trainer,
        "labels": trained.labels,
        "spec": trained.spec.to_dict(),
        "sublinear_tf": trained.sublinear_tf,
        "best_params": result.best_params,
        "cv_macro_f1": result.cv_macro_f1,
        "candidates_evaluated": result.candidates_evaluated,
        "candidates_total": result.candidates_total,
        "budget_hit": result.budget_hit,
        "calibration": result.calibration,
        "n_features": result.n_features,
        "n_features_unpruned": result.n_features_unpruned,
        "onnx_bytes": result.onnx_bytes,
        "bin_bytes": result.bin_bytes,
        "size_bytes": result.size_bytes,
        "size_budget_bytes": result.size_budget_bytes,
        "size_source": result.size_source,
        "data_sha256": trained.data_sha256,
        "train_rows": trained.train_rows,
        "seed": seed,
        "elapsed_s": result.elapsed_s,
        "model_format": MODEL_FORMAT,
    }


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
    write_json(out_dir / TRAIN_JSON, {**trained.info, "best_params": trained.best_params})


def load_trained(run_dir: Path, task: str) -> TrainedModel:
    """Load what :func:`train_stage` wrote for ``task`` in ``run_dir``.

    Raises
    ------
    FileNotFoundError
        If the train stage has not run for this task (says what to run).
    ValueError
        If ``model.joblib`` has an unknown format or disagrees with ``train.json``.
    """
    info = read_json(require_stage_output(run_dir, "train", task, TRAIN_JSON))
    model_path = require_stage_output(run_dir, "train", task, MODEL_FILE)
    blob = joblib.load(model_path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{model_path}: unknown model format; re-run the train stage")
    pipeline = blob["pipeline"]
    n = len(pipeline.named_steps["tfidf"].vocabulary_)
    if n != info["n_features"]:
        raise ValueError(
            f"{model_path}: has {n} features but train.json says {info['n_features']}; "
            "the train folder is inconsistent, re-run the train stage"
        )
    folder = Path(run_dir) / "train" / task
    oof = pd.read_csv(folder / OOF_FILE)
    return TrainedModel(
        pipeline=pipeline,
        labels=list(info["labels"]),
        spec=TextSpec(**info["spec"]),
        sublinear_tf=bool(info["sublinear_tf"]),
        trainer=info["trainer"],
        data_sha256=info["data_sha256"],
        train_rows=int(info["train_rows"]),
        cv_results=pd.read_csv(folder / CV_RESULTS_FILE),
        task=task,
        best_params=dict(info["best_params"]),
        calibration=info["calibration"],
        size_curve=pd.read_csv(folder / SIZE_CURVE_FILE),
        calibration_table=pd.read_csv(folder / CALIBRATION_FILE),
        oof_proba=oof[[f"p_{lab}" for lab in info["labels"]]].to_numpy(dtype=np.float64),
        oof_y=oof["y"].to_numpy(dtype=np.int64),
        oof_real=oof["real"].to_numpy(dtype=bool) if "real" in oof
        else np.zeros(len(oof), dtype=bool),
        unpruned_pipeline=blob.get("unpruned_pipeline"),
        info=info,
    )


def train_stage(bp: Blueprint, run_dir: Path, *, log: Log = print) -> dict[str, TrainResult]:
    """Train every task of ``bp`` in ``run_dir``; see the module docstring.

    Native thread pools (OpenMP, BLAS) are limited to one thread: the fits are small, and
    on a busy machine oversubscribed threads made them 30-60x slower; a single thread also
    keeps floating-point reductions in one order, so results do not depend on the core count.
    """
    with threadpool_limits(limits=1):
        return {task.name: train_task(bp, task, Path(run_dir), log=log) for task in bp.tasks}
