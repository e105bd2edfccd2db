"""The rules a ``<task>_preprocessor.bin`` must satisfy, shared by the writer and every reader.

``docs/preprocessor-spec.md`` (section 1, "Validation a runtime performs at load time") lists
them in one table with ids (F1-F2 files, B1-B14 the ``.bin``, P1 the pair, O1-O3 the
``.onnx``); the JavaScript runtime implements the same table, and every rejection names its
rule, e.g. ``... (spec rule B5)``. This module holds the ``.bin`` part, the file checks and the
integrity trailer; :mod:`foundry.runtime` applies the pair and ``.onnx`` rules.

The integrity trailer (rule B1): the last field of the file, ``content_sha256`` (field 13,
``bytes``), holds the SHA-256 of every byte before it. It is written last and has a fixed
size, so the file always ends with ``0x6A 0x20`` (its tag and length) and the 32 digest bytes:
a reader checks it on the raw bytes, before decoding, without re-serialising anything.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import stat
from pathlib import Path
from typing import Any

from foundry.errors import ArtifactError
from foundry.reflex import (
    MAX_RULE_NAME_CHARS,
    MAX_RULE_WORDS,
    MAX_RULES,
    MAX_WORD_CHARS,
    POSITIVE_LISTS,
    WORD_LISTS,
)
from foundry.textspec import (
    HEAD_MARK,
    MAX_HEAD_CHARS,
    MAX_WORD_N,
    REMOVED_CATEGORIES,
    WHITESPACE,
    WORD_MARK,
)

#: Layout versions of the ``.bin`` (2: the integrity trailer and these rules; 3: the
#: unfamiliarity gate, field ``familiarity``; 4: format 3 with reflex rules, field ``rules``;
#: 5: the vocabulary front-coded and the idf as an index into a table of its distinct values,
#: rules optional). Writers write format 5; readers still read 3 and 4.
FORMAT_VERSION = 3
RULES_FORMAT_VERSION = 4
COMPACT_FORMAT_VERSION = 5
#: Format 5's layout plus word n-grams (text spec step 6b, ``analyzer.word_max_n``).
WORDS_FORMAT_VERSION = 6
#: Format 6's layout plus head n-grams (text spec step 6c, ``analyzer.head_chars``).
HEAD_FORMAT_VERSION = 7
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION, RULES_FORMAT_VERSION, COMPACT_FORMAT_VERSION,
                             WORDS_FORMAT_VERSION, HEAD_FORMAT_VERSION)
#: The formats whose vocabulary and idf are front-coded and tabled (fields 17-21).
COMPACT_LAYOUTS = (COMPACT_FORMAT_VERSION, WORDS_FORMAT_VERSION, HEAD_FORMAT_VERSION)
#: Resource limits (rules F2, B5, B7, B8, B9). A text costs at most MAX_CHARS * MAX_N n-gram
#: look-ups, however long the input line.
MAX_BIN_BYTES = 16 << 20
MAX_ONNX_BYTES = 256 << 20
MAX_LABELS = 1024
MAX_CHARS = 4096
MAX_N = 8
MAX_VOCABULARY = 1 << 18
#: Where an export stages its files (``<models>/.pending/<task>.<id>/``) and the marker of a
#: staging folder whose files are complete (see :mod:`foundry.export`).
PENDING_DIR = ".pending"
COMMIT_MARKER = "COMMITTED"
#: The tag (field 13, wire type 2) and length byte that open the integrity trailer.
INTEGRITY_HEADER = bytes([(13 << 3) | 2, 32])
INTEGRITY_BYTES = len(INTEGRITY_HEADER) + 32
_HEX = frozenset("0123456789abcdef")


def rule_error(path: Path | str, message: str, rule: str) -> ArtifactError:
    """An :class:`ArtifactError` naming the file, what is wrong and the spec rule."""
    return ArtifactError(f"{path}: {message} (spec rule {rule})")


def read_artifact(path: Path, what: str, limit: int) -> bytes:
    """The bytes of an artifact file, after rules F1 (a regular file) and F2 (size, readable).

    A FIFO, socket or device is refused before it is opened: reading one could block forever.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise rule_error(path, f"{what} not found; forge it with `foundry forge <blueprint>` or "
                               "pass the right --models-dir", "F1") from None
    except OSError as exc:
        raise rule_error(path, f"cannot read the {what}: {exc.strerror}", "F2") from None
    if not stat.S_ISREG(info.st_mode):
        raise rule_error(path, f"the {what} is not a regular file", "F1")
    if info.st_size > limit:
        raise rule_error(path, f"the {what} has {info.st_size:,} bytes, more than the limit of "
                               f"{limit:,}", "F2")
    try:
        with open(path, "rb", opener=_open_nonblocking) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise rule_error(path, f"cannot read the {what}: {exc.strerror}", "F2") from None
    if len(data) > limit:  # it grew after the stat
        raise rule_error(path, f"the {what} is larger than the limit of {limit:,} bytes", "F2")
    return data


