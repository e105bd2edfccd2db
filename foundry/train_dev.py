"""Training with a dev split (``train.select_on: dev``): one fit per candidate, no folds.

For a task with dataset files of role ``dev`` (a benchmark's validation split), candidates are
fitted once on the training rows and scored on the dev rows, instead of cross-validated on
the training rows. It is what the benchmark protocols prescribe (choose on validation, never
on test) and it is ``cv_folds`` times cheaper, which matters with 60-150 labels: a linear SVM
on 15,000 CLINC150 rows takes tens of seconds per fit on two cores.

The dev split also fits the temperature of :class:`foundry.quantized.QuantizedLinearSVC`
and :class:`foundry.quantized.QuantizedLinearBlend` (their probabilities), and its probabilities are what the evaluate stage chooses the threshold
on (``oof_proba`` of the :class:`foundry.trained.TrainedModel`). The accuracy-against-size table
is scored on dev too, with the float32 size of the same vocabulary beside the int8 size.

With ``train.refit_on_dev: true`` the shipped model is then refitted on the training rows plus
the dev rows (the same parameters and vocabulary, cut to its best-ranked n-grams if the refit
outgrows the size budget, or with fewer of its weights kept when the budget thinned them), except dev rows equal or near an exam or test text. Its temperature and the threshold must still come from texts the scoring model
never saw: the dev rows are cut in two halves, each half is scored by a model fitted on the
training rows and the other half, the temperature is fitted on those cross-fitted scores, and
the same cross-fitted probabilities are the ``oof_proba`` the threshold is chosen on. The
shipped model saw slightly more data than either half-model, so it may be slightly more
confident than they were: the operating point on test can move a little from the one chosen
on dev. The candidate choice, the size table and the unpruned model stay those of the
training rows alone.

With many labels the size budget first thins the weights rather than the vocabulary
(:func:`foundry.trained.fit_to_budget`): sparse int8 weights, the same count in the shipped
model and in both cross-fitted models.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss

from foundry.blueprint import Blueprint, Task
from foundry.datasets import load_dataset
from foundry.errors import ConfigError
from foundry.quantized import int8_pipeline
from foundry.refine import load_exam, near_held_out
from foundry.runs import stage_dir
from foundry.stamps import write_stamp
from foundry.summaries import RefineSummary, TrainSummary
from foundry.trained import (
    KB,
    TrainedModel,
    clip_proba,
    expected_calibration_error,
    fit_to_budget,
    save_trained,
    size_meter,
    train_summary,
)
from foundry.trainers import (
    Recipe,
    describe_params,
    feature_ranking,
    final_fit,
    size_ladder,
    spec_for,
    vocabulary_terms,
)

Log = Callable[[str], None]
#: Most vocabulary sizes scored in the accuracy-against-size table (each is one fit).
MAX_LADDER = 5


def dev_rows(bp: Blueprint, task: Task) -> tuple[list[str], list[str]]:
    """Texts and labels of the task's dev split (dataset files of role ``dev``)."""
    rows = load_dataset(bp, task, "dev")
    return [r.text for r in rows], [r.label for r in rows]


def _scores(pipe: Any, texts: list[str]) -> np.ndarray:
    return np.asarray(pipe.named_steps["clf"].decision_function(
        pipe.named_steps["tfidf"].transform(texts)))


def _dev_metrics(pipe: Any, texts: list[str], y: np.ndarray) -> tuple[float, float]:
    pred = _scores(pipe, texts).argmax(axis=1)
    return float(f1_score(y, pred, average="macro")), float(accuracy_score(y, pred))


def _candidates_on_dev(recipe: Recipe, candidates: list[dict[str, Any]], texts: list[str],
                       y: np.ndarray, w: np.ndarray, dev_texts: list[str], y_dev: np.ndarray,
                       log: Log) -> tuple[pd.DataFrame, dict[int, Any]]:
    """Each candidate fitted once on the training rows and scored on the dev rows: the
    ``cv_results`` table (ranked by dev macro-F1) and the fitted pipelines."""
    rows, fitted = [], {}
    for c, params in enumerate(candidates):
        t0 = time.monotonic()
        pipe = final_fit(recipe, params, recipe.default_calibration(), None, texts, y, w)
        f1, acc = _dev_metrics(pipe, dev_texts, y_dev)
        fitted[c] = pipe
        row = {"candidate": c, "params": describe_params(params),
               **{f"param_{k}": v for k, v in params.items()},
               "mean_macro_f1": f1, "std_macro_f1": 0.0, "mean_accuracy": acc,
               "mean_features": float(len(pipe.named_steps["tfidf"].vocabulary_)),
               "fit_seconds": round(time.monotonic() - t0, 3), "status": "done"}
        log(f"  dev {c + 1}/{len(candidates)} {row['params']}: macro-F1 {f1:.4f}, "
            f"accuracy {acc:.4f} ({row['fit_seconds']:.1f}s)")
        rows.append(row)
    cv_results = pd.DataFrame(rows)
    order = cv_results.sort_values("mean_macro_f1", ascending=False, kind="stable")
    cv_results["rank"] = pd.NA
    cv_results.loc[order.index, "rank"] = np.arange(1, len(order) + 1)
    return cv_results, fitted


