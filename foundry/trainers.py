"""The trainer registry: TF-IDF character n-grams + one exportable classifier.

Every trainer builds the same two-step scikit-learn pipeline::

    Pipeline([("tfidf", TfidfVectorizer(analyzer=Analyzer(spec), ...)), ("clf", classifier)])

trained on integer class indices ``0..K-1`` (the blueprint's label order), so
``predict_proba`` column ``k`` is ``labels[k]``. Every classifier here converts with skl2onnx
to the ONNX contract of the architecture (input ``features`` float32 ``[N, D]``, outputs
``label`` and ``probabilities``).

Grid keys of ``train.grid`` in a blueprint (each maps to a list of candidate values):

- classifier keys, per trainer (``C`` for the linear ones, ``alpha`` for naive Bayes,
  ``class_weight`` for the linear ones, ``hidden`` and ``alpha`` for the perceptron,
  ``lr_C`` for the logistic part of ``tfidf_linear_blend_int8``, whose ``C`` is its SVM's);
- vectorizer keys ``min_df``, ``max_df``, ``max_features``, ``sublinear_tf``;
- ``ngram``: ``[min_n, max_n]`` pairs, overriding ``train.features.min_n/max_n``;
- ``prefix_weight``, ``suffix_weight`` for ``tfidf_svm_int8``: how much labels named
  ``<prefix>_<suffix>`` share the scores of their groups (0 by default: nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from foundry.errors import ConfigError
from foundry.textspec import Analyzer, TextSpec, display_term

if TYPE_CHECKING:
    import numpy as np
    from sklearn.base import BaseEstimator
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import ComplementNB
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

# scikit-learn and numpy are imported where they are used: the registry (names, grid keys,
# value rules) is also what `foundry/blueprint.py` validates a blueprint against, in a
# fraction of a second.

#: Grid keys that configure the vectorizer, and the ``TfidfVectorizer`` argument they set.
VECTORIZER_KEYS: tuple[str, ...] = ("min_df", "max_df", "max_features", "sublinear_tf")
#: Grid key that overrides the n-gram orders of the text spec.
NGRAM_KEY = "ngram"
#: Key of the label names (class-index order) handed to ``Trainer.build`` besides the grid
#: keys; a classifier may ignore it.
LABELS_KEY = "label_names"
#: Calibration methods a trained classifier may be wrapped with.
CALIBRATIONS: tuple[str, ...] = ("none", "sigmoid", "isotonic")
#: Platt scaling fitted on the out-of-fold scores of the real (human-written) training rows
#: only: the probabilities then speak for real text, not for the generator's. The train
#: stage fits the map (binary tasks with real rows) and wraps the classifier with
#: :func:`prefit_sigmoid`; it exports like ``sigmoid``.
REAL_SIGMOID = "sigmoid_real"


class GridError(ConfigError):
    """``train.grid`` or ``train.trainer`` in a blueprint is not usable; the message says why."""


@dataclass(frozen=True)
class Trainer:
    """One entry of the registry.

    Parameters
    ----------
    name : str
        Registry key, used as ``train.trainer`` in blueprints.
    description : str
        One line for tables and model cards.
    build : callable
        ``build(params, seed) -> classifier``: an unfitted scikit-learn classifier from the
        classifier grid keys in ``params``.
    classifier_keys : tuple of str
        Grid keys that ``build`` understands.
    has_proba : bool
        Whether the bare classifier has ``predict_proba``; if not (linear SVM), it is always
        wrapped in a calibrator, and ``"none"`` is not an allowed calibration.
    prune_by : {"coef", "chi2"}
        How the size budget ranks features: by the spread of the per-class weights, or by
        the chi-squared statistic (for naive Bayes, whose log-probabilities are not
        comparable weights, and for a non-linear classifier, which has no such weights).
    linear : bool
        Capability: the fitted classifier is a linear model over the vocabulary
        (:func:`class_weights` gives its ``(K, D)`` weights). Explanations then read the
        weights and the runtimes may use their fused fast paths; otherwise explanations
        occlude one n-gram at a time and the runtimes score the graph with ONNX Runtime
        (the Rust runtime, which reads only linear graphs, refuses it).
    prunable : bool
        Capability: the size budget may cut the vocabulary (ranked by ``prune_by``) and
        refit; every trainer here is.
    """

    name: str
    description: str
    build: Callable[[Mapping[str, Any], int], BaseEstimator]
    classifier_keys: tuple[str, ...]
    has_proba: bool = True
    prune_by: Literal["coef", "chi2"] = "coef"
    #: Calibrations it allows, when not the default set (see :attr:`calibrations`).
    only_calibrations: tuple[str, ...] | None = None
    linear: bool = True
    prunable: bool = True
    #: Vectorizer grid values used when a candidate does not set them, as ``(key, value)``.
    vectorizer_defaults: tuple[tuple[str, Any], ...] = ()

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with :attr:`vectorizer_defaults` filled in where it sets nothing."""
        return {**dict(self.vectorizer_defaults), **params}

    @property
    def explained_by(self) -> Literal["weights", "occlusion"]:
        """How a decision is explained: by the per-class weights, or by occluding n-grams."""
        return "weights" if self.linear else "occlusion"

    @property
    def grid_keys(self) -> tuple[str, ...]:
        return (*self.classifier_keys, *VECTORIZER_KEYS, NGRAM_KEY)

    @property
    def calibrations(self) -> tuple[str, ...]:
        if self.only_calibrations is not None:
            return self.only_calibrations
        return CALIBRATIONS if self.has_proba else CALIBRATIONS[1:]


