"""Stage summaries for run folders that tests assemble by hand (complete, so they load)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from foundry.blueprint import Refine
from foundry.summaries import EvalSummary, GateSummary, RefineSummary

LABELS = ("Question", "Statement")


def write_refine_summary(run: Path, task: str = "is_question", *, train_rows: int,
                         balance: str = "undersample", labels: tuple[str, ...] = LABELS,
                         data: bytes = b"synthetic") -> RefineSummary:
    """What the refine stage leaves beside a hand-written train split: ``train_rows`` rows,
    the data hash of ``data``; the funnel and audits empty."""
    summary = RefineSummary(
        task=task, labels=list(labels), config=Refine(balance=balance), funnel=[],
        input_rows=train_rows, train_rows=train_rows, test_rows=0,
        label_counts={"train": {}, "test": {}}, balance=balance, class_weights=None,
        augmented_rows=0, data_sha256=hashlib.sha256(data).hexdigest(), corrections=0,
        corrections_kept=0, corrections_dropped=[], exam_texts=0, dev_texts=0, real_rows=0,
        real_kept=0, sources={}, removed_by_reason={}, near_duplicate_clusters=0,
        largest_clusters=[], split_groups=0, largest_split_group=0,
        max_train_test_similarity=0.0, max_train_test_pair={}, split_groups_moved_to_train=0,
        split_rows_reclustered=0, split_threshold_max=0.0, shortcuts=[], surface_features=[])
    summary.write(Path(run) / "refine" / task)
    return summary


def write_eval_summary(run: Path, task: str = "is_question", **fields: Any) -> EvalSummary:
    """An evaluate summary of a model that was never looked at closely: ``fields`` (the
    exam's, the threshold...) over neutral values."""
    values: dict[str, Any] = dict(
        task=task, labels=list(LABELS), trainer="tfidf_logreg", calibration="none",
        n_features=0, size_bytes=0, threshold=0.5, threshold_source="test", oof_threshold=0.5,
        out_of_scope=None, test_threshold=0.5, dev_threshold=None,
        familiarity=GateSummary(min_order=2, max_unfamiliar=1.0, quantile=1.0,
                                set_on="test split", effect={}),
        target_precision=0.95, oof_coverage_at_threshold=1.0, oof_confident_precision=None,
        crossfit_coverage=1.0, crossfit_confident_precision=None, test_cases=0,
        test_accuracy=1.0, test_macro_f1=1.0, coverage_at_threshold=1.0,
        confident_precision=None, ece=0.0, test_confusion=[], exam_cases=0,
        exam_accuracy=None, exam_confident_share=None, exam_confident_precision=None,
        exam_hard_accuracy=None, exam_min_accuracy=0.9, exam_passed=False,
        failed_exam_cases=[], exam_by_category=[], exam_missing_categories=[],
        heldout=None, rules=None)
    summary = EvalSummary(**(values | fields))
    summary.write(Path(run) / "evaluate" / task)
    return summary


def rewritten_differently(run: Path, task: str, folder: Path) -> list[str]:
    """The stage summaries of ``task`` in ``run`` (a run folder a forge made) that do not
    come back byte for byte when read through their model and written again into ``folder``:
    a field the model lost, renamed or reformatted. Empty when every file round-trips."""
    from foundry.generate import GenerateSummary
    from foundry.summaries import TrainSummary

    differ = []
    for model in (GenerateSummary, RefineSummary, TrainSummary, EvalSummary):
        path = Path(run) / model.stage / task / model.file_name
        again = model.read(path).write(Path(folder) / model.stage / task)
        if again.read_bytes() != path.read_bytes():
            differ.append(str(path))
    return differ
