"""The stage notebooks opened by hand: kernel in ``notebooks/``, default parameters.

A fresh "clone" (the notebooks and the default blueprint copied into an empty project folder,
``FOUNDRY_HOME`` pointing at it) runs ``01`` … ``05`` one after the other exactly as a person
stepping through them in JupyterLab would: no parameters injected, the kernel's working folder
``notebooks/``. They must create and fill one new run, install the eight default artifacts in
the project's ``models/`` and leave nothing under ``notebooks/`` but the notebooks.

The copied blueprint asks for fewer rows (and a lower exam bar) so that this stays quick: the
point here is where things go, not model quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from test_e2e import NOTEBOOKS, SUFFIXES, TASKS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def fresh_project(root: Path, target: int = 400) -> Path:
    """The parts of a fresh clone the notebooks use, with a smaller default target."""
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    bp_dir = root / "blueprints" / "text_classification"
    shutil.copytree(REPO / "blueprints" / "text_classification", bp_dir,
                    ignore=shutil.ignore_patterns("corrections"))
    spec = yaml.safe_load((bp_dir / "blueprint.yaml").read_text(encoding="utf-8"))
    spec["generation"]["target_per_task"] = target
    spec["evaluate"]["exam_min_accuracy"] = 0.5
    (bp_dir / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    return root


def run_by_hand(project: Path, name: str, out_dir: Path) -> nbformat.NotebookNode:
    """Execute a notebook like JupyterLab: kernel in notebooks/, nothing injected."""
    import papermill as pm

    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(str(project / "notebooks" / f"{name}.ipynb"), str(out),
                        cwd=str(project / "notebooks"), progress_bar=False, kernel_name="python3")
    return nbformat.read(out, as_version=4)


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def test_fresh_clone_steps_through_the_notebooks(tmp_path, monkeypatch):
    project = fresh_project(tmp_path / "clone")
    for var in ("FOUNDRY_RUNS_DIR", "FOUNDRY_MODELS_DIR", "GEMINI_API_KEYS", "OPENAI_BASE_URL",
                "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FOUNDRY_HOME", str(project))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebooks_before = sorted(p.name for p in (project / "notebooks").iterdir())
    out_dir = tmp_path / "executed"
    out_dir.mkdir()

    executed = {name: run_by_hand(project, name, out_dir) for name in NOTEBOOKS}

    runs = project / "runs" / "text_classification"
    run_ids = [d.name for d in runs.iterdir() if d.is_dir() and d.name != "raw"]
    assert len(run_ids) == 1, run_ids
    run_id = run_ids[0]
    # Every notebook says which run it works in; the last one completes it.
    for name, nb in executed.items():
        assert f"works in {runs / run_id}" in _text(nb), name
    assert f"run {run_id} is now the latest complete run" in _text(executed["05_export"])
    assert (runs / "LATEST").read_text().strip() == run_id
    assert (runs / "CURRENT").read_text().strip() == run_id
    expected = sorted(f"{task}_{suffix}" for task in TASKS for suffix in SUFFIXES)
    assert sorted(p.name for p in (project / "models").iterdir()) == expected
    assert sorted(p.name for p in (project / "notebooks").iterdir()) == notebooks_before
    # The examples of 05_export are the tasks' own exam cases.
    for task in TASKS:
        exam = project / "blueprints" / "text_classification" / "exam" / f"{task}.jsonl"
        first = json.loads(exam.read_text(encoding="utf-8").splitlines()[0])["text"]
        assert first in _html(executed["05_export"]), task


def _html(nb: nbformat.NotebookNode) -> str:
    return "\n".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells
                     if c.cell_type == "code" for o in c.get("outputs", []))
