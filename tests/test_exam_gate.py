"""A forge whose exam fails exports nothing, whether the export runs in the forge or alone
(``--steps export``, also on a run whose evaluation was overridden before);
``--allow-exam-failures`` exports and says so in the card and the ``.bin``.

Real forges through papermill, of a copy of the default blueprint whose exam cannot pass
(minimum 100%, plus one deliberately mislabelled case).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import forge_cli
from fakes.blueprint_copy import copy_blueprint

from foundry.v1 import preprocessor_pb2 as pb

pytestmark = pytest.mark.slow

TASKS = ("is_question", "confirmation")


def _forge(bp: Path, runs: Path, models: Path, *extra: str) -> subprocess.CompletedProcess:
    return forge_cli(bp, runs, models, "gate", *extra)


def test_a_failed_exam_exports_nothing_also_through_steps_export(tmp_path):
    bp = copy_blueprint(
        "text_classification", tmp_path, name="gate_test",
        changes={"evaluate": {"exam_min_accuracy": 1.0},
                 "train": {"grid": {"C": [4.0]}, "cv_folds": 3}},
        extra_exam={"is_question": [{"text": "今天天气怎么样呀", "label": "Statement",
                                     "category": "command"}]})
    runs, models = tmp_path / "runs", tmp_path / "models"

    full = _forge(bp, runs, models, "--target", "200")
    assert full.returncode == 1, full.stdout + full.stderr
    assert "stage 'evaluate' failed" in full.stderr and "ExamGateError" in full.stderr
    assert not models.exists() or not any(models.iterdir())

    alone = _forge(bp, runs, models, "--steps", "export")
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert not models.exists() or not any(models.iterdir())

    allowed = _forge(bp, runs, models, "--steps", "evaluate,export", "--allow-exam-failures")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    shipped = {}
    for task in TASKS:
        shipped[task] = (models / f"{task}_preprocessor.bin").read_bytes()
        msg = pb.Preprocessor()
        msg.ParseFromString(shipped[task])
        card = (models / f"{task}_card.md").read_text(encoding="utf-8")
        assert msg.provenance.exam_gate == "overridden", task
        assert "**Exam gate: OVERRIDDEN.**" in card, task

    # The run is complete now (evaluated with the override); exporting it again without the
    # override is refused by the export stage itself, and the installed models stay as they are.
    again = _forge(bp, runs, models, "--steps", "export")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "stage 'export' failed" in again.stderr and "nothing exported" in again.stderr
    for task in TASKS:
        assert (models / f"{task}_preprocessor.bin").read_bytes() == shipped[task]
