"""Blueprints: the constitution and configuration of a family of tasks.

A blueprint is a folder ``blueprints/<name>/`` with a ``blueprint.yaml`` validated by the
pydantic models below, plus the files it names (constitutions, grammars, seeds, exams).
:func:`load_blueprint` returns a :class:`Blueprint` or raises :class:`BlueprintError` whose
message names the file, the field path and the reason, e.g.
``blueprint.yaml: tasks[1].labels: needs at least 2 labels, got 1``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from foundry.errors import ConfigError
from foundry.paths import BLUEPRINTS_DIR
from foundry.reflex import MAX_RULE_NAME_CHARS, MAX_RULES, MAX_WORD_CHARS, POSITIVE_LISTS

BLUEPRINT_FILE = "blueprint.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
#: A row's length bounds (code points) unless ``generation`` sets them; ``refine`` takes
#: generation's, so a standalone :class:`Refine` starts from the same ones.
ROW_CHARS = {"min_chars": 1, "max_chars": 120}


def is_blueprint_name(name: str) -> bool:
    """Whether ``name`` is a valid blueprint (or task) name: a plain folder or file name."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name))


class BlueprintError(ConfigError):
    """A blueprint is missing, malformed or inconsistent; the message says where and why."""


def positive_weights(weights: dict[str, float]) -> dict[str, float]:
    """``weights`` (source -> weight of its training rows) if every weight is a positive
    number; else a ValueError listing the others."""
    bad = {k: w for k, w in weights.items() if not (w > 0 and math.isfinite(w))}
    if bad:
        raise ValueError(f"weights must be positive finite numbers, got {bad}")
    return weights


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(_Strict):
    name: str = Field(description="the label's name, as the model answers it ([A-Za-z][A-Za-z0-9_]*)")
    definition: str = Field(min_length=1, description="what the label means, for the LLM "
                            "prompt, the model card and the people who write the exam")
    categories: list[str] = Field(
        default_factory=list,
        description="sub-categories of the label: generation is steered across them and the "
                    "exam must cover each of them")

    @field_validator("name")
    @classmethod
    def _label_name(cls, v: str) -> str:
        if not _LABEL.match(v):
            raise ValueError(f"label name {v!r} must match {_LABEL.pattern}")
        return v


DatasetRole = Literal["train", "dev", "test"]


class DatasetFile(_Strict):
    """One labelled file shipped in the blueprint folder, with its role.

    ``train`` rows are the training pool (stage 1 of the ``dataset`` provider reads them);
    ``dev`` rows never train and choose the threshold and calibration (like the real-text
    dev split); ``test`` rows are used only by the evaluate stage and are kept out of training
    like the exam (see :mod:`foundry.datasets`).
    """

    path: str = Field(description="CSV or JSONL file, relative to the blueprint folder")
    role: DatasetRole = Field(description="train (pool), dev (never trains), test (evaluation only)")
    format: Literal["csv", "jsonl"] | None = Field(
        None, description="csv or jsonl; taken from the file extension when omitted")

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        return "csv" if self.path.lower().endswith(".csv") else "jsonl"

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if not v or Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"{v!r} must be a path inside the blueprint folder")
        if not v.lower().endswith((".csv", ".jsonl")):
            raise ValueError(f"{v!r}: only .csv and .jsonl files are read (or set format:)")
        return v


class Dataset(_Strict):
    """Labelled rows of a task read from files (``generation.provider: dataset``)."""

    files: list[DatasetFile] = Field(min_length=1)
    text: str = Field("text", description="the column (CSV) or key (JSONL) holding the text")
    label: str = Field("label", description="the column (CSV) or key (JSONL) holding the label")
    label_map: dict[str, str | None] = Field(
        default_factory=dict,
        description="source label -> task label; null drops rows of that source label; an "
                    "unmapped source label must be a task label itself")
    source: str = Field("", description="where the data comes from (name, version, licence), "
                                        "shown in the model card")
    published: str | None = Field(
        None, description="CSV of published results on the same test files (system, metrics), "
                          "printed beside ours by the evaluate notebook")

    def files_of(self, role: str) -> list[DatasetFile]:
        return [f for f in self.files if f.role == role]


def _word_list(description: str) -> Any:
    return Field(None, description=description)


