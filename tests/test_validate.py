"""Tolerant parsing of model answers, row checks and the quarantine file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundry.generate.validate import (
    ParseError,
    Quarantine,
    Rejection,
    RowRules,
    check_row,
    check_rows,
    extract_rows,
)

RULES = RowRules({"Question": ("wh_question", "yes_no"), "Statement": ()}, min_chars=2,
                 max_chars=10)
ROWS = [{"text": "几点了", "label": "Question"}, {"text": "开灯", "label": "Statement"}]
ARRAY = json.dumps(ROWS, ensure_ascii=False)


@pytest.mark.parametrize("answer", [
    ARRAY,
    f"  \ufeff{ARRAY}\n",
    f"```json\n{ARRAY}\n```",
    f"好的！下面是结果：\n```json\n{ARRAY}\n```\n希望有帮助。",
    f"```\n{ARRAY}\n```",
    f"Here you go: {ARRAY} -- let me know if you need more",
    json.dumps({"rows": ROWS}, ensure_ascii=False),
    json.dumps({"samples": ROWS}),
    json.dumps({"whatever": ROWS, "count": 2}),
    f"结果如下 {json.dumps({'data': ROWS}, ensure_ascii=False)} 完毕",
])
def test_extract_rows_tolerates_fences_prose_and_wrappers(answer):
    assert extract_rows(answer) == ROWS


def test_single_row_object_is_a_list_of_one():
    assert extract_rows('{"text": "几点了", "label": "Question"}') == ROWS[:1]


@pytest.mark.parametrize("answer, reason", [
    ("", "empty"),
    (None, "empty"),
    ("   ", "empty"),
    ("I cannot help with that.", "no JSON"),
    ('[{"text": "几点了", "label": "Question"}, {"text": "开', "no JSON"),
    ('{"rows": [{"text": "a", "label": "Q"}, {"text":', "no JSON"),
    ('{"a": 1, "b": 2}', "no JSON"),
])
def test_extract_rows_raises_when_nothing_usable(answer, reason):
    with pytest.raises(ParseError, match=reason):
        extract_rows(answer)


def test_truncated_array_does_not_pass_off_its_first_row():
    # A truncated answer must be quarantined whole, not yield a partial batch silently.
    with pytest.raises(ParseError):
        extract_rows('好的: [{"text": "几点了", "label": "Question"}, {"text": "开')


@given(st.lists(st.fixed_dictionaries({"text": st.text(min_size=1, max_size=20),
                                       "label": st.sampled_from(["Question", "Statement"])}),
                min_size=1, max_size=5),
       st.sampled_from(["{}", "```json\n{}\n```", "Sure:\n{}\nDone.", '{{"rows": {}}}']))
def test_extract_rows_roundtrips_any_rows_in_any_wrapping(rows, wrapping):
    answer = wrapping.replace("{}", json.dumps(rows, ensure_ascii=False), 1) \
        if wrapping != '{{"rows": {}}}' else json.dumps({"rows": rows}, ensure_ascii=False)
    assert extract_rows(answer) == rows


@pytest.mark.parametrize("item, reason", [
    ("just a string", "not_object"),
    ({"label": "Question"}, "missing_text"),
    ({"text": 12, "label": "Question"}, "text_not_string"),
    ({"text": "   ", "label": "Question"}, "empty_text"),
    ({"text": "嗯", "label": "Question"}, "too_short"),
    ({"text": "这是一句明显超过十个字的很长的话", "label": "Question"}, "too_long"),
    ({"text": "几点了"}, "missing_label"),
    ({"text": "几点了", "label": ["Question"]}, "label_not_string"),
    ({"text": "几点了", "label": "Maybe"}, "unknown_label"),
])
def test_check_row_rejects_with_reason(item, reason):
    result = check_row(item, RULES)
    assert isinstance(result, Rejection) and result.reason == reason
    assert result.item == item


def test_check_row_normalises_text_label_and_category():
    assert check_row({"text": " 几点了 ", "label": " question ", "category": "yes_no"},
                     RULES) == {"text": "几点了", "label": "Question", "category": "yes_no"}
    # A category of another label (or none) is dropped, the row is kept.
    assert check_row({"text": "几点了", "label": "Question", "category": "command"},
                     RULES)["category"] is None
    assert check_row({"text": "开灯", "label": "Statement", "category": "none"},
                     RULES)["category"] is None


def test_check_rows_rejects_duplicates_within_an_answer_and_counts_missing_categories():
    checked = check_rows([{"text": "几点了", "label": "Question"},
                          {"text": "几点了", "label": "Question"},
                          {"text": "开灯", "label": "Statement"},
                          {"text": "x", "label": "Question"}], RULES)
    assert [r["text"] for r in checked.rows] == ["几点了", "开灯"]
    assert [r.reason for r in checked.rejected] == ["duplicate_in_answer", "too_short"]
    assert checked.category_missing == 1  # Statement has no categories: not missing


def test_quarantine_appends_complete_json_lines(tmp_path):
    q = Quarantine(tmp_path / "sub" / "q.jsonl")
    assert q.write([]) == 0
    assert q.write([{"reason": "unknown_label", "item": {"text": "几点"}, "request_id": "r1"}]) == 1
    assert q.write([{"reason": "a"}, {"reason": "b"}]) == 2
    data = (tmp_path / "sub" / "q.jsonl").read_text(encoding="utf-8")
    assert data.endswith("\n") and "几点" in data  # readable UTF-8
    assert [json.loads(line)["reason"] for line in data.splitlines()] == \
        ["unknown_label", "a", "b"]


def test_quarantine_sets_aside_a_torn_last_line_on_open(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"reason": "a"}\n{"reason": "b", "ite')
    q = Quarantine(path)
    assert path.read_bytes() == b'{"reason": "a"}\n'
    assert (tmp_path / "q.torn.jsonl").read_bytes() == b'{"reason": "b", "ite\n'
    q.write([{"reason": "c"}])
    assert [json.loads(line)["reason"] for line in path.read_text().splitlines()] == ["a", "c"]
