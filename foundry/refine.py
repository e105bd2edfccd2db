"""Stage 2: refine generated rows into a leak-free, explained train/test split.

The funnel, in order (every removed row is kept in ``removed.jsonl`` with its reason):

1. ``invalid_label``  label not one of the task's labels;
2. ``empty``          text missing, not a string, or empty after normalisation;
3. ``length``         normalised length outside ``[refine.min_chars, refine.max_chars]``;
4. ``exam_overlap``   normalised text equal to an exam text, or a near-duplicate of one
                      (exact shingle Jaccard >= ``dedup_threshold``): the exam never trains;
5. ``dev_overlap``    the same for the texts of the task's real-text dev split (``dev:`` in
                      the blueprint): the dev split never trains either;
6. ``exact_duplicate`` same normalised text and label: one row is kept;
7. ``correction_override`` a human correction has the same or a near-same text: the
                      generated row (any label) gives way to the correction;
8. ``conflict``       the same or a near-same text under different labels (no correction
                      decides): every row involved is dropped and listed, except that a
                      hand-labelled real row stands against a generated one (only the
                      generated row is dropped) and two human rows are both kept;
9. ``near_duplicate`` same-label near-duplicate clusters (union of verified LSH matches):
                      one representative is kept per cluster;
10. ``augment``       (adds rows) ``drop_punctuation_augment`` duplicates a fraction of the
                      train rows that end in punctuation, with that punctuation dropped;
11. ``balance``       ``undersample`` removes train rows of the larger labels (never a
                      correction or a real row; ``cap``: only of the labels above
                      ``balance_cap`` x the median label).

Whenever one row of several is kept, the preference is: human correction > real
utterance (the blueprint's ``real:`` file) > seed > LLM row > grammar row > unknown
source, then the first seen (for corrections: the last line, because a corrections file is
a log in which a later line supersedes an earlier one).

The split is stratified by label and grouped by the connected components of the graph
"shingle Jaccard >= ``split_threshold``", so near-paraphrases never straddle train and
test; groups holding a human correction or a real row always go to train (real text is
evaluated on the dev split instead). All text comparisons use the normalised text of
:func:`foundry.textspec.normalize`; output rows keep the original text.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundry import minhash as mh
from foundry.blueprint import Blueprint, Refine, Task
from foundry.datasets import DATASET_SOURCE, load_dataset
from foundry.generate import GenerateSummary
from foundry.generate.rawstore import dump_line, read_jsonl
from foundry.parallel import map_tasks
from foundry.realtext import load_real
from foundry.refine_report import MANY_LABELS, exam_probe, shortcut_audit, write_report
from foundry.runs import atomic_write_text, stage_dir
from foundry.stamps import check_fresh, write_stamp
from foundry.summaries import RefineSummary
from foundry.textspec import TextSpec, normalize

#: Normaliser settings for comparing texts: the text spec without truncation, so that the
#: length rule sees the real length.
COMPARE_SPEC = TextSpec(max_chars=1_000_000)

#: Lower is preferred when one row of several is kept.
SOURCE_PRIORITY: dict[str, int] = {
    "correction": 0,
    "real": 1,
    "seed": 2,
    DATASET_SOURCE: 2,
    "llm": 3,
    "gemini": 3,
    "openai": 3,
    "grammar": 4,
}
UNKNOWN_SOURCE_PRIORITY = 5
#: Sources that only the blueprint's own files may claim (a generated row saying it is a
#: correction or a real utterance is treated as of unknown source).
HUMAN_SOURCES = ("correction", "real")

#: Funnel steps in order; ``augment`` adds rows, every other step removes rows.
STEPS = (
    "input",
    "invalid_label",
    "empty",
    "length",
    "exam_overlap",
    "dev_overlap",
    "exact_duplicate",
    "correction_override",
    "conflict",
    "near_duplicate",
    "augment",
    "balance",
)
REMOVAL_REASONS = tuple(s for s in STEPS if s not in ("input", "augment"))

#: Environment variable with a Redis URL for the LSH index (see docs/refine.md).
REDIS_ENV = "FOUNDRY_LSH_REDIS"
#: The exact train/test similarity search compares at most this many test rows (a seeded
#: sample beyond it) with every train row.
MAX_SIMILARITY_TEST_ROWS = 20_000


@dataclass
class RefineResult:
    """Everything the refine stage decided for one task.

    Attributes
    ----------
    train, test : list of dict
        Output rows ``{"text", "label", "category", "source"}`` (+ ``"weight"`` with
        ``balance: class_weight``, + ``"augment"`` on rows added by augmentation).
    removed : list of dict
        Every removed input row with ``reason`` (a funnel step) and ``detail``.
    summary : RefineSummary
        What the next stages and the notebook read, written to ``summary.json``.
    clusters : list of dict
        Near-duplicate clusters, largest first (``size`` rows, ``texts``, ``kept``).
    """

    task: str
    train: list[dict]
    test: list[dict]
    removed: list[dict]
    summary: RefineSummary
    clusters: list[dict] = field(default_factory=list)

    def train_bytes(self) -> bytes:
        return jsonl_bytes(self.train)

    def test_bytes(self) -> bytes:
        return jsonl_bytes(self.test)


def jsonl_bytes(rows: Iterable[dict]) -> bytes:
    return "".join(dump_line(r) for r in rows).encode("utf-8")


# ----------------------------------------------------------------------------------------
# Row bookkeeping


@dataclass
class _Row:
    index: int
    text: str
    label: str
    category: str
    source: str
    norm: str = ""
    alive: bool = True
    augment_of: int | None = None  # index of the row this augmented copy was made from
    is_correction: bool = False  # read from the corrections file
    is_real: bool = False  # read from the blueprint's real-text file

    @property
    def is_human(self) -> bool:
        """Labelled by a person: a correction or a real utterance."""
        return self.is_correction or self.is_real

    @property
    def priority(self) -> int:
        if self.is_correction:
            return SOURCE_PRIORITY["correction"]
        if self.is_real:
            return SOURCE_PRIORITY["real"]
        if self.source in HUMAN_SOURCES:  # only the blueprint's own files speak for humans
            return UNKNOWN_SOURCE_PRIORITY
        return SOURCE_PRIORITY.get(self.source, UNKNOWN_SOURCE_PRIORITY)

    def preference(self) -> tuple[int, int]:
        """Sort key: smaller is kept. Later corrections supersede earlier ones."""
        return (self.priority, -self.index if self.is_correction else self.index)

    def out(self) -> dict:
        return {"text": self.text, "label": self.label, "category": self.category,
                "source": self.source}


class _Funnel:
    """Counts rows in and out of every step, overall and per label."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.steps: list[dict] = []

    def record(self, step: str, rows: Iterable[_Row], rows_in: int | None = None) -> None:
        rows = list(rows)
        prev = self.steps[-1]["rows_out"] if self.steps else len(rows)
        counts = Counter(r.label for r in rows if isinstance(r.label, str))
        rows_in = prev if rows_in is None else rows_in
        self.steps.append({
            "step": step,
            "rows_in": rows_in,
            "rows_out": len(rows),
            "removed": max(rows_in - len(rows), 0),
            "added": max(len(rows) - rows_in, 0),
            "by_label": {label: counts.get(label, 0) for label in self.labels},
        })


