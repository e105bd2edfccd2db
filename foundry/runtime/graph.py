"""Reading the shipped pair: the ``.bin`` (rules in :mod:`foundry.artifacts`) and the
``.onnx`` graph, with a minimal protobuf wire reader (``import onnx`` alone costs
~100 ms): its declared signature (:func:`graph_signature`, rules O1-O3 and P1 against
the ``.bin``) and, when it is one ``LinearClassifier`` (+ an L1 ``Normalizer``, the
int8 softmax graph or skl2onnx's sigmoid calibration), its parameters
(:func:`read_linear_graph`), which the numpy backend runs."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry.artifacts import (
    MAX_BIN_BYTES,
    MAX_LABELS,
    MAX_ONNX_BYTES,
    MAX_VOCABULARY,
    interrupted_export,
    load_preprocessor,
    read_artifact,
    rule_error,
)

#: Post transforms of the ONNX ``LinearClassifier`` that the numpy backend reproduces.
POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")


@dataclass(frozen=True)
class SigmoidCalibration:
    """Platt scaling of a binary classifier as skl2onnx exports ``CalibratedClassifierCV``
    (one calibrated classifier, ``method="sigmoid"``): with ``s`` the raw score in
    ``column``, ``p1 = 1 / (1 + exp(a * s + b))`` and ``p0 = 1 - p1``."""

    column: int
    a: float
    b: float


@dataclass(frozen=True)
class LinearGraph:
    """The parameters of an ONNX graph that the numpy backend runs.

    One ``LinearClassifier``, then either an optional L1 ``Normalizer``, or (binary) the
    sigmoid calibration graph of skl2onnx.

    Attributes
    ----------
    coefficients : ndarray, float32, shape (K, D)
        One row per class, in class order (a binary logistic regression stores ``-w, w``).
    intercepts : ndarray, float32, shape (K,)
    post_transform : {"NONE", "LOGISTIC", "SOFTMAX"}
    l1_normalize : bool
        Whether a ``Normalizer(norm="L1")`` follows the classifier.
    calibration : SigmoidCalibration or None
        Applied to the classifier's raw scores (``post_transform`` is then ``"NONE"``).
    """

    coefficients: np.ndarray
    intercepts: np.ndarray
    post_transform: str
    l1_normalize: bool
    calibration: SigmoidCalibration | None = None


# A minimal reader of the protobuf wire format, for the few ONNX fields the numpy backend
# needs. ``import onnx`` alone takes ~100 ms, twice the load budget of both models; the
# field numbers below are fixed by onnx.proto (proto2) forever. tests/test_runtime_backends.py
# checks this reader against the onnx package.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_SPARSE_INITIALIZER = 1, 5, 11, 15
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 1, 2, 4, 5, 7
_ATTR_NAME, _ATTR_I, _ATTR_S, _ATTR_T, _ATTR_FLOATS, _ATTR_INTS = 1, 3, 4, 5, 7, 8
_TENSOR_DIMS = 1
_TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_INT32_DATA, _TENSOR_INT64_DATA = 2, 4, 5, 7
_TENSOR_NAME, _TENSOR_RAW_DATA = 8, 9
_VALUE_INFO_NAME, _VALUE_INFO_TYPE = 1, 2
_GRAPH_OUTPUT = 12
_TYPE_TENSOR, _TENSOR_TYPE_ELEM, _TENSOR_TYPE_SHAPE, _SHAPE_DIM = 1, 1, 2, 1
_DIM_VALUE, _DIM_PARAM = 1, 2
#: ONNX TensorProto.DataType FLOAT and INT64.
_ONNX_FLOAT, _ONNX_INT64 = 1, 7


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fixed32_run(buf: memoryview, start: int, key: int) -> np.ndarray:
    """The float32 values of consecutive 5-byte records ``key, 4 bytes`` from ``start``."""
    rows = (len(buf) - start) // 5
    records = np.frombuffer(buf, dtype=np.uint8, count=rows * 5, offset=start).reshape(rows, 5)
    other = np.flatnonzero(records[:, 0] != key)
    n = int(other[0]) if len(other) else rows
    return records[:n, 1:].copy().view("<f4").ravel()


def _proto_fields(buf: memoryview) -> dict[int, list]:
    """Field number -> values of one message: ints (varint), memoryviews (length-delimited),
    float32 arrays (runs of fixed32 records), bytes (fixed64)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key_at = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32 field")
            # Unpacked repeated floats (proto2's default) are runs of identical one-byte keys.
            value = (
                _fixed32_run(buf, key_at, key) if key < 0x80
                else np.frombuffer(buf, dtype="<f4", count=1, offset=pos)
            )
            pos = key_at + 5 * len(value) if key < 0x80 else pos + 4
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64 field")
            value, pos = bytes(buf[pos : pos + 8]), pos + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _strings(fields: dict[int, list], number: int) -> list[str]:
    return [bytes(v).decode("utf-8") for v in fields.get(number, [])]


