import hashlib

import onnx
import pytest

from foundry.export import (
    COMMIT_MARKER,
    PENDING_DIR,
    artifact_bytes,
    install_artifacts,
    recover_pending,
)
from foundry.v1 import preprocessor_pb2 as pb


def test_artifacts_are_byte_identical_for_identical_inputs(tiny_fit):
    a = artifact_bytes(tiny_fit(), 0.7, task="t")
    b = artifact_bytes(tiny_fit(), 0.7, task="t")
    assert a == b


def test_bin_describes_the_onnx(tiny_fit):
    trained = tiny_fit()
    onnx_bytes, bin_bytes = artifact_bytes(trained, 0.75, task="t")
    msg = pb.Preprocessor()
    msg.ParseFromString(bin_bytes)
    assert msg.format_version == 1 and msg.task == "t"
    assert list(msg.labels) == ["Question", "Statement"]
    assert msg.onnx_sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert len(msg.vocabulary) == len(msg.idf) == len(trained.pipeline.named_steps["tfidf"].vocabulary_)
    assert msg.threshold == pytest.approx(0.75)
    assert msg.unicode_version and msg.provenance.trainer == "tfidf_logreg"
    model = onnx.load_from_string(onnx_bytes)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == len(msg.vocabulary)


def test_install_is_atomic_and_leaves_no_staging(tmp_path):
    paths = install_artifacts("t", {"classifier.onnx": b"new-onnx", "preprocessor.bin": b"new-bin"},
                              tmp_path)
    assert paths["classifier.onnx"].read_bytes() == b"new-onnx"
    assert not (tmp_path / PENDING_DIR).exists()


def test_committed_pending_export_is_rolled_forward(tmp_path):
    (tmp_path / "t_classifier.onnx").write_bytes(b"old-onnx")
    (tmp_path / "t_preprocessor.bin").write_bytes(b"old-bin")
    staging = tmp_path / PENDING_DIR / "t"
    staging.mkdir(parents=True)
    # A crash after the first rename: the .onnx is new, the .bin still waits in staging.
    (tmp_path / "t_classifier.onnx").write_bytes(b"new-onnx")
    (staging / "t_preprocessor.bin").write_bytes(b"new-bin")
    (staging / COMMIT_MARKER).write_bytes(b"")
    assert recover_pending(tmp_path) == ["t"]
    assert (tmp_path / "t_preprocessor.bin").read_bytes() == b"new-bin"
    assert not (tmp_path / PENDING_DIR).exists()


def test_uncommitted_pending_export_is_dropped(tmp_path):
    (tmp_path / "t_preprocessor.bin").write_bytes(b"old-bin")
    staging = tmp_path / PENDING_DIR / "t"
    staging.mkdir(parents=True)
    (staging / "t_preprocessor.bin").write_bytes(b"half")
    assert recover_pending(tmp_path) == []
    assert (tmp_path / "t_preprocessor.bin").read_bytes() == b"old-bin"
