"""The hostile-artifact suite: the same damaged files, rejected the same way by every runtime.

Every case of :data:`fakes.hostile.CASES` damages a copy of a good pair in one way. The Python
runtime (every backend), ``foundry predict``, the JavaScript CLI and the Rust CLI
(``runtimes/rust``, ``make rust``) must each reject it with an
``ArtifactError`` naming the spec rule the case breaks (docs/preprocessor-spec.md, section 1),
exit status 1, one line on stderr and no stack trace, without hanging and within 200 MB.
(Their time is measured by ``bench/hostile.py``: wall time is not asserted in a unit test.)
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_models
from fakes.hostile import CASES, TASK, Case, make_case, run_measured

from foundry.errors import ArtifactError
from foundry.runtime import MicroModel

ROOT = Path(__file__).resolve().parent.parent
NODE_CLI = ROOT / "runtimes" / "node" / "cli.js"
RUST_CLI = ROOT / "runtimes" / "rust" / "target" / "release" / "foundry-rt"
MAX_RSS_MB = 200
#: A rejection that takes longer than this is a hang (e.g. a FIFO opened for reading).
HANG_S = 30.0
RULE = re.compile(r"\(spec rule ([A-Z]\d+)\)$")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("good")
    write_tiny_models(models, task=TASK)
    return models


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_CLI.parent / "node_modules").is_dir():
        pytest.skip("the JavaScript runtime is not installed (make node)")
    return node


def _rule_of(message: str) -> str:
    found = RULE.search(message.strip())
    assert found, f"no rule id at the end of: {message!r}"
    return found.group(1)


def _named_file(case: Case) -> str:
    """The file a rejection must name: the .onnx for its rules, else the damaged one."""
    onnx = case.rule[0] in "OP" or (case.rule[0] == "F" and case.name.startswith("onnx"))
    return "classifier.onnx" if onnx else "preprocessor.bin"


def test_the_good_pair_loads_in_both_runtimes(good, node):
    assert MicroModel.load(TASK, good).predict("你好吗").label in {"Question", "Statement"}
    done = run_measured([node, str(NODE_CLI), "--models-dir", str(good), "--task", TASK],
                        stdin="你好吗\n".encode())
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_python_rejects_it_by_the_rule_on_every_backend(case: Case, good, tmp_path):
    models = make_case(good, case, tmp_path / "m")
    for backend in ("auto", "onnxruntime"):
        with pytest.raises(ArtifactError) as info:
            MicroModel.load(TASK, models, backend=backend)
        assert _rule_of(str(info.value)) == case.rule, str(info.value)
        assert f"{TASK}_{_named_file(case)}" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_cli_rejects_it_the_same_way(case: Case, good, node, tmp_path):
    if not RUST_CLI.is_file():
        pytest.fail(f"{RUST_CLI} is not built: run `make rust`")
    models = make_case(good, case, tmp_path / "m")
    runs = {
        "python": run_measured([sys.executable, "-m", "foundry", "predict", TASK, "--json",
                                "--models-dir", str(models)], stdin="你好吗\n".encode(),
                               timeout=HANG_S),
        "node": run_measured([node, str(NODE_CLI), "--models-dir", str(models), "--task", TASK],
                             stdin="你好吗\n".encode(), timeout=HANG_S),
        "rust": run_measured([str(RUST_CLI), "--models-dir", str(models), "--task", TASK],
                             stdin="你好吗\n".encode(), timeout=HANG_S),
    }
    for name, done in runs.items():
        assert done.returncode == 1, f"{name}: exit {done.returncode}\n{done.stderr}"
        assert done.stdout == "", f"{name} answered: {done.stdout[:200]}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, f"{name}: {done.stderr[-2000:]}"
        assert _rule_of(lines[0]) == case.rule, f"{name}: {lines[0]}"
        assert f"{TASK}_{_named_file(case)}" in lines[0], f"{name}: {lines[0]}"
        assert "Traceback" not in done.stderr and not re.search(r"\n\s+at ", done.stderr)
        assert done.max_rss_mb < MAX_RSS_MB, f"{name} peaked at {done.max_rss_mb:.0f} MB"


@pytest.mark.parametrize("format_version", [3, 4])
def test_every_cli_still_reads_formats_3_and_4(format_version: int, good, node, tmp_path):
    """The good pair rewritten in the layout of format 3 (fields 7 and 8) or 4 (the same with
    a reflex rule): every runtime answers it exactly as the format 5 original."""
    from fakes.tamper import rewrite_bin

    if not RUST_CLI.is_file():
        pytest.fail(f"{RUST_CLI} is not built: run `make rust`")

    def legacy(m) -> None:
        m.format_version = format_version
        if format_version == 4:
            m.rules.add(name="never", label=1, equals=["\u4e00" * 64])

    models = make_case(good, Case("legacy", "-", lambda d: None), tmp_path / "m")
    rewrite_bin(models / f"{TASK}_preprocessor.bin", legacy)
    import json

    texts = "你好吗\n今天天气不错\nwhy not\n".encode()
    for cmd in ([sys.executable, "-m", "foundry", "predict", TASK, "--json"],
                [node, str(NODE_CLI), "--task", TASK], [str(RUST_CLI), "--task", TASK]):
        runs = [run_measured([*cmd, "--models-dir", str(d)], stdin=texts) for d in (good, models)]
        assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
        new, old = ([json.loads(line) for line in r.stdout.splitlines()] for r in runs)
        assert [a.pop("rule", None) for a in old] == [None] * 3
        assert new == old, cmd[0]