def _temperature_table(temperature: float, dev_proba: np.ndarray, y_dev: np.ndarray,
                       k_classes: int) -> pd.DataFrame:
    """The calibration table of a dev-selected model: its temperature's scores on dev."""
    return pd.DataFrame([{
        "calibration": "temperature", "temperature": temperature,
        "log_loss": float(log_loss(y_dev, clip_proba(dev_proba),
                                   labels=list(range(k_classes)))),
        "brier": float(np.mean(np.sum((dev_proba - np.eye(k_classes)[y_dev]) ** 2, axis=1))),
        "ece": expected_calibration_error(dev_proba.max(axis=1),
                                             dev_proba.argmax(axis=1) == y_dev),
        "accuracy": float((dev_proba.argmax(axis=1) == y_dev).mean()), "chosen": True,
    }])


def _dev_set(bp: Blueprint, task: Task) -> tuple[list[str], np.ndarray]:
    """The dev texts and their class indices; refused when the task has no dev rows."""
    dev_texts, dev_labels = dev_rows(bp, task)
    if not dev_texts:
        raise ConfigError(f"{bp.root / 'blueprint.yaml'}: train.select_on: dev needs dev rows; "
                          f"task {task.name!r} has no dataset file of role dev")
    index = {lab: i for i, lab in enumerate(task.label_names)}
    return dev_texts, np.array([index[lab] for lab in dev_labels], dtype=np.int64)


