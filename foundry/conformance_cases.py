"""Hard-case inputs embedded in every ``<task>_conformance.json``, and the Unicode-version rule.

The export runs :data:`HARD_CASES` (plus realistic texts from the task's own data) through
the scikit-learn pipeline and records the expected normalised text, features, probabilities
and label, so that any runtime in any language is checked on the inputs where
implementations usually drift apart: whitespace that is not U+0020, control and format
characters, combining marks, compatibility (full-width) forms, emoji sequences, the special
casings (Turkish dotted I, Greek final sigma), the truncation border, the clause marks that
bound a head n-gram's head, and the empty text.

:func:`is_version_sensitive` is the precise rule of docs/preprocessor-spec.md ("Unicode
versions") for texts whose normal form may legitimately differ between a runtime built on
another Unicode version than the trainer's; such texts are never put in :data:`HARD_CASES`.
"""

from __future__ import annotations

import unicodedata

from foundry.reflex import Reflex
from foundry.textspec import WHITESPACE

#: Assigned (in Unicode 14.0) code points whose Cased / Case_Ignorable properties changed by
#: Unicode 17.0, so that a neighbouring capital sigma lowercases to final "ς" under one version
#: and to "σ" under the other: U+0295 ʕ (Ll -> Lo in 16.0, no longer cased), U+02E4 ˤ (NFKC
#: -> U+0295), U+1171E AHOM CONSONANT SIGN MEDIAL RA (Mn -> Mc in 15.0, no longer
#: case-ignorable). Found by the exhaustive sweep in tests/test_fuzz_differential.py.
CASE_CONTEXT_CHANGED: frozenset[str] = frozenset({"\u0295", "\u02e4", "\U0001171e"})

#: Inputs on which Python (Unicode 14.0) and Node 20 (Unicode 17.0) legitimately disagree.
#: Documented, and kept out of the conformance vectors on purpose.
VERSION_SENSITIVE_EXAMPLES: list[str] = [
    "a\U0001171e\u03a3",  # Python: "a𑜞ς", Unicode 17: "a𑜞σ"
    "\u0295\u03a3",  # Python: "ʕς", Unicode 17: "ʕσ"
    "a\u03a3\u02e4",  # Python: "aσʕ", Unicode 17: "aςʕ"
    "\U0001fae8",  # SHAKING FACE: unassigned (Cn) in 14.0, an emoji (So) since 15.0
]


def is_version_sensitive(text: str) -> bool:
    """True if ``text`` may normalise differently under another Unicode version.

    The rule: ``text`` contains a code point unassigned in this Python's Unicode version
    (general category ``Cn``), or its NFKC form contains U+03A3 GREEK CAPITAL LETTER SIGMA
    and ``text`` contains one of :data:`CASE_CONTEXT_CHANGED`.
    """
    if any(unicodedata.category(ch) == "Cn" for ch in text):
        return True
    return any(ch in CASE_CONTEXT_CHANGED for ch in text) and "\u03a3" in unicodedata.normalize(
        "NFKC", text
    )


def _whitespace_cases() -> list[str]:
    each = [f"今天{ch}天气 怎么样{ch}{ch}？" for ch in sorted(WHITESPACE)]
    all_at_once = "".join(sorted(WHITESPACE))
    return [*each, f"{all_at_once}吗{all_at_once}", all_at_once, " \u3000\t\n"]


_CONTROL_AND_FORMAT = [
    "\x00\x01你\x07好\x1b[0m\x7f吗\x85?\x9f",
    "打开\u200b客厅\u200c的\u200d灯\ufeff",
    "\u202e右到左\u202c 文本\u2066隔离\u2069",
    "soft\u00adhyphen 软\u00ad连字符",
    "\u2060word\u2061joiner\u2062\u2063\u2064",
    "\u061c阿拉伯字母标记 \u180e蒙古文",
    "\U000e0001\U000e0065\U000e006e\U000e007f标签字符",
    "\ue000\U000f0000 私用区",
]

_COMBINING_MARKS = [
    "cafe\u0301 café",
    "a\u0300\u0301\u0302\u0303\u0304 z\u0335\u0321\u0322",
    "か\u3099き\u3099 ﾊﾟ ﾊﾞ",
    "\u0301开头的组合符",
    "\u1100\u1161\u11a8 한국어 \u1112\u1161\u11ab",
    "q\u0307\u0323 \u1e0b\u0323",
]

_FULL_WIDTH = [
    "ＡＢＣ１２３？！",
    "（全角括号）【方括号】《书名号》",
    "ｶﾀｶﾅ ﾃｽﾄ",
    "ｈｔｔｐｓ：／／ｅｘａｍｐｌｅ．ｃｏｍ",
    "￥１００ ￡ ￠ ￢ ￤",
    "　全角空格　",
]

