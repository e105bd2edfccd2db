"""Inference from the two shipped files, ``<task>_classifier.onnx`` + ``<task>_preprocessor.bin``.

This module is what an application imports. It never imports scikit-learn: text becomes
features through the text spec (:mod:`foundry.textspec`) driven by the settings stored in
the ``.bin``, and the classifier runs in one of two backends:

``"numpy"``
    When the ``.onnx`` graph is one ``LinearClassifier``, optionally followed by an L1
    ``Normalizer`` or (binary) by skl2onnx's sigmoid-calibration graph (the default
    trainer's export), its coefficients are read at load time (:func:`read_linear_graph`,
    a minimal protobuf reader: ``import onnx`` alone would cost ~100 ms) and fused with
    the idf into per-n-gram tables. One prediction is then one pass of an automaton over the
    text's characters, or a few C-level passes over its n-grams, in plain Python (no dense
    feature row, no ONNX Runtime call); a batch of 24 texts or more is scored in NumPy
    (:class:`_VectorScorer`). It reproduces ONNX Runtime's semantics (``post_transform``
    LOGISTIC / SOFTMAX / NONE, the normaliser, the calibration) to ~1e-7, and ONNX
    Runtime is never imported.
``"onnxruntime"``
    The reference: one ONNX Runtime session configured for small inputs (one thread, no
    spinning, sequential), fed one preallocated row per query or dense blocks of rows.
    Used for any other graph, or on request.

``backend="auto"`` (the default) picks ``"numpy"`` when the graph allows it.

Speed without giving up exactness rests on two equivalences, each checked by tests against
the reference implementation in :mod:`foundry.textspec` (``tests/test_runtime_backends.py``):

- :func:`fast_normalize` performs steps 1-5 of the text spec with one ``str.translate``
  through a per-code-point table, falling back to :func:`foundry.textspec.normalize` for
  any text whose NFKC form is not the concatenation of its characters' NFKC forms;
  :func:`normalize_many` does the same for a whole batch in one ``translate``;
- :class:`NgramSlicer` (and :func:`ngram_list`) yields the same multiset of n-grams as
  :func:`foundry.textspec.char_ngrams`, with one ``operator.itemgetter`` per length.

>>> from foundry.runtime import MicroModel
>>> m = MicroModel.load("is_question", models_dir="models")   # doctest: +SKIP
>>> m.predict("今天天气怎么样？").label                          # doctest: +SKIP
'Question'
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np

from foundry.artifacts import (
    MAX_BIN_BYTES,
    MAX_ONNX_BYTES,
    SUPPORTED_FORMAT_VERSIONS,
    interrupted_export,
    load_preprocessor,
    read_artifact,
    rule_error,
)
from foundry.errors import ArtifactError
from foundry.familiarity import Familiarity, gram_total, share
from foundry.reflex import Reflex, reflex_of
from foundry.textspec import (
    REMOVED_CATEGORIES,
    WHITESPACE,
    TextSpec,
    collapse_spaces,
    normalize,
)

__all__ = ["SUPPORTED_FORMAT_VERSIONS", "ArtifactError", "GraphSignature", "LinearGraph",
           "MicroModel", "NgramSlicer", "Prediction", "Probabilities", "check_conformance", "fast_normalize",
           "graph_signature", "ngram_list", "normalize_many", "read_linear_graph",
           "verify_conformance"]

try:  # the C helper behind Counter.update, without Counter's per-call overhead
    from collections import _count_elements
except ImportError:  # pragma: no cover - other Python implementations
    def _count_elements(mapping: dict, iterable: Iterable) -> None:
        for elem in iterable:
            mapping[elem] = mapping.get(elem, 0) + 1

BACKENDS = ("auto", "numpy", "onnxruntime", "native")
#: Post transforms of the ONNX ``LinearClassifier`` that the numpy backend reproduces.
POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")


_new_object = object.__new__
_set_attribute = object.__setattr__
_MORE_THAN_ONE = (1).__lt__


def _float_list(scores: Any) -> list[float]:
    """A score vector as a list of Python floats: a list as it is, the float64 bytes of the
    native path, or anything NumPy reads as a vector."""
    if type(scores) is list:
        return scores
    if type(scores) is bytes:
        return memoryview(scores).cast("d").tolist()
    return np.asarray(scores, dtype=np.float64).tolist()


class Probabilities(Mapping[str, float]):
    """Every label's probability: a read-only mapping ``label -> float`` in label order.

    It holds the score vector an answer was computed from (a list of floats, a float64 NumPy
    vector, or the native path's float64 bytes) and the model's label tuple; the
    ``label -> float`` dict is built on first use only. Building a dict of 151 Python floats
    cost more than scoring the text on the native path, and most callers read the label and
    ``confident`` only.

    It behaves like the dict it replaces when read: equal to a dict (or any mapping) with the
    same items, iterates in label order, ``repr`` is the dict's, ``keys()``, ``values()``,
    ``items()`` are the dict's views, ``len``, ``in``, ``get``; it pickles and copies. It is
    not a ``dict``: ``json.dumps`` needs ``dict(probabilities)`` (or
    :meth:`Prediction.to_json`), and it cannot be changed.
    """

    __slots__ = ("_labels", "_scores", "_items")

    def __init__(self, labels: Sequence[str], scores: Any) -> None:
        """``labels`` in the scores' order; ``scores`` one float per label (a list, a NumPy
        vector, or float64 bytes)."""
        labels = tuple(labels)
        values = list(_float_list(scores))  # a copy: the caller's list may change
        if len(values) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(values)} scores")
        _set_attribute(self, "_labels", labels)
        _set_attribute(self, "_scores", values)
        _set_attribute(self, "_items", None)

    def _dict(self) -> dict[str, float]:
        """The ``label -> float`` dict, built once."""
        items = self._items
        if items is None:
            items = dict(zip(self._labels, _float_list(self._scores), strict=True))
            _set_attribute(self, "_items", items)
        return items

    def __getitem__(self, label: str) -> float:
        return self._dict()[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: object) -> bool:
        return label in self._dict()

    def get(self, label: str, default: Any = None) -> Any:
        return self._dict().get(label, default)

    def keys(self):  # noqa: ANN201 - the dict's view
        return self._dict().keys()

    def values(self):  # noqa: ANN201
        return self._dict().values()

    def items(self):  # noqa: ANN201
        return self._dict().items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Probabilities):
            return self._dict() == other._dict()
        if isinstance(other, dict):
            return self._dict() == other
        if isinstance(other, Mapping):
            return self._dict() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a dict, so unhashable like one

    def __repr__(self) -> str:
        return repr(self._dict())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Probabilities is read-only; dict(probabilities) is a copy to change")

    def __reduce__(self) -> tuple:
        return Probabilities, (self._labels, _float_list(self._scores))


def _probabilities(labels: tuple[str, ...], scores: Any) -> Probabilities:
    """``Probabilities(labels, scores)`` without the checks of ``__init__``: for the answering
    paths, whose ``labels`` are the model's tuple and ``scores`` one float per label."""
    probabilities = _new_object(Probabilities)
    _set_attribute(probabilities, "_labels", labels)
    _set_attribute(probabilities, "_scores", scores)
    _set_attribute(probabilities, "_items", None)
    return probabilities


@dataclass(frozen=True)
class Prediction:
    """One answer: the label, every label's probability, and whether to trust it.

    ``confident`` is true when the top probability reaches the model's threshold *and* the
    text is familiar enough (its unfamiliarity is within the ``.bin``'s gate, see
    :mod:`foundry.familiarity`); otherwise the caller should fall back (e.g. to its LLM).
    """

    label: str
    #: Every label's probability, in label order (:class:`Probabilities`, read-only).
    probabilities: Mapping[str, float]
    confident: bool
    #: Probability of ``label`` (the top probability).
    score: float = field(default=0.0)
    #: The name of the reflex rule that answered (:mod:`foundry.reflex`), or None when the
    #: model did. A rule's answer has probability 1 for its label, 0 for the others.
    rule: str | None = field(default=None)

    def to_json(self, text: str, rules: bool = False) -> dict:
        """The JSON-line answer; ``rules``: the model carries reflex rules, so the line says
        which one answered (``"rule"``: its name, or null for the model)."""
        out = {
            "text": text,
            "label": self.label,
            "probabilities": dict(self.probabilities.items()),
            "confident": self.confident,
        }
        if rules:
            out["rule"] = self.rule
        return out


