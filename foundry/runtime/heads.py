"""The two backends that turn a text's n-grams into probabilities.

:class:`_NumpyHead` is the linear classifier fused with the tf-idf weighting per n-gram
(one text in plain Python; a batch in NumPy through :class:`_VectorScorer`); the
post transforms reproduce ONNX Runtime's. :class:`_OrtHead` is the reference: one ONNX
Runtime session configured for short texts."""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Sequence
from itertools import compress
from pathlib import Path

import numpy as np

from foundry.artifacts import rule_error
from foundry.runtime.graph import LinearGraph, SigmoidCalibration
from foundry.runtime.normalize import NgramSlicer, _count_elements
from foundry.textspec import TextSpec

_MORE_THAN_ONE = (1).__lt__


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
        b = graph.intercepts.astype(np.float64)
        many = len(b) >= 3
        # [K, D] score rows idf_g * W[k, g]. With three or more labels only a vectorised
        # batch reads them (:attr:`rows`, built then): one query gathers W itself, and a
        # CLINC150 model's rows are 69 MB of float64.
        w = None if many else graph.coefficients.astype(np.float64) * idf
        # A binary logistic regression is exported as rows (-w, w), intercepts (-b, b):
        # one score then suffices.
        self.antisymmetric = (
            len(b) == 2 and np.array_equal(w[0], -w[1]) and b[0] == -b[1]
        )
        rows = w[1:] if self.antisymmetric else w
        self._rows: np.ndarray | None = rows
        # Per-class dicts for one or two score rows; three or more gather columns instead
        # (151 dicts of a CLINC150 vocabulary would hold 8.6 million floats).
        self.weights = [] if many else [dict(zip(vocabulary, row.tolist(), strict=True))
                                        for row in rows]
        self.idf2 = dict(zip(vocabulary, (idf * idf).tolist(), strict=True))
        # With one score row, weight and idf**2 travel as one complex number, so a single
        # C-level sum yields both the score and the squared norm.
        self.packed = (
            dict(zip(vocabulary, (rows[0] + 1j * idf * idf).tolist(), strict=True))
            if rows is not None and len(rows) == 1 else None
        )
        self._in_vocabulary = self.idf2.__contains__
        self._packed_item = self.packed.__getitem__ if self.packed is not None else None
        self.intercepts = b.tolist()
        self.sublinear_tf = sublinear_tf
        self.l2 = l2
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
        # the columns instead (:meth:`class_scores`) from W transposed, [D, K], in the
        # graph's own float32: half the bytes of float64, and a query's rows are scattered
        # over the table, so the gather is bound by memory, not arithmetic.
        self.columns: dict[str, int] | None = None
        if many:
            self.columns = dict(zip(vocabulary, range(len(vocabulary)), strict=True))
            self._weights_t = np.ascontiguousarray(graph.coefficients.T, dtype=np.float32)
            self._idf = np.asarray(idf, dtype=np.float64)
            self._tf_item = (self.dtf + np.arange(len(self.dtf))).tolist().__getitem__
            self._bias = np.asarray(self.intercepts, dtype=np.float64)

    def class_scores(self, cols: list[int]) -> np.ndarray:
        """Class scores ``[K]`` (before the post transform) of a text given as the columns of
        its in-vocabulary n-grams (with repeats), for a head of three or more score rows:
        one NumPy gather of the columns ``W[:, g]`` of its distinct n-grams (counted by a dict,
        which is faster than ``np.unique``'s sort), summed with weights ``tf_g * idf_g`` in
        float64."""
        if not cols:
            return self._bias.copy()
        counts: dict[int, int] = {}
        _count_elements(counts, cols)
        n = len(counts)
        # One index array for both take()s: converting a list of Python ints is a third of
        # the time of a take(list), and fromiter() converts faster than np.array().
        idx = np.fromiter(counts, np.intp, n)
        x = self._idf.take(idx)  # tf * idf of the distinct n-grams, before the norm
        if n != len(cols):  # some n-gram repeats: tf is not 1 everywhere
            x *= np.fromiter(map(self._tf_item, counts.values()), np.float64, n)
        scores = x @ self._weights_t.take(idx, axis=0)  # float64: the float32 rows upcast
        norm2 = float(x @ x)
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

    @property
    def rows(self) -> np.ndarray:
        """The score rows ``[K', D]``: ``idf_g * W[k, g]`` (one row for an antisymmetric
        binary model); built on first use for three or more labels."""
        if self._rows is None:
            self._rows = self.graph.coefficients.astype(np.float64) * self._idf
        return self._rows

    @property
    def vectorizes(self) -> bool:
        """Whether :meth:`scores_many` vectorises large batches: the vectorised scorer keys
        character n-grams of n <= 3 only (no word or head n-grams); other specs loop text by
        text."""
        return (self.spec.max_n <= _VectorScorer.max_n and not self.spec.word_max_n
                and not self.spec.head_chars)

    def scores_many(self, normalized: list[str], slicer: NgramSlicer) -> np.ndarray:
        """Class scores ``[N, K]`` of normalised texts; vectorised for larger batches."""
        if len(normalized) < VECTOR_MIN_BATCH or not self.vectorizes:
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
