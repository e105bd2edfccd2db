"""The C ABI of the Rust runtime (runtimes/rust/c: include/foundry.h, libfoundry): the example
program, compiled here with the system C compiler, answers exactly like the foundry-rt CLI, and
reports a missing or damaged artifact by name. ``make c`` builds the library (``make test``
does); a missing build fails with that instruction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_contract import CLI_INPUT, parse_lines
from conftest import FORGED_TASKS, forged_models_or_skip

REPO = Path(__file__).resolve().parents[1]
C_DIR = REPO / "runtimes" / "rust" / "c"
LIB_DIR = REPO / "runtimes" / "rust" / "target" / "release"
RUST_CLI = LIB_DIR / "foundry-rt"


@pytest.fixture(scope="module")
def predict_program(tmp_path_factory) -> Path:
    if not (LIB_DIR / "libfoundry.so").is_file() or not RUST_CLI.is_file():
        pytest.fail(f"{LIB_DIR}/libfoundry.so or foundry-rt is not built: run `make c rust`")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler (cc) on PATH")
    program = tmp_path_factory.mktemp("c-abi") / "predict"
    subprocess.run([compiler, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Werror",
                    str(C_DIR / "examples" / "predict.c"), f"-I{C_DIR / 'include'}",
                    f"-L{LIB_DIR}", "-lfoundry", "-o", str(program)], check=True, timeout=120)
    return program


def run_program(program: Path, models_dir: Path, task: str, stdin: bytes):
    return subprocess.run([str(program), str(models_dir), task], input=stdin, capture_output=True,
                          timeout=60, env={**os.environ, "LD_LIBRARY_PATH": str(LIB_DIR)})


def assert_answers_like_the_cli(program: Path, models_dir: Path, task: str,
                                stdin: bytes) -> list[bool]:
    """The example's lines equal the CLI's answers (labels, confident flags, probabilities
    bit for bit) and its unfamiliarity equals the Python runtime's; returns the
    ``confident`` flags that the unfamiliarity gate turned off."""
    from foundry.runtime import MicroModel

    c = run_program(program, models_dir, task, stdin)
    assert c.returncode == 0, c.stderr.decode()
    cli = subprocess.run([str(RUST_CLI), "--models-dir", str(models_dir), "--task", task],
                         input=stdin, capture_output=True, timeout=60)
    want = parse_lines(cli.stdout)
    got = c.stdout.decode().split("\n")
    assert got.pop() == "" and len(got) == len(want)
    model = MicroModel.load(task, models_dir)
    gate = model.familiarity.max_unfamiliar
    shut = []
    for line, answer in zip(got, want, strict=True):
        label, confident, unfamiliar, *probabilities = line.split("\t")
        assert label == answer["label"]
        assert confident == str(int(answer["confident"]))
        assert float(unfamiliar) == model.unfamiliar(answer["text"]), answer["text"]
        assert [float(p) for p in probabilities] == list(answer["probabilities"].values())
        top = max(answer["probabilities"].values())
        shut.append(top >= model.threshold and float(unfamiliar) > gate)
        assert answer["confident"] == (top >= model.threshold and float(unfamiliar) <= gate)
    return shut


def test_the_example_answers_like_the_cli(predict_program: Path) -> None:
    models_dir = forged_models_or_skip()
    for task in FORGED_TASKS:
        assert_answers_like_the_cli(predict_program, models_dir, task, CLI_INPUT)


def test_the_unfamiliarity_gate_through_the_c_abi(predict_program: Path, gated_models) -> None:
    from conftest import QUESTIONS, STATEMENTS, UNFAMILIAR_TEXTS

    models_dir, tasks = gated_models
    stdin = "".join(t + "\n" for t in QUESTIONS + STATEMENTS + UNFAMILIAR_TEXTS).encode()
    for task in tasks:
        assert any(assert_answers_like_the_cli(predict_program, models_dir, task, stdin)), task


def test_load_errors_name_the_file(predict_program: Path, tmp_path: Path) -> None:
    run = run_program(predict_program, tmp_path, "is_question", b"x\n")
    assert run.returncode == 1
    assert f"{tmp_path}/is_question_preprocessor.bin: preprocessor file not found".encode() \
        in run.stderr
    models_dir = forged_models_or_skip()
    for name in ("is_question_preprocessor.bin", "is_question_classifier.onnx"):
        shutil.copy(models_dir / name, tmp_path)
    onnx = tmp_path / "is_question_classifier.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    run = run_program(predict_program, tmp_path, "is_question", b"x\n")
    assert run.returncode == 1 and b"the pair is mismatched" in run.stderr
    assert json.dumps(str(onnx))[1:-1].encode() in run.stderr
