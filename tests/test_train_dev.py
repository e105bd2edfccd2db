"""Tests of foundry/train_dev.py: the refit on train + dev stays inside the size budget."""

from __future__ import annotations

import numpy as np
import pytest

from foundry.train_dev import refit_within_budget

RANKED = [f"t{i:03d}" for i in range(100)]  # the training model's columns, best first


def _refit_and_measure(bytes_per_term: int, learnt_terms: int):
    """A refit whose artifacts take ``bytes_per_term`` per vocabulary term (``learnt_terms``
    terms when the vocabulary is learnt), and the meter of those sizes."""
    calls: list[list[str] | None] = []

    def refit(vocab, max_weights):
        assert max_weights is None
        calls.append(vocab)
        return {"terms": learnt_terms if vocab is None else len(vocab)}, 1.5, np.zeros((2, 2))

    def measure(pipe):
        return pipe["terms"] * bytes_per_term, 100, "source"

    return refit, measure, calls


def test_a_refit_inside_the_budget_keeps_its_vocabulary():
    refit, measure, calls = _refit_and_measure(10, 0)
    vocab = sorted(RANKED[:50])
    result, temperature, _ = refit_within_budget(refit, vocab, RANKED, measure, 600, log=print)
    assert calls == [vocab] and result.vocabulary == vocab and result.size == 600
    assert temperature == 1.5


def test_an_oversize_refit_is_refitted_on_the_best_ranked_terms():
    # 16 bytes over, as the refit of a pruned vocabulary can be: a few of the worst terms go
    refit, measure, calls = _refit_and_measure(10, 0)
    logged: list[str] = []
    result, _, _ = refit_within_budget(refit, sorted(RANKED[:60]), RANKED, measure, 684,
                                       log=logged.append)
    assert result.size <= 684 and len(calls) == 2
    assert result.vocabulary == sorted(RANKED[:len(result.vocabulary)])
    assert len(result.vocabulary) == 58
    assert "over the 684-byte budget" in logged[0]


def test_a_learnt_vocabulary_that_grows_past_the_budget_is_cut_to_the_training_columns():
    refit, measure, calls = _refit_and_measure(10, 130)  # dev rows add 30 new n-grams
    result, _, _ = refit_within_budget(refit, None, RANKED, measure, 1100, log=print)
    assert calls[0] is None and result.size <= 1100
    assert set(result.vocabulary) <= set(RANKED)


def test_an_unreachable_budget_names_the_setting():
    refit, measure, _ = _refit_and_measure(10, 0)
    with pytest.raises(ValueError, match=r"refit_on_dev: .*export\.size_budget_kb .*raise the"):
        refit_within_budget(refit, sorted(RANKED[:10]), RANKED, measure, 50, log=print,
                            max_rounds=2)


def test_an_oversize_sparse_refit_keeps_its_vocabulary_and_fewer_weights():
    # sparse weights: the .onnx takes 2 bytes a kept weight (+ 50 of its own), the vocabulary
    # stays; the refit lands 3 weights over what the training rows' model was thinned to
    from sklearn.pipeline import Pipeline

    from foundry.quantized import Int8Linear, stored_weight_bytes

    calls: list[tuple[list[str] | None, int | None]] = []

    def refit(vocab, max_weights):
        calls.append((vocab, max_weights))
        clf = Int8Linear()
        clf.w_q_ = np.zeros((3, 400), dtype=np.int8)
        clf.w_q_.ravel()[: max_weights + 3] = 1
        return Pipeline([("clf", clf)]), 1.5, np.zeros((2, 2))

    def measure(pipe):
        return stored_weight_bytes(pipe.named_steps["clf"]) + 50, 100, "source"

    vocab = sorted(RANKED[:50])
    logged: list[str] = []
    result, _, _ = refit_within_budget(refit, vocab, RANKED, measure, 350, log=logged.append,
                                       max_weights=100)
    assert result.size <= 350 and result.vocabulary == vocab
    assert [c[0] for c in calls] == [vocab] * len(calls) and len(calls) == 2
    assert result.max_weights == calls[-1][1] < 100
    assert result.size > 350 * 0.97  # rescaled to the room the weights have, not far under
    assert "refitting with" in logged[0]
