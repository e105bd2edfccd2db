"""Unfamiliarity: how much of a text the model has no weight for.

A linear model over L2-normalised TF-IDF features answers from the n-grams it knows; the
ones it does not know are simply dropped, so a text made mostly of unknown n-grams is judged
on the few it happens to know, with the same confidence as a text the model knows well (the
norm is taken over the known n-grams only). Real text from sources the training data never
covered shows this: commands full of names and digits, long knowledge-laden chat.

The **unfamiliarity** of a text is the share of its n-grams of at least ``min_order`` code
points (counted with repeats, exactly as step 6 of the text spec yields them) that are not
in the model's vocabulary::

    unfamiliar = (total - known) / total        (0 when total is 0)

computed as one division of two integers, so every language gets the same double. The
answer is confident only when ``unfamiliar <= max_unfamiliar`` (besides the probability
threshold); both settings travel in the ``.bin`` (``Familiarity``), see
``docs/preprocessor-spec.md`` section 5. Single characters are left out by default
(``min_order = 2``): nearly every Chinese character is known, so they would only water the
share down.

The evaluate stage sets ``max_unfamiliar`` to a quantile (``evaluate.familiarity_quantile``)
of the unfamiliarity of the real-text dev split (else the test split): texts less familiar
than nearly all real text the model was checked on are never answered confidently.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from foundry.textspec import HEAD_MARK, WORD_MARK

#: Default smallest n-gram length that counts.
MIN_ORDER = 2
#: ``max_unfamiliar`` of a gate that never closes.
OPEN = 1.0


@dataclass(frozen=True)
class Familiarity:
    """The unfamiliarity gate of the answer: ``unfamiliar <= max_unfamiliar``."""

    min_order: int = MIN_ORDER
    max_unfamiliar: float = OPEN

    def admits(self, unfamiliar: float) -> bool:
        return unfamiliar <= self.max_unfamiliar


#: The gate of a model exported without one: never shut.
NO_GATE = Familiarity()


def counts(grams: Iterable[str], vocabulary: Container[str],
           min_order: int = MIN_ORDER) -> tuple[int, int]:
    """``(total, known)``: character n-grams of at least ``min_order`` code points, and those
    of them in ``vocabulary`` (with repeats). Word and head n-grams (steps 6b, 6c) do not count."""
    total = known = 0
    for gram in grams:
        if len(gram) >= min_order and not gram.startswith((WORD_MARK, HEAD_MARK)):
            total += 1
            known += gram in vocabulary
    return total, known


def share(total: int, known: int) -> float:
    """The unfamiliarity of a text with ``total`` counted n-grams, ``known`` of them known."""
    return (total - known) / total if total else 0.0


def unfamiliarity(grams: Iterable[str], vocabulary: Container[str],
                  min_order: int = MIN_ORDER) -> float:
    """The unfamiliarity of one text's n-grams (the reference definition)."""
    return share(*counts(grams, vocabulary, min_order))


def gram_total(normalized: str, spec, min_order: int = MIN_ORDER) -> int:
    """How many n-grams of at least ``min_order`` code points step 6 of the text spec yields
    for a normalised text (``spec``: a :class:`foundry.textspec.TextSpec`), by arithmetic:
    a unit of ``L`` code points has ``L - n + 1`` n-grams of order ``n <= L``."""
    if not normalized:
        return 0
    low, high = max(min_order, spec.min_n), spec.max_n
    if low > high:
        return 0
    padded = spec.word_boundary_padding
    units = [len(w) + 2 for w in normalized.split(" ")] if padded else [len(normalized)]
    total = sum(length - n + 1 for length in units for n in range(low, min(high, length) + 1))
    if low == 1:  # the one-code-point n-gram " " is never yielded
        total -= 2 * len(units) if padded else normalized.count(" ")
    return total


def unfamiliarity_many(texts: Sequence[str], analyzer, vocabulary: Container[str],
                       min_order: int = MIN_ORDER) -> np.ndarray:
    """Unfamiliarity of each text; ``analyzer`` maps a text to its n-grams (text spec 1-6)."""
    return np.asarray([unfamiliarity(analyzer(t), vocabulary, min_order) for t in texts],
                      dtype=np.float64)


def gate_for(unfamiliar: np.ndarray, quantile: float, min_order: int = MIN_ORDER) -> Familiarity:
    """The gate that admits the ``quantile`` share of texts with the given unfamiliarity.

    ``max_unfamiliar`` is one of the observed values (the smallest at or above the quantile),
    so the comparison in every runtime lands on the same side for it. A quantile of 1 (or no
    texts) gives a gate that never closes.
    """
    if quantile >= 1.0 or len(unfamiliar) == 0:
        return Familiarity(min_order, OPEN)
    value = float(np.quantile(np.asarray(unfamiliar, dtype=np.float64), quantile,
                              method="higher"))
    return Familiarity(min_order, value)
