"""`foundry blueprint check`: every problem a forge would hit, at once, with file, line, field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foundry.check import check_blueprint, exam_row_problems, yaml_locator
from foundry.scaffold import new_blueprint

NO_KEYS = {"PATH": "/usr/bin"}  # an environment without any provider key


@pytest.fixture
def bp(tmp_path) -> Path:
    """A fresh scaffold (the same files `foundry blueprint new` writes)."""
    return new_blueprint("demo", blueprints_dir=tmp_path)


def _edit_yaml(root: Path, mutate) -> None:
    data = yaml.safe_load((root / "blueprint.yaml").read_text(encoding="utf-8"))
    mutate(data)
    (root / "blueprint.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                                         encoding="utf-8")


def _append(path: Path, row: dict) -> int:
    """Append a JSONL row; return its line number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, json.dumps(row, ensure_ascii=False)]) + "\n", "utf-8")
    return len(lines) + 1


def _errors(report) -> list[str]:
    return [str(p) for p in report.errors]


def test_the_scaffold_and_the_default_blueprint_pass(bp):
    for target in (bp, "text_classification"):
        report = check_blueprint(target, env=NO_KEYS)
        assert report.ok, report.format()
        assert report.format().startswith("ok: ")


def test_exam_label_typo_names_file_line_and_field(bp):
    exam = bp / "exam" / "demo.jsonl"
    line = _append(exam, {"text": "还行吧", "label": "Postive"})
    report = check_blueprint(bp, env=NO_KEYS)
    assert _errors(report) == [
        f"{exam}:{line}: label: 'Postive' is not a label of task 'demo' "
        "(labels: Positive, Negative); did you mean 'Positive'?"]


def test_every_error_is_reported_at_once_with_its_line(bp):
    _edit_yaml(bp, lambda d: (d["train"].__setitem__("trainer", "tfidf_lgoreg"),
                              d["train"]["grid"].__setitem__("Cc", [1.0]),
                              d["tasks"][0].__setitem__("seeds", "seeds/missing.jsonl")))
    seeds_line = _append(bp / "seeds" / "demo.jsonl",
                         {"text": "好", "label": "Positive", "category": "thank"})
    exam_line = _append(bp / "exam" / "demo.jsonl", {"text": "x", "label": "Positive", "hard": 1})
    (bp / "corrections").mkdir()
    (bp / "corrections" / "demo.jsonl").write_text('{"text": "好", "label": "Good"}\n', "utf-8")
    lines = (bp / "blueprint.yaml").read_text(encoding="utf-8").splitlines()
    line_of = {key: next(i for i, text in enumerate(lines, 1) if text.strip().startswith(key))
               for key in ("trainer:", "Cc:", "seeds:")}
    errors = _errors(check_blueprint(bp, env=NO_KEYS))
    assert f"{bp}/blueprint.yaml:{line_of['trainer:']}: train.trainer: unknown trainer " \
           "'tfidf_lgoreg'" in "\n".join(errors)
    assert any(e.startswith(f"{bp}/blueprint.yaml:{line_of['Cc:']}: train.grid.Cc: not a "
                            "parameter") for e in errors), errors
    assert any(e.startswith(f"{bp}/blueprint.yaml:{line_of['seeds:']}: tasks[0].seeds: file "
                            "not found") for e in errors), errors
    assert f"{bp}/exam/demo.jsonl:{exam_line}: hard: must be true or false, got 1" in errors
    assert f"{bp}/corrections/demo.jsonl:1: label: 'Good' is not a label of task 'demo' " \
           "(labels: Positive, Negative)" in errors
    # The seeds file is no longer named by the blueprint: its typo is not the forge's business.
    assert not any(f":{seeds_line}: category" in e for e in errors)


def test_grammar_and_seed_errors_carry_their_lines(bp):
    grammar = bp / "grammar" / "demo.yaml"
    text = grammar.read_text(encoding="utf-8").replace("category: praise", "category: praize", 1)
    grammar.write_text(text, encoding="utf-8")
    template_line = next(i for i, line in enumerate(text.splitlines(), 1) if "praize" in line) - 1
    seed_line = _append(bp / "seeds" / "demo.jsonl",
                        {"text": "好", "label": "Positive", "category": "thank"})
    errors = "\n".join(_errors(check_blueprint(bp, env=NO_KEYS)))
    assert f"{grammar}:{template_line}: grammar: templates[" in errors
    assert "unknown category 'praize' of label 'Positive'" in errors
    assert f"seeds/demo.jsonl:{seed_line}: category: 'thank' is not a category of label " \
           "'Positive' (categories: thanks, praise); did you mean 'thanks'?" in errors


