"""The Rust runtime (runtimes/rust) from the Python side.

- ``foundry-rt --models-dir DIR --task TASK`` prints the same JSON lines as ``foundry predict
  TASK --json`` for the same stdin, and agrees with the Python runtime on every input the
  tests can produce (labels identical, probabilities within 1e-6);
- it reads every classifier graph the exporter writes (each trainer, each calibration, two and
  three classes) and reproduces their conformance vectors; it refuses any other graph;
- a mismatched pair is rejected by its rule (tests/test_hostile_artifacts.py runs every
  hostile case through the Rust CLI too).

The crate is built by ``make rust`` (``make test`` does it); a missing binary fails with that
instruction rather than skipping. The crate's own tests run under ``cargo test``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_contract import CLI_INPUT, assert_same_answers, parse_lines
from conftest import (
    FORGED_TASKS,
    QUESTIONS,
    STATEMENTS,
    forged_models_or_skip,
    install_model,
    )

from foundry.runtime import MicroModel
from foundry.v1 import preprocessor_pb2 as pb

REPO = Path(__file__).resolve().parents[1]
RUST_DIR = REPO / "runtimes" / "rust"
RUST_CLI = RUST_DIR / "target" / "release" / "foundry-rt"
NODE_CLI = REPO / "runtimes" / "node" / "cli.js"
#: Rust and the Python runtime both compute in float64 (the numpy backend) or against ONNX
#: Runtime's float32 (other graphs): they agree far inside this.
AGREEMENT = 1e-6


def require_rust_cli() -> Path:
    if not RUST_CLI.is_file():
        pytest.fail(f"{RUST_CLI} is not built: run `make rust` (cargo build --release --offline)")
    return RUST_CLI


def rust_cli(models_dir: Path, task: str, stdin: bytes = b"", *extra: str):
    return subprocess.run(
        [str(require_rust_cli()), "--models-dir", str(models_dir), "--task", task, *extra],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def python_lines(model: MicroModel, texts: list[str]) -> bytes:
    """What ``foundry predict --json`` prints for ``texts``, from the loaded model."""
    return "".join(
        json.dumps(p.to_json(t), ensure_ascii=False) + "\n"
        for t, p in zip(texts, model.predict_many(texts), strict=True)
    ).encode()


def stdin_texts(stdin: bytes) -> list[str]:
    """The texts a CLI reads from ``stdin`` (split at "\\n", trailing "\\r\\n" removed)."""
    lines = stdin.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r\n") for line in lines]


def assert_rust_agrees(models_dir: Path, task: str, texts: list[str], *, exact_labels: bool,
                       tolerance: float = AGREEMENT) -> None:
    """The Rust CLI and the Python runtime on ``texts``: labels identical (beyond a tie of
    ``tolerance`` unless ``exact_labels``), probabilities within ``tolerance``."""
    model = MicroModel.load(task, models_dir)
    stdin = "".join(t + "\n" for t in texts).encode()
    run = rust_cli(models_dir, task, stdin)
    assert run.returncode == 0, run.stderr.decode()
    assert_same_answers(run.stdout, python_lines(model, stdin_texts(stdin)), model.threshold,
                        tolerance, ties=0.0 if exact_labels else tolerance)


def test_cli_prints_the_same_json_lines_as_foundry_predict(two_task_models: Path) -> None:
    run = rust_cli(two_task_models, "tiny_q", CLI_INPUT)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.count(b"\n") == CLI_INPUT.count(b"\n") + 1
    py = subprocess.run(
        [sys.executable, "-m", "foundry", "predict", "tiny_q", "--json",
         "--models-dir", str(two_task_models)],
        input=CLI_INPUT, capture_output=True, timeout=120,
    )
    assert py.returncode == 0, py.stderr.decode()
    assert_same_answers(run.stdout, py.stdout, 0.6, AGREEMENT, ties=0.0)


def test_cli_one_line_and_no_line(two_task_models: Path) -> None:
    for stdin in ("你好吗".encode(), b"", b"\n", b"\r\n\r\n"):
        run = rust_cli(two_task_models, "tiny_r", stdin)
        assert run.returncode == 0
        assert [r["text"] for r in parse_lines(run.stdout)] == stdin_texts(stdin)


def test_cli_answers_each_line_as_it_arrives(two_task_models: Path) -> None:
    """A program can keep the pipe open and ask one text at a time."""
    proc = subprocess.Popen(
        [str(require_rust_cli()), "--models-dir", str(two_task_models), "--task", "tiny_q"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        for text in ("今天天气怎么样？", "打开客厅的灯"):
            proc.stdin.write(f"{text}\n".encode())
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["text"] == text
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_cli_invalid_utf8_is_replaced_like_the_other_clis(two_task_models: Path) -> None:
    stdin = b"a\xffb\n\xe4\xbd\nok\n\xc3\x28x\n\xf0\x9f\x98\n"
    run = rust_cli(two_task_models, "tiny_q", stdin)
    assert run.returncode == 0
    texts = [r["text"] for r in parse_lines(run.stdout)]
    assert texts == ["a\ufffdb", "\ufffd", "ok", "\ufffd(x", "\ufffd"]
    assert run.stderr.decode().splitlines() == [
        f"foundry (rust): warning: line {n}: invalid UTF-8 replaced by U+FFFD" for n in (1, 2, 4, 5)]
    py = subprocess.run([sys.executable, "-m", "foundry", "predict", "tiny_q", "--json",
                         "--models-dir", str(two_task_models)], input=stdin, capture_output=True,
                        timeout=120)
    assert [r["text"] for r in parse_lines(py.stdout)] == texts
    if shutil.which("node") and (REPO / "runtimes/node/node_modules/onnxruntime-node").is_dir():
        node = subprocess.run(["node", str(NODE_CLI), "--models-dir", str(two_task_models),
                               "--task", "tiny_q"], input=stdin, capture_output=True, timeout=60)
        assert [r["text"] for r in parse_lines(node.stdout)] == texts


def test_cli_counts_invalid_utf8_past_ten_lines(two_task_models: Path) -> None:
    run = rust_cli(two_task_models, "tiny_q", b"\xff\n" * 13)
    lines = run.stderr.decode().splitlines()
    assert len(lines) == 11 and lines[-1] == ("foundry (rust): warning: 3 more lines held "
                                              "invalid UTF-8")


def test_cli_stops_quietly_when_its_output_is_closed(two_task_models: Path) -> None:
    """``foundry-rt … | head -1``: exit 141 (128 + SIGPIPE), no message, like foundry predict."""
    proc = subprocess.Popen([str(require_rust_cli()), "--models-dir", str(two_task_models),
                             "--task", "tiny_q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def feed() -> None:  # in a thread: both pipes would fill up otherwise
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write("今天天气怎么样？\n".encode() * 50_000)
            proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    assert json.loads(proc.stdout.readline())["text"] == "今天天气怎么样？"
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    writer.join()
    assert proc.stderr.read() == b""


def test_cli_verify_replays_the_conformance_vectors(two_task_models: Path) -> None:
    run = rust_cli(two_task_models, "tiny_q", b"", "--verify")
    assert run.returncode == 0, run.stderr.decode()
    assert re.fullmatch(rb"tiny_q: \d+ conformance vectors ok\n", run.stdout)
    assert b"Unicode 14.0.0" in run.stderr  # the note names the trainer's Unicode version


def test_cli_verify_fails_on_a_wrong_expectation(two_task_models: Path, tmp_path: Path) -> None:
    for name in ("tiny_q_classifier.onnx", "tiny_q_preprocessor.bin"):
        shutil.copy(two_task_models / name, tmp_path)
    doc = json.loads((two_task_models / "tiny_q_conformance.json").read_text(encoding="utf-8"))
    doc["vectors"][5]["probabilities"][0] += 1e-3
    (tmp_path / "tiny_q_conformance.json").write_text(json.dumps(doc), encoding="utf-8")
    run = rust_cli(tmp_path, "tiny_q", b"", "--verify")
    assert run.returncode == 1
    assert b"1 of " in run.stderr and b"probabilities differ" in run.stderr


def test_cli_usage_errors_exit_2(two_task_models: Path) -> None:
    for args in ([], ["--task"], ["--task", "tiny_q", "--no-such-flag"]):
        run = subprocess.run([str(require_rust_cli()), "--models-dir", str(two_task_models), *args],
                             capture_output=True, timeout=60)
        assert run.returncode == 2, args
        assert b"--task" in run.stderr or b"--no-such-flag" in run.stderr


def test_cli_agrees_with_python_on_forged_default_models() -> None:
    """The Must-show check: every case the tests can produce, default models, exact labels."""
    from test_fuzz_differential import runtime_texts

    models_dir = forged_models_or_skip()
    for task in FORGED_TASKS:
        seeds = [v["text"] for v in json.loads(
            (models_dir / f"{task}_conformance.json").read_text(encoding="utf-8"))["vectors"]]
        texts = [t.replace("\n", " ") for t in runtime_texts(seed=17, count=3000, seeds=seeds)]
        texts = [t for t in texts if not any("\ud800" <= c <= "\udfff" for c in t)]
        assert_rust_agrees(models_dir, task, stdin_texts(CLI_INPUT) + texts, exact_labels=True)


def test_cli_applies_the_unfamiliarity_gate_like_python(gated_models) -> None:
    """Rule B13's gate: the conformance vectors (their ``unfamiliar`` and ``confident``) replay,
    and on texts the gates shut the CLI's confident flags equal the Python runtime's."""
    from conftest import UNFAMILIAR_TEXTS
    from test_fuzz_differential import runtime_texts

    models_dir, tasks = gated_models
    for task in tasks:
        run = rust_cli(models_dir, task, b"", "--verify")
        assert run.returncode == 0, run.stderr.decode()
        texts = [t.replace("\n", " ") for t in runtime_texts(
            seed=5, count=600, seeds=QUESTIONS + STATEMENTS + UNFAMILIAR_TEXTS)]
        texts = [t for t in texts if not any("\ud800" <= c <= "\udfff" for c in t)]
        model = MicroModel.load(task, models_dir)
        shut = [p.score >= model.threshold and not p.confident for p in model.predict_many(texts)]
        assert sum(shut) >= 5, task  # the gate really closes on some answers
        assert_rust_agrees(models_dir, task, texts, exact_labels=True)


# -- every graph the exporter writes ------------------------------------------------------

VARIANTS = [
    (trainer, calibration, k)
    for trainer, calibrations in (
        ("tfidf_logreg", ("none", "sigmoid", "isotonic")),
        ("tfidf_linear_svm", ("sigmoid", "isotonic")),
        ("tfidf_complement_nb", ("none", "sigmoid", "isotonic")),
    )
    for calibration in calibrations
    for k in (2, 3)
]


def fit_variant(trainer_name: str, calibration: str, n_classes: int) -> SimpleNamespace:
    """A trained model like the train stage's, for one trainer / calibration / class count."""
    from foundry.textspec import TextSpec
    from foundry.trainers import get_trainer, make_pipeline

    texts = QUESTIONS + STATEMENTS
    if n_classes == 2:
        y, labels = [0] * len(QUESTIONS) + [1] * len(STATEMENTS), ["Question", "Statement"]
    else:  # questions, then statements split by whether they hold a hanzi "我"/"帮"/"打" cue
        y = [0] * len(QUESTIONS) + [1 + (i % 2) for i in range(len(STATEMENTS))]
        labels = ["Question", "Command", "Remark"]
    spec = TextSpec()
    pipeline = make_pipeline(get_trainer(trainer_name), spec, True, {"C": 4.0}
                             if trainer_name != "tfidf_complement_nb" else {}, seed=0,
                             calibration=calibration).fit(texts, np.array(y))
    return SimpleNamespace(pipeline=pipeline, labels=labels, spec=spec, sublinear_tf=True,
                           trainer=trainer_name, data_sha256="0" * 64, train_rows=len(texts),
                           task="variant")


