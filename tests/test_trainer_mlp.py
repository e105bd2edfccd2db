"""A second kind of trainer end to end: ``tfidf_mlp`` (a one-hidden-layer perceptron over the
same TF-IDF n-grams) forges the default blueprint, passes ``foundry verify`` and the Node
conformance replay, is scored through ONNX Runtime by the Python runtime, and is refused by the
Rust runtime (which reads only linear graphs) with a message naming the graph.

The forge runs the train, evaluate and export notebooks on the rows that the shared end-to-end
forge (``e2e_forge``, :data:`conftest.E2E_TARGET` rows per task) generated and refined: stages
1-2 read no ``train`` setting, and their stamps (``foundry/stamps.py``) hold that they are the
rows this blueprint makes, or the forge would refuse them as stale. Two folds and one candidate
keep it short.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FORGED_TASKS, forge_cli
from test_node_runtime import run_node_suite, summary_count
from test_rust_runtime import require_rust_cli

from foundry.blueprint import load_blueprint
from foundry.runtime import MicroModel, read_linear_graph
from foundry.trainers import get_trainer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _mlp_blueprint(folder: Path) -> Path:
    """The default blueprint with ``train.trainer: tfidf_mlp`` (and a grid of its keys)."""
    bp = folder / "text_classification"
    shutil.copytree(REPO / "blueprints" / "text_classification", bp)
    path = bp / "blueprint.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["train"].update(trainer="tfidf_mlp", grid={"hidden": [8], "max_features": [1500]}, cv_folds=2)
    data["train"].pop("calibration", None)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return bp


@pytest.fixture(scope="module")
def mlp_models(e2e_forge, tmp_path_factory) -> tuple[Path, Path]:
    """The MLP blueprint forged with ``--steps train,evaluate,export`` in a runs folder holding
    a copy of the end-to-end run: (its run folder, its models dir)."""
    e2e_run, _ = e2e_forge
    base = tmp_path_factory.mktemp("mlp")
    bp, runs, models = _mlp_blueprint(base), base / "runs", base / "models"
    shutil.copytree(e2e_run, runs / "text_classification" / e2e_run.name)
    proc = forge_cli(bp, runs, models, "mlp", "--steps", "train,evaluate,export",
                     "--allow-exam-failures")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"reusing generate,refine of run {e2e_run.name}" in proc.stdout, proc.stdout
    return runs / "text_classification" / "mlp", models


def test_blueprint_selects_the_trainer_and_checks_its_grid(tmp_path: Path) -> None:
    bp = load_blueprint(_mlp_blueprint(tmp_path))
    trainer = get_trainer(bp.spec.train.trainer)
    assert trainer.name == "tfidf_mlp" and not trainer.linear
    assert trainer.explained_by == "occlusion" and trainer.calibrations == ("none",)
    path = tmp_path / "text_classification" / "blueprint.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["train"]["grid"] = {"C": [1.0]}  # a key of the linear trainers
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "foundry", "blueprint", "check", str(path.parent)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "train.grid.C: not a parameter of trainer 'tfidf_mlp'" in proc.stdout + proc.stderr


def test_forged_mlp_fits_the_budget_and_verifies(mlp_models) -> None:
    run, models = mlp_models
    proc = subprocess.run([sys.executable, "-m", "foundry", "verify", "--models-dir", str(models)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("conformance vectors reproduced") == len(FORGED_TASKS)
    for task in FORGED_TASKS:
        onnx, binf = models / f"{task}_classifier.onnx", models / f"{task}_preprocessor.bin"
        assert onnx.stat().st_size + binf.stat().st_size <= 100_000  # export.size_budget_kb
        assert read_linear_graph(onnx.read_bytes()) is None  # not a linear model
        assert MicroModel.load(task, models).backend == "onnxruntime"
        info = json.loads((run / "train" / task / "train.json").read_text(encoding="utf-8"))
        assert info["trainer"] == "tfidf_mlp" and info["calibration"] == "none"
        assert "tfidf_mlp" in (models / f"{task}_card.md").read_text(encoding="utf-8")


def test_errors_are_explained_by_occlusion(mlp_models) -> None:
    run, _ = mlp_models
    lines = (run / "evaluate" / "is_question" / "errors.csv").read_text(encoding="utf-8")
    explained = [line for line in lines.splitlines()[1:] if "' +" in line]
    assert explained, "no error names the n-grams that pushed it"


def test_node_replays_the_mlp_conformance_vectors(mlp_models) -> None:
    _, models = mlp_models
    out = run_node_suite(models)
    assert summary_count(out, "fail") == 0
    for task in FORGED_TASKS:
        assert f"{task}: every conformance vector is reproduced" in out


def test_rust_refuses_the_mlp_graph_by_name(mlp_models) -> None:
    _, models = mlp_models
    run = subprocess.run([str(require_rust_cli()), "--models-dir", str(models), "--task",
                          "is_question"], input=b"hello\n", capture_output=True, timeout=60)
    err = run.stderr.decode()
    assert run.returncode == 1 and run.stdout == b"", err
    assert 'graph "is_question_classifier"' in err and "Relu" in err, err
    assert "reads only the linear graphs" in err and err.rstrip().endswith("(spec rule O1)"), err