def _floats(fields: dict[int, list], number: int) -> np.ndarray:
    parts = [
        np.frombuffer(v, dtype="<f4") if isinstance(v, memoryview) else v  # packed or runs
        for v in fields.get(number, [])
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _ints(fields: dict[int, list], number: int) -> list[int]:
    out: list[int] = []
    for v in fields.get(number, []):
        if isinstance(v, int):
            out.append(v)
        else:  # packed
            pos = 0
            while pos < len(v):
                value, pos = _varint(v, pos)
                out.append(value)
    return [x - (1 << 64) if x >= 1 << 63 else x for x in out]  # int64 two's complement


def _node(fields: dict[int, list]) -> dict[str, Any]:
    attributes = {}
    for raw in fields.get(_NODE_ATTRIBUTE, []):
        attr = _proto_fields(raw)
        name = _strings(attr, _ATTR_NAME)[0] if _ATTR_NAME in attr else ""
        attributes[name] = attr
    return {
        "op_type": "".join(_strings(fields, _NODE_OP_TYPE)),
        "domain": "".join(_strings(fields, _NODE_DOMAIN)),
        "input": _strings(fields, _NODE_INPUT),
        "output": _strings(fields, _NODE_OUTPUT),
        "attributes": attributes,
    }


_TENSOR_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 6: "<i4", 7: "<i8", 11: "<f8"}


def _tensor(fields: dict[int, list]) -> tuple[str, np.ndarray | None]:
    """``(name, values)`` of a TensorProto initializer; values None for other types."""
    name = "".join(_strings(fields, _TENSOR_NAME))
    dtype = _TENSOR_DTYPES.get((fields.get(_TENSOR_DATA_TYPE) or [0])[0])
    if dtype is None:
        return name, None
    if _TENSOR_RAW_DATA in fields:
        values = np.frombuffer(bytes(fields[_TENSOR_RAW_DATA][0]), dtype=dtype)
    elif dtype == "<f4":
        values = _floats(fields, _TENSOR_FLOAT_DATA)
    else:  # int8 and uint8 values are stored widened in int32_data
        wide = np.asarray(_ints(fields, _TENSOR_INT64_DATA if dtype == "<i8"
                                else _TENSOR_INT32_DATA), dtype=np.int64)
        if dtype != "<f8" and wide.size and not (
                np.iinfo(dtype).min <= wide.min() and wide.max() <= np.iinfo(dtype).max):
            raise ValueError(f"initializer {name} holds values outside {np.dtype(dtype)}")
        values = wide.astype(dtype)
    return name, values


