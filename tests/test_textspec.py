import pickle

import pytest

from foundry.textspec import WHITESPACE, Analyzer, TextSpec, char_ngrams, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("今天天气怎么样？", "今天天气怎么样?"),  # NFKC folds full-width punctuation
        ("ＡＢＣ１２３", "abc123"),  # full-width Latin and digits
        ("  a\t\nb\u3000c  ", "a b c"),  # whitespace list, collapse, strip
        ("a\u200db\u200bc\ufeffd", "abcd"),  # format characters removed
        ("x\x00y\x7fz", "xyz"),  # control characters removed
        ("ΟΔΟΣ", "οδος"),  # final sigma by full lowercasing
        ("", ""),
        ("\u00a0\u2003", ""),  # only whitespace
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_every_whitespace_code_point_becomes_one_space():
    for ch in WHITESPACE:
        assert normalize(f"a{ch}{ch}b") == "a b", hex(ord(ch))


def test_truncation_counts_code_points():
    spec = TextSpec(max_chars=3)
    assert normalize("😀😀😀😀", spec) == "😀😀😀"
    assert normalize("abcdef", spec) == "abc"


def test_ngrams_padded_per_word_and_no_lone_space():
    spec = TextSpec(min_n=1, max_n=2)
    grams = list(char_ngrams("ab c", spec))
    assert grams == ["a", "b", " a", "ab", "b ", "c", " c", "c "]
    assert " " not in grams


def test_ngrams_unpadded_whole_text():
    spec = TextSpec(min_n=2, max_n=3, word_boundary_padding=False)
    assert list(char_ngrams("abcd", spec)) == ["ab", "bc", "cd", "abc", "bcd"]


def test_short_word_skips_longer_orders():
    assert list(char_ngrams("a", TextSpec(min_n=1, max_n=5))) == ["a", " a", "a ", " a "]


def test_analyzer_is_picklable_and_equal():
    a = Analyzer(TextSpec(max_n=2))
    b = pickle.loads(pickle.dumps(a))
    assert a == b and a("吗？") == b("吗？")


def test_bad_spec_and_bad_input():
    with pytest.raises(ValueError, match="min_n"):
        TextSpec(min_n=3, max_n=2)
    with pytest.raises(TypeError, match="str"):
        normalize(None)  # type: ignore[arg-type]
