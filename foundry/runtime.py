"""Inference from the two shipped files, ``<task>_classifier.onnx`` + ``<task>_preprocessor.bin``.

This module is what an application imports. It never imports scikit-learn: text becomes
features through :mod:`foundry.textspec` driven by the settings stored in the ``.bin``, and
the classifier runs in ONNX Runtime.

>>> from foundry.runtime import MicroModel
>>> m = MicroModel.load("is_question", models_dir="models")   # doctest: +SKIP
>>> m.predict("今天天气怎么样？").label                          # doctest: +SKIP
'Question'
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foundry.textspec import REMOVED_CATEGORIES, WHITESPACE, TextSpec, char_ngrams, normalize

SUPPORTED_FORMAT_VERSIONS = (1,)


class ArtifactError(ValueError):
    """An artifact file is missing, corrupt, or does not match its pair."""


@dataclass(frozen=True)
class Prediction:
    """One answer: the label, every label's probability, and whether to trust it."""

    label: str
    probabilities: dict[str, float]
    confident: bool
    #: Probability of ``label`` (the top probability).
    score: float = field(default=0.0)

    def to_json(self, text: str) -> dict:
        return {
            "text": text,
            "label": self.label,
            "probabilities": self.probabilities,
            "confident": self.confident,
        }


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ArtifactError(
            f"{path}: {what} not found; forge it with `foundry forge <blueprint>` or pass the right "
            "--models-dir"
        )
    return path.read_bytes()


def parse_preprocessor(data: bytes, path: Path):
    """Parse and validate the structure of a ``.bin`` (protobuf ``foundry.v1.Preprocessor``)."""
    from google.protobuf.message import DecodeError

    from foundry.v1 import preprocessor_pb2 as pb

    msg = pb.Preprocessor()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ArtifactError(f"{path}: not a valid preprocessor file (truncated or corrupt): {exc}") from None
    if msg.format_version not in SUPPORTED_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{path}: format_version {msg.format_version} is not supported by this runtime "
            f"(supported: {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); re-export the model "
            "or upgrade the runtime"
        )
    if len(msg.labels) < 2:
        raise ArtifactError(f"{path}: needs at least 2 labels, has {len(msg.labels)}")
    if not msg.vocabulary:
        raise ArtifactError(f"{path}: empty vocabulary")
    if msg.weighting.use_idf and len(msg.idf) != len(msg.vocabulary):
        raise ArtifactError(
            f"{path}: idf has {len(msg.idf)} values but the vocabulary has "
            f"{len(msg.vocabulary)} entries; the file is corrupt"
        )
    if len(set(msg.vocabulary)) != len(msg.vocabulary):
        raise ArtifactError(f"{path}: vocabulary has duplicate entries; the file is corrupt")
    norm = msg.normalizer
    if norm.spec_version != 1 or not norm.nfkc:
        raise ArtifactError(f"{path}: text spec version {norm.spec_version} is not supported")
    if set(norm.removed_categories) != REMOVED_CATEGORIES or {chr(c) for c in norm.whitespace} != set(
        WHITESPACE
    ):
        raise ArtifactError(
            f"{path}: normaliser settings (removed categories / whitespace list) differ from text "
            "spec v1 as implemented here"
        )
    return msg