def _open_nonblocking(path: str, flags: int) -> int:
    # Should the path become a FIFO between the stat and the open, do not wait for a writer.
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def interrupted_export(models_dir: Path, task: str) -> bool:
    """Whether an export of ``task`` into ``models_dir`` committed but did not finish renaming."""
    pending = Path(models_dir) / PENDING_DIR
    try:
        return any((d / COMMIT_MARKER).is_file() for d in pending.iterdir()
                   if d.name == task or d.name.startswith(f"{task}."))
    except OSError:
        return False


def seal(body: bytes) -> bytes:
    """``body`` (a serialised Preprocessor without field 13) with its integrity trailer."""
    return body + INTEGRITY_HEADER + hashlib.sha256(body).digest()


def seal_message(msg: Any) -> bytes:
    """A ``foundry.v1.Preprocessor`` as file bytes: serialised deterministically, with its
    integrity trailer (any ``content_sha256`` it held is replaced)."""
    msg.ClearField("content_sha256")
    return seal(msg.SerializeToString(deterministic=True))


def check_integrity(data: bytes, path: Path) -> None:
    """Rule B1: the file ends with its integrity trailer and the digest matches."""
    if len(data) < INTEGRITY_BYTES or data[-INTEGRITY_BYTES:-32] != INTEGRITY_HEADER:
        raise rule_error(path, "not a preprocessor file of this format: it does not end with "
                               "the integrity check (content_sha256); re-export the model", "B1")
    if hashlib.sha256(data[:-INTEGRITY_BYTES]).digest() != data[-32:]:
        raise rule_error(path, "the file is damaged: its content does not match its integrity "
                               "check (content_sha256); re-export the model or restore a copy",
                         "B1")


def decode_preprocessor(data: bytes, path: Path):
    """Rule B2: the bytes as a ``foundry.v1.Preprocessor`` (strings decoded strictly)."""
    from google.protobuf.message import DecodeError

    from foundry.v1 import preprocessor_pb2 as pb

    msg = pb.Preprocessor()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise rule_error(path, f"not a valid preprocessor file (truncated or corrupt): {exc}",
                         "B2") from None
    return msg


def _code_points_ok(text: str, low: int, high: int) -> bool:
    return low <= len(text) <= high


