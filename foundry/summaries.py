"""The stage contracts: what each stage hands on, as typed summaries.

Every stage returns one summary per task and persists it in the run folder; the next stage,
the notebooks and the model card read it back by attribute::

    stage      model                                   file in the run folder
    generate   foundry.generate.GenerateSummary        generate/<task>/manifest.json
    refine     RefineSummary                           refine/<task>/summary.json
    train      TrainSummary                            train/<task>/train.json
    evaluate   EvalSummary                             evaluate/<task>/summary.json

(``GenerateSummary`` lives in the generate package, beside the sufficiency table it carries.)

The files keep the keys they always had (sorted, as :func:`foundry.runs.write_json` writes
them). Reading is strict: a key that is not a field, or a field the file lacks, raises
:class:`StageOutputError` naming the file and the field, so a renamed field fails loudly
instead of printing "n/a" in a model card. The few fields that only some tasks have (the
real-text dev split, a model the size budget pruned, the dev-selected trainer) are ``None``
when absent and are left out of the file; nested tables stay plain JSON (dicts and lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from foundry.blueprint import Refine
from foundry.errors import InputDataError
from foundry.runs import read_json, require_stage_output, write_json

__all__ = ["EvalSummary", "GateSummary", "RefineSummary", "StageOutputError",
           "StageSummary", "TrainSummary"]

Json = dict[str, Any]


class StageOutputError(InputDataError):
    """A stage's summary file does not hold the fields its model declares (made by another
    version, or edited by hand); the message names the file, the field and what to run."""


class StageSummary(BaseModel):
    """Base of the stage summaries: strict fields, one file per task in the stage's folder."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    #: The stage that writes it and its file name in ``<run>/<stage>/<task>/``.
    stage: ClassVar[str]
    file_name: ClassVar[str]

    def to_json(self) -> Json:
        """The file's content: every field given (or assigned) since it was made; nested
        models whole (a blueprint section keeps its defaults)."""
        return {k: v for k, v in self.model_dump().items() if k in self.model_fields_set}

    def write(self, folder: Path) -> Path:
        """Write the summary atomically into ``folder`` (the stage's task folder)."""
        path = Path(folder) / self.file_name
        write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> Self:
        """The summary in ``path``; :class:`StageOutputError` naming a wrong or missing field."""
        data = read_json(path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(p) for p in e['loc']) or '(top level)'!r}: {e['msg']}"
                for e in exc.errors()[:5])
            raise StageOutputError(
                f"{path}: {problems}; it was written by another version of the {cls.stage} "
                f"stage or edited by hand: run the {cls.stage} stage again"
            ) from None

    @classmethod
    def load(cls, run_dir: Path, task: str) -> Self:
        """The summary the stage wrote for ``task`` in ``run_dir`` (what to run if missing)."""
        return cls.read(require_stage_output(run_dir, cls.stage, task, cls.file_name))


class RefineSummary(StageSummary):
    """Stage 2 for one task: the funnel, the split and what the audits found."""

    stage: ClassVar[str] = "refine"
    file_name: ClassVar[str] = "summary.json"

    task: str
    labels: list[str]
    #: The blueprint's ``refine`` section the stage ran with.
    config: Refine
    funnel: list[Json]
    input_rows: int
    train_rows: int
    test_rows: int
    label_counts: dict[str, dict[str, int]]
    balance: str
    class_weights: dict[str, float] | None
    augmented_rows: int
    #: SHA-256 of the training split's JSONL bytes (recorded in the ``.bin`` provenance).
    data_sha256: str
    corrections: int
    corrections_kept: int
    corrections_dropped: list[Json]
    exam_texts: int
    dev_texts: int
    real_rows: int
    real_kept: int
    sources: dict[str, int]
    removed_by_reason: dict[str, int]
    near_duplicate_clusters: int
    largest_clusters: list[Json]
    split_groups: int
    largest_split_group: int
    #: None when one split is empty.
    max_train_test_similarity: float | None
    max_train_test_pair: Json
    split_groups_moved_to_train: int
    split_rows_reclustered: int
    split_threshold_max: float
    #: The surface features a model can lean on (``shortcut`` true in the audit).
    shortcuts: list[Json]
    #: :func:`foundry.refine_report.shortcut_audit` of the train split, most suspicious first.
    surface_features: list[Json]
    #: :func:`foundry.refine_report.exam_probe` (None when the stage ran without the probe).
    exam_probe: Json | None = None


