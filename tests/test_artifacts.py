"""The .bin layouts of foundry/artifacts.py: format 5 (front-coded vocabulary, idf table) is
what writers write; formats 3 and 4 (fields 7 and 8) still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundry.artifacts import (
    compact,
    front_code,
    idf_table,
    load_preprocessor,
    seal_message,
)
from foundry.errors import ArtifactError
from foundry.pair import artifact_bytes
from foundry.v1 import preprocessor_pb2 as pb

PATH = Path("t_preprocessor.bin")


def test_front_code_shares_prefixes_in_utf8_bytes():
    prefix, suffix_len, blob = front_code(["ab", "abc", "b", "什么", "什么时"])
    assert prefix == [0, 2, 0, 0, 6]
    assert suffix_len == [2, 1, 1, 6, 3]
    assert blob == "abcb什么时".encode()


def test_idf_table_puts_the_most_used_value_first():
    table, index = idf_table([2.5, 1.0, 2.5, 3.0, 1.0, 2.5])
    assert table == [2.5, 1.0, 3.0]
    assert index == [0, 1, 0, 2, 1, 0]


def _legacy(bin_bytes: bytes, format_version: int) -> tuple[pb.Preprocessor, bytes]:
    """The same model as a format 3 or 4 file (fields 7 and 8)."""
    msg = load_preprocessor(bin_bytes, PATH, "t")
    for name in ("vocab_prefix", "vocab_suffix_len", "vocab_suffixes", "idf_table", "idf_index"):
        msg.ClearField(name)
    msg.format_version = format_version
    return msg, seal_message(msg)


def test_writer_writes_format_5_and_readers_expand_it(tiny_fit):
    trained = tiny_fit()
    _, bin_bytes = artifact_bytes(trained, 0.7, task="t")
    raw = pb.Preprocessor()
    raw.ParseFromString(bin_bytes)
    assert raw.format_version == 5 and not len(raw.vocabulary) and not len(raw.idf)
    assert len(raw.idf_table) < len(raw.idf_index)
    msg = load_preprocessor(bin_bytes, PATH, "t")
    tfidf = trained.pipeline.named_steps["tfidf"]
    assert list(msg.vocabulary) == sorted(tfidf.vocabulary_, key=tfidf.vocabulary_.get)
    assert list(msg.idf) == [float(x) for x in tfidf.idf_]
    again = compact(_legacy(bin_bytes, 3)[0])
    assert seal_message(again) == bin_bytes  # the layouts hold the same model


def test_head_ngrams_make_format_7_and_load_back(tiny_fit):
    from foundry.textspec import TextSpec

    trained = tiny_fit(TextSpec(head_chars=3))
    _, bin_bytes = artifact_bytes(trained, 0.7, task="t")
    msg = load_preprocessor(bin_bytes, PATH, "t")
    assert (msg.format_version, msg.analyzer.head_chars) == (7, 3)
    heads = [g for g in msg.vocabulary if g.startswith("\x02")]
    assert heads and all(1 <= len(g) - 1 <= 3 for g in heads)
    # without head n-grams the writer keeps format 5
    assert load_preprocessor(artifact_bytes(tiny_fit(), 0.7, task="t")[1], PATH,
                             "t").format_version == 5


def test_format_3_files_still_load(tiny_fit):
    _, bin_bytes = artifact_bytes(tiny_fit(), 0.7, task="t")
    legacy, legacy_bytes = _legacy(bin_bytes, 3)
    msg = load_preprocessor(legacy_bytes, PATH, "t")
    assert msg.format_version == 3
    assert list(msg.vocabulary) == list(legacy.vocabulary) and list(msg.idf) == list(legacy.idf)
    with pytest.raises(ArtifactError, match=r"format 3 holds the front-coded.*B9"):
        legacy.vocab_prefix.append(0)
        load_preprocessor(seal_message(legacy), PATH, "t")
