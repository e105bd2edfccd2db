import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from foundry.runtime import ArtifactError, MicroModel, Probabilities, check_conformance


def _extra_strings(n: int = 300, seed: int = 7) -> list[str]:
    """Chinese, English, emoji, full-width, odd whitespace, control characters, empty."""
    rng = random.Random(seed)
    pools = [
        "今天天气怎么样明天会下雨吗帮我记一下打开灯好的收到为什么谁哪里几点吗呢吧啊",
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "？！，。、；：“”（）?!,.;:'\"()ＡＢＣ１２３",
        "😀👍🏽👨‍👩‍👧‍👦🇨🇳❤️",
        " \t\n\u3000\u00a0\u2003\u200b\u200d\ufeff\x00\x1f",
        "éüİıΣσςß\u0301\u0308",
    ]
    out = ["", " ", "\u3000"]
    while len(out) < n:
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40))))
    return out


def test_runtime_reproduces_sklearn_probabilities(tiny_models):
    models_dir, trained = tiny_models
    model = MicroModel.load("tiny_q", models_dir=models_dir)
    conf = json.loads((models_dir / "tiny_q_conformance.json").read_text(encoding="utf-8"))
    texts = [v["text"] for v in conf["vectors"]] + _extra_strings()
    ours = model.predict_proba(texts)
    theirs = trained.pipeline.predict_proba(texts)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) < 1e-6


def test_features_match_vectorizer_exactly(tiny_models):
    models_dir, trained = tiny_models
    model = MicroModel.load("tiny_q", models_dir=models_dir)
    tfidf = trained.pipeline.named_steps["tfidf"]
    for text in _extra_strings(100, seed=3):
        row = tfidf.transform([text]).tocsr()
        order = np.argsort(row.indices)
        idx, values = model.featurize(text)
        assert idx.tolist() == row.indices[order].tolist()
        np.testing.assert_allclose(values, row.data[order], rtol=0, atol=1e-12)


def test_predict_api(tiny_models):
    models_dir, _ = tiny_models
    model = MicroModel.load("tiny_q", models_dir=models_dir)
    p = model.predict("今天天气怎么样？")
    assert p.label == "Question"
    assert set(p.probabilities) == {"Question", "Statement"}
    assert abs(sum(p.probabilities.values()) - 1) < 1e-5
    assert p.confident == (p.score >= model.threshold)
    many = model.predict_many(["打开客厅的灯", "今天天气怎么样？"])
    assert [m.label for m in many] == ["Statement", "Question"]
    assert model.predict_many([]) == []


@pytest.mark.parametrize("scores", [[0.25, 0.5, 0.25], np.array([0.25, 0.5, 0.25]),
                                    np.array([0.25, 0.5, 0.25]).tobytes()],
                         ids=["list", "ndarray", "float64 bytes"])
def test_probabilities_read_like_the_dict_they_replace(scores):
    import copy
    import pickle

    want = {"b": 0.25, "a": 0.5, "c": 0.25}
    p = Probabilities(("b", "a", "c"), scores)
    assert p == want and want == p and p == Probabilities(["b", "a", "c"], [0.25, 0.5, 0.25])
    assert p != {"b": 0.25, "a": 0.5} and p != {"b": 0.25, "a": 0.5, "c": 0.3} and p != [0.25]
    assert list(p) == ["b", "a", "c"] and len(p) == 3 and "a" in p and "z" not in p
    assert repr(p) == repr(want) and str(p) == str(want)
    assert list(p.items()) == list(want.items()) and list(p.values()) == [0.25, 0.5, 0.25]
    assert p["a"] == 0.5 and p.get("z") is None and p.get("z", 1.0) == 1.0
    assert max(p, key=p.get) == "a" and type(p["a"]) is float
    with pytest.raises(KeyError):
        p["z"]
    assert dict(p) == want and list(dict(p)) == list(want) and dict(p.items()) == want
    for again in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert type(again) is Probabilities and again == want and list(again) == list(want)
    with pytest.raises(TypeError):
        p["a"] = 1.0  # read-only
    with pytest.raises(AttributeError, match="read-only"):
        p._items = {}
    with pytest.raises(TypeError, match="unhashable"):
        hash(p)
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        Probabilities("bac", [0.5, 0.5])