def check_preprocessor(msg: Any, path: Path, task: str) -> tuple[list[str], list[float]]:
    """Rules B3-B14 on a decoded ``.bin``, in the order of the spec's table; the vocabulary
    and idf (per column) it holds, in either layout."""
    if msg.format_version not in SUPPORTED_FORMAT_VERSIONS:
        raise rule_error(
            path, f"format_version {msg.format_version} is not supported by this runtime "
                  f"(supported: {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); re-export the "
                  "model or upgrade the runtime", "B3")
    if msg.task != task:
        raise rule_error(path, f"belongs to task {msg.task!r}, not {task!r}", "B4")
    labels = list(msg.labels)
    if not 2 <= len(labels) <= MAX_LABELS:
        raise rule_error(path, f"needs 2 to {MAX_LABELS} labels, has {len(labels)}", "B5")
    if "" in labels or len(set(labels)) != len(labels):
        raise rule_error(path, f"labels {labels[:20]} hold an empty or a repeated name", "B5")
    if msg.out_of_scope and msg.out_of_scope not in labels:
        raise rule_error(path, f"out_of_scope {msg.out_of_scope[:40]!r} is not one of the "
                               "labels", "B5")
    norm = msg.normalizer
    if norm.spec_version != 1 or not norm.nfkc:
        raise rule_error(path, f"normalizer.spec_version = {norm.spec_version} (nfkc = "
                               f"{norm.nfkc}) is not supported (this runtime implements text "
                               "spec 1, with NFKC)", "B6")
    if set(norm.removed_categories) != REMOVED_CATEGORIES or {
        chr(c) if c <= 0x10FFFF else None for c in norm.whitespace
    } != set(WHITESPACE):
        raise rule_error(path, "normaliser settings (removed categories / whitespace list) "
                               "differ from text spec 1", "B6")
    if not 1 <= norm.max_chars <= MAX_CHARS:
        raise rule_error(path, f"normalizer.max_chars = {norm.max_chars} is outside 1..{MAX_CHARS}",
                         "B7")
    ana = check_analyzer(msg, path)
    vocabulary = vocabulary_of(msg, path, entry_bytes(ana.max_n, ana.word_max_n, norm.max_chars,
                                                      ana.head_chars))
    if not 1 <= len(vocabulary) <= MAX_VOCABULARY:
        raise rule_error(path, f"the vocabulary has {len(vocabulary)} entries; it needs 1 to "
                               f"{MAX_VOCABULARY}", "B9")
    bad = next((g for g in vocabulary if not _valid_term(g, ana, norm.max_chars)), None)
    if bad is not None:
        raise rule_error(path, f"vocabulary entry {bad[:40]!r} is neither a character n-gram "
                               f"of min_n..max_n = {ana.min_n}..{ana.max_n} code points nor a "
                               f"word n-gram of 1..word_max_n = {ana.word_max_n} words"
                               + (" nor a head n-gram of min_n..max_n code points"
                                  if ana.head_chars else ""), "B9")
    if len(set(vocabulary)) != len(vocabulary):
        raise rule_error(path, "the vocabulary has repeated entries; the file is corrupt", "B9")
    weighting = msg.weighting
    if weighting.norm not in (0, 1):
        raise rule_error(path, f"weighting.norm = {weighting.norm} is neither NORM_NONE (0) "
                               "nor NORM_L2 (1)", "B10")
    idf = idf_of(msg, path, len(vocabulary)) if weighting.use_idf else msg.idf
    if weighting.use_idf:
        if len(idf) != len(vocabulary):
            raise rule_error(path, f"idf has {len(idf)} values but the vocabulary has "
                                   f"{len(vocabulary)} entries; the file is corrupt", "B10")
        values = msg.idf_table if msg.format_version in COMPACT_LAYOUTS else idf
        if not all(math.isfinite(x) and x > 0 for x in values):  # format 5: idf from the table
            raise rule_error(path, "idf holds a value that is not a finite number > 0", "B10")
    elif len(msg.idf) or len(msg.idf_table) or len(msg.idf_index):
        raise rule_error(path, f"use_idf is false but idf has {len(msg.idf)} values, idf_table "
                               f"{len(msg.idf_table)}, idf_index {len(msg.idf_index)}", "B10")
    if not (math.isfinite(msg.threshold) and 0.0 <= msg.threshold <= 1.0):
        raise rule_error(path, f"threshold {msg.threshold} is not a number in [0, 1]", "B11")
    if len(msg.onnx_sha256) != 64 or not set(msg.onnx_sha256) <= _HEX:
        raise rule_error(path, f"onnx_sha256 {msg.onnx_sha256[:70]!r} is not 64 lowercase hex "
                               "digits", "B12")
    gate = msg.familiarity
    if not msg.HasField("familiarity") or not 1 <= gate.min_order <= ana.max_n or not (
            math.isfinite(gate.max_unfamiliar) and 0.0 <= gate.max_unfamiliar <= 1.0):
        raise rule_error(path, "familiarity must be present with 1 <= min_order <= max_n and "
                               "max_unfamiliar a number in [0, 1], got "
                               f"min_order={gate.min_order}, max_unfamiliar={gate.max_unfamiliar}",
                         "B13")
    check_rules(msg, path)
    return vocabulary, list(idf)


