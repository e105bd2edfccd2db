"""Replaying ``<task>_conformance.json``: every vector's normalised text, features,
probabilities, label, unfamiliarity, rule and confidence against the loaded model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foundry.errors import ArtifactError
from foundry.runtime.model import MicroModel
from foundry.textspec import normalize


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