def _as_rows(rows: Iterable[dict], corrections: Iterable[dict],
             real: Iterable[dict] = ()) -> list[_Row]:
    out: list[_Row] = []
    for r in rows:
        out.append(_Row(len(out), r.get("text"), r.get("label"), str(r.get("category") or ""),
                        str(r.get("source") or "")))
    for r in real:
        out.append(_Row(len(out), r.get("text"), r.get("label"), str(r.get("category") or ""),
                        "real", is_real=True))
    for r in corrections:
        out.append(_Row(len(out), r.get("text"), r.get("label"), str(r.get("category") or ""),
                        "correction", is_correction=True))
    return out


def _removal(row: _Row, reason: str, detail: str, **extra: Any) -> dict:
    return {**row.out(), "index": row.index, "reason": reason, "detail": detail, **extra}


# ----------------------------------------------------------------------------------------
# The funnel rules


def _filter_basic(rows: list[_Row], task: Task, cfg: Refine, funnel: _Funnel,
                  removed: list[dict]) -> list[_Row]:
    """Steps 1-3: invalid label, empty text, length bounds."""
    labels = set(task.label_names)
    known = ", ".join(task.label_names)
    alive = []
    for r in rows:
        if not isinstance(r.label, str) or r.label not in labels:
            removed.append(_removal(r, "invalid_label", f"label {r.label!r} is not one of {known}"))
        else:
            alive.append(r)
    funnel.record("invalid_label", alive)
    rows, alive = alive, []
    for r in rows:
        if not isinstance(r.text, str):
            removed.append(_removal(r, "empty", f"text is {type(r.text).__name__}, not a string"))
            continue
        r.norm = normalize(r.text, COMPARE_SPEC)
        if not r.norm:
            removed.append(_removal(r, "empty", "empty after normalisation"))
        else:
            alive.append(r)
    funnel.record("empty", alive)
    rows, alive = alive, []
    for r in rows:
        n = len(r.norm)
        if n < cfg.min_chars or n > cfg.max_chars:
            removed.append(_removal(
                r, "length", f"{n} characters, outside [{cfg.min_chars}, {cfg.max_chars}]"))
        else:
            alive.append(r)
    funnel.record("length", alive)
    return alive


@dataclass
class _Texts:
    """Unique normalised texts: shingle sets, MinHash signatures, sparse shingle matrix."""

    texts: list[str]
    sets: list[frozenset[str]]
    minhashes: list
    matrix: mh.ShingleMatrix

    @classmethod
    def build(cls, texts: list[str], cfg: Refine, progress: bool | None) -> _Texts:
        sets = [mh.shingles(t, cfg.shingle_size) for t in texts]
        sigs = mh.signatures(sets, num_perm=cfg.num_perm, seed=cfg.seed, progress=progress)
        return cls(texts, sets, sigs, mh.ShingleMatrix(sets))


def held_out_overlap(uniq: _Texts, held_out: Sequence[str], cfg: Refine
                     ) -> dict[int, tuple[str, float]]:
    """Unique-text positions equal or near (exact Jaccard >= ``dedup_threshold``) to a
    held-out text (exam or dev) -> (closest held-out text, similarity). Exact, not LSH:
    held-out texts must never leak into training."""
    held_norm = sorted({normalize(t, COMPARE_SPEC) for t in held_out} - {""})
    if not held_norm or not uniq.texts:
        return {}
    queries = uniq.matrix.encode([mh.shingles(t, cfg.shingle_size) for t in held_norm])
    cross = mh.cross_jaccard(queries, (uniq.matrix.matrix, uniq.matrix.sizes),
                             threshold=cfg.dedup_threshold)
    hits: dict[int, tuple[str, float]] = {}
    order = np.lexsort((cross.queries, -cross.similarity))  # best first, then file order
    for k in order.tolist():
        pos = int(cross.corpus[k])
        if pos not in hits:
            hits[pos] = (held_norm[int(cross.queries[k])], float(cross.similarity[k]))
    return hits


def near_held_out(texts: Sequence[str], held_out: Sequence[str], cfg: Refine) -> set[int]:
    """Positions of ``texts`` equal or near (exact shingle Jaccard >= ``dedup_threshold``) to
    a held-out text, by the funnel's own test (:func:`held_out_overlap`): for rows that join
    training after the refinery (the dev rows of ``train.refit_on_dev``)."""
    norms = [normalize(t, COMPARE_SPEC) for t in texts]
    uniq = sorted(set(norms))
    hits = held_out_overlap(_Texts.build(uniq, cfg, progress=False), held_out, cfg)
    near = {uniq[i] for i in hits}
    return {i for i, norm in enumerate(norms) if norm in near}


#: Funnel steps that drop a row for what it is, whoever wrote it: a human correction too.
DROPS_ANY_ROW = ("invalid_label", "empty", "length", "exam_overlap")