def _logreg(params: Mapping[str, Any], seed: int) -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    # lbfgs is deterministic and exact enough; max_iter high because TF-IDF rows with
    # large C converge slowly and a ConvergenceWarning would make results seed-fragile.
    return LogisticRegression(
        C=float(params.get("C", 1.0)),
        class_weight=params.get("class_weight"),
        max_iter=5000,
        random_state=seed,
    )


def _linear_svm(params: Mapping[str, Any], seed: int) -> LinearSVC:
    from sklearn.svm import LinearSVC

    return LinearSVC(
        C=float(params.get("C", 1.0)),
        class_weight=params.get("class_weight"),
        max_iter=20000,
        random_state=seed,
    )


def _svm_int8(params: Mapping[str, Any], seed: int) -> BaseEstimator:
    from foundry.quantized import QuantizedLinearSVC

    return QuantizedLinearSVC(C=float(params.get("C", 1.0)),
                              class_weight=params.get("class_weight"), random_state=seed,
                              prefix_weight=float(params.get("prefix_weight", 0.0)),
                              suffix_weight=float(params.get("suffix_weight", 0.0)),
                              label_names=params.get(LABELS_KEY))


def _linear_blend_int8(params: Mapping[str, Any], seed: int) -> BaseEstimator:
    from foundry.quantized import QuantizedLinearBlend

    return QuantizedLinearBlend(C=float(params.get("C", 1.0)),
                                lr_C=float(params.get("lr_C", 30.0)),
                                class_weight=params.get("class_weight"), random_state=seed)


def _complement_nb(params: Mapping[str, Any], seed: int) -> ComplementNB:
    from sklearn.naive_bayes import ComplementNB

    del seed  # naive Bayes has no randomness
    return ComplementNB(alpha=float(params.get("alpha", 1.0)), norm=bool(params.get("norm", False)))


def _mlp(params: Mapping[str, Any], seed: int) -> BaseEstimator:
    from sklearn.neural_network import MLPClassifier

    # One small hidden layer: its D x hidden weights are what the size budget pays for.
    # adam with a fixed seed and no early stopping (which would hold rows out at random).
    return MLPClassifier(hidden_layer_sizes=(int(params.get("hidden", 16)),),
                         alpha=float(params.get("alpha", 1e-4)), max_iter=300,
                         random_state=seed)


TRAINERS: dict[str, Trainer] = {}


