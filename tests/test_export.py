import hashlib
from pathlib import Path

import onnx
import pytest

from foundry.artifacts import load_preprocessor
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
    msg = load_preprocessor(bin_bytes, Path("t_preprocessor.bin"), "t")
    assert msg.format_version == 5 and msg.task == "t"
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


# -- the exam gate, enforced by the export itself ----------------------------------------------


def _blocked_run(tmp_path, exam_accuracy: float):
    """A blueprint (exam minimum 90%) and a run folder whose evaluation scored ``exam_accuracy``."""
    from fakes.summaries import write_eval_summary
    from fakes.tiny_blueprint import write_tiny_blueprint

    from foundry.blueprint import load_blueprint

    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp", sections={
        "evaluate": {"exam_min_accuracy": 0.9}}))
    run = tmp_path / "run"
    write_eval_summary(
        run, exam_accuracy=exam_accuracy, exam_cases=10, exam_min_accuracy=0.9,
        exam_passed=exam_accuracy >= 0.9, threshold=0.7,
        failed_exam_cases=[{"text": "几点了", "gold": "Question", "predicted": "Statement",
                            "p": 0.8, "category": "wh_question"}])
    return bp, run


def test_export_refuses_a_run_whose_exam_failed_and_writes_nothing(tmp_path):
    from foundry.evaluate import ExamGateError
    from foundry.export import export_stage

    bp, run = _blocked_run(tmp_path, exam_accuracy=0.5)
    models = tmp_path / "models"
    with pytest.raises(ExamGateError) as info:
        export_stage(bp, run, models)
    message = str(info.value)
    assert "nothing exported" in message and "exam accuracy 50.0%" in message
    assert "--allow-exam-failures" in message
    assert not models.exists()


def test_export_gate_uses_the_blueprints_current_minimum(tmp_path):
    """A run that passed under a lower minimum is judged by the blueprint as it is now."""
    from foundry.export import EXAM_OVERRIDDEN, EXAM_PASSED, check_export_gate
    from foundry.runs import read_json, write_json

    bp, run = _blocked_run(tmp_path, exam_accuracy=0.92)
    assert check_export_gate(bp, run, allow_exam_failures=False) == {"is_question": EXAM_PASSED}
    summary = run / "evaluate" / "is_question" / "summary.json"
    write_json(summary, {**read_json(summary), "exam_accuracy": 0.85, "exam_min_accuracy": 0.8})
    logs: list[str] = []
    gates = check_export_gate(bp, run, allow_exam_failures=True, log=logs.append)
    assert gates == {"is_question": EXAM_OVERRIDDEN}
    assert "exam gate overridden" in logs[0]


def test_the_override_is_recorded_in_the_bin_and_the_card(tiny_fit, tmp_path):
    from fakes.summaries import write_eval_summary, write_refine_summary

    from foundry.blueprint import Label, Task
    from foundry.export import EXAM_OVERRIDDEN, Provenance, model_card

    trained = tiny_fit()
    _, bin_bytes = artifact_bytes(trained, 0.7, task="t",
                                  provenance=Provenance(exam_gate=EXAM_OVERRIDDEN))
    msg = pb.Preprocessor()
    msg.ParseFromString(bin_bytes)
    assert msg.provenance.exam_gate == "overridden"
    task = Task(name="t", constitution="c.md", exam="e.jsonl",
                labels=[Label(name="Question", definition="q"),
                        Label(name="Statement", definition="s")])
    evaluation = write_eval_summary(tmp_path, exam_accuracy=0.5, exam_min_accuracy=0.9)
    refined = write_refine_summary(tmp_path, train_rows=30)
    card = model_card(task, trained, blueprint="b", threshold=0.7, onnx_size=1, bin_size=1,
                      evaluation=evaluation, refine_summary=refined, exam_gate=EXAM_OVERRIDDEN)
    assert "**Exam gate: OVERRIDDEN.** The exam accuracy 50.0% is below" in card
    assert "`--allow-exam-failures`" in card
    passed = model_card(task, trained, blueprint="b", threshold=0.7, onnx_size=1, bin_size=1,
                        evaluation=evaluation, refine_summary=refined)
    assert "Exam gate: passed (minimum exam accuracy 90.0%)." in passed