def correction_problem(text: str, label: str, task: Task, cfg: Refine,
                       exam_texts: Sequence[str]) -> tuple[str, str] | None:
    """Why the refinery would drop a correction ``text -> label``: ``(reason, detail)`` with the
    reason one of :data:`DROPS_ANY_ROW`, or None when it would learn it.

    The same tests as the funnel's first steps (steps 1-4): the label, the normalised text,
    its length against ``refine.min_chars``/``max_chars``, and equality or near-duplication
    (exact shingle Jaccard >= ``refine.dedup_threshold``) with an exam text. The lab asks this
    before it records a correction, so that a human's answer is never dropped silently.
    """
    if label not in task.label_names:
        return "invalid_label", f"label {label!r} is not one of {', '.join(task.label_names)}"
    norm = normalize(text, COMPARE_SPEC)
    if not norm:
        return "empty", "nothing is left of it after normalisation"
    if not cfg.min_chars <= len(norm) <= cfg.max_chars:
        return "length", (f"{len(norm)} characters, outside [{cfg.min_chars}, {cfg.max_chars}] "
                          "(refine.min_chars, refine.max_chars)")
    hit = held_out_overlap(_Texts.build([norm], cfg, progress=False), exam_texts, cfg).get(0)
    if hit is not None:
        exam_text, sim = hit
        what = "equals" if sim == 1.0 else f"is a near-duplicate ({sim:.2f}) of"
        return "exam_overlap", f"{what} the exam text {exam_text!r}"
    return None


def _drop_held_out(rows: list[_Row], uniq: _Texts, held_out: Sequence[str], cfg: Refine,
                   step: str, what: str, removed: list[dict]) -> list[_Row]:
    """Remove the rows equal or near to a held-out text; each removal names that text."""
    hits = held_out_overlap(uniq, held_out, cfg)
    pos = {t: i for i, t in enumerate(uniq.texts)}
    kept = []
    for r in rows:
        hit = hits.get(pos[r.norm])
        if hit is None:
            kept.append(r)
        else:
            text, sim = hit
            relation = "equals" if sim == 1.0 else f"is a near-duplicate ({sim:.2f}) of"
            removed.append(_removal(r, step, f"{relation} {what}", **{step.split("_")[0]: text}))
    return kept


def _group_best(rows: list[_Row]) -> _Row:
    return min(rows, key=_Row.preference)


@dataclass
class _Resolution:
    """What the dedupe-and-resolve steps share: the similarity pairs between the rows that
    survived exact deduplication, how many input rows each kept row stands for, and the
    near-duplicate clusters the last step found."""

    pos: dict[str, int]
    edges: list[mh.Edge]
    pairs: list[tuple[_Row, _Row, float]] = field(default_factory=list)
    merged_rows: dict[int, int] = field(default_factory=dict)
    clusters: list[dict] = field(default_factory=list)


#: A funnel step: ``(rows, shared state) -> (survivors, removals)``.
_Step = Callable[[list[_Row], _Resolution], tuple[list[_Row], list[dict]]]


def _similar_pairs(items: list[_Row], pos: dict[str, int], edges: list[mh.Edge]
                   ) -> list[tuple[_Row, _Row, float]]:
    """Pairs of rows with the same text (similarity 1) or a verified similarity edge."""
    by_text: dict[int, list[_Row]] = defaultdict(list)
    for r in items:
        by_text[pos[r.norm]].append(r)
    pairs: list[tuple[_Row, _Row, float]] = []
    for group in by_text.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                pairs.append((a, b, 1.0))
    for e in edges:
        for a in by_text.get(e.a, ()):
            for b in by_text.get(e.b, ()):
                pairs.append((a, b, e.similarity))
    return pairs


def _exact_duplicates(rows: list[_Row], state: _Resolution) -> tuple[list[_Row], list[dict]]:
    """Step 5: one row per (text, label); records the similarity pairs of the survivors."""
    by_key: dict[tuple[str, str], list[_Row]] = defaultdict(list)
    for r in rows:
        by_key[(r.norm, r.label)].append(r)
    items: list[_Row] = []
    removed: list[dict] = []
    for group in by_key.values():
        best = _group_best(group)
        items.append(best)
        state.merged_rows[best.index] = len(group)
        for r in group:
            if r is not best:
                removed.append(_removal(r, "exact_duplicate", "same normalised text and label",
                                        kept=best.text))
    items.sort(key=lambda r: r.index)
    state.pairs = _similar_pairs(items, state.pos, state.edges)
    return items, removed


def _correction_overrides(rows: list[_Row], state: _Resolution
                          ) -> tuple[list[_Row], list[dict]]:
    """Step 6: corrections override generated rows with the same or a near-same text."""
    overridden: dict[int, tuple[_Row, float]] = {}
    for a, b, sim in state.pairs:
        if a.is_correction == b.is_correction:
            if a.is_correction and sim == 1.0 and a.label != b.label:
                # Same text corrected twice with different labels: the later line wins.
                old, new = sorted((a, b), key=lambda r: r.index)
                overridden.setdefault(old.index, (new, sim))
            continue
        corr, gen = (a, b) if a.is_correction else (b, a)
        prev = overridden.get(gen.index)
        if prev is None or sim > prev[1]:
            overridden[gen.index] = (corr, sim)
    removed = []
    for r in rows:
        if r.index in overridden:
            corr, sim = overridden[r.index]
            r.alive = False
            removed.append(_removal(
                r, "correction_override",
                f"correction says {corr.label} (similarity {sim:.2f})", kept=corr.text))
    return [r for r in rows if r.alive], removed


def _conflicts(rows: list[_Row], state: _Resolution) -> tuple[list[_Row], list[dict]]:
    """Step 7: same or near-same text, different labels, no correction deciding."""
    conflicted: dict[int, tuple[_Row, float]] = {}
    for a, b, sim in state.pairs:
        if not (a.alive and b.alive) or a.label == b.label:
            continue
        if a.is_human and b.is_human:
            continue  # two humans decided differently on near-same texts: keep both.
        for x, y in ((a, b), (b, a)):
            if x.is_human:
                continue  # a hand-labelled row stands against a generated one
            if x.index not in conflicted or sim > conflicted[x.index][1]:
                conflicted[x.index] = (y, sim)
    removed = []
    for r in rows:
        if r.index in conflicted:
            other, sim = conflicted[r.index]
            r.alive = False
            by = f"a {other.source} row says {other.label}" if other.is_human \
                else f"{other.label} elsewhere"
            removed.append(_removal(
                r, "conflict",
                f"{by} for {'the same' if sim == 1.0 else 'a near-same'} "
                f"text (similarity {sim:.2f})", conflicting=other.text))
    return [r for r in rows if r.alive], removed


def _cluster_record(group: list[_Row], best: _Row, merged_rows: dict[int, int]) -> dict:
    """The report's entry for one same-label near-duplicate cluster."""
    return {
        "label": best.label,
        "size": sum(merged_rows[r.index] for r in group),
        "texts": len(group),
        "kept": best.text,
        "kept_source": best.source,
        "members": [r.text for r in sorted(group, key=_Row.preference)],
    }


