"""Tests of the offline provider: quotas, uniqueness, balance, exhaustion, seeds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from foundry.blueprint import load_blueprint
from foundry.generate.grammar import load_grammar
from foundry.generate.offline import (
    OfflineResult,
    SeedError,
    generate_offline,
    load_seeds,
)
from foundry.textspec import normalize

DIGITS = [str(i) for i in range(10)]


def write_blueprint(root: Path, grammar: dict, seeds: list[dict] | None = None) -> Path:
    """A one-task blueprint in ``root`` with the given grammar and seed rows."""
    root.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": "tiny",
        "tasks": [{
            "name": "tiny_task",
            "labels": [
                {"name": "Yes", "definition": "y", "categories": ["a", "b"]},
                {"name": "No", "definition": "n", "categories": ["c"]},
            ],
            "constitution": "c.md",
            "grammar": "g.yaml",
            "seeds": "s.jsonl",
            "exam": "e.jsonl",
        }],
    }
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    (root / "c.md").write_text("prompt {n}", encoding="utf-8")
    (root / "e.jsonl").write_text("", encoding="utf-8")
    (root / "g.yaml").write_text(yaml.safe_dump(grammar, allow_unicode=True), encoding="utf-8")
    lines = [json.dumps(r, ensure_ascii=False) for r in seeds or []]
    (root / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def big_grammar() -> dict:
    """Every category can produce thousands of sentences."""
    return {
        "slots": {"d": DIGITS},
        "templates": [
            {"label": "Yes", "category": "a", "patterns": ["a{d}{d}{d}{d}"]},
            {"label": "Yes", "category": "b", "patterns": ["b{d}{d}{d}"]},
            {"label": "No", "category": "c", "patterns": ["c{d}{d}{d}", "C{d}{d}{d}x"]},
        ],
    }


def run(tmp_path: Path, grammar: dict, target: int, seed: int = 1,
        seeds: list[dict] | None = None, **kw) -> OfflineResult:
    bp = load_blueprint(write_blueprint(tmp_path / "bp", grammar, seeds))
    return generate_offline(bp, bp.tasks[0], target, seed, **kw)


def by(rows: list[dict], key: str) -> Counter:
    return Counter(r[key] for r in rows)


def test_target_is_reached_with_unique_rows_and_the_row_contract(tmp_path):
    result = run(tmp_path, big_grammar(), 600)
    assert len(result.rows) == 600
    assert len({normalize(r["text"]) for r in result.rows}) == 600
    for r in result.rows:
        assert set(r) == {"text", "label", "category", "source", "template"}
        assert r["source"] == "grammar"
        assert r["template"].startswith(r["category"] + "#")


def test_labels_are_equal_and_categories_balanced(tmp_path):
    result = run(tmp_path, big_grammar(), 601)
    labels = by(result.rows, "label")
    assert sorted(labels.values()) == [300, 301]
    cats = by(result.rows, "category")
    assert abs(cats["a"] - cats["b"]) <= 1
    assert cats["a"] + cats["b"] == labels["Yes"]
    assert result.stats["labels"] == dict(labels)
    stats_c = {c["category"]: c for c in result.stats["categories"]}
    assert stats_c["c"]["total"] == cats["c"] == stats_c["c"]["quota"]


def test_templates_share_evenly_whatever_their_size(tmp_path):
    # The classic template-generator failure: the 10,000-sentence template swamps the
    # 10-sentence one. Here both must get the same number of rows.
    grammar = big_grammar()
    grammar["templates"][0] = {"label": "Yes", "category": "a",
                               "patterns": ["big{d}{d}{d}{d}"]}
    grammar["templates"].insert(1, {"label": "Yes", "category": "a", "patterns": ["small{d}"]})
    result = run(tmp_path, grammar, 48)  # Yes: 24, a: 12 -> 6 + 6
    per_template = by([r for r in result.rows if r["category"] == "a"], "template")
    assert per_template == {"a#0": 6, "a#1": 6}
    assert result.exhausted == []


def test_declared_template_and_category_weights_are_respected(tmp_path):
    grammar = big_grammar()
    grammar["templates"][0]["weight"] = 3
    grammar["templates"].insert(1, {"label": "Yes", "category": "a",
                                    "patterns": ["A{d}{d}{d}{d}"]})
    grammar["category_weights"] = {"a": 2, "b": 1}
    result = run(tmp_path, grammar, 480)  # Yes 240 -> a 160, b 80; a#0 120, a#1 40
    assert by(result.rows, "category") == {"a": 160, "b": 80, "c": 240}
    assert by(result.rows, "template")["a#0"] == 120
    assert by(result.rows, "template")["a#1"] == 40


def test_an_exhausted_template_hands_its_quota_to_its_siblings(tmp_path):
    grammar = big_grammar()
    grammar["templates"].insert(1, {"label": "Yes", "category": "a", "patterns": ["few{d}"]})
    result = run(tmp_path, grammar, 120, max_misses=50)  # a: 30 -> 15 + 15, few has 10
    per_template = by([r for r in result.rows if r["category"] == "a"], "template")
    assert per_template == {"a#0": 20, "a#1": 10}
    assert len(result.rows) == 120
    assert result.exhausted == [
        "Yes/a#1: exhausted; 5 row(s) moved to the other templates of a"
    ]


def test_an_exhausted_category_hands_its_quota_to_the_label(tmp_path):
    grammar = big_grammar()
    grammar["templates"][1] = {"label": "Yes", "category": "b", "patterns": ["b(1|2|3)"]}
    result = run(tmp_path, grammar, 40, max_misses=50)
    cats = by(result.rows, "category")
    assert cats == {"b": 3, "a": 17, "c": 20}
    assert "moved to the other categories of Yes" in result.exhausted[0]


def test_when_everything_is_exhausted_it_stops_short_and_says_so(tmp_path):
    grammar = {"templates": [
        {"label": "Yes", "category": "a", "patterns": ["a(1|2)"]},
        {"label": "Yes", "category": "b", "patterns": ["b"]},
        {"label": "No", "category": "c", "patterns": ["c(1|2|3)"]},
    ]}
    result = run(tmp_path, grammar, 100, max_misses=20)
    assert sorted(r["text"] for r in result.rows) == ["a1", "a2", "b", "c1", "c2", "c3"]
    assert any("every template is exhausted" in m for m in result.exhausted)
    assert result.stats["rows"] == 6 and result.stats["target"] == 100


def test_same_seed_same_rows_in_the_same_order(tmp_path):
    a = run(tmp_path / "1", big_grammar(), 300, seed=5)
    b = run(tmp_path / "2", big_grammar(), 300, seed=5)
    c = run(tmp_path / "3", big_grammar(), 300, seed=6)
    assert a.rows == b.rows
    assert [r["text"] for r in a.rows] != [r["text"] for r in c.rows]


def test_editing_one_template_leaves_the_others_rows_alone(tmp_path):
    before = run(tmp_path / "1", big_grammar(), 300)
    grammar = big_grammar()
    grammar["templates"][1]["patterns"] = ["B{d}{d}{d}"]
    after = run(tmp_path / "2", grammar, 300)
    texts = lambda res, cat: [r["text"] for r in res.rows if r["category"] == cat]  # noqa: E731
    assert texts(before, "a") == texts(after, "a")
    assert texts(before, "b") != texts(after, "b")


def test_seeds_come_first_count_towards_quotas_and_block_duplicates(tmp_path):
    seeds = [
        {"text": "a0001", "label": "Yes", "category": "a"},
        {"text": "c 手写", "label": "No", "category": "c"},
        {"text": "c  100", "label": "No", "category": "c", "note": "typed twice"},
    ]
    result = run(tmp_path, big_grammar(), 120, seeds=seeds)
    assert result.rows[:3] == [
        {"text": "a0001", "label": "Yes", "category": "a", "source": "seed", "template": None},
        {"text": "c 手写", "label": "No", "category": "c", "source": "seed", "template": None},
        {"text": "c  100", "label": "No", "category": "c", "source": "seed", "template": None},
    ]
    assert len(result.rows) == 120
    assert by(result.rows, "label") == {"Yes": 60, "No": 60}
    # the grammar can produce "a0001" too, but the seed already took it
    assert [r["text"] for r in result.rows].count("a0001") == 1
    assert result.stats["seeds"] == 3 and result.stats["grammar"] == 117


def test_more_seeds_than_target_keeps_every_seed(tmp_path):
    seeds = [{"text": f"s{i}", "label": "Yes", "category": "a"} for i in range(5)]
    result = run(tmp_path, big_grammar(), 3, seeds=seeds)
    assert [r["text"] for r in result.rows] == [f"s{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"s.jsonl:2: not valid JSON"),
        ('["a"]', r"s.jsonl:2: expected a JSON object"),
        ('{"text": "x", "category": "a"}', r"s.jsonl:2: label: missing key\(s\) label"),
        ('{"text": "x", "label": "Yes", "category": "a", "lable": 1}',
         r"s.jsonl:2: lable: unknown key\(s\) lable"),
        ('{"text": "  ", "label": "Yes", "category": "a"}',
         r"s.jsonl:2: text: must be a non-empty string"),
        ('{"text": "x", "label": "Maybe", "category": "a"}',
         r"s.jsonl:2: label: 'Maybe' is not a label of task 'tiny_task' \(labels: Yes, No\)"),
        ('{"text": "x", "label": "No", "category": "a"}',
         r"s.jsonl:2: category: 'a' is not a category of label 'No' \(categories: c\)"),
        ('{"text": "ＯＫ", "label": "Yes", "category": "a"}',
         r"s.jsonl:2: duplicate of \S*s.jsonl:1 after normalisation \('ok'\)"),
    ],
)
def test_invalid_seed_files_name_the_line_and_the_problem(tmp_path, line, message):
    bp = load_blueprint(write_blueprint(tmp_path / "bp", big_grammar()))
    path = bp.path("s.jsonl")
    path.write_text('{"text": "ok", "label": "Yes", "category": "a"}\n' + line + "\n",
                    encoding="utf-8")
    with pytest.raises(SeedError, match=message):
        load_seeds(path, bp.tasks[0])
    with pytest.raises(SeedError):
        generate_offline(bp, bp.tasks[0], 10, 0)


def test_capacity_table_and_json_serialisable_stats(tmp_path):
    result = run(tmp_path, big_grammar(), 60)
    assert isinstance(result.capacity, pd.DataFrame)
    a0 = result.capacity[result.capacity["template"] == "a#0"].iloc[0]
    assert a0["distinct"] == 10_000 and bool(a0["exact"])
    assert set(result.capacity["level"]) == {"template", "category", "label"}
    json.dumps(result.stats)
    assert result.stats["warnings"] == []
    json.dumps(result.capacity.to_dict(orient="records"))


# --------------------------------------------------------------------------- the real blueprint


@pytest.fixture(scope="module")
def default_bp():
    return load_blueprint("text_classification", check_files=False)


@pytest.mark.parametrize("task_name", ["is_question", "confirmation"])
def test_default_grammar_and_seeds_validate_against_the_blueprint(default_bp, task_name):
    task = default_bp.task(task_name)
    grammar = load_grammar(default_bp.path(task.grammar), task)  # raises on any mismatch
    seeds = load_seeds(default_bp.path(task.seeds), task)
    assert len(seeds) >= 60
    for label in task.labels:
        seeded = {r["category"] for r in seeds if r["label"] == label.name}
        assert seeded == set(label.categories), f"seeds miss a category of {label.name}"
        assert set(grammar.categories(label.name)) == set(label.categories)


@pytest.mark.parametrize("task_name", ["is_question", "confirmation"])
def test_default_grammar_can_produce_well_over_the_default_target(default_bp, task_name):
    task = default_bp.task(task_name)
    grammar = load_grammar(default_bp.path(task.grammar), task)
    cap = pd.DataFrame(grammar.capacity(key=normalize, limit=2_000))
    cats = cap[cap["level"] == "category"]
    assert (cats["distinct"] >= 300).all(), cats[cats["distinct"] < 300]
    assert cap[cap["level"] == "label"]["distinct"].sum() > 10 * 3000


@pytest.mark.parametrize("task_name", ["is_question", "confirmation"])
def test_default_blueprint_generates_balanced_unique_rows(default_bp, task_name):
    task = default_bp.task(task_name)
    result = generate_offline(default_bp, task, 1200, default_bp.spec.generation.seed)
    assert len(result.rows) == 1200
    assert len({normalize(r["text"]) for r in result.rows}) == 1200
    assert result.exhausted == []
    assert result.stats["warnings"] == []  # the shipped grammars lint clean
    labels = by(result.rows, "label")
    assert set(labels.values()) == {600}
    for label in task.labels:
        cats = by([r for r in result.rows if r["label"] == label.name], "category")
        assert set(cats) == set(label.categories)
        assert max(cats.values()) - min(cats.values()) <= 1
    # every generated text fits the blueprint's length limits
    gen = default_bp.spec.generation
    assert all(gen.min_chars <= len(r["text"]) <= gen.max_chars for r in result.rows)
