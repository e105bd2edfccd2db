"""The fast paths of :mod:`foundry.runtime` against their references.

- :func:`fast_normalize` / :func:`normalize_many` against :func:`foundry.textspec.normalize`;
- :class:`NgramSlicer` against :func:`foundry.textspec.char_ngrams`;
- the numpy backend against ONNX Runtime (the reference) on binary and multiclass models;
- the Unicode facts the fast normaliser relies on, checked on this Python's whole database.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import QUESTIONS, STATEMENTS, TINY_RULE_TEXTS, fit_int8, install_model, tiny_reflex

from foundry.conformance_cases import HARD_CASES
from foundry.familiarity import Familiarity
from foundry.runtime import (
    VECTOR_MIN_BATCH,
    ArtifactError,
    MicroModel,
    NgramSlicer,
    Prediction,
    check_conformance,
    fast_normalize,
    normalize_many,
    read_linear_graph,
)
from foundry.runtime.heads import _logistic, _post_transform
from foundry.runtime.normalize import _CAPITAL_SIGMA, _JOIN, _UNSAFE
from foundry.runtime.prediction import _prediction
from foundry.textspec import WHITESPACE, TextSpec, char_ngrams, normalize

GREETINGS = ["你好", "早上好", "晚安", "hello", "hi there", "嗨", "下午好呀", "大家好", "您好啊", "good night"]

# --- random texts ---------------------------------------------------------------------------

POOLS = [
    "今天天气怎么样明天会下雨吗帮我记一下打开灯好的收到为什么谁哪里几点吗呢吧啊的了",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "？！，。、；：“”（）?!,.;:'\"()ＡＢＣ１２３～…《》【】",
    "😀👍🏽👨‍👩‍👧‍👦🇨🇳❤️\ufe0f",
    "".join(sorted(WHITESPACE)) + "\x00\x1f\x7f\x85\u200b\u200d\ufeff\u2060\u00ad\U000e0041",
    "éüİıΣσςßẞǅﬁ\u0301\u0308\u0345\u0327ΑΣ ΟΔΟΣ",
    "한국어가각\u1100\u1161\u11a8ㄱㅏ",  # Hangul syllables, conjoining and compatibility jamo
    "①⑴㍱㎒ｶﾞﾟ\u3099\u309a\u2126\u212b\u0958",  # compatibility and composition exclusions
    _JOIN + _UNSAFE + "\ud800\udfff",  # the joiner, the unsafe marker, lone surrogates
]


def random_texts(n: int, seed: int, max_len: int = 40) -> list[str]:
    rng = random.Random(seed)
    out = ["", " ", "\u3000", _JOIN, _UNSAFE, "ΑΣ", "Σ", "aΣ b", " Σa "]
    while len(out) < n:
        pools = rng.sample(POOLS, rng.randint(1, 3))
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, max_len))))
    return out


SPECS = [
    TextSpec(),
    TextSpec(max_chars=7),
    TextSpec(lowercase=False),
    TextSpec(min_n=2, max_n=4),
    TextSpec(min_n=1, max_n=1),
    TextSpec(word_boundary_padding=False),
    TextSpec(min_n=3, max_n=5, word_boundary_padding=False, max_chars=9),
]


# --- normaliser -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_fast_normalize_equals_reference(spec):
    for text in [*HARD_CASES, *random_texts(3000, seed=hash(spec) % 1000)]:
        assert fast_normalize(text, spec) == normalize(text, spec), repr(text)


@pytest.mark.parametrize("spec", SPECS[:3], ids=repr)
def test_normalize_many_equals_reference(spec):
    texts = [*HARD_CASES, *random_texts(2000, seed=5)]
    rng = random.Random(11)
    for size in (1, 2, 7, 64, len(texts)):
        batch = rng.sample(texts, size)
        assert normalize_many(batch, spec) == [normalize(t, spec) for t in batch]
    assert normalize_many([], spec) == []


def test_normalize_many_context_does_not_leak_between_texts():
    # Final sigma, combining marks, jamo and edge spaces right at the joints.
    batch = ["ΑΣ", "Σ", "a", "\u0301b", "가", "\u11a8", "e", "\u0301", " x ", "  ", "ok" + _JOIN]
    assert normalize_many(batch) == [normalize(t) for t in batch]


def test_normalizers_reject_non_strings():
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        fast_normalize(b"abc")
    with pytest.raises(TypeError, match="text must be str, got int"):
        normalize_many(["a", 3])


def test_characters_that_can_follow_into_a_composition_are_marks_or_jamo():
    """The fact behind ``_starts_stable``: every second element of a canonical pair
    decomposition (what NFC may compose with a preceding character) is a combining
    character, a mark, or a Hangul conjoining jamo."""
    seconds = set()
    for cp in range(0x110000):
        decomposition = unicodedata.decomposition(chr(cp))
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if len(parts) == 2:
                seconds.add(chr(int(parts[1], 16)))
    assert len(seconds) > 50
    odd = [
        f"U+{ord(ch):04X}" for ch in seconds
        if unicodedata.combining(ch) == 0
        and unicodedata.category(ch) not in {"Mn", "Mc", "Me"}
        and not 0x1100 <= ord(ch) < 0x1200
    ]
    assert not odd, odd


def test_lowercase_is_context_free_except_capital_sigma():
    """The fact behind per-character lowercasing: Python's ``str.lower`` only looks at
    neighbours for U+03A3 (Final_Sigma)."""
    cased = [chr(cp) for cp in range(0x30000) if chr(cp).lower() != chr(cp) or chr(cp).isalpha()]
    rng = random.Random(3)
    neighbours = ["a", "A", "\u0301", "'", "σ", "ς", " ", "İ"]
    for ch in cased:
        if ch == _CAPITAL_SIGMA:
            continue
        for other in neighbours:
            assert (other + ch).lower() == other.lower() + ch.lower()
            assert (ch + other).lower() == ch.lower() + other.lower()
    for _ in range(20000):
        a, b = rng.choice(cased), rng.choice(cased)
        if _CAPITAL_SIGMA not in (a, b):
            assert (a + b).lower() == a.lower() + b.lower()
    assert ("A" + _CAPITAL_SIGMA).lower() != "a" + _CAPITAL_SIGMA.lower()


# --- n-grams --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_ngram_slicer_yields_the_reference_multiset(spec):
    slicer = NgramSlicer(spec)
    for text in [*HARD_CASES, *random_texts(1500, seed=2, max_len=80)]:
        normalized = normalize(text, spec)
        assert Counter(slicer(normalized)) == Counter(char_ngrams(normalized, spec)), repr(text)


# --- models ---------------------------------------------------------------------------------


#: Conformance texts that a gate shuts: little of them is in the tiny vocabularies.
UNFAMILIAR = ["请拨打13800138000找王先生", "qwerty zxcv asdf", "明天下午三点半在人民广场集合吧？",
              "天气预报说周末有雨，记得带伞哦", "why not", "Привет, как дела?", "嗯嗯好的吗"]


def _install(models_dir: Path, task: str, trained, threshold: float = 0.5) -> None:
    from foundry.export import conformance_texts

    install_model(trained, models_dir, task, threshold,
                  texts=conformance_texts(QUESTIONS + STATEMENTS + GREETINGS, UNFAMILIAR),
                  familiarity=GATES.get(task))


def _fit(clf, *, classes: int = 2, spec: TextSpec | None = None, **tfidf):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    from foundry.textspec import Analyzer

    spec = spec or TextSpec()
    groups = [QUESTIONS, STATEMENTS, GREETINGS][:classes]
    texts = [t for g in groups for t in g]
    y = np.array([k for k, g in enumerate(groups) for _ in g])
    options = {"sublinear_tf": True, "norm": "l2", **tfidf}
    pipeline = Pipeline([
        ("tfidf", TfidfVectorizer(analyzer=Analyzer(spec), lowercase=False, dtype=np.float64,
                                  **options)),
        ("clf", clf),
    ]).fit(texts, y)
    return SimpleNamespace(
        pipeline=pipeline, labels=["Question", "Statement", "Greeting"][:classes], spec=spec,
        trainer="test", data_sha256="0" * 64, train_rows=len(texts),
    )


def _logreg(**kw):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, **kw)


def _linear_svm():
    from sklearn.svm import LinearSVC

    return LinearSVC(C=1.0, max_iter=20000, random_state=0)


def _calibrated(clf, method: str):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    return CalibratedClassifierCV(clf, method=method, ensemble=False,
                                  cv=StratifiedKFold(3, shuffle=True, random_state=0))


MODELS = {
    "binary": lambda: _fit(_logreg(C=4.0)),
    "binary_strong": lambda: _fit(_logreg(C=1e4)),  # saturated probabilities
    "multiclass": lambda: _fit(_logreg(C=4.0), classes=3),
    "plain_tf": lambda: _fit(_logreg(C=4.0), sublinear_tf=False),
    "no_idf_no_norm": lambda: _fit(_logreg(C=1.0), use_idf=False, norm=None),
    "bigrams_unpadded": lambda: _fit(
        _logreg(C=4.0), classes=3, spec=TextSpec(min_n=2, max_n=4, word_boundary_padding=False)
    ),
    "unpadded": lambda: _fit(_logreg(C=4.0), spec=TextSpec(word_boundary_padding=False)),
    # The default trainer's export: one calibrated classifier (ensemble=False), Platt scaling.
    "calibrated": lambda: _fit(_calibrated(_logreg(C=16.0), "sigmoid")),
    "calibrated_svm": lambda: _fit(_calibrated(_linear_svm(), "sigmoid")),
    "padded_2_3": lambda: _fit(_logreg(C=4.0), classes=3, spec=TextSpec(min_n=2, max_n=3)),
    # Word n-grams (step 6b): the fused path looks a known word's columns up whole.
    "multiclass_words": lambda: _fit(
        _logreg(C=4.0), classes=3, spec=TextSpec(max_chars=48, word_max_n=2)),
    "multiclass_words3": lambda: _fit(
        _logreg(C=4.0), classes=3, spec=TextSpec(max_chars=48, word_max_n=3)),
    "multiclass_words_unpadded": lambda: _fit(_logreg(C=4.0), classes=3, spec=TextSpec(
        max_chars=48, word_max_n=3, word_boundary_padding=False)),
    # Head n-grams (step 6c): every fast path declines them for the general path.
    "binary_head": lambda: _fit(_logreg(C=4.0), spec=TextSpec(head_chars=3)),
    "calibrated_head": lambda: _fit(_calibrated(_logreg(C=16.0), "sigmoid"),
                                    spec=TextSpec(head_chars=3)),
    "multiclass_head": lambda: _fit(_logreg(C=4.0), classes=3, spec=TextSpec(
        max_chars=48, head_chars=4)),
}
#: Models exported with a shut-able unfamiliarity gate (every path must apply it alike).
GATES = {name: Familiarity(order, share) for name, order, share in (
    ("binary_gated", 2, 0.5), ("calibrated_gated", 2, 0.6), ("multiclass_gated", 3, 0.5),
    ("unpadded_gated", 1, 0.7))}
MODELS |= {
    "binary_gated": MODELS["binary"], "calibrated_gated": MODELS["calibrated"],
    "multiclass_gated": MODELS["multiclass"], "unpadded_gated": MODELS["unpadded"],
}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backends")
    for task, make in MODELS.items():
        _install(root, task, make())
    return root


def _texts() -> list[str]:
    repeated = ["天天向上天天", "iphone iphone iphone", "哈哈哈哈哈哈哈哈", "的的的 的的 的"]
    # Known and unknown words, repeated across words, and truncations (step 5) that end in a
    # space or cut a word (max_chars 48 of the word-gram model, 256 elsewhere).
    words = ["what time is it what time", "hi there turn on the lights now", "good night hello",
             "is " * 30, "turn " * 60, "the lights " * 40 + "on"]
    return [*QUESTIONS, *STATEMENTS, *GREETINGS, *HARD_CASES, *repeated, *words,
            *random_texts(600, 9)]


@pytest.mark.parametrize("task", list(MODELS))
def test_numpy_backend_matches_onnxruntime(models_dir, task):
    fast = MicroModel.load(task, models_dir=models_dir, backend="numpy")
    ref = MicroModel.load(task, models_dir=models_dir, backend="onnxruntime")
    assert (fast.backend, ref.backend) == ("numpy", "onnxruntime")
    texts = _texts()
    ours, theirs = fast.predict_proba(texts), ref.predict_proba(texts)
    assert ours.dtype == theirs.dtype == np.float32
    assert ours.shape == theirs.shape == (len(texts), len(fast.labels))
    assert np.max(np.abs(ours - theirs)) < 1e-6
    singles = np.array([list(fast.predict(t).probabilities.values()) for t in texts])
    assert np.max(np.abs(singles - theirs)) < 1e-6
    many = np.array([list(p.probabilities.values()) for p in fast.predict_many(texts)])
    assert np.max(np.abs(many - theirs)) < 1e-6
    assert check_conformance(fast, models_dir / f"{task}_conformance.json").ok
    assert check_conformance(ref, models_dir / f"{task}_conformance.json").ok


@pytest.mark.parametrize("task", ["binary", "multiclass", "binary_gated", "multiclass_gated"])
def test_predictions_agree_across_paths_and_backends(models_dir, task):
    fast = MicroModel.load(task, models_dir=models_dir)
    ref = MicroModel.load(task, models_dir=models_dir, backend="onnxruntime")
    texts = _texts()
    proba = ref.predict_proba(texts)
    margin = np.sort(proba, axis=1)[:, -1] - np.sort(proba, axis=1)[:, -2]
    shut = sum(p.score >= fast.threshold and not p.confident for p in fast.predict_many(texts))
    assert (shut > 0) == task.endswith("_gated")  # the gate really closes on some answers
    for text, p_fast, p_ref, p_one, gap in zip(
        texts, fast.predict_many(texts), ref.predict_many(texts), map(ref.predict, texts),
        margin, strict=True,
    ):
        # ONNX Runtime's float32 GEMM rounds a batch and a single row differently (~1e-7).
        assert abs(p_ref.score - p_one.score) < 1e-6
        if gap > 1e-5:  # labels may only differ on an exact tie
            assert p_fast.label == p_ref.label, repr(text)
        assert abs(p_fast.score - p_ref.score) < 1e-6
        familiar = fast.unfamiliar(text) <= fast.familiarity.max_unfamiliar
        assert p_fast.confident == (p_fast.score >= fast.threshold and familiar)
        if abs(p_ref.score - ref.threshold) > 1e-6:
            assert p_ref.confident == p_one.confident == p_fast.confident, repr(text)


@pytest.mark.parametrize("out_of_scope", ["", "Greeting"])
def test_fused_paths_answer_reflex_rules_first(tmp_path, out_of_scope):
    # The fused paths try the rules on the text they normalise: same answers as the reference.
    for task, trained in (("three", MODELS["multiclass"]()), ("two", MODELS["binary"]())):
        install_model(trained, tmp_path, task, 0.6, reflex=tiny_reflex(trained.labels),
                      out_of_scope=out_of_scope if task == "three" else "")
    texts = [*TINY_RULE_TEXTS, *_texts()[:200]]
    for task in ("three", "two"):
        fast = MicroModel.load(task, models_dir=tmp_path, backend="numpy")
        ref = MicroModel.load(task, models_dir=tmp_path, backend="onnxruntime")
        assert fast._fused_predict is not None and fast.reflex
        ours, theirs = [fast.predict(t) for t in texts], [ref.predict(t) for t in texts]
        assert [p.rule for p in ours] == [p.rule for p in theirs] == [fast.rule(t) for t in texts]
        assert [p.rule for p in fast.predict_many(texts)] == [p.rule for p in ours]
        assert {p.rule for p in ours} >= {r for r in TINY_RULE_TEXTS.values() if r}
        for text, a, b in zip(texts, ours, theirs, strict=True):
            assert a.label == b.label and a.confident == b.confident, repr(text)
            assert abs(a.score - b.score) < 1e-6


def test_auto_backend_is_numpy_for_linear_graphs(models_dir):
    assert MicroModel.load("binary", models_dir=models_dir).backend == "numpy"
    assert "backend='numpy'" in repr(MicroModel.load("binary", models_dir=models_dir))


@pytest.mark.parametrize("name", ["nb", "isotonic", "sigmoid_ensemble", "sigmoid_3_classes",
                                  "isotonic_3_classes"])
def test_auto_falls_back_to_onnxruntime_for_other_graphs(tmp_path, name):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.naive_bayes import ComplementNB

    trained = {
        "nb": lambda: _fit(ComplementNB()),
        "isotonic": lambda: _fit(_calibrated(_logreg(), "isotonic")),
        "sigmoid_ensemble": lambda: _fit(CalibratedClassifierCV(_logreg(), cv=3)),
        "sigmoid_3_classes": lambda: _fit(_calibrated(_logreg(), "sigmoid"), classes=3),
        "isotonic_3_classes": lambda: _fit(_calibrated(_logreg(), "isotonic"), classes=3),
    }[name]()
    _install(tmp_path, name, trained)
    assert read_linear_graph((tmp_path / f"{name}_classifier.onnx").read_bytes()) is None
    model = MicroModel.load(name, models_dir=tmp_path)
    assert model.backend == "onnxruntime"
    assert check_conformance(model, tmp_path / f"{name}_conformance.json").ok
    with pytest.raises(ArtifactError, match=f"{name}_classifier.onnx: the numpy backend runs"):
        MicroModel.load(name, models_dir=tmp_path, backend="numpy")


def test_unknown_backend(models_dir):
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        MicroModel.load("binary", models_dir=models_dir, backend="torch")


def test_read_linear_graph_of_the_export(models_dir):
    data = (models_dir / "binary_classifier.onnx").read_bytes()
    graph = read_linear_graph(data)
    assert graph is not None and graph.post_transform == "LOGISTIC" and not graph.l1_normalize
    # skl2onnx stores a binary logistic regression as the two rows -w and w.
    np.testing.assert_array_equal(graph.coefficients[0], -graph.coefficients[1])
    calibrated = read_linear_graph((models_dir / "calibrated_classifier.onnx").read_bytes())
    assert calibrated is not None and calibrated.calibration is not None
    assert calibrated.post_transform == "NONE" and calibrated.calibration.column == 1
    multi = read_linear_graph((models_dir / "multiclass_classifier.onnx").read_bytes())
    assert multi is not None and multi.post_transform == "SOFTMAX" and multi.l1_normalize
    assert multi.coefficients.shape[0] == 3


def test_read_linear_graph_rejects_extra_nodes(models_dir):
    import onnx
    from onnx import helper

    model = onnx.load_from_string((models_dir / "binary_classifier.onnx").read_bytes())
    model.graph.node[0].output[1] = "raw"
    model.graph.node.append(helper.make_node("Identity", ["raw"], ["probabilities"]))
    assert read_linear_graph(model.SerializeToString()) is None


def test_numpy_backend_checks_dimensions(models_dir, tmp_path):
    from fakes.tamper import rewrite_bin

    for f in models_dir.glob("binary_*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    rewrite_bin(tmp_path / "binary_preprocessor.bin", lambda m: (m.vocabulary.pop(), m.idf.pop()))
    for backend in ("numpy", "onnxruntime"):
        with pytest.raises(ArtifactError, match="features but binary_preprocessor.bin has a vocab"):
            MicroModel.load("binary", models_dir=tmp_path, backend=backend)


def test_every_backend_reports_a_corrupt_onnx(models_dir, tmp_path):
    from foundry.artifacts import seal_message
    from foundry.v1 import preprocessor_pb2 as pb

    for f in models_dir.glob("binary_*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    onnx_path = tmp_path / "binary_classifier.onnx"
    onnx_path.write_bytes(b"\xff\xff garbage")
    bin_path = tmp_path / "binary_preprocessor.bin"
    msg = pb.Preprocessor()
    msg.ParseFromString(bin_path.read_bytes())
    import hashlib

    msg.onnx_sha256 = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    bin_path.write_bytes(seal_message(msg))
    for backend in ("auto", "onnxruntime"):
        with pytest.raises(ArtifactError,
                           match=r"binary_classifier.onnx: not a valid ONNX model.*rule O1"):
            MicroModel.load("binary", models_dir=tmp_path, backend=backend)


def test_onnxruntime_batches_larger_than_one_block(models_dir):
    model = MicroModel.load("multiclass", models_dir=models_dir, backend="onnxruntime")
    texts = _texts()[:300]
    whole = model.predict_proba(texts)
    model._head.block_bytes = 4 * model.n_features * 7  # 7 rows per run
    np.testing.assert_array_equal(model.predict_proba(texts), whole)


def test_onnxruntime_single_queries_are_thread_safe(models_dir):
    model = MicroModel.load("binary", models_dir=models_dir, backend="onnxruntime")
    texts = _texts()[:200]
    want = [model.predict(t) for t in texts]
    got: dict[int, list[Prediction]] = {}

    def work(k: int) -> None:
        got[k] = [model.predict(t) for t in texts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got[k] == want for k in range(4))


def test_numpy_backend_loads_without_onnx_or_onnxruntime(models_dir):
    code = (
        "import sys\n"
        "from foundry.runtime import MicroModel\n"
        f"m = MicroModel.load('binary', models_dir={str(models_dir)!r})\n"
        "m.predict('你好吗'); m.predict_many(['a', 'b'])\n"
        "assert m.backend == 'numpy'\n"
        "bad = sorted(k for k in sys.modules\n"
        "             if k.split('.')[0] in {'onnx', 'onnxruntime', 'sklearn', 'scipy'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- small pieces ---------------------------------------------------------------------------


def test_fast_prediction_equals_dataclass_construction():
    fast = _prediction("Q", {"Q": 0.75, "S": 0.25}, True, 0.75)
    slow = Prediction("Q", {"Q": 0.75, "S": 0.25}, True, 0.75)
    assert fast == slow and repr(fast) == repr(slow) and hash(fast.label) == hash(slow.label)
    with pytest.raises(AttributeError):
        fast.label = "S"


def test_post_transforms_do_not_overflow():
    scores = np.array([[-1000.0, 1000.0], [0.0, 0.0], [1e-3, -1e-3]])
    logistic = _post_transform(scores, "LOGISTIC", False)
    np.testing.assert_allclose(logistic[0], [0.0, 1.0])
    np.testing.assert_allclose(logistic[1], [0.5, 0.5])
    assert [_logistic(s) for s in (-1000.0, 1000.0)] == [0.0, 1.0]
    np.testing.assert_allclose(
        [_logistic(s) for s in scores[2]], logistic[2], rtol=0, atol=1e-15
    )
    softmax = _post_transform(scores, "SOFTMAX", True)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0)
    np.testing.assert_allclose(softmax[0], [0.0, 1.0])


# --- the minimal ONNX reader ------------------------------------------------------------------


def _onnx_package_view(data: bytes) -> tuple[np.ndarray, np.ndarray, str]:
    import onnx
    from onnx import helper

    node = onnx.load_from_string(data).graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (np.asarray(attrs["coefficients"], dtype=np.float32),
            np.asarray(attrs["intercepts"], dtype=np.float32), attrs["post_transform"].decode())


@pytest.mark.parametrize("task", list(MODELS))
def test_linear_graph_reader_agrees_with_the_onnx_package(models_dir, task):
    import onnx
    from onnx import numpy_helper

    data = (models_dir / f"{task}_classifier.onnx").read_bytes()
    graph = read_linear_graph(data)
    coefficients, intercepts, post = _onnx_package_view(data)
    np.testing.assert_array_equal(graph.coefficients.ravel(), coefficients)
    np.testing.assert_array_equal(graph.intercepts, intercepts)
    assert graph.post_transform == post
    initializers = onnx.load_from_string(data).graph.initializer
    constants = {t.name: numpy_helper.to_array(t) for t in initializers}
    if graph.calibration is not None:
        assert (graph.calibration.a, graph.calibration.b) == (float(constants["a"]),
                                                               float(constants["b"]))
        assert graph.calibration.column == int(constants["k"])
    else:
        assert not constants


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_linear_graph_reader_accepts_packed_repeated_fields():
    """Protobuf writers may pack repeated scalars; parsers must accept both encodings."""
    coefficients = np.array([0.5, -1.25, 3.0, -0.5, 1.25, -3.0], dtype="<f4")
    floats, ints, string = (_varint(20 << 3) + _varint(t) for t in (6, 7, 3))  # type = 20
    attrs = [
        _field(1, b"coefficients") + _field(7, coefficients.tobytes()) + floats,
        _field(1, b"intercepts") + _field(7, np.array([-0.1, 0.1], dtype="<f4").tobytes())
        + floats,
        _field(1, b"classlabels_ints") + _field(8, _varint(0) + _varint(1)) + ints,
        _field(1, b"post_transform") + _field(4, b"LOGISTIC") + string,
    ]
    node = (_field(1, b"features") + _field(2, b"label") + _field(2, b"probabilities")
            + _field(4, b"LinearClassifier") + _field(7, b"ai.onnx.ml")
            + b"".join(_field(5, a) for a in attrs))
    data = _field(7, _field(1, node) + _field(11, _field(1, b"features")))
    graph = read_linear_graph(data)
    assert graph is not None
    np.testing.assert_array_equal(graph.coefficients, coefficients.reshape(2, 3))
    assert graph.post_transform == "LOGISTIC"
    got = _onnx_package_view(data)
    np.testing.assert_array_equal(got[0], coefficients)


@pytest.mark.parametrize("cut", [1, 7, 100, 1000])
def test_linear_graph_reader_rejects_truncated_bytes(models_dir, cut):
    data = (models_dir / "binary_classifier.onnx").read_bytes()
    with pytest.raises(ValueError):
        read_linear_graph(data[:-cut])


# --- the sparse layout of the int8 graph (foundry.quantized.sparse_entries) -----------------

#: The features and classes of :func:`_sparse_int8`.
SPARSE_D, SPARSE_K = 700, 5


@pytest.fixture(scope="module")
def sparse_int8():
    """``(clf, onnx bytes, features)``: an int8 SVM cut to 25 weights, whose export stores
    ``W_q`` as sparse entries (gaps over 255 bridged by zero entries)."""
    import onnx
    from onnx import numpy_helper

    from foundry.quantized import QuantizedLinearSVC, quantized_onnx

    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(300, SPARSE_D))) * (rng.random((300, SPARSE_D)) < 0.1)
    y = rng.integers(0, SPARSE_K, 300)
    clf = QuantizedLinearSVC(random_state=0).fit(x, y).set_temperature(0.5).sparsify(25)
    data = quantized_onnx(clf, SPARSE_D, "sparse")
    model = onnx.load_from_string(data)
    assert "ScatterElements" in [n.op_type for n in model.graph.node]
    values = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "W_values")
    assert (values == 0).any(), "the fixture needs filler entries"
    return clf, data, x.astype(np.float32)


def _softmax_of(graph, x: np.ndarray) -> np.ndarray:
    scores = x.astype(np.float64) @ graph.coefficients.T.astype(np.float64) + graph.intercepts
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def test_the_sparse_int8_layout_reads_as_its_dense_matrix(sparse_int8):
    import onnxruntime as ort

    from foundry.quantized import folded

    clf, data, x = sparse_int8
    graph = read_linear_graph(data)
    assert graph is not None and graph.post_transform == "SOFTMAX"
    w_q, scale, b = folded(clf)
    np.testing.assert_array_equal(graph.coefficients, (w_q.astype(np.float32) * scale).T)
    np.testing.assert_array_equal(graph.intercepts, b)
    _, proba = ort.InferenceSession(data).run(None, {"features": x})
    assert np.abs(_softmax_of(graph, x) - proba).max() < 1e-6


def test_the_numpy_backend_runs_a_sparse_int8_model_like_onnxruntime(tmp_path):
    import onnx

    texts = QUESTIONS + STATEMENTS + GREETINGS
    trained = fit_int8(texts, np.arange(len(texts)) % 4, ["a", "b", "c", "d"], "sparse",
                       temperature=0.3)
    trained.pipeline.named_steps["clf"].sparsify(120)
    _install(tmp_path, "sparse", trained)
    nodes = onnx.load(tmp_path / "sparse_classifier.onnx").graph.node
    assert "ScatterElements" in [n.op_type for n in nodes]
    fast = MicroModel.load("sparse", tmp_path, backend="numpy")
    slow = MicroModel.load("sparse", tmp_path, backend="onnxruntime")
    check = texts + random_texts(300, 11)
    got = np.array([list(p.probabilities.values()) for p in fast.predict_many(check)])
    want = np.array([list(p.probabilities.values()) for p in slow.predict_many(check)])
    assert np.abs(got - want).max() < 1e-5
    assert check_conformance(fast, tmp_path / "sparse_conformance.json").ok


def _initializer(model, name: str):
    return next(t for t in model.graph.initializer if t.name == name)


def _set_constant(name: str, make) -> Callable:
    """An edit replacing the initializer ``name`` by ``make(its values)``."""
    from onnx import numpy_helper

    def edit(model) -> None:
        tensor = _initializer(model, name)
        tensor.CopyFrom(numpy_helper.from_array(make(numpy_helper.to_array(tensor).copy()), name))
    return edit


def _set_entry(index: int, gap: int) -> Callable:
    def make(gaps: np.ndarray) -> np.ndarray:
        gaps[index] = gap
        return gaps
    return _set_constant("W_gaps", make)


def _past_the_end(model) -> None:
    """Entries of value 0 appended until the last position is D * K."""
    from onnx import numpy_helper

    gaps = numpy_helper.to_array(_initializer(model, "W_gaps")).astype(np.int64)
    extra = -(-(SPARSE_D * SPARSE_K - int(gaps.sum())) // 255)
    _set_constant("W_gaps", lambda g: np.concatenate([g, np.full(extra, 255, np.uint8)]))(model)
    _set_constant("W_values", lambda v: np.concatenate([v, np.zeros(extra, np.int8)]))(model)


def _matrix(d: int, k: int) -> Callable:
    def edit(model) -> None:
        _set_constant("W_shape", lambda _: np.array([d, k], dtype=np.int64))(model)
        _set_constant("W_size", lambda _: np.array([d * k], dtype=np.int64))(model)
    return edit


def _declared_features(d) -> Callable:
    def edit(model) -> None:
        dim = model.graph.input[0].type.tensor_type.shape.dim[1]
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    return edit


def _node_of(model, output: str):
    return next(n for n in model.graph.node if n.output[0] == output)


def _attribute(output: str, name: str, value) -> Callable:
    """An edit setting (or adding) attribute ``name`` of the node computing ``output``."""
    from onnx import helper

    def edit(model) -> None:
        node = _node_of(model, output)
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(name, value)])
    return edit


def _identity(source: str, output: str):
    from onnx import helper

    return helper.make_node("Identity", [source], [output])


def _zeros_named(name: str):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.zeros((SPARSE_D, SPARSE_K), np.int8), name)


def _zero(array: np.ndarray) -> Callable:
    from onnx import numpy_helper

    return _attribute("W_zeros", "value", numpy_helper.from_array(array, "zero"))


#: Constants that are not a valid sparse matrix: ValueError (the load's rule O1).
SPARSE_DATA_CASES = {
    "a value too few": (_set_constant("W_values", lambda v: v[:-1]), "gaps but"),
    "a repeated position": (_set_entry(3, 0), r"gap 3 is 0 \(a repeated position\)"),
    "a position past the matrix": (_past_the_end, "past the 700 x 5 matrix"),
    "W_size not D * K": (_set_constant("W_size", lambda s: s + 1), "W_size 3501 is not"),
    "W_size a scalar": (_set_constant("W_size", lambda s: s.reshape(())), "W_size has dims"),
    "W_shape transposed": (_set_constant("W_shape", lambda s: s[::-1].copy()),
                           r"W_shape \[5, 700\] is not \[D, K\]"),
    "W_shape of rank 3": (_set_constant("W_shape", lambda s: np.append(s, 1)),
                          "W_shape has dims"),
    "W_shape not positive": (_matrix(-SPARSE_D, -SPARSE_K), r"is not \[D, K\]"),
    "a huge K": (_matrix(SPARSE_D, 1 << 40), r"is not \[D, K\]"),
    "a huge D, declared": (lambda m: (_matrix(1 << 30, SPARSE_K)(m),
                                      _declared_features(1 << 30)(m)), r"is not \[D, K\]"),
    "D not the declared features": (_declared_features(SPARSE_D + 1), r"D = 701"),
    "features undeclared": (_declared_features("D"), "does not declare its number"),
    "gaps int8": (_set_constant("W_gaps", lambda g: g.astype(np.int8)), "not a uint8"),
    "values uint8": (_set_constant("W_values", lambda v: v.astype(np.uint8)), "not a int8"),
    "gaps int64": (_set_constant("W_gaps", lambda g: g.astype(np.int64)), "not a uint8"),
    "CumSum over axis 1": (_set_constant("W_axis", lambda a: a + 1), "axis 1"),
    "zeros filled with 1": (_zero(np.ones(1, np.int8)), "not the int8 0"),
    "zeros of float32": (_zero(np.zeros(1, np.float32)), "not the int8 0"),
    "zeros of two values": (_zero(np.zeros(2, np.int8)), "not the int8 0"),
}
#: Other nodes or attributes: not the int8 graph (None).
SPARSE_GRAPH_CASES = {
    "ScatterElements axis 1": _attribute("W_flat", "axis", 1),
    "ScatterElements reduction": _attribute("W_flat", "reduction", "add"),
    "gaps cast to int32": _attribute("W_steps", "to", 6),
    "CumSum exclusive": _attribute("W_positions", "exclusive", 1),
    "CumSum reverse": _attribute("W_positions", "reverse", 1),
    "Reshape allowzero": _attribute("W_q", "allowzero", 1),
    "ConstantOfShape without value": lambda m: _node_of(m, "W_zeros").ClearField("attribute"),
    "Expand for Reshape": lambda m: setattr(_node_of(m, "W_q"), "op_type", "Expand"),
    "W_q also a constant": lambda m: m.graph.initializer.append(_zeros_named("W_q")),
    "an extra node": lambda m: m.graph.node.append(_identity("W_q", "spare")),
}


def _edited(data: bytes, edit) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    edit(model)
    return model.SerializeToString()


@pytest.mark.parametrize("case", list(SPARSE_DATA_CASES))
def test_invalid_sparse_int8_constants_are_refused(sparse_int8, case):
    edit, message = SPARSE_DATA_CASES[case]
    with pytest.raises(ValueError, match=message):
        read_linear_graph(_edited(sparse_int8[1], edit))


@pytest.mark.parametrize("case", list(SPARSE_GRAPH_CASES))
def test_other_sparse_int8_graphs_are_not_read(sparse_int8, case):
    assert read_linear_graph(_edited(sparse_int8[1], SPARSE_GRAPH_CASES[case])) is None


def test_sparse_int8_reader_accepts_what_changes_nothing(sparse_int8):
    """CumSum's attributes written as 0, W_axis as [1], the entries widened in int32_data
    (which must fit their type)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    clf, data, x = sparse_int8
    want = read_linear_graph(data).coefficients

    def edit(model) -> None:
        _attribute("W_positions", "exclusive", 0)(model)
        _attribute("W_positions", "reverse", 0)(model)
        _set_constant("W_axis", lambda a: a.reshape(1))(model)
        for name, dtype in (("W_gaps", TensorProto.UINT8), ("W_values", TensorProto.INT8)):
            values = numpy_helper.to_array(_initializer(model, name))
            _initializer(model, name).CopyFrom(
                helper.make_tensor(name, dtype, values.shape, values.tolist(), raw=False))

    edited = _edited(data, edit)
    assert not _initializer(onnx.load_from_string(edited), "W_gaps").raw_data
    np.testing.assert_array_equal(read_linear_graph(edited).coefficients, want)

    def widened_out_of_range(model) -> None:
        edit(model)
        _initializer(model, "W_gaps").int32_data[0] = 256

    with pytest.raises(ValueError, match="W_gaps holds values outside uint8"):
        read_linear_graph(_edited(data, widened_out_of_range))