def check_analyzer(msg: Any, path: Path) -> Any:
    """Rule B8: the n-gram orders, and word and head n-grams only in the formats that have
    them; the ``analyzer`` message."""
    ana = msg.analyzer
    if not 1 <= ana.min_n <= ana.max_n <= MAX_N:
        raise rule_error(path, f"analyzer needs 1 <= min_n <= max_n <= {MAX_N}, got min_n="
                               f"{ana.min_n}, max_n={ana.max_n}", "B8")
    words_allowed = MAX_WORD_N if msg.format_version >= WORDS_FORMAT_VERSION else 0
    if not 0 <= ana.word_max_n <= words_allowed:
        raise rule_error(path, f"analyzer.word_max_n = {ana.word_max_n} is outside "
                               f"0..{words_allowed} (word n-grams need format "
                               f"{WORDS_FORMAT_VERSION} or {HEAD_FORMAT_VERSION}, at most "
                               f"{MAX_WORD_N} words)", "B8")
    head_allowed = MAX_HEAD_CHARS if msg.format_version == HEAD_FORMAT_VERSION else 0
    if not 0 <= ana.head_chars <= head_allowed:
        raise rule_error(path, f"analyzer.head_chars = {ana.head_chars} is outside "
                               f"0..{head_allowed} (head n-grams need format "
                               f"{HEAD_FORMAT_VERSION}, at most {MAX_HEAD_CHARS} code points)",
                         "B8")
    return ana


def entry_bytes(max_n: int, word_max_n: int, max_chars: int, head_chars: int = 0) -> int:
    """The most UTF-8 bytes a vocabulary entry may have (rule B9): ``4 * max_n``; with head
    n-grams the mark and ``max_n`` code points, ``1 + 4 * max_n``; with word n-grams the mark
    and a whole normalised text, ``1 + 4 * max_chars``, if larger."""
    longest = 1 + 4 * max_n if head_chars else 4 * max_n
    return max(longest, 1 + 4 * max_chars) if word_max_n else longest


def _valid_term(term: str, ana: Any, max_chars: int) -> bool:
    """Rule B9 for one entry: a character n-gram of ``min_n..max_n`` code points without the
    word mark, or (``word_max_n > 0``) the mark and 1..word_max_n non-empty words joined by
    single spaces, at most ``max_chars`` code points after the mark, or (``head_chars > 0``)
    the head mark and ``min_n..max_n`` code points without either mark."""
    if term.startswith(HEAD_MARK):
        rest = term[1:]
        return (ana.head_chars > 0 and ana.min_n <= len(rest) <= ana.max_n
                and WORD_MARK not in rest and HEAD_MARK not in rest)
    if not term.startswith(WORD_MARK):
        return ana.min_n <= len(term) <= ana.max_n
    words = term[1:].split(" ")
    return (1 <= len(words) <= ana.word_max_n and len(term) <= 1 + max_chars
            and all(w and WORD_MARK not in w for w in words))


def format_version_for(rules: Any, word_max_n: int = 0, head_chars: int = 0) -> int:
    """The layout version a writer records: 5, with or without rules; 6 when the analyzer
    takes word n-grams, 7 when it takes head n-grams (so that a runtime without step 6b or 6c
    refuses the file)."""
    if head_chars:
        return HEAD_FORMAT_VERSION
    return WORDS_FORMAT_VERSION if word_max_n else COMPACT_FORMAT_VERSION


def front_code(grams: list[str]) -> tuple[list[int], list[int], bytes]:
    """``(vocab_prefix, vocab_suffix_len, vocab_suffixes)`` of format 5: each entry's UTF-8
    bytes as the length of the prefix it shares with the entry before, and the rest."""
    prefix, suffix_len, blob, prev = [], [], bytearray(), b""
    for gram in grams:
        data = gram.encode("utf-8")
        shared = 0
        limit = min(len(data), len(prev))
        while shared < limit and data[shared] == prev[shared]:
            shared += 1
        prefix.append(shared)
        suffix_len.append(len(data) - shared)
        blob += data[shared:]
        prev = data
    return prefix, suffix_len, bytes(blob)


def idf_table(idf: list[float]) -> tuple[list[float], list[int]]:
    """``(idf_table, idf_index)`` of format 5: the distinct values, most used first (ties by
    value, so the order is deterministic), and each column's index into them."""
    from collections import Counter

    counts = Counter(idf)
    table = sorted(counts, key=lambda v: (-counts[v], v))
    where = {v: i for i, v in enumerate(table)}
    return table, [where[v] for v in idf]