class Rule(_Strict):
    """A reflex rule (see :mod:`foundry.reflex` and docs/rules.md): word tests on the
    normalised text; the first rule whose every given list is satisfied answers ``label``
    before the model runs."""

    name: str | None = Field(
        None, description=f"the rule's name (letters, digits, _ and -, up to "
                          f"{MAX_RULE_NAME_CHARS}), reported with every answer it gives; "
                          "rule<i> (1-based) when omitted")
    label: str = Field(description="the label the rule answers (one of the task's labels)")
    contains: list[str] | None = _word_list("matches when the text contains any of these words")
    starts_with: list[str] | None = _word_list("matches when the text starts with any of these")
    ends_with: list[str] | None = _word_list("matches when the text ends with any of these")
    equals: list[str] | None = _word_list("matches when the whole text is one of these")
    also_contains: list[str] | None = _word_list(
        "and the text must contain every one of these words too")
    unless_contains: list[str] | None = _word_list(
        "but never when the text contains any of these words")

    @field_validator("name")
    @classmethod
    def _rule_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(rf"[A-Za-z0-9_\-]{{1,{MAX_RULE_NAME_CHARS}}}", v):
            raise ValueError(f"rule name {v!r} must be 1 to {MAX_RULE_NAME_CHARS} letters, "
                             "digits, _ or -")
        return v

    @field_validator("contains", "starts_with", "ends_with", "equals", "also_contains",
                     "unless_contains")
    @classmethod
    def _words(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("an empty word list; give at least one word or leave the key out")
        for word in v:
            if not word.strip():
                raise ValueError(f"the word {word!r} is empty")
            if len(word) > MAX_WORD_CHARS:
                raise ValueError(f"the word {word[:40]!r} has {len(word)} characters; at most "
                                 f"{MAX_WORD_CHARS}")
        return v

    @model_validator(mode="after")
    def _something_to_match(self) -> Rule:
        if not any(getattr(self, name) for name in POSITIVE_LISTS):
            raise ValueError("a rule needs at least one of contains, starts_with, ends_with, "
                             "equals")
        return self


class Task(_Strict):
    name: str = Field(description="the task's name; it names the model files, unique across "
                      "blueprints/")
    description: str = Field("", description="one line on what the task decides (model card)")
    labels: list[Label] = Field(description="two or more labels, in the model's class order")
    constitution: str = Field(description="prompt file, relative to the blueprint folder")
    grammar: str | None = Field(None, description="offline template grammar file")
    seeds: str | None = Field(None, description="hand-written seed rows (JSONL)")
    exam: str = Field(description="hand-written exam (JSONL), never used in training")
    real: str | None = Field(
        None, description="hand-labelled real utterances (JSONL): a training source, `source: real`")
    target_per_task: int | None = Field(
        None, ge=10, description="raw rows wanted for this task; overrides "
                                 "generation.target_per_task for this task only")
    dev: str | None = Field(
        None, description="real-text dev split (JSONL): never trains; chooses the confidence "
                          "threshold and the calibration, reported apart")
    threshold_on_dev: bool = Field(
        True, description="whether the dev split takes part in the confidence threshold (it "
                          "is reported either way); false when it is not the task's traffic")
    features: dict[str, int | bool] | None = Field(
        None, description="this task's text spec settings over train.features (any of its "
                          "keys, e.g. {head_chars: 3}); the others keep the blueprint-wide value")
    source_weights: dict[str, float] | None = Field(
        None, description="this task's weight of a training row by its source (e.g. {real: "
                          "3.0}); a source named here overrides train.source_weights for this "
                          "task only, the others keep the blueprint-wide weight")
    dataset: Dataset | None = Field(
        None, description="labelled files with roles train/dev/test (the dataset provider)")
    out_of_scope: str | None = Field(
        None, description="the label answered when the model is unsure (e.g. oos); chosen by "
                          "evaluate.out_of_scope_recall on dev data")
    rules: list[Rule] = Field(
        default_factory=list, max_length=MAX_RULES,
        description="reflex rules, tried in order on the normalised text before the model "
                    "(docs/rules.md); evaluate fails the forge if one contradicts a gold label")

    @field_validator("name")
    @classmethod
    def _task_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"task name {v!r} must match {_NAME.pattern} (it names files)")
        return v

    @field_validator("source_weights")
    @classmethod
    def _positive_weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return v if v is None else positive_weights(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[Label]) -> list[Label]:
        if len(v) < 2:
            raise ValueError(f"needs at least 2 labels, got {len(v)}")
        names = [label.name for label in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label names: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _dataset_labels(self) -> Task:
        names = set(self.label_names)
        if self.out_of_scope is not None and self.out_of_scope not in names:
            raise ValueError(f"out_of_scope: {self.out_of_scope!r} is not one of the task's "
                             f"labels ({', '.join(self.label_names)})")
        if self.dataset is not None:
            bad = sorted(v for v in self.dataset.label_map.values()
                         if v is not None and v not in names)
            if bad:
                raise ValueError(f"dataset.label_map maps to unknown labels: {', '.join(bad)}")
        for i, rule in enumerate(self.rules):
            if rule.label not in names:
                raise ValueError(f"rules[{i}].label: {rule.label!r} is not one of the task's "
                                 f"labels ({', '.join(self.label_names)})")
        named = [r.name for r in self.rules if r.name is not None]
        if len(set(named)) != len(named):
            raise ValueError(f"rules: repeated rule names "
                             f"{sorted({n for n in named if named.count(n) > 1})}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


class Diversity(_Strict):
    """Hints drawn per LLM request so that batches differ from each other."""

    topics: list[str] = Field(default_factory=list, description="topics, one drawn per request")
    personas: list[str] = Field(default_factory=list,
                                description="who is speaking, one drawn per request")
    styles: list[str] = Field(default_factory=list,
                              description="how they write, one drawn per request")


class Generation(_Strict):
    provider: Literal["offline", "gemini", "openai", "dataset"] = Field(
        "offline", description="where raw rows come from (foundry/generate/registry.py); an "
                               "LLM provider without a configured key falls back to offline")
    model: str = Field("gemini-2.5-flash", description="the Gemini model")
    openai_model: str = Field("qwen2.5:7b-instruct",
                              description="the model of the OpenAI-compatible server")
    target_per_task: int = Field(3000, ge=10, description="raw rows wanted per task")
    samples_per_request: int = Field(25, ge=1, le=500,
                                     description="rows asked of the LLM per request")
    concurrency: int = Field(4, ge=1, le=256, description="LLM requests in flight at once")
    temperature: float = Field(0.9, ge=0.0, le=2.0, description="LLM sampling temperature")
    seed: int = Field(42, description="seed of generation (offline sampling, request seeds); "
                                      "default: the blueprint's seed")
    requests_per_minute: float | None = Field(None, gt=0, description="per key")
    max_retries: int = Field(6, ge=0, description="retries of a failed request before it is "
                                                  "given up (and planned again)")
    request_timeout_s: float = Field(60.0, gt=0, description="seconds before a request "
                                                             "times out")
    max_requests: int | None = Field(None, ge=1, description="budget per task: stop after this many requests")
    max_tokens: int | None = Field(None, ge=1, description="budget per task: stop after this many tokens (in+out)")
    min_chars: int = Field(ROW_CHARS["min_chars"], ge=1,
                           description="generated rows shorter than this are rejected")
    max_chars: int = Field(ROW_CHARS["max_chars"], ge=1,
                           description="generated rows longer than this are rejected (code points)")
    min_label_share: float = Field(
        0.5, ge=0.0, le=1.0,
        description="the data-sufficiency gate: the forge stops after stage 1 if a label ends "
                    "with fewer rows than this share of its target (target_per_task / labels)")
    diversity: Diversity = Field(default_factory=Diversity,
                                 description="hints that make LLM batches differ")

    @model_validator(mode="after")
    def _length_bounds(self) -> Generation:
        return _ordered_bounds(self)


class Refine(_Strict):
    dedup_threshold: float = Field(0.85, gt=0.0, le=1.0, description="shingle Jaccard "
                                   "similarity from which two rows are near-duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    shingle_size: int = Field(3, ge=1, le=16, description="characters per shingle")
    balance: Literal["undersample", "cap", "class_weight", "none"] = Field(
        "undersample",
        description="undersample: every label cut to the rarest; cap: labels above balance_cap "
                    "x the median label cut to that (keeps most rows of an imbalanced many-label "
                    "task); class_weight: inverse-frequency row weights; none")
    balance_cap: float = Field(3.0, ge=1.0, description="balance: cap keeps at most this many "
                                                         "times the median label's train rows")
    test_size: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows held out for "
                                                             "the test split")
    split_threshold: float = Field(0.5, gt=0.0, le=1.0, description="shingle Jaccard from "
                                   "which rows stay on one side of the split")
    min_chars: int = Field(ROW_CHARS["min_chars"], ge=1, description="shorter rows are removed, "
                           "whatever their source; default: generation.min_chars")
    max_chars: int = Field(ROW_CHARS["max_chars"], ge=1, description="longer rows are removed "
                           "(code points), whatever their source; default: generation.max_chars")
    drop_punctuation_augment: float = Field(0.0, ge=0.0, le=1.0, description="share of train "
                                            "rows added again without trailing punctuation")
    seed: int = Field(42, description="seed of balancing, splitting and augmentation; "
                                      "default: the blueprint's seed")
    # exclude: how many processes ran the stage is not one of its settings: it never changes
    # the outputs, so neither the summary that records the settings nor the stamps see it.
    workers: int = Field(
        1, ge=1, le=64, exclude=True,
        description="tasks refined at once, each in a process of its own (foundry.parallel); "
                    "capped at the task and core counts; the outputs are the same for any value")

    @model_validator(mode="after")
    def _length_bounds(self) -> Refine:
        return _ordered_bounds(self)


class Features(_Strict):
    """Text spec settings; see :class:`foundry.textspec.TextSpec`."""

    # The bounds a runtime accepts (docs/preprocessor-spec.md, rules B7 and B8).
    max_chars: int = Field(256, ge=1, le=4096, description="texts are truncated to this many "
                           "code points before n-grams are taken (model and every runtime; "
                           "the .bin carries it); not a row filter: that is refine.max_chars")
    min_n: int = Field(1, ge=1, description="shortest character n-gram")
    max_n: int = Field(3, ge=1, le=8, description="longest character n-gram")
    word_boundary_padding: bool = Field(True, description="pad words with a space at both "
                                        "ends before taking n-grams")
    word_max_n: int = Field(0, ge=0, le=3, description="add word n-grams of orders "
                            "1..word_max_n (words: the space-separated pieces of the "
                            "normalised text; for English, not Chinese); 0: none")
    head_chars: int = Field(0, ge=0, le=16, description="add the n-grams of the first "
                            "head_chars code points of the text's first clause again, marked "
                            "(text spec step 6c: a reply's opening weighed on its own); 0: none")
    sublinear_tf: bool = Field(True, description="weight counts as 1 + ln(count)")

    @model_validator(mode="after")
    def _orders(self) -> Features:
        if self.min_n > self.max_n:
            raise ValueError(f"min_n ({self.min_n}) must be <= max_n ({self.max_n})")
        return self


def task_target(task: Task, generation: Generation, override: int | None = None) -> int:
    """Raw rows wanted for ``task``: ``override`` (``--target``) if given, else the task's
    own ``target_per_task``, else ``generation.target_per_task``."""
    return int(override or task.target_per_task or generation.target_per_task)


def merged_features(base: Features, override: dict[str, Any] | None) -> Features:
    """``base`` with a task's ``features`` keys on top, validated as one :class:`Features`."""
    return Features.model_validate({**base.model_dump(), **(override or {})})


class Train(_Strict):
    trainer: str = Field("tfidf_logreg", description="a trainer of foundry/trainers.py")
    calibration: Literal["auto", "none", "sigmoid", "isotonic", "sigmoid_real"] = Field(
        "auto", description="probability calibration; auto picks by out-of-fold log loss "
        "(by real-text dev log loss when the task has a dev split)")
    features: Features = Field(default_factory=Features,
                               description="the text spec (docs/preprocessor-spec.md)")
    source_weights: dict[str, float] = Field(
        default_factory=dict, description="weight of a training row by its source (e.g. "
        "{real: 2.0}); sources not named weigh 1; tasks[].source_weights overrides it per task")
    grid: dict[str, list[Any]] = Field(
        default_factory=lambda: {"C": [1.0, 4.0, 16.0]},
        description="candidate values per parameter of the trainer, cross-validated")
    cv_folds: int = Field(5, ge=2, le=20, description="cross-validation folds")
    select_on: Literal["cv", "dev"] = Field(
        "cv", description="cv: candidates cross-validated on the training rows; dev: each "
                          "candidate fitted once and scored on the task's dev split (dataset "
                          "files of role dev), which also fits the temperature and the threshold")
    refit_on_dev: bool = Field(
        False, description="with select_on: dev, the shipped model is refitted on the training "
                           "and dev rows once the candidate, vocabulary and size are chosen; its "
                           "temperature and the threshold come from dev rows scored by models "
                           "fitted on the training rows and the other half of dev (dev rows "
                           "equal or near an exam or test text never join training)")
    time_budget_s: float = Field(
        120.0, gt=0,
        description="seconds the grid search should take; longer searches are reported, never "
                    "cut short (a cut would make the chosen model depend on machine speed)")
    seed: int = Field(42, description="seed of folds and estimators; default: the blueprint's "
                                      "seed")
    workers: int = Field(  # excluded from dumps, as refine.workers
        1, ge=1, le=64, exclude=True,
        description="tasks trained at once, each in a process of its own (foundry.parallel: "
                    "the solvers hold the GIL, so threads would not help); capped at the task "
                    "and core counts; the models are the same for any value")

    # The trainer registry is the authority on names, grid keys and values; checking them here
    # means a typo fails when the blueprint is loaded, not after stage 2.
    @field_validator("trainer")
    @classmethod
    def _known_trainer(cls, v: str) -> str:
        from foundry.trainers import TRAINERS

        if v not in TRAINERS:
            close = difflib.get_close_matches(v, list(TRAINERS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown trainer {v!r} (known: {', '.join(sorted(TRAINERS))}){hint}")
        return v

    @field_validator("refit_on_dev")
    @classmethod
    def _refit_needs_dev(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("select_on") != "dev":
            raise ValueError("refit_on_dev: true needs select_on: dev (the dev rows choose the "
                             "candidate, the temperature and the threshold first)")
        return v

    @field_validator("calibration")
    @classmethod
    def _calibration_fits_trainer(cls, v: str, info: ValidationInfo) -> str:
        from foundry.trainers import REAL_SIGMOID, TRAINERS

        trainer = TRAINERS.get(info.data.get("trainer", ""))
        if trainer is not None and v not in ("auto", REAL_SIGMOID, *trainer.calibrations):
            raise ValueError(f"{v!r} is not available for trainer {trainer.name!r}; choose "
                             f"auto or one of {', '.join(trainer.calibrations)}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid_fits_trainer(cls, v: dict[str, list[Any]], info: ValidationInfo
                           ) -> dict[str, list[Any]]:
        from foundry.trainers import TRAINERS, grid_problems

        trainer = TRAINERS.get(info.data.get("trainer", ""))
        if trainer is not None:
            problems = grid_problems(trainer, v)
        else:  # the trainer name is wrong (reported already): still catch unknown keys
            known = sorted({k for t in TRAINERS.values() for k in t.grid_keys})
            problems = [(k, f"not a parameter of any trainer (known: {', '.join(known)})")
                        for k in v if k not in known]
        if problems:
            # One line per problem, "<key>: <reason>", so that every key gets its own error.
            raise ValueError("\n".join(f"{key}: {reason}" for key, reason in problems))
        return v


    @field_validator("source_weights")
    @classmethod
    def _positive_weights(cls, v: dict[str, float]) -> dict[str, float]:
        return positive_weights(v)


class Evaluate(_Strict):
    target_precision: float = Field(0.99, gt=0.5, le=1.0, description="precision the "
                                    "confident answers must reach; sets the threshold")
    exam_min_accuracy: float = Field(0.9, ge=0.0, le=1.0, description="below this exam "
                                     "accuracy the forge stops before export")
    familiarity_quantile: float = Field(
        1.0, gt=0.0, le=1.0, description="the unfamiliarity gate admits this share of the "
        "real-text dev split (else the test split); 1 turns it off")
    out_of_scope_recall: float = Field(
        0.7, gt=0.0, le=1.0,
        description="for a task with out_of_scope: the threshold is the one with the best dev "
                    "in-scope accuracy among those whose dev out-of-scope recall reaches this")
    baselines: bool = Field(
        False, description="fit fastText and the original recipe (char_wb 1-4 + LR C=20) on the "
                           "same training rows and score them on the dataset's test files")


class Export(_Strict):
    opset: int = Field(15, ge=9, le=23, description="ONNX opset of the classifier")
    size_budget_kb: float | None = Field(100.0, gt=0, description=".onnx + .bin together; "
                                         "the vocabulary is pruned to fit (null: no budget)")
    conformance_extra: list[str] = Field(default_factory=list, description="texts added to "
                                         "the conformance vectors every runtime must reproduce")


def _ordered_bounds(section: Any) -> Any:
    if section.min_chars > section.max_chars:
        raise ValueError(f"min_chars ({section.min_chars}) must be <= max_chars "
                         f"({section.max_chars})")
    return section


class BlueprintSpec(_Strict):
    name: str = Field(description="the blueprint's name ([a-z][a-z0-9_]*)")
    description: str = Field("", description="what the blueprint's tasks are for")
    seed: int = Field(42, description="the seed of every stage: generation.seed, refine.seed "
                                      "and train.seed default to it")
    tasks: list[Task] = Field(min_length=1, description="the tasks; one micro-model each")
    generation: Generation = Field(default_factory=Generation, description="stage 1")
    refine: Refine = Field(default_factory=Refine, description="stage 2")
    train: Train = Field(default_factory=Train, description="stage 3")
    evaluate: Evaluate = Field(default_factory=Evaluate, description="stage 4")
    export: Export = Field(default_factory=Export, description="stage 5")

    @model_validator(mode="before")
    @classmethod
    def _shared_settings(cls, data: Any) -> Any:
        """Fill what a section leaves unset from the one place it is decided: every stage's
        seed from ``seed``; the refinery's row-length bounds from ``generation`` (one bound for
        a row's length, whatever its source; ``train.features.max_chars`` is another thing,
        the truncation every runtime applies before taking n-grams)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        seed = data.get("seed", cls.model_fields["seed"].default)
        sections = {name: data.get(name, {}) for name in ("generation", "refine", "train")}
        if not all(isinstance(section, dict) for section in sections.values()):
            return data  # the field validation names the section that is not a mapping
        for name, section in sections.items():
            # A seed that is not a number is reported once, at ``seed``, not in every section.
            data[name] = {"seed": seed, **section} if isinstance(seed, int) else section
        generation = sections["generation"]
        bounds = {bound: generation.get(bound, default) for bound, default in ROW_CHARS.items()}
        data["refine"] = {**bounds, **data["refine"]}
        return data

    @field_validator("name")
    @classmethod
    def _bp_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"blueprint name {v!r} must match {_NAME.pattern}")
        return v

    @model_validator(mode="after")
    def _task_features(self) -> BlueprintSpec:
        """Each task's ``features`` must make valid settings over ``train.features``."""
        for i, task in enumerate(self.tasks):
            if task.features is None:
                continue
            unknown = sorted(set(task.features) - set(Features.model_fields))
            if unknown:
                raise ValueError(f"tasks[{i}] ({task.name}).features: unknown key(s) "
                                 f"{', '.join(unknown)}; allowed: "
                                 f"{', '.join(Features.model_fields)}")
            try:
                merged_features(self.train.features, task.features)
            except ValidationError as exc:
                why = "; ".join(".".join(map(str, e["loc"])) + (": " if e["loc"] else "")
                                + e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise ValueError(f"tasks[{i}] ({task.name}).features: {why}") from None
        return self

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, v: list[Task]) -> list[Task]:
        names = [t.name for t in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate task names: {', '.join(dupes)}")
        return v


def field_reference(model: type[BaseModel] | None = None, prefix: str = ""
                    ) -> list[tuple[str, str, str]]:
    """``(path, default, description)`` of every field a blueprint may set, sections and list
    items included (``train.grid``, ``tasks[].labels[].categories``), in schema order.

    What ``foundry blueprint check --explain`` prints; ``tests/test_blueprint.py`` keeps every
    field described.
    """
    out: list[tuple[str, str, str]] = []
    for name, info in (model or BlueprintSpec).model_fields.items():
        path = f"{prefix}{name}"
        nested, suffix = _section_model(info.annotation)
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = "" if nested else json.dumps(info.default_factory())
        else:
            default = json.dumps(info.default)
        out.append((path + suffix, default, info.description or ""))
        if nested is not None:
            out += field_reference(nested, f"{path}{suffix}.")
    return out


def _section_model(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model of a nested section (``Generation``) or list item (``list[Task]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    args = get_args(annotation)
    if get_origin(annotation) is list and args and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        return args[0], "[]"
    return None, ""


class Blueprint:
    """A validated blueprint and the folder it lives in."""

    def __init__(self, spec: BlueprintSpec, root: Path) -> None:
        self.spec = spec
        self.root = root

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tasks(self) -> list[Task]:
        return self.spec.tasks

    def task(self, name: str) -> Task:
        for t in self.spec.tasks:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.spec.tasks)
        raise BlueprintError(f"{self.root / BLUEPRINT_FILE}: no task {name!r} (tasks: {known})")

    def features(self, task: Task) -> Features:
        """``task``'s text spec settings: ``train.features`` with the task's own ``features``
        on top."""
        return merged_features(self.spec.train.features, task.features)

    def target(self, task: Task, override: int | None = None) -> int:
        """Raw rows wanted for ``task`` (:func:`task_target`)."""
        return task_target(task, self.spec.generation, override)

    def source_weights(self, task: Task) -> dict[str, float]:
        """Weight of ``task``'s training rows by source: ``train.source_weights`` with the
        task's own ``source_weights`` on top (sources named in neither weigh 1)."""
        return {**self.spec.train.source_weights, **(task.source_weights or {})}

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the blueprint."""
        return self.root / relative

    def content_sha256(self) -> str:
        """Hash of every file in the blueprint folder except corrections, in path order."""
        h = hashlib.sha256()
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or "corrections" in p.relative_to(self.root).parts:
                continue
            h.update(p.relative_to(self.root).as_posix().encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"Blueprint({self.name!r}, tasks={[t.name for t in self.tasks]})"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        msg = e["msg"]
        msg = msg.removeprefix("Value error, ")
        if e["loc"] and e["loc"][-1] == "grid":  # "<key>: <reason>" per line
            lines += [f"{source}: {_loc(e['loc'])}.{line}" for line in msg.splitlines()]
        else:
            lines.append(f"{source}: {_loc(e['loc'])}: {msg}")
    return "\n".join(lines)


def resolve_blueprint_dir(name_or_path: str | Path) -> Path:
    """Return the folder of a blueprint given by name (under ``blueprints/``) or path."""
    p = Path(name_or_path)
    if p.name == BLUEPRINT_FILE:
        p = p.parent
    if p.is_dir():
        return p.resolve()
    candidate = BLUEPRINTS_DIR / str(name_or_path)
    if candidate.is_dir():
        return candidate.resolve()
    known = sorted(d.name for d in BLUEPRINTS_DIR.iterdir() if (d / BLUEPRINT_FILE).is_file()) \
        if BLUEPRINTS_DIR.is_dir() else []
    raise BlueprintError(
        f"no blueprint {str(name_or_path)!r}: not a folder, and not a name under "
        f"{BLUEPRINTS_DIR} (known: {', '.join(known) or 'none'})"
    )


def load_blueprint(name_or_path: str | Path, *, check_files: bool = True) -> Blueprint:
    """Load and validate a blueprint by name or path.

    Raises
    ------
    BlueprintError
        With ``<file>: <field path>: <reason>`` for every problem found.
    """
    root = resolve_blueprint_dir(name_or_path)
    file = root / BLUEPRINT_FILE
    if not file.is_file():
        raise BlueprintError(f"{file}: missing; a blueprint folder needs a {BLUEPRINT_FILE}")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BlueprintError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise BlueprintError(f"{file}: (top level): expected a mapping, got {type(raw).__name__}")
    try:
        spec = BlueprintSpec.model_validate(raw)
    except ValidationError as exc:
        raise BlueprintError(_format_errors(str(file), exc)) from None
    bp = Blueprint(spec, root)
    if check_files:
        problems = []
        for i, t in enumerate(spec.tasks):
            for field in ("constitution", "grammar", "seeds", "exam", "real", "dev"):
                rel = getattr(t, field)
                if rel is not None and not (root / rel).is_file():
                    problems.append(f"{file}: tasks[{i}].{field}: file not found: {root / rel}")
            if t.dataset is not None and t.dataset.published and not (
                    root / t.dataset.published).is_file():
                problems.append(f"{file}: tasks[{i}].dataset.published: file not found: "
                                f"{root / t.dataset.published}")
            for j, f in enumerate(t.dataset.files if t.dataset else ()):
                if not (root / f.path).is_file():
                    problems.append(f"{file}: tasks[{i}].dataset.files[{j}].path: file not "
                                    f"found: {root / f.path}")
        if problems:
            raise BlueprintError("\n".join(problems))
    return bp