def train_on_dev(bp: Blueprint, task: Task, run_dir: Path, *, split: Any, w: np.ndarray,
                 recipe: Recipe, candidates: list[dict[str, Any]], inputs: Any, t_start: float,
                 log: Log = print) -> TrainSummary:
    """Stage 3 for one task with ``train.select_on: dev``; writes ``train/<task>/`` as
    :func:`foundry.train.train_task` does and returns its :class:`TrainSummary`."""
    cfg = bp.spec.train
    labels = task.label_names
    k_classes = len(labels)
    dev_texts, y_dev = _dev_set(bp, task)
    texts, y = split.texts, split.y
    log(f"{task.name}: {len(texts)} training rows, {len(dev_texts)} dev rows, trainer "
        f"{recipe.trainer.name}, {len(candidates)} candidate(s) scored on dev")
    cv_results, fitted = _candidates_on_dev(recipe, candidates, texts, y, w, dev_texts, y_dev,
                                            log)
    best = int(cv_results.loc[cv_results["rank"] == 1, "candidate"].iloc[0])
    params = dict(candidates[best])
    full = fitted[best]
    spec = spec_for(recipe.spec, params)
    sublinear = bool(params.get("sublinear_tf", bp.features(task).sublinear_tf))
    budget = bp.spec.export.size_budget_kb
    budget_bytes = None if budget is None else int(budget * KB)
    refined = RefineSummary.load(run_dir, task.name)
    data_sha256, train_rows = refined.data_sha256, refined.train_rows
    measure = size_meter(labels, spec, sublinear, recipe.trainer.name, task.name, data_sha256,
                         train_rows, bp.spec.export.opset, bp.name, bp.content_sha256())
    full_terms = vocabulary_terms(full)
    x_full = full.named_steps["tfidf"].transform(texts)
    ranking = feature_ranking(full.named_steps["clf"], recipe.trainer, x_full, y, k_classes)

    def fit_top(k: int) -> tuple[Any, list[str]]:
        vocab = sorted(full_terms[j] for j in ranking[:k])
        return final_fit(recipe, params, recipe.default_calibration(), vocab, texts, y, w), vocab

    pruned = fit_to_budget(full, fit_top, measure, budget_bytes, log)
    pruned.pipeline = int8_pipeline(pruned.pipeline)  # as measured and shipped
    # the size table is of models fitted on the training rows alone (dev scores them)
    curve = _size_curve(pruned, full, fit_top, measure, dev_texts, y_dev, k_classes)
    if cfg.refit_on_dev:
        refit = _dev_refitter(bp, task, recipe, params, (texts, y, w), (dev_texts, y_dev), log)
        pruned, temperature, dev_proba = refit_within_budget(
            refit, pruned.vocabulary, [full_terms[j] for j in ranking], measure,
            budget_bytes, log, max_weights=pruned.max_weights)
    else:
        temperature = _set_temperature(pruned.pipeline, dev_texts, y_dev)
        dev_proba = pruned.pipeline.predict_proba(dev_texts)
    log(f"  temperature {temperature:.4f} (fitted on dev by log loss)")
    cal_table = _temperature_table(temperature, dev_proba, y_dev, k_classes)
    unpruned = None
    if pruned.vocabulary is not None or pruned.max_weights is not None:
        unpruned = full
        _set_temperature(unpruned, dev_texts, y_dev)

    trained = TrainedModel(
        pipeline=pruned.pipeline, labels=labels, spec=spec, sublinear_tf=sublinear,
        trainer=recipe.trainer.name, data_sha256=data_sha256, train_rows=train_rows,
        cv_results=cv_results, task=task.name, best_params=params, calibration="temperature",
        size_curve=curve, calibration_table=cal_table, oof_proba=dev_proba, oof_y=y_dev,
        unpruned_pipeline=unpruned,
    )
    dev_f1 = float(cv_results.loc[cv_results["candidate"] == best, "mean_macro_f1"].iloc[0])
    result = trained.summary = train_summary(
        trained, pruned, seed=cfg.seed, cv_macro_f1=dev_f1,
        candidates=(len(candidates), len(candidates)), budget_hit=False,
        n_features_unpruned=len(full_terms), size_budget_bytes=budget_bytes,
        elapsed_s=round(time.monotonic() - t_start, 2), selected_on="dev",
        dev_rows=len(dev_texts), temperature=temperature,
        refit_on_dev=cfg.refit_on_dev)
    save_trained(trained, stage_dir(run_dir, "train", task.name))
    write_stamp(bp, run_dir, "train", task.name, inputs)
    log(f"{task.name}: best {describe_params(params)} (dev macro-F1 {dev_f1:.4f}); "
        f"{trained.n_features} n-grams, {result.size_bytes / 1024:.1f} KiB; "
        f"{result.elapsed_s:.1f}s")
    return result


def _dev_refitter(bp: Blueprint, task: Task, recipe: Recipe, params: dict[str, Any],
                  train: tuple[list[str], np.ndarray, np.ndarray],
                  dev: tuple[list[str], np.ndarray], log: Log
                  ) -> Callable[[list[str] | None, int | None], tuple[Any, float, np.ndarray]]:
    """The ``refit(vocabulary, max_weights)`` of :func:`refit_within_budget`: the shipped
    refit on train + dev, its temperature and cross-fitted dev probabilities, as measured and
    shipped. A call with the same vocabulary and fewer weights thins the same fits."""
    fits: dict[tuple[str, ...] | None, Any] = {}

    def refit(vocab: list[str] | None, max_weights: int | None
              ) -> tuple[Any, float, np.ndarray]:
        key = None if vocab is None else tuple(vocab)
        if key not in fits:
            fits.clear()
            fits[key] = _refit_with_dev(bp, task, recipe, params, vocab, train, dev, log)
        final, temperature, dev_proba = _calibrated_refit(
            *fits[key], dev, len(task.label_names), max_weights)
        return int8_pipeline(final), temperature, dev_proba

    return refit


def dev_rows_near_held_out(bp: Blueprint, task: Task, dev_texts: list[str]) -> set[int]:
    """Positions of the dev rows that ``train.refit_on_dev`` never trains on: equal or near
    (the refinery's test) an exam text or a text of the task's test files."""
    held_out = [r["text"] for r in load_exam(bp, task)] + \
        [r.text for r in load_dataset(bp, task, "test")]
    return near_held_out(dev_texts, held_out, bp.spec.refine)


