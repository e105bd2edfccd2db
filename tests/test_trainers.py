"""The trainer registry: grid validation, the pipeline contract, ONNX convertibility."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.feature_extraction.text import TfidfVectorizer

from foundry.textspec import Analyzer, TextSpec
from foundry.trainers import (
    TRAINERS,
    GridError,
    class_weights,
    describe_params,
    expand_grid,
    feature_ranking,
    get_trainer,
    label_ngrams,
    log_odds_weights,
    make_pipeline,
    vocabulary_terms,
)

QUESTIONS = ["今天天气怎么样？", "明天会下雨吗", "你叫什么名字", "这个怎么用", "几点了？",
             "为什么天是蓝的", "附近有好吃的吗", "怎么去机场？", "谁发明了电话", "现在几度"]
STATEMENTS = ["帮我记一下明天开会", "打开客厅的灯", "好的", "收到", "我今天很累",
              "播放周杰伦的歌", "设个七点的闹钟", "提醒我交报告", "关掉空调", "嗯嗯知道了"]
TEXTS = QUESTIONS * 3 + STATEMENTS * 3
Y = np.array([0] * 30 + [1] * 30)
#: Trainers whose classifier is an int8 linear model with a temperature (foundry/quantized.py).
INT8_TRAINERS = ("tfidf_svm_int8", "tfidf_linear_blend_int8")


def test_registry_has_the_three_trainers():
    assert {"tfidf_logreg", "tfidf_linear_svm", "tfidf_complement_nb"} <= set(TRAINERS)
    assert "none" not in get_trainer("tfidf_linear_svm").calibrations


def test_unknown_trainer_names_the_field_and_the_choices():
    with pytest.raises(GridError, match=r"train\.trainer: unknown trainer 'xgb'.*tfidf_logreg"):
        get_trainer("xgb")


def test_grid_is_expanded_in_a_stable_order():
    cands = expand_grid(get_trainer("tfidf_logreg"), {"C": [1.0, 4.0], "ngram": [[1, 2], [1, 3]]})
    assert cands == [
        {"C": 1.0, "ngram": [1, 2]}, {"C": 1.0, "ngram": [1, 3]},
        {"C": 4.0, "ngram": [1, 2]}, {"C": 4.0, "ngram": [1, 3]},
    ]
    assert expand_grid(get_trainer("tfidf_logreg"), {}) == [{}]
    assert describe_params({"ngram": [1, 3], "C": 4.0}) == "C=4, ngram=[1,3]"


@pytest.mark.parametrize(
    ("trainer", "grid", "message"),
    [
        ("tfidf_logreg", {"alpha": [1.0]}, r"train\.grid\.alpha: not a parameter of trainer "
                                           r"'tfidf_logreg'; allowed keys: C, class_weight"),
        ("tfidf_logreg", {"C": []}, r"train\.grid\.C: needs a non-empty list"),
        ("tfidf_logreg", {"C": [-1]}, r"train\.grid\.C: -1 must be a positive number"),
        ("tfidf_logreg", {"ngram": [[3, 1]]}, r"train\.grid\.ngram: \[3, 1\] is not a \[min_n, max_n\]"),
        ("tfidf_logreg", {"ngram": [2]}, r"train\.grid\.ngram: 2 is not"),
        ("tfidf_logreg", {"min_df": [1.5]}, r"train\.grid\.min_df: 1\.5: a float is a share"),
        ("tfidf_complement_nb", {"C": [1.0]}, r"train\.grid\.C: not a parameter"),
        ("tfidf_mlp", {"C": [1.0]}, r"train\.grid\.C: not a parameter of trainer 'tfidf_mlp'"),
        ("tfidf_mlp", {"hidden": [0]}, r"train\.grid\.hidden: 0 must be a positive int"),
    ],
)
def test_bad_grid_errors_name_key_and_value(trainer, grid, message):
    with pytest.raises(GridError, match=message):
        expand_grid(get_trainer(trainer), grid)


def test_pipeline_follows_the_vectorizer_contract_and_ngram_override():
    pipe = make_pipeline(get_trainer("tfidf_logreg"), TextSpec(max_chars=64), True,
                         {"ngram": [2, 2], "min_df": 2, "C": 2.0}, seed=0)
    tfidf = pipe.named_steps["tfidf"]
    assert isinstance(tfidf, TfidfVectorizer)
    assert tfidf.analyzer == Analyzer(TextSpec(max_chars=64, min_n=2, max_n=2))
    assert (tfidf.lowercase, tfidf.norm, tfidf.use_idf, tfidf.smooth_idf) == (False, "l2", True, True)
    assert tfidf.sublinear_tf is True and tfidf.min_df == 2 and tfidf.dtype is np.float64
    assert pipe.named_steps["clf"].C == 2.0
    pipe.fit(TEXTS, Y)
    assert all(len(g) == 2 for g in vocabulary_terms(pipe))


def _cases():
    for name, trainer in TRAINERS.items():
        for cal in trainer.calibrations:
            yield name, cal


@pytest.mark.parametrize(("name", "calibration"), list(_cases()))
def test_every_trainer_converts_to_the_onnx_contract(name, calibration):
    pipe = make_pipeline(get_trainer(name), TextSpec(), True, {}, seed=0, calibration=calibration)
    pipe.fit(TEXTS, Y)
    clf = pipe.named_steps["clf"]
    d = len(pipe.named_steps["tfidf"].vocabulary_)
    if name in INT8_TRAINERS:  # not an skl2onnx model: the exporter builds its graph
        from types import SimpleNamespace

        import onnx

        from foundry.pair import classifier_onnx_bytes

        model = onnx.load_from_string(classifier_onnx_bytes(SimpleNamespace(pipeline=pipe), "t"))
    else:
        model = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, d]))],
                                target_opset={"": 15, "ai.onnx.ml": 3},
                                options={id(clf): {"zipmap": False}})
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    x = pipe.named_steps["tfidf"].transform(QUESTIONS + STATEMENTS).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"features": x.toarray()})
    expected = clf.predict_proba(x.astype(np.float64))
    assert proba.shape == (20, 2)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(axis=1))


def test_class_weights_reproduce_the_linear_decision():
    pipe = make_pipeline(get_trainer("tfidf_logreg"), TextSpec(), True, {}, seed=0).fit(TEXTS, Y)
    x = pipe.named_steps["tfidf"].transform(["明天会下雨吗", "打开客厅的灯"])
    W = class_weights(pipe.named_steps["clf"], 2)
    clf = pipe.named_steps["clf"]
    np.testing.assert_allclose(x @ (W[1] - W[0]) + clf.intercept_[0], clf.decision_function(x))


def test_class_weights_of_calibrated_and_nb_models_rank_like_the_model():
    for name, cal in (("tfidf_linear_svm", "sigmoid"), ("tfidf_complement_nb", "none")):
        pipe = make_pipeline(get_trainer(name), TextSpec(), True, {}, seed=0,
                             calibration=cal).fit(TEXTS, Y)
        x = pipe.named_steps["tfidf"].transform(QUESTIONS + STATEMENTS)
        W = class_weights(pipe.named_steps["clf"], 2)
        assert W.shape == (2, x.shape[1])
        scores = np.asarray(x @ W.T)
        # Higher class-0 score margin <=> higher class-0 probability (monotone calibration).
        margin = scores[:, 0] - scores[:, 1]
        p0 = pipe.predict_proba(QUESTIONS + STATEMENTS)[:, 0]
        assert np.corrcoef(margin, p0)[0, 1] > 0.8


#: Four labels: questions, statements, and two topics cut across them.
MANY_TEXTS = QUESTIONS + STATEMENTS + ["设个闹钟", "闹钟几点响", "取消明天的闹钟",
                                       "放首歌", "这首歌叫什么", "下一首歌"]
MANY_Y = np.array([0] * 10 + [1] * 10 + [2] * 3 + [3] * 3)


@pytest.mark.parametrize(("name", "labels"), [("tfidf_svm_int8", 4), ("tfidf_logreg", 4),
                                              ("tfidf_logreg", 2), ("tfidf_svm_int8", 2),
                                              ("tfidf_linear_blend_int8", 4),
                                              ("tfidf_linear_blend_int8", 2)])
def test_log_odds_weights_add_up_to_the_log_odds_of_the_probabilities(name, labels):
    texts, y = (MANY_TEXTS, MANY_Y) if labels == 4 else (TEXTS, Y)
    pipe = make_pipeline(get_trainer(name), TextSpec(), True, {}, seed=0).fit(texts, y)
    clf = pipe.named_steps["clf"]
    if name in INT8_TRAINERS:  # folded into the weights, as the export folds it
        # (the 2-label rows repeat each text three times: the blend's out-of-fold part scores
        # separate them, its part temperatures hit their lower bound and its scores reach
        # ~300; a large temperature keeps its probabilities above 0)
        clf.set_temperature(0.37 if name == "tfidf_svm_int8" else 100.0)
    W, b = log_odds_weights(clf, labels)
    x = pipe.named_steps["tfidf"].transform(MANY_TEXTS + ["完全没见过的话"])
    assert W.shape == (labels, x.shape[1]) and b.shape == (labels,)
    log_p = np.log(clf.predict_proba(x))
    scores = np.asarray(x @ W.T) + b
    for a, c in ((0, 1), (labels - 1, 0)):
        np.testing.assert_allclose(scores[:, a] - scores[:, c], log_p[:, a] - log_p[:, c],
                                   rtol=1e-9, atol=1e-9)


def test_models_without_log_odds_weights_say_so():
    for name, cal in (("tfidf_linear_svm", "sigmoid"), ("tfidf_complement_nb", "none"),
                      ("tfidf_logreg", "sigmoid")):
        pipe = make_pipeline(get_trainer(name), TextSpec(), True, {}, seed=0,
                             calibration=cal).fit(TEXTS, Y)
        assert log_odds_weights(pipe.named_steps["clf"], 2) is None, name


@pytest.mark.parametrize("name", ["tfidf_logreg", "tfidf_complement_nb"])
def test_feature_ranking_puts_the_deciding_ngram_first(name):
    texts = [f"甲{i}" for i in range(20)] + [f"乙{i}" for i in range(20)]
    y = np.array([0] * 20 + [1] * 20)
    trainer = get_trainer(name)
    pipe = make_pipeline(trainer, TextSpec(min_n=1, max_n=1, word_boundary_padding=False), False,
                         {}, seed=0).fit(texts, y)
    order = feature_ranking(pipe.named_steps["clf"], trainer,
                            pipe.named_steps["tfidf"].transform(texts), y, 2)
    terms = vocabulary_terms(pipe)
    assert {terms[order[0]], terms[order[1]]} == {"甲", "乙"}
    assert sorted(order.tolist()) == list(range(len(terms)))


def test_capabilities_say_how_a_trainer_is_explained_and_run():
    assert all(TRAINERS[n].linear for n in ("tfidf_logreg", "tfidf_linear_svm",
                                            "tfidf_complement_nb", *INT8_TRAINERS))
    for name in INT8_TRAINERS:  # explained by their weights, prunable, softmax(scores / T)
        trainer = get_trainer(name)
        assert trainer.explained_by == "weights" and trainer.prunable
        assert trainer.prune_by == "coef" and trainer.calibrations == ("none",)
    mlp = get_trainer("tfidf_mlp")
    assert not mlp.linear and mlp.prunable and mlp.explained_by == "occlusion"
    assert mlp.calibrations == ("none",) and mlp.prune_by == "chi2"
    pipe = make_pipeline(mlp, TextSpec(), True, {"hidden": 4}, seed=0)
    assert pipe.named_steps["tfidf"].max_features == 4000  # the trainer's vectorizer default
    assert make_pipeline(mlp, TextSpec(), True, {"max_features": 50}, seed=0) \
        .named_steps["tfidf"].max_features == 50
    pipe.fit(TEXTS, Y)
    assert label_ngrams(pipe, mlp, ["q", "s"]) is None
    with pytest.raises(ValueError, match="MLPClassifier has no weights per class and n-gram"):
        class_weights(pipe.named_steps["clf"], 2)
    linear = make_pipeline(get_trainer("tfidf_logreg"), TextSpec(), True, {}, seed=0).fit(TEXTS, Y)
    table = label_ngrams(linear, get_trainer("tfidf_logreg"), ["q", "s"], k=3)
    assert list(table) == ["q", "s"] and all(len(v) == 3 for v in table.values())


def test_mlp_pairs_are_byte_identical_for_the_same_seed():
    from foundry.pair import artifact_bytes
    from foundry.trained import as_trained

    def pair(seed: int) -> tuple[bytes, bytes]:
        pipe = make_pipeline(get_trainer("tfidf_mlp"), TextSpec(), True, {"hidden": 4},
                             seed=seed).fit(TEXTS, Y)
        return artifact_bytes(as_trained(pipe, ["q", "s"], TextSpec(), True, "tfidf_mlp", "t"),
                              0.5, task="t")

    assert pair(0) == pair(0)
    assert pair(0)[0] != pair(1)[0]


def _blend_and_parts(params, texts, y):
    """A fitted blend pipeline, its features of ``texts``, and its two parts fitted by
    scikit-learn directly on the same features with the same parameters."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    pipe = make_pipeline(get_trainer("tfidf_linear_blend_int8"), TextSpec(), True, params,
                         seed=0).fit(texts, y)
    x = pipe.named_steps["tfidf"].transform(texts)
    clf = pipe.named_steps["clf"]
    svm = LinearSVC(C=clf.C, max_iter=20000, random_state=0).fit(x, y)
    lr = LogisticRegression(C=clf.lr_C, max_iter=20000, random_state=0).fit(x, y)
    return pipe, x, svm, lr