def register(trainer: Trainer) -> Trainer:
    """Add ``trainer`` to the registry (a name may be registered once)."""
    if trainer.name in TRAINERS:
        raise ValueError(f"trainer {trainer.name!r} is already registered")
    TRAINERS[trainer.name] = trainer
    return trainer


register(Trainer(
    name="tfidf_logreg",
    description="TF-IDF char n-grams + L2 logistic regression",
    build=_logreg,
    classifier_keys=("C", "class_weight"),
))
register(Trainer(
    name="tfidf_linear_svm",
    description="TF-IDF char n-grams + linear SVM, calibrated to probabilities",
    build=_linear_svm,
    classifier_keys=("C", "class_weight"),
    has_proba=False,
))
register(Trainer(
    name="tfidf_svm_int8",
    description="TF-IDF char n-grams + linear SVM with int8 weights, softmax with a temperature "
                "(many labels in a small budget)",
    build=_svm_int8,
    # prefix_weight / suffix_weight: labels named <prefix>_<suffix> share their groups' scores
    classifier_keys=("C", "class_weight", "prefix_weight", "suffix_weight"),
    only_calibrations=("none",),  # its probabilities are softmax(scores / T), T fitted on dev
))
register(Trainer(
    name="tfidf_linear_blend_int8",
    description="TF-IDF char n-grams + the mean of a linear SVM's and a multinomial logistic "
                "regression's logits (each over its own temperature) as one linear model with "
                "int8 weights, softmax with a temperature",
    build=_linear_blend_int8,
    classifier_keys=("C", "lr_C", "class_weight"),  # C: the SVM's; lr_C: the regression's
    only_calibrations=("none",),  # as tfidf_svm_int8: softmax(scores / T), T fitted on dev
))
register(Trainer(
    name="tfidf_mlp",
    description="TF-IDF char n-grams + a one-hidden-layer perceptron (ReLU), scored by ONNX "
                "Runtime",
    build=_mlp,
    classifier_keys=("hidden", "alpha"),
    prune_by="chi2",  # no weights per class and n-gram to rank by
    only_calibrations=("none",),  # its softmax/logistic output is the probability
    linear=False,
    # The D x hidden weights cost 4 bytes each: the vocabulary is capped by frequency before
    # the fit (fits over ~50,000 n-grams take a minute each), then ranked by chi2 to the budget.
    vectorizer_defaults=(("max_features", 4000),),
))
register(Trainer(
    name="tfidf_complement_nb",
    description="TF-IDF char n-grams + complement naive Bayes",
    build=_complement_nb,
    classifier_keys=("alpha", "norm"),
    prune_by="chi2",
))


def get_trainer(name: str) -> Trainer:
    """The registered trainer called ``name``, or a :class:`GridError` listing the known ones."""
    try:
        return TRAINERS[name]
    except KeyError:
        raise GridError(
            f"blueprint.yaml: train.trainer: unknown trainer {name!r}; "
            f"known trainers: {', '.join(sorted(TRAINERS))}"
        ) from None


