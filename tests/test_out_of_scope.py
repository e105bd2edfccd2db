"""Out of scope as an answer: the ``.bin`` field, rule B5, and every runtime answering it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from foundry.errors import ArtifactError
from foundry.runtime import MicroModel

REPO = Path(__file__).resolve().parents[1]
RUST_CLI = REPO / "runtimes" / "rust" / "target" / "release" / "foundry-rt"
TRAIN = {
    "alarm": ["set an alarm for six", "wake me up at seven", "alarm at 5 am please",
              "set my alarm for noon", "wake me at eight tomorrow"],
    "weather": ["will it rain today", "what is the weather", "is it sunny tomorrow",
                "weather forecast for paris", "how cold is it outside"],
    "oos": ["how tall is a giraffe", "who painted the mona lisa", "best pizza topping",
            "what is a prime number", "tell me about volcanoes"],
}
PROBES = ["set an alarm for nine", "will it rain in rome", "banana bread recipe", "zzz"]


@pytest.fixture(scope="module")
def oos_models(tmp_path_factory) -> Path:
    from conftest import fit_int8

    from foundry.export import conformance_texts, install_artifacts, model_files

    labels = list(TRAIN)
    texts = [t for lab in labels for t in TRAIN[lab]]
    y = np.array([i for i, lab in enumerate(labels) for _ in TRAIN[lab]])
    trained = fit_int8(texts, y, labels, "tiny_oos", temperature=0.3)
    pipe = trained.pipeline
    models = tmp_path_factory.mktemp("oos-models")
    # The threshold sits between the probes' top probabilities: some sure, some not.
    top = np.sort(pipe.predict_proba(PROBES).max(axis=1))
    threshold = float((top[1] + top[2]) / 2)
    install_artifacts("tiny_oos", model_files(
        trained, task="tiny_oos", threshold=threshold, texts=conformance_texts(PROBES, []),
        card="# tiny_oos\n", out_of_scope="oos"), models)
    return models


@pytest.mark.parametrize("backend", ["auto", "numpy", "onnxruntime"])
def test_unsure_answers_are_out_of_scope(oos_models: Path, backend: str) -> None:
    model = MicroModel.load("tiny_oos", models_dir=oos_models, backend=backend)
    assert model.out_of_scope == "oos"
    answers = model.predict_many(PROBES)
    assert [a.label for a in answers] == [model.predict(t).label for t in PROBES]
    unsure = [a for a in answers if not a.confident]
    sure = [a for a in answers if a.confident]
    assert unsure and sure
    assert all(a.label == "oos" for a in unsure)
    assert all(a.label == max(a.probabilities, key=a.probabilities.get) for a in sure)
    # score is the top probability, also when the answer is the out-of-scope label
    assert all(a.score == max(a.probabilities.values()) for a in answers)
    assert [a.score for a in answers] == [model.predict(t).score for t in PROBES]


def test_other_runtimes_agree(oos_models: Path) -> None:
    stdin = "\n".join(PROBES) + "\n"
    ours = subprocess.run([sys.executable, "-m", "foundry", "predict", "tiny_oos", "--models-dir",
                           str(oos_models), "--json"], input=stdin, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    want = [(json.loads(line)["label"], json.loads(line)["confident"]) for line in ours]
    assert ("oos", False) in want
    runs = {"node": ["node", str(REPO / "runtimes/node/cli.js")]}
    if RUST_CLI.is_file():
        runs["rust"] = [str(RUST_CLI)]
    if shutil.which("node") is None:
        runs.pop("node")
    for name, cmd in runs.items():
        out = subprocess.run([*cmd, "--models-dir", str(oos_models), "--task", "tiny_oos"],
                             input=stdin, capture_output=True, text=True, check=True)
        got = [(json.loads(line)["label"], json.loads(line)["confident"])
               for line in out.stdout.splitlines()]
        assert got == want, name
    verify = subprocess.run([sys.executable, "-m", "foundry", "verify", "tiny_oos",
                             "--models-dir", str(oos_models)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_out_of_scope_label_outside_the_labels_is_refused(oos_models: Path,
                                                             tmp_path: Path) -> None:
    from foundry.artifacts import seal_message
    from foundry.v1 import preprocessor_pb2 as pb

    for f in oos_models.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "tiny_oos_preprocessor.bin"
    msg = pb.Preprocessor()
    msg.ParseFromString(path.read_bytes()[:-34])
    msg.out_of_scope = "unknown"
    path.write_bytes(seal_message(msg))
    with pytest.raises(ArtifactError, match=r"out_of_scope 'unknown' is not one of the labels.*B5"):
        MicroModel.load("tiny_oos", models_dir=tmp_path)
    if RUST_CLI.is_file():
        out = subprocess.run([str(RUST_CLI), "--models-dir", str(tmp_path), "--task", "tiny_oos"],
                             input="x\n", capture_output=True, text=True)
        assert out.returncode != 0 and "B5" in out.stderr
    node = subprocess.run(["node", str(REPO / "runtimes/node/cli.js"), "--models-dir",
                           str(tmp_path), "--task", "tiny_oos"], input="x\n",
                          capture_output=True, text=True)
    assert node.returncode != 0 and "B5" in node.stderr