def _prediction(label: str, probabilities: Mapping[str, float], confident: bool,
                score: float, rule: str | None = None) -> Prediction:
    """``Prediction(label, probabilities, confident, score)``, without the frozen ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__``; filling the instance
    dict directly gives the same object at a third of the cost, which matters at
    hundreds of thousands of answers per second.
    """
    prediction = _new_object(Prediction)
    fields = {"label": label, "probabilities": probabilities, "confident": confident,
              "score": score}
    if rule is not None:
        fields["rule"] = rule
    _set_attribute(prediction, "__dict__", fields)
    return prediction


# -- fast, exact normaliser ---------------------------------------------------------------

#: Marks, in a translated text, a code point whose NFKC form may depend on its neighbours
#: (or that lowercases by context). U+10FFFF is a noncharacter; it maps to itself as unsafe,
#: so its presence in the input also sends the text down the reference path.
_UNSAFE = "\U0010ffff"
_COMBINING_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
#: Hangul conjoining jamo: vowel and trailing jamo compose with a preceding syllable.
_JAMO = range(0x1100, 0x1200)
_CAPITAL_SIGMA = "\u03a3"  # lowercases to σ or ς depending on context (Final_Sigma)


def _starts_stable(decomposed: str) -> bool:
    """True if ``decomposed`` starts with a starter that can never be a composition's 2nd part.

    Canonical reordering never moves a character across a starter, and composition joins
    a starter only with a following character that is a possible second element of a
    primary composite: a combining mark (ccc > 0 or category M*) or a Hangul vowel /
    trailing jamo. So when every character's decomposition starts with a starter that is
    none of these, NFKC works character by character. ``tests/test_runtime_backends.py``
    checks this claim against the whole Unicode database of the running Python.
    """
    first = decomposed[0]
    return (
        unicodedata.combining(first) == 0
        and unicodedata.category(first) not in _COMBINING_CATEGORIES
        and ord(first) not in _JAMO
    )


class _CharTable(dict):
    """``str.translate`` table: code point -> steps 1-4 of the text spec applied to it alone.

    Filled lazily (``__missing__``), so loading costs nothing and the table only holds
    characters actually seen, at most :attr:`limit` of them (beyond, results are computed
    each time: a stream of rare characters cannot grow memory without bound). Characters
    whose result may depend on context map to :data:`_UNSAFE`.
    """

    limit = 1 << 16

    def __init__(self, lowercase: bool) -> None:
        super().__init__()
        self.lowercase = lowercase

    def __missing__(self, code_point: int) -> str:
        char = chr(code_point)
        nfkc = unicodedata.normalize("NFKC", char)
        if (
            char == _UNSAFE
            or _CAPITAL_SIGMA in nfkc
            or not _starts_stable(unicodedata.normalize("NFKD", char))
        ):
            result = _UNSAFE
        else:
            if self.lowercase:
                nfkc = nfkc.lower()
            result = "".join(
                " " if ch in WHITESPACE
                else "" if unicodedata.category(ch) in REMOVED_CATEGORIES
                else ch
                for ch in nfkc
            )
        if len(self) < self.limit:
            self[code_point] = result
        return result


DEFAULT_SPEC = TextSpec()
_CHAR_TABLES = {True: _CharTable(lowercase=True), False: _CharTable(lowercase=False)}


def fast_normalize(text: str, spec: TextSpec = DEFAULT_SPEC) -> str:
    """Exactly :func:`foundry.textspec.normalize`, about three times faster.

    Steps 1-4 are one ``str.translate`` through a per-character table; a text containing a
    character whose normal form depends on its neighbours (combining marks, Hangul jamo,
    capital sigma) takes the reference path instead.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    out = text.translate(_CHAR_TABLES[spec.lowercase])
    if _UNSAFE in out:
        return normalize(text, spec)
    # Step 4's collapse and strip; the common text has no run of spaces and no edge space.
    return _collapse(out)[: spec.max_chars]


#: Joins texts for :func:`normalize_many`: a private-use character, which every step of
#: the text spec leaves alone and which neither composes nor lowercases with a neighbour.
_JOIN = "\ue000"


def _collapse(text: str) -> str:
    """Step 4's collapse of space runs and strip of both ends."""
    if "  " in text or text.startswith(" ") or text.endswith(" "):
        return collapse_spaces(text)
    return text