def _int8_softmax_graph(nodes: list[dict[str, Any]], tensors: dict[str, np.ndarray | None],
                        features: str, dims: dict[str, tuple[int, ...]],
                        n_features: int | None) -> LinearGraph | None:
    """Match the int8 graph of :func:`foundry.quantized.quantized_onnx`::

        W = Mul(Cast(W_q int8 [D, K], to=FLOAT), scale [1, K])
        probabilities = Softmax(Add(MatMul(features, W), b [K]), axis=-1 or 1)
        label = ArgMax(probabilities, axis=1, keepdims=0)

    with ``W_q`` a constant or rebuilt from its sparse entries by five more nodes
    (:func:`_sparse_layout`), and return it dequantised (``W.T`` as the ``K x D``
    coefficients, post ``SOFTMAX``). ``dims`` are the initializers' shapes, ``n_features``
    the ``D`` the graph declares for ``features`` (None when it declares none).

    Returns None when the nodes are not these; raises ValueError when they are the sparse
    layout but its constants are not a valid matrix (:func:`_sparse_weights`).
    """
    if len(nodes) not in (6, 6 + len(_SPARSE_OPS)):
        return None
    by_output = {n["output"][0]: n for n in nodes if len(n["output"]) == 1}
    ops = [(n["op_type"], n["domain"]) for n in nodes]
    if len(by_output) != len(nodes) or any(d not in ("", "ai.onnx") for _, d in ops):
        return None
    arg, soft = by_output.get("label"), by_output.get("probabilities")
    if (arg is None or soft is None or arg["op_type"] != "ArgMax" or soft["op_type"] != "Softmax"
            or arg["input"] != ["probabilities"] or _int_attribute(arg, "axis", 0) != 1
            or _int_attribute(arg, "keepdims", 1) != 0
            or _int_attribute(soft, "axis", -1) not in (-1, 1) or len(soft["input"]) != 1):
        return None
    add = by_output.get(soft["input"][0])
    if add is None or add["op_type"] != "Add" or len(add["input"]) != 2:
        return None
    matmul, b = by_output.get(add["input"][0]), tensors.get(add["input"][1])
    if matmul is None or matmul["op_type"] != "MatMul" or matmul["input"][:1] != [features] \
            or len(matmul["input"]) != 2 or b is None:
        return None
    mul = by_output.get(matmul["input"][1])
    if mul is None or mul["op_type"] != "Mul" or len(mul["input"]) != 2:
        return None
    cast, scale = by_output.get(mul["input"][0]), tensors.get(mul["input"][1])
    if cast is None or cast["op_type"] != "Cast" or _int_attribute(cast, "to", 0) != _ONNX_FLOAT \
            or scale is None or len(cast["input"]) != 1:
        return None
    k = len(b)
    if k < 2 or scale.size != k:
        return None
    source = cast["input"][0]
    if len(nodes) == 6:  # W_q is a constant
        w_q = tensors.get(source)
        if w_q is None or w_q.dtype != np.int8 or w_q.size % k:
            return None
    else:
        layout = _sparse_layout(by_output, source)
        if layout is None or source in tensors:
            return None
        w_q = _sparse_weights(layout, tensors, dims, n_features, k)
    weights = w_q.reshape(-1, k).astype(np.float32) * scale.reshape(1, k).astype(np.float32)
    return LinearGraph(np.ascontiguousarray(weights.T), b.astype(np.float32), "SOFTMAX", False)


#: The nodes rebuilding a sparse ``W_q`` (:func:`foundry.quantized.sparse_entries`), in the
#: order :func:`_sparse_layout` reads them backwards from ``W_q``.
_SPARSE_OPS = ("Reshape", "ScatterElements", "ConstantOfShape", "CumSum", "Cast")