def test_a_sparse_int8_pair_with_repeated_positions_is_refused_at_load(sparse_int8, tmp_path):
    """ONNX Runtime would load such a graph (ScatterElements' result is then undefined): the
    reader refuses the pair under rule O1 before any backend answers, ONNX Runtime's too."""
    from fakes.tamper import rewrite_bin

    texts = QUESTIONS + STATEMENTS
    trained = fit_int8(texts, np.arange(len(texts)) % 3, ["a", "b", "c"], "sparse",
                       temperature=0.3)
    trained.pipeline.named_steps["clf"].sparsify(60)
    _install(tmp_path, "sparse", trained)
    onnx_path = tmp_path / "sparse_classifier.onnx"
    onnx_path.write_bytes(_edited(onnx_path.read_bytes(), _set_entry(2, 0)))
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    rewrite_bin(tmp_path / "sparse_preprocessor.bin", lambda m: setattr(m, "onnx_sha256", digest))
    for backend in ("auto", "numpy", "onnxruntime"):
        with pytest.raises(ArtifactError, match=r"\(a repeated position\) \(spec rule O1\)$"):
            MicroModel.load("sparse", tmp_path, backend=backend)


@pytest.mark.parametrize("task", list(MODELS))
def test_vectorised_batch_scores_equal_per_text_scores(models_dir, task):
    model = MicroModel.load(task, models_dir=models_dir, backend="numpy")
    head = model._head
    normalized = normalize_many(_texts(), model.spec)
    per_text = np.array([head.scores(model._ngrams(t)) for t in normalized])
    batched = head.scores_many(normalized, model._ngrams)
    np.testing.assert_allclose(batched, per_text, rtol=1e-12, atol=1e-12)
    for size in (VECTOR_MIN_BATCH, VECTOR_MIN_BATCH + 1):  # the smallest vectorised batches
        np.testing.assert_allclose(head.scores_many(normalized[:size], model._ngrams),
                                   per_text[:size], rtol=1e-12, atol=1e-12)


