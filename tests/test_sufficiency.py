"""The data-sufficiency gate of stage 1 (foundry/generate/sufficiency.py)."""

from __future__ import annotations

import pytest
import yaml

from foundry.blueprint import Label, Task
from foundry.generate.sufficiency import (
    InsufficientDataError,
    category_targets,
    check_sufficiency,
    label_targets,
    measure,
)

TASK = Task(name="t", constitution="c.md", exam="e.jsonl", labels=[
    Label(name="Yes", definition="y", categories=["a", "b"]),
    Label(name="No", definition="n"),
])


def _rows(label: str, category: str | None, n: int) -> list[dict]:
    return [{"text": f"{label}{category}{i}", "label": label, "category": category}
            for i in range(n)]


def test_targets_split_evenly_over_labels_then_categories():
    assert label_targets(TASK, 101) == {"Yes": 51, "No": 50}
    assert category_targets(TASK, 101) == {("Yes", "a"): 26, ("Yes", "b"): 25, ("No", None): 50}


def test_measure_reports_labels_and_categories_against_their_targets():
    rows = _rows("Yes", "a", 30) + _rows("Yes", None, 5) + _rows("No", None, 10) + \
        _rows("Maybe", None, 99)
    s = measure(TASK, rows, 100, 0.5)
    table = s.table.set_index(["level", "label", "category"], drop=False)
    assert table.loc[("label", "Yes", None), ["target", "rows"]].tolist() == [50, 35]
    assert table.loc[("category", "Yes", "a"), ["rows", "below"]].tolist() == [30, False]
    assert table.loc[("category", "Yes", "b"), ["rows", "share", "below"]].tolist() == [0, 0.0, True]
    assert table.loc[("label", "No", None), ["rows", "share", "below"]].tolist() == [10, 0.2, True]
    assert not s.passed and list(s.short_labels["label"]) == ["No"]
    assert s.summary() == ("t: Yes 35/50 (70%), No 10/50 (20%); below 50% of target; "
                           "thin sub-categories: Yes/b")
    assert s.table["rows"].dtype.kind == "i" and s.table["target"].dtype.kind == "i"


def test_gate_names_every_short_label_and_what_to_do():
    low = measure(TASK, _rows("Yes", "a", 14) + _rows("No", None, 15), 2000, 0.5)
    fine = measure(TASK, _rows("Yes", "a", 60) + _rows("No", None, 60), 100, 0.5)
    check_sufficiency({"fine": fine})
    with pytest.raises(InsufficientDataError) as info:
        check_sufficiency({"fine": fine, "low": low}, "demo")
    message = str(info.value)
    assert "low: label 'Yes' has 14 rows, 1% of its target 1000 (minimum 50%)" in message
    assert "low: label 'No' has 15 rows" in message and "fine:" not in message
    assert "lower generation.target_per_task" in message
    assert "`foundry blueprint check demo`" in message


def test_offline_quotas_replace_the_even_category_targets():
    s = measure(TASK, _rows("Yes", "a", 40), 100, 0.5, {("Yes", "a"): 40, ("Yes", "b"): 10})
    table = s.table.set_index(["level", "label", "category"])
    assert table.loc[("category", "Yes", "b"), "target"] == 10


# A grammar whose 4 x 4 x 4 = 64 derivations per template normalise to one sentence: the check's
# upper bound cannot see it, the generated rows can.
COLLAPSING_GRAMMAR = """
slots:
  x: ["Ｘ", "x", "X", "ｘ"]
templates:
"""
COLLAPSING_TEMPLATE = """  - label: {label}
    category: {category}
    patterns: ["{word}{{x}}{{x}}{{x}}"]
"""


def collapsing_blueprint(tmp_path):
    from foundry.scaffold import new_blueprint

    root = new_blueprint("thin", blueprints_dir=tmp_path)
    cells = [("Positive", "thanks", "谢"), ("Positive", "praise", "棒"),
             ("Negative", "wrong", "错"), ("Negative", "unhelpful", "烂")]
    (root / "grammar" / "thin.yaml").write_text(COLLAPSING_GRAMMAR + "".join(
        COLLAPSING_TEMPLATE.format(label=label, category=cat, word=word)
        for label, cat, word in cells), encoding="utf-8")
    text = (root / "blueprint.yaml").read_text(encoding="utf-8")
    (root / "blueprint.yaml").write_text(text.replace("target_per_task: 600",
                                                      "target_per_task: 60"), encoding="utf-8")
    return root


def test_generation_measures_and_the_gate_stops_a_thin_grammar(tmp_path):
    from foundry.blueprint import load_blueprint
    from foundry.check import check_blueprint
    from foundry.generate import check_data_sufficiency, generate_stage
    from foundry.runs import read_json

    root = collapsing_blueprint(tmp_path)
    assert check_blueprint(root, env={}).ok  # 64 derivations per template look like plenty
    bp = load_blueprint(root)
    summaries = generate_stage(bp, tmp_path / "runs" / "thin" / "r1", log=lambda _: None)
    s = summaries["thin"].sufficiency
    assert list(s.short_labels["label"]) == ["Positive", "Negative"]
    manifest = read_json(tmp_path / "runs" / "thin" / "r1" / "generate" / "thin" / "manifest.json")
    assert manifest["sufficiency"]["passed"] is False
    with pytest.raises(InsufficientDataError, match="label 'Positive' has 6 rows, 20% of its "
                                                    "target 30"):
        check_data_sufficiency(summaries, bp.name)


def test_a_task_target_per_task_sets_its_rows_and_its_gate(tmp_path):
    from foundry.blueprint import load_blueprint
    from foundry.check import check_blueprint
    from foundry.generate import generate_stage

    root = collapsing_blueprint(tmp_path)
    spec = yaml.safe_load((root / "blueprint.yaml").read_text(encoding="utf-8"))
    spec["tasks"][0]["target_per_task"] = 12  # 6 a label: the thin grammar's 6 rows suffice
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True),
                                         encoding="utf-8")
    assert check_blueprint(root, env={}).ok
    summaries = generate_stage(load_blueprint(root), tmp_path / "runs" / "thin" / "r1",
                               log=lambda _: None)
    assert summaries["thin"].target == 12 and summaries["thin"].rows == 12
    assert summaries["thin"].sufficiency.passed


@pytest.mark.slow
def test_forge_stops_after_stage_1_with_the_gates_message(tmp_path):
    from foundry.forge import ForgeError, forge
    from foundry.runs import RunState, latest_run_dir

    root = collapsing_blueprint(tmp_path)
    runs = tmp_path / "runs"
    with pytest.raises(ForgeError) as info:
        forge(root, runs_root=runs, run_id="r1", models_dir=tmp_path / "models", html=False,
              log=lambda _: None)
    message = str(info.value)
    assert "stage 'generate' failed" in message and "InsufficientDataError" in message
    assert "too little data" in message
    state = RunState.load(runs / "thin" / "r1")
    assert state.status("generate") == "failed" and state.status("refine") == "pending"
    assert latest_run_dir("thin", runs) is None
    assert not (tmp_path / "models").exists()
