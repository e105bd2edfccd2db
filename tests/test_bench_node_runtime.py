"""bench/node_runtime.py on tiny models: one short round, every engine in the table."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from test_runtime_backends import MODELS, _install

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_the_table_has_both_backends_of_every_task(tmp_path, capsys):
    if shutil.which("node") is None or not (ROOT / "runtimes" / "node" / "node_modules").is_dir():
        pytest.skip("the JavaScript runtime is not installed (make node)")
    import node_runtime

    for task in ("binary", "multiclass"):
        _install(tmp_path, task, MODELS[task]())
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "今天天气怎么样"}\n{"text": "打开灯"}\n{"text": "hi there"}\n',
                     encoding="utf-8")
    assert node_runtime.main(["--models-dir", str(tmp_path), "--tasks", "binary", "multiclass",
                              "--real-texts", str(texts), "--rounds", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 texts of texts.jsonl" in out
    rows = [line.split(" | ")[:2] for line in out.splitlines() if line.startswith("| ")]
    assert rows[1:] == [["| binary", "linear"], ["| binary", "onnxruntime"],
                        ["| multiclass", "linear"], ["| multiclass", "onnxruntime"]]
    assert "x faster" in out
