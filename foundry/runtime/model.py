"""The loaded micro-model: :class:`MicroModel` (load, validate, pick a backend;
features, probabilities, the unfamiliarity gate, the reflex rules, answers)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundry.artifacts import rule_error
from foundry.errors import ArtifactError
from foundry.familiarity import Familiarity, gram_total, share
from foundry.reflex import Reflex, reflex_of
from foundry.runtime.fused import _binary_predictor, _multiclass_predictor
from foundry.runtime.graph import (
    LinearGraph,
    _check_linear_graph,
    check_signature,
    graph_signature,
    read_linear_graph,
    read_pair,
)
from foundry.runtime.heads import VECTOR_MIN_BATCH, _NumpyHead, _ort_session, _OrtHead
from foundry.runtime.normalize import NgramSlicer, _count_elements, fast_normalize, normalize_many
from foundry.runtime.prediction import Prediction, Probabilities, _prediction, _probabilities
from foundry.textspec import TextSpec, is_head_gram, is_word_gram

BACKENDS = ("auto", "numpy", "onnxruntime", "native")


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
            word_max_n=preprocessor.analyzer.word_max_n,
            head_chars=preprocessor.analyzer.head_chars,
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
        # Vocabulary character n-grams long enough to count: looking a text's n-grams up in
        # this set counts the known ones; shorter n-grams and word and head n-grams simply miss.
        self._counted = frozenset(g for g in vocabulary if len(g) >= gate.min_order
                                  and not is_word_gram(g) and not is_head_gram(g))
        self._head: _NumpyHead | _OrtHead | Any
        if native is not None:
            self._head = native
        elif linear is not None:
            self._head = _NumpyHead(
                linear, vocabulary, self.idf, self.sublinear_tf, self.l2, self.spec
            )
        else:
            self._head = _OrtHead(session, self.n_features)
        #: Per rule: its answer (label, probabilities 1/0, confident, score 1, rule name).
        self._rule_answers = [
            _prediction(self.labels[r.label],
                        _probabilities(self._names,
                                       [float(k == r.label) for k in range(len(self.labels))]),
                        True, 1.0, r.name) for r in self.reflex.rules]
        # The fused fast paths try the reflex rules on the text they normalise anyway.
        ruled = self._ruled_normalized if self.reflex else None
        self._fused_predict = (
            _binary_predictor(self._head, self.labels, self.threshold, self._ngrams,
                              self._familiar, ruled)
            or _multiclass_predictor(self._head, self.labels, self.threshold, self._ngrams,
                                     self._familiar, ruled)
            if isinstance(self._head, _NumpyHead) else None
        )
        if self._fused_predict is not None and self.out_of_scope is None:
            # ``model.predict`` is then the fused function itself: one call frame less.
            self.predict = self._fused_predict
        if native is not None:  # the native model's own methods, no Python frame between
            # (the native model applies the reflex rules itself)
            self.predict, self.predict_many = native.predict, native.predict_many
            self.predict_proba = native.predict_proba

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
            # Read even for backend="onnxruntime": the reader refuses constants that ONNX
            # Runtime would load and fail on only when run, or run with an unspecified
            # result (sparse int8 weights that write a position twice).
            try:
                linear = read_linear_graph(onnx_data)
            except Exception as exc:  # protobuf's DecodeError, onnx's attribute errors
                raise rule_error(onnx_path, f"not a valid ONNX model: {exc}", "O1") from None
            if backend == "onnxruntime":
                linear = None
            elif linear is None and backend == "numpy":
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
        return None if hit is None else self._rule_answer(hit)

    def _ruled_normalized(self, normalized: str) -> Prediction | None:
        """:meth:`_ruled` of an already normalised text (the fused paths' rule check)."""
        hit = self.reflex.first(normalized)
        return None if hit is None else self._rule_answer(hit)

    def _rule_answer(self, hit: int) -> Prediction:
        """A fresh copy of rule ``hit``'s answer."""
        answer = self._rule_answers[hit]
        # A fresh Prediction; its Probabilities is read-only, so it is shared.
        return _prediction(answer.label, answer.probabilities, True, 1.0, answer.rule)

    def predict(self, text: str) -> Prediction:
        """Classify one text: the first matching reflex rule answers, else the model (the
        out-of-scope label when unsure, for a task that has one)."""
        if (self.reflex and self._fused_predict is None
                and (ruled := self._ruled(text)) is not None):
            return ruled
        p = self._predict(text)  # a fused path tries the rules itself
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
        # The fused path text by text, unless the batch is large and the head vectorises it
        # (otherwise scores_many would loop too, through the slower general path).
        if self._fused_predict is not None and (len(texts) < VECTOR_MIN_BATCH
                                                or not self._head.vectorizes):
            return list(map(self._fused_predict, texts))
        normalized = normalize_many(texts, self.spec)
        return self._answers(self._proba_rows(normalized), normalized)

    def __repr__(self) -> str:
        return (
            f"MicroModel({self.task!r}, labels={self.labels}, features={self.n_features}, "
            f"threshold={self.threshold:.3f}, backend={self.backend!r})"
        )
