"""Data sufficiency: did generation get near its target for every label and sub-category?

A label's target is its even share of ``generation.target_per_task``; a sub-category's is its
share of the label's (the offline provider may weight categories, and then its own quotas are
the targets). :func:`measure` compares what the raw stream holds with those targets;
:func:`check_sufficiency` stops the forge after stage 1 when a label ends below
``generation.min_label_share`` of its target, so that too little data is a clear message and
not a model trained on twenty rows. Sub-categories below the share are reported, not gated:
one thin category should not block a forge, but the table makes it visible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from foundry.blueprint import Task
from foundry.errors import FoundryError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["level", "label", "category", "target", "rows", "share", "below"]


class InsufficientDataError(FoundryError):
    """A label ended far below its target after generation; the message lists them."""


def split_evenly(total: int, names: list[Any]) -> dict[Any, int]:
    """``total`` spread over ``names`` as evenly as possible, earlier names taking the remainder."""
    base, extra = divmod(total, len(names))
    return {name: base + (1 if i < extra else 0) for i, name in enumerate(names)}


def label_targets(task: Task, target: int) -> dict[str, int]:
    """Rows wanted per label: an even share of the task's target."""
    return split_evenly(target, task.label_names)


def category_targets(task: Task, target: int) -> dict[tuple[str, str | None], int]:
    """Rows wanted per (label, category): an even share of the label's target
    (``None`` is the category of a label that declares none)."""
    out: dict[tuple[str, str | None], int] = {}
    for label, k in label_targets(task, target).items():
        cats: list[str | None] = list(next(x for x in task.labels if x.name == label).categories)
        for cat, n in split_evenly(k, cats or [None]).items():
            out[(label, cat)] = n
    return out


@dataclass(frozen=True)
class Sufficiency:
    """Achieved against target for one task.

    Attributes
    ----------
    task : str
    target : int
        Rows wanted for the task.
    min_share : float
        ``generation.min_label_share``.
    table : pandas.DataFrame
        One row per label (``level == "label"``) and per sub-category (``"category"``):
        ``target``, ``rows``, ``share`` (rows / target) and ``below`` (share < min_share).
    """

    task: str
    target: int
    min_share: float
    table: pd.DataFrame

    @property
    def short_labels(self) -> pd.DataFrame:
        """The labels below the gate."""
        t = self.table
        return t[(t["level"] == "label") & t["below"]]

    @property
    def passed(self) -> bool:
        return self.short_labels.empty

    def summary(self) -> str:
        """One line: rows against target per label, and the thin sub-categories."""
        t = self.table
        labels = ", ".join(f"{r.label} {r.rows}/{r.target} ({r.share:.0%})"
                           for r in t[t["level"] == "label"].itertuples())
        thin = [f"{r.label}/{r.category}" for r in t[(t["level"] == "category") & t["below"]]
                .itertuples()]
        verdict = "ok" if self.passed else f"below {self.min_share:.0%} of target"
        return (f"{self.task}: {labels}; {verdict}"
                + (f"; thin sub-categories: {', '.join(thin)}" if thin else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "min_share": self.min_share, "passed": self.passed,
                "rows": self.table.to_dict(orient="records")}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """In a pydantic model (:class:`foundry.generate.GenerateSummary`) it is taken as it
        is: an instance of this class (the model converts the file's dict with
        :meth:`from_dict`)."""
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(cls)

    @classmethod
    def from_dict(cls, task: str, data: Mapping[str, Any]) -> Sufficiency:
        """The inverse of :meth:`to_dict` (``passed`` is recomputed from the rows)."""
        import pandas as pd

        return cls(task, int(data["target"]), float(data["min_share"]),
                   pd.DataFrame(list(data["rows"]), columns=COLUMNS))


def measure(task: Task, rows: Iterable[Mapping[str, Any]], target: int, min_share: float,
            category_quota: Mapping[tuple[str, str], int] | None = None) -> Sufficiency:
    """Count ``rows`` per label and sub-category against their targets.

    ``category_quota`` replaces the even per-category targets (the offline provider's
    quotas, which follow the grammar's ``category_weights``).
    """
    import pandas as pd

    labels = label_targets(task, target)
    cats = category_targets(task, target)
    if category_quota:
        cats.update({k: int(v) for k, v in category_quota.items() if k in cats and v is not None})
    per_label: Counter[str] = Counter()
    per_cat: Counter[tuple[str, str | None]] = Counter()
    for r in rows:
        label = r.get("label")
        if label not in labels:
            continue
        per_label[label] += 1
        cell = (label, r.get("category")) if (label, r.get("category")) in cats else (label, None)
        per_cat[cell] += 1
    records = []
    for label, want in labels.items():
        records.append(_record("label", label, None, want, per_label[label], min_share))
        for (lab, cat), want_cat in cats.items():
            if lab == label and cat is not None:
                records.append(_record("category", lab, cat, want_cat, per_cat[(lab, cat)],
                                       min_share))
    return Sufficiency(task.name, target, min_share, pd.DataFrame(records, columns=COLUMNS))


def _record(level: str, label: str, category: str | None, target: int, rows: int,
            min_share: float) -> dict[str, Any]:
    share = rows / target if target else 1.0
    return {"level": level, "label": label, "category": category, "target": int(target),
            "rows": int(rows), "share": round(share, 4), "below": share < min_share}


def check_sufficiency(results: Mapping[str, Sufficiency], blueprint: str = "BLUEPRINT") -> None:
    """Raise :class:`InsufficientDataError` naming every label below its gate."""
    lines = []
    for name, s in results.items():
        for row in s.short_labels.itertuples():
            lines.append(f"  {name}: label {row.label!r} has {row.rows} rows, {row.share:.0%} of "
                         f"its target {row.target} (minimum {s.min_share:.0%})")
    if not lines:
        return
    share = next(iter(results.values())).min_share
    raise InsufficientDataError(
        "too little data: generation ended far below target "
        f"(generation.min_label_share {share}):\n" + "\n".join(lines) + "\n"
        "  Add grammar templates or seeds (offline), let the LLM generate more (raise "
        "generation.max_requests / max_tokens), or lower generation.target_per_task; "
        f"`foundry blueprint check {blueprint}` estimates what the offline grammar can produce."
    )