def test_the_card_shows_each_reflex_rule_per_split(tiny_fit, tmp_path):
    from fakes.summaries import write_eval_summary, write_refine_summary

    from foundry.blueprint import Label, Rule, Task
    from foundry.export import model_card

    trained = tiny_fit()
    task = Task(name="t", constitution="c.md", exam="e.jsonl",
                labels=[Label(name="Question", definition="q"),
                        Label(name="Statement", definition="s")],
                rules=[Rule(name="delete", label="Statement", contains=["删除"]),
                       Rule(label="Question", starts_with=["请问"])])
    report = {"rules": ["delete", "rule2"], "splits": {  # any order: summary.json sorts keys
        "dataset test": {"rows": 0, "hits": {"delete": 0, "rule2": 0},
                         "taken_over": {"delete": 0, "rule2": 0}, "model_wrong_on_hits": 0,
                         "accuracy_model": None, "accuracy_with_rules": None},
        "train": {"rows": 200, "hits": {"delete": 12, "rule2": 3},
                  "taken_over": {"delete": 0, "rule2": 0}, "model_wrong_on_hits": 0,
                  "accuracy_model": 0.99, "accuracy_with_rules": 0.99},
        "exam": {"rows": 20, "hits": {"delete": 2, "rule2": 0},
                 "taken_over": {"delete": 1, "rule2": 0}, "model_wrong_on_hits": 1,
                 "accuracy_model": 0.9, "accuracy_with_rules": 0.95}}}
    refined = write_refine_summary(tmp_path, train_rows=200)
    card = model_card(task, trained, blueprint="b", threshold=0.7, onnx_size=1, bin_size=1,
                      evaluation=write_eval_summary(tmp_path, rules=report),
                      refine_summary=refined)
    lines = card.splitlines()
    assert "## Reflex rules" in lines
    assert "| rule | label | train (refined) | exam | dataset test |" in lines
    assert "| `delete` | `Statement` | 12 | 2 (+1) | 0 |" in lines
    assert "| `rule2` | `Question` | 3 | 0 | 0 |" in lines
    assert "| all rules | | 15 of 200 | 2 of 20 | 0 of 0 |" in lines
    assert "| accuracy: model → with rules | | 99.00% → 99.00% | 90.00% → 95.00% | n/a |" in lines
    assert card.index("## Reflex rules") < card.index("## Size")
    plain = model_card(task, trained, blueprint="b", threshold=0.7, onnx_size=1, bin_size=1,
                       evaluation=write_eval_summary(tmp_path), refine_summary=refined)
    assert "Reflex rules" not in plain and plain.count("## Size") == 1


# -- concurrent exports -----------------------------------------------------------------------

_WRITER = """
import sys
from pathlib import Path
from conftest import QUESTIONS, STATEMENTS, fit_tiny
from foundry.export import conformance_texts, install_artifacts, model_files
models, c, rounds = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
files = model_files(fit_tiny(C=c), task="t", threshold=0.6,
                    texts=conformance_texts(QUESTIONS + STATEMENTS, []))
for _ in range(rounds):
    install_artifacts("t", files, models, log=None)
"""

_READER = """
import sys, time
from pathlib import Path
from foundry.errors import ArtifactError
from foundry.runtime import MicroModel
models, stop = Path(sys.argv[1]), Path(sys.argv[2])
loads = failures = 0
while not stop.exists():
    try:
        MicroModel.load("t", models)
    except ArtifactError as exc:
        failures += 1
        print(exc, file=sys.stderr)
    loads += 1
print(loads, failures)
"""


def test_concurrent_exports_take_turns_and_readers_never_see_a_mismatched_pair(tmp_path):
    """Issue 15: two exports shared one staging folder and deleted each other's files; a
    reader saw a mismatched pair."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import write_tiny_models

    from foundry.runtime import MicroModel, verify_conformance

    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests),
                                                       os.environ.get("PYTHONPATH", "")])}
    models, stop = tmp_path / "models", tmp_path / "stop"
    write_tiny_models(models, task="t")
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(models), str(stop)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(models), str(c), "40"],
                                env=env) for c in (0.5, 8.0)]
    try:
        assert [w.wait(timeout=600) for w in writers] == [0, 0]
    finally:
        stop.touch()
    out, err = reader.communicate(timeout=120)
    loads, failures = map(int, out.split())
    assert failures == 0, err[-2000:]
    assert loads > 10
    assert not (models / PENDING_DIR).exists()
    model = MicroModel.load("t", models)
    verify_conformance(model, models / "t_conformance.json")
