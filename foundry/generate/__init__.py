"""Stage 1: generate labelled raw data for every task of a blueprint.

Providers: ``offline`` (template grammar + hand-written seeds shipped in the blueprint; no
network, no key), ``gemini`` and ``openai`` (see :mod:`foundry.generate.engine`). Raw rows
are appended to ``data/raw/<blueprint>/<stream>/<task>.jsonl`` (outside ``runs/``, so
``make clean-runs`` never deletes them; see :func:`foundry.runs.raw_dir`), where the stream
names the provider and model (or, offline, a hash of the grammar), so re-running resumes a
stream instead of starting over. The run folder gets a manifest per task naming the raw file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationInfo, field_serializer, field_validator

from foundry.blueprint import Blueprint, Task
from foundry.generate.rawstore import RawStore
from foundry.generate.registry import NAMES as PROVIDERS
from foundry.generate.registry import provider_configured, provider_entry
from foundry.generate.sufficiency import (
    InsufficientDataError,
    Sufficiency,
    check_sufficiency,
    measure,
)
from foundry.runs import blueprint_runs_dir, migrate_raw_store, raw_dir, stage_dir
from foundry.stamps import write_stamp
from foundry.summaries import StageSummary

__all__ = ["GenerateSummary", "InsufficientDataError", "check_data_sufficiency",
           "generate_stage", "generate_task", "provider_configured", "resolve_provider"]



def __getattr__(name: str):
    # One GenerationError for the whole stage: the engine's (imported lazily, since the
    # engine imports this package's submodules).
    if name in {"GenerationError", "MissingKeyError"}:
        from foundry.generate import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GenerateSummary(StageSummary):
    """Stage 1 for one task: the raw stream that feeds the run and how full it is
    (``generate/<task>/manifest.json``, see :mod:`foundry.summaries`)."""

    stage: ClassVar[str] = "generate"
    file_name: ClassVar[str] = "manifest.json"

    task: str
    provider: str
    stream: str
    #: Absolute paths of the raw JSONL files the refinery reads, in order.
    raw_files: list[str]
    rows: int
    #: Rows this call stored (0 when the stream already held the target).
    added: int
    target: int
    #: Rows against target per label and sub-category (None for a dataset, which holds
    #: what it holds); in the file as :meth:`Sufficiency.to_dict`.
    sufficiency: Sufficiency | None
    #: What the provider reports: the offline capacity and statistics, the LLM engine's
    #: report, a dataset's label counts.
    details: dict[str, Any]

    @field_validator("sufficiency", mode="before")
    @classmethod
    def _sufficiency_from_file(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict):
            return Sufficiency.from_dict(info.data.get("task", ""), value)
        return value

    @field_serializer("sufficiency")
    def _sufficiency_to_file(self, value: Sufficiency | None) -> dict[str, Any] | None:
        return None if value is None else value.to_dict()

    @property
    def raw_file(self) -> Path:
        """The raw stream's file (the first of :attr:`raw_files`)."""
        return Path(self.raw_files[0])


def resolve_provider(bp: Blueprint, override: str | None, log: Callable[[str], None]) -> str:
    """The provider to use: an explicit override, else the blueprint's, else ``offline``.

    A blueprint default of ``gemini``/``openai`` with no key configured falls back to
    ``offline`` (with a message); an explicit override without a key is an error.
    """
    from foundry.generate.engine import GenerationError, MissingKeyError

    if override:
        if override not in PROVIDERS:
            raise GenerationError(
                f"unknown provider {override!r}; choose one of {', '.join(PROVIDERS)}"
            )
        if not provider_configured(override):
            raise MissingKeyError(
                f"provider {override!r} needs "
                f"{' or '.join(provider_entry(override).key_variables)} in the environment or .env"
            )
        return override
    provider = bp.spec.generation.provider
    if not provider_configured(provider):
        log(f"{' / '.join(provider_entry(provider).key_variables)} not set: using the offline "
            f"provider, not {provider!r}")
        return "offline"
    return provider


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def offline_stream(bp: Blueprint, task: Task, target: int) -> str:
    """Stream name of offline data: changes whenever the grammar, seeds, seed or target do."""
    h = hashlib.sha256()
    for rel in (task.grammar, task.seeds):
        if rel:
            h.update(bp.path(rel).read_bytes())
        h.update(b"\0")
    h.update(f"{bp.spec.generation.seed}:{target}".encode())
    return f"offline-{h.hexdigest()[:12]}"


def stream_for(bp: Blueprint, task: Task, provider: str, target: int) -> str:
    if provider == "offline":
        return offline_stream(bp, task, target)
    if provider == "dataset":
        from foundry.datasets import dataset_fingerprint

        return f"dataset-{dataset_fingerprint(bp, task)}"
    model = getattr(bp.spec.generation, provider_entry(provider).model_field or "model")
    return f"{provider}-{_safe(model)}"


def _generate_offline(
    bp: Blueprint, task: Task, store: RawStore, target: int, log: Callable[[str], None]
) -> dict:
    from foundry.generate.offline import generate_offline

    result = generate_offline(bp, task, target=target, seed=bp.spec.generation.seed)
    for message in [*result.exhausted, *result.stats.get("warnings", [])]:
        log(f"{task.name}: {message}")
    size = bp.spec.generation.samples_per_request
    for start in range(0, len(result.rows), size):
        store.append_batch(f"offline-{start // size:06d}", result.rows[start : start + size])
    capacity = result.capacity
    if hasattr(capacity, "to_dict"):
        capacity = capacity.to_dict(orient="records")
    return {"capacity": capacity, "stats": getattr(result, "stats", None)}