_EMOJI = [
    "👨\u200d👩\u200d👧\u200d👦 一家人",
    "👍🏽👍🏿 好的",
    "🇨🇳🇺🇸 国旗",
    "❤️ ❤\ufe0e 爱",
    "1️⃣ #️⃣ 键帽",
    "🏳️\u200d🌈 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "😀" * 300,
]

_CASING = [
    "İSTANBUL İstanbul ıi Iİ",
    "DİYARBAKIR'DA",
    "ΟΔΥΣΣΕΥΣ",
    "ΣΑΣ Σ ΑΣ. ΑΣ1 Α.Σ",
    "ὈΔΥΣΣΕΎΣ ᾼ ᾈ ͅ",
    "STRASSE ẞ ß",
    "ﬁﬂﬀ Ǆǅǆ Ǳ",
    "K Å Ω ℌ ℂ",
]

_COMPATIBILITY = [
    "㍿ ㎏ ㎡ ① ⑳ Ⅻ ½ ℃ ™ №",
    "ﾞﾟ ゛゜ ･ ー",
    "¹²³ ₁₂₃ ⁿ",
    "︵竖排︶ ︽ ﹏ ﹖﹗",
]

_CHINESE = [
    "今天天气怎么样？",
    "请帮我把明天早上七点的闹钟关掉。",
    "你能不能告诉我附近有没有好吃的餐厅",
    "我不想去了。",
    "这是什么意思吗？",
    "打开客厅的灯",
    "为什么天空是蓝色的",
    "明天会下雨吗",
    "帮我订一张去Beijing的机票，价格<1000元",
    "嗯……好吧",
    "？？？",
    "吗",
    "你吃饭了吗 我还没吃呢",
    "能不能 帮个忙",
    "这个问题我想了很久，还是不明白为什么会这样？",
]

#: Where the head of step 6c starts and ends: clause marks first, marks of every kind (the
#: full-width ones become ASCII under NFKC), a first clause shorter and longer than any
#: head_chars, a head of one character, and marks only.
_HEADS = [
    "行吧，不过先把照片备份一下",
    "...是...我算了半天算错了？",
    "。。。好",
    "！？～；、。好的好的",
    "好的好的好的好的好的好的好的好的好的好的",
    "ok sure, go ahead",
    "  不用了 谢谢",
    "可以…不过明天再说",
    "嗯、行；就这样~",
    "No!",
    "，。！？",
    "好",
]

_BORDERS = [
    "",
    " ",
    "?",
    "字" * 255 + " 吗",  # truncation lands right after a space
    "字" * 256 + "吗",
    "今天天气怎么样？" * 100,
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 12,
    "哈" * 2000,
]

#: The hard-case inputs; every entry is a str of Unicode scalar values (no lone surrogates).
HARD_CASES: list[str] = [
    *_BORDERS,
    *_whitespace_cases(),
    *_CONTROL_AND_FORMAT,
    *_COMBINING_MARKS,
    *_FULL_WIDTH,
    *_EMOJI,
    *_CASING,
    *_COMPATIBILITY,
    *_CHINESE,
    *_HEADS,
]


def _full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (NFKC maps them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def rule_cases(reflex: Reflex) -> list[str]:
    """Texts that hit each reflex rule and texts that nearly do (:mod:`foundry.reflex`).

    Per rule: a text built to satisfy every list, the same in upper case and full-width forms
    (a hit after normalisation), with a control character inside a word (removed, a hit), then
    near misses: an exclusion word added, the required words left out, the matched word cut
    short, a word put before a prefix and after a suffix, and a word appended to an ``equals``
    text. The vectors record whichever rule (or none) the reference answers.
    """
    out: list[str] = []
    for rule in reflex.rules:
        if rule.equals:
            hit = rule.equals[0]
            out += [hit, hit.upper(), f"{hit} x", f" {hit}\t"]
        else:
            parts = [*rule.starts_with[:1], *rule.contains[:1], *rule.also_contains,
                     *rule.ends_with[:1]]
            hit = " ".join(parts)
            out += [hit, hit.upper(), _full_width(hit)]
            word = (rule.contains or rule.starts_with or rule.ends_with)[0]
            if len(word) > 1:
                out.append(hit.replace(word, word[:-1]))
                out.append(hit.replace(word, f"{word[0]}\u200b{word[1:]}"))
            if rule.also_contains:
                out.append(" ".join([*rule.starts_with[:1], *rule.contains[:1],
                                     *rule.ends_with[:1]]))
            if rule.starts_with:
                out.append(f"x{hit}")
            if rule.ends_with:
                out.append(f"{hit}x")
        for word in rule.unless_contains[:2]:
            out.append(f"{hit} {word}")
    return out