def test_answers_hold_probabilities_that_print_as_before(tiny_models):
    """Every backend's answers (one text, a small and a vectorised batch) carry a
    Probabilities in label order, equal to the predict_proba row; the JSON line is a dict."""
    from foundry.runtime import BACKENDS

    models_dir, _ = tiny_models
    texts = ["今天天气怎么样？", "打开客厅的灯"] * 40
    for backend in BACKENDS[1:]:
        model = MicroModel.load("tiny_q", models_dir=models_dir, backend=backend)
        proba = model.predict_proba(texts)
        for answers in ([model.predict(t) for t in texts[:2]], model.predict_many(texts[:2]),
                        model.predict_many(texts)):
            for p, row in zip(answers, proba, strict=False):
                assert type(p.probabilities) is Probabilities, backend
                assert list(p.probabilities) == model.labels
                assert np.allclose(list(p.probabilities.values()), row, atol=1e-6)
                assert p.score == max(p.probabilities.values())
                line = json.dumps(p.to_json("x"))
                assert json.loads(line)["probabilities"] == p.probabilities


@pytest.mark.parametrize("one_text", ["你好吗", b"ni hao"])
def test_predict_many_refuses_a_single_text(tiny_models, one_text):
    """A str is iterable: without the check it would answer once per character."""
    model = MicroModel.load("tiny_q", models_dir=tiny_models[0])
    with pytest.raises(TypeError, match="predict_many takes a list of texts"):
        model.predict_many(one_text)


def test_conformance_replays(tiny_models):
    models_dir, _ = tiny_models
    report = check_conformance(MicroModel.load("tiny_q", models_dir=models_dir),
                               models_dir / "tiny_q_conformance.json")
    assert report.ok, report.failures
    assert report.vectors > 30


def test_runtime_never_imports_sklearn(tiny_models):
    models_dir, _ = tiny_models
    code = (
        "import sys\n"
        "from foundry.runtime import MicroModel\n"
        f"m = MicroModel.load('tiny_q', models_dir={str(models_dir)!r})\n"
        "m.predict('你好吗'); m.predict_many(['a', 'b'])\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in {'sklearn', 'skl2onnx', 'scipy'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def models_copy(tiny_models, tmp_path):
    models_dir, _ = tiny_models
    for f in models_dir.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _rewrite_bin(path, mutate):
    from fakes.tamper import rewrite_bin

    rewrite_bin(path, mutate)


def test_missing_files(tmp_path):
    with pytest.raises(ArtifactError, match="tiny_q_preprocessor.bin: preprocessor file not found"):
        MicroModel.load("tiny_q", models_dir=tmp_path)


def test_truncated_bin(models_copy):
    path = models_copy / "tiny_q_preprocessor.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ArtifactError, match=r"preprocessor.bin: .*integrity.*\(spec rule B1\)"):
        MicroModel.load("tiny_q", models_dir=models_copy)


def test_corrupted_bin(models_copy):
    path = models_copy / "tiny_q_preprocessor.bin"
    data = bytearray(path.read_bytes())
    data[5:25] = b"\xff" * 20
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"preprocessor.bin: the file is damaged.*\(spec rule B1\)"):
        MicroModel.load("tiny_q", models_dir=models_copy)


def test_one_flipped_bit_anywhere_in_the_bin_is_caught(models_copy):
    """Issue 15: 1-2 bit flips used to load silently with changed answers (labels, min_n)."""
    path = models_copy / "tiny_q_preprocessor.bin"
    original = path.read_bytes()
    for position in range(0, len(original) * 8, max(1, len(original) * 8 // 300)):
        data = bytearray(original)
        data[position // 8] ^= 1 << (position % 8)
        path.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match=r"\(spec rule B1\)"):
            MicroModel.load("tiny_q", models_dir=models_copy)


def test_mismatched_onnx(models_copy):
    onnx_path = models_copy / "tiny_q_classifier.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\x00")
    with pytest.raises(ArtifactError, match=r"does not match.*\(spec rule P1\)"):
        MicroModel.load("tiny_q", models_dir=models_copy)


def test_unsupported_format_version(models_copy):
    _rewrite_bin(models_copy / "tiny_q_preprocessor.bin", lambda m: setattr(m, "format_version", 99))
    with pytest.raises(ArtifactError, match=r"format_version 99 is not supported.*rule B3"):
        MicroModel.load("tiny_q", models_dir=models_copy)


def test_vocab_idf_length_mismatch(models_copy):
    _rewrite_bin(models_copy / "tiny_q_preprocessor.bin", lambda m: m.idf.pop())
    with pytest.raises(ArtifactError, match=r"one idf_index per vocabulary entry.*rule B10"):
        MicroModel.load("tiny_q", models_dir=models_copy)


def test_wrong_task_name(models_copy):
    for f in list(models_copy.iterdir()):
        f.rename(models_copy / f.name.replace("tiny_q", "other"))
    with pytest.raises(ArtifactError, match=r"belongs to task 'tiny_q'.*rule B4"):
        MicroModel.load("other", models_dir=models_copy)
