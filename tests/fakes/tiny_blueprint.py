"""A tiny two-task blueprint written into a temporary folder (tests and the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CONSTITUTION = """你是数据生成器。请写 {n} 条中文用户消息。
多样性提示：{hint}
标签定义：
{labels}
本次需要：
{targets}
只输出 JSON 数组，例如 [{"text": "...", "label": "...", "category": "..."}]。
"""


def write_tiny_blueprint(root: Path, *, name: str = "tiny", task: str = "is_question",
                         exam: tuple[tuple[str, str], ...] = (("今天天气怎么样", "Question"),),
                         sections: dict[str, Any] | None = None, **generation: Any) -> Path:
    """Write ``root/blueprint.yaml`` (+ constitution, exam) and return ``root``.

    ``name`` and ``task`` name the blueprint and its one task; ``exam`` holds its
    ``(text, label)`` cases; ``sections`` adds top-level sections (``{"evaluate": {...}}``);
    ``generation`` overrides the generation settings (e.g. ``samples_per_request=10``).
    """
    (root / "constitutions").mkdir(parents=True, exist_ok=True)
    (root / "exam").mkdir(exist_ok=True)
    (root / "constitutions" / f"{task}.md").write_text(CONSTITUTION, encoding="utf-8")
    (root / "exam" / f"{task}.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in exam),
        encoding="utf-8")
    gen = {"samples_per_request": 10, "concurrency": 4, "temperature": 0.7, "max_retries": 6,
           "request_timeout_s": 2.0, "min_chars": 2, "max_chars": 60,
           "diversity": {"topics": ["天气", "音乐", "购物"], "personas": ["学生", "老人"],
                         "styles": ["口语", "简短"]}}
    gen.update(generation)
    spec = {
        "name": name,
        "tasks": [{
            "name": task,
            "labels": [
                {"name": "Question", "definition": "用户在寻求信息",
                 "categories": ["wh_question", "yes_no"]},
                {"name": "Statement", "definition": "用户想执行动作或陈述",
                 "categories": ["command", "record", "fact"]},
            ],
            "constitution": f"constitutions/{task}.md",
            "exam": f"exam/{task}.jsonl",
        }],
        "generation": gen,
        **(sections or {}),
    }
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True),
                                         encoding="utf-8")
    return root