def test_offline_needs_a_grammar_or_seeds_and_enough_of_them(bp):
    _edit_yaml(bp, lambda d: d["tasks"][0].pop("grammar"))
    errors = "\n".join(_errors(check_blueprint(bp, env=NO_KEYS)))
    # 4 seeds per label cannot reach half of the 300 rows each label should get.
    assert "label 'Positive' can get at most 4 distinct rows offline" in errors
    assert "the forge would stop after stage 1" in errors
    _edit_yaml(bp, lambda d: d["tasks"][0].pop("seeds"))
    errors = "\n".join(_errors(check_blueprint(bp, env=NO_KEYS)))
    assert "neither `grammar` nor `seeds`" in errors


def test_llm_provider_needs_a_key(bp):
    errors = "\n".join(_errors(check_blueprint(bp, provider="gemini", env=NO_KEYS)))
    assert "--provider gemini needs GEMINI_API_KEYS" in errors
    assert check_blueprint(bp, provider="openai",
                           env={"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}).ok
    # A blueprint that asks for Gemini without a key falls back to offline: a warning.
    _edit_yaml(bp, lambda d: d["generation"].__setitem__("provider", "gemini"))
    report = check_blueprint(bp, env=NO_KEYS)
    assert report.ok and "the forge will use the offline provider" in report.format()


def test_values_out_of_range_and_crossed_bounds(bp):
    _edit_yaml(bp, lambda d: (d["generation"].update(min_label_share=1.5),
                              d["evaluate"].__setitem__("exam_min_accuracy", 2)))
    errors = "\n".join(_errors(check_blueprint(bp, env=NO_KEYS)))
    assert "generation.min_label_share: Input should be less than or equal to 1" in errors
    assert "evaluate.exam_min_accuracy: Input should be less than or equal to 1" in errors
    _edit_yaml(bp, lambda d: (d["generation"].update(min_label_share=0.5, min_chars=50,
                                                      max_chars=10)))
    errors = "\n".join(_errors(check_blueprint(bp, env=NO_KEYS)))
    assert "generation: min_chars (50) must be <= max_chars (10)" in errors


def test_broken_yaml_and_missing_blueprint(bp, tmp_path):
    (bp / "blueprint.yaml").write_text("name: demo\ntasks: [\n", encoding="utf-8")
    report = check_blueprint(bp)
    assert not report.ok and "not valid YAML" in report.format()
    assert ":3: (yaml)" in report.format()
    assert "no blueprint" in check_blueprint(tmp_path / "nowhere").format()


def test_exam_rows_rules():
    from foundry.blueprint import load_blueprint

    task = load_blueprint("text_classification").task("confirmation")
    assert exam_row_problems({"text": "好", "label": "Affirm", "category": "direct"}, task) == []
    assert exam_row_problems({"text": "好", "label": "Affirm"}, task) == []
    assert [f for f, _ in exam_row_problems({"text": "", "label": "X", "note": 3}, task)] == [
        "text", "label", "note"]


def test_yaml_locator_finds_keys_and_items():
    line_of = yaml_locator("a:\n  b:\n    - x\n    - y: 1\nc: 2\n")
    assert [line_of(loc) for loc in (("a",), ("a", "b"), ("a", "b", 1, "y"), ("c",), ("zz",))] \
        == [1, 2, 4, 5, 1]


def test_cli_exit_code_and_no_stage_is_run(bp, tmp_path):
    exam = bp / "exam" / "demo.jsonl"
    line = _append(exam, {"text": "还行吧", "label": "Neutral"})
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "foundry", "blueprint", "check", str(bp)],
                          capture_output=True, text=True, timeout=60,
                          env={**NO_KEYS, "FOUNDRY_RUNS_DIR": str(runs)})
    assert proc.returncode == 1
    assert f"{exam}:{line}: label: 'Neutral' is not a label of task 'demo'" in proc.stderr
    assert proc.stderr.strip().endswith("1 error in blueprint 'demo'")
    assert not runs.exists()


def test_files_that_are_not_utf8_are_named(bp):
    (bp / "grammar" / "demo.yaml").write_bytes(b"slots: {}\n" + b"\xff\xfe bad\n")
    (bp / "exam" / "demo.jsonl").write_bytes(b'{"text": "\xff", "label": "Positive"}\n')
    errors = "\n".join(_errors(check_blueprint(bp, env=NO_KEYS)))
    assert "grammar/demo.yaml: (file): not UTF-8 text" in errors
    assert "exam/demo.jsonl: (line): not UTF-8 text" in errors
