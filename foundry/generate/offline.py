"""The offline provider: hand-written seeds plus a template grammar, no network, no key.

:func:`generate_offline` returns ``target`` rows that are unique on the text-spec
normaliser, balanced in three levels:

1. equally across the task's labels;
2. within a label, equally across its categories (or by the grammar's ``category_weights``);
3. within a category, equally across its templates (or by each template's ``weight``).

Never in proportion to how many sentences a template can expand to: that is the classic
failure of template generators, where the combinatorially largest templates swamp the data.
Seeds count towards the quota of their label and category. A template that yields no new
sentence after ``max_misses`` draws in a row is *exhausted*; its unfilled quota moves to its
sibling templates, else to the other categories of the label, else to the other labels, and
the move is reported. Each template draws from its own ``random.Random`` seeded from
``(seed, task, template)``, so editing one template does not reshuffle the others' rows.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from foundry.blueprint import Blueprint, Task
from foundry.errors import ConfigError
from foundry.generate.grammar import Grammar, Template, allocate, load_grammar
from foundry.jsonl import iter_jsonl
from foundry.textspec import normalize

#: Consecutive draws without a new unique sentence after which a template is exhausted.
DEFAULT_MAX_MISSES = 300


class SeedError(ConfigError):
    """A seed file is malformed; the message names the file, the line and the fix."""


@dataclass
class OfflineResult:
    """What :func:`generate_offline` produced.

    Attributes
    ----------
    rows : list of dict
        ``{"text", "label", "category", "source", "template"}``; ``source`` is ``"seed"``
        (``template`` None) or ``"grammar"`` (``template`` = ``"<category>#<i>"``, the i-th
        template of that category in the grammar file). Seeds come first, in file order.
    capacity : pandas.DataFrame
        Distinct sentences per template, category and label (columns ``level``, ``label``,
        ``category``, ``template``, ``distinct``, ``exact``); ``exact`` False means
        ``distinct`` is the combinatorial upper bound.
    stats : dict
        JSON-serialisable: ``target``, ``rows``, ``seeds``, ``grammar``, ``labels``
        (rows per label), ``categories`` (per label/category: quota, seed, grammar, total),
        ``templates`` (rows per template key), ``exhausted`` (one message per exhausted
        template, saying where its quota went) and ``warnings`` (the grammar's lint
        warnings, e.g. a regex-style ``(x)?``).
    """

    rows: list[dict[str, Any]]
    capacity: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exhausted(self) -> list[str]:
        return list(self.stats.get("exhausted", []))


# --------------------------------------------------------------------------- seeds


def _categories(task: Task) -> dict[str, list[str]]:
    """Label -> its categories; a label without declared categories has one, its own name."""
    return {lab.name: (lab.categories or [lab.name]) for lab in task.labels}


def load_seeds(path: str | Path, task: Task) -> list[dict[str, Any]]:
    """Read and validate a seed file: one ``{"text", "label"[, "category"]}`` object per line.

    The row rules are :func:`foundry.check.seed_row_problems` (what ``foundry blueprint check``
    reports); here the first problem raises.

    Raises
    ------
    SeedError
        For invalid JSON, missing or unknown keys, empty text, a label or category the task
        does not declare, or two seeds that are the same after normalisation.
    """
    from foundry.check import seed_row_problems

    path = Path(path)
    if not path.is_file():
        raise SeedError(f"{path}: seed file not found")
    rows: list[dict[str, Any]] = []
    first_line: dict[str, str] = {}
    hint = '; one {"text", "label", "category"} object per line'
    for where, obj in iter_jsonl(path, error=SeedError, hint=hint):
        for name, message in seed_row_problems(obj, task)[:1]:
            raise SeedError(f"{where}: {name}: {message}")
        key = normalize(obj["text"])
        if key in first_line:
            raise SeedError(
                f"{where}: duplicate of {first_line[key]} after normalisation "
                f"({key!r}); remove one of them"
            )
        first_line[key] = where
        rows.append({"text": obj["text"], "label": obj["label"],
                     "category": obj.get("category"), "source": "seed", "template": None})
    return rows


# --------------------------------------------------------------------------- quotas


def _template_rng(seed: int, task: str, template: Template) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{task}\0{template.label}\0{template.key}".encode())
    return random.Random(int.from_bytes(digest.digest()[:8], "big"))


class _Filler:
    """Bookkeeping of quotas (``need``) per template, with redistribution on exhaustion."""

    def __init__(self, grammar: Grammar, cats: dict[str, list[str]]) -> None:
        self.grammar = grammar
        self.cats = cats
        self.need: dict[int, int] = {id(t): 0 for t in grammar.templates}
        self.dead: set[int] = set()
        self.shortfall = 0

    def live(self, label: str, category: str) -> list[Template]:
        return [t for t in self.grammar.templates_of(label, category) if id(t) not in self.dead]

    def cat_weight(self, category: str) -> float:
        return self.grammar.category_weights.get(category, 1.0)

    def give_category(self, label: str, category: str, n: int) -> bool:
        ts = self.live(label, category)
        if not ts:
            return False
        for t, k in zip(ts, allocate(n, [t.weight for t in ts]), strict=True):
            self.need[id(t)] += k
        return True

    def give_label(self, label: str, n: int) -> bool:
        cs = [c for c in self.cats[label] if self.live(label, c)]
        if not cs:
            return False
        for c, k in zip(cs, allocate(n, [self.cat_weight(c) for c in cs]), strict=True):
            self.give_category(label, c, k)
        return True

    def give_anywhere(self, n: int) -> str:
        labels = [lab for lab in self.cats if any(self.live(lab, c) for c in self.cats[lab])]
        if not labels:
            self.shortfall += n
            return "nowhere: every template is exhausted, the result is short"
        for lab, k in zip(labels, allocate(n, [1] * len(labels)), strict=True):
            self.give_label(lab, k)
        return f"the labels {', '.join(labels)}"

    def exhaust(self, t: Template) -> str:
        """Mark a template dead and move its unfilled quota; say where it went."""
        self.dead.add(id(t))
        left, self.need[id(t)] = self.need[id(t)], 0
        if self.give_category(t.label, t.category, left):
            where = f"the other templates of {t.category}"
        elif self.give_label(t.label, left):
            where = f"the other categories of {t.label}"
        else:
            where = self.give_anywhere(left)
        return f"{t.label}/{t.key}: exhausted; {left} row(s) moved to {where}"


def _plan(
    filler: _Filler, task: Task, target: int, seeds: list[dict[str, Any]]
) -> dict[tuple[str, str], int]:
    """Set each template's grammar quota; returns the total quota per (label, category)."""
    cats = filler.cats
    labels = list(cats)
    seed_label = Counter(r["label"] for r in seeds)
    seed_cat = Counter((r["label"], r["category"]) for r in seeds)
    label_quota = dict(zip(labels, allocate(target, [1] * len(labels)), strict=True))
    grammar_total = max(0, target - len(seeds))
    # Seeds fill part of their label's quota; the grammar tops each label up to its share.
    label_weights = [max(0, label_quota[lab] - seed_label[lab]) for lab in labels]
    label_need = dict(zip(labels, allocate(grammar_total, label_weights), strict=True))
    cat_quota: dict[tuple[str, str], int] = {}
    for lab in labels:
        weights = [filler.cat_weight(c) for c in cats[lab]]
        quotas = allocate(label_quota[lab], weights)
        cat_quota.update({(lab, c): q for c, q in zip(cats[lab], quotas, strict=True)})
        needs = allocate(
            label_need[lab],
            [max(0, cat_quota[(lab, c)] - seed_cat[(lab, c)]) for c in cats[lab]],
        )
        for c, n in zip(cats[lab], needs, strict=True):
            if n and not filler.give_category(lab, c, n):
                filler.give_label(lab, n) or filler.give_anywhere(n)
    return cat_quota


