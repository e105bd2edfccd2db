"""Steps 1-6 of the text spec, fast and exact: :func:`fast_normalize`,
:func:`normalize_many` (one ``str.translate`` through a per-code-point table, the
reference :func:`foundry.textspec.normalize` for context-dependent texts) and
:class:`NgramSlicer` / :func:`ngram_list` (the n-grams of a normalised text)."""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from foundry.textspec import (
    REMOVED_CATEGORIES,
    WHITESPACE,
    TextSpec,
    collapse_spaces,
    head_ngrams,
    normalize,
    word_ngrams,
)

try:  # the C helper behind Counter.update, without Counter's per-call overhead
    from collections import _count_elements
except ImportError:  # pragma: no cover - other Python implementations
    def _count_elements(mapping: dict, iterable: Iterable) -> None:
        for elem in iterable:
            mapping[elem] = mapping.get(elem, 0) + 1


# -- fast, exact normaliser ---------------------------------------------------------------

#: Marks, in a translated text, a code point whose NFKC form may depend on its neighbours
#: (or that lowercases by context). U+10FFFF is a noncharacter; it maps to itself as unsafe,
#: so its presence in the input also sends the text down the reference path.
_UNSAFE = "\U0010ffff"
_COMBINING_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
#: Hangul conjoining jamo: vowel and trailing jamo compose with a preceding syllable.
_JAMO = range(0x1100, 0x1200)
_CAPITAL_SIGMA = "\u03a3"  # lowercases to σ or ς depending on context (Final_Sigma)


def _starts_stable(decomposed: str) -> bool:
    """True if ``decomposed`` starts with a starter that can never be a composition's 2nd part.

    Canonical reordering never moves a character across a starter, and composition joins
    a starter only with a following character that is a possible second element of a
    primary composite: a combining mark (ccc > 0 or category M*) or a Hangul vowel /
    trailing jamo. So when every character's decomposition starts with a starter that is
    none of these, NFKC works character by character. ``tests/test_runtime_backends.py``
    checks this claim against the whole Unicode database of the running Python.
    """
    first = decomposed[0]
    return (
        unicodedata.combining(first) == 0
        and unicodedata.category(first) not in _COMBINING_CATEGORIES
        and ord(first) not in _JAMO
    )


class _CharTable(dict):
    """``str.translate`` table: code point -> steps 1-4 of the text spec applied to it alone.

    Filled lazily (``__missing__``), so loading costs nothing and the table only holds
    characters actually seen, at most :attr:`limit` of them (beyond, results are computed
    each time: a stream of rare characters cannot grow memory without bound). Characters
    whose result may depend on context map to :data:`_UNSAFE`.
    """

    limit = 1 << 16

    def __init__(self, lowercase: bool) -> None:
        super().__init__()
        self.lowercase = lowercase

    def __missing__(self, code_point: int) -> str:
        char = chr(code_point)
        nfkc = unicodedata.normalize("NFKC", char)
        if (
            char == _UNSAFE
            or _CAPITAL_SIGMA in nfkc
            or not _starts_stable(unicodedata.normalize("NFKD", char))
        ):
            result = _UNSAFE
        else:
            if self.lowercase:
                nfkc = nfkc.lower()
            result = "".join(
                " " if ch in WHITESPACE
                else "" if unicodedata.category(ch) in REMOVED_CATEGORIES
                else ch
                for ch in nfkc
            )
        if len(self) < self.limit:
            self[code_point] = result
        return result


DEFAULT_SPEC = TextSpec()
_CHAR_TABLES = {True: _CharTable(lowercase=True), False: _CharTable(lowercase=False)}


def fast_normalize(text: str, spec: TextSpec = DEFAULT_SPEC) -> str:
    """Exactly :func:`foundry.textspec.normalize`, about three times faster.

    Steps 1-4 are one ``str.translate`` through a per-character table; a text containing a
    character whose normal form depends on its neighbours (combining marks, Hangul jamo,
    capital sigma) takes the reference path instead.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    out = text.translate(_CHAR_TABLES[spec.lowercase])
    if _UNSAFE in out:
        return normalize(text, spec)
    # Step 4's collapse and strip; the common text has no run of spaces and no edge space.
    return _collapse(out)[: spec.max_chars]


#: Joins texts for :func:`normalize_many`: a private-use character, which every step of
#: the text spec leaves alone and which neither composes nor lowercases with a neighbour.
_JOIN = "\ue000"


def _collapse(text: str) -> str:
    """Step 4's collapse of space runs and strip of both ends."""
    if "  " in text or text.startswith(" ") or text.endswith(" "):
        return collapse_spaces(text)
    return text


