"""Steering: what each LLM request asks for, so the raw data ends balanced and varied.

Every request carries

* a **diversity hint** (a topic, a persona, a style from the blueprint), drawn
  deterministically from the request number, so batches differ from each other and a replayed
  request asks for the same thing;
* **targets**: how many rows of which label (and sub-category) to write, given to the labels
  and categories that are furthest below their share of the target, counting rows already
  stored *and* rows asked for by requests still in flight;
* **texts to avoid**: the texts the model has already repeated most, then the latest stored
  texts of the targeted sub-categories. Small models keep returning their favourite
  sentences; every repeat is a paid row that the engine rejects as a duplicate.

The prompt is the task's constitution with the placeholders ``{n}``, ``{hint}``, ``{labels}``,
``{targets}`` and ``{avoid}`` replaced (with ``str.replace``: prompts contain JSON braces). A
constitution without ``{targets}`` or ``{avoid}`` gets them appended, so steering never
silently stops working.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from foundry.blueprint import Diversity, Task
from foundry.generate.sufficiency import category_targets, label_targets

Cell = tuple[str, "str | None"]  # (label, category or None)
#: Texts to avoid per prompt: the most repeated ones, then recent ones per targeted cell.
AVOID_REPEATED = 8
AVOID_PER_CELL = 4
AVOID_TOTAL = 16


@dataclass(frozen=True)
class RequestPlan:
    """One planned request: its number, what it asks for, and the prompt text."""

    index: int
    batch_id: str
    n: int
    hint: str
    targets: tuple[tuple[str, str | None, int], ...]
    prompt: str

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()


def draw_hint(diversity: Diversity, seed: int, task: str, index: int) -> str:
    """The diversity hint of request ``index``: same inputs, same hint (so replays match)."""
    rng = random.Random(f"{seed}:{task}:{index}")
    parts = []
    if diversity.topics:
        parts.append(f"话题：{rng.choice(diversity.topics)}")
    if diversity.personas:
        parts.append(f"说话人：{rng.choice(diversity.personas)}")
    if diversity.styles:
        parts.append(f"风格：{rng.choice(diversity.styles)}")
    return "；".join(parts) if parts else "无特别要求"


def describe_labels(task: Task) -> str:
    """The ``{labels}`` block: one line per label with its definition and categories."""
    lines = []
    for label in task.labels:
        line = f"- {label.name}: {label.definition}"
        if label.categories:
            line += f" (categories: {', '.join(label.categories)})"
        lines.append(line)
    return "\n".join(lines)


def describe_targets(targets: Iterable[tuple[str, str | None, int]]) -> str:
    """The ``{targets}`` block: ``- 3 × label=Question, category=yes_no`` per line."""
    lines = []
    for label, category, k in targets:
        cat = f", category={category}" if category else ""
        lines.append(f"- {k} × label={label}{cat}")
    return "\n".join(lines)


_LEADING_COMMENT = re.compile(r"\A\s*<!--.*?-->\s*", re.DOTALL)


def describe_avoid(texts: Iterable[str]) -> str:
    """The ``{avoid}`` block: one already written text per line (JSON-quoted: texts may hold
    line breaks or quotes)."""
    import json

    return "\n".join(f"- {json.dumps(t, ensure_ascii=False)}" for t in texts)


def render_prompt(template: str, *, n: int, hint: str, labels: str, targets: str,
                  avoid: str = "") -> str:
    """Fill the constitution's placeholders; append the targets if it has no ``{targets}``,
    and the texts to avoid (if any) if it has no ``{avoid}``.

    A leading HTML comment (the constitution's notes for blueprint authors) is not sent.
    """
    text = _LEADING_COMMENT.sub("", template, count=1)
    has_targets, has_avoid = "{targets}" in text, "{avoid}" in text
    for placeholder, value in (("{n}", str(n)), ("{hint}", hint), ("{labels}", labels),
                               ("{targets}", targets), ("{avoid}", avoid)):
        text = text.replace(placeholder, value)
    if not has_targets:
        text = text.rstrip() + "\n\nWrite exactly these rows:\n" + targets + "\n"
    if avoid and not has_avoid:
        text = (text.rstrip() + "\n\nThese are written already; do not repeat them or "
                "change only a word or two:\n" + avoid + "\n")
    return text


class Steering:
    """Plans requests so that labels and categories fill up evenly.

    Parameters
    ----------
    task : Task
        The task (labels and their categories).
    template : str
        The constitution text with placeholders.
    diversity : Diversity
        Topics, personas and styles to draw hints from.
    target : int
        Total rows wanted in the store for this task.
    seed : int
        Seed of hints and tie-breaking.
    existing : iterable of row dicts
        Rows already in the store (resume): counted, not asked for again.
    """

    def __init__(self, task: Task, template: str, diversity: Diversity, target: int, *,
                 seed: int = 0, existing: Iterable[Mapping[str, Any]] = ()) -> None:
        self.task = task
        self.template = template
        self.diversity = diversity
        self.seed = seed
        self.labels_text = describe_labels(task)
        # The same targets the data-sufficiency report measures against.
        self.label_target = label_targets(task, target)
        self.cat_target: dict[Cell, int] = category_targets(task, target)
        self.label_count: Counter[str] = Counter()
        self.cell_count: Counter[Cell] = Counter()
        self.label_pending: Counter[str] = Counter()
        self.cell_pending: Counter[Cell] = Counter()
        self.recent: dict[Cell, deque[str]] = {c: deque(maxlen=AVOID_PER_CELL)
                                               for c in self.cat_target}
        self.repeated: Counter[str] = Counter()
        self.add_rows(existing)

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count stored rows (rows of unknown labels are ignored)."""
        for r in rows:
            label = r.get("label")
            if label not in self.label_target:
                continue
            self.label_count[label] += 1
            cell = (label, r.get("category"))
            if cell in self.cat_target:
                self.cell_count[cell] += 1
                self.recent[cell].append(str(r.get("text", "")))

    def note_repeats(self, texts: Iterable[str]) -> None:
        """Texts the model wrote again although they were stored: asked to avoid first."""
        self.repeated.update(texts)

    def avoid(self, targets: Iterable[tuple[str, str | None, int]]) -> list[str]:
        """Texts the next request should not write: the most repeated, then the latest stored
        texts of the cells it targets."""
        out = [t for t, _ in sorted(self.repeated.items(), key=lambda kv: (-kv[1], kv[0]))
               [:AVOID_REPEATED]]
        for label, cat, _ in targets:
            out += reversed(self.recent.get((label, cat), ()))
        return list(dict.fromkeys(t for t in out if t))[:AVOID_TOTAL]

    def _deficits(self) -> tuple[dict[str, int], dict[Cell, int]]:
        lab = {k: t - self.label_count[k] - self.label_pending[k]
               for k, t in self.label_target.items()}
        cell = {c: t - self.cell_count[c] - self.cell_pending[c]
                for c, t in self.cat_target.items()}
        return lab, cell

    def allocate(self, n: int, rng: random.Random) -> list[tuple[str, str | None, int]]:
        """Give ``n`` rows to the labels, then categories, furthest below target."""
        lab_def, cell_def = self._deficits()
        tiebreak = {c: rng.random() for c in self.cat_target}
        lab_tiebreak = {k: rng.random() for k in self.label_target}
        alloc: Counter[Cell] = Counter()
        for _ in range(n):
            label = max(lab_def, key=lambda k: (lab_def[k], lab_tiebreak[k]))
            cells = [c for c in self.cat_target if c[0] == label]
            cell = max(cells, key=lambda c: (cell_def[c], tiebreak[c]))
            lab_def[label] -= 1
            cell_def[cell] -= 1
            alloc[cell] += 1
        return [(lab, cat, alloc[(lab, cat)]) for (lab, cat) in self.cat_target
                if alloc[(lab, cat)]]

    def plan(self, index: int, batch_id: str, n: int) -> RequestPlan:
        """Plan request ``index`` for ``n`` rows and count them as pending."""
        rng = random.Random(f"{self.seed}:{self.task.name}:{index}:alloc")
        targets = tuple(self.allocate(n, rng))
        hint = draw_hint(self.diversity, self.seed, self.task.name, index)
        prompt = render_prompt(self.template, n=n, hint=hint, labels=self.labels_text,
                               targets=describe_targets(targets),
                               avoid=describe_avoid(self.avoid(targets)))
        for label, cat, k in targets:
            self.label_pending[label] += k
            self.cell_pending[(label, cat)] += k
        return RequestPlan(index, batch_id, n, hint, targets, prompt)

    def settle(self, plan: RequestPlan, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        """The request is over: drop its pending counts and count the rows it delivered."""
        for label, cat, k in plan.targets:
            self.label_pending[label] -= k
            self.cell_pending[(label, cat)] -= k
        self.add_rows(rows)

    def balance(self) -> dict[str, int]:
        """Stored rows per label (for the summary)."""
        return {k: self.label_count[k] for k in self.label_target}
