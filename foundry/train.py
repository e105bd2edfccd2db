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

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import normalize as l2_normalize
from sklearn.utils.class_weight import compute_sample_weight

from foundry.blueprint import Blueprint, Refine, Task
from foundry.errors import InputDataError
from foundry.jsonl import iter_jsonl
from foundry.parallel import map_tasks
from foundry.quantized import int8_pipeline
from foundry.realtext import REAL_SOURCE, load_real
from foundry.runs import require_stage_output, stage_dir
from foundry.stamps import check_fresh, write_stamp
from foundry.summaries import RefineSummary, TrainSummary
from foundry.textspec import TextSpec, normalize
from foundry.trained import (
    KB,
    Meter,
    Pruned,
    TrainedModel,
    clip_proba,
    expected_calibration_error,
    prune_to_budget,
    save_trained,
    size_meter,
    train_summary,
)
from foundry.trainers import (
    NGRAM_KEY,
    REAL_SIGMOID,
    VECTORIZER_KEYS,
    Recipe,
    decision_scores,
    describe_params,
    expand_grid,
    feature_ranking,
    final_fit,
    fit_platt,
    get_trainer,
    size_ladder,
    spec_for,
    vocabulary_terms,
)

#: A calibrator is used only if it lowers the out-of-fold log loss by at least this share:
#: a fitted calibration map is extra ONNX weight and a chance to overfit.
CALIBRATION_MIN_GAIN = 0.02
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
    ``source_weights`` (``train.source_weights`` with the task's ``source_weights`` on top,
    :meth:`Blueprint.source_weights`) multiplies the weight of each row by the weight of its
    source (e.g. ``{"real": 2.0}``).
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



def _take(texts: list[str], idx: np.ndarray) -> list[str]:
    return [texts[i] for i in idx]


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