# --------------------------------------------------------------------------- main


def generate_offline(
    bp: Blueprint,
    task: Task,
    target: int,
    seed: int,
    *,
    max_misses: int = DEFAULT_MAX_MISSES,
) -> OfflineResult:
    """Generate ``target`` unique, balanced rows for ``task`` from its seeds and grammar.

    Parameters
    ----------
    bp : Blueprint
        Gives the files (``task.grammar``, ``task.seeds``) and the length limits
        ``generation.min_chars``/``max_chars`` applied to grammar sentences.
    task : Task
        One of ``bp.tasks``.
    target : int
        Rows wanted in total, seeds included (if the seeds alone exceed it, all seeds are
        kept). Fewer come back only if every template is exhausted (see ``stats``).
    seed : int
        Same blueprint files, target and seed give identical rows in identical order.
    max_misses : int
        Draws in a row without a new unique sentence after which a template is exhausted.

    Returns
    -------
    OfflineResult
    """
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    if not task.grammar and not task.seeds:
        raise ValueError(
            f"{bp.path('blueprint.yaml')}: task {task.name!r} has neither `grammar` nor "
            "`seeds`; the offline provider needs at least one of them"
        )
    seeds = load_seeds(bp.path(task.seeds), task) if task.seeds else []
    grammar = load_grammar(bp.path(task.grammar), task) if task.grammar else None
    cats = _categories(task)
    seen = {normalize(r["text"]) for r in seeds}
    rows: list[dict[str, Any]] = list(seeds)
    exhausted: list[str] = []
    cat_quota: dict[tuple[str, str], int] = {}
    capacity = pd.DataFrame(
        columns=["level", "label", "category", "template", "distinct", "exact"]
    )
    if grammar is not None:
        filler = _Filler(grammar, cats)
        cat_quota = _plan(filler, task, target, seeds)
        lo, hi = bp.spec.generation.min_chars, bp.spec.generation.max_chars
        rngs = {id(t): _template_rng(seed, task.name, t) for t in grammar.templates}
        active = [t for t in grammar.templates if filler.need[id(t)] > 0]
        while active:
            # One new row per template per round: the rows interleave, and sentences that
            # two templates share go to them fairly.
            for t in active:
                if filler.need[id(t)] <= 0 or id(t) in filler.dead:
                    continue
                text = _draw_new(grammar, t, rngs[id(t)], seen, lo, hi, max_misses)
                if text is None:
                    exhausted.append(filler.exhaust(t))
                    continue
                filler.need[id(t)] -= 1
                rows.append({"text": text, "label": t.label, "category": t.category,
                             "source": "grammar", "template": t.key})
            active = [
                t for t in grammar.templates
                if filler.need[id(t)] > 0 and id(t) not in filler.dead
            ]
        capacity = pd.DataFrame(grammar.capacity(key=normalize))
    stats = _stats(rows, cats, cat_quota, target, exhausted)
    stats["warnings"] = list(grammar.warnings) if grammar is not None else []
    return OfflineResult(rows, capacity, stats)


