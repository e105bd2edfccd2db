"""``foundry blueprint new NAME``: a small blueprint that forges offline as it is.

The files under ``template/`` are a complete one-task blueprint: a commented
``blueprint.yaml``, a constitution (the LLM prompt), a small template grammar, a few seeds and
a hand-written exam. :func:`new_blueprint` copies them to ``blueprints/<name>/``, filling in
the blueprint and task names; ``docs/your-first-blueprint.md`` walks from there to a forged,
tested model.
"""

from __future__ import annotations

import re
from pathlib import Path

from foundry.blueprint import BLUEPRINT_FILE, BLUEPRINTS_DIR
from foundry.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "template"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ScaffoldError(ConfigError):
    """The blueprint cannot be created (bad name, folder exists, task name taken): exit 2."""


def _task_names_in(blueprints_dir: Path) -> dict[str, Path]:
    import yaml

    names: dict[str, Path] = {}
    for file in sorted(Path(blueprints_dir).glob(f"*/{BLUEPRINT_FILE}")):
        try:
            tasks = yaml.safe_load(file.read_text(encoding="utf-8")).get("tasks") or []
        except Exception:  # noqa: BLE001 - a broken blueprint is its own check's business
            continue
        names.update({t["name"]: file for t in tasks if isinstance(t, dict) and "name" in t})
    return names


def new_blueprint(name: str, *, task: str | None = None,
                  blueprints_dir: Path | None = None) -> Path:
    """Create ``<blueprints_dir>/<name>/`` from the template and return its path.

    Parameters
    ----------
    name : the blueprint's name (lower case letters, digits and ``_``; it names the folder).
    task : the name of its task (it names the model files); default ``name``.
    blueprints_dir : default ``blueprints/`` of the project.

    Raises
    ------
    ScaffoldError
        For a bad name, an existing folder, or a task name another blueprint already uses.
    """
    blueprints_dir = Path(blueprints_dir or BLUEPRINTS_DIR)
    task = task or name
    for what, value in (("blueprint name", name), ("task name", task)):
        if not _NAME.match(value):
            raise ScaffoldError(f"{what} {value!r} must match {_NAME.pattern}: lower case letters, "
                                "digits and '_', starting with a letter (it names files)")
    target = blueprints_dir / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; choose another name or remove it")
    taken = _task_names_in(blueprints_dir)
    if task in taken:
        raise ScaffoldError(f"task {task!r} is already defined in {taken[task]}; task names "
                            f"name the model files, choose another with --task")
    files = {}
    for src in sorted(TEMPLATE_DIR.rglob("*")):
        if src.is_file():
            rel = src.relative_to(TEMPLATE_DIR).as_posix().replace("/task.", f"/{task}.")
            text = src.read_text(encoding="utf-8")
            files[rel] = text.replace("{{name}}", name).replace("{{task}}", task)
    try:
        for rel, text in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ScaffoldError(f"cannot write {target}: {exc}") from None
    return target


__all__ = ["TEMPLATE_DIR", "ScaffoldError", "new_blueprint"]