class MicroModel:
    """A loaded micro-model. Use :meth:`load`; then :meth:`predict` / :meth:`predict_many`."""

    def __init__(self, task: str, preprocessor, session, paths: dict[str, Path]) -> None:
        self.task = task
        self.labels: list[str] = list(preprocessor.labels)
        self.threshold: float = float(preprocessor.threshold)
        self.preprocessor = preprocessor
        self.paths = paths
        self.spec = TextSpec(
            max_chars=preprocessor.normalizer.max_chars,
            min_n=preprocessor.analyzer.min_n,
            max_n=preprocessor.analyzer.max_n,
            word_boundary_padding=preprocessor.analyzer.word_boundary_padding,
            lowercase=preprocessor.normalizer.lowercase,
        )
        self.vocabulary: dict[str, int] = {g: i for i, g in enumerate(preprocessor.vocabulary)}
        self.n_features = len(self.vocabulary)
        self.idf = (
            np.asarray(preprocessor.idf, dtype=np.float64)
            if preprocessor.weighting.use_idf
            else np.ones(self.n_features)
        )
        self.sublinear_tf = preprocessor.weighting.sublinear_tf
        self.l2 = preprocessor.weighting.norm == 1
        self._session = session
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, task: str, models_dir: str | Path = "models") -> MicroModel:
        """Load and validate ``<task>_classifier.onnx`` + ``<task>_preprocessor.bin``.

        Raises
        ------
        ArtifactError
            If a file is missing or corrupt, the format version is unsupported, the ``.onnx``
            hash differs from the one recorded in the ``.bin``, or labels / dimensions disagree.
        """
        import onnxruntime as ort

        models_dir = Path(models_dir)
        onnx_path = models_dir / f"{task}_classifier.onnx"
        bin_path = models_dir / f"{task}_preprocessor.bin"
        bin_data = _read(bin_path, "preprocessor file")
        onnx_data = _read(onnx_path, "classifier file")
        pre = parse_preprocessor(bin_data, bin_path)
        if pre.task != task:
            raise ArtifactError(f"{bin_path}: belongs to task {pre.task!r}, not {task!r}")
        digest = hashlib.sha256(onnx_data).hexdigest()
        if digest != pre.onnx_sha256:
            raise ArtifactError(
                f"{onnx_path}: SHA-256 {digest[:12]}… does not match the {pre.onnx_sha256[:12] or '(none)'}… "
                f"recorded in {bin_path.name}; the pair is mismatched (re-export both files together)"
            )
        options = ort.SessionOptions()
        # Micro-models answer one short text at a time: threads cost more than they save.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                onnx_data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{onnx_path}: ONNX Runtime cannot load it: {exc}") from None
        inputs = session.get_inputs()
        outputs = [o.name for o in session.get_outputs()]
        if len(inputs) != 1 or inputs[0].shape[-1] != len(pre.vocabulary):
            raise ArtifactError(
                f"{onnx_path}: expects {inputs[0].shape[-1] if inputs else '?'} features but "
                f"{bin_path.name} has a vocabulary of {len(pre.vocabulary)}"
            )
        if outputs[:2] != ["label", "probabilities"]:
            raise ArtifactError(f"{onnx_path}: outputs {outputs}, expected label, probabilities")
        n_classes = session.get_outputs()[1].shape[-1]
        if isinstance(n_classes, int) and n_classes != len(pre.labels):
            raise ArtifactError(
                f"{onnx_path}: {n_classes} classes but {bin_path.name} lists {len(pre.labels)} labels"
            )
        paths = {"onnx": onnx_path, "bin": bin_path}
        return cls(task, pre, session, paths)

    # -- features -----------------------------------------------------------------------
    def featurize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sparse tf-idf row of ``text``: ``(indices int64 ascending, values float64)``."""
        counts = Counter(
            self.vocabulary[g]
            for g in char_ngrams(normalize(text, self.spec), self.spec)
            if g in self.vocabulary
        )
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        idx = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        tf = np.fromiter((counts[i] for i in idx), dtype=np.float64, count=len(idx))
        if self.sublinear_tf:
            tf = np.log(tf) + 1.0
        values = tf * self.idf[idx]
        if self.l2:
            norm = math.sqrt(float(np.dot(values, values)))
            if norm > 0:
                values = values / norm
        return idx, values

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Dense float32 ``[N, D]`` feature matrix (the ONNX ``features`` input)."""
        out = np.zeros((len(texts), self.n_features), dtype=np.float32)
        for row, text in enumerate(texts):
            idx, values = self.featurize(text)
            out[row, idx] = values
        return out

    # -- prediction ---------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities ``[N, K]`` (float32), columns in :attr:`labels` order."""
        if isinstance(texts, str):
            raise TypeError("predict_proba takes a list of texts; use predict() for one text")
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        _, proba = self._session.run(None, {self._input: self.features(texts)})
        return proba

    def _answer(self, proba_row: np.ndarray) -> Prediction:
        k = int(np.argmax(proba_row))
        score = float(proba_row[k])
        return Prediction(
            label=self.labels[k],
            probabilities={label: float(p) for label, p in zip(self.labels, proba_row, strict=True)},
            confident=score >= self.threshold,
            score=score,
        )

    def predict(self, text: str) -> Prediction:
        """Classify one text."""
        return self._answer(self.predict_proba([text])[0])

    def predict_many(self, texts: Iterable[str]) -> list[Prediction]:
        """Classify many texts in one batch; answers in input order."""
        texts = list(texts)
        return [self._answer(row) for row in self.predict_proba(texts)]

    def __repr__(self) -> str:
        return (
            f"MicroModel({self.task!r}, labels={self.labels}, features={self.n_features}, "
            f"threshold={self.threshold:.3f})"
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
    """Replay a ``<task>_conformance.json`` and collect every disagreement."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        vectors = doc["vectors"]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: unreadable conformance file: {exc}") from None
    failures: list[str] = []
    texts = [v["text"] for v in vectors]
    proba = model.predict_proba(texts) if texts else np.zeros((0, len(model.labels)))
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
            failures.append(f"{where}: feature values differ by {np.max(np.abs(values - want_val)):.2e}")
        diff = np.max(np.abs(proba[i] - np.asarray(v["probabilities"])))
        if diff > proba_tol:
            failures.append(f"{where}: probabilities differ by {diff:.2e}")
        if model.labels[int(np.argmax(proba[i]))] != v["label"]:
            failures.append(f"{where}: label {model.labels[int(np.argmax(proba[i]))]} != {v['label']}")
    return ConformanceReport(Path(path), len(vectors), failures)


def verify_conformance(model: MicroModel, path: Path) -> ConformanceReport:
    """Like :func:`check_conformance` but raises :class:`ArtifactError` on any failure."""
    report = check_conformance(model, path)
    if not report.ok:
        shown = "\n  ".join(report.failures[:10])
        raise ArtifactError(
            f"{path}: {len(report.failures)} of {report.vectors} conformance vectors fail:\n  {shown}"
        )
    return report
