"""The grammar audit (foundry/generate/audit.py) finds a template that contradicts the rest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from foundry.blueprint import load_blueprint
from foundry.cli import main
from foundry.generate.audit import audit_grammar, format_audit

DIGITS = [str(i) for i in range(10)]
#: Template keys are "<category>#<index within the category>".
BAD = "c#1"


def write_blueprint(root: Path, *, with_grammar: bool = True) -> Path:
    """Two labels; category ``c`` of ``No`` has a small template that writes ``Yes`` sentences."""
    root.mkdir(parents=True, exist_ok=True)
    task = {
        "name": "audit_task",
        "labels": [{"name": "Yes", "definition": "y", "categories": ["a", "b"]},
                   {"name": "No", "definition": "n", "categories": ["c"]}],
        "constitution": "c.md", "exam": "e.jsonl",
    }
    grammar = {
        "slots": {"d": DIGITS},
        "templates": [
            {"label": "Yes", "category": "a", "patterns": ["好的{d}{d}{d}号"]},
            {"label": "Yes", "category": "b", "patterns": ["行啊{d}{d}{d}点"]},
            {"label": "No", "category": "c", "patterns": ["不要{d}{d}{d}号", "别{d}{d}{d}点"]},
            # mislabelled: the Yes sentences of category a, under No
            {"label": "No", "category": "c", "weight": 0.08, "patterns": ["好的{d}{d}{d}号"]},
        ],
    }
    if with_grammar:
        task["grammar"] = "g.yaml"
        (root / "g.yaml").write_text(yaml.safe_dump(grammar, allow_unicode=True), encoding="utf-8")
    spec = {"name": "audit_bp", "tasks": [task], "train": {"grid": {"C": [4.0]}, "cv_folds": 3}}
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    (root / "c.md").write_text("prompt {n}", encoding="utf-8")
    (root / "e.jsonl").write_text("", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    bp = load_blueprint(write_blueprint(tmp_path_factory.mktemp("audit")))
    return audit_grammar(bp, bp.task("audit_task"), rows=1200, seed=3)


def test_the_contradicting_template_comes_first(audit):
    worst = audit.templates.iloc[0]
    assert (worst["template"], worst["label"]) == (BAD, "No")
    assert worst["errors"] == worst["rows"] and worst["error_rate"] == 1.0, audit.templates
    assert worst["confident_errors"] >= 0.25 * worst["rows"], audit.templates
    assert "好的" in worst["examples"]


def test_consistent_templates_have_no_confident_errors(audit):
    others = audit.templates[audit.templates["template"] != BAD]
    assert set(others["template"]) == {"a#0", "b#0", "c#0"}
    assert others["confident_errors"].sum() <= 2, others
    assert audit.templates["rows"].sum() == audit.rows


def test_errors_are_listed_worst_first_with_their_template(audit):
    errors = audit.errors
    assert list(errors.columns) == ["text", "label", "predicted", "p", "template"]
    assert errors["p"].is_monotonic_decreasing
    assert (errors["label"] != errors["predicted"]).all()
    assert int((errors["template"] == BAD).sum()) == int(
        audit.templates.loc[audit.templates["template"] == BAD, "errors"].iloc[0])
    assert audit.cv_accuracy == pytest.approx(1 - len(errors) / audit.rows)


def test_markdown_report(audit):
    text = format_audit(audit, top=5)
    assert text.startswith(f"## audit_task: {audit.rows} unique rows")
    n = int(audit.templates.iloc[0]["rows"])
    assert f"| {BAD} | No | c | {n} | {n} |" in text
    assert text.count("\n| ") == 1 + 1  # header + the one template with errors


def test_bad_arguments(tmp_path):
    bp = load_blueprint(write_blueprint(tmp_path / "g"))
    with pytest.raises(ValueError, match="confident=1.5"):
        audit_grammar(bp, bp.task("audit_task"), confident=1.5)
    bare = load_blueprint(write_blueprint(tmp_path / "bare", with_grammar=False))
    with pytest.raises(ValueError, match="'audit_task' has no grammar"):
        audit_grammar(bare, bare.task("audit_task"))


def test_cli_prints_the_table_and_writes_the_errors(tmp_path, capsys):
    root = write_blueprint(tmp_path / "bp")
    csv = tmp_path / "{task}-errors.csv"
    assert main(["grammar", "audit", str(root), "--rows", "600", "--errors-csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "## audit_task: " in out and f"| {BAD} | No |" in out
    written = pd.read_csv(tmp_path / "audit_task-errors.csv")
    assert len(written) > 0 and set(written["template"]) >= {BAD}