def _sparse_layout(by_output: dict[str, dict[str, Any]], w_q: str) -> dict[str, Any] | None:
    """Match the nodes computing ``w_q`` from its sparse entries::

        W_q = Reshape(ScatterElements(ConstantOfShape(W_size, value=int8 [0]),
                                      CumSum(Cast(W_gaps, to=INT64), W_axis),
                                      W_values, axis=0), W_shape)

    and return the names of the constants (``gaps``, ``axis``, ``size``, ``values``,
    ``shape``) and the ``value`` attribute of ``ConstantOfShape`` (``zero``, TensorProto
    fields); None when a node or an attribute differs (``CumSum``'s ``exclusive`` and
    ``reverse`` may be written as 0; no other attribute is allowed).
    """
    try:
        reshape = _producer(by_output, w_q, "Reshape", 2, set())
        scatter = _producer(by_output, reshape["input"][0], "ScatterElements", 3, {"axis"})
        zeros = _producer(by_output, scatter["input"][0], "ConstantOfShape", 1, {"value"})
        cumsum = _producer(by_output, scatter["input"][1], "CumSum", 2,
                           {"exclusive", "reverse"})
        steps = _producer(by_output, cumsum["input"][0], "Cast", 1, {"to"})
    except LookupError:
        return None
    zero = zeros["attributes"].get("value", {}).get(_ATTR_T)
    if (_int_attribute(scatter, "axis", 0) != 0 or zero is None
            or _int_attribute(cumsum, "exclusive", 0) != 0
            or _int_attribute(cumsum, "reverse", 0) != 0
            or _int_attribute(steps, "to", 0) != _ONNX_INT64):
        return None
    return {"gaps": steps["input"][0], "axis": cumsum["input"][1], "size": zeros["input"][0],
            "values": scatter["input"][2], "shape": reshape["input"][1],
            "zero": _proto_fields(zero[0])}


def _sparse_weights(layout: dict[str, Any], tensors: dict[str, np.ndarray | None],
                    dims: dict[str, tuple[int, ...]], n_features: int | None,
                    k: int) -> np.ndarray:
    """The int8 ``W_q`` ``[D, K]`` of a sparse layout (:func:`_sparse_layout`) whose graph
    declares ``n_features`` features and has ``k`` intercepts.

    The constants must be what the exporter writes: ``W_gaps`` uint8 ``[n]``, ``W_values``
    int8 ``[n]``, ``W_axis`` int64 0 (a scalar or ``[1]``), ``W_size`` int64 ``[1]`` =
    ``[D * K]``, ``W_shape`` int64 ``[2]`` = ``[D, K]`` with ``D`` the declared feature count
    (at most ``MAX_VOCABULARY``: :func:`check_signature` ties it to the ``.bin``) and
    ``K = k`` (at most ``MAX_LABELS``), the ``value`` of ``ConstantOfShape`` an int8 0; every
    gap after the first at least 1 and the last position ``cumsum(gaps)[-1] < D * K``. The
    shape is checked before anything of its size is allocated.

    Raises
    ------
    ValueError
        Naming the first of these that fails.
    """
    def constant(key: str, dtype: str, shapes: tuple[tuple[int, ...], ...] | None = None
                 ) -> np.ndarray:
        """The constant ``layout[key]``; ``shapes``: its allowed dims (None: any rank 1)."""
        name = layout[key]
        values, shape = tensors.get(name), dims.get(name)
        if values is None or values.dtype != np.dtype(dtype):
            raise ValueError(f"sparse int8 weights: {name} is not a {np.dtype(dtype)} constant")
        if shape is None or math.prod(shape) != values.size or (
                len(shape) != 1 if shapes is None else shape not in shapes):
            raise ValueError(f"sparse int8 weights: {name} has dims {list(shape or ())} and "
                             f"{values.size} values")
        return values

    gaps = constant("gaps", "u1")
    values = constant("values", "i1")
    axis = constant("axis", "<i8", ((), (1,)))
    size = constant("size", "<i8", ((1,),))
    shape = constant("shape", "<i8", ((2,),))
    _, zero = _tensor(layout["zero"])
    if zero is None or zero.dtype != np.int8 or zero.size != 1 or zero[0] != 0:
        raise ValueError("sparse int8 weights: ConstantOfShape's value is not the int8 0")
    if axis[0] != 0:
        raise ValueError(f"sparse int8 weights: CumSum over axis {axis[0]}, not 0")
    if n_features is None:
        raise ValueError("sparse int8 weights: the graph does not declare its number of features")
    d, k_shape = (int(v) for v in shape)
    if d != n_features or k_shape != k or not (0 < d <= MAX_VOCABULARY and k <= MAX_LABELS):
        raise ValueError(f"sparse int8 weights: W_shape [{d}, {k_shape}] is not [D, K] with "
                         f"D = {n_features} (the declared features, at most {MAX_VOCABULARY}) "
                         f"and K = {k} (the intercepts, at most {MAX_LABELS})")
    n_weights = d * k
    if int(size[0]) != n_weights:
        raise ValueError(f"sparse int8 weights: W_size {int(size[0])} is not {d} * {k}")
    if len(gaps) != len(values):
        raise ValueError(f"sparse int8 weights: {len(gaps)} gaps but {len(values)} values")
    if len(gaps) > n_weights:
        raise ValueError(f"sparse int8 weights: {len(gaps)} entries in {n_weights} positions")
    repeated = np.flatnonzero(gaps[1:] == 0)
    if len(repeated):
        raise ValueError(f"sparse int8 weights: gap {int(repeated[0]) + 1} is 0 "
                         "(a repeated position)")
    positions = np.cumsum(gaps, dtype=np.int64)
    if len(positions) and positions[-1] >= n_weights:
        raise ValueError(f"sparse int8 weights: position {int(positions[-1])} is past the "
                         f"{d} x {k} matrix")
    w_q = np.zeros(n_weights, dtype=np.int8)
    w_q[positions] = values
    return w_q.reshape(d, k)