def test_vector_hash_table_finds_every_vocabulary_entry(models_dir):
    from foundry.runtime.heads import _gram_keys, _VectorScorer

    model = MicroModel.load("multiclass", models_dir=models_dir)
    scorer = _VectorScorer(model._head)
    vocabulary = list(model.preprocessor.vocabulary)
    keys = _gram_keys(vocabulary)
    np.testing.assert_array_equal(scorer.lookup(keys), np.arange(len(vocabulary)))
    # Keys not in the vocabulary (the same n-grams shifted by one code point) all miss.
    assert (scorer.lookup(keys + np.uint64(1)) == -1).sum() >= len(keys) - 5


@pytest.mark.parametrize("task", ["binary", "calibrated", "multiclass"])
def test_small_batches_match_onnxruntime(models_dir, task):
    fast = MicroModel.load(task, models_dir=models_dir, backend="numpy")
    ref = MicroModel.load(task, models_dir=models_dir, backend="onnxruntime")
    texts = _texts()
    for size in (1, 3, VECTOR_MIN_BATCH - 1, VECTOR_MIN_BATCH):
        batch = texts[size:2 * size]
        want = ref.predict_proba(batch)
        got = fast.predict_proba(batch)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.max(np.abs(got - want)) < 1e-6
        many = np.array([list(p.probabilities.values()) for p in fast.predict_many(batch)])
        assert np.max(np.abs(many - want)) < 1e-6