def normalize_many(texts: Sequence[str], spec: TextSpec = DEFAULT_SPEC) -> list[str]:
    """``[fast_normalize(t, spec) for t in texts]`` with one ``str.translate`` for all texts."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
    joined = _JOIN.join(texts)
    if joined.count(_JOIN) != len(texts) - 1:  # a text contains the joiner itself
        return [fast_normalize(t, spec) for t in texts]
    out = joined.translate(_CHAR_TABLES[spec.lowercase])
    pieces = out.split(_JOIN)
    unsafe = [i for i, piece in enumerate(pieces) if _UNSAFE in piece] if _UNSAFE in out else []
    if "  " in out or " " + _JOIN in out or _JOIN + " " in out or out[:1] == " " or out[-1:] == " ":
        pieces = list(map(_collapse, pieces))
    if max(map(len, pieces), default=0) > spec.max_chars:
        pieces = [p[: spec.max_chars] for p in pieces]
    for i in unsafe:  # after collapse and truncation, which must not touch these
        pieces[i] = normalize(texts[i], spec)
    return pieces


class NgramSlicer:
    """Step 6 of the text spec for one :class:`TextSpec`: normalised text -> its n-grams.

    The n-grams of a unit of length ``L`` are taken by one ``operator.itemgetter`` over
    precomputed slices (one C call instead of a comprehension per order), cached per ``L``.
    The result has the multiset of :func:`foundry.textspec.char_ngrams`, grouped
    differently, which no consumer depends on: the features are counts.
    """

    def __init__(self, spec: TextSpec) -> None:
        self.spec = spec
        self._getters: dict[int, Any] = {}

    def _getter(self, length: int):
        spec = self.spec
        # With padding, the first and last characters of a unit are the padding spaces,
        # never a unigram; without padding, unigrams are taken apart (minus " ").
        first, last = (1, length - 1) if spec.word_boundary_padding else (0, 0)
        slices = [slice(i, i + 1) for i in range(first, last)] if spec.min_n == 1 else []
        for n in range(max(2, spec.min_n), spec.max_n + 1):
            slices += [slice(i, i + n) for i in range(length - n + 1)]
        if len(slices) > 1:
            getter = operator.itemgetter(*slices)
        elif slices:
            only = slices[0]
            getter = lambda unit: (unit[only],)  # noqa: E731 - itemgetter(x) is not a tuple
        else:
            getter = lambda unit: ()  # noqa: E731
        self._getters[length] = getter
        return getter

    def __call__(self, normalized: str) -> tuple[str, ...] | list[str]:
        if not normalized:
            return ()
        getters = self._getters
        if not self.spec.word_boundary_padding:
            length = len(normalized)
            grams = (getters.get(length) or self._getter(length))(normalized)
            if self.spec.min_n == 1:
                grams = (*normalized.replace(" ", ""), *grams)
            return grams
        if " " not in normalized:
            length = len(normalized) + 2
            return (getters.get(length) or self._getter(length))(f" {normalized} ")
        grams: list[str] = []
        for word in normalized.split(" "):
            length = len(word) + 2
            grams += (getters.get(length) or self._getter(length))(f" {word} ")
        return grams


_SLICERS: dict[TextSpec, NgramSlicer] = {}


def ngram_list(normalized: str, spec: TextSpec = DEFAULT_SPEC) -> tuple[str, ...] | list[str]:
    """The n-grams of a normalised text: the multiset of :func:`textspec.char_ngrams`."""
    slicer = _SLICERS.get(spec) or _SLICERS.setdefault(spec, NgramSlicer(spec))
    return slicer(normalized)


# -- artifact parsing ----------------------------------------------------------------------
# The .bin rules (F1-F2, B1-B14) are in foundry.artifacts; the pair (P1) and .onnx rules
# (O1-O3) are applied below, on the graph's declared signature, for every backend.


def parse_preprocessor(data: bytes, path: Path, task: str):
    """Check (integrity) and decode a ``.bin``, and validate it for ``task`` (rules B1-B14)."""
    return load_preprocessor(data, path, task)


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
_ATTR_NAME, _ATTR_I, _ATTR_S, _ATTR_FLOATS, _ATTR_INTS = 1, 3, 4, 7, 8
_TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_INT32_DATA, _TENSOR_INT64_DATA = 2, 4, 5, 7
_TENSOR_NAME, _TENSOR_RAW_DATA = 8, 9
_VALUE_INFO_NAME, _VALUE_INFO_TYPE = 1, 2
_GRAPH_OUTPUT = 12
_TYPE_TENSOR, _TENSOR_TYPE_ELEM, _TENSOR_TYPE_SHAPE, _SHAPE_DIM = 1, 1, 2, 1
_DIM_VALUE, _DIM_PARAM = 1, 2
#: ONNX TensorProto.DataType FLOAT.
_ONNX_FLOAT = 1


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


_TENSOR_DTYPES = {1: "<f4", 3: "i1", 6: "<i4", 7: "<i8", 11: "<f8"}


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
    else:  # int8 values are stored widened in int32_data
        values = np.asarray(_ints(fields, _TENSOR_INT64_DATA if dtype == "<i8"
                                  else _TENSOR_INT32_DATA), dtype=dtype)
    return name, values


def _int8_softmax_graph(nodes: list[dict[str, Any]], tensors: dict[str, np.ndarray | None],
                        features: str) -> LinearGraph | None:
    """Match the int8 graph of :func:`foundry.quantized.quantized_onnx`::

        W = Mul(Cast(W_q int8 [D, K], to=FLOAT), scale [1, K])
        probabilities = Softmax(Add(MatMul(features, W), b [K]), axis=-1 or 1)
        label = ArgMax(probabilities, axis=1, keepdims=0)

    and return it dequantised (``W.T`` as the ``K x D`` coefficients, post ``SOFTMAX``).
    """
    if len(nodes) != 6:
        return None
    by_output = {n["output"][0]: n for n in nodes if len(n["output"]) == 1}
    ops = [(n["op_type"], n["domain"]) for n in nodes]
    if len(by_output) != 6 or any(d not in ("", "ai.onnx") for _, d in ops):
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
    w_q = tensors.get(cast["input"][0])
    if w_q is None or w_q.dtype != np.int8:
        return None
    k = len(b)
    if k < 2 or scale.size != k or w_q.size % k:
        return None
    weights = w_q.reshape(-1, k).astype(np.float32) * scale.reshape(1, k).astype(np.float32)
    return LinearGraph(np.ascontiguousarray(weights.T), b.astype(np.float32), "SOFTMAX", False)


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
        found = producer.get(output)
        if found is None or found["op_type"] != op or len(found["input"]) != n_inputs:
            raise LookupError(output)
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
    :func:`_int8_softmax_graph`), dequantised here once.

    Raises
    ------
    ValueError
        If the bytes are not a well-formed protobuf message.
    """
    model = _proto_fields(memoryview(onnx_data))
    if len(model.get(_MODEL_GRAPH, [])) != 1:
        return None
    graph = _proto_fields(model[_MODEL_GRAPH][0])
    nodes = [_node(_proto_fields(raw)) for raw in graph.get(_GRAPH_NODE, [])]
    inputs = [_strings(_proto_fields(raw), _VALUE_INFO_NAME) for raw in graph.get(_GRAPH_INPUT, [])]
    tensors = dict(_tensor(_proto_fields(raw)) for raw in graph.get(_GRAPH_INITIALIZER, []))
    if not nodes or len(inputs) != 1 or _GRAPH_SPARSE_INITIALIZER in graph:
        return None
    clf = nodes[0]
    if (clf["op_type"], clf["domain"]) != ("LinearClassifier", "ai.onnx.ml"):
        return _int8_softmax_graph(nodes, tensors, inputs[0][0] if inputs[0] else "")
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


def _logistic_array(x: np.ndarray) -> np.ndarray:
    # exp of -|x| never overflows; 1 - v for negative x, as ONNX Runtime does.
    v = 1.0 / (1.0 + np.exp(-np.abs(x)))
    return np.where(x < 0, 1.0 - v, v)


def _calibrate(scores: np.ndarray, calibration: SigmoidCalibration) -> np.ndarray:
    """Probabilities ``[N, 2]`` of raw scores under a :class:`SigmoidCalibration`."""
    p1 = _logistic_array(-(calibration.a * scores[:, calibration.column] + calibration.b))
    return np.stack([1.0 - p1, p1], axis=1)


def _post_transform(scores: np.ndarray, post: str, l1: bool) -> np.ndarray:
    """ONNX Runtime's ``LinearClassifier`` post transform and ``Normalizer`` on rows ``[N, K]``."""
    if post == "LOGISTIC":
        # exp of -|s| never overflows; 1 - v for negative scores, as ONNX Runtime does.
        v = 1.0 / (1.0 + np.exp(-np.abs(scores)))
        scores = np.where(scores < 0, 1.0 - v, v)
    elif post == "SOFTMAX":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = e / e.sum(axis=1, keepdims=True)
    if l1:
        total = np.abs(scores).sum(axis=1, keepdims=True)
        scores = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
    return scores


#: From this many texts on, a batch is scored by :class:`_VectorScorer`.
VECTOR_MIN_BATCH = 24
#: ``np.add.reduce``, bound once (one attribute look-up less per call).
_ADD = np.add.reduce

_U21, _U42 = np.uint64(21), np.uint64(42)
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: multiplicative hashing


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _gram_keys(grams: Sequence[str]) -> np.ndarray:
    """One uint64 per n-gram of at most 3 characters: 21 bits per ``code point + 1``."""
    lengths = np.fromiter(map(len, grams), dtype=np.int64, count=len(grams))
    codes = np.concatenate((_code_points("".join(grams)).astype(np.uint64) + 1,
                            np.zeros(2, dtype=np.uint64)))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    keys = codes[starts] << _U42
    keys |= np.where(lengths > 1, codes[starts + 1] << _U21, np.uint64(0))
    keys |= np.where(lengths > 2, codes[starts + 2], np.uint64(0))
    return keys


