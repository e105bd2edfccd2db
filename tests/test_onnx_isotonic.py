"""The exported isotonic calibration reproduces scikit-learn's interpolation (foundry/onnx_isotonic.py)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.calibration import CalibratedClassifierCV
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from foundry.onnx_isotonic import faithful_isotonic

D = 20


def _noisy_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes, so the isotonic fit has many thresholds with distinct outputs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)).astype(np.float32)
    logits = X[:, :3].sum(axis=1) + rng.normal(scale=1.5, size=n)
    return X, (logits > 0).astype(int)


def _calibrated_logreg() -> tuple[CalibratedClassifierCV, np.ndarray]:
    X, y = _noisy_data()
    clf = CalibratedClassifierCV(
        LogisticRegression(max_iter=1000), method="isotonic", ensemble=False,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    return clf, X


def _onnx_proba(clf: CalibratedClassifierCV, X: np.ndarray, *, faithful: bool) -> np.ndarray:
    def convert():
        return convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, D]))],
                               target_opset={"": 15, "ai.onnx.ml": 3},
                               options={id(clf): {"zipmap": False}})

    if faithful:
        with faithful_isotonic():
            model = convert()
    else:
        model = convert()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": X.astype(np.float32)})[1]


def _probe_inputs(X: np.ndarray) -> np.ndarray:
    """Training rows, fresh rows and rows far outside the training range (clipped)."""
    fresh, _ = _noisy_data(500, seed=1)
    return np.vstack([X[:1000], fresh, fresh * 50.0, np.zeros((1, D), dtype=np.float32)])


def test_interpolation_matches_scikit_learn():
    clf, X = _calibrated_logreg()
    assert len(clf.calibrated_classifiers_[0].calibrators[0].X_thresholds_) > 10
    probe = _probe_inputs(X)
    # scikit-learn on the float32 features the runtimes feed, as the export check does
    want = clf.predict_proba(probe.astype(np.float32).astype(np.float64))
    got = _onnx_proba(clf, probe, faithful=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_stock_skl2onnx_graph_differs():
    """Guards the reason this module exists: if skl2onnx ever interpolates, drop the swap."""
    clf, X = _calibrated_logreg()
    probe = _probe_inputs(X)
    stock = _onnx_proba(clf, probe, faithful=False)
    assert np.abs(stock - clf.predict_proba(probe)).max() > 1e-3


@pytest.mark.parametrize("points", [1, 2, 3])
def test_few_thresholds(points):
    clf, X = _calibrated_logreg()
    xs = np.linspace(-2.0, 2.0, points)
    small = IsotonicRegression(out_of_bounds="clip").fit(xs, np.linspace(0.1, 0.9, points))
    assert len(small.X_thresholds_) == points
    clf.calibrated_classifiers_[0].calibrators[0] = small
    probe = _probe_inputs(X)
    np.testing.assert_allclose(_onnx_proba(clf, probe, faithful=True),
                               clf.predict_proba(probe.astype(np.float64)), atol=1e-5)


def test_swap_is_undone():
    import skl2onnx.operator_converters.calibrated_classifier_cv as module

    before = module._transform_isotonic
    with pytest.raises(RuntimeError), faithful_isotonic():
        assert module._transform_isotonic is not before
        raise RuntimeError("conversion failed")
    assert module._transform_isotonic is before


def test_a_missing_skl2onnx_hook_is_a_clear_error(monkeypatch):
    import skl2onnx.operator_converters.calibrated_classifier_cv as module

    monkeypatch.delattr(module, "_transform_isotonic")
    with (pytest.raises(RuntimeError, match="_transform_isotonic is gone; update foundry/"),
          faithful_isotonic()):
        pass
