"""bench/baselines.py: the table pooled over seeds (the forges and fits themselves run in the
bench; here, what their rows are summed into)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_baselines",
                                                  ROOT / "bench" / "baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(task: str, model: str, dev_k: int, dev_n: int, exam_k: int = 9, exam_n: int = 10):
    return {"task": task, "model": model, "dev_acc": dev_k / dev_n, "dev_n": dev_n,
            "dev_correct": dev_k, "exam_acc": exam_k / exam_n, "exam_n": exam_n,
            "exam_correct": exam_k}


def test_model_key_drops_the_fit_time(bench):
    assert bench.model_key("fastText .bin (fit 1.7s)") == "fastText .bin"
    assert bench.model_key("tfidf_mlp, hidden 16, no budget (fit 8.2s)") == \
        "tfidf_mlp, hidden 16, no budget"
    assert bench.model_key("ours: MicroModel (.onnx+.bin)") == "ours: MicroModel (.onnx+.bin)"


def test_pooled_table_sums_cases_over_seeds_and_counts_seeds_at_least_ours(bench):
    by_seed = {
        42: [row("t", "ours", 80, 100), row("t", "fastText .bin (fit 1.0s)", 82, 100)],
        7: [row("t", "ours", 90, 100), row("t", "fastText .bin (fit 2.0s)", 85, 100)],
        1: [row("t", "ours", 70, 100, exam_k=10), row("t", "fastText .bin (fit 1.1s)", 70, 100)],
    }
    lines = bench.pooled_table(by_seed)
    assert lines[0].startswith("| task | model | dev, seed 42 | dev, seed 7 | dev, seed 1 |")
    ours, fasttext = lines[2].split(" | "), lines[3].split(" | ")
    assert ours[1:5] == ["ours", "80.0%", "90.0%", "70.0%"]
    assert ours[5].startswith("80.0% [")  # 240 of 300
    assert ours[6] == "93.3%" and ours[7] == "— |"  # exam 9 + 9 + 10 of 30
    assert fasttext[1] == "fastText .bin"  # one row for the three fit times
    assert fasttext[5].startswith("79.0% [")  # 237 of 300
    assert fasttext[7] == "2 of 3 |"  # 82 >= 80 and 70 >= 70, not 85 < 90
    assert len(lines) == 4


def test_pooled_table_interval_brackets_the_pooled_accuracy(bench):
    lines = bench.pooled_table({1: [row("t", "ours", 50, 60)], 2: [row("t", "ours", 55, 60)]})
    pooled = lines[2].split(" | ")[4]
    low, high = (float(x.rstrip("%")) for x in pooled.split("[")[1].rstrip("]").split(", "))
    assert low < 87.5 < high  # 105 of 120
