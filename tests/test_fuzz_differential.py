"""Differential fuzzing: the Python text spec and runtime against the JavaScript one
(runtimes/node) and the Rust one (runtimes/rust).

Thousands of seeded random strings over CJK, Latin, Greek, punctuation of all widths, every
whitespace code point, emoji with ZWJ sequences, combining marks, control and format
characters are normalised and split into n-grams by ``foundry.textspec``, by
``runtimes/node/src/textspec.js`` and by the Rust crate; the results must be identical, except
on texts that the Unicode-version rule of docs/preprocessor-spec.md ("Unicode versions")
declares version-sensitive, and a disagreement on such a text must be explained by that rule.

Texts travel to the oracles through a file of JSON lines (never argv: NULs and lone
surrogates). Texts holding a lone surrogate are not sent to Rust: UTF-8 cannot carry them (the
native fast path receives them from Python and is compared in tests/test_native.py).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import FORGED_TASKS, forged_models_or_skip

from foundry.conformance_cases import (
    CASE_CONTEXT_CHANGED,
    HARD_CASES,
    VERSION_SENSITIVE_EXAMPLES,
    is_version_sensitive,
)
from foundry.textspec import REMOVED_CATEGORIES, WHITESPACE, TextSpec, ngrams, normalize

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "runtimes" / "node"
ORACLE = NODE_DIR / "tools" / "textspec-oracle.js"
RUST_ORACLE = REPO / "runtimes" / "rust" / "target" / "release" / "foundry-rt-oracle"
#: The runtimes compared with Python: node when installed (skipped otherwise, as before), Rust
#: always (``make rust`` builds it; a missing binary fails with that instruction).
RUNTIMES = ("node", "rust")


def oracle_command(runtime: str, mode: str) -> list[str]:
    """The command line prefix of ``runtime``'s ``mode`` ("textspec" / "runtime") oracle."""
    if runtime == "node":
        if shutil.which("node") is None:
            pytest.skip("node is not installed")
        return ["node", str(ORACLE if mode == "textspec" else RUNTIME_ORACLE)]
    if not RUST_ORACLE.is_file():
        pytest.fail(f"{RUST_ORACLE} is not built: run `make rust`")
    return [str(RUST_ORACLE), mode]


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def run_oracle(runtime: str, mode: str, args: list[str], texts: list[str],
               work: Path) -> list[dict | None]:
    """One row per text from ``runtime``'s oracle; None for a text it cannot receive (Rust:
    lone surrogates)."""
    sent = [t for t in texts if runtime == "node" or not has_surrogate(t)]
    inputs = work / f"{runtime}_texts.jsonl"
    inputs.write_text("".join(json.dumps(t) + "\n" for t in sent), encoding="ascii")
    outputs = work / f"{runtime}_out.jsonl"
    run = subprocess.run([*oracle_command(runtime, mode), *args, str(inputs), str(outputs)],
                         timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = iter(json.loads(line) for line in outputs.read_text(encoding="utf-8").splitlines())
    out = [next(rows) if runtime == "node" or not has_surrogate(t) else None for t in texts]
    assert next(rows, None) is None, f"{outputs}: more rows than texts"
    return out

# --- the random text generator ---------------------------------------------------------------


def _span(lo: int, hi: int) -> list[str]:
    return [chr(cp) for cp in range(lo, hi + 1)]


CJK = _span(0x4E00, 0x9FFF)
COMMON_HANZI = list("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会")
CN_PUNCT = list("，。？！、；：“”‘’（）《》【】…—·～「」『』〈〉")
LATIN = _span(0x41, 0x5A) + _span(0x61, 0x7A) + _span(0xC0, 0xFF) + _span(0x100, 0x17F)
DIGITS = _span(0x30, 0x39) + _span(0xFF10, 0xFF19) + _span(0x2460, 0x2473) + _span(0x2160, 0x216F)
ASCII_PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
FULLWIDTH = _span(0xFF01, 0xFF5E) + _span(0xFF61, 0xFF9F) + _span(0xFFE0, 0xFFEE)
GREEK = _span(0x391, 0x3A9) + _span(0x3B1, 0x3C9) + ["\u03c2", "\u0345", "\u1fbc", "\u1f88"]
CASING = [
    "\u0130",
    "\u0131",
    "\u00df",
    "\u1e9e",
    "\ufb01",
    "\u01c4",
    "\u01c5",
    "\u212a",
    "\u212b",
    "\u2126",
    "\u03a3",
    "\u03a3",
    "\u0345",
    "\u3392",
    "\u337f",
    "\u2474",
]
WHITESPACE_LIKE = sorted(WHITESPACE) + ["\u180e", "\u200b", "\ufeff", "\u2060", "\u00ad"]
CONTROL = _span(0x00, 0x1F) + _span(0x7F, 0x9F)
FORMAT = (
    _span(0x200B, 0x200F)
    + _span(0x202A, 0x202E)
    + _span(0x2060, 0x2064)
    + ["\ufeff", "\u00ad", "\u061c", "\U000e0001"]
    + _span(0xE0020, 0xE007F)
)
COMBINING = _span(0x300, 0x36F) + _span(0x1AB0, 0x1ABE) + _span(0x20D0, 0x20F0) + ["\u3099"]
EMOJI = (
    _span(0x1F600, 0x1F64F)
    + _span(0x1F300, 0x1F3FA)
    + _span(0x1F3FB, 0x1F3FF)
    + _span(0x1F1E6, 0x1F1FF)
    + ["\u200d", "\ufe0f", "\u20e3", "\u2764"]
)
#: Composition and reordering corner cases of NFKC: conjoining jamo and syllables (Hangul
#: composition), Devanagari nukta and virama, Tibetan and Hebrew points (many combining classes).
COMPOSING = (
    _span(0x1100, 0x1112)
    + _span(0x1161, 0x1175)
    + _span(0x11A8, 0x11C2)
    + _span(0xAC00, 0xAC20)
    + _span(0x0915, 0x0939)
    + ["\u093c", "\u094d", "\u0958"]
    + _span(0x0F71, 0x0F84)
    + _span(0x05B0, 0x05C7)
    + ["\u0344", "\u0340", "\u0f73", "\u2126", "\u212b", "\u1e9b", "\u0323"]
)
#: Code points whose case properties changed between Unicode 14 and 17 (see the spec).
VERSION_TRAPS = ["\u0295", "\u02e4", "\U0001171e", "\u03a3"]
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00"]

POOLS: list[tuple[float, list[str]]] = [
    (14, CJK),
    (14, COMMON_HANZI),
    (8, CN_PUNCT),
    (10, LATIN),
    (4, DIGITS),
    (5, ASCII_PUNCT),
    (6, FULLWIDTH),
    (5, GREEK),
    (4, CASING),
    (10, WHITESPACE_LIKE),
    (3, CONTROL),
    (3, FORMAT),
    (5, COMBINING),
    (4, COMPOSING),
    (6, EMOJI),
    (1, VERSION_TRAPS),
    (0.5, LONE_SURROGATES),
]
_POOL_WEIGHTS = [w for w, _ in POOLS]
_POOL_CHARS = [chars for _, chars in POOLS]


def _any_code_point(rng: random.Random) -> str:
    """Any code point except surrogates, assigned or not (exercises the Cn rule)."""
    cp = rng.randrange(0x110000 - 0x800)
    return chr(cp + 0x800 if cp >= 0xD800 else cp)


def random_text(rng: random.Random) -> str:
    """One random text: mostly short, sometimes long (truncation), never a surrogate pair.

    A high surrogate directly followed by a low one is two code points in Python but one
    astral character once it crosses to JavaScript (UTF-16); real input (decoded UTF-8)
    never holds surrogates, so such pairs are not generated.
    """
    roll = rng.random()
    length = (
        rng.randint(0, 12)
        if roll < 0.5
        else rng.randint(0, 60)
        if roll < 0.97
        else (rng.randint(250, 700))
    )
    chars: list[str] = []
    for _ in range(length):
        if rng.random() < 0.003:
            ch = _any_code_point(rng)
        else:
            ch = rng.choice(rng.choices(_POOL_CHARS, weights=_POOL_WEIGHTS)[0])
        if chars and "\ud800" <= chars[-1] <= "\udbff" and "\udc00" <= ch <= "\udfff":
            continue
        chars.append(ch)
    return "".join(chars)


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [random_text(rng) for _ in range(count)]


# --- running both sides ----------------------------------------------------------------------


def spec_settings(spec: TextSpec) -> dict:
    """The normalizer/analyzer settings as the .bin records them (camelCase, protobufjs)."""
    return {
        "normalizer": {
            "specVersion": 1,
            "nfkc": True,
            "lowercase": spec.lowercase,
            "removedCategories": sorted(REMOVED_CATEGORIES),
            "whitespace": sorted(ord(ch) for ch in WHITESPACE),
            "maxChars": spec.max_chars,
        },
        "analyzer": {
            "minN": spec.min_n,
            "maxN": spec.max_n,
            "wordBoundaryPadding": spec.word_boundary_padding,
            "wordMaxN": spec.word_max_n,
            "headChars": spec.head_chars,
        },
    }


def run_textspec(runtime: str, texts: list[str], spec: TextSpec, work: Path,
                 normalize_only: bool = False) -> list[dict | None]:
    settings = work / "settings.json"
    settings.write_text(
        json.dumps({**spec_settings(spec), "normalizeOnly": normalize_only}), encoding="utf-8"
    )
    return run_oracle(runtime, "textspec", [str(settings)], texts, work)


def describe(text: str) -> str:
    return " ".join(f"U+{ord(ch):04X}" for ch in text[:80])


def assert_same_textspec(texts: list[str], spec: TextSpec, work: Path) -> int:
    """Compare every runtime with the Python reference (``foundry.textspec``) and with the
    Python runtime's fast paths (``fast_normalize``, batched ``normalize_many``,
    ``ngram_list``); return how many disagreements the Unicode rule explained."""
    from foundry.runtime import fast_normalize, ngram_list, normalize_many

    rows = {runtime: run_textspec(runtime, texts, spec, work) for runtime in RUNTIMES}
    batch = normalize_many(texts, spec)
    explained = 0
    for i, (text, batched) in enumerate(zip(texts, batch, strict=True)):
        py_norm = normalize(text, spec)
        py_grams = ngrams(py_norm, spec)
        fast = fast_normalize(text, spec)
        assert fast == batched == py_norm, (
            f"Python runtime fast paths disagree on {text!r} ({describe(text)}) with {spec}: "
            f"textspec {py_norm!r}, fast_normalize {fast!r}, normalize_many {batched!r}"
        )
        assert sorted(ngram_list(py_norm, spec)) == sorted(py_grams), repr(text)
        for runtime, other in rows.items():
            if other[i] is None or (py_norm, py_grams) == (other[i]["normalized"],
                                                          other[i]["ngrams"]):
                continue
            assert is_version_sensitive(text), (
                f"Python and {runtime} disagree on {text!r} ({describe(text)}) with {spec}: "
                f"python {py_norm!r}, {runtime} {other[i]['normalized']!r}; "
                f"python n-grams {py_grams[:20]}, {runtime} {other[i]['ngrams'][:20]}"
            )
            explained += 1
    return explained


SPECS = [
    TextSpec(),
    TextSpec(max_chars=7, min_n=2, max_n=4, word_boundary_padding=True),
    TextSpec(max_chars=64, min_n=1, max_n=2, word_boundary_padding=False, lowercase=False),
    TextSpec(max_chars=40, min_n=1, max_n=3, word_max_n=3),
    TextSpec(max_chars=40, min_n=1, max_n=3, head_chars=3),
    TextSpec(max_chars=12, min_n=2, max_n=4, word_max_n=2, head_chars=16),
]


@pytest.mark.parametrize("spec", SPECS, ids=["default", "short-2-4", "nopad-nolower", "words-3",
                                             "head-3", "words-head-16"])
def test_textspec_python_equals_js_and_rust_on_random_texts(spec: TextSpec,
                                                            tmp_path: Path) -> None:
    texts = random_texts(seed=20261129, count=5000)
    explained = assert_same_textspec(texts, spec, tmp_path)
    # The generator mixes in unassigned code points: if nothing at all is version
    # sensitive, the generator lost a pool and this test would have stopped probing it.
    assert sum(is_version_sensitive(t) for t in texts) > 0
    assert explained <= len(RUNTIMES) * sum(is_version_sensitive(t) for t in texts)


def test_textspec_python_equals_js_and_rust_on_hard_cases(tmp_path: Path) -> None:
    for spec in SPECS:
        assert assert_same_textspec(HARD_CASES, spec, tmp_path) == 0


def assigned_code_points() -> list[str]:
    """Every code point assigned in this Python's Unicode, except surrogates and private use
    (Co: its properties are fixed by the stability policy and never differ)."""
    return [
        chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")
    ]


def test_every_assigned_code_point_alone(tmp_path: Path) -> None:
    """Exhaustive: each code point assigned in the trainer's Unicode, alone, agrees."""
    texts = assigned_code_points()
    assert len(texts) > 140_000
    assert assert_same_textspec(texts, TextSpec(), tmp_path) == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_final_sigma_context_of_every_assigned_code_point(runtime: str, tmp_path: Path) -> None:
    """Exhaustive: ``cΣ`` and ``acΣ`` for every assigned c. These two contexts tell whether c
    is cased, case-ignorable or neither (the properties Final_Sigma reads); every code point
    whose class differs between the versions must be in CASE_CONTEXT_CHANGED."""
    texts = [t for ch in assigned_code_points() for t in (f"{ch}\u03a3", f"a{ch}\u03a3")]
    rows = run_textspec(runtime, texts, TextSpec(max_chars=64), tmp_path, normalize_only=True)
    differing = {
        text[-2]
        for text, row in zip(texts, rows, strict=True)
        if row is not None and row["normalized"] != normalize(text, TextSpec(max_chars=64))
    }
    assert differing <= CASE_CONTEXT_CHANGED, sorted(f"U+{ord(c):04X}" for c in differing)


def test_version_sensitive_rule_is_needed(tmp_path: Path) -> None:
    """The final-sigma traps of the rule really differ (if not, the rule is stale: update it)."""
    oracle_command("node", "textspec")
    node_unicode = subprocess.run(
        ["node", "-p", "process.versions.unicode"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(node_unicode.split(".")[0]) < 16 or unicodedata.unidata_version != "14.0.0":
        pytest.skip(f"the examples are for Unicode 14.0 vs >= 16, not {node_unicode}")
    sigma_traps = [t for t in VERSION_SENSITIVE_EXAMPLES if "\u03a3" in t]
    assert len(sigma_traps) == 3
    rows = run_textspec("node", sigma_traps, TextSpec(), tmp_path)
    for text, js in zip(sigma_traps, rows, strict=True):
        assert js["normalized"] != normalize(text), describe(text)


# --- the whole runtime: Python runtime == JavaScript runtime == scikit-learn -----------------

RUNTIME_ORACLE = NODE_DIR / "tools" / "runtime-oracle.js"
FEATURE_TOL = 1e-6
PROBA_TOL = 1e-5


def mutate(seed_text: str, rng: random.Random) -> str:
    """A known text with random damage: inserted characters from every pool, width changes."""
    chars = list(seed_text)
    for _ in range(rng.randint(0, 6)):
        pos = rng.randint(0, len(chars))
        chars.insert(pos, rng.choice(rng.choices(_POOL_CHARS, weights=_POOL_WEIGHTS)[0]))
    if rng.random() < 0.3:  # to full width where one exists
        chars = [chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in chars]
    if rng.random() < 0.2:
        chars = [c.upper() for c in chars]
    return "".join(chars)


def runtime_texts(seed: int, count: int, seeds: list[str]) -> list[str]:
    """Half pure random texts, half mutated known texts (so that many n-grams hit the vocabulary)."""
    rng = random.Random(seed)
    return [random_text(rng) if i % 2 else mutate(rng.choice(seeds), rng) for i in range(count)]


def run_runtime(runtime: str, models_dir: Path, task: str, texts: list[str],
                work: Path) -> list[dict | None]:
    return run_oracle(runtime, "runtime", [str(models_dir), task], texts, work)


def sklearn_reference(pipeline, texts: list[str]) -> tuple[list, np.ndarray]:
    """Sparse rows and probabilities as the export's conformance vectors compute them."""
    features = pipeline.named_steps["tfidf"].transform(texts).tocsr()
    features.sort_indices()
    proba = pipeline.named_steps["clf"].predict_proba(
        features.astype(np.float32).astype(np.float64)
    )
    rows = [
        (
            features.indices[features.indptr[i] : features.indptr[i + 1]].tolist(),
            features.data[features.indptr[i] : features.indptr[i + 1]],
        )
        for i in range(len(texts))
    ]
    return rows, proba


def python_runtime(model, texts: list[str], batch: int = 512) -> tuple[list, np.ndarray]:
    rows = [model.featurize(t) for t in texts]
    proba = np.concatenate(
        [model.predict_proba(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    )
    return [(idx.tolist(), values) for idx, values in rows], proba


def three_way_disagreements(model, pipeline, texts: list[str],
                            js_rows: list[dict | None]) -> list[str]:
    """Every disagreement between the Python runtime, another runtime (``js_rows``, from node
    or Rust: None rows are skipped) and scikit-learn not explained by the Unicode rule."""
    py_rows, py_proba = python_runtime(model, texts)
    sk_rows = sk_proba = None
    if pipeline is not None:
        sk_rows, sk_proba = sklearn_reference(pipeline, texts)
    problems: list[str] = []
    for i, (text, js) in enumerate(zip(texts, js_rows, strict=True)):
        if js is None or is_version_sensitive(text):
            continue
        where = f"{text[:40]!r} ({describe(text)})"
        if js["normalized"] != normalize(text, model.spec):
            problems.append(f"{where}: normalised {js['normalized']!r} (js) vs python")
            continue
        js_idx = [f[0] for f in js["features"]]
        js_val = np.asarray([f[1] for f in js["features"]], dtype=np.float64)
        py_idx, py_val = py_rows[i]
        if js_idx != py_idx:
            problems.append(f"{where}: feature indices js {js_idx[:8]} vs python {py_idx[:8]}")
            continue
        if len(js_val) and np.max(np.abs(js_val - py_val)) > FEATURE_TOL:
            problems.append(f"{where}: feature values js vs python")
        if np.max(np.abs(np.asarray(js["probabilities"]) - py_proba[i])) > PROBA_TOL:
            problems.append(
                f"{where}: probabilities js {js['probabilities']} vs python {py_proba[i]}"
            )
        if js["label"] != model.labels[int(np.argmax(py_proba[i]))]:
            problems.append(f"{where}: label js {js['label']} vs python")
        if sk_rows is None:
            continue
        sk_idx, sk_val = sk_rows[i]
        if sk_idx != py_idx:
            problems.append(
                f"{where}: feature indices sklearn {sk_idx[:8]} vs runtimes {py_idx[:8]}"
            )
            continue
        if len(sk_val) and np.max(np.abs(sk_val - js_val)) > FEATURE_TOL:
            problems.append(f"{where}: feature values sklearn vs js")
        if np.max(np.abs(sk_proba[i] - py_proba[i])) > PROBA_TOL:
            problems.append(
                f"{where}: probabilities sklearn {sk_proba[i]} vs runtimes {py_proba[i]}"
            )
        top2 = np.sort(sk_proba[i])[-2:]
        if (
            top2[1] - top2[0] > PROBA_TOL
            and js["label"] != model.labels[int(np.argmax(sk_proba[i]))]
        ):
            problems.append(f"{where}: label sklearn vs runtimes {js['label']}")
    return problems


FUZZ_SPECS = {
    "fuzz_default": TextSpec(),
    "fuzz_nopad_2_4": TextSpec(max_chars=24, min_n=2, max_n=4, word_boundary_padding=False),
    "fuzz_short_1_2": TextSpec(max_chars=9, min_n=1, max_n=2, lowercase=False),
    "fuzz_words": TextSpec(max_chars=48, min_n=1, max_n=3, word_max_n=2),
    "fuzz_head": TextSpec(max_chars=48, min_n=1, max_n=3, head_chars=3),
}
#: Many-label int8 models (the intent benchmarks' trainer; the fused multiclass path).
MANY_LABEL_SPECS = {
    "fuzz_words_many": TextSpec(max_chars=48, min_n=1, max_n=3, word_max_n=2),
    "fuzz_words_many_sparse": TextSpec(max_chars=48, min_n=1, max_n=3, word_max_n=2),
}
#: Of those, the models cut to this many int8 weights: their graphs store ``W_q`` as sparse
#: entries (``foundry.quantized.sparse_entries``), which each runtime rebuilds.
SPARSE_WEIGHTS = {"fuzz_words_many_sparse": 150}


@pytest.fixture(scope="module")
def fuzz_models(tmp_path_factory) -> tuple[Path, dict]:
    """Exported models (one per text-spec variant) and their scikit-learn pipelines."""
    from conftest import QUESTIONS, STATEMENTS, fit_int8, fit_tiny

    from foundry.export import artifact_bytes

    models_dir = tmp_path_factory.mktemp("fuzz-models")
    pipelines = {}
    texts = QUESTIONS + STATEMENTS
    three = np.arange(len(texts)) % 3  # three arbitrary labels: the runtimes must agree anyway
    fitted = {task: fit_tiny(spec) for task, spec in FUZZ_SPECS.items()} | {
        task: fit_int8(texts, three, ["a", "b", "c"], task, temperature=0.3, spec=spec)
        for task, spec in MANY_LABEL_SPECS.items()}
    for task, trained in fitted.items():
        if task in SPARSE_WEIGHTS:
            trained.pipeline.named_steps["clf"].sparsify(SPARSE_WEIGHTS[task])
        onnx_bytes, bin_bytes = artifact_bytes(trained, 0.6, task=task)
        assert (b"ScatterElements" in onnx_bytes) == (task in SPARSE_WEIGHTS), task
        (models_dir / f"{task}_classifier.onnx").write_bytes(onnx_bytes)
        (models_dir / f"{task}_preprocessor.bin").write_bytes(bin_bytes)
        pipelines[task] = trained.pipeline
    pipelines["_seeds"] = QUESTIONS + STATEMENTS + HARD_CASES
    return models_dir, pipelines


def single_text_disagreements(model, texts: list[str],
                              js_rows: list[dict | None]) -> list[str]:
    """``model.predict(text)`` (the one-text path) against the other runtime's probabilities."""
    problems = []
    for text, js in zip(texts, js_rows, strict=True):
        if js is None or is_version_sensitive(text):
            continue
        got = list(model.predict(text).probabilities.values())
        if np.max(np.abs(np.asarray(got) - np.asarray(js["probabilities"]))) > PROBA_TOL:
            problems.append(f"{text[:40]!r}: predict() {got} vs js {js['probabilities']}")
    return problems


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("task", sorted(FUZZ_SPECS | MANY_LABEL_SPECS))
def test_python_runtime_equals_other_runtime_equals_sklearn(
    task: str, backend: str, runtime: str, fuzz_models: tuple[Path, dict], tmp_path: Path
) -> None:
    from foundry.runtime import MicroModel

    models_dir, pipelines = fuzz_models
    texts = runtime_texts(seed=6, count=3000, seeds=pipelines["_seeds"])
    model = MicroModel.load(task, models_dir, backend=backend)
    assert model.backend == backend
    rows = run_runtime(runtime, models_dir, task, texts, tmp_path)
    problems = three_way_disagreements(model, pipelines[task], texts, rows)
    problems += single_text_disagreements(model, texts[::10], rows[::10])
    assert not problems, f"{len(problems)} disagreements, first: " + "\n".join(problems[:10])
    # The fuzz must reach the model: many (mutated known) texts have features.
    assert sum(1 for r in rows if r and r["features"]) > len(texts) // 5


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_forged_default_models_agree_on_random_texts(runtime: str, tmp_path: Path) -> None:
    """Python runtime == JS / Rust runtime (== the run's scikit-learn pipeline, if the run is
    here)."""
    from foundry.runtime import MicroModel

    models_dir = forged_models_or_skip()
    for task in FORGED_TASKS:
        model = MicroModel.load(task, models_dir)  # the default backend, as `foundry predict`
        seeds = [
            v["text"]
            for v in json.loads(
                (models_dir / f"{task}_conformance.json").read_text(encoding="utf-8")
            )["vectors"]
        ]
        texts = runtime_texts(seed=7, count=2000, seeds=seeds)
        rows = run_runtime(runtime, models_dir, task, texts, tmp_path)
        pipeline = _forged_pipeline(task, model)
        if os.environ.get("FOUNDRY_REQUIRE_FORGED") == "1":
            assert pipeline is not None, f"{task}: the run that forged {models_dir} is not in runs/"
        problems = three_way_disagreements(model, pipeline, texts, rows)
        problems += single_text_disagreements(model, texts[::10], rows[::10])
        assert not problems, f"{task}: {len(problems)} disagreements:\n" + "\n".join(problems[:10])


def _forged_pipeline(task: str, model):
    """The scikit-learn pipeline of the run that made ``model``: the newest run of its
    blueprint trained on the same data (``data_sha256``) with the same vocabulary. Not simply
    the latest run: a working copy's latest run may be an experiment forged into another
    models folder."""
    from foundry.runs import read_json, runs_of
    from foundry.trained import load_trained

    for state in reversed(runs_of(model.preprocessor.provenance.blueprint)):
        chosen = state.run_dir / "train" / task / "train.json"
        if not chosen.is_file() or \
                read_json(chosen).get("data_sha256") != model.preprocessor.provenance.data_sha256:
            continue
        try:
            pipeline = load_trained(state.run_dir, task).pipeline
        except (FileNotFoundError, ValueError):
            continue
        vocab = pipeline.named_steps["tfidf"].vocabulary_
        if len(vocab) == model.n_features and all(
                vocab.get(g) == i for g, i in model.vocabulary.items()):
            return pipeline
    return None


# --- the hard cases themselves ---------------------------------------------------------------


def test_hard_cases_cover_what_the_conformance_vectors_promise() -> None:
    joined = "".join(HARD_CASES)
    assert "" in HARD_CASES
    assert all(ch in joined for ch in WHITESPACE), "every whitespace code point"
    categories = {unicodedata.category(ch) for ch in joined}
    assert {"Cc", "Cf", "Mn", "Co", "Zl", "Zp"} <= categories
    assert "\u200d" in joined and "\u0130" in joined and "\u03a3" in joined  # ZWJ, İ, Σ
    assert any(len(t) > 2 * TextSpec().max_chars for t in HARD_CASES), "a very long input"
    assert any(0xFF01 <= ord(ch) <= 0xFF5E for ch in joined), "full-width forms"
    assert len(HARD_CASES) == len(set(HARD_CASES))


def test_hard_cases_are_portable_inputs() -> None:
    """No surrogates (not valid UTF-8) and nothing the Unicode-version rule excludes."""
    for text in HARD_CASES:
        assert not any("\ud800" <= ch <= "\udfff" for ch in text), repr(text)
        assert not is_version_sensitive(text), repr(text)


def test_version_sensitive_rule() -> None:
    assert all(is_version_sensitive(t) for t in VERSION_SENSITIVE_EXAMPLES)
    assert not is_version_sensitive("\u0295 without a sigma")
    assert not is_version_sensitive("ΟΔΥΣΣΕΥΣ")
    assert is_version_sensitive("\U0001d6ba\u0295")  # MATHEMATICAL BOLD CAPITAL SIGMA: NFKC -> Σ
