"""The JavaScript runtime (runtimes/node) from the Python side.

- its own test suite (``node --test``: conformance replay, tamper and mismatch rejection, text
  spec units) passes on artifacts exported here by ``foundry.export``, and on the forged
  default models when they exist;
- ``node runtimes/node/cli.js --models-dir DIR --task TASK`` prints the same JSON lines as
  ``foundry predict TASK --json`` for the same stdin (same texts, labels, confident flags;
  probabilities within 1e-5).

Needs node and ``npm ci --ignore-scripts`` in runtimes/node (``make node``); a missing install
fails with that instruction rather than skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_contract import CLI_INPUT, assert_same_answers
from conftest import FORGED_TASKS, forged_models_or_skip

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "runtimes" / "node"
CLI = NODE_DIR / "cli.js"


def require_node_runtime() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js >= 18 to test the JavaScript runtime")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.fail(f"{NODE_DIR}/node_modules is not installed: run `make node`")
    return node


def run_node_suite(models_dir: Path) -> str:
    node = require_node_runtime()
    env = {**os.environ, "FOUNDRY_MODELS_DIR": str(models_dir)}
    run = subprocess.run(
        [node, "--test"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"node --test failed:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    return run.stdout


def summary_count(output: str, what: str) -> int:
    match = re.search(rf"^# {what} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {what}' line in the node test output:\n{output[-2000:]}"
    return int(match.group(1))


def test_node_suite_passes_on_exported_models(two_task_models: Path) -> None:
    out = run_node_suite(two_task_models)
    assert summary_count(out, "fail") == 0
    assert summary_count(out, "skipped") == 0
    assert summary_count(out, "pass") >= 25
    assert "tiny_r: every conformance vector is reproduced" in out


def test_node_suite_passes_on_forged_default_models() -> None:
    models_dir = forged_models_or_skip()
    out = run_node_suite(models_dir)
    assert summary_count(out, "fail") == 0
    for task in FORGED_TASKS:
        assert f"{task}: every conformance vector is reproduced" in out


def cli_outputs(models_dir: Path, task: str, stdin: bytes) -> tuple[bytes, bytes]:
    """(node cli.js stdout, foundry predict --json stdout) for the same stdin bytes."""
    node = require_node_runtime()
    js = subprocess.run(
        [node, str(CLI), "--models-dir", str(models_dir), "--task", task],
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    assert js.returncode == 0, js.stderr.decode(errors="replace")
    py = subprocess.run(
        [
            sys.executable,
            "-m",
            "foundry",
            "predict",
            task,
            "--json",
            "--models-dir",
            str(models_dir),
        ],
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    assert py.returncode == 0, py.stderr.decode(errors="replace")
    return js.stdout, py.stdout


def test_cli_prints_the_same_json_lines_as_foundry_predict(two_task_models: Path) -> None:
    js, py = cli_outputs(two_task_models, "tiny_q", CLI_INPUT)
    assert js.count(b"\n") == CLI_INPUT.count(b"\n") + 1
    assert_same_answers(js, py, threshold=0.6)


def test_cli_one_line_and_no_line(two_task_models: Path) -> None:
    for stdin in ("你好吗".encode(), b"", b"\n"):
        js, py = cli_outputs(two_task_models, "tiny_r", stdin)
        assert_same_answers(js, py, threshold=0.7)
        assert js.count(b"\n") == len(stdin.split(b"\n")) - (stdin.endswith(b"\n") or not stdin)


def test_cli_matches_foundry_predict_on_forged_default_models() -> None:
    from foundry.runtime import MicroModel

    models_dir = forged_models_or_skip()
    for task in FORGED_TASKS:
        threshold = MicroModel.load(task, models_dir).threshold
        js, py = cli_outputs(models_dir, task, CLI_INPUT)
        assert_same_answers(js, py, threshold)


def test_cli_verify_replays_the_conformance_vectors(two_task_models: Path) -> None:
    node = require_node_runtime()
    run = subprocess.run(
        [node, str(CLI), "--models-dir", str(two_task_models), "--task", "tiny_q", "--verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"tiny_q: \d+ conformance vectors ok\n", run.stdout)


def test_cli_errors_are_clear(two_task_models: Path, tmp_path: Path) -> None:
    node = require_node_runtime()
    usage = subprocess.run(
        [node, str(CLI), "--models-dir", str(two_task_models)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2 and "--task is required" in usage.stderr
    missing = subprocess.run(
        [node, str(CLI), "--models-dir", str(tmp_path), "--task", "tiny_q"],
        input="x\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert f"{tmp_path}/tiny_q_preprocessor.bin: preprocessor file not found" in missing.stderr
    assert "    at " not in missing.stderr


def test_cli_rejects_a_bin_paired_with_another_tasks_onnx(
    two_task_models: Path, tmp_path: Path
) -> None:
    node = require_node_runtime()
    shutil.copy(two_task_models / "tiny_q_preprocessor.bin", tmp_path)
    shutil.copy(two_task_models / "tiny_r_classifier.onnx", tmp_path / "tiny_q_classifier.onnx")
    run = subprocess.run(
        [node, str(CLI), "--models-dir", str(tmp_path), "--task", "tiny_q"],
        input="x\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert "tiny_q_classifier.onnx: SHA-256" in run.stderr
    assert "the pair is mismatched" in run.stderr


# -- one invalid-UTF-8 policy, closed pipes, full disks, huge lines -------------------------------


def _invalid_utf8_lines(n: int = 400, seed: int = 3) -> bytes:
    """Lines mixing good text with every kind of bad UTF-8 (lone continuation bytes, cut
    sequences, overlong forms, encoded surrogates, code points above U+10FFFF, 0xFE/0xFF)."""
    import random

    rng = random.Random(seed)
    bad = [b"\x80", b"\xbf\xbf", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
           b"\xfe", b"\xff\xfe", b"\xe4\xbd", b"\xf0\x9f\x98", b"\xc3", b"\xe2\x82"]
    good = ["今天天气怎么样？".encode(), b"ok", "打开客厅的灯".encode(), b" ", "😀".encode()]
    lines = []
    for i in range(n):
        parts = [rng.choice(good + bad) for _ in range(rng.randint(0, 6))]
        if i % 3 == 0:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))))
        lines.append(b"".join(parts).replace(b"\n", b"").replace(b"\r", b""))
    return b"\n".join(lines) + b"\n"


def test_invalid_utf8_gets_the_same_answers_and_warnings_in_both_clis(two_task_models: Path):
    node = require_node_runtime()
    stdin = _invalid_utf8_lines()
    js = subprocess.run([node, str(CLI), "--models-dir", str(two_task_models), "--task", "tiny_q"],
                        input=stdin, capture_output=True, timeout=120)
    py = subprocess.run([sys.executable, "-m", "foundry", "predict", "tiny_q", "--json",
                         "--models-dir", str(two_task_models)],
                        input=stdin, capture_output=True, timeout=120)
    assert js.returncode == py.returncode == 0, js.stderr + py.stderr
    assert_same_answers(js.stdout, py.stdout, threshold=0.6)
    texts = [json.loads(line)["text"] for line in py.stdout.decode("utf-8").split("\n")[:-1]]
    expected = [line.decode("utf-8", "replace") for line in stdin.split(b"\n")[:-1]]
    assert texts == expected and any("\ufffd" in t for t in texts)
    # The same warnings (first 10 lines, then a count), each under its own program name.
    js_warnings = js.stderr.decode().replace("foundry (node): ", "")
    py_warnings = py.stderr.decode().replace("foundry predict: ", "")
    assert js_warnings == py_warnings
    assert py_warnings.startswith("warning: line ") and "more lines held invalid UTF-8" in py_warnings


def test_node_cli_into_a_closed_pipe_is_quiet(two_task_models: Path):
    node = require_node_runtime()
    proc = subprocess.Popen([node, str(CLI), "--models-dir", str(two_task_models), "--task",
                             "tiny_q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate("今天天气怎么样？\n".encode() * 20_000, timeout=120)
    assert proc.returncode == 141, err.decode()
    assert err == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_node_cli_onto_a_full_disk_says_so(two_task_models: Path):
    node = require_node_runtime()
    with open("/dev/full", "w") as full:
        proc = subprocess.run([node, str(CLI), "--models-dir", str(two_task_models), "--task",
                               "tiny_q"], input=b"\xe4\xbd\xa0\xe5\xa5\xbd\n", stdout=full,
                              stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("foundry (node): cannot write the output: ")
    assert "ENOSPC" in proc.stderr.decode() and "\n    at " not in proc.stderr.decode()


@pytest.mark.slow
def test_a_huge_line_costs_memory_linear_in_its_size_in_both_clis(two_task_models: Path):
    """Issue 15: a 50 MB line took 1.9 GB in Node (177 MB in Python). Here 20 MB lines of
    words (many short space runs) and of CJK; both runtimes stay under 15 bytes per input byte
    on top of a 100 MB start-up allowance, and answer the same."""
    from fakes.hostile import run_measured

    node = require_node_runtime()
    size = 20_000_000
    for unit in (b"ab cd ", "字字字".encode()):
        stdin = unit * (size // len(unit)) + b"\n"
        runs = {
            "node": run_measured([node, str(CLI), "--models-dir", str(two_task_models), "--task",
                                  "tiny_q"], stdin, timeout=300),
            "python": run_measured([sys.executable, "-m", "foundry", "predict", "tiny_q",
                                    "--json", "--models-dir", str(two_task_models)], stdin,
                                   timeout=300),
        }
        for name, done in runs.items():
            assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
            assert done.max_rss_mb < 100 + 15 * size / 2**20, (name, unit, done.max_rss_mb)
        js, py = (json.loads(runs[k].stdout) for k in ("node", "python"))
        assert js["text"] == py["text"] and js["label"] == py["label"]