# --------------------------------------------------------------------------- calibration


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
    if mode == "auto" and "sigmoid" in recipe.trainer.calibrations \
            and real_calibration_possible(real, y, n_classes):
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
            "log_loss": float(log_loss(y, clip_proba(p), labels=list(range(n_classes)))),
            "brier": float(np.mean(np.sum((p - np.eye(n_classes)[y]) ** 2, axis=1))),
            "ece": expected_calibration_error(top, correct),
            "accuracy": float(correct.mean()),
        }
        if real is not None and real.any():
            row["real_log_loss"] = float(log_loss(y[real], clip_proba(p[real]),
                                                  labels=list(range(n_classes))))
        if dev is not None and len(dev):
            final = final_fit(recipe, params, m, vocabulary, features.texts, y, w)
            p_dev = final.predict_proba(dev.texts)
            row["dev_log_loss"] = float(log_loss(dev.y, clip_proba(p_dev),
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


# --------------------------------------------------------------------------- stage


def text_spec(bp: Blueprint, task: Task | None = None) -> TextSpec:
    """The text spec of ``task`` (``train.features`` with the task's own ``features``), or the
    blueprint-wide one."""
    f = bp.features(task) if task is not None else bp.spec.train.features
    return TextSpec(max_chars=f.max_chars, min_n=f.min_n, max_n=f.max_n,
                    word_boundary_padding=f.word_boundary_padding, word_max_n=f.word_max_n,
                    head_chars=f.head_chars)


def _training_data(bp: Blueprint, task: Task, run_dir: Path
                   ) -> tuple[RefineSummary, Split, np.ndarray, DevSet]:
    """The refine summary, the train split (every label present, no exam text), its sample
    weights, and the real-text dev split."""
    labels = task.label_names
    summary = RefineSummary.load(run_dir, task.name)
    split = load_split(require_stage_output(run_dir, "refine", task.name, "train.jsonl"), labels)
    missing = [labels[k] for k in range(len(labels)) if not (split.y == k).any()]
    if missing:
        raise TrainDataError(f"{split.path}: no training rows for label(s) {', '.join(missing)}")
    check_exam_not_in_training(split, bp.path(task.exam))
    w = sample_weights(split, summary.balance, bp.source_weights(task))
    dev_rows = load_real(bp, task, "dev")
    dev = DevSet([r.text for r in dev_rows],
                 np.asarray([labels.index(r.label) for r in dev_rows], dtype=np.int64))
    return summary, split, w, dev


@dataclass
class _Search:
    """The cross-validated grid search: its table, the chosen parameters and their score."""

    features: FoldFeatures
    cv_results: pd.DataFrame
    params: dict[str, Any]
    cv_f1: float
    evaluated: int
    over_budget: bool


def _cross_validate(bp: Blueprint, task: Task, recipe: Recipe, candidates: list[dict[str, Any]],
                    split: Split, w: np.ndarray, log: Log) -> _Search:
    """Grouped folds over the train split, then every candidate scored on them."""
    cfg = bp.spec.train
    texts, y = split.texts, split.y
    groups = split.groups if split.groups is not None else similarity_groups(
        texts, y, bp.spec.refine, cfg.cv_folds)
    folds = make_folds(y, cfg.cv_folds, cfg.seed, groups)
    log(f"{task.name}: {len(texts)} training rows ({int(split.real.sum())} real), trainer "
        f"{recipe.trainer.name}, {len(candidates)} candidate(s) x {len(folds)} folds")
    features = FoldFeatures(recipe, texts, folds)
    t_search = time.monotonic()
    cv_results = search_grid(recipe, candidates, features, y, w, cfg.time_budget_s, log)
    over_budget = time.monotonic() - t_search > cfg.time_budget_s
    return _Search(
        features, cv_results, best_candidate(cv_results, candidates),
        float(cv_results.loc[cv_results["rank"] == 1, "mean_macro_f1"].iloc[0]),
        int((cv_results["status"] == "done").sum()), over_budget)


@dataclass
class _Fit:
    """The shipped fit (pruned to the size budget, calibrated) and what led to it."""

    full: Pipeline
    full_terms: list[str]
    ranking: np.ndarray
    pruned: Pruned
    calibration: str
    oof: np.ndarray
    cal_table: pd.DataFrame


def _fit_within_budget(recipe: Recipe, params: dict[str, Any], split: Split, w: np.ndarray,
                       n_classes: int, features: FoldFeatures, dev: DevSet, measure: Meter,
                       budget_bytes: int | None, cal_mode: str, log: Log) -> _Fit:
    """Rank the unpruned model's columns, refit on the top k within the size budget, choose
    the calibration, and re-check the budget when the chosen calibrator adds bytes."""
    texts, y, real = split.texts, split.y, split.real
    calibration = recipe.default_calibration()
    full = final_fit(recipe, params, calibration, None, texts, y, w)
    full_terms = vocabulary_terms(full)
    ranking = feature_ranking(full.named_steps["clf"], recipe.trainer,
                              full.named_steps["tfidf"].transform(texts), y, n_classes)

    def fit_top(k: int, cal: str) -> tuple[Pipeline, list[str]]:
        vocab = sorted(full_terms[j] for j in ranking[:k])
        return final_fit(recipe, params, cal, vocab, texts, y, w), vocab

    pruned = prune_to_budget(full, lambda k: fit_top(k, calibration), measure, budget_bytes, log)
    chosen, oof, cal_table = choose_calibration(
        recipe, params, pruned.vocabulary, features, y, w, n_classes, cal_mode,
        real=real, dev=dev if len(dev) else None)
    if chosen != calibration:
        # The calibration map adds bytes: re-check the budget with the chosen calibrator.
        start_k = len(pruned.vocabulary) if pruned.vocabulary else len(full_terms)
        refit = final_fit(recipe, params, chosen, pruned.vocabulary, texts, y, w)
        pruned = prune_to_budget(
            refit,
            lambda k: fit_top(min(k, start_k), chosen),
            measure, budget_bytes, log, vocabulary=pruned.vocabulary,
        )
        if pruned.vocabulary is not None and len(pruned.vocabulary) != start_k:
            oof = _recalibrated_oof(recipe, params, chosen, pruned, features, split, w,
                                    n_classes)
    by = cal_table["chosen_by"].iloc[0]
    log(f"  calibration: {chosen} ({by.replace('_', ' ')}: "
        + ", ".join(f"{r['calibration']} {r[by]:.4f}" for _, r in cal_table.iterrows()) + ")")
    return _Fit(full, full_terms, ranking, pruned, chosen, oof, cal_table)


def _recalibrated_oof(recipe: Recipe, params: dict[str, Any], chosen: str, pruned: Pruned,
                      features: FoldFeatures, split: Split, w: np.ndarray, n_classes: int
                      ) -> np.ndarray:
    """Out-of-fold probabilities after the budget cut the vocabulary again; a real-text
    Platt map is refitted (it belongs to the scores of this vocabulary), and with it the
    shipped pipeline."""
    y, real = split.y, split.real
    if chosen == REAL_SIGMOID:
        scores = out_of_fold_scores(recipe, params, pruned.vocabulary, features, y, w)
        recipe.real_platt = fit_platt(scores[real], y[real], w[real])
        pruned.pipeline = final_fit(recipe, params, chosen, pruned.vocabulary, split.texts, y, w)
        return _platt_proba(recipe.real_platt, scores)
    return out_of_fold_proba(recipe, params, chosen, pruned.vocabulary, features, y, w,
                             n_classes)


def train_task(bp: Blueprint, task: Task, run_dir: Path, *, log: Log = print) -> TrainSummary:
    """Train, prune and calibrate one task; write ``train/<task>/``."""
    t_start = time.monotonic()
    inputs = check_fresh(bp, run_dir, "train", task.name)
    cfg = bp.spec.train
    labels = task.label_names
    summary, split, w, dev = _training_data(bp, task, run_dir)
    trainer = get_trainer(cfg.trainer)
    features = bp.features(task)
    recipe = Recipe(trainer, text_spec(bp, task), features.sublinear_tf, cfg.seed, labels)
    candidates = expand_grid(trainer, cfg.grid)
    if cfg.select_on == "dev":
        from foundry.train_dev import train_on_dev

        return train_on_dev(bp, task, run_dir, split=split, w=w, recipe=recipe,
                            candidates=candidates, inputs=inputs, t_start=t_start, log=log)
    search = _cross_validate(bp, task, recipe, candidates, split, w, log)
    params = search.params
    spec = spec_for(recipe.spec, params)
    sublinear = bool(params.get("sublinear_tf", features.sublinear_tf))
    budget = bp.spec.export.size_budget_kb
    budget_bytes = None if budget is None else int(budget * KB)
    data_sha256, train_rows = summary.data_sha256, summary.train_rows
    measure = size_meter(labels, spec, sublinear, trainer.name, task.name, data_sha256,
                         train_rows, bp.spec.export.opset, bp.name, bp.content_sha256())
    fit = _fit_within_budget(recipe, params, split, w, len(labels), search.features, dev,
                             measure, budget_bytes, getattr(cfg, "calibration", "auto"), log)
    curve = accuracy_size_curve(recipe, params, fit.calibration, fit.full, fit.ranking,
                                fit.pruned, search.features, split.y, w, len(labels), measure)
    unpruned = None
    if fit.pruned.vocabulary is not None:
        unpruned = final_fit(recipe, params, fit.calibration, None, split.texts, split.y, w)
    trained = TrainedModel(
        pipeline=int8_pipeline(fit.pruned.pipeline), labels=labels, spec=spec,
        sublinear_tf=sublinear,
        trainer=trainer.name, data_sha256=data_sha256, train_rows=train_rows,
        cv_results=search.cv_results,
        task=task.name, best_params=params, calibration=fit.calibration, size_curve=curve,
        calibration_table=fit.cal_table, oof_proba=fit.oof, oof_y=split.y.copy(),
        oof_real=split.real, unpruned_pipeline=unpruned,
    )
    result = trained.summary = train_summary(
        trained, fit.pruned, seed=cfg.seed, cv_macro_f1=search.cv_f1,
        candidates=(search.evaluated, len(candidates)), budget_hit=search.over_budget,
        n_features_unpruned=len(fit.full_terms), size_budget_bytes=budget_bytes,
        elapsed_s=round(time.monotonic() - t_start, 2))
    save_trained(trained, stage_dir(run_dir, "train", task.name))
    write_stamp(bp, run_dir, "train", task.name, inputs)
    log(f"{task.name}: best {describe_params(params)} (CV macro-F1 {search.cv_f1:.4f}); "
        f"{trained.n_features} n-grams, {result.size_bytes / 1024:.1f} KiB; "
        f"{result.elapsed_s:.1f}s")
    return result


def accuracy_size_curve(
    recipe: Recipe, params: dict[str, Any], calibration: str, full: Pipeline,
    ranking: np.ndarray, pruned: Pruned, features: FoldFeatures, y: np.ndarray,
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
            onnx_len, bin_len, _ = measure(final_fit(recipe, params, calibration, vocab,
                                                  features.texts, y, w))
            size = onnx_len + bin_len
        rows.append({
            "n_features": k, "size_bytes": int(size), "size_kib": round(size / 1024, 1),
            "cv_macro_f1": float(np.mean(f1[k])), "cv_accuracy": float(np.mean(acc[k])),
            "chosen": k == n_final,
        })
    return pd.DataFrame(rows)


def train_stage(bp: Blueprint, run_dir: Path, *, log: Log = print) -> dict[str, TrainSummary]:
    """Train every task of ``bp`` in ``run_dir``; see the module docstring.

    Native thread pools (OpenMP, BLAS) are limited to one thread: the fits are small, and
    on a busy machine oversubscribed threads made them 30-60x slower; a single thread also
    keeps floating-point reductions in one order, so results do not depend on the core count.
    With ``train.workers`` > 1 the tasks train side by side in worker processes
    (:func:`foundry.parallel.map_tasks`); each fit is still single-threaded, so the models
    are the same.
    """
    return map_tasks(train_task, bp, Path(run_dir), bp.spec.train.workers, log=log)