def _producer(by_output: dict[str, dict[str, Any]], output: str, op: str, n_inputs: int,
              attributes: set[str] | None = None) -> dict[str, Any]:
    """The node writing ``output``, which must be an ``op`` of ``n_inputs`` inputs (and, given
    ``attributes``, no attribute outside them); LookupError otherwise."""
    found = by_output.get(output)
    if found is None or found["op_type"] != op or len(found["input"]) != n_inputs or (
            attributes is not None and not set(found["attributes"]) <= attributes):
        raise LookupError(output)
    return found


def _int_attribute(node: dict[str, Any], name: str, default: int) -> int:
    values = _ints(node["attributes"].get(name, {}), _ATTR_I)
    return values[0] if values else default


def _sigmoid_calibration(nodes: list[dict[str, Any]], tensors: dict[str, np.ndarray | None],
                         raw_scores: str, n_classes: int) -> SigmoidCalibration | None:
    """Match skl2onnx's graph of a binary ``CalibratedClassifierCV(method="sigmoid")`` with
    one calibrated classifier, downstream of the ``LinearClassifier`` writing ``raw_scores``::

        p1 = 1 / (1 + exp(a * raw[:, k] + b)); probabilities = concat(1 - p1, p1) (Sum, / 1)
        label = Cast(Reshape(ArrayFeatureExtractor(classes, ArgMax(probabilities))))

    Every node must be part of it; returns None on any difference.
    """
    producer = {out: node for node in nodes for out in node["output"]}
    used: list[dict[str, Any]] = []

    def node(output: str, op: str, n_inputs: int) -> dict[str, Any]:
        found = _producer(producer, output, op, n_inputs)
        used.append(found)
        return found

    def scalar(name: str) -> float:
        value = tensors.get(name)
        if value is None or value.size != 1:
            raise LookupError(name)
        return float(value.reshape(-1)[0])

    def split(pair: list[str]) -> tuple[float, str]:
        """(constant, other input) of a commutative binary node."""
        first, second = pair
        return (scalar(second), first) if first not in tensors else (scalar(first), second)

    try:
        divide = node("probabilities", "Div", 2)
        total = node(divide["input"][0], "Sum", 1)
        merged = node(total["input"][0], "Concat", 2)
        complement = node(merged["input"][0], "Sub", 2)
        p1 = node(merged["input"][1], "Div", 2)
        denominator = node(p1["input"][1], "Add", 2)
        one, exp_out = split(denominator["input"])
        exponent = node(node(exp_out, "Exp", 1)["input"][0], "Add", 2)
        b, product = split(exponent["input"])
        a, column_out = split(node(product, "Mul", 2)["input"])
        extract = node(column_out, "ArrayFeatureExtractor", 2)
        label_path = node("label", "Cast", 1)
        label_path = node(node(label_path["input"][0], "Reshape", 2)["input"][0],
                          "ArrayFeatureExtractor", 2)
        argmax = node(label_path["input"][1], "ArgMax", 1)
        classes = tensors.get(label_path["input"][0])
        ok = (
            scalar(divide["input"][1]) == 1.0 and one == 1.0
            and scalar(p1["input"][0]) == 1.0 and scalar(complement["input"][0]) == 1.0
            and complement["input"][1] == merged["input"][1]
            and _int_attribute(merged, "axis", 0) in (1, -1)
            and extract["input"][0] == raw_scores
            and argmax["input"][0] == "probabilities"
            and _int_attribute(argmax, "axis", 0) == 1
            and classes is not None and classes.tolist() == list(range(n_classes))
            and n_classes == 2 and len(used) == len(nodes) - 1
        )
        column = int(scalar(extract["input"][1]))
    except LookupError:
        return None
    if not ok or column not in (0, 1):
        return None
    return SigmoidCalibration(column, a, b)


