"""The text spec (v1): one normaliser and one n-gram analyzer.

The trainer passes :class:`Analyzer` to scikit-learn's ``TfidfVectorizer`` as its
``analyzer`` callable, and every runtime re-implements the very same steps (see
``docs/preprocessor-spec.md``). Nothing here may depend on the platform or the locale:
whitespace is an explicit code-point list, never ``str.split()``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass

SPEC_VERSION = 1

#: Code points that become a single space (step 4). Explicit, so that Python, JavaScript
#: and Rust agree; each language's own notion of whitespace differs.
WHITESPACE: frozenset[str] = frozenset(
    chr(cp)
    for cp in (
        *range(0x0009, 0x000E),  # TAB, LF, VT, FF, CR
        0x0020,  # SPACE
        0x0085,  # NEXT LINE
        0x00A0,  # NO-BREAK SPACE
        0x1680,  # OGHAM SPACE MARK
        *range(0x2000, 0x200B),  # EN QUAD .. HAIR SPACE
        0x2028,  # LINE SEPARATOR
        0x2029,  # PARAGRAPH SEPARATOR
        0x202F,  # NARROW NO-BREAK SPACE
        0x205F,  # MEDIUM MATHEMATICAL SPACE
        0x3000,  # IDEOGRAPHIC SPACE
    )
)

#: The first code point of every word n-gram (step 6b). Step 3 removes it from every text, so
#: a word n-gram can never equal a character n-gram.
WORD_MARK = "\x01"

#: The first code point of every head n-gram (step 6c); like :data:`WORD_MARK`, step 3 removes
#: it from every text.
HEAD_MARK = "\x02"

#: The code points that end a text's first clause (step 6c), as they are after step 1's NFKC
#: (which maps the full-width ，！？；～ and … onto the ASCII ones).
CLAUSE_MARKS: frozenset[str] = frozenset(" ,.!?;~\u3002\u3001")

#: The longest head a runtime accepts (rule B8).
MAX_HEAD_CHARS = 16

#: The largest word n-gram order a runtime accepts.
MAX_WORD_N = 3

#: General categories removed in step 3 (after the whitespace code points are spared).
REMOVED_CATEGORIES: frozenset[str] = frozenset({"Cc", "Cf", "Cs"})

#: The Unicode version of this Python's ``unicodedata``; recorded in every ``.bin``.
UNICODE_VERSION: str = unicodedata.unidata_version


@dataclass(frozen=True)
class TextSpec:
    """Settings of the normaliser and the analyzer.

    Parameters
    ----------
    max_chars : int
        Normalised text is truncated to this many code points (step 5).
    min_n, max_n : int
        Character n-gram orders, inclusive (step 6).
    word_boundary_padding : bool
        If True, n-grams are taken per space-separated word padded with one space on
        each side (so ``吗 `` marks a sentence-final ``吗``); otherwise over the whole text.
    lowercase : bool
        Apply full Unicode default lowercasing (step 2).
    word_max_n : int
        Word n-grams of orders 1..word_max_n are added to the character n-grams (step 6b);
        0 (the default) adds none. Words are the space-separated pieces of the normalised
        text, so this helps languages written with spaces (English), not Chinese.
    head_chars : int
        The n-grams of the first ``head_chars`` code points of the text's first clause are
        added again, marked (step 6c), so that a model can weigh a reply's opening on its
        own; 0 (the default) adds none.
    """

    max_chars: int = 256
    min_n: int = 1
    max_n: int = 3
    word_boundary_padding: bool = True
    lowercase: bool = True
    word_max_n: int = 0
    head_chars: int = 0

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {self.max_chars}")
        if not 1 <= self.min_n <= self.max_n:
            raise ValueError(
                f"need 1 <= min_n <= max_n, got min_n={self.min_n}, max_n={self.max_n}"
            )
        if not 0 <= self.word_max_n <= MAX_WORD_N:
            raise ValueError(f"word_max_n must be in 0..{MAX_WORD_N}, got {self.word_max_n}")
        if not 0 <= self.head_chars <= MAX_HEAD_CHARS:
            raise ValueError(f"head_chars must be in 0..{MAX_HEAD_CHARS}, got {self.head_chars}")

    def to_dict(self) -> dict:
        return asdict(self)


def _clean_char(ch: str) -> str:
    """Step 3 and 4 for one code point: whitespace -> ' ', Cc/Cf/Cs -> '', else itself."""
    if ch in WHITESPACE:
        return " "
    if unicodedata.category(ch) in REMOVED_CATEGORIES:
        return ""
    return ch


#: From this length on, steps 3-4 work in slices and by regular expression: a very long input
#: line must cost memory linear in its length, not an object per character.
LONG_TEXT = 1 << 16
_SPACE_RUNS = re.compile(" {2,}")


def _clean(text: str) -> str:
    """Steps 3 and 4 (remove, map to U+0020) for every code point of ``text``."""
    if len(text) < LONG_TEXT:
        return "".join(_clean_char(ch) for ch in text)
    return "".join("".join(_clean_char(ch) for ch in text[i : i + LONG_TEXT])
                   for i in range(0, len(text), LONG_TEXT))


def collapse_spaces(text: str) -> str:
    """Step 4's collapse: runs of U+0020 become one, both ends are stripped (U+0020 only)."""
    if len(text) < LONG_TEXT:
        return " ".join(part for part in text.split(" ") if part)
    return _SPACE_RUNS.sub(" ", text).strip(" ")


