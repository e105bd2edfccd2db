"""The JavaScript runtime's linear backend (``runtimes/node/src/graph.js`` + ``linear.js``)
against its references: ONNX Runtime in the same runtime, and the Python graph reader.

The models are those of ``tests/test_runtime_backends.py``: every graph shape the linear
backend reads (LinearClassifier with each post transform, + L1 Normalizer, + sigmoid
calibration; the int8 softmax graph, dense and sparse), the graphs it must leave to ONNX
Runtime, and the sparse int8 constants it must refuse with the Python reader's message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import QUESTIONS, STATEMENTS, fit_int8
from test_runtime_backends import (
    GREETINGS,
    MODELS,
    SPARSE_DATA_CASES,
    SPARSE_GRAPH_CASES,
    _calibrated,
    _edited,
    _fit,
    _install,
    _logreg,
    _texts,
    sparse_int8,  # noqa: F401 (a fixture)
)

from foundry.runtime import check_conformance, read_linear_graph
from foundry.runtime.model import MicroModel

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "runtimes" / "node"
ORACLE = NODE_DIR / "tools" / "backend-oracle.js"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("the JavaScript runtime is not installed (make node)")
    return found


def _oracle(node: str, *args: str) -> dict:
    done = subprocess.run([node, str(ORACLE), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _both_backends(node: str, models_dir: Path, task: str, texts: list[str],
                   tmp_path: Path) -> dict:
    inputs = tmp_path / f"{task}_texts.jsonl"
    inputs.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    return _oracle(node, "proba", str(models_dir), task, str(inputs))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("node_backends")
    for task, make in MODELS.items():
        _install(root, task, make())
    texts = QUESTIONS + STATEMENTS + GREETINGS
    for layout in ("dense", "sparse"):
        trained = fit_int8(texts, np.arange(len(texts)) % 4, ["a", "b", "c", "d"], layout,
                           temperature=0.3)
        if layout == "sparse":
            trained.pipeline.named_steps["clf"].sparsify(120)
        _install(root, f"int8_{layout}", trained)
    return root


LINEAR_TASKS = [*MODELS, "int8_dense", "int8_sparse"]


@pytest.mark.parametrize("task", LINEAR_TASKS)
def test_linear_backend_matches_onnxruntime(node, models_dir, task, tmp_path):
    texts = _texts()
    out = _both_backends(node, models_dir, task, texts, tmp_path)
    assert out["auto"] == "linear"
    ours, theirs = np.array(out["linear"]), np.array(out["onnxruntime"])
    assert ours.shape == theirs.shape == (len(texts), len(MicroModel.load(
        task, models_dir=models_dir).labels))
    assert np.abs(ours - theirs).max() < 1e-5
    # ... and both equal the Python runtime, on the texts JSON carries unchanged (a Python
    # str may hold the lone surrogates "\ud800\udfff", which JavaScript reads as one pair).
    python = MicroModel.load(task, models_dir=models_dir).predict_proba(texts)
    same = [not any("\ud800" <= c <= "\udfff" for c in t) for t in texts]
    assert sum(same) > 600
    assert np.abs(ours[same] - python[same]).max() < 1e-5


@pytest.mark.parametrize("task", ["binary", "calibrated", "int8_sparse", "multiclass_gated"])
def test_linear_backend_passes_the_conformance_vectors(node, models_dir, task):
    done = subprocess.run(
        [node, str(NODE_DIR / "cli.js"), "--models-dir", str(models_dir), "--task", task,
         "--verify"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert check_conformance(MicroModel.load(task, models_dir=models_dir),
                             models_dir / f"{task}_conformance.json").ok


@pytest.mark.parametrize("task", ["binary", "multiclass", "calibrated", "no_idf_no_norm",
                                  "int8_dense", "int8_sparse"])
def test_graph_reader_reads_what_the_python_reader_reads(node, models_dir, task):
    onnx_path = models_dir / f"{task}_classifier.onnx"
    want = read_linear_graph(onnx_path.read_bytes())
    got = _oracle(node, "graph", str(onnx_path))["graph"]
    k, d = want.coefficients.shape
    assert (got["k"], got["d"]) == (k, d)
    np.testing.assert_array_equal(np.array(got["weights"], np.float32).reshape(d, k),
                                  want.coefficients.T)
    np.testing.assert_array_equal(np.array(got["intercepts"], np.float32), want.intercepts)
    assert (got["post"], got["l1"]) == (want.post_transform, want.l1_normalize)
    if want.calibration is None:
        assert got["calibration"] is None
    else:
        assert got["calibration"] == pytest.approx(
            {"column": want.calibration.column, "a": want.calibration.a, "b": want.calibration.b})


@pytest.mark.parametrize("name", ["isotonic", "sigmoid_3_classes"])
def test_other_graphs_stay_with_onnxruntime(node, tmp_path, name):
    trained = {
        "isotonic": lambda: _fit(_calibrated(_logreg(), "isotonic")),
        "sigmoid_3_classes": lambda: _fit(_calibrated(_logreg(), "sigmoid"), classes=3),
    }[name]()
    _install(tmp_path, name, trained)
    out = _both_backends(node, tmp_path, name, QUESTIONS + STATEMENTS, tmp_path)
    assert out["auto"] == "onnxruntime"
    assert "the linear backend runs only a linear graph" in out["linear"]["error"]
    python = MicroModel.load(name, models_dir=tmp_path).predict_proba(QUESTIONS + STATEMENTS)
    assert np.abs(np.array(out["onnxruntime"]) - python).max() < 1e-5


@pytest.mark.parametrize("case", list(SPARSE_DATA_CASES))
def test_invalid_sparse_int8_constants_are_refused_alike(node, sparse_int8, case, tmp_path):  # noqa: F811
    edit, message = SPARSE_DATA_CASES[case]
    path = tmp_path / "edited.onnx"
    path.write_bytes(_edited(sparse_int8[1], edit))
    with pytest.raises(ValueError) as python:
        read_linear_graph(path.read_bytes())
    assert _oracle(node, "graph", str(path)) == {"error": str(python.value)}, message


@pytest.mark.parametrize("case", list(SPARSE_GRAPH_CASES))
def test_other_sparse_int8_graphs_are_not_read(node, sparse_int8, case, tmp_path):  # noqa: F811
    path = tmp_path / "edited.onnx"
    path.write_bytes(_edited(sparse_int8[1], SPARSE_GRAPH_CASES[case]))
    assert _oracle(node, "graph", str(path)) == {"graph": None}