@dataclass(frozen=True)
class GraphSignature:
    """The declared inputs and outputs of an ONNX graph (rules O2 and O3).

    ``inputs`` and ``outputs`` are ``(name, element type, shape)`` with the shape a tuple of
    ints (declared sizes) and strings (symbolic or unknown sizes); element type and shape
    are None when the graph does not declare a tensor type.
    """

    inputs: tuple[tuple[str, int | None, tuple | None], ...]
    outputs: tuple[tuple[str, int | None, tuple | None], ...]


def _value_info(raw: memoryview) -> tuple[str, int | None, tuple | None]:
    fields = _proto_fields(raw)
    name = "".join(_strings(fields, _VALUE_INFO_NAME))
    types = fields.get(_VALUE_INFO_TYPE)
    tensor = _proto_fields(types[0]).get(_TYPE_TENSOR) if types else None
    if not tensor:
        return name, None, None
    tensor_fields = _proto_fields(tensor[0])
    elem = (tensor_fields.get(_TENSOR_TYPE_ELEM) or [None])[0]
    if _TENSOR_TYPE_SHAPE not in tensor_fields:
        return name, elem, None
    dims = []
    for raw_dim in _proto_fields(tensor_fields[_TENSOR_TYPE_SHAPE][0]).get(_SHAPE_DIM, []):
        dim = _proto_fields(raw_dim)
        dims.append(_ints(dim, _DIM_VALUE)[0] if _DIM_VALUE in dim
                    else "".join(_strings(dim, _DIM_PARAM)) or "?")
    return name, elem, tuple(dims)


def graph_signature(onnx_data: bytes) -> GraphSignature:
    """The declared inputs and outputs of an ``.onnx`` file's graph.

    Raises
    ------
    ValueError
        If the bytes are not a protobuf ModelProto with exactly one graph.
    """
    model = _proto_fields(memoryview(onnx_data))
    if len(model.get(_MODEL_GRAPH, [])) != 1:
        raise ValueError("no graph")
    graph = _proto_fields(model[_MODEL_GRAPH][0])
    return GraphSignature(tuple(map(_value_info, graph.get(_GRAPH_INPUT, []))),
                          tuple(map(_value_info, graph.get(_GRAPH_OUTPUT, []))))


