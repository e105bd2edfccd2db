"""The generated protobuf code is committed; it must be exactly what the schema generates."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_schema(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto"),
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         str(ROOT / "proto" / "foundry" / "v1" / "preprocessor.proto")],
        check=True,
    )
    for name in ("preprocessor_pb2.py", "preprocessor_pb2.pyi"):
        generated = (tmp_path / "foundry" / "v1" / name).read_text()
        committed = (ROOT / "foundry" / "v1" / name).read_text()
        assert generated == committed, f"foundry/v1/{name} is stale: run `make proto`"


def test_schema_is_versioned():
    from foundry.v1 import preprocessor_pb2 as pb

    assert pb.DESCRIPTOR.package == "foundry.v1"
    fields = {f.name for f in pb.Preprocessor.DESCRIPTOR.fields}
    assert {"format_version", "task", "labels", "vocabulary", "idf", "threshold", "onnx_sha256",
            "unicode_version", "provenance"} <= fields