@pytest.mark.parametrize("labels", [4, 2])
def test_blend_decision_is_the_mean_of_its_parts_logits(labels):
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from foundry.quantized import fit_temperature

    texts, y = (MANY_TEXTS, MANY_Y) if labels == 4 else (TEXTS, Y)
    pipe, x, svm, lr = _blend_and_parts({"C": 2.0, "lr_C": 10.0}, texts, y)
    clf = pipe.named_steps["clf"]
    assert (clf.C, clf.lr_C) == (2.0, 10.0)  # the grid keys reach the parts
    t_svm, t_lr = clf.part_temperatures_
    # Each part's temperature is fitted on its out-of-fold scores of the training rows.
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    for part, t in ((svm, t_svm), (lr, t_lr)):
        oof = cross_val_predict(clone(part), x, y, cv=folds, method="decision_function")
        if labels == 2:
            oof = np.column_stack([-oof / 2, oof / 2])
        assert t == pytest.approx(fit_temperature(oof, y), rel=1e-9)
    probe = pipe.named_steps["tfidf"].transform(MANY_TEXTS + TEXTS + ["完全没见过的话"])
    mean = (svm.decision_function(probe) / t_svm + lr.decision_function(probe) / t_lr) / 2
    if labels == 2:  # one score per row: class 1 against class 0, the half-columns apart
        decision = clf.decision_function(probe)
        decision = decision[:, 1] - decision[:, 0]
    else:
        decision = clf.decision_function(probe)
    # int8: each weight within half a rounding step of the float mean, so each score within
    # half a step times the row's L1 norm (TF-IDF rows are L2-normalised, a few dozen terms).
    W = (svm.coef_ / t_svm + lr.coef_ / t_lr) / 2
    step = np.abs(W).max(axis=1) / 127
    l1 = np.asarray(abs(probe).sum(axis=1)).ravel()
    # (binary: the half-columns -W/2, W/2 round with half the step, exact negatives, so
    # their difference is within the same bound)
    bound = 0.5 * (l1 if labels == 2 else l1[:, None]) * (step[0] if labels == 2 else step) + 1e-6
    assert (np.abs(decision - mean) <= bound).all()
    assert (decision.argmax(axis=1) if labels > 2 else decision > 0).tolist() == (
        mean.argmax(axis=1) if labels > 2 else mean > 0).tolist()