def compact(msg: Any) -> Any:
    """Rewrite a message holding fields 7 and 8 (``vocabulary``, ``idf``) in place as format 5
    (fields 17-21; 7 and 8 emptied) and return it."""
    prefix, suffix_len, blob = front_code(list(msg.vocabulary))
    table, index = idf_table(list(msg.idf))
    if msg.format_version not in COMPACT_LAYOUTS:
        msg.format_version = COMPACT_FORMAT_VERSION
    msg.ClearField("vocabulary")
    msg.ClearField("idf")
    msg.vocab_prefix[:] = prefix
    msg.vocab_suffix_len[:] = suffix_len
    msg.vocab_suffixes = blob
    msg.idf_table[:] = table
    msg.idf_index[:] = index
    return msg


def as_stored(msg: Any) -> Any:
    """A copy of a message returned by :func:`load_preprocessor` as its file holds it: a
    format 5 message without the fields 7 and 8 the reader filled in."""
    stored = type(msg)()
    stored.CopyFrom(msg)
    if stored.format_version in COMPACT_LAYOUTS:
        stored.ClearField("vocabulary")
        stored.ClearField("idf")
    return stored


def vocabulary_of(msg: Any, path: Path, max_bytes: int) -> list[str]:
    """Rule B9's layout part: the vocabulary of fields 7 (formats 3-4) or 17-19 (formats 5-7,
    front-coded: every entry at most ``max_bytes`` bytes (:func:`entry_bytes`), valid UTF-8,
    strictly ascending)."""
    compact_fields = len(msg.vocab_prefix) or len(msg.vocab_suffix_len) or msg.vocab_suffixes
    if msg.format_version not in COMPACT_LAYOUTS:
        if compact_fields:
            raise rule_error(path, f"format {msg.format_version} holds the front-coded "
                                   "vocabulary of format 5 (fields 17-19)", "B9")
        return list(msg.vocabulary)
    if len(msg.vocabulary):
        raise rule_error(path, "format 5 holds field 7 (vocabulary); its vocabulary is "
                               "front-coded in fields 17-19", "B9")
    d = len(msg.vocab_prefix)
    if not 1 <= d <= MAX_VOCABULARY or len(msg.vocab_suffix_len) != d:
        raise rule_error(path, f"vocab_prefix has {d} values and vocab_suffix_len "
                               f"{len(msg.vocab_suffix_len)}; they need the same length, 1 to "
                               f"{MAX_VOCABULARY}", "B9")
    blob = msg.vocab_suffixes
    entries = _front_decoded(msg.vocab_prefix, msg.vocab_suffix_len, blob, max_bytes, path)
    if not all(map(operator.lt, entries, entries[1:])):
        i = next(i for i in range(1, d) if entries[i] <= entries[i - 1])
        raise rule_error(path, f"vocabulary entry {i} does not come after entry {i - 1} in "
                               "byte order; the file is corrupt", "B9")
    try:  # "\n" is ASCII: the joined bytes are valid UTF-8 exactly when every entry is
        grams = b"\n".join(entries).decode("utf-8").split("\n")
    except UnicodeDecodeError:
        grams = []
    if len(grams) != d:  # an entry is not valid UTF-8, or holds a "\n"
        bad = next((i for i, e in enumerate(entries) if not _utf8(e)), None)
        if bad is not None:
            raise rule_error(path, f"vocabulary entry {bad} is not valid UTF-8", "B9")
        grams = [e.decode("utf-8") for e in entries]
    return grams


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _front_decoded(prefix: Any, suffix_len: Any, blob: bytes, max_bytes: int, path: Path
                   ) -> list[bytes]:
    """The entries of a front-coded vocabulary as bytes, each checked to fit (rule B9)."""
    import numpy as np

    shared = np.asarray(prefix, dtype=np.int64)
    rest = np.asarray(suffix_len, dtype=np.int64)
    size = shared + rest
    ends = np.cumsum(rest)
    before = np.concatenate([[0], size[:-1]])
    bad = np.flatnonzero((shared > before) | (size > max_bytes) | (ends > len(blob)))
    if len(bad):
        i = int(bad[0])
        raise rule_error(path, f"vocabulary entry {i}: prefix {shared[i]} + suffix {rest[i]} "
                               f"bytes do not fit (entry {i - 1} has {before[i]} bytes, at most "
                               f"{max_bytes} bytes an entry, {len(blob) - (ends[i] - rest[i])} "
                               "suffix bytes left)", "B9")
    if ends[-1] != len(blob):
        raise rule_error(path, f"vocab_suffixes has {len(blob) - int(ends[-1])} bytes more "
                               "than vocab_suffix_len uses", "B9")
    entries, prev, at = [], b"", 0
    for k, n in zip(shared.tolist(), rest.tolist(), strict=True):
        prev = prev[:k] + blob[at:at + n]
        at += n
        entries.append(prev)
    return entries


