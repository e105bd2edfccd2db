"""The dataset provider: labelled files with roles, their checks, stage 1 and the refinery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from foundry.blueprint import BlueprintError, load_blueprint
from foundry.check import check_blueprint
from foundry.datasets import DatasetError, load_dataset, read_dataset_file
from foundry.generate import generate_task
from foundry.refine import refine_rows

LABELS = ["alarm_set", "play_music", "weather_query"]


def _write_blueprint(root: Path, dataset: dict, *, extra_task: dict | None = None,
                     provider: str = "dataset") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "constitution.md").write_text("Route a command to its intent.\n", encoding="utf-8")
    (root / "exam.jsonl").write_text(
        json.dumps({"text": "几点了闹钟帮我定一下", "label": "alarm_set"}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    task = {"name": "intent", "constitution": "constitution.md", "exam": "exam.jsonl",
            "labels": [{"name": n, "definition": f"intent {n}"} for n in LABELS],
            "dataset": dataset, **(extra_task or {})}
    spec = {"name": "mini", "tasks": [task], "generation": {"provider": provider},
            "refine": {"balance": "cap", "test_size": 0.2}}
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True),
                                         encoding="utf-8")
    return root


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "id,text,intent") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{i},{t},{lab}" for i, (t, lab) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")


TRAIN = [("明早七点叫我", "alarm_set"), ("设个八点的闹钟", "alarm_set"),
         ("放首歌", "play_music"), ("来点周杰伦", "play_music"),
         ("明天下雨吗", "weather"), ("今天多少度", "weather"), ("随便聊聊", "chitchat")]
DATASET = {"text": "text", "label": "intent",
           "label_map": {"weather": "weather_query", "chitchat": None},
           "files": [{"path": "data/train.csv", "role": "train"},
                     {"path": "data/dev.jsonl", "role": "dev"},
                     {"path": "data/test.jsonl", "role": "test"}]}


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    root = _write_blueprint(tmp_path / "mini", DATASET)
    _csv(root / "data/train.csv", TRAIN)
    _jsonl(root / "data/dev.jsonl", [{"text": "后天冷不冷", "intent": "weather"}])
    _jsonl(root / "data/test.jsonl", [{"text": "放首歌", "intent": "play_music"},
                                      {"text": "周末天气", "intent": "weather"}])
    return root


def test_rows_are_read_with_mapping_roles_and_lines(mini: Path) -> None:
    bp = load_blueprint(mini)
    task = bp.tasks[0]
    train = load_dataset(bp, task, "train")
    assert [(r.text, r.label) for r in train][-2:] == [("明天下雨吗", "weather_query"),
                                                       ("今天多少度", "weather_query")]
    assert len(train) == 6  # the chitchat row is dropped by its null mapping
    assert train[0].line == 2 and train[0].file == "data/train.csv"
    assert [r.label for r in load_dataset(bp, task, "dev")] == ["weather_query"]
    assert len(load_dataset(bp, task, "test")) == 2
    result = read_dataset_file(bp.root, task, task.dataset.files[0])
    assert result.dropped == {"chitchat": 1}


def test_bad_rows_name_file_line_and_field(mini: Path) -> None:
    _csv(mini / "data/train.csv", [("好", "alarm_set"), ("", "play_music"), ("嗯", "unknown_x")])
    _jsonl(mini / "data/dev.jsonl", [{"text": "x", "intent": "weather"}])
    (mini / "data/dev.jsonl").write_text('{"text": "ok", "intent": "weather"}\nnot json\n'
                                         '{"intent": "weather"}\n[1, 2]\n', encoding="utf-8")
    bp = load_blueprint(mini)
    with pytest.raises(DatasetError) as err:
        load_dataset(bp, bp.tasks[0], "train")
    message = str(err.value)
    assert f"{mini / 'data/train.csv'}:3: text: empty text" in message
    assert f"{mini / 'data/train.csv'}:4: intent: 'unknown_x' is not a label" in message
    report = check_blueprint(mini)
    found = {(p.file.name, p.line, p.field) for p in report.errors}
    assert ("train.csv", 3, "text") in found and ("train.csv", 4, "intent") in found
    assert ("dev.jsonl", 2, "(line)") in found  # not JSON
    assert ("dev.jsonl", 3, "text") in found  # missing text
    assert ("dev.jsonl", 4, "(line)") in found  # not an object
    assert not report.ok


def test_missing_column_and_bad_encoding(mini: Path) -> None:
    _csv(mini / "data/train.csv", TRAIN, header="id,utterance,intent")
    (mini / "data/test.jsonl").write_bytes(b'{"text": "\xff\xfe", "intent": "weather"}\n')
    report = check_blueprint(mini)
    messages = [str(p) for p in report.errors]
    assert any("train.csv:1" in m and "no column 'text'" in m for m in messages), messages
    assert any("test.jsonl" in m and "not UTF-8" in m for m in messages), messages


def test_schema_rejects_bad_dataset_fields(tmp_path: Path) -> None:
    bad_map = {**DATASET, "label_map": {"weather": "nope"}}
    root = _write_blueprint(tmp_path / "a", bad_map)
    with pytest.raises(BlueprintError, match="label_map maps to unknown labels: nope"):
        load_blueprint(root, check_files=False)
    outside = {**DATASET, "files": [{"path": "../x.csv", "role": "train"}]}
    with pytest.raises(BlueprintError, match="inside the blueprint folder"):
        load_blueprint(_write_blueprint(tmp_path / "b", outside), check_files=False)
    with pytest.raises(BlueprintError, match="role"):
        load_blueprint(_write_blueprint(tmp_path / "c", {
            **DATASET, "files": [{"path": "a.csv", "role": "holdout"}]}), check_files=False)
    with pytest.raises(BlueprintError, match="out_of_scope: 'oos' is not one of"):
        load_blueprint(_write_blueprint(tmp_path / "d", DATASET,
                                        extra_task={"out_of_scope": "oos"}), check_files=False)
    with pytest.raises(BlueprintError, match=r"dataset.files\[0\].path: file not found"):
        load_blueprint(_write_blueprint(tmp_path / "e", DATASET))


def test_provider_without_dataset_is_a_check_error(tmp_path: Path) -> None:
    root = _write_blueprint(tmp_path / "m", DATASET)
    spec = yaml.safe_load((root / "blueprint.yaml").read_text(encoding="utf-8"))
    del spec["tasks"][0]["dataset"]
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    report = check_blueprint(root)
    assert any("dataset provider reads tasks[].dataset" in p.message for p in report.errors)


def test_stage1_stores_train_rows_once(mini: Path, tmp_path: Path) -> None:
    bp = load_blueprint(mini)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    logs: list[str] = []
    first = generate_task(bp, bp.tasks[0], run, provider="dataset", target=10, log=logs.append)
    again = generate_task(bp, bp.tasks[0], run, provider="dataset", target=10, log=logs.append)
    assert first.rows == 6 and first.added == 6
    assert again.rows == 6 and again.added == 0  # idempotent: batches are not stored twice
    rows = [json.loads(line) for line in first.raw_file.read_text(encoding="utf-8").splitlines()]
    assert {r["source"] for r in rows} == {"dataset"}
    assert rows[0]["corpus"] == "data/train.csv" and rows[0]["ref"] == "2"
    assert first.sufficiency is None
    manifest = json.loads((run / "generate" / "intent" / "manifest.json").read_text())
    assert manifest["details"]["label_counts"] == {"alarm_set": 2, "play_music": 2,
                                                   "weather_query": 2}
    assert first.stream.startswith("dataset-")


def test_test_rows_never_train(mini: Path) -> None:
    from foundry.refine import refine_task

    bp = load_blueprint(mini)
    run = mini.parent / "runs" / "r2"
    run.mkdir(parents=True)
    generate_task(bp, bp.tasks[0], run, provider="dataset", target=10, log=lambda m: None)
    result = refine_task(bp, bp.tasks[0], run, log=lambda m: None, probe=False)
    kept = {r["text"] for r in result.train} | {r["text"] for r in result.test}
    assert "放首歌" not in kept  # equal to a test text: removed like an exam text
    assert any(r["reason"] == "exam_overlap" and r["text"] == "放首歌" for r in result.removed)


def _rows(label: str, n: int) -> list[dict]:
    return [{"text": f"{label} 第{i}条 样本文本 {i * 7919 % 1000}", "label": label,
             "source": "dataset"} for i in range(n)]


def test_balance_cap_keeps_most_rows() -> None:
    from foundry.blueprint import Refine, Task

    task = Task(name="t", constitution="c.md", exam="e.jsonl",
                labels=[{"name": n, "definition": n} for n in ("a", "b", "c", "d")])
    rows = _rows("a", 400) + _rows("b", 60) + _rows("c", 50) + _rows("d", 5)
    capped = refine_rows(rows, task, Refine(balance="cap", balance_cap=2.0, test_size=0.1,
                                            dedup_threshold=0.99), progress=False)
    under = refine_rows(rows, task, Refine(balance="undersample", test_size=0.1,
                                           dedup_threshold=0.99), progress=False)
    counts = capped.summary.label_counts["train"]
    assert counts["a"] < 200 and counts["b"] > 40 and counts["d"] >= 4
    assert capped.summary.train_rows > 2 * under.summary.train_rows
    assert max(under.summary.label_counts["train"].values()) <= 5
