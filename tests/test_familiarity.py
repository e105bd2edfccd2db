"""The unfamiliarity signal: its definition, its arithmetic shortcut, the gate's choice."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import QUESTIONS, STATEMENTS

from foundry.conformance_cases import HARD_CASES
from foundry.familiarity import (
    OPEN,
    Familiarity,
    counts,
    gate_for,
    gram_total,
    share,
    unfamiliarity,
)
from foundry.textspec import TextSpec, char_ngrams, normalize

SPECS = [TextSpec(), TextSpec(min_n=2, max_n=4, word_boundary_padding=False),
         TextSpec(min_n=1, max_n=1), TextSpec(max_chars=5), TextSpec(min_n=3, max_n=3),
         TextSpec(word_boundary_padding=False)]


def texts() -> list[str]:
    rng = random.Random(4)
    alphabet = "的是我你吗好 ab1？ \u3000\t"
    made = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    return [*QUESTIONS, *STATEMENTS, *HARD_CASES, "ab ", " ", "", "字" * 300 + " 吗", *made]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@pytest.mark.parametrize("min_order", [1, 2, 3])
def test_arithmetic_total_equals_counting_the_ngrams(spec, min_order):
    for text in texts():
        normalized = normalize(text, spec)
        grams = list(char_ngrams(normalized, spec))
        assert gram_total(normalized, spec, min_order) == sum(len(g) >= min_order for g in grams), \
            (text, spec, min_order)


def test_unfamiliarity_counts_repeats_and_skips_short_ngrams():
    vocabulary = {"吗", " 吗", "吗 ", "好吗", "好"}
    grams = ["好", "吗", " 好", "好吗", "吗 ", " 好吗", "好吗 ", "好吗"]
    total, known = counts(grams, vocabulary, 2)
    assert (total, known) == (6, 3)  # 好吗 twice, 吗 and 好 not counted
    assert unfamiliarity(grams, vocabulary, 2) == share(6, 3) == 0.5
    assert unfamiliarity([], vocabulary) == 0.0 and unfamiliarity(["好"], vocabulary, 2) == 0.0
    assert unfamiliarity(grams, set(), 1) == 1.0


def test_the_share_is_one_division_of_two_integers():
    # (total - known) / total is correctly rounded in every IEEE-754 language; 1 - known/total
    # is not always the same double.
    assert share(3, 1) == 2 / 3 and share(49, 2) == 47 / 49
    assert any(share(t, k) != 1 - k / t for t in range(1, 60) for k in range(t))


def test_gate_takes_an_observed_value_at_the_quantile():
    values = np.asarray([0.1, 0.2, 0.3, 0.4, 0.9])
    gate = gate_for(values, 0.75)
    assert gate == Familiarity(2, 0.4) and gate.max_unfamiliar in values
    assert gate_for(values, 0.95).max_unfamiliar == 0.9
    assert gate_for(values, 1.0).max_unfamiliar == OPEN == gate_for(np.zeros(0), 0.5).max_unfamiliar
    assert gate.admits(0.4) and not gate.admits(0.41)
