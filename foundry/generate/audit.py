"""Audit an offline grammar: which templates write rows the model confidently contradicts?

A template whose rows a model trained on *other* rows predicts as the other label, with high
confidence, is usually one of three things: a mislabelled template, a template whose sentences
read both ways (莫非我说错了吗 as a Statement), or a cue word that the rest of the grammar uses
for one label only (好吧 heading only cancellations). Each of those raises the test split's
confident errors and with them the confidence threshold, so fewer exam cases are answered
confidently. The audit finds them from the grammar alone, without looking at the exam:

1. sample ``rows`` sentences with :func:`~foundry.generate.offline.generate_offline` (seeds
   included), keep one row per normalised text;
2. cross-validate the blueprint's trainer and grid on them with folds that keep similarity
   groups whole (the train stage's own search, :func:`foundry.train.search_grid`), and take
   the best candidate's out-of-fold probabilities;
3. count, per template, the rows predicted wrongly and those predicted wrongly with a top
   probability of at least ``confident``, with the worst examples.

``foundry grammar audit <blueprint> [--task T]`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from foundry.blueprint import Blueprint, Task
from foundry.errors import ConfigError
from foundry.generate.offline import generate_offline
from foundry.textspec import normalize

#: Out-of-fold top probability from which an error counts as confident.
DEFAULT_CONFIDENT = 0.9
#: Worst examples listed per template.
EXAMPLES_PER_TEMPLATE = 3


@dataclass
class GrammarAudit:
    task: str
    rows: int
    params: dict[str, Any]
    cv_accuracy: float
    confident: float
    #: One row per template (``seed`` for hand-written seeds): ``template``, ``label``,
    #: ``category``, ``rows``, ``errors``, ``confident_errors``, ``error_rate``, ``examples``;
    #: worst first.
    templates: pd.DataFrame
    #: Every out-of-fold error: ``text``, ``label``, ``predicted``, ``p``, ``template``.
    errors: pd.DataFrame


def _unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for r in rows:
        key = normalize(r["text"])
        if key and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def audit_grammar(bp: Blueprint, task: Task, *, rows: int | None = None, seed: int | None = None,
                  confident: float = DEFAULT_CONFIDENT) -> GrammarAudit:
    """Cross-validated audit of ``task``'s grammar and seeds (see the module docstring).

    Parameters
    ----------
    rows : sentences to sample; default the task's target (``target_per_task``).
    seed : sampling seed; default ``generation.seed``. Folds use ``train.seed``.
    confident : out-of-fold top probability from which an error counts as confident.
    """
    from foundry.train import (
        FoldFeatures,
        best_candidate,
        make_folds,
        out_of_fold_proba,
        search_grid,
        similarity_groups,
        text_spec,
    )
    from foundry.trainers import Recipe, expand_grid, get_trainer

    if not 0.5 <= confident < 1.0:
        raise ConfigError(f"confident={confident!r}: expected a probability in [0.5, 1)")
    if task.grammar is None:
        raise ConfigError(f"task {task.name!r} has no grammar to audit (blueprint field "
                         f"tasks[].grammar)")
    gen, cfg = bp.spec.generation, bp.spec.train
    sample = generate_offline(bp, task, target=bp.target(task, rows),
                              seed=gen.seed if seed is None else seed).rows
    data = _unique_rows(sample)
    labels = task.label_names
    texts = [r["text"] for r in data]
    y = np.asarray([labels.index(r["label"]) for r in data], dtype=np.int64)
    templates = [r.get("template") or r.get("source", "?") for r in data]

    trainer = get_trainer(cfg.trainer)
    recipe = Recipe(trainer, text_spec(bp, task), bp.features(task).sublinear_tf, cfg.seed,
                    task.label_names)
    folds = make_folds(y, cfg.cv_folds, cfg.seed,
                       similarity_groups(texts, y, bp.spec.refine, cfg.cv_folds))
    features = FoldFeatures(recipe, texts, folds)
    candidates = expand_grid(trainer, cfg.grid)
    w = np.ones(len(y))
    table = search_grid(recipe, candidates, features, y, w, cfg.time_budget_s, log=lambda _: None)
    params = best_candidate(table, candidates)
    proba = out_of_fold_proba(recipe, params, recipe.default_calibration(), None, features, y, w,
                              len(labels))

    predicted, top = proba.argmax(axis=1), proba.max(axis=1)
    wrong = predicted != y
    errors = pd.DataFrame({
        "text": [texts[i] for i in np.flatnonzero(wrong)],
        "label": [labels[k] for k in y[wrong]],
        "predicted": [labels[k] for k in predicted[wrong]],
        "p": top[wrong],
        "template": [templates[i] for i in np.flatnonzero(wrong)],
    }).sort_values("p", ascending=False, kind="stable").reset_index(drop=True)
    return GrammarAudit(
        task=task.name, rows=len(y), params=params, cv_accuracy=float(1.0 - wrong.mean()),
        confident=confident, templates=_per_template(data, templates, errors, confident),
        errors=errors,
    )


def _per_template(data: list[dict[str, Any]], templates: list[str], errors: pd.DataFrame,
                  confident: float) -> pd.DataFrame:
    rows = pd.DataFrame({"template": templates, "label": [r["label"] for r in data],
                         "category": [r.get("category", "") for r in data]})
    out = rows.groupby(["template", "label"], sort=True).agg(
        category=("category", "first"), rows=("category", "size")).reset_index()
    keys = list(zip(out["template"], out["label"], strict=True))
    groups = {key: g for key, g in errors.groupby(["template", "label"])}  # worst first
    empty = errors.iloc[:0]
    out["errors"] = [len(groups.get(k, empty)) for k in keys]
    out["confident_errors"] = [int((groups.get(k, empty)["p"] >= confident).sum()) for k in keys]
    out["error_rate"] = out["errors"] / out["rows"]
    out["examples"] = [
        "; ".join(f"{t} ({p:.2f})" for t, p in
                  groups.get(k, empty)[["text", "p"]].head(EXAMPLES_PER_TEMPLATE).itertuples(
                      index=False))
        for k in keys
    ]
    return out.sort_values(["confident_errors", "errors", "template"],
                           ascending=[False, False, True], kind="stable").reset_index(drop=True)


def format_audit(audit: GrammarAudit, top: int = 20) -> str:
    """The audit as markdown: a headline, then the ``top`` worst templates."""
    strong = int(audit.templates["confident_errors"].sum())
    lines = [
        f"## {audit.task}: {audit.rows} unique rows, out-of-fold accuracy "
        f"{audit.cv_accuracy:.2%}, {len(audit.errors)} errors, {strong} at p >= "
        f"{audit.confident:g} (grid choice {audit.params})",
        "",
        "| template | label | category | rows | errors | confident | worst examples (p) |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    shown = audit.templates[audit.templates["errors"] > 0].head(top)
    for r in shown.itertuples(index=False):
        examples = str(r.examples).replace("|", "\\|")
        lines.append(f"| {r.template} | {r.label} | {r.category} | {r.rows} | {r.errors} | "
                     f"{r.confident_errors} | {examples} |")
    if shown.empty:
        lines.append("| (no template has an out-of-fold error) | | | | | | |")
    return "\n".join(lines)
