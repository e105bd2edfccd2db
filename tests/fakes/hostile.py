"""A catalogue of hostile model files: each case damages a copy of a good pair in one way and
names the rule of docs/preprocessor-spec.md (section 1) that must reject it.

Used by ``tests/test_hostile_artifacts.py`` (both runtimes, same files) and
``bench/hostile.py`` (time and memory of each rejection).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fakes.tamper import read_bin, rewrite_bin
from foundry.artifacts import MAX_BIN_BYTES, MAX_ONNX_BYTES, MAX_VOCABULARY, seal

TASK = "tiny_q"


@dataclass(frozen=True)
class Case:
    name: str
    rule: str
    damage: Callable[[Path], None]  # receives a models dir holding a good pair of TASK


def bin_path(d: Path) -> Path:
    return d / f"{TASK}_preprocessor.bin"


def onnx_path(d: Path) -> Path:
    return d / f"{TASK}_classifier.onnx"


def _edit(mutate) -> Callable[[Path], None]:
    """Change the .bin's content (a format 5 file stays front-coded, fields 17-21)."""
    return lambda d: rewrite_bin(bin_path(d), mutate)


def _edit_raw(mutate) -> Callable[[Path], None]:
    """Change the .bin's fields as stored (format 5: fields 17-21 themselves)."""
    return lambda d: rewrite_bin(bin_path(d), mutate, raw=True)


def _set(field: str, index: int, value) -> Callable:
    def mutate(m) -> None:
        getattr(m, field)[index] = value
    return mutate


def _legacy(format_version: int, field: str, value) -> Callable:
    """The file as format 3 (fields 7 and 8) that also holds one value of a format 5 field."""
    def mutate(m) -> None:
        m.format_version = format_version
        getattr(m, field).append(value)
    return mutate


def _swap_first_entries(m) -> None:
    m.vocabulary[0], m.vocabulary[1] = m.vocabulary[1], m.vocabulary[0]
    m.idf[0], m.idf[1] = m.idf[1], m.idf[0]


