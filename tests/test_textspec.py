import pickle

import pytest

from foundry.textspec import (
    CLAUSE_MARKS,
    HEAD_MARK,
    WHITESPACE,
    WORD_MARK,
    Analyzer,
    TextSpec,
    char_ngrams,
    display_term,
    head_ngrams,
    is_head_gram,
    is_word_gram,
    normalize,
    word_ngrams,
)


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


def test_word_ngrams_follow_the_spec_examples():
    spec = TextSpec(word_max_n=2)
    assert list(word_ngrams("play some jazz", spec)) == [
        "\x01play", "\x01some", "\x01jazz", "\x01play some", "\x01some jazz"]
    assert list(word_ngrams("打开 客厅的灯", spec)) == ["\x01打开", "\x01客厅的灯", "\x01打开 客厅的灯"]
    assert list(word_ngrams("吗", spec)) == ["\x01吗"]
    # a truncated text's empty last piece is not a word; no words without word_max_n
    assert list(word_ngrams("ab ", spec)) == ["\x01ab"]
    assert list(word_ngrams("ab cd", TextSpec())) == []
    assert list(word_ngrams("", spec)) == []


def _heads(text: str, spec: TextSpec) -> list[str]:
    return [g.replace(HEAD_MARK, "^") for g in head_ngrams(normalize(text, spec), spec)]


def test_head_ngrams_follow_the_spec_examples():
    spec = TextSpec(head_chars=3)
    assert _heads("行吧，不过先备份", spec) == ["^行", "^吧", "^ 行", "^行吧", "^ 行吧"]
    assert _heads("...是...我算错了", spec) == ["^是", "^ 是"]
    assert _heads("好的好的", spec) == ["^好", "^的", "^好", "^ 好", "^好的", "^的好", "^ 好的",
                                       "^好的好"]
    assert _heads("ok sure", spec) == ["^o", "^k", "^ o", "^ok", "^ ok"]
    assert _heads("？！", spec) == [] and _heads("", spec) == []
    assert _heads("好的好的", TextSpec()) == []  # head_chars 0 takes none


def test_every_clause_mark_ends_the_head_and_full_width_ones_arrive_as_ascii():
    spec = TextSpec(min_n=1, max_n=1, head_chars=8)
    assert frozenset(" ,.!?;~\u3002\u3001") == CLAUSE_MARKS
    for mark in (*CLAUSE_MARKS, "，", "！", "？", "；", "～", "…"):
        assert _heads(f"{mark}{mark}好{mark}坏", spec) == ["^好"], mark
    assert _heads("好:坏-行", spec) == ["^好", "^:", "^坏", "^-", "^行"]  # not clause marks


def test_head_ngrams_come_last_and_show_with_a_caret():
    spec = TextSpec(min_n=1, max_n=2, word_max_n=1, head_chars=2)
    grams = Analyzer(spec)("AB c")
    assert grams == [*char_ngrams("ab c", spec), "\x01ab", "\x01c", "\x02a", "\x02b",
                     "\x02 a", "\x02ab"]
    assert is_head_gram("\x02ab") and not is_word_gram("\x02ab")
    assert display_term("\x02 ab") == "^ ab"


@pytest.mark.parametrize("head_chars", [-1, 17])
def test_head_chars_outside_0_to_16_is_refused(head_chars: int):
    with pytest.raises(ValueError, match="head_chars"):
        TextSpec(head_chars=head_chars)


def test_analyzer_takes_characters_then_words():
    spec = TextSpec(min_n=1, max_n=2, word_max_n=1)
    assert Analyzer(spec)("AB c") == [*char_ngrams("ab c", spec), "\x01ab", "\x01c"]
    assert Analyzer(TextSpec(max_n=2))("AB c") == list(char_ngrams("ab c", TextSpec(max_n=2)))


def test_a_word_ngram_never_equals_a_character_ngram():
    # the mark is a control character: normalisation removes it from every text
    spec = TextSpec(min_n=1, max_n=8, word_max_n=3)
    text = normalize(f"{WORD_MARK}ab {WORD_MARK}cd", spec)
    assert WORD_MARK not in text
    chars, words = set(char_ngrams(text, spec)), set(word_ngrams(text, spec))
    assert words and not chars & words
    assert all(is_word_gram(w) for w in words) and not any(map(is_word_gram, chars))
    assert display_term("\x01play music") == "⟨play music⟩" and display_term("ab") == "ab"


def test_word_max_n_is_bounded():
    with pytest.raises(ValueError, match="word_max_n"):
        TextSpec(word_max_n=4)
    with pytest.raises(ValueError, match="word_max_n"):
        TextSpec(word_max_n=-1)


def test_analyzer_is_picklable_and_equal():
    a = Analyzer(TextSpec(max_n=2))
    b = pickle.loads(pickle.dumps(a))
    assert a == b and a("吗？") == b("吗？")


def test_bad_spec_and_bad_input():
    with pytest.raises(ValueError, match="min_n"):
        TextSpec(min_n=3, max_n=2)
    with pytest.raises(TypeError, match="str"):
        normalize(None)  # type: ignore[arg-type]