class TrainSummary(StageSummary):
    """Stage 3 for one task: the chosen candidate, its size and how it was found."""

    stage: ClassVar[str] = "train"
    file_name: ClassVar[str] = "train.json"

    task: str
    trainer: str
    labels: list[str]
    spec: Json
    sublinear_tf: bool
    best_params: Json
    #: Cross-validated macro-F1 of the best candidate (dev macro-F1 with ``select_on: dev``).
    cv_macro_f1: float
    candidates_evaluated: int
    candidates_total: int
    #: The search took longer than ``train.time_budget_s`` (a warning only).
    budget_hit: bool
    calibration: str
    n_features: int
    n_features_unpruned: int
    #: Non-zero int8 weights of the shipped model when the budget thinned them (sparse
    #: weights, ``foundry.trained.sparsify_to_budget``), of ``n_features * len(labels)``.
    n_weights: int | None = None
    onnx_bytes: int
    bin_bytes: int
    size_bytes: int
    size_budget_bytes: int | None
    size_source: str
    data_sha256: str
    train_rows: int
    seed: int
    elapsed_s: float
    model_format: int
    #: ``select_on: dev`` only: "dev", its rows, the fitted temperature and whether the
    #: shipped model was refitted on train + dev rows (``train.refit_on_dev``).
    selected_on: str | None = None
    dev_rows: int | None = None
    temperature: float | None = None
    refit_on_dev: bool | None = None


class GateSummary(BaseModel):
    """The unfamiliarity gate evaluate chose (``familiarity`` in its summary)."""

    model_config = ConfigDict(extra="forbid")

    min_order: int
    max_unfamiliar: float
    #: ``evaluate.familiarity_quantile``, and the split it was taken on.
    quantile: float
    set_on: str
    #: :func:`foundry.evaluate.gate_effect` on the dev split (else the test split).
    effect: Json


class EvalSummary(StageSummary):
    """Stage 4 for one task: the threshold, the scores on every split and the exam verdict."""

    stage: ClassVar[str] = "evaluate"
    file_name: ClassVar[str] = "summary.json"

    task: str
    labels: list[str]
    trainer: str
    calibration: str
    n_features: int
    size_bytes: int
    threshold: float
    threshold_source: str
    oof_threshold: float
    out_of_scope: Json | None
    test_threshold: float
    dev_threshold: float | None
    familiarity: GateSummary
    target_precision: float
    oof_coverage_at_threshold: float
    oof_confident_precision: float | None
    crossfit_coverage: float
    crossfit_confident_precision: float | None
    test_cases: int
    test_accuracy: float
    test_macro_f1: float
    coverage_at_threshold: float
    confident_precision: float | None
    ece: float
    test_confusion: list[list[int]]
    exam_cases: int
    exam_accuracy: float | None
    exam_confident_share: float | None
    exam_confident_precision: float | None
    exam_hard_accuracy: float | None
    exam_min_accuracy: float
    exam_passed: bool
    failed_exam_cases: list[Json]
    exam_by_category: list[Json]
    exam_missing_categories: list[str]
    #: The test files of a dataset scored at the threshold (None without them).
    heldout: Json | None = None
    #: What the task's reflex rules do on every labelled split (None without rules).
    rules: Json | None = None
    # The real-text dev split (absent without one).
    dev_cases: int | None = None
    dev_in_threshold: bool | None = None
    dev_accuracy: float | None = None
    dev_macro_f1: float | None = None
    dev_coverage: float | None = None
    dev_confident: int | None = None
    dev_confident_correct: int | None = None
    dev_confident_precision: float | None = None
    dev_precision_lower95: float | None = None
    dev_crossfit_coverage: float | None = None
    dev_crossfit_confident_precision: float | None = None
    dev_ece: float | None = None
    dev_confusion: list[list[int]] | None = None
    dev_by_category: list[Json] | None = None
    dev_by_corpus: list[Json] | None = None
    dev_by_length: list[Json] | None = None
    dev_most_confident_errors: list[Json] | None = None
    # What the size budget cost: the unpruned model on the same cases (absent when unpruned).
    unpruned_n_features: int | None = None
    unpruned_test_macro_f1: float | None = None
    unpruned_exam_accuracy: float | None = None
    unpruned_dev_accuracy: float | None = None
