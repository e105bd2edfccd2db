"""The stage contracts: typed summaries that keep their files' keys and fail loudly."""

from __future__ import annotations

import json

import pytest
from fakes.summaries import write_eval_summary, write_refine_summary

from foundry.generate import GenerateSummary
from foundry.generate.sufficiency import measure
from foundry.summaries import EvalSummary, RefineSummary, StageOutputError, TrainSummary


def test_a_summary_reads_back_what_it_wrote(tmp_path):
    written = write_refine_summary(tmp_path, train_rows=12, balance="class_weight")
    path = tmp_path / "refine" / "is_question" / "summary.json"
    text = path.read_text(encoding="utf-8")
    assert list(json.loads(text)) == sorted(json.loads(text))  # write_json: sorted keys
    again = RefineSummary.load(tmp_path, "is_question")
    assert again == written and again.config.balance == "class_weight"
    again.write(path.parent)
    assert path.read_text(encoding="utf-8") == text


def test_fields_only_some_tasks_have_stay_out_of_the_file(tmp_path):
    summary = write_eval_summary(tmp_path)
    data = json.loads((tmp_path / "evaluate" / "is_question" / "summary.json").read_text())
    optional = {name for name, f in EvalSummary.model_fields.items() if not f.is_required()}
    assert optional >= {"dev_cases", "dev_accuracy", "unpruned_n_features", "heldout"}
    assert not optional - {"heldout", "rules"} & set(data)
    assert data["heldout"] is None and data["rules"] is None  # given, so written
    assert summary.dev_cases is None
    summary.dev_cases = 3  # assigned after it was made: written too
    assert summary.to_json()["dev_cases"] == 3


@pytest.mark.parametrize("change, named", [
    (lambda d: d.pop("exam_accuracy"), "field 'exam_accuracy': Field required"),
    (lambda d: d.update(exam_acc=d.pop("exam_accuracy")), "field 'exam_acc': Extra inputs"),
    (lambda d: d.update(threshold="high"), "field 'threshold': Input should be a valid number"),
])
def test_a_renamed_or_missing_field_is_named_with_its_file(tmp_path, change, named):
    write_eval_summary(tmp_path, exam_accuracy=0.5)
    path = tmp_path / "evaluate" / "is_question" / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StageOutputError) as info:
        EvalSummary.load(tmp_path, "is_question")
    message = str(info.value)
    assert str(path) in message and named in message and "run the evaluate stage again" in message


def test_a_missing_summary_says_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the 'train' stage has not run.*--steps train"):
        TrainSummary.load(tmp_path / "runs" / "bp" / "r1", "is_question")


def test_the_generate_summary_carries_its_sufficiency_table_through_the_file(tmp_path):
    from foundry.blueprint import Label, Task

    task = Task(name="t", constitution="c.md", exam="e.jsonl",
                labels=[Label(name="Yes", definition="y"), Label(name="No", definition="n")])
    rows = [{"label": "Yes"}] * 6 + [{"label": "No"}] * 2
    made = GenerateSummary(task="t", provider="offline", stream="s", raw_files=["/r/t.jsonl"],
                           rows=8, added=8, target=10, sufficiency=measure(task, rows, 10, 0.5),
                           details={})
    made.write(tmp_path / "generate" / "t")
    data = json.loads((tmp_path / "generate" / "t" / "manifest.json").read_text())
    assert data["sufficiency"]["passed"] is False and data["raw_files"] == ["/r/t.jsonl"]
    back = GenerateSummary.load(tmp_path, "t")
    assert not back.sufficiency.passed and back.raw_file.name == "t.jsonl"
    assert back.sufficiency.table.equals(made.sufficiency.table)
    assert back.to_json() == made.to_json()