def _value_problem(key: str, value: Any) -> str | None:
    """What is wrong with one candidate value of grid key ``key`` (None if it is fine)."""
    if key == NGRAM_KEY:
        ok = (
            isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and 1 <= value[0] <= value[1]
        )
        if not ok:
            return f"{value!r} is not a [min_n, max_n] pair with 1 <= min_n <= max_n"
    elif key in ("C", "lr_C", "alpha"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            return f"{value!r} must be a positive number"
    elif key in ("prefix_weight", "suffix_weight"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            return f"{value!r} must be a number >= 0 (0: labels share nothing with their group)"
    elif key in ("min_df", "max_df"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            return f"{value!r} must be a positive int (rows) or float (share)"
        if isinstance(value, float) and value > 1.0:
            return f"{value!r}: a float is a share of rows and must be <= 1.0"
    elif key == "hidden":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{value!r} must be a positive int (units of the hidden layer)"
    elif key == "max_features":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return f"{value!r} must be a positive int or null"
    elif key in ("sublinear_tf", "norm"):
        if not isinstance(value, bool):
            return f"{value!r} must be true or false"
    elif key == "class_weight" and value not in (None, "balanced"):
        return f"{value!r} must be null or 'balanced'"
    return None


def grid_problems(trainer: Trainer, grid: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, reason)`` for every problem of ``train.grid`` under ``trainer`` (empty if fine):
    unknown keys (with the keys this trainer accepts), empty lists, values of the wrong kind."""
    problems = []
    for key, values in grid.items():
        if key not in trainer.grid_keys:
            problems.append((key, f"not a parameter of trainer {trainer.name!r}; allowed keys: "
                                  f"{', '.join(trainer.grid_keys)}"))
        elif not isinstance(values, list) or not values:
            problems.append((key, f"needs a non-empty list, got {values!r}"))
        else:
            for value in values:
                problem = _value_problem(key, value)
                if problem:
                    problems.append((key, problem))
    return problems


def expand_grid(trainer: Trainer, grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Validate ``train.grid`` for ``trainer`` and list its candidates in a stable order.

    Raises
    ------
    GridError
        Listing every unknown key (with the keys this trainer accepts), empty list, or value
        of the wrong kind, naming ``train.grid.<key>`` and the value.
    """
    from sklearn.model_selection import ParameterGrid

    problems = grid_problems(trainer, grid)
    if problems:
        raise GridError("\n".join(f"blueprint.yaml: train.grid.{key}: {reason}"
                                   for key, reason in problems))
    if not grid:
        return [{}]
    # ParameterGrid iterates keys in sorted order: the candidate order is stable.
    candidates = [dict(p) for p in ParameterGrid({k: list(v) for k, v in grid.items()})]
    for c in candidates:
        if NGRAM_KEY in c:
            c[NGRAM_KEY] = [int(c[NGRAM_KEY][0]), int(c[NGRAM_KEY][1])]
    return candidates


def spec_for(spec: TextSpec, params: Mapping[str, Any]) -> TextSpec:
    """The text spec with the candidate's ``ngram`` override applied."""
    if NGRAM_KEY in params:
        min_n, max_n = params[NGRAM_KEY]
        return replace(spec, min_n=int(min_n), max_n=int(max_n))
    return spec


def make_vectorizer(
    spec: TextSpec,
    sublinear_tf: bool,
    params: Mapping[str, Any] | None = None,
    *,
    vocabulary: list[str] | None = None,
    analyzer: Callable[[str], list[str]] | None = None,
) -> TfidfVectorizer:
    """The vectorizer of the contract (text spec step 7, docs/preprocessor-spec.md).

    ``vocabulary`` fixes the columns (used after size pruning; ``min_df`` and friends are
    then ignored). ``analyzer`` replaces ``Analyzer(spec)`` by an equivalent callable, e.g.
    a memoising one during cross-validation; fitted models always keep ``Analyzer(spec)``.
    """
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    params = dict(params or {})
    return TfidfVectorizer(
        analyzer=analyzer if analyzer is not None else Analyzer(spec),
        lowercase=False,
        sublinear_tf=bool(params.get("sublinear_tf", sublinear_tf)),
        norm="l2",
        use_idf=True,
        smooth_idf=True,
        dtype=np.float64,
        min_df=params.get("min_df", 1),
        max_df=params.get("max_df", 1.0),
        max_features=params.get("max_features"),
        vocabulary=vocabulary,
    )


def make_classifier(
    trainer: Trainer,
    params: Mapping[str, Any],
    seed: int,
    calibration: str = "none",
    calibration_folds: int = 3,
    labels: Sequence[str] = (),
) -> BaseEstimator:
    """The trainer's classifier, wrapped in a calibrator when ``calibration`` is not "none".
    ``labels`` names the class indices it is fitted on (for classifiers that group labels by
    name, see :class:`foundry.quantized.QuantizedLinearSVC`).

    The calibrator uses ``ensemble=False``: one classifier fitted on all rows plus one
    calibration map learnt from cross-validated scores, so the ONNX graph holds a single
    weight matrix (an ensemble would multiply the size by the number of folds).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    clf_params = {k: v for k, v in params.items() if k in trainer.classifier_keys}
    if labels:
        clf_params[LABELS_KEY] = tuple(labels)
    if calibration == REAL_SIGMOID:
        # The bare classifier; its Platt map comes from held-out scores (prefit_sigmoid).
        return trainer.build(clf_params, seed)
    if calibration not in trainer.calibrations:
        raise GridError(
            f"blueprint.yaml: train.calibration: {calibration!r} is not available for trainer "
            f"{trainer.name!r}; choose one of {', '.join(trainer.calibrations)}"
        )
    base = trainer.build(clf_params, seed)
    if calibration == "none":
        return base
    return CalibratedClassifierCV(
        base,
        method=calibration,
        cv=StratifiedKFold(calibration_folds, shuffle=True, random_state=seed),
        ensemble=False,
    )


def make_pipeline(
    trainer: Trainer,
    spec: TextSpec,
    sublinear_tf: bool,
    params: Mapping[str, Any],
    seed: int,
    *,
    calibration: str = "none",
    vocabulary: list[str] | None = None,
    analyzer: Callable[[str], list[str]] | None = None,
    labels: Sequence[str] = (),
) -> Pipeline:
    """An unfitted ``tfidf -> clf`` pipeline for one grid candidate (``labels``: see
    :func:`make_classifier`)."""
    from sklearn.pipeline import Pipeline

    params = trainer.with_defaults(params)
    return Pipeline([
        ("tfidf", make_vectorizer(spec_for(spec, params), sublinear_tf, params,
                                  vocabulary=vocabulary, analyzer=analyzer)),
        ("clf", make_classifier(trainer, params, seed, calibration, labels=labels)),
    ])


def prefit_sigmoid(fitted: BaseEstimator, calibrator: Any) -> BaseEstimator:
    """``fitted`` (a binary classifier fitted on all rows) with a ready Platt map.

    The result is what ``CalibratedClassifierCV(method="sigmoid", ensemble=False)`` holds
    after ``fit`` (one classifier, one ``_SigmoidCalibration``), so it predicts, pickles and
    converts to ONNX exactly like a ``sigmoid`` calibration; only the scores the map was
    fitted on differ (``calibrator`` comes from :func:`fit_platt`).
    """
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier

    classes = getattr(fitted, "classes_", None)
    if classes is None or len(classes) != 2:
        raise ValueError(f"{REAL_SIGMOID} calibration needs a fitted binary classifier")
    wrapper = CalibratedClassifierCV(clone(fitted), method="sigmoid", ensemble=False)
    wrapper.classes_ = classes
    wrapper.calibrated_classifiers_ = [
        _CalibratedClassifier(fitted, [calibrator], classes=classes, method="sigmoid")]
    wrapper.n_features_in_ = fitted.n_features_in_
    return wrapper


def fit_platt(scores: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> Any:
    """Platt's sigmoid ``p1 = 1 / (1 + exp(a * score + b))`` fitted to binary ``y`` (0/1),
    as scikit-learn's sigmoid calibration fits it (its ``_SigmoidCalibration``)."""
    import numpy as np
    from sklearn.calibration import _SigmoidCalibration

    return _SigmoidCalibration().fit(np.asarray(scores, dtype=np.float64), np.asarray(y),
                                     sample_weight)


def decision_scores(clf: BaseEstimator, X: Any) -> np.ndarray:
    """The binary score a Platt map reads, as scikit-learn's calibration takes it:
    ``decision_function`` (positive: class 1), else the probability of class 1."""
    import numpy as np

    if hasattr(clf, "decision_function"):
        return np.asarray(clf.decision_function(X), dtype=np.float64).ravel()
    return np.asarray(clf.predict_proba(X), dtype=np.float64)[:, 1]


def base_classifier(clf: BaseEstimator) -> BaseEstimator:
    """The fitted linear model inside a (non-ensemble) calibrator, or ``clf`` itself."""
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(clf, CalibratedClassifierCV):
        return clf.calibrated_classifiers_[0].estimator
    return clf


def class_weights(clf: BaseEstimator, n_classes: int) -> np.ndarray:
    """Per-class feature weights ``W`` of shape ``(K, D)`` of a fitted classifier.

    The score of class ``k`` grows with ``x @ W[k]``, so ``x * (W[a] - W[b])`` is how much each
    feature pushed the decision towards class ``a`` rather than ``b``. A binary linear model
    has one coefficient row (class 1 against class 0); it becomes ``[0, coef]``.
    """
    import numpy as np
    from sklearn.naive_bayes import ComplementNB

    base = base_classifier(clf)
    if isinstance(base, ComplementNB):
        return np.asarray(base.feature_log_prob_, dtype=np.float64)
    if not hasattr(base, "coef_"):
        raise ValueError(f"{type(base).__name__} has no weights per class and n-gram (its "
                         "trainer is not linear); explain it by occlusion instead")
    coef = np.asarray(base.coef_, dtype=np.float64)
    if coef.shape[0] == 1 and n_classes == 2:
        return np.vstack([np.zeros_like(coef[0]), coef[0]])
    return coef


def log_odds_weights(clf: BaseEstimator, n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights ``W [K, D]`` and intercepts ``b [K]`` (float64) of a fitted classifier whose
    probabilities are ``softmax(x @ W.T + b)``, so that for any two classes
    ``log(p[a] / p[b]) = x @ (W[a] - W[b]) + b[a] - b[b]`` exactly, per n-gram a sum of
    ``x_j * (W[a, j] - W[b, j])``.

    That holds for a logistic regression (multinomial for three classes or more, the lbfgs
    default; one row ``[0, coef]`` for two) and for int8 models (the int8 SVM with its
    temperature folded in, a binary logistic model with its calibration folded in: the
    exported constants). None for any other model: one-vs-rest or calibrated scores,
    naive Bayes, a hidden layer; their weight differences (:func:`class_weights`) still rank
    n-grams, but do not add up to log-odds.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from foundry.quantized import Int8Linear, folded

    if isinstance(clf, Int8Linear):
        w_q, scale, b = folded(clf)
        return ((w_q.astype(np.float64) * scale.astype(np.float64)).T,
                b.astype(np.float64))
    if (isinstance(clf, LogisticRegression) and clf.solver != "liblinear"
            and getattr(clf, "multi_class", "auto") != "ovr"):
        W = np.asarray(clf.coef_, dtype=np.float64)
        b = np.asarray(clf.intercept_, dtype=np.float64)
        if W.shape[0] == 1 and n_classes == 2:
            return np.vstack([np.zeros_like(W[0]), W[0]]), np.array([0.0, b[0]])
        return W, b
    return None


def label_ngrams(pipeline: Pipeline, trainer: Trainer, labels: list[str], k: int = 15
                 ) -> dict[str, list[str]] | None:
    """Per label, the ``k`` n-grams whose weight pushes most towards it rather than the best
    other label (``'吗 ' +1.23``; a word n-gram shows as ``'⟨play music⟩'``); None for a trainer without weights per n-gram
    (``linear=False``), whose decisions are explained by occlusion instead."""
    import numpy as np

    if not trainer.linear:
        return None
    W = class_weights(pipeline.named_steps["clf"], len(labels))
    terms = vocabulary_terms(pipeline)
    table = {}
    for c, label in enumerate(labels):
        push = W[c] - np.delete(W, c, axis=0).max(axis=0)  # towards this label vs the best other
        top = np.argsort(-push, kind="stable")[:k]
        table[label] = [f"{display_term(terms[j])!r} {push[j]:+.2f}" for j in top]
    return table


def feature_ranking(
    clf: BaseEstimator, trainer: Trainer, X: Any, y: np.ndarray, n_classes: int
) -> np.ndarray:
    """Columns of ``X`` (the features ``clf`` was fitted on), most useful first (stable ties).

    ``coef``: spread ``max_k W[k, j] - min_k W[k, j]`` of the class weights (``|coef|`` for a
    binary model), times the column's largest TF-IDF value so that a huge weight on a term
    that is always tiny does not outrank a term that actually moves scores. ``chi2``: the
    chi-squared statistic of the column against the labels.
    """
    import numpy as np

    if trainer.prune_by == "chi2":
        from sklearn.feature_selection import chi2

        scores, _ = chi2(X, y)
        scores = np.nan_to_num(scores, nan=0.0)
    else:
        W = class_weights(clf, n_classes)
        spread = W.max(axis=0) - W.min(axis=0)
        peak = np.asarray(X.max(axis=0).todense()).ravel() if hasattr(X, "todense") else X.max(0)
        scores = spread * peak
    # Stable sort on (-score, index): equal scores keep vocabulary order, so seeds reproduce.
    return np.lexsort((np.arange(len(scores)), -scores))


def vocabulary_terms(pipeline: Pipeline) -> list[str]:
    """The fitted vocabulary as a list, index = column."""
    vocab = pipeline.named_steps["tfidf"].vocabulary_
    terms = [""] * len(vocab)
    for term, i in vocab.items():
        terms[i] = term
    return terms


def describe_params(params: Mapping[str, Any]) -> str:
    """Compact, stable text of a candidate (for tables and logs)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float) and math.isfinite(v) and v == int(v):
            return f"{v:g}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(str(x) for x in v) + "]"
        return str(v)

    return ", ".join(f"{k}={fmt(params[k])}" for k in sorted(params)) or "(defaults)"


#: Smallest vocabulary the size budget may prune to; below it the budget is unreachable.
MIN_VOCABULARY = 32


def size_ladder(n_full: int, n_final: int) -> list[int]:
    """Vocabulary sizes for the accuracy-against-size table, largest first."""
    points = {n_full, n_final}
    for factor in (4, 2, 0.5, 0.25):
        points.add(int(n_final * factor))
    if n_final == n_full:  # nothing pruned: still show what smaller models would cost
        points.update({n_full // 2, n_full // 4, n_full // 8})
    return sorted((p for p in points if MIN_VOCABULARY <= p <= n_full), reverse=True)


class MemoAnalyzer:
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

    def __init__(self, trainer: Trainer, spec: TextSpec, sublinear_tf: bool, seed: int,
                 labels: Sequence[str] = ()) -> None:
        self.trainer, self.spec, self.sublinear_tf, self.seed = trainer, spec, sublinear_tf, seed
        #: The task's label names, in class-index order (passed to every classifier).
        self.labels = tuple(labels)
        self._memo: dict[TextSpec, MemoAnalyzer] = {}
        #: The Platt map of ``sigmoid_real`` (fitted by :func:`choose_calibration`).
        self.real_platt: Any = None

    def analyzer(self, params: dict[str, Any]) -> MemoAnalyzer:
        spec = spec_for(self.spec, params)
        return self._memo.setdefault(spec, MemoAnalyzer(spec))

    def pipeline(self, params: dict[str, Any], *, calibration: str = "none",
                 vocabulary: list[str] | None = None) -> Pipeline:
        """An unfitted pipeline that analyses through the cache (see :func:`final_fit`)."""
        return make_pipeline(
            self.trainer, self.spec, self.sublinear_tf, params, self.seed,
            calibration=calibration, vocabulary=vocabulary, analyzer=self.analyzer(params),
            labels=self.labels,
        )

    def vectorizer(self, params: dict[str, Any], vocabulary: list[str] | None = None,
                   norm: str | None = "l2") -> TfidfVectorizer:
        params = self.trainer.with_defaults(params)
        vec = make_vectorizer(spec_for(self.spec, params), self.sublinear_tf, params,
                              vocabulary=vocabulary, analyzer=self.analyzer(params))
        return vec.set_params(norm=norm)

    def classifier(self, params: dict[str, Any], calibration: str) -> Any:
        return make_classifier(self.trainer, params, self.seed, calibration, labels=self.labels)

    def default_calibration(self) -> str:
        return "none" if self.trainer.has_proba else "sigmoid"


def final_fit(recipe: Recipe, params: dict[str, Any], calibration: str,
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
