"""The artifact pair of a trained model as bytes: the ``.onnx`` classifier and the ``.bin``
preprocessor (``foundry.v1.Preprocessor``) that names its SHA-256.

Both the export stage (:mod:`foundry.export`, which writes them) and the trainer's size
budget (:mod:`foundry.train`, which measures them) build the pair here, so the bytes measured
are the bytes written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry import __version__
from foundry.artifacts import compact, format_version_for, load_preprocessor, seal_message
from foundry.familiarity import NO_GATE, Familiarity
from foundry.reflex import Reflex, rule_messages
from foundry.textspec import REMOVED_CATEGORIES, UNICODE_VERSION, WHITESPACE
from foundry.v1 import preprocessor_pb2 as pb

#: ``Provenance.exam_gate`` values.
EXAM_PASSED, EXAM_OVERRIDDEN = "passed", "overridden"


@dataclass(frozen=True)
class Provenance:
    blueprint: str = ""
    blueprint_sha256: str = ""
    data_sha256: str = ""
    trainer: str = ""
    train_rows: int = 0
    #: :data:`EXAM_PASSED`, or :data:`EXAM_OVERRIDDEN` when the exam failed and the forge
    #: was told ``--allow-exam-failures``.
    exam_gate: str = ""


def classifier_onnx_bytes(trained: Any, task: str, opset: int = 15) -> bytes:
    """Convert the fitted classifier step of ``trained.pipeline`` to ONNX bytes.

    The graph is named after the task (skl2onnx would use a random id), which keeps the
    output byte-identical for identical models.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from foundry.onnx_isotonic import faithful_isotonic
    from foundry.quantized import Int8Linear, quantized_onnx

    clf = trained.pipeline.named_steps["clf"]
    n_features = len(trained.pipeline.named_steps["tfidf"].vocabulary_)
    if isinstance(clf, Int8Linear):  # int8 weights: a graph of standard operators
        return quantized_onnx(clf, n_features, task, opset)
    with faithful_isotonic():  # skl2onnx's own isotonic graph is a nearest-threshold lookup
        model = convert_sklearn(
            clf,
            initial_types=[("features", FloatTensorType([None, n_features]))],
            target_opset={"": opset, "ai.onnx.ml": 3},
            options={id(clf): {"zipmap": False}},
        )
    outputs = [o.name for o in model.graph.output]
    if outputs != ["label", "probabilities"]:
        raise RuntimeError(f"unexpected ONNX outputs {outputs} for {type(clf).__name__}")
    # skl2onnx collects the opset imports in a set: their order follows the process's string
    # hash seed. Sorted, equal models give equal bytes in every process.
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.add(domain=domain, version=version)
    model.graph.name = f"{task}_classifier"
    model.doc_string = f"Model Foundry micro-model {task!r}; labels in {task}_preprocessor.bin"
    return model.SerializeToString()


def preprocessor_message(
    trained: Any, task: str, threshold: float, onnx_sha256: str, provenance: Provenance,
    familiarity: Familiarity = NO_GATE,
    out_of_scope: str = "",
    reflex: Reflex | None = None,
) -> pb.Preprocessor:
    """Build the ``foundry.v1.Preprocessor`` message for a trained pipeline (format 5: the
    vocabulary front-coded, the idf as an index into a table of its distinct values)."""
    tfidf = trained.pipeline.named_steps["tfidf"]
    spec = trained.spec
    vocab = sorted(tfidf.vocabulary_.items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise RuntimeError("vectorizer vocabulary indices are not 0..D-1")
    rules = rule_messages(reflex, pb) if reflex else []
    msg = pb.Preprocessor(
        format_version=format_version_for(rules, spec.word_max_n, spec.head_chars),
        task=task,
        labels=list(trained.labels),
        normalizer=pb.Normalizer(
            spec_version=1,
            nfkc=True,
            lowercase=spec.lowercase,
            removed_categories=sorted(REMOVED_CATEGORIES),
            whitespace=sorted(ord(c) for c in WHITESPACE),
            max_chars=spec.max_chars,
        ),
        analyzer=pb.Analyzer(
            min_n=spec.min_n, max_n=spec.max_n, word_boundary_padding=spec.word_boundary_padding,
            word_max_n=spec.word_max_n, head_chars=spec.head_chars,
        ),
        weighting=pb.Weighting(
            sublinear_tf=bool(tfidf.sublinear_tf),
            use_idf=bool(tfidf.use_idf),
            norm=pb.Weighting.NORM_L2 if tfidf.norm == "l2" else pb.Weighting.NORM_NONE,
        ),
        vocabulary=[g for g, _ in vocab],
        idf=[float(x) for x in tfidf.idf_] if tfidf.use_idf else [],
        threshold=float(threshold),
        onnx_sha256=onnx_sha256,
        unicode_version=UNICODE_VERSION,
        provenance=pb.Provenance(
            blueprint=provenance.blueprint,
            blueprint_sha256=provenance.blueprint_sha256,
            data_sha256=provenance.data_sha256,
            trainer=provenance.trainer,
            foundry_version=__version__,
            train_rows=provenance.train_rows,
            exam_gate=provenance.exam_gate,
        ),
        familiarity=pb.Familiarity(min_order=familiarity.min_order,
                                   max_unfamiliar=familiarity.max_unfamiliar),
        out_of_scope=out_of_scope,
        rules=rules,
    )
    return compact(msg)


def artifact_bytes(
    trained: Any,
    threshold: float,
    *,
    task: str | None = None,
    opset: int = 15,
    provenance: Provenance | None = None,
    familiarity: Familiarity = NO_GATE,
    out_of_scope: str = "",
    reflex: Reflex | None = None,
) -> tuple[bytes, bytes]:
    """The ``(.onnx, .bin)`` bytes of a trained model, without writing anything.

    Used by the exporter and by the trainer's size budget (it measures these lengths).
    """
    task = task or getattr(trained, "task", "task")
    provenance = provenance or Provenance(
        trainer=getattr(trained, "trainer", ""),
        data_sha256=getattr(trained, "data_sha256", ""),
        train_rows=int(getattr(trained, "train_rows", 0)),
    )
    onnx_bytes = classifier_onnx_bytes(trained, task, opset)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    msg = preprocessor_message(trained, task, threshold, digest, provenance, familiarity,
                               out_of_scope, reflex)
    bin_bytes = seal_message(msg)
    # Never write what a runtime would refuse (the rules of docs/preprocessor-spec.md).
    load_preprocessor(bin_bytes, Path(f"{task}_preprocessor.bin (being exported)"), task)
    return onnx_bytes, bin_bytes