def _refit_with_dev(bp: Blueprint, task: Task, recipe: Recipe, params: dict[str, Any],
                    vocabulary: list[str] | None, train: tuple[list[str], np.ndarray, np.ndarray],
                    dev: tuple[list[str], np.ndarray], log: Log
                    ) -> tuple[Any, list[tuple[Any, np.ndarray]]]:
    """``train.refit_on_dev``: the model refitted on the training and dev rows, and the two
    models that score the dev rows for the temperature and the threshold, cross-fitted
    (each fitted on the training rows and one half of dev, scoring the other half:
    ``(pipeline, held-out dev positions)``). Dev rows equal or near an exam or test text are
    scored but never trained on. :func:`_calibrated_refit` finishes them."""
    (texts, y, w), (dev_texts, y_dev) = train, dev
    excluded = dev_rows_near_held_out(bp, task, dev_texts)
    halves = np.array_split(np.random.default_rng(bp.spec.train.seed).permutation(len(y_dev)), 2)

    def fit(rows: np.ndarray) -> Any:
        rows = np.array([i for i in rows.tolist() if i not in excluded], dtype=np.int64)
        return final_fit(recipe, params, recipe.default_calibration(), vocabulary,
                         texts + [dev_texts[i] for i in rows], np.concatenate([y, y_dev[rows]]),
                         np.concatenate([w, np.ones(len(rows))]))

    crossfit = [(fit(other), held) for held, other in (halves, halves[::-1])]
    final = fit(np.arange(len(y_dev)))
    log(f"  refitted on {len(texts)} training + {len(y_dev) - len(excluded)} dev rows "
        f"({len(excluded)} dev rows near an exam or test text left out); temperature and "
        f"threshold from dev scores cross-fitted over two halves")
    return final, crossfit


def _calibrated_refit(final: Any, crossfit: list[tuple[Any, np.ndarray]],
                      dev: tuple[list[str], np.ndarray], k_classes: int,
                      max_weights: int | None = None) -> tuple[Any, float, np.ndarray]:
    """The shipped refit (:func:`_refit_with_dev`), its temperature and the cross-fitted dev
    probabilities. With ``max_weights`` every model keeps that many of its int8 weights
    (sparse weights, as shipped), so the temperature and the threshold are those of the
    shipped kind of model; copies are thinned, the fitted models stay as they were."""
    from foundry.quantized import fit_temperature, takes_temperature
    from foundry.trained import with_sparse_weights

    dev_texts, y_dev = dev
    if max_weights is not None:
        final = with_sparse_weights(final, max_weights)
        crossfit = [(with_sparse_weights(pipe, max_weights), held) for pipe, held in crossfit]
    scores = np.zeros((len(y_dev), k_classes))
    for pipe, held in crossfit:
        scores[held] = _scores(pipe, [dev_texts[i] for i in held])
    quantized = takes_temperature(final.named_steps["clf"])
    temperature = fit_temperature(scores, y_dev) if quantized else 1.0
    dev_proba = np.zeros_like(scores)
    for pipe, held in crossfit:
        if quantized:
            pipe.named_steps["clf"].set_temperature(temperature)
        dev_proba[held] = pipe.predict_proba([dev_texts[i] for i in held])
    if quantized:
        final.named_steps["clf"].set_temperature(temperature)
    return final, temperature, dev_proba


def refit_within_budget(
    refit: Callable[[list[str] | None, int | None], tuple[Any, float, np.ndarray]],
    vocabulary: list[str] | None,
    ranked_terms: list[str],
    measure: Callable[[Any], tuple[int, int, str]],
    budget_bytes: int | None,
    log: Log = print,
    max_rounds: int = 6,
    max_weights: int | None = None,
) -> tuple[Any, float, np.ndarray]:
    """The refitted model (a :class:`foundry.trained.Pruned`), its temperature and dev
    probabilities, shrunk until it fits ``budget_bytes``.

    ``refit(vocab)`` fits on the training and dev rows with that vocabulary (``None``: learn
    it) and returns the shipped pipeline, its temperature and dev probabilities. The pruned vocabulary fitted the budget on the training rows alone, but the refit
    moves the sizes a little (the weights and idf values the artifacts store change), and a
    learnt vocabulary grows with the dev rows' n-grams. So an oversize refit is refitted on
    fewer of ``ranked_terms`` (the training model's columns, best first), rescaled by
    ``budget / size`` with a 0.5% margin, as :func:`foundry.trained.prune_to_budget` does.
    A model with sparse weights (``max_weights``, :func:`foundry.trained.fit_to_budget`)
    keeps its vocabulary and keeps fewer weights instead (the entries' bytes vary a little
    with where the kept weights fall).
    """
    from foundry.trained import Pruned, fewer_weights

    vocab = vocabulary
    for _ in range(max_rounds):
        pipe, temperature, dev_proba = refit(vocab, max_weights)
        onnx_len, bin_len, source = measure(pipe)
        result = Pruned(pipe, vocab, onnx_len, bin_len, source, max_weights)
        if budget_bytes is None or result.size <= budget_bytes:
            return result, temperature, dev_proba
        if max_weights is not None:
            max_weights = max(1, fewer_weights(max_weights, pipe, onnx_len, bin_len,
                                               budget_bytes))
            log(f"  refit takes {result.size} bytes, over the {budget_bytes}-byte budget: "
                f"refitting with {max_weights} weights")
            continue
        k = len(vocab) if vocab is not None else len(ranked_terms)
        k = max(1, min(k - 1, int(k * budget_bytes / result.size * 0.995)))
        log(f"  refit takes {result.size} bytes, over the {budget_bytes}-byte budget: "
            f"refitting on the best {k} n-grams")
        vocab = sorted(ranked_terms[:k])
    raise ValueError(f"train.refit_on_dev: the refitted model still takes {result.size} bytes "
                     f"after {max_rounds} rounds, over export.size_budget_kb "
                     f"({budget_bytes} bytes); raise the budget or set refit_on_dev: false")