@pytest.mark.parametrize(("trainer", "calibration", "n_classes"), VARIANTS,
                         ids=[f"{t.removeprefix('tfidf_')}-{c}-{k}" for t, c, k in VARIANTS])
def test_every_exported_graph(trainer: str, calibration: str, n_classes: int,
                              tmp_path: Path) -> None:
    from test_fuzz_differential import runtime_texts

    trained = fit_variant(trainer, calibration, n_classes)
    install_model(trained, tmp_path, "variant", threshold=0.55)
    run = rust_cli(tmp_path, "variant", b"", "--verify")
    assert run.returncode == 0, run.stderr.decode()
    texts = [t.replace("\n", " ") for t in runtime_texts(seed=3, count=400,
                                                         seeds=QUESTIONS + STATEMENTS)]
    texts = [t for t in texts if not any("\ud800" <= c <= "\udfff" for c in t)]
    model = MicroModel.load("variant", tmp_path)
    # Against scikit-learn on the float32-cast rows (what the conformance vectors hold), Rust
    # is within 1e-6, except that an isotonic graph stores its thresholds and slopes as float32
    # (steep segments then amplify rounding, docs/preprocessor-spec.md section 5). ONNX Runtime
    # (the Python runtime for graphs its numpy backend does not run) computes in float32 and
    # strays further from scikit-learn than Rust does (~5e-6 for naive Bayes).
    isotonic = calibration == "isotonic"
    stdin = "".join(t + "\n" for t in texts).encode()
    run = rust_cli(tmp_path, "variant", stdin)
    rust = np.array([list(r["probabilities"].values()) for r in parse_lines(run.stdout)])
    rows = trained.pipeline.named_steps["tfidf"].transform(stdin_texts(stdin))
    reference = trained.pipeline.named_steps["clf"].predict_proba(
        rows.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(rust - reference)) <= (1e-4 if isotonic else AGREEMENT)
    if model.backend == "numpy":
        assert_rust_agrees(tmp_path, "variant", texts, exact_labels=True)
    else:
        assert_rust_agrees(tmp_path, "variant", texts, exact_labels=False,
                           tolerance=1e-4 if isotonic else 1e-5)


