"""bench/probes.py: scoring forged models on the probe sets written by other hands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from foundry.blueprint import load_blueprint
from foundry.runtime import MicroModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import probes as bench  # noqa: E402


@pytest.mark.parametrize("task", ["is_question", "confirmation"])
def test_probe_files_hold_300_distinct_rows_of_the_task_labels_and_categories(task):
    labels = {lab.name: set(lab.categories) for lab in load_blueprint("text_classification").task(task).labels}
    assert bench.probe_sets(task) == list("ABCDEF")
    for name in bench.probe_sets(task):
        rows = bench.load_probe(bench.PROBES / f"{task}_{name}.jsonl")
        assert len(rows) == 300 and len({r["text"] for r in rows}) == 300
        assert all(r["category"] in labels[r["label"]] for r in rows)


def test_load_probe_names_the_file_and_line_of_a_bad_row(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "好", "label": "Affirm"}) + "\n" + json.dumps({"text": 3}) + "\n")
    with pytest.raises(SystemExit, match=r"p\.jsonl:2: a probe row needs string 'text' and 'label'"):
        bench.load_probe(path)
    path.write_text(json.dumps({"text": "好", "label": "Affirm"}) + "\n\n{not json\n")
    with pytest.raises(SystemExit, match=r"p\.jsonl:3: not valid JSON"):
        bench.load_probe(path)


def test_score_counts_match_the_model_answers(tiny_models):
    models_dir, _ = tiny_models
    model = MicroModel.load("tiny_q", models_dir)
    rows = [{"text": t, "label": lab, "category": "c"} for t, lab in
            [("今天天气怎么样？", "Question"), ("打开客厅的灯", "Statement"),
             ("几点了？", "Statement"), ("谢谢", "Question")]]
    tallies, errors = bench.score(model, rows)
    answers = model.predict_many([r["text"] for r in rows])
    right = [a.label == r["label"] for a, r in zip(answers, rows, strict=True)]
    assert tallies["all"].n == 4 and tallies["all"].right == sum(right)
    assert tallies["all"].confident == sum(a.confident for a in answers)
    assert tallies["Question/c"].n == 2 and tallies["Statement/c"].n == 2
    wrong = sorted(((a.score, r["text"]) for a, r, ok in zip(answers, rows, right, strict=True)
                    if not ok), reverse=True)
    assert wrong and [(e[0], e[2]["text"]) for e in errors] == wrong


def test_main_prints_a_row_per_model_folder(tiny_models, capsys, tmp_path, monkeypatch):
    models_dir, _ = tiny_models
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "tiny_q_A.jsonl").write_text(
        json.dumps({"text": "几点了？", "label": "Question", "category": "wh"}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    monkeypatch.setattr(bench, "PROBES", probes)
    assert bench.main(["--models", str(models_dir), str(models_dir), "--tasks", "tiny_q",
                       "--sets", "A", "--by-category"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"| {models_dir} | all |") == 2 and f"| {models_dir} | Question/wh |" in out
    with pytest.raises(SystemExit, match=r"no probe file .*tiny_q_B\.jsonl \(the sets of tiny_q are A\)"):
        bench.main(["--models", str(models_dir), "--tasks", "tiny_q", "--sets", "B"])
