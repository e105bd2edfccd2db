"""A linear SVM with int8 weights and a temperature: many labels in a kilobyte budget.

With 60-150 labels the weight matrix is almost all of an artifact: ``4 * K * D`` bytes as
float32, so a 1 MB budget leaves ~1,600 n-grams for 151 classes. Stored as int8 with one
float32 scale per class (symmetric, per-class), the same budget holds ~4x the vocabulary, and
the rounding costs nothing measurable (<= 0.1 point of accuracy at every size measured, see
``docs/training.md``). Probabilities are ``softmax(scores / T)`` with one temperature ``T``
fitted by log loss on held-out scores, which keeps a single ``K x D`` matrix (a calibrator per
class would not) and ranks answers by confidence well enough for an out-of-scope threshold.

The exported graph (:func:`quantized_onnx`) is standard ONNX (opset >= 13), no ML domain::

    W             = Mul(Cast(W_q int8 [D, K], to=float), scale float32 [1, K])
    probabilities = Softmax(Add(MatMul(features, W), b), axis=-1)
    label         = ArgMax(probabilities, axis=1, keepdims=0)

with ``1 / T`` folded into ``scale`` and ``b``. Every runtime reads it (the Python and Rust
readers dequantise once at load; Node runs it through onnxruntime-node).

**Sparse weights.** With many labels most of ``W_q`` carries nothing: an n-gram speaks for a
few labels, and the SVM's small weights for the others round to a few int8 steps that move no
decision. :meth:`Int8Linear.sparsify` keeps the ``m`` largest weights (by dequantised
magnitude, over all labels) and zeroes the rest; the train stage chooses ``m`` to fit the size
budget (:func:`foundry.trained.sparsify_to_budget`). When it is smaller, the graph then stores
``W_q`` as its non-zero entries in row-major ``[D, K]`` order, 2 bytes each: ``W_values``
int8 and ``W_gaps`` uint8, the distance of each entry's flat position from the previous one
(the first: from 0); a gap over 255 is bridged by entries of value 0 (:func:`sparse_entries`).
Standard operators rebuild the dense int8 matrix, which ONNX Runtime folds at load::

    W_q = Reshape(ScatterElements(ConstantOfShape(W_size = [D * K], value=int8 0),
                                  CumSum(Cast(W_gaps, to=INT64), W_axis = 0),
                                  W_values, axis=0), W_shape = [D, K])

On CLINC150 the full vocabulary's model keeps its validation accuracy with 4% of its weights,
where the dense int8 matrix fits the 1 MB budget with one n-gram in eight
(``docs/training.md``).

The same graph carries binary logistic models of the other linear trainers
(:class:`Int8Logistic`): ``softmax([-s/2, s/2]) = sigmoid(s)``, so a logistic regression, or a
linear model under a Platt map, with the map folded into its weights, ships as two int8
columns, 2 bytes an n-gram instead of 8 (the train stage does it for every model it can fold,
:func:`int8_pipeline`; an isotonic map cannot be folded and keeps its float graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: Bounds of the temperature search (log scale).
_LOG_T_BOUNDS = (-6.0, 4.0)


def quantize_rows(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantisation: ``W ~ W_q * scale[:, None]``, ``|W_q| <= 127``."""
    peak = np.abs(W).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    W_q = np.clip(np.rint(W / scale[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    return W_q, scale


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The ``T`` minimising the log loss of ``softmax(scores / T)`` against classes ``y``."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = scores / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))

    res = minimize_scalar(loss, bounds=_LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


class Int8Linear(ClassifierMixin, BaseEstimator):
    """Linear class scores with int8 weights (``w_q_`` ``[K, D]``, ``scale_`` ``[K]``, ``b_``
    ``[K]``) and probabilities ``softmax(scores / temperature)``: the state of the graph of
    :func:`quantized_onnx`. ``coef_`` and ``intercept_`` are the dequantised values, so
    everything reading a linear model (feature ranking, explanations, the fused runtime path)
    sees exactly what the exported graph holds."""

    temperature: float = 1.0

    def _set_weights(self, W: np.ndarray, b: np.ndarray, classes: np.ndarray) -> None:
        """Quantise float weights ``W`` ``[K, D]`` (K = 1 for a binary model: class 1 against
        class 0, split into the two halves ``-W/2``, ``W/2``) and intercepts ``b``."""
        self.classes_ = classes
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if len(classes) == 2:  # one row (class 1 vs 0): split it into two halves
            W = np.vstack([-W[0] / 2, W[0] / 2])
            b = np.array([-b[0] / 2, b[0] / 2])
        self.w_q_, self.scale_ = quantize_rows(W)
        self.b_ = b.astype(np.float32)
        self.n_features_in_ = W.shape[1]

    @property
    def coef_(self) -> np.ndarray:
        """Dequantised weights ``[K, D]`` (float64 of the stored float32 products)."""
        return (self.w_q_.astype(np.float32) * self.scale_[:, None]).astype(np.float64)

    @property
    def intercept_(self) -> np.ndarray:
        return self.b_.astype(np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(X @ self.coef_.T) + self.intercept_

    @property
    def n_weights_(self) -> int:
        """How many int8 weights are non-zero."""
        return int(np.count_nonzero(self.w_q_))

    def sparsify(self, max_weights: int) -> Int8Linear:
        """Keep the ``max_weights`` weights of largest dequantised magnitude (over all
        labels) and set the others to zero; the scales and intercepts are unchanged.

        Magnitude rather than int8 steps, because the labels' scales differ: a weight's
        effect on the logits is ``|w_q| * scale``. Ties at the cut are broken by position
        (row-major ``[K, D]``), so equal models give equal results.
        """
        if max_weights < 0:
            raise ValueError(f"max_weights must be >= 0, got {max_weights}")
        if max_weights >= self.n_weights_:
            return self
        magnitude = (np.abs(self.w_q_.astype(np.float32)) * self.scale_[:, None]).ravel()
        keep = np.argsort(-magnitude, kind="stable")[:max_weights]
        mask = np.zeros(magnitude.size, dtype=bool)
        mask[keep] = True
        self.w_q_ = np.where(mask.reshape(self.w_q_.shape), self.w_q_, 0).astype(np.int8)
        return self

    def set_temperature(self, temperature: float) -> Int8Linear:
        self.temperature = float(temperature)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """``softmax(scores / T)``, computed from the exported (folded, float32) constants so
        that every runtime reproduces it to float32 precision."""
        w_q, scale, b = folded(self)
        logits = np.asarray(X @ (w_q.astype(np.float64) * scale.astype(np.float64)))
        return softmax(logits + b.astype(np.float64))

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


class QuantizedLinearSVC(Int8Linear):
    """``LinearSVC`` (one-vs-rest) whose weights are rounded to int8 per class after fitting.

    ``predict_proba`` is ``softmax(decision_function / temperature)``; ``temperature`` is
    1 until :meth:`set_temperature` (the train stage fits it on the dev split).

    **Label groups.** Labels named ``<prefix>_<suffix>`` (MASSIVE's ``alarm_set``: scenario
    ``alarm``, action ``set``) share statistical strength with their group: with
    ``prefix_weight`` λ > 0 a second one-vs-rest SVM is fitted on the same rows to tell the
    prefix groups apart, and every label's score gains λ times its group's score; likewise
    ``suffix_weight`` μ for the groups of the part after the first ``_``:

        score(alarm_set) = s_alarm_set(x) + λ s_alarm(x) + μ s_set(x)

    A sum of linear scores over the same features is one linear model
    (``W[i] + λ W_prefix[g(i)] + μ W_suffix[h(i)]``), so it ships through the same int8 graph
    and runtime paths. A rare label borrows the n-grams its group shares (``闹钟`` for every
    alarm intent, ``删除`` for every remove), which its own few rows cannot teach. Labels
    without a ``_`` are a group of their own. A kind of group with fewer than two groups, or
    a binary task, adds nothing. The pipeline fits class indices ``0..K-1``: ``label_names``
    gives their names (when None, the classes themselves are the names).
    """

    def __init__(self, C: float = 1.0, class_weight: Any = None, max_iter: int = 20000,
                 random_state: int | None = None, temperature: float = 1.0,
                 prefix_weight: float = 0.0, suffix_weight: float = 0.0,
                 label_names: tuple[str, ...] | None = None) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state
        self.temperature = temperature
        self.prefix_weight = prefix_weight
        self.suffix_weight = suffix_weight
        self.label_names = label_names

    def _svm(self) -> Any:
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                         random_state=self.random_state)

    def fit(self, X: Any, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> QuantizedLinearSVC:
        svm = self._svm().fit(X, y, sample_weight=sample_weight)
        W = np.asarray(svm.coef_, dtype=np.float64)
        b = np.asarray(svm.intercept_, dtype=np.float64)
        if len(svm.classes_) > 2:
            y = np.asarray(y)
            for part, weight in ((0, self.prefix_weight), (1, self.suffix_weight)):
                if weight:
                    shared = self._group_scores(X, y, svm.classes_, part, sample_weight)
                    if shared is not None:
                        W = W + weight * shared[0]
                        b = b + weight * shared[1]
        self._set_weights(W, b, svm.classes_)
        return self

    def _group_scores(self, X: Any, y: np.ndarray, classes: np.ndarray, part: int,
                      sample_weight: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(W [K, D], b [K])``: each label's row is its group's row of an SVM fitted to
        tell the groups apart (``part`` 0: the prefix before the first ``_``, 1: the rest);
        None when there are fewer than two groups."""
        name = (lambda c: str(c)) if self.label_names is None else (
            lambda c: self.label_names[int(c)])
        group_of = {c: label_group(name(c), part) for c in classes.tolist()}
        groups = np.array([group_of[c] for c in y.tolist()])
        names = np.unique(groups)
        if len(names) < 2:
            return None
        svm = self._svm().fit(X, groups, sample_weight=sample_weight)
        W_g = np.asarray(svm.coef_, dtype=np.float64)
        b_g = np.asarray(svm.intercept_, dtype=np.float64)
        if len(names) == 2:  # one row (group 1 vs group 0): as two opposite rows
            W_g, b_g = np.vstack([-W_g[0], W_g[0]]), np.array([-b_g[0], b_g[0]])
        rows = np.searchsorted(svm.classes_, [group_of[c] for c in classes.tolist()])
        return W_g[rows], b_g[rows]


def label_group(label: str, part: int) -> str:
    """The group of ``label`` for :class:`QuantizedLinearSVC`: the part before its first
    ``_`` (``part`` 0) or after it (``part`` 1); a label without ``_`` is its own group."""
    head, sep, tail = label.partition("_")
    if not sep:
        return label
    return tail if part else head


def _score_columns(scores: np.ndarray) -> np.ndarray:
    """Scores as ``[N, K]`` columns: a binary model's one score ``s`` per row becomes the
    columns ``[-s/2, s/2]`` (``softmax`` of them is ``[1 - sigmoid(s), sigmoid(s)]``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return np.column_stack([-scores / 2, scores / 2])
    return scores


class QuantizedLinearBlend(Int8Linear):
    """The mean of a linear SVM's and a multinomial logistic regression's logits, each
    divided by its own temperature, as one linear model with int8 weights.

    Both parts are fitted on the same features; averaging the logits of two linear models
    over the same features is one linear model, ``W = (W_svm / T_svm + W_lr / T_lr) / 2``
    (the intercepts likewise), so the blend ships through the graph of
    :func:`quantized_onnx` and every runtime path of :class:`Int8Linear` unchanged. Only the
    blended weights are kept (the parts are not stored).

    The part temperatures put the two kinds of score on one scale (an SVM margin of 1 and a
    logit of 1 mean different confidences). Each is the ``T`` minimising the log loss of
    ``softmax(part scores / T)`` on out-of-fold scores of the training rows
    (``part_folds``-fold stratified cross-fitting: the rows a part is scored on were not
    among those it was fitted on); they are stored as ``part_temperatures_``. Like the int8
    SVM, the blend's own ``temperature`` is 1 until :meth:`set_temperature` (the train stage
    fits it on dev scores).
    """

    def __init__(self, C: float = 1.0, lr_C: float = 30.0, class_weight: Any = None,
                 part_folds: int = 3, max_iter: int = 20000, random_state: int | None = None,
                 temperature: float = 1.0) -> None:
        self.C = C
        self.lr_C = lr_C
        self.class_weight = class_weight
        self.part_folds = part_folds
        self.max_iter = max_iter
        self.random_state = random_state
        self.temperature = temperature

    def parts(self) -> tuple[Any, Any]:
        """The two unfitted parts: ``(LinearSVC, LogisticRegression)``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                        random_state=self.random_state)
        # lbfgs (multinomial for three classes or more) is deterministic.
        lr = LogisticRegression(C=self.lr_C, class_weight=self.class_weight,
                                max_iter=self.max_iter, random_state=self.random_state)
        return svm, lr

    def fit_part_temperatures(self, X: Any, y: np.ndarray,
                              sample_weight: np.ndarray | None = None) -> tuple[float, float]:
        """``(T_svm, T_lr)`` fitted on the parts' out-of-fold scores of ``X`` (see the class
        docstring)."""
        from sklearn.model_selection import StratifiedKFold

        y = np.asarray(y)
        classes = np.unique(y)
        target = np.searchsorted(classes, y)
        # A label absent from a fold's fitting rows gets no score (-inf, probability 0); its
        # held-out rows then do not count (a label with fewer rows than folds), nor do the
        # rows of a fold whose fitting rows hold a single label.
        oof = [np.full((len(y), len(classes)), -np.inf) for _ in range(2)]
        scored = np.zeros(len(y), dtype=bool)
        n_splits = min(self.part_folds, max(2, np.bincount(target).max()))
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        for fit_rows, held in folds.split(np.zeros(len(y)), y):
            seen = np.unique(target[fit_rows])
            if len(seen) < 2:
                continue
            w = None if sample_weight is None else np.asarray(sample_weight)[fit_rows]
            for k, part in enumerate(self.parts()):
                fitted = part.fit(X[fit_rows], y[fit_rows], sample_weight=w)
                cols = _score_columns(fitted.decision_function(X[held]))
                oof[k][np.ix_(held, seen)] = cols
            scored[held] = np.isin(target[held], seen)
        if not scored.any():
            return 1.0, 1.0
        t_svm, t_lr = (fit_temperature(s[scored], target[scored]) for s in oof)
        return t_svm, t_lr

    def fit(self, X: Any, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> QuantizedLinearBlend:
        t_svm, t_lr = self.fit_part_temperatures(X, y, sample_weight)
        svm, lr = self.parts()
        svm.fit(X, y, sample_weight=sample_weight)
        lr.fit(X, y, sample_weight=sample_weight)
        W = (np.asarray(svm.coef_, dtype=np.float64) / t_svm
             + np.asarray(lr.coef_, dtype=np.float64) / t_lr) / 2
        b = (np.asarray(svm.intercept_, dtype=np.float64) / t_svm
             + np.asarray(lr.intercept_, dtype=np.float64) / t_lr) / 2
        self.part_temperatures_ = (t_svm, t_lr)
        self._set_weights(W, b, svm.classes_)
        return self


class Int8Logistic(Int8Linear):
    """A fitted binary logistic model ``p1 = sigmoid(a * (w.x + b) + c)`` (a logistic
    regression, or a linear model under a Platt map) as two int8 columns.

    ``softmax([-s/2, s/2]) = [1 - sigmoid(s), sigmoid(s)]``, so the score
    ``s = a * (w.x + b) + c`` with the calibration folded in is stored as the rows ``-a w / 2``
    and ``a w / 2`` of :class:`Int8Linear` (one scale: the rows are exact negatives) and read
    by every runtime through the graph of :func:`quantized_onnx`: 2 bytes an n-gram instead of
    the 8 of a float32 ``LinearClassifier`` (which stores ``w`` and ``-w``). Build it with
    :func:`int8_logistic`.

    Like the binary model it replaces, it shows scikit-learn's binary convention: ``coef_``
    is one row ``[1, D]`` and ``intercept_`` one value, the exported score of class 1 against
    class 0 (the difference of the two stored columns: ``log(p1 / p0)`` as every runtime
    computes it), and ``decision_function`` returns that score, one per row. Code reading
    a binary linear model (explanations as ``[0, coef]``, margins, feature ranking) so gets
    the log-odds of the shipped model; the half-columns stay in ``w_q_``, ``scale_`` and
    ``b_`` (the graph's constants, :func:`folded`). Its temperature is always 1: the
    calibration is folded into the weights.
    """

    def fit(self, X: Any, y: np.ndarray) -> Int8Logistic:
        raise TypeError("Int8Logistic is built from a fitted model by int8_logistic(), "
                        "not fitted")

    def set_temperature(self, temperature: float) -> Int8Logistic:
        raise TypeError("Int8Logistic has its calibration folded into its weights; "
                        "it has no temperature to set")

    @property
    def coef_(self) -> np.ndarray:
        """``[1, D]``: the exported class-1 column minus the class-0 column (float64)."""
        w_q, scale, _ = folded(self)
        W = w_q.astype(np.float64) * scale.astype(np.float64)  # [D, 2]
        return (W[:, 1] - W[:, 0])[None, :]

    @property
    def intercept_(self) -> np.ndarray:
        """``[1]``: the exported class-1 intercept minus the class-0 one."""
        _, _, b = folded(self)
        return np.array([float(b[1]) - float(b[0])])

    def decision_function(self, X: Any) -> np.ndarray:
        """``log(p1 / p0)`` of each row, ``[n]`` (positive: class 1)."""
        return np.asarray(X @ self.coef_.T).ravel() + self.intercept_[0]

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def takes_temperature(clf: Any) -> bool:
    """Whether ``clf``'s probabilities are ``softmax(scores / T)`` with a temperature still to
    fit on held-out scores (:class:`QuantizedLinearSVC`, :class:`QuantizedLinearBlend`); not an
    :class:`Int8Logistic`, whose calibration is folded into its weights."""
    return isinstance(clf, Int8Linear) and not isinstance(clf, Int8Logistic)


def binary_score_map(clf: Any) -> tuple[Any, float, float] | None:
    """``(linear model, a, c)`` with ``p1 = sigmoid(a * linear.decision_function(x) + c)`` for
    a fitted binary logistic regression or a sigmoid-calibrated (non-ensemble) linear model;
    None for anything else (an isotonic map, more classes, no linear scores)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    if len(getattr(clf, "classes_", ())) != 2:
        return None
    if type(clf) is LogisticRegression:
        return clf, 1.0, 0.0
    if not isinstance(clf, CalibratedClassifierCV) or clf.method != "sigmoid":
        return None
    if len(clf.calibrated_classifiers_) != 1:
        return None
    inner = clf.calibrated_classifiers_[0]
    linear = inner.estimator
    if not (hasattr(linear, "decision_function") and hasattr(linear, "coef_")) or isinstance(
            linear, Int8Linear):
        return None
    platt = inner.calibrators[0]  # p1 = 1 / (1 + exp(a_ * f + b_)) = sigmoid(-a_ f - b_)
    return linear, -float(platt.a_), -float(platt.b_)


def int8_logistic(clf: Any) -> Int8Logistic | None:
    """``clf`` (fitted) as an :class:`Int8Logistic`, or None when its probabilities are not
    a sigmoid of a linear score (see :func:`binary_score_map`)."""
    found = binary_score_map(clf)
    if found is None:
        return None
    linear, a, c = found
    w = np.asarray(linear.coef_, dtype=np.float64).reshape(1, -1)
    b = float(np.asarray(linear.intercept_, dtype=np.float64).ravel()[0])
    model = Int8Logistic()
    model._set_weights(a * w, np.array([a * b + c]), np.asarray(clf.classes_))
    model.source_ = clf  # the float model, for measuring what the rounding costs
    return model


def int8_pipeline(pipe: Any) -> Any:
    """``pipe`` (``tfidf -> clf``, fitted) with its classifier as an :class:`Int8Logistic`
    when :func:`int8_logistic` can fold it (the vectorizer is shared), else ``pipe``."""
    from sklearn.pipeline import Pipeline

    folded_clf = int8_logistic(pipe.named_steps["clf"])
    if folded_clf is None:
        return pipe
    return Pipeline([("tfidf", pipe.named_steps["tfidf"]), ("clf", folded_clf)])


def folded(clf: Int8Linear) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W_q [D, K] int8, scale [K] float32, b [K] float32)`` with ``1 / T`` folded in."""
    inv_t = 1.0 / clf.temperature
    scale = (clf.scale_.astype(np.float64) * inv_t).astype(np.float32)
    b = (clf.b_.astype(np.float64) * inv_t).astype(np.float32)
    return np.ascontiguousarray(clf.w_q_.T), scale, b


#: The largest gap between two stored positions of the sparse layout (a uint8).
MAX_GAP = 255


def sparse_entries(w_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gaps uint8, values int8)``: the non-zero entries of ``w_q`` in row-major order.

    ``gaps[i]`` is the distance of entry ``i``'s flat position from entry ``i - 1``'s (entry
    0's from position 0), so ``cumsum(gaps)`` are the positions. A distance over
    :data:`MAX_GAP` is bridged by entries of value 0 every 255 positions; every gap after the
    first is at least 1 (positions strictly increase).
    """
    flat = np.ascontiguousarray(w_q).ravel()
    positions = np.flatnonzero(flat)
    steps = np.diff(positions, prepend=0)
    # An entry whose step is s > 255 is preceded by ceil(s / 255) - 1 zero entries of 255.
    fillers = np.maximum(0, (steps - 1) // MAX_GAP)
    count = len(positions) + int(fillers.sum())
    gaps = np.full(count, MAX_GAP, dtype=np.uint8)
    values = np.zeros(count, dtype=np.int8)
    at = np.arange(len(positions)) + np.cumsum(fillers)  # where each real entry lands
    gaps[at] = steps - fillers * MAX_GAP
    values[at] = flat[positions]
    return gaps, values


def stored_weight_bytes(clf: Int8Linear) -> int:
    """Bytes the ``.onnx`` spends on ``clf``'s int8 weights: ``D * K`` as a matrix, or 2 an
    entry of the sparse layout when that is smaller (the choice :func:`quantized_onnx`
    makes)."""
    size = clf.w_q_.size
    entries = len(sparse_entries(clf.w_q_.T)[0])
    return 2 * entries if _sparse_is_smaller(entries, size) else size


def _sparse_is_smaller(entries: int, size: int) -> bool:
    return 2 * entries + 64 < size  # 64: the sparse layout's extra constants and nodes


def _weights_nodes(w_q: np.ndarray) -> tuple[list[Any], list[Any]]:
    """``(initializers, nodes)`` producing the int8 ``W_q`` ``[D, K]``: the matrix itself, or
    its sparse entries when they take fewer bytes (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    gaps, values = sparse_entries(w_q)
    if not _sparse_is_smaller(len(gaps), w_q.size):
        return [numpy_helper.from_array(w_q, "W_q")], []
    d, k = w_q.shape
    inits = [
        numpy_helper.from_array(gaps, "W_gaps"),
        numpy_helper.from_array(values, "W_values"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "W_axis"),
        numpy_helper.from_array(np.array([d * k], dtype=np.int64), "W_size"),
        numpy_helper.from_array(np.array([d, k], dtype=np.int64), "W_shape"),
    ]
    zero = numpy_helper.from_array(np.zeros(1, dtype=np.int8), "zero")
    nodes = [
        helper.make_node("Cast", ["W_gaps"], ["W_steps"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["W_steps", "W_axis"], ["W_positions"]),
        helper.make_node("ConstantOfShape", ["W_size"], ["W_zeros"], value=zero),
        helper.make_node("ScatterElements", ["W_zeros", "W_positions", "W_values"], ["W_flat"],
                         axis=0),
        helper.make_node("Reshape", ["W_flat", "W_shape"], ["W_q"]),
    ]
    return inits, nodes


def quantized_onnx(clf: Int8Linear, n_features: int, task: str, opset: int = 15) -> bytes:
    """The ONNX bytes of ``clf`` (see the module docstring); deterministic for equal models."""
    from onnx import TensorProto, helper, numpy_helper

    if opset < 13:
        raise ValueError(f"export.opset {opset}: int8 weights need opset 13 or later")
    w_q, scale, b = folded(clf)
    k = w_q.shape[1]
    weight_inits, weight_nodes = _weights_nodes(w_q)
    inits = [
        *weight_inits,
        numpy_helper.from_array(scale.reshape(1, k), "W_scale"),
        numpy_helper.from_array(b, "b"),
    ]
    # Cast + Mul rather than DequantizeLinear: ONNX Runtime fuses DequantizeLinear -> MatMul
    # into an integer matmul that also quantises the features (probabilities then move by
    # ~1e-4); the plain float product is what every runtime computes.
    nodes = [
        *weight_nodes,
        helper.make_node("Cast", ["W_q"], ["W_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["W_f", "W_scale"], ["W"]),
        helper.make_node("MatMul", ["features", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, f"{task}_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="model-foundry")
    model.ir_version = 8
    model.doc_string = f"Model Foundry micro-model {task!r}; labels in {task}_preprocessor.bin"
    return model.SerializeToString()