@pytest.mark.parametrize("task", ["binary", "calibrated", "calibrated_svm", "plain_tf", "unpadded",
                                  "binary_gated", "calibrated_gated", "unpadded_gated"])
def test_fused_binary_predict_equals_the_general_path(models_dir, task):
    model = MicroModel.load(task, models_dir=models_dir)
    assert model._fused_predict is not None
    head = model._head
    for text in _texts():
        normalized = fast_normalize(text, model.spec)
        general = model._answer(head.finish_one(head.scores(model._ngrams(normalized))),
                                normalized)
        fused = model.predict(text)
        assert fused.label == general.label and fused.confident == general.confident
        assert abs(fused.score - general.score) < 1e-12
        for label in model.labels:
            assert abs(fused.probabilities[label] - general.probabilities[label]) < 1e-12


def test_fused_multiclass_predict_equals_the_general_path(models_dir):
    """The many-label fused path (one NumPy gather-and-sum) answers as the per-class sums."""
    model = MicroModel.load("multiclass", models_dir=models_dir)
    assert model._fused_predict is not None and len(model.labels) > 2
    head = model._head
    texts = [*_texts(), "好好好好好吗吗吗", "打开打开灯灯",  # repeated n-grams: tf != 1
             "what is the balance of the checking account i opened at the bank last year",
             "", " ", *HARD_CASES, *random_texts(500, seed=13)]
    for text in texts:
        normalized = fast_normalize(text, model.spec)
        general = model._answer(head.finish_one(head.scores(model._ngrams(normalized))),
                                normalized)
        fused = model.predict(text)
        assert fused.label == general.label and fused.confident == general.confident
        assert list(fused.probabilities) == model.labels
        for label in model.labels:
            assert abs(fused.probabilities[label] - general.probabilities[label]) < 1e-12