class _VectorScorer:
    """The occurrence sums of :meth:`_NumpyHead.scores` for a whole batch, in NumPy.

    The texts are joined (``\\x00``, which normalisation removes, separates them; with
    padding each text is framed by spaces) and read as code points; every n-gram of the
    joined text becomes a uint64 key (``code point + 1`` in 21-bit fields, so n <= 3) and is
    looked up in an open-addressing hash table of the vocabulary's keys. N-grams across a
    separator, or across a space inside a word when padding, are never in the vocabulary:
    the analyzer cannot produce them, so they simply miss. Sums per text are
    ``np.bincount``; n-grams repeated within a text are found by sorting ``row * D + col``
    and corrected as in :meth:`_NumpyHead._correct_repeats`.
    """

    max_n = 3

    def __init__(self, head: _NumpyHead) -> None:
        self.head = head
        self.spec = head.spec
        keys = _gram_keys(head.vocabulary)
        bits = max(4, int(math.ceil(math.log2(4 * len(keys)))))  # load factor <= 1/4
        self._mask = np.uint64((1 << bits) - 1)
        self._shift = np.uint64(64 - bits)
        self._keys = np.zeros(1 << bits, dtype=np.uint64)  # 0 = empty (no key is 0)
        self._cols = np.full(1 << bits, -1, dtype=np.int64)
        self._insert(keys)

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _FIBONACCI) >> self._shift).astype(np.int64)

    def _insert(self, keys: np.ndarray) -> None:
        """Linear probing, in rounds: per free slot, the first claimant wins, the rest move on."""
        pending = np.arange(len(keys))
        slots = self._home(keys)
        mask = int(self._mask)
        while len(pending):
            free = self._keys[slots[pending]] == 0
            claimants = pending[free]
            _, first = np.unique(slots[claimants], return_index=True)
            winners = claimants[first]
            self._keys[slots[winners]] = keys[winners]
            self._cols[slots[winners]] = winners
            placed = np.zeros(len(keys), dtype=bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            slots[pending] = (slots[pending] + 1) & mask

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Column of each key, -1 when not in the vocabulary."""
        slots = self._home(keys)
        found = self._keys[slots]
        cols = np.where(found == keys, self._cols[slots], -1)
        # Collisions (an occupied slot holding another key) probe on; few at load <= 1/4.
        pending = np.flatnonzero((found != keys) & (found != 0))
        mask = int(self._mask)
        while len(pending):
            slots[pending] = (slots[pending] + 1) & mask
            found = self._keys[slots[pending]]
            hit = found == keys[pending]
            cols[pending[hit]] = self._cols[slots[pending[hit]]]
            pending = pending[~hit & (found != 0)]
        return cols

    def _hits(self, normalized: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` of every in-vocabulary n-gram occurrence of the texts."""
        spec = self.spec
        joined = (" " + " \x00 ".join(normalized) + " " if spec.word_boundary_padding
                  else "\x00".join(normalized))
        codes = _code_points(joined)
        rows = np.cumsum(codes == 0)
        codes = codes.astype(np.uint64) + 1
        keys, key_rows = [], []
        gram = codes << _U42
        for n in range(1, spec.max_n + 1):
            if n > 1:  # extend the (n-1)-grams by one character
                gram = gram[:-1] | (codes[n - 1:] << (_U21 * np.uint64(3 - n)))
            if n >= spec.min_n:
                keys.append(gram)
                key_rows.append(rows[: len(gram)])
        cols = self.lookup(np.concatenate(keys))
        hit = cols >= 0
        return np.concatenate(key_rows)[hit], cols[hit]

    def sums(self, normalized: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(sums [N, K'], norm2 [N])``: tf-weighted sums of the score rows and of idf^2."""
        head, n = self.head, len(normalized)
        rows, cols = self._hits(normalized)
        sums = np.stack([np.bincount(rows, weights=w[cols], minlength=n) for w in head.rows],
                        axis=1)
        norm2 = np.bincount(rows, weights=head.idf2_array[cols], minlength=n)
        d = len(head.idf2_array)
        pairs = np.sort(rows * d + cols)
        starts = np.flatnonzero(np.concatenate(([True], pairs[1:] != pairs[:-1])))
        counts = np.diff(np.append(starts, len(pairs)))
        repeated = counts > 1
        if repeated.any():
            pair, count = pairs[starts[repeated]], counts[repeated]
            r, c = pair // d, pair % d
            norm2 += np.bincount(r, weights=head.dtf2[count] * head.idf2_array[c], minlength=n)
            for k, w in enumerate(head.rows):
                sums[:, k] += np.bincount(r, weights=head.dtf[count] * w[c], minlength=n)
        return sums, norm2


class _NumpyHead:
    """The linear classifier fused with the tf-idf weighting, per n-gram.

    For a text with distinct in-vocabulary n-grams ``g`` seen ``c_g`` times, the ONNX input
    row is ``x_g = t_g * idf_g / ||t * idf||`` with ``t_g = 1 + ln c_g`` (sublinear) or
    ``c_g``; the class scores are ``s_k = b_k + sum_g x_g W[k, col_g]``. The tables hold
    ``idf_g * W[k, col_g]`` and ``idf_g**2`` keyed by the n-gram string, so a score is sums
    over the text's n-grams, then one division by the norm.
    """

    name = "numpy"

    def __init__(self, graph: LinearGraph, vocabulary: Sequence[str], idf: np.ndarray,
                 sublinear_tf: bool, l2: bool, spec: TextSpec) -> None:
        self.graph = graph
        self.vocabulary = vocabulary
        self.spec = spec
        w = graph.coefficients.astype(np.float64) * idf  # [K, D]
        b = graph.intercepts.astype(np.float64)
        # A binary logistic regression is exported as rows (-w, w), intercepts (-b, b):
        # one score then suffices.
        self.antisymmetric = (
            len(b) == 2 and np.array_equal(w[0], -w[1]) and b[0] == -b[1]
        )
        rows = w[1:] if self.antisymmetric else w
        self.weights = [dict(zip(vocabulary, row.tolist(), strict=True)) for row in rows]
        self.idf2 = dict(zip(vocabulary, (idf * idf).tolist(), strict=True))
        # With one score row, weight and idf**2 travel as one complex number, so a single
        # C-level sum yields both the score and the squared norm.
        self.packed = (
            dict(zip(vocabulary, (rows[0] + 1j * idf * idf).tolist(), strict=True))
            if len(rows) == 1 else None
        )
        self._in_vocabulary = self.idf2.__contains__
        self._packed_item = self.packed.__getitem__ if self.packed is not None else None
        self.intercepts = b.tolist()
        self.sublinear_tf = sublinear_tf
        self.l2 = l2
        self.rows = rows
        self.idf2_array = idf * idf
        # For every possible count c (an n-gram occurs at most max_chars + 2 times), what
        # its tf t(c) changes from the occurrence sums: t - c and t^2 - c.
        counts = np.arange(spec.max_chars + 3, dtype=np.float64)
        with np.errstate(divide="ignore"):
            tf = (1.0 + np.log(counts)) if sublinear_tf else counts
        self.dtf, self.dtf2 = tf - counts, tf * tf - counts
        self._dtf = self.dtf.tolist().__getitem__
        self._dtf2 = self.dtf2.tolist().__getitem__
        self._vector: _VectorScorer | None = None
        self._vector_lock = threading.Lock()
        # Three or more score rows: per-class dict sums cost K look-ups per n-gram; gather
        # the columns instead (:meth:`class_scores`): [D, K + 1] = idf_g * W[:, g], idf_g^2.
        self.columns: dict[str, int] | None = None
        if len(rows) >= 3:
            self.columns = dict(zip(vocabulary, range(len(vocabulary)), strict=True))
            self._gather = np.ascontiguousarray(np.column_stack((rows.T, self.idf2_array)))
            self._tf_item = (self.dtf + np.arange(len(self.dtf))).tolist().__getitem__
            self._bias = np.asarray(self.intercepts, dtype=np.float64)

    def class_scores(self, cols: list[int]) -> np.ndarray:
        """Class scores ``[K]`` (before the post transform) of a text given as the columns of
        its in-vocabulary n-grams (with repeats), for a head of three or more score rows:
        one NumPy gather-and-sum of the ``[idf_g * W[:, g], idf_g^2]`` rows, tf by
        ``np.unique`` for repeated n-grams."""
        if not cols:
            return self._bias.copy()
        k = len(self._bias)
        counts: dict[int, int] = {}
        _count_elements(counts, cols)
        if len(counts) == len(cols):  # every tf is 1
            both = _ADD(self._gather.take(cols, axis=0), axis=0)
            norm2 = float(both[k])
        else:  # a dict counts faster than np.unique sorts, and take() beats fancy indexing
            unique = list(counts)
            tf = np.array(list(map(self._tf_item, counts.values())))
            both = tf @ self._gather.take(unique, axis=0)
            norm2 = float((tf * tf) @ self.idf2_array.take(unique))
        scores = both[:k]
        if self.l2 and norm2 > 0.0:
            scores *= 1.0 / math.sqrt(norm2)
        scores += self._bias
        return scores

    def scores(self, grams: Sequence[str]) -> list[float]:
        """Class scores (before the post transform) of one text's n-grams (with repeats)."""
        if self.columns is not None:
            columns = self.columns
            return self.class_scores(
                list(map(columns.__getitem__, filter(columns.__contains__, grams)))).tolist()
        # Every loop runs in C: filter to the in-vocabulary n-grams, then sum(map()) over the
        # tables. That counts an n-gram seen c times c times instead of tf(c) times;
        # repeats (few) are corrected afterwards.
        hits = list(filter(self._in_vocabulary, grams))
        if self._packed_item is not None:
            both = sum(map(self._packed_item, hits), 0j)
            norm2, sums = both.imag, [both.real]
        else:
            norm2 = sum(map(self.idf2.__getitem__, hits))
            sums = [sum(map(d.__getitem__, hits)) for d in self.weights]
        if len(set(hits)) != len(hits):
            norm2 = self._correct_repeats(hits, norm2, sums)
        if self.l2 and norm2 > 0.0:
            inv = 1.0 / math.sqrt(norm2)
            sums = [x * inv for x in sums]
        if self.antisymmetric:
            z = sums[0] + self.intercepts[1]
            return [-z, z]
        return [x + b for x, b in zip(sums, self.intercepts, strict=True)]

    def _correct_repeats(self, hits: list[str], norm2: float, sums: list[float]) -> float:
        """Turn the occurrence sums of :meth:`scores` into tf sums; ``sums`` is updated in place.

        An n-gram seen ``c > 1`` times added ``c * v`` to a score and ``c * idf^2`` to the
        squared norm, where ``t * v`` and ``t^2 * idf^2`` were due (``t`` its tf): add
        ``(t - c) * v`` and ``(t^2 - c) * idf^2``. Returns the corrected squared norm.
        """
        counts: dict[str, int] = {}
        _count_elements(counts, hits)
        repeated = list(compress(counts, map(_MORE_THAN_ONE, counts.values())))
        seen = list(map(counts.__getitem__, repeated))
        norm2 += sum(map(operator.mul, map(self._dtf2, seen), map(self.idf2.__getitem__, repeated)))
        dtf = list(map(self._dtf, seen))
        for k, d in enumerate(self.weights):
            sums[k] += sum(map(operator.mul, dtf, map(d.__getitem__, repeated)))
        return norm2

    def scores_many(self, normalized: list[str], slicer: NgramSlicer) -> np.ndarray:
        """Class scores ``[N, K]`` of normalised texts; vectorised for larger batches."""
        if len(normalized) < VECTOR_MIN_BATCH or self.spec.max_n > _VectorScorer.max_n:
            return np.array(list(map(self.scores, map(slicer, normalized))), dtype=np.float64)
        sums, norm2 = self._vector_scorer().sums(normalized)
        if self.l2:
            positive = norm2 > 0.0
            sums *= np.where(positive, 1.0 / np.sqrt(np.where(positive, norm2, 1.0)), 1.0)[:, None]
        if self.antisymmetric:
            z = sums[:, 0] + self.intercepts[1]
            return np.stack([-z, z], axis=1)
        return sums + np.asarray(self.intercepts)

    def _vector_scorer(self) -> _VectorScorer:
        # Built on the first large batch, not at load: single-query users never pay for it.
        with self._vector_lock:
            if self._vector is None:
                self._vector = _VectorScorer(self)
            return self._vector

    def finish(self, scores: np.ndarray) -> np.ndarray:
        """Post transform (and normaliser or calibration) of score rows ``[N, K]``, float64."""
        graph = self.graph
        if graph.calibration is not None:
            return _calibrate(scores, graph.calibration)
        return _post_transform(scores, graph.post_transform, graph.l1_normalize)

    def finish_one(self, scores: list[float]) -> list[float]:
        """:meth:`finish` for one row, in plain Python (a NumPy call costs more than this)."""
        post = self.graph.post_transform
        calibration = self.graph.calibration
        if calibration is not None:
            p1 = _logistic(-(calibration.a * scores[calibration.column] + calibration.b))
            return [1.0 - p1, p1]
        if post == "LOGISTIC":
            out = [_logistic(s) for s in scores]
        elif post == "SOFTMAX":
            top = max(scores)
            e = [math.exp(s - top) for s in scores]
            total = sum(e)
            out = [x / total for x in e]
        else:
            out = scores
        if self.graph.l1_normalize:
            total = sum(map(abs, out))
            out = [x / total for x in out] if total > 0 else [0.0] * len(out)
        return out


def _logistic(s: float) -> float:
    v = 1.0 / (1.0 + math.exp(-abs(s)))
    return 1.0 - v if s < 0 else v


class _GramAutomaton:
    """The occurrence sums of the in-vocabulary n-grams of a text in one pass over its characters.

    An Aho-Corasick automaton over the vocabulary (with ``n <= max_n``, a state is the
    longest suffix of the text read so far, at most ``max_n - 1`` characters, that is a
    proper prefix of a vocabulary n-gram). Each state is a dict ``char -> (next state,
    sum of the values of the vocabulary n-grams ending at that character)``; a character
    missing from a state's dict behaves as from the empty state (:attr:`root`), which is
    exact because a state's dict holds every transition whose result differs from the root's.
    So no n-gram string is built: one dict look-up and one addition per character. The values
    are anything ``+`` adds, with ``zero`` its identity: complex numbers (the binary path), or
    tuples of column indices, whose "sum" lists the columns of the n-grams ending there.
    """

    def __init__(self, values: dict[str, Any], spec: TextSpec, zero: Any = 0j) -> None:
        grams = {g: v for g, v in values.items()
                 if spec.min_n <= len(g) <= spec.max_n and g != " "}
        prefixes = {g[:k] for g in grams for k in range(1, len(g))}
        nodes: dict[str, dict] = {s: {} for s in prefixes}
        root: dict = {}
        self.root = root
        self.miss = (root, zero)
        follow: dict[str, set[str]] = {}
        for q in (*grams, *prefixes):
            if len(q) > 1:
                follow.setdefault(q[:-1], set()).add(q[-1])
        for c in {q for q in (*grams, *prefixes) if len(q) == 1}:
            root[c] = (nodes.get(c, root), grams.get(c, zero))
        for s in sorted(prefixes, key=len):
            node = nodes[s]
            # The longest proper suffix of s that is a state: the rest of s cannot matter.
            parent = next(filter(None, map(nodes.get, (s[k:] for k in range(1, len(s))))), None)
            if parent:
                node.update(parent)
            for c in follow.get(s, ()):
                t = s + c
                base = (parent.get(c) if parent else None) or root.get(c, self.miss)
                node[c] = (nodes.get(t, base[0]), base[1] + grams.get(t, zero))
        self.start = root.get(" ", self.miss) if spec.word_boundary_padding else None


#: Texts up to this many characters (normalised) are checked for the automaton's fast path.
_AUTOMATON_MAX_CHARS = 24


def _binary_predictor(head: _NumpyHead, labels: list[str], threshold: float,
                      slicer: NgramSlicer, familiar: Callable[[str], bool]
                      ) -> Callable[[str], Prediction] | None:
    """One-text prediction for the default export, fused into one function.

    The same computation as ``_answer(finish_one(scores(slicer(fast_normalize(text)))))``
    (``familiar`` is the unfamiliarity gate, asked only of answers above the threshold)
    for a binary model with rows ``(-w, w)`` under LOGISTIC or a sigmoid calibration, with
    every table bound to a local. When no character of the normalised text occurs twice,
    no n-gram does (every tf is 1) and the sums come from a :class:`_GramAutomaton`: one
    dict look-up per character instead of building, hashing and looking up every n-gram
    string (about half the time of a short text). Otherwise the n-grams are sliced, looked
    up and their repeats corrected as in :meth:`_NumpyHead.scores`. None for any other model.
    """
    graph, spec = head.graph, head.spec
    logistic = graph.post_transform == "LOGISTIC" and graph.calibration is None
    if not (head.antisymmetric and head.l2 and not graph.l1_normalize
            and (logistic or graph.calibration is not None)):
        return None
    table, max_chars = _CHAR_TABLES[spec.lowercase], spec.max_chars
    automaton = _GramAutomaton(head.packed, spec)
    root, miss, start = automaton.root, automaton.miss, automaton.start
    root_get = root.get
    padded = spec.word_boundary_padding
    in_vocabulary, packed = head._in_vocabulary, head._packed_item
    correct_repeats, sqrt = head._correct_repeats, math.sqrt
    bias = head.intercepts[1]
    calibration = graph.calibration or SigmoidCalibration(1, -1.0, 0.0)  # unused if logistic
    sign, a, b = (1.0 if calibration.column == 1 else -1.0), calibration.a, calibration.b
    label0, label1 = names = tuple(labels)

    def predict(text: str) -> Prediction:
        """Classify one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        out = text.translate(table)
        out = normalize(text, spec) if _UNSAFE in out else _collapse(out)[:max_chars]
        # A long text nearly always repeats a character: skip the check there.
        if len(out) <= _AUTOMATON_MAX_CHARS and len(set(chars := tuple(out))) == len(chars):
            # No character occurs twice, so no n-gram does: tf = count = 1, and the
            # occurrence sums of the automaton are the answer.
            total = 0j
            for unit in (out.split(" ") if padded and " " in out else (chars,) if out else ()):
                if start is not None:
                    node, total = start[0], total + start[1]
                else:
                    node = root
                for c in unit:
                    node, v = node.get(c) or root_get(c, miss)
                    total += v
                if padded:
                    total += (node.get(" ") or root_get(" ", miss))[1]
            z, norm2 = total.real, total.imag
        else:  # as _NumpyHead.scores: occurrence sums, then the repeats corrected
            hits = list(filter(in_vocabulary, slicer(out)))
            both = sum(map(packed, hits), 0j)
            sums, norm2 = [both.real], both.imag
            if len(set(hits)) != len(hits):
                norm2 = correct_repeats(hits, norm2, sums)
            z = sums[0]
        if norm2 > 0.0:
            z /= sqrt(norm2)
        z += bias
        if logistic:
            p0, p1 = _logistic(-z), _logistic(z)
        else:
            p1 = _logistic(-(a * sign * z + b))
            p0 = 1.0 - p1
        label, top = (label1, p1) if p1 > p0 else (label0, p0)
        prediction = _new_object(Prediction)
        _set_attribute(prediction, "__dict__", {
            "label": label, "probabilities": _probabilities(names, [p0, p1]),
            "confident": top >= threshold and familiar(out), "score": top})
        return prediction

    return predict


def _multiclass_predictor(head: _NumpyHead, labels: list[str], threshold: float,
                          slicer: NgramSlicer, familiar: Callable[[str], bool]
                          ) -> Callable[[str], Prediction] | None:
    """One-text prediction for a model of three or more labels, fused into one function.

    The same computation as ``_answer(finish_one(scores(slicer(fast_normalize(text)))))``
    for a graph with one score row per class: a :class:`_GramAutomaton` whose values are
    1-tuples of columns lists the columns of the text's in-vocabulary n-grams (repeats
    included) in one pass over its characters, without building an n-gram string (a third of
    the time of an English text's slicing and look-ups), and :meth:`_NumpyHead.class_scores`
    gives every class score at once; the softmax
    (the int8 and multinomial exports) runs on the score vector, without the max
    subtraction when a load-time bound proves that exp cannot overflow. None for a
    calibrated or binary model.
    """
    graph, spec = head.graph, head.spec
    if head.columns is None or graph.calibration is not None:
        return None
    table, max_chars = _CHAR_TABLES[spec.lowercase], spec.max_chars
    automaton = _GramAutomaton({g: (c,) for g, c in head.columns.items()}, spec, ())
    root_get, miss, start = automaton.root.get, automaton.miss, automaton.start
    padded = spec.word_boundary_padding
    class_scores = head.class_scores
    softmax = graph.post_transform == "SOFTMAX" and not graph.l1_normalize
    # With L2-normalised non-negative features a class score is at most ||W_k|| + |b_k|:
    # when that bound is far from exp's range, the softmax needs no max subtraction.
    idf = np.sqrt(np.where(head.idf2_array > 0, head.idf2_array, 1.0))
    bound = float(np.max(np.linalg.norm(head.rows / idf, axis=1) + np.abs(head._bias))) \
        if head.l2 else math.inf
    plain_exp = softmax and bound < 600.0
    finish, exp = head.finish, np.exp
    names = tuple(labels)

    def predict(text: str) -> Prediction:
        """Classify one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        out = text.translate(table)
        out = normalize(text, spec) if _UNSAFE in out else _collapse(out)[:max_chars]
        cols: list[int] = []
        for unit in (out.split(" ") if padded else (out,)) if out else ():
            node, found = start or miss
            cols += found
            for c in unit:
                node, found = node.get(c) or root_get(c, miss)
                cols += found
            if padded:
                cols += (node.get(" ") or root_get(" ", miss))[1]
        scores = class_scores(cols)
        if plain_exp:
            scores = exp(scores)
            scores /= scores.sum()
        elif softmax:
            scores = exp(scores - scores.max())
            scores /= scores.sum()
        else:
            scores = finish(scores[None, :])[0]
        best = int(scores.argmax())
        top = scores.item(best)
        prediction = _new_object(Prediction)
        _set_attribute(prediction, "__dict__", {
            "label": labels[best], "probabilities": _probabilities(names, scores),
            "confident": top >= threshold and familiar(out), "score": top})
        return prediction

    return predict


class _OrtHead:
    """ONNX Runtime session configured for one short text at a time (the reference backend)."""

    name = "onnxruntime"
    #: Upper bound on the dense float32 feature block fed to one ``run`` call, in bytes.
    block_bytes = 4 << 20

    def __init__(self, session, n_features: int) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        self.n_features = n_features
        # One preallocated row for single queries, zeroed again after each run.
        self._row = np.zeros((1, n_features), dtype=np.float32)
        self._lock = threading.Lock()

    def proba_one(self, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
        with self._lock:
            row = self._row
            row[0, idx] = values
            try:
                (proba,) = self.session.run(["probabilities"], {self.input: row})
            finally:
                row[0, idx] = 0.0
        return proba[0]

    def proba_dense(self, features: np.ndarray) -> np.ndarray:
        (proba,) = self.session.run(["probabilities"], {self.input: features})
        return proba


def _ort_session(onnx_data: bytes, onnx_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Micro-models answer short texts: threads and spinning cost more than they save.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            onnx_data, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise rule_error(onnx_path, f"ONNX Runtime cannot load it: {exc}", "O1") from None


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


class MicroModel:
    """A loaded micro-model. Use :meth:`load`; then :meth:`predict` / :meth:`predict_many`."""

    def __init__(self, task: str, preprocessor, session, paths: dict[str, Path], *,
                 linear: LinearGraph | None = None, native: Any = None) -> None:
        """Build from a parsed ``.bin`` and either an ONNX Runtime session or a linear graph.

        ``session`` is used when ``linear`` is None (backend ``"onnxruntime"``); with
        ``linear``, the numpy backend runs and ``session`` may be None. A ``native`` model
        (:mod:`foundry.native`) answers every query instead.
        """
        self.task = task
        #: SHA-256 (hex) of the ``.bin`` file loaded (set by :meth:`load`).
        self.preprocessor_sha256 = ""
        self.labels: list[str] = list(preprocessor.labels)
        self._names = tuple(self.labels)  # the labels of every answer's Probabilities
        self.threshold: float = float(preprocessor.threshold)
        #: The label answered when the answer is not confident (``.bin`` field
        #: ``out_of_scope``), or None: then the top label is answered either way.
        self.out_of_scope: str | None = preprocessor.out_of_scope or None
        #: The reflex rules of the ``.bin`` (format 4), tried before the model.
        self.reflex: Reflex = reflex_of(preprocessor)
        self.preprocessor = preprocessor
        self.paths = paths
        self.spec = TextSpec(
            max_chars=preprocessor.normalizer.max_chars,
            min_n=preprocessor.analyzer.min_n,
            max_n=preprocessor.analyzer.max_n,
            word_boundary_padding=preprocessor.analyzer.word_boundary_padding,
            lowercase=preprocessor.normalizer.lowercase,
        )
        vocabulary = list(preprocessor.vocabulary)
        self.vocabulary: dict[str, int] = dict(zip(vocabulary, range(len(vocabulary)), strict=True))
        self.n_features = len(self.vocabulary)
        self.idf = (
            np.asarray(preprocessor.idf, dtype=np.float64)
            if preprocessor.weighting.use_idf
            else np.ones(self.n_features)
        )
        self.sublinear_tf = preprocessor.weighting.sublinear_tf
        self.l2 = preprocessor.weighting.norm == 1
        self._ngrams = NgramSlicer(self.spec)
        gate = preprocessor.familiarity
        #: The unfamiliarity gate of ``confident`` (section 5 of docs/preprocessor-spec.md).
        self.familiarity = Familiarity(int(gate.min_order), float(gate.max_unfamiliar))
        # Vocabulary n-grams long enough to count: looking a text's n-grams up in this set
        # counts the known ones, shorter n-grams simply miss.
        self._counted = frozenset(g for g in vocabulary if len(g) >= gate.min_order)
        self._head: _NumpyHead | _OrtHead | Any
        if native is not None:
            self._head = native
        elif linear is not None:
            self._head = _NumpyHead(
                linear, vocabulary, self.idf, self.sublinear_tf, self.l2, self.spec
            )
        else:
            self._head = _OrtHead(session, self.n_features)
        self._fused_predict = (
            _binary_predictor(self._head, self.labels, self.threshold, self._ngrams,
                              self._familiar)
            or _multiclass_predictor(self._head, self.labels, self.threshold, self._ngrams,
                                     self._familiar)
            if isinstance(self._head, _NumpyHead) else None
        )
        if self._fused_predict is not None and not self.reflex and self.out_of_scope is None:
            # ``model.predict`` is then the fused function itself: one call frame less.
            self.predict = self._fused_predict
        if native is not None:  # the native model's own methods, no Python frame between
            # (the native model applies the reflex rules itself)
            self.predict, self.predict_many = native.predict, native.predict_many
            self.predict_proba = native.predict_proba
        #: Per rule: its answer (label, probabilities 1/0, confident, score 1, rule name).
        self._rule_answers = [
            _prediction(self.labels[r.label],
                        _probabilities(self._names,
                                       [float(k == r.label) for k in range(len(self.labels))]),
                        True, 1.0, r.name) for r in self.reflex.rules]

    @property
    def backend(self) -> str:
        """``"native"``, ``"numpy"`` or ``"onnxruntime"``: what computes the probabilities."""
        return self._head.name

    @classmethod
    def load(cls, task: str, models_dir: str | Path = "models", *,
             backend: str = "auto") -> MicroModel:
        """Load and validate ``<task>_classifier.onnx`` + ``<task>_preprocessor.bin``.

        Parameters
        ----------
        backend : {"auto", "numpy", "onnxruntime", "native"}
            ``"auto"`` uses the native fast path when it is built (:mod:`foundry.native`;
            ``FOUNDRY_RUNTIME=python|native`` forces a side), else the numpy backend when the
            graph is one ``LinearClassifier`` (the default trainers' export), else ONNX Runtime.

        Raises
        ------
        ArtifactError
            If the pair breaks a rule of ``docs/preprocessor-spec.md`` (section 1: a file
            missing, not a regular file or too large, a damaged or invalid ``.bin``, a
            mismatched pair, an ``.onnx`` whose signature does not fit the ``.bin``); the
            message names the file and ends with the rule's id. Also when
            ``backend="numpy"`` is asked of a graph it cannot run.
        ValueError
            For an unknown ``backend``.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        models_dir = Path(models_dir)
        onnx_path = models_dir / f"{task}_classifier.onnx"
        bin_path = models_dir / f"{task}_preprocessor.bin"
        pre, onnx_data, bin_sha256 = read_pair(task, onnx_path, bin_path)
        try:
            signature = graph_signature(onnx_data)
        except Exception as exc:  # ValueError of the wire reader, decoding errors
            raise rule_error(onnx_path, f"not a valid ONNX model: {exc}", "O1") from None
        check_signature(signature, pre, onnx_path, bin_path)
        paths = {"onnx": onnx_path, "bin": bin_path}
        from foundry import native

        native_model = native.load(backend, task, pre, onnx_data, bin_path, onnx_path,
                                   Prediction, Probabilities)
        model: MicroModel
        if native_model is not None:
            model = cls(task, pre, None, paths, native=native_model)
        else:
            linear = None
            if backend != "onnxruntime":
                try:
                    linear = read_linear_graph(onnx_data)
                except Exception as exc:  # protobuf's DecodeError, onnx's attribute errors
                    raise rule_error(onnx_path, f"not a valid ONNX model: {exc}", "O1") from None
                if linear is None and backend == "numpy":
                    raise ArtifactError(
                        f"{onnx_path}: the numpy backend runs only a graph of one "
                        "LinearClassifier (+ an L1 Normalizer); load it with "
                        "backend='onnxruntime' or 'auto'"
                    )
            if linear is not None:
                _check_linear_graph(linear, pre, onnx_path, bin_path)
                model = cls(task, pre, None, paths, linear=linear)
            else:
                model = cls(task, pre, _ort_session(onnx_data, onnx_path), paths)
        model.preprocessor_sha256 = bin_sha256
        return model

    # -- familiarity --------------------------------------------------------------------
    def _unfamiliar(self, normalized: str) -> float:
        min_order = self.familiarity.min_order
        return share(gram_total(normalized, self.spec, min_order),
                     sum(map(self._counted.__contains__, self._ngrams(normalized))))

    def _familiar(self, normalized: str) -> bool:
        """Whether the gate admits a normalised text: ``unfamiliar <= max_unfamiliar``."""
        if self.familiarity.max_unfamiliar >= 1.0:
            return True
        return self._unfamiliar(normalized) <= self.familiarity.max_unfamiliar

    def unfamiliar(self, text: str) -> float:
        """The share of ``text``'s n-grams (of ``familiarity.min_order`` code points or more)
        that the vocabulary does not know (:mod:`foundry.familiarity`)."""
        return self._unfamiliar(fast_normalize(text, self.spec))

    # -- features -----------------------------------------------------------------------
    def _counts(self, normalized: str) -> dict[int, int]:
        """Column -> count of the in-vocabulary n-grams of a normalised text."""
        vocabulary = self.vocabulary
        counts: dict[int, int] = {}
        _count_elements(counts, map(vocabulary.__getitem__,
                                    filter(vocabulary.__contains__, self._ngrams(normalized))))
        return counts

    def _row(self, counts: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The tf-idf row of a column -> count map: ``(indices ascending, values float64)``."""
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        idx = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        tf = np.fromiter(map(counts.__getitem__, idx.tolist()), dtype=np.float64, count=len(idx))
        if self.sublinear_tf:
            tf = np.log(tf) + 1.0
        values = tf * self.idf[idx]
        if self.l2:
            norm = math.sqrt(float(np.dot(values, values)))
            if norm > 0:
                values = values / norm
        return idx, values

    def featurize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sparse tf-idf row of ``text``: ``(indices int64 ascending, values float64)``."""
        return self._row(self._counts(fast_normalize(text, self.spec)))

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Dense float32 ``[N, D]`` feature matrix (the ONNX ``features`` input)."""
        return self._features(normalize_many(list(texts), self.spec))

    def _features(self, normalized: list[str]) -> np.ndarray:
        out = np.zeros((len(normalized), self.n_features), dtype=np.float32)
        for row, text in enumerate(normalized):
            idx, values = self._row(self._counts(text))
            out[row, idx] = values
        return out

    # -- prediction ---------------------------------------------------------------------
    def _proba_rows(self, normalized: list[str]) -> np.ndarray:
        """Probabilities ``[N, K]`` of a non-empty list of normalised texts, float64 (numpy)
        or float32 (ORT)."""
        head = self._head
        if isinstance(head, _NumpyHead):
            if len(normalized) < VECTOR_MIN_BATCH:
                return np.array(self._proba_lists(normalized))
            return head.finish(head.scores_many(normalized, self._ngrams))
        rows = max(1, head.block_bytes // (4 * self.n_features))
        blocks = [
            head.proba_dense(self._features(normalized[start : start + rows]))
            for start in range(0, len(normalized), rows)
        ]
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities ``[N, K]`` (float32), columns in :attr:`labels` order."""
        if isinstance(texts, str):
            raise TypeError("predict_proba takes a list of texts; use predict() for one text")
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        normalized = normalize_many(list(texts), self.spec)
        return self._proba_rows(normalized).astype(np.float32, copy=False)

    def _answer(self, probabilities: list[float], normalized: str) -> Prediction:
        score = max(probabilities)
        return _prediction(
            self.labels[probabilities.index(score)],
            _probabilities(self._names, probabilities),
            score >= self.threshold and self._familiar(normalized),
            score,
        )

    def _answers(self, proba: np.ndarray, normalized: list[str]) -> list[Prediction]:
        """The answers of a batch's probabilities ``[N, K]``: each holds its row of ``proba``
        (no list of K floats per text until one is read)."""
        best = proba.argmax(axis=1)
        top = proba[np.arange(len(best)), best].tolist()
        labels, names, threshold, familiar = self.labels, self._names, self.threshold, \
            self._familiar
        return [_prediction(labels[k], _probabilities(names, row), p >= threshold
                            and familiar(text), p)
                for k, row, p, text in zip(best.tolist(), proba, top, normalized, strict=True)]

    def _rule_hit(self, text: str) -> int | None:
        """Index of the first reflex rule matching ``text``, or None (also without rules)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self.reflex.first(fast_normalize(text, self.spec)) if self.reflex else None

    def rule(self, text: str) -> str | None:
        """The name of the first reflex rule that answers ``text``, or None."""
        hit = self._rule_hit(text)
        return None if hit is None else self.reflex.rules[hit].name

    def _ruled(self, text: str) -> Prediction | None:
        """The answer of the first reflex rule matching ``text`` (a copy), or None."""
        hit = self._rule_hit(text)
        if hit is None:
            return None
        answer = self._rule_answers[hit]
        # A fresh Prediction; its Probabilities is read-only, so it is shared.
        return _prediction(answer.label, answer.probabilities, True, 1.0, answer.rule)

    def predict(self, text: str) -> Prediction:
        """Classify one text: the first matching reflex rule answers, else the model (the
        out-of-scope label when unsure, for a task that has one)."""
        if self.reflex and (ruled := self._ruled(text)) is not None:
            return ruled
        p = self._predict(text)
        return p if self.out_of_scope is None or p.confident else self._unsure(p)

    def _unsure(self, p: Prediction) -> Prediction:
        """An answer below the threshold of a task with an out-of-scope label: that label,
        with the model's probabilities and ``confident = False``."""
        return _prediction(self.out_of_scope, p.probabilities, False, p.score)

    def _predict(self, text: str) -> Prediction:
        if self._fused_predict is not None:
            return self._fused_predict(text)
        head = self._head
        normalized = fast_normalize(text, self.spec)
        if isinstance(head, _NumpyHead):
            return self._answer(head.finish_one(head.scores(self._ngrams(normalized))),
                                normalized)
        return self._answer(head.proba_one(*self._row(self._counts(normalized))).tolist(),
                            normalized)

    def _proba_lists(self, normalized: list[str]) -> list[list[float]]:
        """Numpy backend, text by text in plain Python: for batches too small for NumPy."""
        head = self._head
        return [head.finish_one(head.scores(self._ngrams(t))) for t in normalized]

    def predict_many(self, texts: Iterable[str]) -> list[Prediction]:
        """Classify many texts in one batch; answers in input order (reflex rules first)."""
        if self.reflex:
            return self._predict_many_ruled(texts)
        answers = self._predict_many(texts)
        if self.out_of_scope is None:
            return answers
        return [p if p.confident else self._unsure(p) for p in answers]

    def _predict_many_ruled(self, texts: Iterable[str]) -> list[Prediction]:
        """:meth:`predict_many` of a model with reflex rules: the model answers the rest."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict_many takes a list of texts; use predict() for one text")
        texts = list(texts)
        ruled = [self._ruled(t) for t in texts]
        rest = [t for t, r in zip(texts, ruled, strict=True) if r is None]
        answers = iter(self._predict_many(rest))
        if self.out_of_scope is not None:
            answers = (p if p.confident else self._unsure(p) for p in answers)
        return [r if r is not None else next(answers) for r in ruled]

    def _predict_many(self, texts: Iterable[str]) -> list[Prediction]:
        if isinstance(texts, (str, bytes)):  # a str is iterable: it would answer per character
            raise TypeError("predict_many takes a list of texts; use predict() for one text")
        texts = list(texts)
        if not texts:
            return []
        if self._fused_predict is not None and len(texts) < VECTOR_MIN_BATCH:
            return list(map(self._fused_predict, texts))
        normalized = normalize_many(texts, self.spec)
        return self._answers(self._proba_rows(normalized), normalized)

    def __repr__(self) -> str:
        return (
            f"MicroModel({self.task!r}, labels={self.labels}, features={self.n_features}, "
            f"threshold={self.threshold:.3f}, backend={self.backend!r})"
        )


@dataclass
class ConformanceReport:
    path: Path
    vectors: int
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def check_conformance(model: MicroModel, path: Path, *, feature_tol: float = 1e-6,
                      proba_tol: float = 1e-5) -> ConformanceReport:
    """Replay a ``<task>_conformance.json`` and collect every disagreement.

    Raises
    ------
    ArtifactError
        If the file is unreadable, holds no vectors, or was written for another ``.bin``
        (its ``preprocessor_sha256``): then its vectors say nothing about this model.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        vectors = doc["vectors"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: unreadable conformance file: {exc}") from None
    if not isinstance(vectors, list) or not vectors:
        raise ArtifactError(f"{path}: the conformance file holds no vectors; re-export the model")
    recorded = doc.get("preprocessor_sha256")
    if model.preprocessor_sha256 and recorded != model.preprocessor_sha256:
        raise ArtifactError(
            f"{path}: written for another export (preprocessor_sha256 "
            f"{str(recorded)[:12]}…, the loaded {model.paths['bin'].name} is "
            f"{model.preprocessor_sha256[:12]}…): an export was interrupted or files were mixed; "
            "re-export the model")
    failures: list[str] = []
    texts = [v["text"] for v in vectors]
    proba = model.predict_proba(texts) if texts else np.zeros((0, len(model.labels)))
    answers = model.predict_many(texts)
    for i, v in enumerate(vectors):
        where = f"vector {i} ({v['text'][:30]!r})"
        if normalize(v["text"], model.spec) != v["normalized"]:
            failures.append(f"{where}: normalised text differs")
            continue
        idx, values = model.featurize(v["text"])
        want_idx = [f[0] for f in v["features"]]
        if idx.tolist() != want_idx:
            failures.append(f"{where}: feature indices differ")
            continue
        want_val = np.asarray([f[1] for f in v["features"]], dtype=np.float64)
        if len(want_val) and np.max(np.abs(values - want_val)) > feature_tol:
            failures.append(
                f"{where}: feature values differ by {np.max(np.abs(values - want_val)):.2e}"
            )
        diff = np.max(np.abs(proba[i] - np.asarray(v["probabilities"])))
        if diff > proba_tol:
            failures.append(f"{where}: probabilities differ by {diff:.2e}")
        if model.labels[int(np.argmax(proba[i]))] != v["label"]:
            failures.append(
                f"{where}: label {model.labels[int(np.argmax(proba[i]))]} != {v['label']}"
            )
        if "unfamiliar" in v and model.unfamiliar(v["text"]) != v["unfamiliar"]:
            failures.append(f"{where}: unfamiliar {model.unfamiliar(v['text'])!r} != "
                            f"{v['unfamiliar']!r}")
        if "rule" in v:  # a reflex rule answers instead of the model (spec section 5)
            one, many = model.predict(v["text"]).rule, answers[i].rule
            if not model.rule(v["text"]) == one == many == v["rule"]:
                failures.append(f"{where}: rule {one!r} (predict), {many!r} (predict_many) "
                                f"!= {v['rule']!r}")
            if v["rule"] is not None:
                continue  # the answer is the rule's; the model's confident is not asked
        # ``confident`` is only meaningful away from the threshold (spec section 5).
        if "confident" in v and abs(float(proba[i].max()) - model.threshold) > proba_tol:
            one, many = model.predict(v["text"]).confident, answers[i].confident
            if not one == many == v["confident"]:
                failures.append(f"{where}: confident {one} (predict), {many} (predict_many) "
                                f"!= {v['confident']}")
    return ConformanceReport(Path(path), len(vectors), failures)


def verify_conformance(model: MicroModel, path: Path) -> ConformanceReport:
    """Like :func:`check_conformance` but raises :class:`ArtifactError` on any failure."""
    report = check_conformance(model, path)
    if not report.ok:
        shown = "\n  ".join(report.failures[:10])
        raise ArtifactError(
            f"{path}: {len(report.failures)} of {report.vectors} conformance vectors fail:"
            f"\n  {shown}"
        )
    return report
