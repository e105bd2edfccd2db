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
from foundry.quantized import QuantizedLinearSVC, fit_temperature, quantize_rows, quantized_onnx
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