def _near_duplicates(rows: list[_Row], state: _Resolution) -> tuple[list[_Row], list[dict]]:
    """Step 8: one row per same-label near-duplicate cluster; records the clusters."""
    index_of = {r.index: k for k, r in enumerate(rows)}
    uf = mh.UnionFind(len(rows))
    for a, b, _sim in state.pairs:
        if a.alive and b.alive and a.label == b.label:
            uf.union(index_of[a.index], index_of[b.index])
    comp = uf.labels()
    members: dict[int, list[_Row]] = defaultdict(list)
    for k, r in enumerate(rows):
        members[int(comp[k])].append(r)
    survivors: list[_Row] = []
    removed = []
    for group in members.values():
        best = _group_best(group)
        survivors.append(best)
        if len(group) > 1:
            state.clusters.append(_cluster_record(group, best, state.merged_rows))
        for r in group:
            if r is not best:
                r.alive = False
                removed.append(_removal(r, "near_duplicate", "same-label near-duplicate cluster",
                                        kept=best.text))
    survivors.sort(key=lambda r: r.index)
    state.clusters.sort(key=lambda c: (-c["size"], -c["texts"], c["kept"]))
    return survivors, removed


#: Steps 5-8 of the funnel, in order: each keeps survivors and names its removals.
RESOLVE_STEPS: tuple[tuple[str, _Step], ...] = (
    ("exact_duplicate", _exact_duplicates),
    ("correction_override", _correction_overrides),
    ("conflict", _conflicts),
    ("near_duplicate", _near_duplicates),
)


def _dedupe_and_resolve(
    rows: list[_Row],
    uniq: _Texts,
    edges: list[mh.Edge],
    funnel: _Funnel,
    removed: list[dict],
) -> tuple[list[_Row], list[dict]]:
    """Steps 5-8 (:data:`RESOLVE_STEPS`) on rows whose texts are all in ``uniq``.

    Returns the survivors and the near-duplicate clusters (largest first).
    """
    state = _Resolution({t: i for i, t in enumerate(uniq.texts)}, edges)
    for step, run in RESOLVE_STEPS:
        rows, dropped = run(rows, state)
        removed.extend(dropped)
        funnel.record(step, rows)
    return rows, state.clusters


# ----------------------------------------------------------------------------------------
# Split, augmentation, balance


def split_quota(labels: Iterable[str], test_size: float) -> dict[str, int]:
    """Test rows per label: ``round(test_size * n_label)`` over ``labels``, the labels of the
    rows that may go to test (train-only rows left out by the caller)."""
    return {lab: int(round(test_size * c)) for lab, c in Counter(labels).items()}


def grouped_split(labels: Sequence[str], groups: Sequence[int], test_size: float, seed: int,
                  *, train_only: Sequence[bool] = ()) -> np.ndarray:
    """Boolean test mask: stratified by label, never splitting a group.

    Groups are visited in a seeded random order; a group goes to test when, for each
    label it holds, the test count stays within ``round(test_size * n_label)``, where
    ``n_label`` counts the label's rows that may go to test. Groups marked ``train_only``
    (any member) always go to train, and their rows do not count: a large real pool must
    not make the test split draw more than ``test_size`` of the other rows.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    n = len(labels)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups.tolist()):
        members[g].append(i)
    forced = {int(groups[i]) for i, flag in enumerate(train_only) if flag}
    target = split_quota((lab for lab, g in zip(labels.tolist(), groups.tolist(), strict=True)
                         if g not in forced), test_size)
    taken = Counter()
    order = sorted(members)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    test = np.zeros(n, dtype=bool)
    for g in order:
        if g in forced:
            continue
        counts = Counter(labels[members[g]].tolist())
        if all(taken[lab] + c <= target[lab] for lab, c in counts.items()):
            taken.update(counts)
            test[members[g]] = True
    return test


def _trailing_punctuation(text: str) -> int:
    """Number of trailing punctuation/space characters of ``text``."""
    n = 0
    for ch in reversed(text):
        if unicodedata.category(ch).startswith("P") or ch.isspace():
            n += 1
        else:
            break
    return n


def _augment(train: list[_Row], fraction: float, seed: int, taken: set[str],
             next_index: int) -> list[_Row]:
    """Copies of a seeded ``fraction`` of the punctuation-final train rows, punctuation dropped.

    A copy is skipped when its normalised text already exists in ``taken`` (train, test,
    exam), so augmentation can neither duplicate a row nor leak a test or exam text.
    """
    if fraction <= 0:
        return []
    eligible = []
    for r in train:
        cut = _trailing_punctuation(r.text)
        stripped = r.text[: len(r.text) - cut] if cut else ""
        norm = normalize(stripped, COMPARE_SPEC) if stripped else ""
        if cut and norm and _trailing_punctuation(r.norm) and norm not in taken:
            eligible.append((r, stripped, norm))
    if not eligible:
        return []
    rng = np.random.default_rng([seed, 1])
    k = int(round(fraction * len(eligible)))
    chosen = sorted(rng.choice(len(eligible), size=k, replace=False).tolist())
    out = []
    for j in chosen:
        r, stripped, norm = eligible[j]
        if norm in taken:  # two rows that differ only in their punctuation
            continue
        taken.add(norm)
        out.append(_Row(next_index + len(out), stripped, r.label, r.category, r.source, norm,
                        augment_of=r.index, is_correction=r.is_correction))
    return out


def _undersample(train: list[_Row], seed: int, removed: list[dict],
                 cap: float | None = None) -> list[_Row]:
    """Cut every label to the smallest label's train count, or with ``cap`` only the labels
    above ``cap`` x the median label's count, to that count (``balance: cap``).

    Rows are kept in the order human rows (corrections, real utterances), seeds, then
    everything else, at random (seeded) within each tier; human rows are never dropped, even
    beyond the target.
    """
    by_label: dict[str, list[_Row]] = defaultdict(list)
    for r in train:
        by_label[r.label].append(r)
    if len(by_label) < 2:
        return train
    sizes = sorted(len(v) for v in by_label.values())
    target = sizes[0] if cap is None else max(1, int(cap * float(np.median(sizes))))
    rng = np.random.default_rng([seed, 2])
    keep: set[int] = set()
    for label in sorted(by_label):
        group = by_label[label]
        noise = rng.random(len(group))
        if len(group) <= target:
            keep.update(r.index for r in group)
            continue
        tier = [0 if r.is_human else 1 if r.source == "seed" else 2 for r in group]
        order = sorted(range(len(group)), key=lambda i: (tier[i], noise[i]))
        n_corr = tier.count(0)
        keep.update(group[i].index for i in order[: max(target, n_corr)])
        for r in group:
            if r.index not in keep:
                removed.append(_removal(
                    r, "balance", f"undersampled {label} from {len(group)} to {target} train rows"))
    return [r for r in train if r.index in keep]


def class_weights(labels: Sequence[str]) -> dict[str, float]:
    """scikit-learn's ``balanced`` weights: ``n / (k * n_label)``, rounded to 6 digits."""
    counts = Counter(labels)
    n, k = sum(counts.values()), len(counts)
    return {lab: round(n / (k * c), 6) for lab, c in sorted(counts.items())}