def _set_temperature(pipe: Any, texts: list[str], y: np.ndarray) -> float:
    """Fit the temperature of ``pipe``'s classifier on ``texts`` (1 for other classifiers)."""
    from foundry.quantized import fit_temperature, takes_temperature

    clf = pipe.named_steps["clf"]
    if not takes_temperature(clf):
        return 1.0
    t = fit_temperature(_scores(pipe, texts), y)
    clf.set_temperature(t)
    return t


def _size_curve(pruned: Any, full: Any, fit_top: Callable[[int], tuple[Any, list[str]]],
                measure: Callable[[Any], tuple[int, int, str]], dev_texts: list[str],
                y_dev: np.ndarray, k_classes: int) -> pd.DataFrame:
    """Dev macro-F1 / accuracy and artifact bytes (int8 as shipped, float32 for comparison)
    for a few vocabulary sizes, each refitted on the top-ranked n-grams, all weights kept;
    with sparse weights also the shipped vocabulary at half and twice the weights kept."""
    from foundry.quantized import Int8Linear, stored_weight_bytes
    from foundry.trained import with_sparse_weights

    quantized = isinstance(full.named_steps["clf"], Int8Linear)
    n_full = len(full.named_steps["tfidf"].vocabulary_)
    n_final = len(pruned.vocabulary) if pruned.vocabulary is not None else n_full
    ladder = size_ladder(n_full, n_final)
    keep = {n_full, n_final}
    ladder = sorted(keep | set([k for k in ladder if k not in keep][: MAX_LADDER - len(keep)]),
                    reverse=True)
    models: list[tuple[Any, tuple[int, int] | None, bool]] = []  # (pipeline, sizes, chosen)
    sparse = pruned.max_weights is not None
    fitted = {n_full: full, n_final: pruned.dense} if sparse else {n_full: full}
    for k in ladder:
        if k == n_final and not sparse:
            models.append((pruned.pipeline, (pruned.onnx_bytes, pruned.bin_bytes), True))
        else:  # the dense fits the budget step made are not fitted again
            models.append((fitted[k] if k in fitted else fit_top(k)[0], None, False))
    if sparse:
        total = pruned.dense.named_steps["clf"].w_q_.size
        for m in (2 * pruned.max_weights, pruned.max_weights // 2):
            if 0 < m < total:
                models.append((with_sparse_weights(pruned.dense, m), None, False))
        models.append((pruned.pipeline, (pruned.onnx_bytes, pruned.bin_bytes), True))
    rows = []
    for pipe, sizes, chosen in models:
        onnx_len, bin_len = sizes if sizes is not None else measure(pipe)[:2]
        clf = pipe.named_steps["clf"]
        k = len(pipe.named_steps["tfidf"].vocabulary_)
        f1, acc = _dev_metrics(pipe, dev_texts, y_dev)
        size = onnx_len + bin_len
        weights = clf.n_weights_ if quantized else k * k_classes
        # float32: 4 bytes for each of the k x K weights instead of the bytes stored
        f32 = (size - stored_weight_bytes(clf) + 4 * k * k_classes) if quantized else size
        rows.append({"n_features": k, "n_weights": weights, "size_bytes": int(size),
                     "size_kib": round(size / 1024, 1), "size_f32_bytes": int(f32),
                     "cv_macro_f1": f1, "cv_accuracy": acc, "chosen": chosen})
    return pd.DataFrame(rows).sort_values(["n_features", "n_weights"], ascending=False,
                                           kind="stable", ignore_index=True)