def idf_of(msg: Any, path: Path, d: int) -> list[float]:
    """Rule B10's layout part (with ``use_idf``): the idf of field 8 (formats 3-4) or of
    fields 20-21 (formats 5-7: ``idf_table[idf_index[i]]``, 1 to ``d`` table values)."""
    if msg.format_version not in COMPACT_LAYOUTS:
        if len(msg.idf_table) or len(msg.idf_index):
            raise rule_error(path, f"format {msg.format_version} holds the idf table of "
                                   "format 5 (fields 20-21)", "B10")
        return list(msg.idf)
    table, index = msg.idf_table, msg.idf_index
    if len(msg.idf) or not 1 <= len(table) <= d or len(index) != d:
        raise rule_error(path, f"format 5 needs idf empty, 1 to {d} idf_table values and one "
                               f"idf_index per vocabulary entry ({d}); got {len(msg.idf)}, "
                               f"{len(table)} and {len(index)}", "B10")
    import numpy as np

    at = np.asarray(index, dtype=np.int64)
    if int(at.max()) >= len(table):
        bad = int(np.argmax(at >= len(table)))
        raise rule_error(path, f"idf_index[{bad}] = {index[bad]} is outside the idf_table "
                               f"(0..{len(table) - 1})", "B10")
    return np.asarray(table, dtype=np.float64)[at].tolist()


def check_rules(msg: Any, path: Path) -> None:
    """Rule B14: the reflex rules are well formed; format 3 has none, format 4 has some."""
    rules = msg.rules
    if len(rules) and msg.format_version == FORMAT_VERSION or (
            msg.format_version == RULES_FORMAT_VERSION and not len(rules)):
        raise rule_error(path, f"format_version {msg.format_version} with {len(rules)} rules: "
                               f"rules need format {RULES_FORMAT_VERSION} or "
                               f"{COMPACT_FORMAT_VERSION}-{HEAD_FORMAT_VERSION}, and format {RULES_FORMAT_VERSION} "
                               "needs rules", "B14")
    if len(rules) > MAX_RULES:
        raise rule_error(path, f"{len(rules)} rules; at most {MAX_RULES}", "B14")
    names: set[str] = set()
    words = 0
    for i, rule in enumerate(rules):
        if not 1 <= len(rule.name) <= MAX_RULE_NAME_CHARS or rule.name in names:
            raise rule_error(path, f"rules[{i}].name {rule.name[:70]!r} is empty, longer than "
                                   f"{MAX_RULE_NAME_CHARS} code points or repeated", "B14")
        names.add(rule.name)
        if rule.label >= len(msg.labels):
            raise rule_error(path, f"rules[{i}].label {rule.label} is not a label index "
                                   f"(0..{len(msg.labels) - 1})", "B14")
        if not any(len(getattr(rule, name)) for name in POSITIVE_LISTS):
            raise rule_error(path, f"rules[{i}] has no contains, starts_with, ends_with or "
                                   "equals words", "B14")
        for name in WORD_LISTS:
            for word in getattr(rule, name):
                if not 1 <= len(word) <= MAX_WORD_CHARS:
                    raise rule_error(path, f"rules[{i}].{name}: the word {word[:40]!r} has "
                                           f"{len(word)} code points; it needs 1 to "
                                           f"{MAX_WORD_CHARS}", "B14")
            words += len(getattr(rule, name))
    if words > MAX_RULE_WORDS:
        raise rule_error(path, f"the rules hold {words} words; at most {MAX_RULE_WORDS}", "B14")


def load_preprocessor(data: bytes, path: Path, task: str):
    """Rules B1-B14: check, decode and validate the bytes of a ``.bin``; a format 5 message
    is returned with its vocabulary and idf also in fields 7 and 8."""
    check_integrity(data, path)
    msg = decode_preprocessor(data, path)
    vocabulary, idf = check_preprocessor(msg, path, task)
    if msg.format_version in COMPACT_LAYOUTS:  # readers find fields 7 and 8 filled
        msg.vocabulary.extend(vocabulary)
        msg.idf.extend(idf)
    return msg