def test_only_linear_models_get_the_fused_path(models_dir):
    assert MicroModel.load("no_idf_no_norm", models_dir=models_dir)._fused_predict is None
    ort = MicroModel.load("binary", models_dir=models_dir, backend="onnxruntime")
    assert ort._fused_predict is None


@pytest.mark.parametrize("task,backend", [("binary", "numpy"), ("multiclass", "numpy"),
                                          ("binary", "onnxruntime")])
def test_predict_rejects_non_strings(models_dir, task, backend):
    model = MicroModel.load(task, models_dir=models_dir, backend=backend)
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        model.predict(b"hello")
    with pytest.raises(TypeError, match="text must be str, got NoneType"):
        model.predict_many(["ok", None])


def test_character_table_is_bounded(monkeypatch):
    from foundry.runtime.normalize import _CharTable

    table = _CharTable(lowercase=True)
    monkeypatch.setattr(_CharTable, "limit", 10)
    text = "".join(chr(cp) for cp in range(0x4E00, 0x4E00 + 50)) + "ABC \u3000x"
    assert text.translate(table) == text.lower().replace("\u3000", " ")
    assert len(table) == 10
    assert text.translate(table) == text.lower().replace("\u3000", " ")  # uncached entries


def _automaton_sum(automaton, normalized: str, spec: TextSpec, zero=0j):
    """Drive a ``_GramAutomaton`` over a normalised text as the fused predictors do."""
    total = zero
    units = normalized.split(" ") if spec.word_boundary_padding else [normalized]
    for unit in units if normalized else []:
        node = automaton.root
        if automaton.start is not None:
            node, total = automaton.start[0], total + automaton.start[1]
        for c in unit:
            node, v = node.get(c) or automaton.root.get(c, automaton.miss)
            total += v
        if spec.word_boundary_padding:
            total += (node.get(" ") or automaton.root.get(" ", automaton.miss))[1]
    return total


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_gram_automaton_sums_every_occurrence(spec):
    """The automaton's sum equals the sum over every n-gram occurrence (repeats included)."""
    from foundry.runtime.fused import _GramAutomaton

    texts = [fast_normalize(t, spec) for t in [*QUESTIONS, *STATEMENTS, *random_texts(400, 3)]]
    counts = Counter(g for t in texts for g in char_ngrams(t, spec))
    rng = random.Random(5)
    # A vocabulary of frequent and random n-grams, plus n-grams the analyzer never yields.
    vocabulary = [g for g, _ in counts.most_common(300)] + rng.sample(sorted(counts), 200)
    vocabulary += [" ", "x" * (spec.max_n + 1), "天 天"]
    values = {g: complex(rng.uniform(-1, 1), rng.uniform(0.5, 2)) for g in vocabulary}
    automaton = _GramAutomaton(values, spec)
    for text in texts:
        want = sum((values[g] for g in char_ngrams(text, spec) if g in values), 0j)
        got = _automaton_sum(automaton, text, spec)
        assert abs(got - want) < 1e-9, repr(text)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_gram_automaton_of_columns_lists_every_occurrence(spec):
    """With 1-tuples of columns as values (the many-label fused path), the automaton's "sum"
    lists the column of every in-vocabulary n-gram occurrence, repeats included."""
    from foundry.runtime.fused import _GramAutomaton

    texts = [fast_normalize(t, spec) for t in [*QUESTIONS, *STATEMENTS, *random_texts(400, 7)]]
    counts = Counter(g for t in texts for g in char_ngrams(t, spec))
    vocabulary = [g for g, _ in counts.most_common(400)] + [" ", "x" * (spec.max_n + 1)]
    columns = {g: (k,) for k, g in enumerate(vocabulary)}
    automaton = _GramAutomaton(columns, spec, ())
    for text in texts:
        want = Counter(columns[g][0] for g in char_ngrams(text, spec) if g in columns)
        assert Counter(_automaton_sum(automaton, text, spec, ())) == want, repr(text)