# ----------------------------------------------------------------------------------------
# Reporting helpers used by the summary


#: A similarity group may hold at most this share of the smallest label's test target
#: before it is re-clustered at a stricter threshold. Groups are connected components, so a
#: large one is a chain through a whole phrase family ("not sure", "not sure yet", "i'm not
#: sure", ...); placed whole, it leaves that family out of training altogether. At 25% a
#: 94-row family went to the test split and the exported model read "not sure" as a yes.
MAX_GROUP_SHARE_OF_TEST = 0.02
#: ... but never re-cluster groups of up to this many rows (small datasets).
MIN_GROUP_CAP = 8


def max_group_size(rows: Sequence[_Row], cfg: Refine) -> int:
    """Largest similarity group the split places whole; larger ones are re-clustered.

    The cap is a share of the smallest :func:`split_quota` of the rows that may go to test:
    human rows (corrections, real utterances) always train, so with a large real pool
    counting them would let a group outgrow the share of the test split it is capped at.
    """
    quota = split_quota((r.label for r in rows if not r.is_human), cfg.test_size)
    return max(MIN_GROUP_CAP, int(MAX_GROUP_SHARE_OF_TEST * min(quota.values(), default=0)))


def _similarity_sample(test: list[_Row], seed: int) -> list[int]:
    if len(test) <= MAX_SIMILARITY_TEST_ROWS:
        return list(range(len(test)))
    rng = np.random.default_rng([seed, 3])
    return sorted(rng.choice(len(test), MAX_SIMILARITY_TEST_ROWS, replace=False).tolist())


def seal_split(survivors: list[_Row], groups: Sequence[int], thresholds: Sequence[float],
               test_mask: np.ndarray, cfg: Refine, *, shingle_rows=None
               ) -> tuple[np.ndarray, dict]:
    """Close the leaks LSH missed, then measure the highest train/test similarity.

    An exact sparse comparison of the test rows (a seeded sample of at most
    :data:`MAX_SIMILARITY_TEST_ROWS`) with every train row finds test rows that still have
    a train neighbour at or above the threshold of their groups (``thresholds``:
    ``split_threshold``, or the stricter one an oversized group was re-clustered at). Their
    whole groups move to train; the remaining test rows are then compared with the moved
    rows only, until nothing leaks. ``shingle_rows`` is the survivors' ``(matrix, sizes)``
    if already built. Returns the final test mask and the highest remaining pair
    ``{"similarity", "test", "train", "test_rows_checked", "groups_moved"}``.
    """
    test_mask = test_mask.copy()
    groups = np.asarray(groups)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if shingle_rows is None:
        built = mh.ShingleMatrix([mh.shingles(r.norm, cfg.shingle_size) for r in survivors])
        shingle_rows = (built.matrix, built.sizes)
    matrix, sizes = shingle_rows
    test_idx = np.flatnonzero(test_mask)
    corpus = np.flatnonzero(~test_mask)
    if not len(test_idx) or not len(corpus):
        return test_mask, {"similarity": None, "train": None, "test": None,
                           "test_rows_checked": 0, "groups_moved": 0}
    sample = test_idx[_similarity_sample([survivors[i] for i in test_idx], cfg.seed)]
    best = np.zeros(len(survivors))  # per sampled test row: best train similarity so far
    moved = 0
    queries = sample
    while len(queries) and len(corpus):
        cross = mh.cross_jaccard((matrix[queries], sizes[queries]),
                                 (matrix[corpus], sizes[corpus]),
                                 threshold=cfg.split_threshold)
        best[queries] = np.maximum(best[queries], cross.query_best)
        q, c = queries[cross.queries], corpus[cross.corpus]
        leaking = cross.similarity >= np.maximum(thresholds[q], thresholds[c])
        leaking_groups = np.unique(groups[q[leaking]])
        if not len(leaking_groups):
            break
        moving = test_mask & np.isin(groups, leaking_groups)
        test_mask[moving] = False
        moved += len(leaking_groups)
        # Remaining test rows only need comparing with the rows that just became train.
        queries = sample[test_mask[sample]]
        corpus = np.flatnonzero(moving)
    remaining = sample[test_mask[sample]]
    train_idx = np.flatnonzero(~test_mask)
    if not len(remaining) or not len(train_idx):
        return test_mask, {"similarity": None, "train": None, "test": None,
                           "test_rows_checked": 0, "groups_moved": moved}
    top = int(remaining[np.lexsort((remaining, -best[remaining]))[0]])
    partner = mh.best_match((matrix, sizes), top, (matrix[train_idx], sizes[train_idx]))
    return test_mask, {
        "similarity": round(float(best[top]), 4),
        "test": survivors[top].text,
        "train": survivors[train_idx[partner]].text if partner >= 0 else None,
        "test_rows_checked": len(remaining), "groups_moved": moved}


@dataclass
class _Split:
    """The train/test split of the survivors and what the summary reports about it."""

    train: list[_Row]
    test: list[_Row]
    groups: list[int]
    thresholds: list[float]
    pair: dict


def _unique_texts(rows: list[_Row], cfg: Refine, storage_config: dict | None,
                  backend: mh.Backend, progress: bool | None
                  ) -> tuple[_Texts, list[mh.Edge]]:
    """Unique normalised texts of ``rows`` and their LSH edges at the dedup threshold,
    verified exactly."""
    uniq = _Texts.build(sorted({r.norm for r in rows}), cfg, progress)
    buckets = mh.lsh_buckets(uniq.minhashes, threshold=cfg.dedup_threshold,
                             num_perm=cfg.num_perm, storage_config=storage_config,
                             backend=backend, progress=progress, desc="lsh dedup")
    return uniq, mh.verified_edges(buckets, uniq.sets, cfg.dedup_threshold)