#: Rows per raw-store batch of the dataset provider.
DATASET_BATCH = 1000


def _generate_dataset(bp: Blueprint, task: Task, store: RawStore, log: Callable[[str], None]
                      ) -> dict:
    """Store the task's ``train`` dataset rows (all of them; batches make it idempotent)."""
    from foundry.datasets import DatasetError, load_dataset

    if task.dataset is None or not task.dataset.files_of("train"):
        raise DatasetError(f"{bp.root / 'blueprint.yaml'}: task {task.name!r}: the dataset "
                           "provider needs a tasks[].dataset section with a file of role train")
    rows = [r.as_row() for r in load_dataset(bp, task, "train")]
    for start in range(0, len(rows), DATASET_BATCH):
        store.append_batch(f"dataset-{start // DATASET_BATCH:06d}",
                           rows[start : start + DATASET_BATCH])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    log(f"{task.name}: {len(rows)} dataset rows, {len(counts)} labels "
        f"(fewest {min(counts.values(), default=0)}, most {max(counts.values(), default=0)})")
    return {"dataset_rows": len(rows), "label_counts": dict(sorted(counts.items()))}


def _offline_quotas(details: dict) -> dict[tuple[str, str], int] | None:
    """The offline provider's rows per (label, category) when it generated in this call."""
    categories = ((details or {}).get("stats") or {}).get("categories")
    if not categories:
        return None
    return {(c["label"], c["category"]): c["quota"] for c in categories}


def generate_task(
    bp: Blueprint,
    task: Task,
    run_dir: Path,
    *,
    provider: str,
    target: int,
    log: Callable[[str], None] = print,
) -> GenerateSummary:
    """Fill the task's raw stream up to ``target`` rows and write the run's manifest.

    Raw streams live in ``data/raw/<blueprint>/<stream>/`` (:func:`foundry.runs.raw_dir`) so
    that every run of the blueprint shares, and resumes, the same raw data; a store still in
    its old place, ``runs/<blueprint>/raw/``, is moved there first
    (:func:`foundry.runs.migrate_raw_store`).
    """
    stream = stream_for(bp, task, provider, target)
    if Path(run_dir).resolve().parent == blueprint_runs_dir(bp.name).resolve():
        migrate_raw_store(bp.name, log=log)
    raw_file = raw_dir(bp.name, run_dir) / stream / f"{task.name}.jsonl"
    # The store's lock is taken before the file is read: a concurrent forge of this stream
    # waits here, then finds the rows the other one stored and generates only what is missing.
    with RawStore(raw_file, log=log) as store:
        if store.set_aside:
            log(f"{task.name}: set aside {store.set_aside} torn/incomplete rows into "
                f"{store.torn_path}")
        before = len(store)
        details: dict = {}
        if provider == "dataset":
            details = _generate_dataset(bp, task, store, log)
        elif len(store) < target:
            if provider == "offline":
                details = _generate_offline(bp, task, store, target, log)
            else:
                from foundry.generate.engine import generate_llm

                report = generate_llm(
                    bp, task, provider=provider, store=store,
                    quarantine_path=raw_file.with_suffix(".quarantine.jsonl"), target=target,
                    log=log,
                )
                details = {"report": report.to_dict() if hasattr(report, "to_dict")
                           else str(report)}
    # A dataset holds what it holds: the sufficiency gate is for generators asked for a target.
    sufficiency = None if provider == "dataset" else measure(
        task, store.rows, target, bp.spec.generation.min_label_share, _offline_quotas(details))
    summary = GenerateSummary(
        task=task.name, provider=provider, stream=stream, raw_files=[str(raw_file.resolve())],
        rows=len(store), added=len(store) - before, target=target, sufficiency=sufficiency,
        details=details,
    )
    summary.write(stage_dir(run_dir, "generate", task.name))
    write_stamp(bp, run_dir, "generate", task.name)
    log(f"{task.name}: {summary.rows} raw rows in {raw_file} ({summary.added} new, {provider})")
    if sufficiency is not None:
        log(sufficiency.summary())
    return summary


def check_data_sufficiency(summaries: dict[str, GenerateSummary], blueprint: str) -> None:
    """The data-sufficiency gate of stage 1: raise :class:`InsufficientDataError` if a label of
    any task ended below ``generation.min_label_share`` of its target."""
    check_sufficiency({name: s.sufficiency for name, s in summaries.items()
                       if s.sufficiency is not None}, blueprint)


def generate_stage(
    bp: Blueprint,
    run_dir: Path,
    *,
    provider: str | None = None,
    target: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, GenerateSummary]:
    """Run stage 1 for every task; ``provider``/``target`` override the blueprint (``target``
    replaces every task's own target)."""
    chosen = resolve_provider(bp, provider or None, log)
    return {
        t.name: generate_task(
            bp, t, Path(run_dir), provider=chosen, target=bp.target(t, target), log=log
        )
        for t in bp.tasks
    }