def _rehash(models_dir: Path, task: str) -> None:
    """Record the (changed) .onnx's SHA-256 in the .bin, so that only the graph is wrong."""
    from foundry.artifacts import seal_message

    bin_path = models_dir / f"{task}_preprocessor.bin"
    msg = pb.Preprocessor.FromString(bin_path.read_bytes())
    msg.onnx_sha256 = hashlib.sha256(
        (models_dir / f"{task}_classifier.onnx").read_bytes()).hexdigest()
    bin_path.write_bytes(seal_message(msg))


def test_a_graph_the_exporter_does_not_write_is_refused(two_task_models: Path,
                                                        tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    for name in ("tiny_q_classifier.onnx", "tiny_q_preprocessor.bin"):
        shutil.copy(two_task_models / name, tmp_path)
    onnx_path = tmp_path / "tiny_q_classifier.onnx"
    edits: list[tuple[str, Callable]] = [
        ("post_transform PROBIT is not read", lambda m: m.graph.node[0].attribute[-1].CopyFrom(
            helper.make_attribute("post_transform", "PROBIT"))),
        ("probabilities is computed by Relu", lambda m: (
            m.graph.node[0].output.__setitem__(1, "raw"),
            m.graph.node.append(helper.make_node("Relu", ["raw"], ["probabilities"])))),
    ]
    original = onnx_path.read_bytes()
    for message, edit in edits:
        model = onnx.load_from_string(original)
        edit(model)
        onnx_path.write_bytes(model.SerializeToString())
        _rehash(tmp_path, "tiny_q")
        run = rust_cli(tmp_path, "tiny_q", b"x\n")
        assert run.returncode == 1 and run.stdout == b""
        err = run.stderr.decode()
        assert f"{onnx_path}: not a classifier graph this runtime reads" in err, err
        assert message in err and err.rstrip().endswith("(spec rule O1)"), err


# -- tampered artifacts: tests/test_hostile_artifacts.py runs every case through the Rust CLI


def test_a_bin_paired_with_another_tasks_onnx_or_name(two_task_models: Path,
                                                      tmp_path: Path) -> None:
    shutil.copy(two_task_models / "tiny_q_preprocessor.bin", tmp_path)
    shutil.copy(two_task_models / "tiny_r_classifier.onnx", tmp_path / "tiny_q_classifier.onnx")
    run = rust_cli(tmp_path, "tiny_q", b"x\n")
    assert run.returncode == 1 and b"the pair is mismatched (re-export both files together) " \
        b"(spec rule P1)" in run.stderr
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for suffix in ("preprocessor.bin", "classifier.onnx"):
        shutil.copy(two_task_models / f"tiny_r_{suffix}", renamed / f"other_{suffix}")
    run = rust_cli(renamed, "other", b"x\n")
    assert run.returncode == 1
    assert f"{renamed}/other_preprocessor.bin: belongs to task \"tiny_r\", not \"other\" " \
        "(spec rule B4)".encode() in run.stderr


def test_the_spec_states_the_rust_unicode_versions(two_task_models: Path) -> None:
    spec = (REPO / "docs" / "preprocessor-spec.md").read_text(encoding="utf-8")
    run = rust_cli(two_task_models, "tiny_q", b"", "--verify")
    versions = re.search(r"NFKC (\S+), case mapping (\S+), general categories (\S+);",
                         run.stderr.decode())
    assert versions, run.stderr.decode()
    row = next(line for line in spec.splitlines() if line.startswith("| Rust (`runtimes/rust`"))
    for part, version in zip(("NFKC", "lowercasing", "general categories"), versions.groups(),
                             strict=True):
        assert f"{part}: Unicode **{version.removesuffix('.0')}**" in row, (part, version, row)
