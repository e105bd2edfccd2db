"""End to end: `foundry forge` executes the real notebooks through papermill.

A small target keeps it quick; a second forge of the same blueprint and seed, from scratch in
another folder, must give byte-identical `.onnx` and `.bin` files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from conftest import forge_cli, forge_default

pytestmark = pytest.mark.slow

TASKS = ("is_question", "confirmation")
SUFFIXES = ("classifier.onnx", "preprocessor.bin", "conformance.json", "card.md")
NOTEBOOKS = ("01_generate", "02_refine", "03_train", "04_evaluate", "05_export")


def test_forge_leaves_four_files_per_task(e2e_forge):
    _, models = e2e_forge
    for task in TASKS:
        for suffix in SUFFIXES:
            path = models / f"{task}_{suffix}"
            assert path.is_file() and path.stat().st_size > 0, path
    assert not (models / ".pending").exists()


def test_model_card_carries_the_evaluation(e2e_forge):
    _, models = e2e_forge
    for task in TASKS:
        card = (models / f"{task}_card.md").read_text(encoding="utf-8")
        for metric in ("exam accuracy", "exam answered confidently", "coverage at threshold (test)",
                       "test macro-F1", "## Real-text dev split", "95% lower bound"):
            assert metric in card, (task, metric)
        # A tiny forge may find no threshold that reaches the target: then it is 1.0000.
        assert re.search(r"Confidence threshold: \*\*(0\.\d{4}|1\.0000)\*\*", card), card
        assert re.search(r"\| expected calibration error \(test\) \| 0\.\d{4} \|", card), card
        assert re.search(rf"`{task}_classifier.onnx`: \d+\.\d KiB", card), card


def test_executed_notebooks_are_kept_with_outputs_and_html(e2e_forge):
    run, _ = e2e_forge
    for name in NOTEBOOKS:
        executed = run / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(executed, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{name}: a cell did not run"
        assert sum(bool(c.outputs) for c in code) >= 2, f"{name}: no outputs"
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in code)
        assert (run / "notebooks" / f"{name}.html").stat().st_size > 10_000
    assert (run.parent / "LATEST").read_text().strip() == run.name


def test_every_stage_summary_reads_back_through_its_model(e2e_forge, tmp_path):
    from fakes.summaries import rewritten_differently

    run, _ = e2e_forge
    for task in TASKS:
        assert rewritten_differently(run, task, tmp_path) == []


def test_verify_replays_the_forged_conformance_vectors(e2e_forge):
    _, models = e2e_forge
    proc = subprocess.run([sys.executable, "-m", "foundry", "verify", "--models-dir", str(models)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("conformance vectors reproduced") == 2


def test_runtime_reproduces_the_trained_pipeline(e2e_forge):
    from foundry.runtime import MicroModel
    from foundry.trained import load_trained

    run, models = e2e_forge
    for task in TASKS:
        trained = load_trained(run, task)
        model = MicroModel.load(task, models_dir=models, backend="onnxruntime")
        conf = json.loads((models / f"{task}_conformance.json").read_text(encoding="utf-8"))
        texts = [v["text"] for v in conf["vectors"]]
        texts += ["", "OK", "好的👍", "帮我查一下\u3000明天的航班", "ＷＨＹ？", "为 什 么\t呢"]
        np.testing.assert_allclose(model.predict_proba(texts), trained.pipeline.predict_proba(texts),
                                   rtol=0, atol=1e-6)


def test_rerun_with_steps_reuses_earlier_outputs(e2e_forge, tmp_path):
    run, models = e2e_forge
    proc = forge_cli("text_classification", run.parent.parent, tmp_path, "export-only",
                     "--steps", "export", "--allow-exam-failures")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for task in TASKS:
        assert (tmp_path / f"{task}_preprocessor.bin").read_bytes() == (
            models / f"{task}_preprocessor.bin").read_bytes()


def test_same_blueprint_and_seed_give_byte_identical_artifacts(e2e_forge, tmp_path):
    _, models = e2e_forge
    _, again = forge_default(tmp_path, "e2e-again")
    for task in TASKS:
        for suffix in ("classifier.onnx", "preprocessor.bin", "conformance.json"):
            assert (again / f"{task}_{suffix}").read_bytes() == (
                models / f"{task}_{suffix}").read_bytes(), f"{task}_{suffix} differs"
