"""Synthetic Question/Statement rows and JSONL files for the train and evaluate tests."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

#: Exam sentences use their own topics, so that no exam sentence is a training sentence.
EXAM_TOPICS = ["银行", "公园", "飞机", "手表", "牙医", "图书馆"]


def make_rows(n: int, seed: int, noise: float = 0.0, *, questions: Sequence[str],
              statements: Sequence[str], topics: Sequence[str],
              endings: Sequence[str] | None = None, categories: int = 2) -> list[dict]:
    """``n`` rows alternating Question and Statement: a template (``{t}`` = a topic), then one
    of ``endings`` if given; ``noise`` flips that share of labels; category ``c<i % categories>``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "Question" if i % 2 == 0 else "Statement"
        text = rng.choice(questions if label == "Question" else statements).format(
            t=rng.choice(topics))
        if endings is not None:
            text += rng.choice(endings)
        if rng.random() < noise:
            label = "Statement" if label == "Question" else "Question"
        rows.append({"text": text, "label": label, "category": f"c{i % categories}",
                     "source": "synthetic"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
