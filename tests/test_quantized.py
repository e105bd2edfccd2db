"""int8 weights with a temperature: the estimator, its ONNX graph, and the runtime readers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import scipy.sparse as sp

from foundry.benchmark import (
    answers,
    confused_pairs,
    oos_curve,
    oos_metrics,
    out_of_scope_threshold,
)
from foundry.quantized import (
    MAX_GAP,
    Int8Logistic,
    QuantizedLinearSVC,
    binary_score_map,
    fit_temperature,
    int8_logistic,
    int8_pipeline,
    quantize_rows,
    quantized_onnx,
    sparse_entries,
    stored_weight_bytes,
)
from foundry.runtime import read_linear_graph


def _data(n: int = 600, d: int = 300, k: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (k, d))
    y = rng.integers(0, k, n)
    x = np.abs(centers[y] + rng.normal(0, 1.5, (n, d))) * (rng.random((n, d)) < 0.05)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    return sp.csr_matrix(x), y


def test_quantize_rows_error_is_half_a_step() -> None:
    rng = np.random.default_rng(1)
    W = rng.normal(0, 2, (5, 1000))
    W_q, scale = quantize_rows(W)
    assert W_q.dtype == np.int8 and np.abs(W_q).max() <= 127
    err = np.abs(W_q * scale[:, None].astype(np.float64) - W)
    assert (err <= scale[:, None] * 0.5 + 1e-6).all()


def test_int8_model_predicts_like_float_and_exports_exactly() -> None:
    x, y = _data()
    clf = QuantizedLinearSVC(C=1.0, random_state=0).fit(x, y)
    from sklearn.svm import LinearSVC

    ref = LinearSVC(C=1.0, random_state=0, max_iter=20000).fit(x, y)
    agree = (clf.predict(x) == ref.predict(x)).mean()
    assert agree > 0.99
    clf.set_temperature(fit_temperature(clf.decision_function(x), y))
    onnx_bytes = quantized_onnx(clf, x.shape[1], "toy")
    assert onnx_bytes == quantized_onnx(clf, x.shape[1], "toy")  # deterministic
    session = ort.InferenceSession(onnx_bytes)
    label, proba = session.run(None, {"features": x.toarray().astype(np.float32)})
    expected = clf.predict_proba(x)
    assert np.abs(proba - expected).max() < 1e-5
    assert (label == expected.argmax(axis=1)).all()
    # The runtime's reader gives the dequantised matrix the numpy and native paths use.
    graph = read_linear_graph(onnx_bytes)
    assert graph is not None and graph.post_transform == "SOFTMAX"
    scores = x.toarray() @ graph.coefficients.T.astype(np.float64) + graph.intercepts
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    assert np.abs(z / z.sum(axis=1, keepdims=True) - expected).max() < 1e-5
    # int8: one byte per weight (plus a small header), a quarter of the float32 matrix.
    assert len(onnx_bytes) < x.shape[1] * 7 + 2000


def test_binary_int8_model() -> None:
    x, y = _data(k=2)
    clf = QuantizedLinearSVC(random_state=0).fit(x, y)
    assert clf.coef_.shape == (2, x.shape[1])
    assert (clf.predict_proba(x).argmax(axis=1) == clf.predict(x)).all()


def _calibrated(method: str, x, y):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    return CalibratedClassifierCV(LinearSVC(random_state=0, max_iter=20000), method=method,
                                  ensemble=False, cv=3).fit(x, y)


def test_int8_logistic_folds_the_sigmoid_into_two_int8_columns() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _data(k=2)
    x32 = x.astype(np.float32).astype(np.float64)
    for fitted in (LogisticRegression(C=10.0, max_iter=1000).fit(x, y),
                   _calibrated("sigmoid", x, y)):
        clf = int8_logistic(fitted)
        assert isinstance(clf, Int8Logistic) and clf.temperature == 1.0
        assert (clf.w_q_[0] == -clf.w_q_[1]).all() and clf.scale_[0] == clf.scale_[1]
        # Without the rounding the folded score is the model's exactly: sigmoid(a f + c).
        linear, a, c = binary_score_map(fitted)
        p1 = 1.0 / (1.0 + np.exp(-(a * linear.decision_function(x32) + c)))
        assert np.abs(p1 - fitted.predict_proba(x32)[:, 1]).max() < 1e-9
        # With it, probabilities move by a fraction of a rounding step per weight.
        assert np.abs(clf.predict_proba(x32) - fitted.predict_proba(x32)).max() < 0.02
        assert (clf.predict(x32) == fitted.predict(x32)).mean() > 0.98
        onnx_bytes = quantized_onnx(clf, x.shape[1], "toy")
        label, proba = ort.InferenceSession(onnx_bytes).run(
            None, {"features": x.toarray().astype(np.float32)})
        assert np.abs(proba - clf.predict_proba(x32)).max() < 1e-5
        assert (label == clf.predict_proba(x32).argmax(axis=1)).all()
        assert len(onnx_bytes) < 2 * x.shape[1] + 1000  # two int8 columns
        # scikit-learn's binary convention, in the exported log-odds: one row, one score.
        assert clf.coef_.shape == (1, x.shape[1]) and clf.intercept_.shape == (1,)
        odds = np.log(proba[:, 1].astype(np.float64) / proba[:, 0].astype(np.float64))
        assert np.abs(clf.decision_function(x32) - odds).max() < 1e-4
        assert (clf.predict(x32) == clf.classes_[clf.predict_proba(x32).argmax(axis=1)]).all()
        with pytest.raises(TypeError, match="folded"):
            clf.set_temperature(2.0)


def test_int8_logistic_leaves_what_it_cannot_fold() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    x2, y2 = _data(k=2)
    x3, y3 = _data(k=3)
    assert int8_logistic(_calibrated("isotonic", x2, y2)) is None  # not a sigmoid of a score
    assert int8_logistic(LogisticRegression(max_iter=1000).fit(x3, y3)) is None  # 3 classes
    assert int8_logistic(QuantizedLinearSVC(random_state=0).fit(x2, y2)) is None
    pipe = Pipeline([("tfidf", None), ("clf", _calibrated("isotonic", x2, y2))])
    assert int8_pipeline(pipe) is pipe


def test_temperature_recovers_the_generating_one() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 3, (4000, 5))
    z = np.exp(scores / 0.5)
    p = z / z.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(scores, y) == pytest.approx(0.5, rel=0.08)


def test_graph_reader_refuses_a_changed_graph() -> None:
    import onnx

    x, y = _data()
    clf = QuantizedLinearSVC(random_state=0).fit(x, y)
    model = onnx.load_from_string(quantized_onnx(clf, x.shape[1], "toy"))
    next(n for n in model.graph.node if n.op_type == "ArgMax").attribute[0].i = 0  # axis 0
    assert read_linear_graph(model.SerializeToString()) is None
    with pytest.raises(ValueError, match="opset 13"):
        quantized_onnx(clf, x.shape[1], "toy", opset=12)


def test_out_of_scope_threshold_meets_the_recall_target() -> None:
    rng = np.random.default_rng(5)
    k, oos = 4, 3
    y = rng.integers(0, k, 2000)
    logits = rng.normal(0, 1, (2000, k))
    logits[np.arange(2000), y] += np.where(y == oos, 0.3, 3.0)  # oos rows are hard
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    choice = out_of_scope_threshold(proba, y, oos, 0.7)
    assert choice["dev_oos_recall"] >= 0.7
    curve = oos_curve(proba, y, oos)
    better = curve[(curve["oos_recall"] >= 0.7)
                   & (curve["in_scope_accuracy"] > choice["dev_in_scope_accuracy"])]
    assert better.empty
    labels = ["a", "b", "c", "oos"]
    answered = answers(proba, labels, choice["threshold"], "oos")
    m = oos_metrics([labels[i] for i in y], answered, "oos")
    assert m["oos_recall"] == pytest.approx(choice["dev_oos_recall"])
    assert m["in_scope_accuracy"] == pytest.approx(choice["dev_in_scope_accuracy"])
    with pytest.raises(ValueError, match="no out-of-scope row"):
        out_of_scope_threshold(proba[y != oos], y[y != oos], oos, 0.7)


def test_confused_pairs_table() -> None:
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "a", "b", "c"]
    pairs = confused_pairs(gold, pred)
    assert pairs.iloc[0].tolist() == ["a", "b", 2, pytest.approx(2 / 3, abs=1e-4)]
    assert len(pairs) == 2


def test_only_models_with_a_temperature_to_fit_take_one() -> None:
    from sklearn.linear_model import LogisticRegression

    from foundry.quantized import QuantizedLinearBlend, takes_temperature

    x, y = _data(n=300, k=3)
    x2, y2 = _data(n=300, k=2)
    assert takes_temperature(QuantizedLinearSVC(random_state=0).fit(x, y))
    assert takes_temperature(QuantizedLinearBlend(random_state=0).fit(x, y))
    assert not takes_temperature(int8_logistic(LogisticRegression(max_iter=1000).fit(x2, y2)))
    assert not takes_temperature(LogisticRegression(max_iter=1000).fit(x, y))


def _positions(gaps: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    flat = np.zeros(size, dtype=np.int8)
    flat[np.cumsum(gaps.astype(np.int64))] = values
    return flat


@pytest.mark.parametrize("density", [0.0, 0.0005, 0.02, 0.5, 1.0])
def test_sparse_entries_rebuild_the_matrix_and_bridge_long_gaps(density: float) -> None:
    rng = np.random.default_rng(3)
    w_q = np.where(rng.random((900, 4)) < density, rng.integers(-127, 128, (900, 4)), 0)
    w_q = w_q.astype(np.int8)
    gaps, values = sparse_entries(w_q)
    assert gaps.dtype == np.uint8 and values.dtype == np.int8 and len(gaps) == len(values)
    assert (gaps[1:] >= 1).all()  # positions strictly increase: no entry written twice
    assert (_positions(gaps, values, w_q.size).reshape(w_q.shape) == w_q).all()
    # a filler is a zero entry of gap 255; there are only as many as the long gaps need
    real = np.count_nonzero(w_q)
    assert len(gaps) - real == np.count_nonzero((values == 0) & (gaps == MAX_GAP))


def test_sparsify_keeps_the_largest_dequantised_weights() -> None:
    x, y = _data()
    clf = QuantizedLinearSVC(C=1.0, random_state=0).fit(x, y)
    before = clf.coef_.copy()
    clf.sparsify(200)
    assert clf.n_weights_ == 200
    kept = np.abs(before)[clf.w_q_ != 0]
    dropped = np.abs(before)[(clf.w_q_ == 0) & (before != 0)]
    assert kept.min() >= dropped.max()
    assert (clf.coef_[clf.w_q_ != 0] == before[clf.w_q_ != 0]).all()  # scales unchanged
    assert clf.sparsify(10_000).n_weights_ == 200  # asking for more keeps what is there
    with pytest.raises(ValueError, match="max_weights"):
        clf.sparsify(-1)


def test_a_sparse_model_exports_its_entries_and_every_reader_agrees() -> None:
    x, y = _data(d=800)
    dense = QuantizedLinearSVC(C=1.0, random_state=0).fit(x, y)
    dense.set_temperature(0.5)
    dense_onnx = quantized_onnx(dense, x.shape[1], "toy")
    sparse = QuantizedLinearSVC(C=1.0, random_state=0).fit(x, y).sparsify(300)
    sparse.set_temperature(0.5)
    onnx_bytes = quantized_onnx(sparse, x.shape[1], "toy")
    assert onnx_bytes == quantized_onnx(sparse, x.shape[1], "toy")  # deterministic
    assert b"W_gaps" in onnx_bytes and b"W_gaps" not in dense_onnx
    assert len(onnx_bytes) < len(dense_onnx) / 4
    assert stored_weight_bytes(sparse) == 2 * len(sparse_entries(sparse.w_q_.T)[0])
    assert stored_weight_bytes(dense) == dense.w_q_.size
    _, proba = ort.InferenceSession(onnx_bytes).run(
        None, {"features": x.toarray().astype(np.float32)})
    expected = sparse.predict_proba(x)
    assert np.abs(proba - expected).max() < 1e-5


NAMES = ("alarm_set", "alarm_query", "alarm_remove", "music_play", "music_query",
         "list_remove", "weather")


def test_label_groups_add_the_group_svms_scores_to_each_label() -> None:
    from sklearn.svm import LinearSVC

    from foundry.quantized import label_group

    x, y = _data()
    assert [label_group(n, 0) for n in NAMES[:2]] == ["alarm", "alarm"]
    assert [label_group(n, 1) for n in NAMES[2:6]] == ["remove", "play", "query", "remove"]
    assert label_group("weather", 0) == label_group("weather", 1) == "weather"
    clf = QuantizedLinearSVC(random_state=0, prefix_weight=1.5, suffix_weight=0.5,
                             label_names=NAMES).fit(x, y)
    svm = lambda: LinearSVC(C=1.0, max_iter=20000, random_state=0)  # noqa: E731
    expected = svm().fit(x, y).decision_function(x)
    for part, weight in ((0, 1.5), (1, 0.5)):
        groups = np.array([label_group(NAMES[c], part) for c in y])
        fitted = svm().fit(x, groups)
        columns = [list(fitted.classes_).index(label_group(n, part)) for n in NAMES]
        expected = expected + weight * fitted.decision_function(x)[:, columns]
    step = np.abs(clf.coef_).max() / 127 * np.asarray(x.sum(axis=1)).max()
    assert np.abs(clf.decision_function(x) - expected).max() < step  # up to the int8 rounding


def test_label_groups_take_names_from_label_names_or_the_classes() -> None:
    x, y = _data()
    named = np.array(NAMES)[y]
    by_index = QuantizedLinearSVC(random_state=0, prefix_weight=1.0, label_names=NAMES).fit(x, y)
    by_name = QuantizedLinearSVC(random_state=0, prefix_weight=1.0).fit(x, named)
    order = np.argsort(NAMES)  # string classes are sorted, indices are not
    np.testing.assert_array_equal(by_index.w_q_[order], by_name.w_q_)
    plain = QuantizedLinearSVC(random_state=0).fit(x, y)
    assert not np.array_equal(by_index.w_q_, plain.w_q_)


def test_label_groups_change_nothing_without_two_groups_or_for_a_binary_task() -> None:
    x, y = _data()
    plain = QuantizedLinearSVC(random_state=0).fit(x, y)
    # every label its own group: the group SVMs are the label SVMs, the scores only scale
    own = QuantizedLinearSVC(random_state=0, prefix_weight=1.0,
                             label_names=tuple("abcdefg")).fit(x, y)
    np.testing.assert_array_equal(own.predict(x), plain.predict(x))
    one = QuantizedLinearSVC(random_state=0, prefix_weight=1.0,
                             label_names=tuple(f"all_{c}" for c in "abcdefg")).fit(x, y)
    np.testing.assert_array_equal(one.w_q_, plain.w_q_)
    x2, y2 = _data(k=2)
    binary = QuantizedLinearSVC(random_state=0, prefix_weight=1.0, label_names=("a_x", "b_x"))
    np.testing.assert_array_equal(binary.fit(x2, y2).w_q_,
                                  QuantizedLinearSVC(random_state=0).fit(x2, y2).w_q_)

