"""A faithful ONNX graph for isotonic calibration.

scikit-learn's :class:`~sklearn.isotonic.IsotonicRegression` interpolates linearly between its
thresholds. skl2onnx (1.20) converts it to a *nearest-threshold lookup* instead, a step
function that differs from scikit-learn by up to a few hundredths wherever a decision value
falls between two thresholds with different outputs; on a default-blueprint forge that was
enough to flip a label and fail the export's conformance check.

:func:`faithful_isotonic` swaps skl2onnx's ``_transform_isotonic`` for :func:`interpolation_graph`
for the duration of one conversion, so every runtime reproduces scikit-learn's probabilities:

    t    = clip(decision, X[0], X[-1])                   (out_of_bounds="clip")
    i    = #{ j in 1..M-2 : X[j] <= t }                  segment index in [0, M-2]
    p    = Y[i] + (t - X[i]) * slope[i]                   slope[i] = (Y[i+1]-Y[i]) / (X[i+1]-X[i])

which is ``numpy.interp(t, X, Y)`` (what scikit-learn computes). The thresholds are strictly
increasing (scikit-learn merges tied inputs when it fits), so every slope is finite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from onnx import TensorProto

#: The skl2onnx module whose isotonic step this replaces.
_CONVERTER_MODULE = "skl2onnx.operator_converters.calibrated_classifier_cv"


def interpolation_graph(scope: Any, container: Any, model: Any, T: str, k: int,
                        dtype: Any, proto_type: int) -> str:
    """Add nodes computing calibrator ``k`` of ``model`` on the column ``T``; return the
    name of the ``(N, 1)`` calibrated output.

    Same signature and contract as skl2onnx's ``_transform_isotonic``.
    """
    calibrator = model.calibrators[k]
    if calibrator.out_of_bounds != "clip":
        raise ValueError(
            f"isotonic calibrator out_of_bounds={calibrator.out_of_bounds!r} cannot be "
            "exported; CalibratedClassifierCV fits it with 'clip'"
        )
    x = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
    y = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
    if len(x) == 0 or np.any(np.diff(x) <= 0):
        raise ValueError("isotonic thresholds must be non-empty and strictly increasing")
    ftype = proto_type if proto_type in (TensorProto.FLOAT, TensorProto.DOUBLE) else TensorProto.FLOAT

    def name(base: str) -> str:
        return scope.get_unique_variable_name(base)

    def const(base: str, values: np.ndarray, onnx_type: int = ftype) -> str:
        n = name(base)
        values = np.asarray(values)
        container.add_initializer(n, onnx_type, list(values.shape), values.ravel().tolist())
        return n

    def node(op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = name(base)
        container.add_node(op, inputs, out, name=scope.get_unique_operator_name(op), **attrs)
        return out

    t = node("Reshape", [T, const("iso_shape", np.array([-1, 1]), TensorProto.INT64)], "iso_t")
    t = node("Clip", [t, const("iso_min", np.array(x[0])), const("iso_max", np.array(x[-1]))],
             "iso_clipped")
    if len(x) == 1:  # a constant calibrator
        zero = node("Mul", [t, const("iso_zero", np.array(0.0))], "iso_zero_col")
        return node("Add", [zero, const("iso_y", np.array(y[0]))], "iso_p")

    slope = np.diff(y) / np.diff(x)
    if len(x) == 2:  # one segment: no index to look up
        offset = node("Sub", [t, const("iso_x0", np.array(x[0]))], "iso_offset")
        rise = node("Mul", [offset, const("iso_slope", np.array(slope[0]))], "iso_rise")
        return node("Add", [rise, const("iso_y0", np.array(y[0]))], "iso_p")

    inner = const("iso_inner_x", x[1:-1])  # (M-2,), broadcast against t (N, 1)
    passed = node("LessOrEqual", [inner, t], "iso_passed")
    counted = node("Cast", [passed], "iso_passed_int", to=TensorProto.INT64)
    index = node("ReduceSum", [counted, const("iso_axis", np.array([1]), TensorProto.INT64)],
                 "iso_index", keepdims=1)
    x_lo = node("Gather", [const("iso_x_lo", x[:-1]), index], "iso_x_lo_at")
    y_lo = node("Gather", [const("iso_y_lo", y[:-1]), index], "iso_y_lo_at")
    s = node("Gather", [const("iso_slopes", slope), index], "iso_slope_at")
    offset = node("Sub", [t, x_lo], "iso_offset")
    rise = node("Mul", [offset, s], "iso_rise")
    return node("Add", [y_lo, rise], "iso_p")


@contextlib.contextmanager
def faithful_isotonic() -> Iterator[None]:
    """Within the block, skl2onnx converts isotonic calibration with :func:`interpolation_graph`."""
    import importlib

    module = importlib.import_module(_CONVERTER_MODULE)
    original = getattr(module, "_transform_isotonic", None)
    if original is None:  # the swap relies on a private skl2onnx function
        import skl2onnx

        raise RuntimeError(
            f"skl2onnx {skl2onnx.__version__}: {_CONVERTER_MODULE}._transform_isotonic is gone; "
            "update foundry/onnx_isotonic.py (tests/test_onnx_isotonic.py shows whether the "
            "stock converter now interpolates)"
        )
    module._transform_isotonic = interpolation_graph
    try:
        yield
    finally:
        module._transform_isotonic = original