def _split_survivors(survivors: list[_Row], uniq: _Texts, cfg: Refine,
                     storage_config: dict | None, backend: mh.Backend, progress: bool | None
                     ) -> _Split:
    """Coarse similarity groups, a grouped stratified split, then :func:`seal_split`.

    Groups are built over unique texts: survivors are one per text, except corrections that
    a human kept under two labels.
    """
    pos = {t: i for i, t in enumerate(uniq.texts)}
    split_pos = sorted({pos[r.norm] for r in survivors})
    local = {p: k for k, p in enumerate(split_pos)}
    comp, used = mh.refined_components(
        [uniq.sets[p] for p in split_pos], [uniq.minhashes[p] for p in split_pos],
        threshold=cfg.split_threshold, max_size=max_group_size(survivors, cfg),
        ceiling=max(cfg.split_threshold, min(cfg.dedup_threshold, 0.95)),
        num_perm=cfg.num_perm, storage_config=storage_config, backend=backend,
        progress=progress)
    at = [local[pos[r.norm]] for r in survivors]
    groups = [int(comp[k]) for k in at]
    thresholds = [float(used[k]) for k in at]
    test_mask = grouped_split([r.label for r in survivors], groups, cfg.test_size, cfg.seed,
                              train_only=[r.is_human for r in survivors])
    shingle_rows = (uniq.matrix.matrix[[pos[r.norm] for r in survivors]],
                    uniq.matrix.sizes[[pos[r.norm] for r in survivors]])
    test_mask, pair = seal_split(survivors, groups, thresholds, test_mask, cfg,
                                 shingle_rows=shingle_rows)
    train = [r for r, t in zip(survivors, test_mask, strict=True) if not t]
    test = [r for r, t in zip(survivors, test_mask, strict=True) if t]
    return _Split(train, test, groups, thresholds, pair)


def _with_augments(train: list[_Row], cfg: Refine, taken: set[str], next_index: int
                   ) -> list[_Row]:
    """``train`` with each punctuation-dropped copy (:func:`_augment`) right after its row."""
    added = _augment(train, cfg.drop_punctuation_augment, cfg.seed, taken, next_index)
    if not added:
        return train
    after: dict[int, list[_Row]] = {r.index: [] for r in train}
    for a in added:
        after[a.augment_of].append(a)
    return [x for r in train for x in (r, *after[r.index])]


def _refine_summary(task: Task, cfg: Refine, funnel: _Funnel, all_rows: list[_Row],
                    split: _Split, train_out: list[dict], test_out: list[dict],
                    removed: list[dict], clusters: list[dict],
                    held_out: tuple[set[str], set[str]], audit: list[dict]) -> RefineSummary:
    """The refine stage's summary (``audit``: :func:`shortcut_audit` of the train split)."""
    labels = task.label_names
    train, test, groups, thresholds = split.train, split.test, split.groups, split.thresholds
    exam_norms, dev_norms = held_out
    return RefineSummary(**{
        "task": task.name,
        "labels": labels,
        "config": cfg,
        "funnel": funnel.steps,
        "input_rows": len(all_rows),
        "train_rows": len(train_out),
        "test_rows": len(test_out),
        "label_counts": {
            "train": _label_counts(train_out, labels),
            "test": _label_counts(test_out, labels),
        },
        "balance": cfg.balance,
        "class_weights": class_weights([r.label for r in train])
        if cfg.balance == "class_weight" else None,
        "augmented_rows": sum(1 for r in train if r.augment_of is not None),
        "data_sha256": hashlib.sha256(jsonl_bytes(train_out)).hexdigest(),
        "corrections": sum(1 for r in all_rows if r.is_correction),
        "corrections_kept": sum(1 for r in (*train, *test)
                                if r.is_correction and r.augment_of is None),
        # Human corrections the funnel dropped for what they are (too long, an exam text...):
        # never silent, refine_task warns and the report lists them.
        "corrections_dropped": [
            {k: d[k] for k in ("text", "label", "reason", "detail")} for d in removed
            if d["reason"] in DROPS_ANY_ROW and d["index"] < len(all_rows)
            and all_rows[d["index"]].is_correction],
        "exam_texts": len({t for t in exam_norms if t}),
        "dev_texts": len({t for t in dev_norms if t}),
        "real_rows": sum(1 for r in all_rows if r.is_real),
        "real_kept": sum(1 for r in train if r.is_real and r.augment_of is None),
        "sources": _source_counts(train_out),
        "removed_by_reason": {s: c for s, c in sorted(Counter(
            d["reason"] for d in removed).items())},
        "near_duplicate_clusters": len(clusters),
        "largest_clusters": [
            {k: c[k] for k in ("label", "size", "texts", "kept", "kept_source")}
            | {"members": c["members"][:10]}
            for c in clusters[:10]
        ],
        "split_groups": len(set(groups)),
        "largest_split_group": max(Counter(groups).values(), default=0),
        "max_train_test_similarity": split.pair["similarity"],
        "max_train_test_pair": split.pair,
        "split_groups_moved_to_train": split.pair["groups_moved"],
        "split_rows_reclustered": sum(1 for t in thresholds if t > cfg.split_threshold),
        "split_threshold_max": max(thresholds, default=cfg.split_threshold),
        "shortcuts": [f for f in audit if f["shortcut"]],
        "surface_features": audit,
    })


def _outputs(train: list[_Row], test: list[_Row], cfg: Refine
             ) -> tuple[list[dict], list[dict]]:
    """The output rows of both splits, with a per-row weight under ``balance: class_weight``."""
    train_out = [_output(r) for r in train]
    test_out = [_output(r) for r in test]
    if cfg.balance == "class_weight":
        weights = class_weights([r.label for r in train])
        for row in (*train_out, *test_out):
            row["weight"] = weights.get(row["label"], 1.0)
    return train_out, test_out


# ----------------------------------------------------------------------------------------
# The pure entry point


