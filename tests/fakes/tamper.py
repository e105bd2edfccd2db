"""Damage artifacts on purpose: rewrite a ``.bin`` (re-sealed, so that the rule under test is
the one that fails, not the integrity check) or flip bits in place.

A format 5 ``.bin`` is handed to a mutation with its vocabulary and idf in fields 7 and 8
(``vocabulary``, ``idf``) and written back front-coded (fields 17-21), as the writer does, as
long as it stays format 5; ``raw=True`` hands over the message as stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from foundry.artifacts import (
    COMPACT_LAYOUTS,
    compact,
    entry_bytes,
    idf_of,
    seal_message,
    vocabulary_of,
)
from foundry.v1 import preprocessor_pb2 as pb


def read_bin(path: Path, raw: bool = False) -> pb.Preprocessor:
    msg = pb.Preprocessor()
    msg.ParseFromString(Path(path).read_bytes())
    if not raw and msg.format_version in COMPACT_LAYOUTS:
        vocabulary = vocabulary_of(msg, path, entry_bytes(msg.analyzer.max_n, msg.analyzer.word_max_n,
                                                      msg.normalizer.max_chars))
        idf = idf_of(msg, path, len(vocabulary)) if msg.weighting.use_idf else []
        for name in ("vocab_prefix", "vocab_suffix_len", "vocab_suffixes", "idf_table",
                     "idf_index"):
            msg.ClearField(name)
        msg.vocabulary.extend(vocabulary)
        msg.idf.extend(idf)
    return msg


def rewrite_bin(path: Path, mutate: Callable[[pb.Preprocessor], object],
                raw: bool = False) -> None:
    """Decode ``path``, let ``mutate`` change the message, write it back with a valid seal."""
    msg = read_bin(path, raw)
    mutate(msg)
    if not raw and msg.format_version in COMPACT_LAYOUTS:
        compact(msg)
    Path(path).write_bytes(seal_message(msg))