def _flip(*bits_from_middle: int) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        data = bytearray(bin_path(d).read_bytes())
        middle = len(data) * 4
        for bit in bits_from_middle:
            data[(middle + bit) // 8] ^= 1 << ((middle + bit) % 8)
        bin_path(d).write_bytes(bytes(data))
    return damage


def _replace(path_of: Callable[[Path], Path], make: Callable[[Path], None]):
    def damage(d: Path) -> None:
        path_of(d).unlink()
        make(path_of(d))
    return damage


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(size)  # no disk space used; a reader must not read it
    return make


def _edit_onnx(mutate) -> Callable[[Path], None]:
    """Change the .onnx with the onnx package and record its new hash in the (sealed) .bin,
    so that only the .onnx rule under test can fail."""
    def damage(d: Path) -> None:
        import onnx

        model = onnx.load_from_string(onnx_path(d).read_bytes())
        mutate(model)
        _install_onnx(d, model.SerializeToString())
    return damage


def _install_onnx(d: Path, data: bytes) -> None:
    onnx_path(d).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    rewrite_bin(bin_path(d), lambda m: setattr(m, "onnx_sha256", digest))


def _v1_file(d: Path) -> None:
    """What format 1 wrote: the message without the integrity trailer."""
    msg = read_bin(bin_path(d))
    msg.format_version = 1
    msg.ClearField("content_sha256")
    bin_path(d).write_bytes(msg.SerializeToString(deterministic=True))


def _huge_vocabulary(d: Path) -> None:
    def mutate(msg) -> None:
        extra = MAX_VOCABULARY + 1 - len(msg.vocabulary)
        msg.vocabulary.extend(_gram(i) for i in range(extra))
        msg.idf.extend([1.0] * extra)
    rewrite_bin(bin_path(d), mutate)


def _gram(i: int) -> str:
    # Distinct 3-code-point strings from a private-use plane (never real n-grams).
    return chr(0xF0000 + i % 65536) + chr(0xF0000 + i // 65536) + "\u3000"


def _swap_whitespace(m) -> None:
    ws = [c for c in m.normalizer.whitespace if c != 0x3000]
    del m.normalizer.whitespace[:]
    m.normalizer.whitespace.extend(ws)


def _set_label(index: int, value: str):
    def mutate(m) -> None:
        m.labels[index] = value
    return mutate


def _vocab_entry(value: str):
    def mutate(m) -> None:
        m.vocabulary[-1] = value
    return mutate


def _analyzer(format_version: int, first_entry: str | None = None, **fields: int):
    """Set the format and ``analyzer`` fields (``word_max_n``, ``head_chars``); optionally
    replace the first vocabulary entry (a word n-gram, starting with U+0001, sorts first; a
    head n-gram, U+0002, when there are no word n-grams)."""
    def mutate(m) -> None:
        m.format_version = format_version
        for name, value in fields.items():
            setattr(m.analyzer, name, value)
        if first_entry is not None:
            m.vocabulary[0] = first_entry
    return mutate


def _words(format_version: int, word_max_n: int, first_entry: str | None = None):
    return _analyzer(format_version, first_entry, word_max_n=word_max_n)


def _heads(format_version: int, head_chars: int, first_entry: str | None = None):
    return _analyzer(format_version, first_entry, head_chars=head_chars)


def _with_rules(*rules: dict, format_version: int = 4):
    """Give the .bin reflex rules (``foundry.v1.Rule`` fields; label index 1 by default)."""
    def mutate(m) -> None:
        m.format_version = format_version
        for i, fields in enumerate(rules):
            m.rules.add(**{"name": f"r{i}", "label": 1, **fields})
    return mutate


_GOOD_RULE = {"contains": ["删除"]}


def _rename_input(model) -> None:
    old = model.graph.input[0].name
    model.graph.input[0].name = "x"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = "x"


def _declared_width(model) -> None:
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value += 1


def _input_type_double(model) -> None:
    model.graph.input[0].type.tensor_type.elem_type = 11


def _rename_output(model) -> None:
    model.graph.output[1].name = "probs"
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == "probabilities":
                node.output[i] = "probs"


def _declared_classes(model) -> None:
    model.graph.output[1].type.tensor_type.shape.dim[-1].dim_value = 3


def _other_onnx(d: Path) -> None:
    """A different model's .onnx in place (the .bin unchanged)."""
    data = bytearray(onnx_path(d).read_bytes())
    data[-1] ^= 0x01
    onnx_path(d).write_bytes(bytes(data))


CASES: tuple[Case, ...] = (
    Case("bin missing", "F1", lambda d: bin_path(d).unlink()),
    Case("bin is a folder", "F1", _replace(bin_path, lambda p: p.mkdir())),
    Case("bin is a FIFO", "F1", _replace(bin_path, lambda p: os.mkfifo(p))),
    Case("bin larger than the limit", "F2", _replace(bin_path, _sparse(MAX_BIN_BYTES + 1))),
    Case("bin: one bit flipped", "B1", _flip(3)),
    Case("bin: two bits flipped", "B1", _flip(-9, 17)),
    Case("bin: last byte cut", "B1", lambda d: bin_path(d).write_bytes(bin_path(d).read_bytes()[:-1])),
    Case("bin: empty", "B1", lambda d: bin_path(d).write_bytes(b"")),
    Case("bin: format 1 (no integrity check)", "B1", _v1_file),
    Case("bin: sealed garbage", "B2", lambda d: bin_path(d).write_bytes(seal(b"\xff\xff\xff\x0f"))),
    Case("format_version 2 (no familiarity gate)", "B3",
         _edit(lambda m: setattr(m, "format_version", 2))),
    Case("format_version 8", "B3", _edit(lambda m: setattr(m, "format_version", 8))),
    Case("another task", "B4", _edit(lambda m: setattr(m, "task", "other"))),
    Case("duplicate labels", "B5", _edit(_set_label(1, "Question"))),
    Case("one label", "B5", _edit(lambda m: m.labels.pop())),
    Case("empty label", "B5", _edit(_set_label(0, ""))),
    Case("text spec 9", "B6", _edit(lambda m: setattr(m.normalizer, "spec_version", 9))),
    Case("no NFKC", "B6", _edit(lambda m: setattr(m.normalizer, "nfkc", False))),
    Case("removed categories differ", "B6", _edit(lambda m: m.normalizer.removed_categories.pop())),
    Case("whitespace list differs", "B6", _edit(_swap_whitespace)),
    Case("max_chars 0", "B7", _edit(lambda m: setattr(m.normalizer, "max_chars", 0))),
    Case("max_chars huge", "B7", _edit(lambda m: setattr(m.normalizer, "max_chars", 2**32 - 1))),
    Case("max_n huge", "B8", _edit(lambda m: setattr(m.analyzer, "max_n", 2**32 - 1))),
    Case("min_n 0", "B8", _edit(lambda m: setattr(m.analyzer, "min_n", 0))),
    Case("min_n > max_n", "B8", _edit(lambda m: setattr(m.analyzer, "min_n", 5))),
    Case("word n-grams in format 5", "B8", _edit(_words(5, 2))),
    Case("word_max_n 4", "B8", _edit(_words(6, 4))),
    Case("a word n-gram without word_max_n", "B9", _edit(_words(5, 0, "\x01ab"))),
    Case("a word n-gram of 3 words, word_max_n 2", "B9", _edit(_words(6, 2, "\x01a b c"))),
    Case("a word n-gram with an empty word", "B9", _edit(_words(6, 2, "\x01a "))),
    Case("head n-grams in format 6", "B8", _edit(_heads(6, 3))),
    Case("head_chars 17", "B8", _edit(_heads(7, 17))),
    Case("a head n-gram without head_chars", "B9", _edit(_heads(7, 0, "\x02ab"))),
    Case("a head n-gram of 4 code points, max_n 3", "B9", _edit(_heads(7, 3, "\x02abcd"))),
    Case("a head n-gram with a second mark", "B9", _edit(_heads(7, 3, "\x02a\x02"))),
    Case("vocabulary entry empty", "B9", _edit(_vocab_entry(""))),
    Case("vocabulary entry too long", "B9", _edit(_vocab_entry("abcd"))),
    Case("vocabulary entry repeated", "B9", _edit(lambda m: _vocab_entry(m.vocabulary[0])(m))),
    Case("vocabulary over the limit", "B9", _huge_vocabulary),
    Case("vocabulary out of order", "B9", _edit(_swap_first_entries)),
    Case("format 5 with field 7", "B9", _edit_raw(lambda m: m.vocabulary.append("吗"))),
    Case("front-coded fields in format 3", "B9", _edit(_legacy(3, "vocab_prefix", 0))),
    Case("vocab_prefix longer than the entry before", "B9", _edit_raw(_set("vocab_prefix", 1, 40))),
    Case("vocab_prefix huge", "B9", _edit_raw(_set("vocab_prefix", 1, 2**32 - 1))),
    Case("vocab_prefix and vocab_suffix_len lengths differ", "B9",
         _edit_raw(lambda m: m.vocab_suffix_len.pop())),
    Case("vocab_prefix empty", "B9",
         _edit_raw(lambda m: (m.ClearField("vocab_prefix"), m.ClearField("vocab_suffix_len"),
                              m.ClearField("vocab_suffixes")))),
    Case("vocab_suffix_len past the suffixes", "B9",
         _edit_raw(lambda m: setattr(m, "vocab_suffixes", m.vocab_suffixes[:-1]))),
    Case("vocab_suffixes with bytes left over", "B9",
         _edit_raw(lambda m: setattr(m, "vocab_suffixes", m.vocab_suffixes + b"x"))),
    Case("vocab entry longer than 4 * max_n bytes", "B9",
         _edit_raw(_set("vocab_suffix_len", 0, 2**32 - 1))),
    Case("vocab entry invalid UTF-8", "B9",
         _edit_raw(lambda m: setattr(m, "vocab_suffixes", m.vocab_suffixes[:-1] + b"\xff"))),
    Case("unknown norm", "B10", _edit(lambda m: setattr(m.weighting, "norm", 7))),
    Case("idf shorter", "B10", _edit(lambda m: m.idf.pop())),
    Case("idf NaN", "B10", _edit(lambda m: m.idf.__setitem__(0, math.nan))),
    Case("idf negative", "B10", _edit(lambda m: m.idf.__setitem__(0, -1.0))),
    Case("idf without use_idf", "B10", _edit(lambda m: setattr(m.weighting, "use_idf", False))),
    Case("format 5 with field 8", "B10", _edit_raw(lambda m: m.idf.append(1.0))),
    Case("idf table in format 3", "B10", _edit(_legacy(3, "idf_table", 1.0))),
    Case("idf_index out of range", "B10",
         _edit_raw(lambda m: _set("idf_index", 0, len(m.idf_table))(m))),
    Case("idf_index huge", "B10", _edit_raw(_set("idf_index", -1, 2**32 - 1))),
    Case("idf_index shorter", "B10", _edit_raw(lambda m: m.idf_index.pop())),
    Case("idf_table empty", "B10", _edit_raw(lambda m: m.ClearField("idf_table"))),
    Case("idf_table longer than the vocabulary", "B10",
         _edit_raw(lambda m: m.idf_table.extend([1.0] * len(m.idf_index)))),
    Case("idf_table NaN", "B10", _edit_raw(_set("idf_table", 0, math.nan))),
    Case("idf_table infinite", "B10", _edit_raw(_set("idf_table", -1, math.inf))),
    Case("idf_table zero", "B10", _edit_raw(_set("idf_table", 0, 0.0))),
    Case("threshold NaN", "B11", _edit(lambda m: setattr(m, "threshold", math.nan))),
    Case("threshold < 0", "B11", _edit(lambda m: setattr(m, "threshold", -0.1))),
    Case("threshold > 1", "B11", _edit(lambda m: setattr(m, "threshold", 1.5))),
    Case("onnx hash not hex", "B12", _edit(lambda m: setattr(m, "onnx_sha256", m.onnx_sha256.upper()))),
    Case("familiarity missing", "B13", _edit(lambda m: m.ClearField("familiarity"))),
    Case("familiarity min_order 0", "B13", _edit(lambda m: setattr(m.familiarity, "min_order", 0))),
    Case("familiarity min_order > max_n", "B13",
         _edit(lambda m: setattr(m.familiarity, "min_order", m.analyzer.max_n + 1))),
    Case("familiarity max NaN", "B13",
         _edit(lambda m: setattr(m.familiarity, "max_unfamiliar", math.nan))),
    Case("familiarity max > 1", "B13",
         _edit(lambda m: setattr(m.familiarity, "max_unfamiliar", 1.5))),
    Case("format 4 without rules", "B14", _edit(lambda m: setattr(m, "format_version", 4))),
    Case("rules in a format 3 file", "B14", _edit(_with_rules(_GOOD_RULE, format_version=3))),
    Case("rule label out of range", "B14", _edit(_with_rules({**_GOOD_RULE, "label": 2}))),
    Case("rule label huge", "B14", _edit(_with_rules({**_GOOD_RULE, "label": 2**32 - 1}))),
    Case("rule without words", "B14", _edit(_with_rules({"unless_contains": ["不要"]}))),
    Case("rule word empty", "B14", _edit(_with_rules({"contains": ["删除", ""]}))),
    Case("rule word too long", "B14", _edit(_with_rules({"ends_with": ["删" * 65]}))),
    Case("rule name empty", "B14", _edit(_with_rules({**_GOOD_RULE, "name": ""}))),
    Case("rule names repeated", "B14",
         _edit(_with_rules({**_GOOD_RULE, "name": "x"}, {**_GOOD_RULE, "name": "x"}))),
    Case("too many rules", "B14", _edit(_with_rules(*[_GOOD_RULE] * 257))),
    Case("too many rule words", "B14",
         _edit(_with_rules(*[{"contains": [f"w{j}" for j in range(100)]}] * 41))),
    Case("onnx missing", "F1", lambda d: onnx_path(d).unlink()),
    Case("onnx is a FIFO", "F1", _replace(onnx_path, lambda p: os.mkfifo(p))),
    Case("onnx larger than the limit", "F2", _replace(onnx_path, _sparse(MAX_ONNX_BYTES + 1))),
    Case("onnx changed (one byte)", "P1", _other_onnx),
    Case("onnx garbage, hash re-recorded", "O1", lambda d: _install_onnx(d, b"\x08\x07garbage")),
    Case("onnx input renamed", "O2", _edit_onnx(_rename_input)),
    Case("onnx declared width changed", "O2", _edit_onnx(_declared_width)),
    Case("onnx input float64", "O2", _edit_onnx(_input_type_double)),
    Case("onnx output renamed", "O3", _edit_onnx(_rename_output)),
    Case("onnx declared classes changed", "O3", _edit_onnx(_declared_classes)),
)


def make_case(good: Path, case: Case, into: Path) -> Path:
    """Copy the pair in ``good`` into ``into`` and damage it as ``case`` says."""
    into.mkdir(parents=True, exist_ok=True)
    for suffix in ("classifier.onnx", "preprocessor.bin"):
        shutil.copy(good / f"{TASK}_{suffix}", into / f"{TASK}_{suffix}")
    case.damage(into)
    return into


@dataclass(frozen=True)
class Finished:
    """A finished process: exit status, output, wall time and peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


#: Forks and execs the command and writes its exit status and rusage to argv[1]. A small
#: launcher, because a child forked from a big process (pytest) starts with the parent's
#: resident pages, which ``ru_maxrss`` would count.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_measured(cmd: list[str], stdin: bytes = b"", timeout: float = 60.0,
                 env: dict | None = None) -> Finished:
    """Run ``cmd`` to the end; measure its wall time and peak RSS (``wait4``, that process alone).

    A process still running after ``timeout`` is killed (with its launcher) and reported with
    exit status -9, so that a hang shows up as a failure instead of a stuck test.
    """
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "usage"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(report), *cmd],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return Finished(-9, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                            time.perf_counter() - started, 0.0)
        seconds = time.perf_counter() - started
        code, rss_kb = report.read_text().split()
        return Finished(int(code), out.decode("utf-8", "replace"),
                        err.decode("utf-8", "replace"), seconds, int(rss_kb) / 1024)
