"""The exam is written independently of the training data: no exam sentence, or trivial variant
of one, may appear in a blueprint's seeds or among the sentences its grammar generates.

"Trivial variant" = equal after normalisation and removal of punctuation, or a near-duplicate by
the refinery's own measure (Jaccard of its character shingles) at VARIANT_THRESHOLD, stricter
than the dedup threshold so that one added or changed character in a short sentence counts.
Very short exam replies (fewer than MIN_TOKENS tokens, a token being a CJK character or a Latin
word: 好的, 取消, sure, of course) are part of any natural grammar of replies; for those the
guarantee is the refinery's exam-overlap rule, which drops them from the training data (tested
in tests/test_refine.py).
"""

from __future__ import annotations

import unicodedata

import pytest

from foundry.blueprint import load_blueprint
from foundry.generate.offline import generate_offline, load_seeds
from foundry.generate.rawstore import read_jsonl
from foundry.minhash import ShingleMatrix, cross_jaccard, shingles
from foundry.textspec import normalize

MIN_TOKENS = 5
VARIANT_THRESHOLD = 0.7
#: Grammar rows sampled per task: many times the default target, so that rare expansions count.
SAMPLE_ROWS = 60_000
BP = load_blueprint("text_classification")


def core(text: str) -> str:
    """Normalised text without punctuation, symbols and spaces."""
    return "".join(
        ch for ch in normalize(text) if unicodedata.category(ch)[0] not in {"P", "S", "Z"}
    )


def tokens(text: str) -> int:
    """CJK characters and Latin words in the core of ``text``."""
    count, in_word = 0, False
    for ch in core(text):
        if ch.isascii() and ch.isalnum():
            count += not in_word
            in_word = True
        else:
            count += 1
            in_word = False
    return count


def _violations(exam: list[str], corpus: list[str], *, min_tokens: int) -> list[str]:
    """Exam texts that appear in ``corpus`` verbatim or as a near-duplicate.

    Near-duplicates come from the refinery's own exact cross-similarity (sparse shingle
    products), so the check scales to tens of thousands of generated rows.
    """
    k = BP.spec.refine.shingle_size
    corpus_core = sorted({core(t) for t in corpus} - {""})
    queries = [t for t in exam if core(t) and tokens(t) >= min_tokens]
    bad = [f"{t!r}: appears verbatim" for t in queries if core(t) in set(corpus_core)]
    if not queries or not corpus_core:
        return bad
    index = ShingleMatrix([shingles(c, k) for c in corpus_core])
    sims = cross_jaccard(index.encode([shingles(core(t), k) for t in queries]),
                         (index.matrix, index.sizes), threshold=VARIANT_THRESHOLD)
    for qi, ci, sim in zip(sims.queries, sims.corpus, sims.similarity, strict=True):
        if sim < 1.0:
            bad.append(f"{queries[qi]!r}: near-duplicate of {corpus_core[ci]!r} (Jaccard {sim:.2f})")
    return bad


@pytest.mark.parametrize("task", [t.name for t in BP.tasks])
def test_no_exam_sentence_in_seeds(task):
    t = BP.task(task)
    exam = [r["text"] for r in read_jsonl(BP.path(t.exam))]
    seeds = [r["text"] for r in load_seeds(BP.path(t.seeds), t)]
    violations = _violations(exam, seeds, min_tokens=MIN_TOKENS)
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("task", [t.name for t in BP.tasks])
def test_no_exam_sentence_in_generated_grammar_rows(task):
    t = BP.task(task)
    exam = [r["text"] for r in read_jsonl(BP.path(t.exam))]
    rows = generate_offline(BP, t, target=SAMPLE_ROWS, seed=BP.spec.generation.seed).rows
    generated = [r["text"] for r in rows if r["source"] == "grammar"]
    violations = _violations(exam, generated, min_tokens=MIN_TOKENS)
    assert not violations, "\n".join(violations)
    checked = sum(tokens(t) >= MIN_TOKENS for t in exam)
    assert checked >= len(exam) // 3, f"only {checked} of {len(exam)} exam cases are long enough"


def test_detector_catches_trivial_variants():
    exam = ["帮我查一下明天去上海的航班", "给我讲讲量子计算是什么"]
    corpus = ["帮我查一下明天去上海的航班！", "给我讲讲量子计算是什么呀"]
    assert len(_violations(exam, corpus, min_tokens=MIN_TOKENS)) == 2