def refine_rows(
    rows: list[dict],
    task: Task,
    cfg: Refine,
    *,
    exam_texts: Sequence[str] = (),
    corrections: Sequence[dict] = (),
    real: Sequence[dict] = (),
    dev_texts: Sequence[str] = (),
    storage_config: dict | None = None,
    backend: mh.Backend = "auto",
    progress: bool | None = None,
) -> RefineResult:
    """Refine one task's generated rows (pure: reads and writes no files).

    Parameters
    ----------
    rows : list of dict
        Generated rows ``{"text", "label", "category", "source", ...}``, in the order seen.
    task : Task
        Gives the valid labels.
    cfg : Refine
        Thresholds, shingle size, balance strategy, split and augmentation settings, seed.
    exam_texts : sequence of str
        Texts of the exam; they and their near-duplicates are removed from the data.
    corrections : sequence of dict
        Human corrections ``{"text", "label"}``; they take precedence over every other row.
    real : sequence of dict
        Hand-labelled real utterances ``{"text", "label", "category"}`` (the blueprint's
        ``real:`` file): ``source: real``, preferred over generated rows, train split only.
    dev_texts : sequence of str
        Texts of the real-text dev split; they and their near-duplicates are removed from
        the data, like exam texts.
    storage_config : dict, optional
        datasketch ``storage_config`` for the LSH indexes (e.g. Redis); in memory if None.
    backend : {"auto", "numpy", "datasketch"}
        LSH banding backend, see :func:`foundry.minhash.lsh_buckets`; all give the same
        result.
    progress : bool, optional
        Show tqdm progress bars (None: only on a terminal).

    Returns
    -------
    RefineResult
    """
    all_rows = _as_rows(rows, corrections, real)
    funnel = _Funnel(task.label_names)
    removed: list[dict] = []
    funnel.record("input", all_rows, rows_in=len(all_rows))
    alive = _filter_basic(all_rows, task, cfg, funnel, removed)
    uniq, edges = _unique_texts(alive, cfg, storage_config, backend, progress)
    kept = _drop_held_out(alive, uniq, exam_texts, cfg, "exam_overlap", "an exam text", removed)
    funnel.record("exam_overlap", kept)
    kept = _drop_held_out(kept, uniq, dev_texts, cfg, "dev_overlap", "a dev text", removed)
    funnel.record("dev_overlap", kept)
    held_out = ({normalize(t, COMPARE_SPEC) for t in exam_texts},
                {normalize(t, COMPARE_SPEC) for t in dev_texts})
    survivors, clusters = _dedupe_and_resolve(kept, uniq, edges, funnel, removed)
    split = _split_survivors(survivors, uniq, cfg, storage_config, backend, progress)
    taken = {r.norm for r in survivors} | held_out[0] | held_out[1]
    split.train = _with_augments(split.train, cfg, taken, len(all_rows))
    funnel.record("augment", split.train + split.test)
    if cfg.balance in ("undersample", "cap"):
        split.train = _undersample(split.train, cfg.seed, removed,
                                   cfg.balance_cap if cfg.balance == "cap" else None)
    funnel.record("balance", split.train + split.test)
    train_out, test_out = _outputs(split.train, split.test, cfg)
    removed.sort(key=lambda d: d["index"])
    audit = shortcut_audit(train_out, task.label_names, norms=[r.norm for r in split.train])
    summary = _refine_summary(task, cfg, funnel, all_rows, split, train_out, test_out,
                              removed, clusters, held_out, audit)
    return RefineResult(task.name, train_out, test_out, removed, summary, clusters)


def _output(r: _Row) -> dict:
    row = r.out()
    if r.augment_of is not None:
        row["augment"] = "drop_trailing_punctuation"
    return row


def _source_counts(rows: Sequence[dict]) -> dict[str, int]:
    """Training rows per source, most first."""
    return dict(Counter(r["source"] for r in rows).most_common())


def _label_counts(rows: Sequence[dict], labels: Sequence[str]) -> dict[str, int]:
    counts = Counter(r["label"] for r in rows)
    return {label: counts.get(label, 0) for label in labels}


# ----------------------------------------------------------------------------------------
# The stage: files in, files out


def lsh_storage_from_env(env: dict[str, str] | None = None) -> dict | None:
    """datasketch ``storage_config`` for Redis from ``FOUNDRY_LSH_REDIS`` (a redis:// URL)."""
    url = (os.environ if env is None else env).get(REDIS_ENV, "").strip()
    if not url:
        return None
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme != "redis" or not parsed.hostname:
        raise ValueError(f"{REDIS_ENV}={url!r}: expected redis://host:port/db")
    redis_cfg: dict[str, Any] = {"host": parsed.hostname, "port": parsed.port or 6379}
    if parsed.path.strip("/"):
        redis_cfg["db"] = int(parsed.path.strip("/"))
    if parsed.password:
        redis_cfg["password"] = parsed.password
    return {"type": "redis", "redis": redis_cfg}


def load_generated_rows(run_dir: Path, task: Task) -> list[dict]:
    """Rows of every raw file named by ``generate/<task>/manifest.json``, in order."""
    manifest = GenerateSummary.load(run_dir, task.name)
    rows: list[dict] = []
    for f in manifest.raw_files:
        path = Path(f) if Path(f).is_absolute() else Path(run_dir) / f
        if not path.is_file():
            raise FileNotFoundError(
                f"{Path(run_dir) / 'generate' / task.name / GenerateSummary.file_name}: "
                f"raw_files: {path} does not exist")
        rows.extend(read_jsonl(path))
    return rows


def load_exam(bp: Blueprint, task: Task) -> list[dict]:
    path = bp.path(task.exam)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exam of task {task.name!r} is missing "
                                f"(blueprint field tasks[].exam)")
    rows = list(read_jsonl(path))
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get("text"), str):
            raise ValueError(f"{path}: row {i}: field 'text' must be a string")
    return rows


def corrections_path(bp: Blueprint, task: Task) -> Path:
    return bp.root / "corrections" / f"{task.name}.jsonl"


def load_corrections(bp: Blueprint, task: Task) -> list[dict]:
    """The lab's corrections of ``task`` (``corrections/<task>.jsonl``), in file order.

    Raises ValueError naming the file, the line and the field of the first bad row (the rules
    are :func:`foundry.check.correction_row_problems`, what ``foundry blueprint check`` reports).
    """
    from foundry.check import correction_row_problems
    from foundry.jsonl import iter_jsonl

    path = corrections_path(bp, task)
    if not path.is_file():
        return []
    rows = []
    for where, row in iter_jsonl(path, hint="; fix or remove the line"):
        for name, message in correction_row_problems(row, task)[:1]:
            raise ValueError(f"{where}: {name}: {message}")
        rows.append(row)
    return rows


