"""Inference from the two shipped files, ``<task>_classifier.onnx`` + ``<task>_preprocessor.bin``.

This package is what an application imports. It never imports scikit-learn: text becomes
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
    (:class:`~foundry.runtime.heads._VectorScorer`). It reproduces ONNX Runtime's semantics (``post_transform``
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

The package, bottom up (each module imports only those above it):

- :mod:`~foundry.runtime.prediction`: :class:`Prediction`, :class:`Probabilities`;
- :mod:`~foundry.runtime.normalize`: :func:`fast_normalize`, :func:`normalize_many`,
  :class:`NgramSlicer`, :func:`ngram_list`;
- :mod:`~foundry.runtime.graph`: reading and checking the pair (:func:`read_pair`,
  :func:`graph_signature`, :func:`read_linear_graph`);
- :mod:`~foundry.runtime.heads`: the numpy and ONNX Runtime backends, post transforms,
  the batch scorer;
- :mod:`~foundry.runtime.fused`: the one-text fast paths of the numpy backend;
- :mod:`~foundry.runtime.model`: :class:`MicroModel` (load, features, gate, reflex rules,
  answers);
- :mod:`~foundry.runtime.conformance`: :func:`check_conformance`, :func:`verify_conformance`.

Import the public names from :mod:`foundry.runtime` itself.

>>> from foundry.runtime import MicroModel
>>> m = MicroModel.load("is_question", models_dir="models")   # doctest: +SKIP
>>> m.predict("今天天气怎么样？").label                          # doctest: +SKIP
'Question'
"""

from __future__ import annotations

from foundry.artifacts import SUPPORTED_FORMAT_VERSIONS
from foundry.errors import ArtifactError
from foundry.runtime.conformance import check_conformance, verify_conformance
from foundry.runtime.graph import (
           PAIR_RETRY_DELAYS_S,
           POST_TRANSFORMS,
           GraphSignature,
           LinearGraph,
           SigmoidCalibration,
           graph_signature,
           read_linear_graph,
           read_pair,
)
from foundry.runtime.heads import VECTOR_MIN_BATCH
from foundry.runtime.model import BACKENDS, MicroModel
from foundry.runtime.normalize import (
           DEFAULT_SPEC,
           NgramSlicer,
           fast_normalize,
           ngram_list,
           normalize_many,
)
from foundry.runtime.prediction import Prediction, Probabilities

__all__ = ["ArtifactError", "BACKENDS", "DEFAULT_SPEC", "GraphSignature", "LinearGraph",
           "MicroModel", "NgramSlicer", "PAIR_RETRY_DELAYS_S", "POST_TRANSFORMS", "Prediction",
           "Probabilities", "SUPPORTED_FORMAT_VERSIONS", "SigmoidCalibration",
           "VECTOR_MIN_BATCH", "check_conformance", "fast_normalize", "graph_signature",
           "ngram_list", "normalize_many", "read_linear_graph", "read_pair",
           "verify_conformance"]