def check_signature(signature: GraphSignature, pre, onnx_path: Path, bin_path: Path) -> None:
    """Rules O2 and O3: one float32 ``features`` input ``[N, D]``; outputs ``label``,
    ``probabilities`` ``[N, K]`` (K checked when declared)."""
    d, k = len(pre.vocabulary), len(pre.labels)
    if len(signature.inputs) != 1:
        names = [i[0] for i in signature.inputs]
        raise rule_error(onnx_path, f"the graph has inputs {names}; it needs exactly one, "
                                    "'features'", "O2")
    name, elem, shape = signature.inputs[0]
    if name != "features":
        raise rule_error(onnx_path, f"the graph's input is named {name!r}, not 'features'", "O2")
    if elem != _ONNX_FLOAT or shape is None or len(shape) != 2:
        raise rule_error(onnx_path, f"input 'features' is not declared float32 of rank 2 "
                                    f"(element type {elem}, shape {shape})", "O2")
    if shape[1] != d:
        raise rule_error(onnx_path, f"expects {shape[1]} features but {bin_path.name} has a "
                                    f"vocabulary of {d}", "O2")
    outputs = [o[0] for o in signature.outputs]
    if outputs[:2] != ["label", "probabilities"]:
        raise rule_error(onnx_path, f"outputs {outputs}, expected label, probabilities", "O3")
    shape = signature.outputs[1][2]
    if shape and isinstance(shape[-1], int) and shape[-1] != k:
        raise rule_error(onnx_path, f"{shape[-1]} classes but {bin_path.name} lists {k} labels",
                         "O3")


def read_linear_graph(onnx_data: bytes) -> LinearGraph | None:
    """The :class:`LinearGraph` of an ``.onnx`` file, or None if the graph is anything else.

    Accepted: ``features -> LinearClassifier -> (label, probabilities)``; or that classifier
    writing an intermediate tensor that one ``Normalizer(norm="L1")`` turns into
    ``probabilities``; or its raw scores feeding skl2onnx's binary sigmoid calibration
    (:func:`_sigmoid_calibration`). Integer class labels ``0..K-1``, a known
    ``post_transform``. Also the int8 graph of ``foundry.quantized`` (standard operators,
    :func:`_int8_softmax_graph`; its weights dense or sparse), dequantised here once.

    Raises
    ------
    ValueError
        If the bytes are not a well-formed protobuf message, or hold the sparse int8 layout
        with constants that are not a valid matrix (:func:`_sparse_weights`).
    """
    model = _proto_fields(memoryview(onnx_data))
    if len(model.get(_MODEL_GRAPH, [])) != 1:
        return None
    graph = _proto_fields(model[_MODEL_GRAPH][0])
    nodes = [_node(_proto_fields(raw)) for raw in graph.get(_GRAPH_NODE, [])]
    inputs = [_strings(_proto_fields(raw), _VALUE_INFO_NAME) for raw in graph.get(_GRAPH_INPUT, [])]
    tensors: dict[str, np.ndarray | None] = {}
    dims: dict[str, tuple[int, ...]] = {}
    for raw in graph.get(_GRAPH_INITIALIZER, []):
        fields = _proto_fields(raw)
        name, values = _tensor(fields)
        tensors[name], dims[name] = values, tuple(_ints(fields, _TENSOR_DIMS))
    if not nodes or len(inputs) != 1 or _GRAPH_SPARSE_INITIALIZER in graph:
        return None
    clf = nodes[0]
    if (clf["op_type"], clf["domain"]) != ("LinearClassifier", "ai.onnx.ml"):
        shape = _value_info(graph[_GRAPH_INPUT][0])[2]
        n_features = shape[1] if shape and len(shape) == 2 and isinstance(shape[1], int) else None
        return _int8_softmax_graph(nodes, tensors, inputs[0][0] if inputs[0] else "", dims,
                                   n_features)
    if len(clf["output"]) != 2 or clf["input"] != inputs[0]:
        return None
    attrs = clf["attributes"]
    if set(attrs) - {"classlabels_ints", "coefficients", "intercepts", "multi_class",
                     "post_transform"}:
        return None  # e.g. string class labels
    post = "".join(_strings(attrs.get("post_transform", {}), _ATTR_S)) or "NONE"
    labels = _ints(attrs.get("classlabels_ints", {}), _ATTR_INTS)
    coefficients = _floats(attrs.get("coefficients", {}), _ATTR_FLOATS)
    intercepts = _floats(attrs.get("intercepts", {}), _ATTR_FLOATS)
    k = len(labels)
    if post not in POST_TRANSFORMS or labels != list(range(k)) or k < 2:
        return None
    if len(intercepts) != k or coefficients.size % k or coefficients.size == 0:
        return None
    coefficients = coefficients.reshape(k, -1)
    if clf["output"][0] != "label":  # something else computes the label: a calibration?
        calibration = _sigmoid_calibration(nodes, tensors, clf["output"][1], k)
        if calibration is None or post != "NONE":
            return None
        return LinearGraph(coefficients, intercepts, post, False, calibration)
    if tensors:
        return None
    if len(nodes) == 1:
        return LinearGraph(coefficients, intercepts, post, False) if (
            clf["output"][1] == "probabilities") else None
    norm = nodes[1]
    if (
        len(nodes) != 2
        or (norm["op_type"], norm["domain"]) != ("Normalizer", "ai.onnx.ml")
        or norm["input"] != [clf["output"][1]]
        or norm["output"] != ["probabilities"]
        or _strings(norm["attributes"].get("norm", {}), _ATTR_S) != ["L1"]
    ):
        return None
    return LinearGraph(coefficients, intercepts, post, True)


