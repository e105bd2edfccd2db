"""bench/seeds.py: the seeded blueprint copies and the printed tables (the forges themselves are
the forge tested in tests/test_e2e.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from foundry.blueprint import load_blueprint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_seeds", ROOT / "bench" / "seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeded_copy_sets_every_seed_and_keeps_the_rest(bench, tmp_path):
    original = load_blueprint("text_classification")
    copy = load_blueprint(bench.seeded_copy("text_classification", 7, tmp_path))
    assert copy.root.parent == tmp_path
    assert (copy.spec.generation.seed, copy.spec.refine.seed, copy.spec.train.seed) == (7, 7, 7)
    assert [t.name for t in copy.tasks] == [t.name for t in original.tasks]
    assert copy.spec.generation.target_per_task == original.spec.generation.target_per_task
    assert copy.spec.train.grid == original.spec.train.grid
    # the grammar, seeds and exams come along
    for task in copy.tasks:
        assert copy.path(task.exam).read_bytes() == original.path(task.exam).read_bytes()


def _summary(exam: float, confident: float) -> dict:
    return {"exam_accuracy": exam, "exam_confident_share": confident,
            "exam_confident_precision": 1.0, "threshold": 0.8, "test_macro_f1": 0.98,
            "coverage_at_threshold": 0.97, "crossfit_confident_precision": None}


def test_tables_list_every_seed_then_min_median_max(bench):
    results = {42: {"a": _summary(0.99, 0.90)}, 7: {"a": _summary(0.97, 0.96)},
               1: {"a": _summary(0.98, 0.93)}}
    table = bench.format_tables(results)
    assert "| 42 | a | 99.0% | 90.0% |" in table
    assert "| 7 | a | 97.0% | 96.0% |" in table
    assert "| a | min | 97.0% | 90.0% |" in table
    assert "| a | median | 98.0% | 93.0% |" in table
    assert "| a | max | 99.0% | 96.0% |" in table
    assert table.count("n/a") == 3 + 3  # no cross-fitted precision in any row


def test_parse_seeds_reads_a_comma_list_and_refuses_anything_else(bench):
    import argparse

    assert bench.parse_seeds("42,7, 1,") == [42, 7, 1]
    assert bench.parse_seeds("") == []
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers, got '4x'"):
        bench.parse_seeds("4x")
