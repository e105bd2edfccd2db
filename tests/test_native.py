"""The native fast path of the Python runtime (foundry/native.py + runtimes/rust/python).

It is chosen by ``MicroModel.load`` when built, forced either way by ``FOUNDRY_RUNTIME``, and
must answer exactly like the pure-Python path: same labels and confident flags, probabilities
within 1e-9 (both compute in float64), the same ``Prediction`` objects and errors, on the forged
default models and on thousands of generated Unicode strings (lone surrogates included, which
only this path can receive among the Rust ones). ``make test`` builds it (``make native``); a
missing build fails with that instruction rather than skipping.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FORGED_TASKS, QUESTIONS, STATEMENTS, forged_models_or_skip, install_model

from foundry import native
from foundry.errors import ConfigError
from foundry.runtime import ArtifactError, MicroModel, Prediction, check_conformance

TOLERANCE = 1e-9


@pytest.fixture(autouse=True)
def _native_built(monkeypatch) -> None:
    if not native.available():
        pytest.fail(f"foundry._native is not built ({native._import_error}): run `make native`")
    monkeypatch.delenv(native.ENV_VAR, raising=False)


def fuzz_texts(seeds: list[str], count: int, seed: int) -> list[str]:
    from test_fuzz_differential import runtime_texts

    return runtime_texts(seed=seed, count=count, seeds=seeds)


def assert_same_predictions(got: list[Prediction], want: list[Prediction], texts: list[str]) -> None:
    assert len(got) == len(want) == len(texts)
    for text, g, w in zip(texts, got, want, strict=True):
        assert type(g) is Prediction
        assert (g.label, g.confident, list(g.probabilities)) == (w.label, w.confident,
                                                                list(w.probabilities)), repr(text)
        for label, p in w.probabilities.items():
            assert abs(g.probabilities[label] - p) <= TOLERANCE, (text, g, w)
        assert abs(g.score - w.score) <= TOLERANCE


def test_the_backend_is_chosen_by_load_and_the_environment(tiny_models, monkeypatch) -> None:
    models_dir, _ = tiny_models
    assert MicroModel.load("tiny_q", models_dir).backend == "native"
    assert MicroModel.load("tiny_q", models_dir, backend="native").backend == "native"
    assert MicroModel.load("tiny_q", models_dir, backend="numpy").backend == "numpy"
    monkeypatch.setenv(native.ENV_VAR, "python")
    assert MicroModel.load("tiny_q", models_dir).backend == "numpy"
    assert MicroModel.load("tiny_q", models_dir, backend="native").backend == "native"
    monkeypatch.setenv(native.ENV_VAR, "Native")
    assert MicroModel.load("tiny_q", models_dir).backend == "native"
    monkeypatch.setenv(native.ENV_VAR, "rust")
    with pytest.raises(ConfigError, match="FOUNDRY_RUNTIME='rust': choose one of python, native"):
        MicroModel.load("tiny_q", models_dir)


def test_without_the_extension_the_pure_python_path_answers(tiny_models, monkeypatch) -> None:
    models_dir, _ = tiny_models
    monkeypatch.setattr(native, "_extension", None)
    monkeypatch.setattr(native, "_import_error", "No module named 'foundry._native'")
    assert not native.available()
    assert MicroModel.load("tiny_q", models_dir).backend == "numpy"
    with pytest.raises(ConfigError, match="make native"):
        MicroModel.load("tiny_q", models_dir, backend="native")
    monkeypatch.setenv(native.ENV_VAR, "native")
    with pytest.raises(ConfigError, match="native runtime is not available"):
        MicroModel.load("tiny_q", models_dir)


def test_native_equals_python_on_forged_default_models() -> None:
    models_dir = forged_models_or_skip()
    for task in FORGED_TASKS:
        fast = MicroModel.load(task, models_dir, backend="native")
        slow = MicroModel.load(task, models_dir, backend="numpy")
        seeds = [v["text"] for v in json.loads(
            (models_dir / f"{task}_conformance.json").read_text(encoding="utf-8"))["vectors"]]
        texts = seeds + fuzz_texts(seeds, 4000, seed=23)
        assert any("\ud800" <= c <= "\udfff" for t in texts for c in t), "no lone surrogate fuzzed"
        assert_same_predictions(fast.predict_many(texts), slow.predict_many(texts), texts)
        assert_same_predictions([fast.predict(t) for t in texts[::7]],
                                [slow.predict(t) for t in texts[::7]], texts[::7])
        got, want = fast.predict_proba(texts), slow.predict_proba(texts)
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-7
        report = check_conformance(fast, models_dir / f"{task}_conformance.json")
        assert report.ok, report.failures[:5]


def test_native_equals_python_on_a_100_label_model(tmp_path: Path) -> None:
    """A many-label int8 model: the native class sums run in blocks of classes (64, 32, 16, 8
    wide, by instruction set) over float32 weights; they answer like the numpy path. Most of
    its int8 weights round to 0, so its graph stores them as sparse entries, which both paths
    rebuild (foundry.quantized.sparse_entries)."""
    from conftest import fit_int8, install_model

    rng = np.random.default_rng(3)
    syllables = [a + b for a in "bcdfghklmnprstvz" for b in "aeiou"]
    labels = [f"intent_{k:03d}" for k in range(100)]
    keys = [rng.choice(syllables, 3) for _ in labels]  # each label's own syllables
    texts, y = [], []
    for k in range(len(labels)):
        for _ in range(6):
            words = [*rng.choice(keys[k], 2), *rng.choice(syllables, 3)]
            texts.append(" ".join("".join(rng.choice(words, 2)) for _ in range(4)))
            y.append(k)
    trained = fit_int8(texts, np.array(y), labels, "many", temperature=0.3)
    install_model(trained, tmp_path, "many", threshold=0.2, texts=texts[::3],
                  out_of_scope="intent_000")
    assert b"ScatterElements" in (tmp_path / "many_classifier.onnx").read_bytes()
    fast = MicroModel.load("many", tmp_path, backend="native")
    slow = MicroModel.load("many", tmp_path, backend="numpy")
    check = texts + fuzz_texts(texts[:50], 1000, seed=31)
    want = slow.predict_many(check)
    assert len({p.label for p in want}) > 50 and sum(not p.confident for p in want) > 20
    assert_same_predictions(fast.predict_many(check), want, check)
    assert_same_predictions([fast.predict(t) for t in check[::9]], want[::9], check[::9])
    report = check_conformance(fast, tmp_path / "many_conformance.json")
    assert report.ok, report.failures[:5]


def test_native_applies_the_unfamiliarity_gate_like_python(gated_models) -> None:
    from conftest import UNFAMILIAR_TEXTS

    models_dir, tasks = gated_models
    seeds = QUESTIONS + STATEMENTS + UNFAMILIAR_TEXTS
    texts = seeds + fuzz_texts(seeds, 1500, seed=29)
    for task in tasks:
        fast = MicroModel.load(task, models_dir, backend="native")
        slow = MicroModel.load(task, models_dir, backend="numpy")
        assert fast.familiarity == slow.familiarity
        want = slow.predict_many(texts)
        assert sum(p.score >= slow.threshold and not p.confident for p in want) >= 5, task
        assert_same_predictions(fast.predict_many(texts), want, texts)
        assert_same_predictions([fast.predict(t) for t in texts[::5]], want[::5], texts[::5])
        report = check_conformance(fast, models_dir / f"{task}_conformance.json")
        assert report.ok, report.failures[:5]


def test_the_api_behaves_like_the_python_one(tiny_models) -> None:
    models_dir, _ = tiny_models
    model = MicroModel.load("tiny_q", models_dir)
    p = model.predict("今天天气怎么样？")
    want = MicroModel.load("tiny_q", models_dir, backend="numpy").predict("今天天气怎么样？")
    assert_same_predictions([p], [want], ["今天天气怎么样？"])
    assert p.to_json("x") == {"text": "x", "label": p.label, "probabilities": p.probabilities,
                              "confident": p.confident}
    assert model.predict_many([]) == []
    assert model.predict_proba([]).shape == (0, 2)
    assert [q.label for q in model.predict_many(t for t in ("打开客厅的灯", "今天天气怎么样？"))] \
        == ["Statement", "Question"]
    with pytest.raises(TypeError, match="text must be str, got int"):
        model.predict(3)
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        model.predict_many(["ok", b"no"])
    with pytest.raises(TypeError, match="predict_proba takes a list of texts"):
        model.predict_proba("one text")
    for one in ("one text", b"one text"):
        with pytest.raises(TypeError, match="predict_many takes a list of texts"):
            model.predict_many(one)
    assert "backend='native'" in repr(model)


def test_every_calibration_loads_natively(tmp_path: Path) -> None:
    """Graphs the numpy backend leaves to ONNX Runtime run natively, conformance included."""
    from test_rust_runtime import fit_variant

    for trainer, calibration, k in (("tfidf_logreg", "isotonic", 3),
                                    ("tfidf_complement_nb", "sigmoid", 2)):
        install_model(fit_variant(trainer, calibration, k), tmp_path, "variant", threshold=0.5)
        model = MicroModel.load("variant", tmp_path)
        assert model.backend == "native"
        report = check_conformance(model, tmp_path / "variant_conformance.json")
        assert report.ok, report.failures[:5]


def test_a_graph_native_refuses_falls_back_unless_required(tiny_models, tmp_path: Path,
                                                            monkeypatch) -> None:
    import onnx
    from onnx import helper
    from test_rust_runtime import _rehash

    models_dir, _ = tiny_models
    for name in ("tiny_q_classifier.onnx", "tiny_q_preprocessor.bin"):
        shutil.copy(models_dir / name, tmp_path)
    onnx_path = tmp_path / "tiny_q_classifier.onnx"
    model = onnx.load_from_string(onnx_path.read_bytes())
    model.graph.node[0].output[1] = "raw"  # an Identity the exporter never writes
    model.graph.node.append(helper.make_node("Identity", ["raw"], ["probabilities"]))
    onnx_path.write_bytes(model.SerializeToString())
    _rehash(tmp_path, "tiny_q")
    assert MicroModel.load("tiny_q", tmp_path).backend == "onnxruntime"
    with pytest.raises(ArtifactError, match="not a classifier graph this runtime reads"):
        MicroModel.load("tiny_q", tmp_path, backend="native")
    monkeypatch.setenv(native.ENV_VAR, "native")
    with pytest.raises(ArtifactError, match=str(onnx_path)):
        MicroModel.load("tiny_q", tmp_path)


def test_batches_release_the_gil() -> None:
    """While a large batch computes in another thread, this thread keeps running Python."""
    models_dir = forged_models_or_skip()
    model = MicroModel.load(FORGED_TASKS[0], models_dir, backend="native")
    texts = ["帮我查一下从北京到上海的高铁，最好是明天上午出发的"] * 400_000
    ticks = 0
    done = threading.Event()

    def work() -> None:
        model.predict_proba(texts)
        done.set()

    worker = threading.Thread(target=work)
    started = time.perf_counter()
    worker.start()
    while not done.is_set():
        ticks += 1
    worker.join()
    elapsed = time.perf_counter() - started
    # With the GIL held for the whole batch this loop could not advance at all while it runs.
    assert ticks > 10_000, (ticks, elapsed)


def test_threads_share_a_model(tiny_models) -> None:
    models_dir, _ = tiny_models
    model = MicroModel.load("tiny_q", models_dir)
    texts = fuzz_texts(QUESTIONS + STATEMENTS, 2000, seed=5)
    want = model.predict_many(texts)
    results: list[list[Prediction]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        results[i] = [model.predict(t) for t in texts] if i % 2 else model.predict_many(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert_same_predictions(got, want, texts)


def test_lone_surrogates_are_removed_as_in_python(tiny_models) -> None:
    """Unpaired surrogates block composition and the Final_Sigma context, then go (Cs)."""
    models_dir, _ = tiny_models
    model = MicroModel.load("tiny_q", models_dir)
    slow = MicroModel.load("tiny_q", models_dir, backend="numpy")
    texts = ["e\ud800\u0301吗", "A\u03a3\udc00", "\ud83d\ude00", "Σ\ud800Σ", "a\udfffb c", "\ud800"]
    assert_same_predictions(model.predict_many(texts), slow.predict_many(texts), texts)