def normalize(text: str, spec: TextSpec = TextSpec()) -> str:
    """Normalise ``text`` by steps 1-5 of the text spec.

    1. Unicode NFKC; 2. full default lowercasing; 3. drop control, format and surrogate
    code points (except the whitespace list); 4. map the whitespace list to U+0020,
    collapse runs, strip both ends; 5. truncate to ``spec.max_chars`` code points.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text)
    if spec.lowercase:
        text = text.lower()
    if text.isascii():
        # Fast path: in ASCII only 0x00-0x1F and 0x7F are removable or whitespace.
        if not text.isprintable():
            text = _clean(text)
    else:
        text = _clean(text)
    return collapse_spaces(text)[: spec.max_chars]


def char_ngrams(normalized: str, spec: TextSpec = TextSpec()) -> Iterator[str]:
    """Yield the character n-grams of an already normalised text (step 6), in order.

    With ``word_boundary_padding``, each space-separated word ``w`` becomes ``" " + w + " "``
    and yields every n-gram of that padded word for n = min_n..max_n, skipping orders longer
    than the padded word. Without it, the n-grams of the whole text are yielded. The
    one-character n-gram ``" "`` carries no information and is never yielded.
    """
    if not normalized:
        return
    units = [f" {w} " for w in normalized.split(" ")] if spec.word_boundary_padding else [
        normalized
    ]
    for unit in units:
        yield from unit_ngrams(unit, spec)


def unit_ngrams(unit: str, spec: TextSpec, mark: str = "") -> Iterator[str]:
    """Yield ``mark`` + every n-gram of one unit for n = min_n..max_n (orders longer than the
    unit skipped), except the one-code-point ``" "``: steps 6 and 6c alike."""
    length = len(unit)
    for n in range(spec.min_n, min(spec.max_n, length) + 1):
        for i in range(length - n + 1):
            gram = unit[i : i + n]
            if gram != " ":
                yield mark + gram


def word_ngrams(normalized: str, spec: TextSpec = TextSpec()) -> Iterator[str]:
    """Yield the word n-grams of an already normalised text (step 6b), in order.

    The words are the non-empty pieces of the text split on U+0020; for n = 1..word_max_n,
    each run of n consecutive words yields :data:`WORD_MARK` followed by the words joined by
    one U+0020 (``"\\x01play music"``).
    """
    for run in word_runs(normalized, 1, spec.word_max_n):
        yield WORD_MARK + run


def word_runs(normalized: str, low: int, high: int) -> Iterator[str]:
    """Yield the runs of ``low``..``high`` consecutive words of a normalised text joined by
    one U+0020, in the order of :func:`word_ngrams` (which marks each one); the words are
    the non-empty pieces of the text split on U+0020."""
    if high < low or not normalized:
        return
    words = [w for w in normalized.split(" ") if w]
    for n in range(low, min(high, len(words)) + 1):
        for i in range(len(words) - n + 1):
            yield " ".join(words[i : i + n])


def head_ngrams(normalized: str, spec: TextSpec = TextSpec()) -> Iterator[str]:
    """Yield the head n-grams of an already normalised text (step 6c), in order.

    The head is the text's first clause without the :data:`CLAUSE_MARKS` before it, cut to
    ``head_chars`` code points; its unit ``" " + head`` yields every n-gram for n =
    min_n..max_n, each after :data:`HEAD_MARK`, except the one-code-point ``" "``. Nothing
    when ``head_chars`` is 0 or the text holds clause marks only.
    """
    if not spec.head_chars:
        return
    start, end = 0, len(normalized)
    while start < end and normalized[start] in CLAUSE_MARKS:
        start += 1
    stop = start
    while stop < end and stop - start < spec.head_chars and normalized[stop] not in CLAUSE_MARKS:
        stop += 1
    if stop == start:
        return
    yield from unit_ngrams(" " + normalized[start:stop], spec, HEAD_MARK)


def is_word_gram(term: str) -> bool:
    """True for a word n-gram (step 6b), False for a character n-gram (step 6)."""
    return term.startswith(WORD_MARK)


def is_head_gram(term: str) -> bool:
    """True for a head n-gram (step 6c)."""
    return term.startswith(HEAD_MARK)


def display_term(term: str) -> str:
    """A term as a person reads it: a word n-gram shows as ``⟨play music⟩``, a head n-gram
    as ``^ 行吧`` (``^`` for the mark; the space is the head's left edge)."""
    if is_word_gram(term):
        return f"⟨{term[1:]}⟩"
    return f"^{term[1:]}" if is_head_gram(term) else term


def ngrams(normalized: str, spec: TextSpec = TextSpec()) -> list[str]:
    """Every term of step 6: the character n-grams, then the word n-grams (6b), then the head
    n-grams (6c)."""
    return [*char_ngrams(normalized, spec), *word_ngrams(normalized, spec),
            *head_ngrams(normalized, spec)]


class Analyzer:
    """Picklable ``analyzer`` callable for scikit-learn vectorizers: text -> n-gram list."""

    def __init__(self, spec: TextSpec = TextSpec()) -> None:
        self.spec = spec

    def __call__(self, text: str) -> list[str]:
        return ngrams(normalize(text, self.spec), self.spec)

    def __repr__(self) -> str:
        return f"Analyzer({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Analyzer) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)