def _clean(text: str) -> str:
    """Collapse the ASCII space runs that optional parts leave behind, strip the ends."""
    return " ".join(part for part in text.split(" ") if part)


def _draw_new(
    grammar: Grammar,
    template: Template,
    rng: random.Random,
    seen: set[str],
    lo: int,
    hi: int,
    max_misses: int,
) -> str | None:
    """A sentence of ``template`` not in ``seen`` (which it joins), or None if exhausted."""
    for _ in range(max_misses):
        text = _clean(grammar.sample_template(template, rng))
        key = normalize(text)
        if not key or key in seen or not lo <= len(text) <= hi:
            continue
        seen.add(key)
        return text
    return None


def _stats(
    rows: list[dict[str, Any]],
    cats: dict[str, list[str]],
    cat_quota: dict[tuple[str, str], int],
    target: int,
    exhausted: list[str],
) -> dict[str, Any]:
    per = Counter((r["label"], r["category"], r["source"]) for r in rows)
    categories = [
        {
            "label": lab,
            "category": c,
            "quota": cat_quota.get((lab, c)),
            "seed": per[(lab, c, "seed")],
            "grammar": per[(lab, c, "grammar")],
            "total": per[(lab, c, "seed")] + per[(lab, c, "grammar")],
        }
        for lab in cats
        for c in cats[lab]
    ]
    return {
        "target": target,
        "rows": len(rows),
        "seeds": sum(1 for r in rows if r["source"] == "seed"),
        "grammar": sum(1 for r in rows if r["source"] == "grammar"),
        "labels": dict(Counter(r["label"] for r in rows)),
        "categories": categories,
        "templates": dict(Counter(r["template"] for r in rows if r["template"])),
        "exhausted": exhausted,
    }