def _check_linear_graph(graph: LinearGraph, pre, onnx_path: Path, bin_path: Path) -> None:
    """The weights agree with the declared signature (a graph ONNX Runtime would not run)."""
    k, d = graph.coefficients.shape
    if d != len(pre.vocabulary):
        raise rule_error(onnx_path, f"its weights expect {d} features but {bin_path.name} has "
                                    f"a vocabulary of {len(pre.vocabulary)}", "O2")
    if k != len(pre.labels):
        raise rule_error(onnx_path, f"its weights have {k} classes but {bin_path.name} lists "
                                    f"{len(pre.labels)} labels", "O3")


#: Pauses before re-reading a mismatched pair (rule P1): an export renames the two files one
#: after the other, and a reader may fall in between.
PAIR_RETRY_DELAYS_S = (0.01, 0.02, 0.04, 0.08)


def read_pair(task: str, onnx_path: Path, bin_path: Path) -> tuple[Any, bytes, str]:
    """The validated ``.bin`` message, the ``.onnx`` bytes and the ``.bin``'s SHA-256 (hex) of a
    pair (rules F, B and P1).

    When the ``.onnx`` hash differs from the one recorded in the ``.bin``, both files are read
    again after a short pause, a few times: an export may be switching them.
    """
    for delay in (*PAIR_RETRY_DELAYS_S, None):
        bin_data = read_artifact(bin_path, "preprocessor file", MAX_BIN_BYTES)
        pre = load_preprocessor(bin_data, bin_path, task)
        onnx_data = read_artifact(onnx_path, "classifier file", MAX_ONNX_BYTES)
        digest = hashlib.sha256(onnx_data).hexdigest()
        if digest == pre.onnx_sha256:
            return pre, onnx_data, hashlib.sha256(bin_data).hexdigest()
        if delay is None:
            how = ("re-export both files together" if not interrupted_export(bin_path.parent, task)
                   else f"an export into {bin_path.parent} was interrupted while switching the "
                        f"files; `foundry verify --models-dir {bin_path.parent}` completes it")
            raise rule_error(
                onnx_path, f"SHA-256 {digest[:12]}… does not match the {pre.onnx_sha256[:12]}… "
                           f"recorded in {bin_path.name}; the pair is mismatched ({how})", "P1")
        time.sleep(delay)
    raise AssertionError("unreachable")