@pytest.mark.parametrize("labels", [4, 2])
def test_blend_exports_through_the_int8_graph(labels):
    from types import SimpleNamespace

    import onnx

    from foundry.pair import classifier_onnx_bytes
    from foundry.quantized import Int8Linear, quantized_onnx
    from foundry.runtime import read_linear_graph

    texts, y = (MANY_TEXTS, MANY_Y) if labels == 4 else (TEXTS, Y)
    pipe = make_pipeline(get_trainer("tfidf_linear_blend_int8"), TextSpec(), True, {},
                         seed=0).fit(texts, y)
    clf = pipe.named_steps["clf"].set_temperature(0.6)
    assert isinstance(clf, Int8Linear)
    onnx_bytes = classifier_onnx_bytes(SimpleNamespace(pipeline=pipe), "t")
    d = len(pipe.named_steps["tfidf"].vocabulary_)
    assert onnx_bytes == quantized_onnx(clf, d, "t", 15)  # the int8 SVM's graph, unchanged
    assert {i.name for i in onnx.load_from_string(onnx_bytes).graph.initializer} == {
        "W_q", "W_scale", "b"}
    x = pipe.named_steps["tfidf"].transform(MANY_TEXTS + TEXTS + ["完全没见过的话"])
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"features": x.astype(np.float32).toarray()})
    expected = clf.predict_proba(x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(axis=1))
    graph = read_linear_graph(onnx_bytes)  # what the fused numpy and native paths read
    assert graph is not None and graph.coefficients.shape == (labels, d)


