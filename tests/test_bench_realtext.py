"""bench/realtext.py: its per-task measures and the table over seeds (the grouped CV and
left-out runs themselves run on real data in the bench; here, what they are summed into)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_realtext", ROOT / "bench" / "realtext.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_left_out_mean_weighs_each_corpus_by_its_rows(bench):
    b = bench.TaskBench([], 0.8, 0.9, [("kdconv", 100, 0.9, 3), ("lccc_base", 300, 0.7, 5)])
    assert b.left_out_mean == pytest.approx((100 * 0.9 + 300 * 0.7) / 400)
    assert b.left_out_errors == 8
    assert math.isnan(bench.TaskBench(["| t | (no real pool) |"]).left_out_mean)


def test_seed_table_has_a_row_per_seed_and_a_mean_per_task_and_weight(bench):
    rows = [("confirmation", 1.0, 42, bench.TaskBench([], 0.80, 0.88, [("a", 10, 0.8, 2)])),
            ("confirmation", 1.0, 7, bench.TaskBench([], 0.84, 0.90, [("a", 10, 0.9, 1)])),
            ("is_question", 2.0, 42, bench.TaskBench([], 0.87, 0.94, [("b", 5, 0.88, 4)]))]
    table = bench.seed_table(rows)
    assert table[0].startswith("| task | real weight | seed |")
    assert "| confirmation | 1 | 42 | 0.8000 | 0.8800 | 0.8000 | 2 |" in table
    assert "| confirmation | 1 | mean of 2 | 0.8200 | 0.8900 | 0.8500 | 1.5 |" in table
    assert "| is_question | 2 | mean of 1 | 0.8700 | 0.9400 | 0.8800 | 4.0 |" in table
    assert len(table) == 2 + 3 + 2


def test_family_table_averages_each_left_out_family_over_the_seeds(bench):
    rows = [("confirmation", 3.0, 42, bench.TaskBench([], 0.8, 0.9, [("crsa", 124, 0.90, 1),
                                                                     ("lccc_base", 590, 0.80, 6)])),
            ("confirmation", 3.0, 7, bench.TaskBench([], 0.8, 0.9, [("crsa", 124, 0.94, 0),
                                                                    ("lccc_base", 590, 0.84, 3)]))]
    table = bench.family_table(rows)
    assert table[0].startswith("| task | real weight | left out |")
    assert "| confirmation | 3 | crsa | 124 | 0.9200 | 0.9000 / 0.9400 | 0.5 |" in table
    assert "| confirmation | 3 | lccc_base | 590 | 0.8200 | 0.8000 / 0.8400 | 4.5 |" in table
    assert len(table) == 2 + 2


def test_parse_overrides_reads_numbers_and_booleans(bench):
    assert bench.parse_overrides(["C=64", "max_n=4", "sublinear_tf=false", "C2=0.5"], "param") \
        == {"C": 64, "max_n": 4, "sublinear_tf": False, "C2": 0.5}
    assert bench.parse_overrides(None, "param") == {}


@pytest.mark.parametrize("pair, message", [
    ("C", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("C=big", "must be a number, true or false"),
    ("C=", "must be a number, true or false"),
    ("C=[1, 2]", "must be a number, true or false"),
])
def test_parse_overrides_names_the_bad_pair(bench, pair, message):
    with pytest.raises(SystemExit, match=message):
        bench.parse_overrides([pair], "param")


def test_feature_overrides_must_be_text_spec_fields(bench):
    assert bench.parse_overrides(["max_n=4"], "feature", bench.FEATURE_FIELDS) == {"max_n": 4}
    with pytest.raises(SystemExit, match="--feature 'max_ngram': not one of"):
        bench.parse_overrides(["max_ngram=4"], "feature", bench.FEATURE_FIELDS)