def normalize_many(texts: Sequence[str], spec: TextSpec = DEFAULT_SPEC) -> list[str]:
    """``[fast_normalize(t, spec) for t in texts]`` with one ``str.translate`` for all texts."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
    joined = _JOIN.join(texts)
    if joined.count(_JOIN) != len(texts) - 1:  # a text contains the joiner itself
        return [fast_normalize(t, spec) for t in texts]
    out = joined.translate(_CHAR_TABLES[spec.lowercase])
    pieces = out.split(_JOIN)
    unsafe = [i for i, piece in enumerate(pieces) if _UNSAFE in piece] if _UNSAFE in out else []
    if "  " in out or " " + _JOIN in out or _JOIN + " " in out or out[:1] == " " or out[-1:] == " ":
        pieces = list(map(_collapse, pieces))
    if max(map(len, pieces), default=0) > spec.max_chars:
        pieces = [p[: spec.max_chars] for p in pieces]
    for i in unsafe:  # after collapse and truncation, which must not touch these
        pieces[i] = normalize(texts[i], spec)
    return pieces


class NgramSlicer:
    """Step 6 of the text spec for one :class:`TextSpec`: normalised text -> its n-grams.

    The n-grams of a unit of length ``L`` are taken by one ``operator.itemgetter`` over
    precomputed slices (one C call instead of a comprehension per order), cached per ``L``.
    The result has the multiset of :func:`foundry.textspec.ngrams` (character n-grams, then
    any word n-grams), grouped differently, which no consumer depends on: the features are
    counts.
    """

    def __init__(self, spec: TextSpec) -> None:
        self.spec = spec
        self._getters: dict[int, Any] = {}

    def _getter(self, length: int):
        spec = self.spec
        # With padding, the first and last characters of a unit are the padding spaces,
        # never a unigram; without padding, unigrams are taken apart (minus " ").
        first, last = (1, length - 1) if spec.word_boundary_padding else (0, 0)
        slices = [slice(i, i + 1) for i in range(first, last)] if spec.min_n == 1 else []
        for n in range(max(2, spec.min_n), spec.max_n + 1):
            slices += [slice(i, i + n) for i in range(length - n + 1)]
        if len(slices) > 1:
            getter = operator.itemgetter(*slices)
        elif slices:
            only = slices[0]
            getter = lambda unit: (unit[only],)  # noqa: E731 - itemgetter(x) is not a tuple
        else:
            getter = lambda unit: ()  # noqa: E731
        self._getters[length] = getter
        return getter

    def __call__(self, normalized: str) -> tuple[str, ...] | list[str]:
        grams = self.char_grams(normalized)
        if (self.spec.word_max_n or self.spec.head_chars) and normalized:
            return [*grams, *word_ngrams(normalized, self.spec), *head_ngrams(normalized, self.spec)]
        return grams

    def char_grams(self, normalized: str) -> tuple[str, ...] | list[str]:
        """The character n-grams of step 6 alone (no word n-grams of step 6b)."""
        if not normalized:
            return ()
        getters = self._getters
        if not self.spec.word_boundary_padding:
            length = len(normalized)
            grams = (getters.get(length) or self._getter(length))(normalized)
            if self.spec.min_n == 1:
                grams = (*normalized.replace(" ", ""), *grams)
            return grams
        if " " not in normalized:
            length = len(normalized) + 2
            return (getters.get(length) or self._getter(length))(f" {normalized} ")
        grams: list[str] = []
        for word in normalized.split(" "):
            length = len(word) + 2
            grams += (getters.get(length) or self._getter(length))(f" {word} ")
        return grams


_SLICERS: dict[TextSpec, NgramSlicer] = {}


def ngram_list(normalized: str, spec: TextSpec = DEFAULT_SPEC) -> tuple[str, ...] | list[str]:
    """The terms of a normalised text: the multiset of :func:`textspec.ngrams`."""
    slicer = _SLICERS.get(spec) or _SLICERS.setdefault(spec, NgramSlicer(spec))
    return slicer(normalized)
