"""A copy of a real blueprint with some settings changed, for forges in tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from foundry.blueprint import BLUEPRINT_FILE, load_blueprint


def _merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def copy_blueprint(blueprint: str, folder: Path, changes: dict[str, Any] | None = None, *,
                   name: str | None = None,
                   extra_exam: dict[str, list[dict]] | None = None) -> Path:
    """Copy ``blueprint`` (a name or path) to ``folder/<name>`` and return the new folder.

    ``changes`` is merged into ``blueprint.yaml`` section by section
    (``{"evaluate": {"exam_min_accuracy": 1.0}}``); ``name`` renames the copy (its runs go
    to ``runs/<name>/``); ``extra_exam`` appends rows to a task's exam file.
    """
    source = load_blueprint(blueprint).root
    name = name or source.name
    target = Path(folder) / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("corrections"))
    raw = yaml.safe_load((target / BLUEPRINT_FILE).read_text(encoding="utf-8"))
    _merge(raw, {**(changes or {}), "name": name})
    (target / BLUEPRINT_FILE).write_text(
        yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    bp = load_blueprint(target)
    for task, rows in (extra_exam or {}).items():
        with open(bp.path(bp.task(task).exam), "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return target