def test_blend_grid_keys_are_checked():
    trainer = get_trainer("tfidf_linear_blend_int8")
    assert set(trainer.classifier_keys) == {"C", "lr_C", "class_weight"}
    assert expand_grid(trainer, {"C": [1.0, 2.0], "lr_C": [30.0]}) == [
        {"C": 1.0, "lr_C": 30.0}, {"C": 2.0, "lr_C": 30.0}]
    with pytest.raises(GridError, match=r"train\.grid\.lr_C: 0 must be a positive number"):
        expand_grid(trainer, {"lr_C": [0]})
    with pytest.raises(GridError, match=r"train\.grid\.lr_C: not a parameter of trainer "
                                        r"'tfidf_svm_int8'"):
        expand_grid(get_trainer("tfidf_svm_int8"), {"lr_C": [30.0]})


def test_label_group_weights_are_grid_keys_and_reach_the_classifier_with_the_names():
    trainer = get_trainer("tfidf_svm_int8")
    assert expand_grid(trainer, {"prefix_weight": [0, 1.5], "suffix_weight": [0.5]}) == [
        {"prefix_weight": 0, "suffix_weight": 0.5}, {"prefix_weight": 1.5, "suffix_weight": 0.5}]
    with pytest.raises(GridError, match=r"train\.grid\.prefix_weight: -1 must be a number >= 0"):
        expand_grid(trainer, {"prefix_weight": [-1]})
    with pytest.raises(GridError, match=r"train\.grid\.suffix_weight: not a parameter"):
        expand_grid(get_trainer("tfidf_logreg"), {"suffix_weight": [1.0]})
    names = ("chat_ask", "chat_say", "alarm_set", "music_play")  # MANY_Y's four classes
    pipe = make_pipeline(trainer, TextSpec(), True, {"prefix_weight": 1.5}, seed=0,
                         labels=names).fit(MANY_TEXTS, MANY_Y)
    clf = pipe.named_steps["clf"]
    assert (clf.prefix_weight, clf.suffix_weight, clf.label_names) == (1.5, 0.0, names)
    # other classifiers ignore the names
    assert make_pipeline(get_trainer("tfidf_logreg"), TextSpec(), True, {}, seed=0,
                         labels=names).fit(MANY_TEXTS, MANY_Y).predict(["关掉闹钟"]).shape == (1,)


def test_blend_fits_labels_rarer_than_its_folds():
    """A label with fewer rows than the part folds: its held-out rows are left out of the
    part temperatures, the blend still fits every label."""
    texts = MANY_TEXTS + ["关掉闹钟"]
    y = np.append(MANY_Y, 4)  # label 4: one row
    pipe = make_pipeline(get_trainer("tfidf_linear_blend_int8"), TextSpec(), True, {},
                         seed=0).fit(texts, y)
    clf = pipe.named_steps["clf"]
    assert clf.coef_.shape[0] == 5 and all(np.isfinite(clf.part_temperatures_))


def test_the_scaffold_names_every_registered_trainer():
    """`foundry blueprint new` writes a blueprint whose trainer comment lists the choices."""
    import re
    from pathlib import Path

    import foundry.scaffold
    from foundry.trainers import TRAINERS

    template = Path(foundry.scaffold.__file__).parent / "template" / "blueprint.yaml"
    line = next(ln for ln in template.read_text(encoding="utf-8").splitlines()
                if re.match(r"\s+trainer:", ln))
    assert sorted(line.split("#", 1)[1].replace("|", " ").split()) == sorted(TRAINERS)