def write_outputs(result: RefineResult, out_dir: Path) -> None:
    """Write train/test/removed JSONL and summary.json atomically."""
    atomic_write_text(out_dir / "train.jsonl", result.train_bytes().decode("utf-8"))
    atomic_write_text(out_dir / "test.jsonl", result.test_bytes().decode("utf-8"))
    atomic_write_text(out_dir / "removed.jsonl", jsonl_bytes(result.removed).decode("utf-8"))
    result.summary.write(out_dir)


def refine_task(bp: Blueprint, task: Task, run_dir: Path, *, log: Callable[[str], None] = print,
                storage_config: dict | None = None, progress: bool | None = None,
                probe: bool = True) -> RefineResult:
    """Refine one task of a run: read, refine, probe the exam, write every output."""
    inputs = check_fresh(bp, run_dir, "refine", task.name)
    cfg = bp.spec.refine
    rows = load_generated_rows(run_dir, task)
    exam = load_exam(bp, task)
    corrections = load_corrections(bp, task)
    real = [r.as_row() for r in load_real(bp, task, "real")]
    dev = load_real(bp, task, "dev")
    # Test rows of a dataset are evaluation-only: kept out of training exactly like the exam.
    test_texts = [r.text for r in load_dataset(bp, task, "test")]
    result = refine_rows(rows, task, cfg, exam_texts=[r["text"] for r in exam] + test_texts,
                         corrections=corrections, real=real, dev_texts=[r.text for r in dev],
                         storage_config=storage_config, progress=progress)
    if probe:
        result.summary.exam_probe = exam_probe(result.train, exam, task.label_names)
    out = stage_dir(run_dir, "refine", task.name)
    write_outputs(result, out)
    write_report(result, out)
    write_stamp(bp, run_dir, "refine", task.name, inputs)
    s = result.summary
    for d in s.corrections_dropped:
        log(f"WARNING {task.name}: the lab correction {d['text'][:60]!r} -> {d['label']} was NOT "
            f"learned: {d['reason']}: {d['detail']}; fix or remove it in "
            f"{corrections_path(bp, task)}")
    log(f"{task.name}: {s.input_rows} rows ({s.real_rows} real) -> "
        f"train {s.train_rows}, test {s.test_rows} "
        f"(removed {json.dumps(s.removed_by_reason, ensure_ascii=False)}; "
        f"max train/test similarity {s.max_train_test_similarity}; "
        f"{len(s.shortcuts)} shortcut(s))")
    return result


def refine_stage(bp: Blueprint, run_dir: Path, *, log: Callable[[str], None] = print,
                 storage_config: dict | None = None,
                 progress: bool | None = None) -> dict[str, RefineResult]:
    """Run stage 2 for every task of ``bp`` in ``run_dir``; see the module docstring.

    The LSH index lives in memory unless ``storage_config`` (or the ``FOUNDRY_LSH_REDIS``
    environment variable) points it at Redis. With ``refine.workers`` > 1 the tasks are
    refined side by side in worker processes (:func:`foundry.parallel.map_tasks`; same
    outputs, and each task's log lines are replayed in task order).
    """
    storage_config = storage_config or lsh_storage_from_env()
    return map_tasks(refine_task, bp, Path(run_dir), bp.spec.refine.workers, log=log,
                     storage_config=storage_config, progress=progress)


# ----------------------------------------------------------------------------------------
# Balance / augmentation study


def refine_study(
    rows: Sequence[dict],
    task,
    cfg,
    exam: Sequence[dict],
    *,
    corrections: Sequence[dict] = (),
    balances: Sequence[str] = ("undersample", "class_weight", "none"),
    augments: Sequence[float] = (0.0, 0.5),
) -> list[dict]:
    """Exam-probe accuracy of every balance strategy x punctuation-drop fraction.

    Each setting re-runs :func:`refine_rows` on the same rows (same seed,
    so the same split) and fits the quick probe of :func:`foundry.refine_report.exam_probe`. This is the
    evidence for choosing ``refine.balance`` and ``refine.drop_punctuation_augment``.
    """
    exam_texts = [r["text"] for r in exam]
    out = []
    for balance in balances:
        for augment in augments:
            setting = cfg.model_copy(update={"balance": balance,
                                             "drop_punctuation_augment": augment})
            res = refine_rows(list(rows), task, setting, exam_texts=exam_texts,
                              corrections=corrections, progress=False)
            probe = exam_probe(res.train, exam, task.label_names)
            out.append({
                "balance": balance,
                "drop_punctuation_augment": augment,
                "train_rows": res.summary.train_rows,
                "exam_accuracy": probe["accuracy"],
                "exam_accuracy_no_trailing_punctuation": probe["accuracy_no_trailing_punctuation"],
                "shortcuts": len(res.summary.shortcuts),
            })
    return out


#: :func:`study_task` skips a task with more generated rows than this: the study re-runs the
#: refinery six times, which past this size takes minutes.
STUDY_MAX_ROWS = 20_000


def study_task(bp: Blueprint, run_dir: Path, task: Task) -> list[dict] | None:
    """:func:`refine_study` of a task of a run: its generated rows, exam and corrections under
    the blueprint's ``refine`` settings. None (skipped) for a task with more than
    :data:`STUDY_MAX_ROWS` generated rows or more than
    :data:`foundry.refine_report.MANY_LABELS` labels (the probe's logistic regression over
    dozens of classes takes minutes)."""
    rows = load_generated_rows(run_dir, task)
    if len(rows) > STUDY_MAX_ROWS or len(task.labels) > MANY_LABELS:
        return None
    return refine_study(rows, task, bp.spec.refine, load_exam(bp, task),
                        corrections=load_corrections(bp, task))


def _study_job(bp: Blueprint, task: Task, run_dir: Path, *,
               log: Callable[[str], None]) -> list[dict] | None:
    """:func:`study_task` in the shape :func:`foundry.parallel.map_tasks` calls."""
    return study_task(bp, run_dir, task)


def study_tasks(bp: Blueprint, run_dir: Path) -> dict[str, list[dict] | None]:
    """:func:`study_task` of every task, side by side with ``refine.workers`` > 1."""
    return map_tasks(_study_job, bp, Path(run_dir), bp.spec.refine.workers)
