"""The evaluate stage: threshold choice, calibration measures, exam gate, error analysis."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fakes import synthetic
from fakes.summaries import write_refine_summary
from fakes.synthetic import EXAM_TOPICS, write_jsonl

from foundry.blueprint import load_blueprint
from foundry.evaluate import (
    NO_PUSH,
    PLOTS,
    RUNNER_UP_COLUMNS,
    ExamDataError,
    ExamGateError,
    choose_threshold,
    confident_stats,
    cross_fitted_confidence,
    error_table,
    evaluate_stage,
    load_exam,
    occlusion_pushes,
    predict_frame,
    pushing_ngrams,
    reliability_table,
    risk_coverage_curve,
    runner_up_ngrams,
)
from foundry.train import train_stage
from foundry.trained import expected_calibration_error, load_trained
from foundry.trainers import base_classifier

TOPICS = ["天气", "日程", "音乐", "电影", "火车票", "会议", "闹钟", "外卖", "快递", "作业"]
QUESTION = ["{t}怎么样", "{t}是什么", "今天{t}好吗", "{t}在哪里", "为什么{t}这么贵"]
STATEMENT = ["帮我打开{t}", "记录一下{t}", "我觉得{t}不错", "把{t}关掉", "提醒我{t}"]
REQUIRED_KEYS = {
    "threshold", "target_precision", "coverage_at_threshold", "confident_precision",
    "test_accuracy", "test_macro_f1", "exam_accuracy", "exam_cases", "exam_confident_share",
    "exam_passed", "exam_min_accuracy", "failed_exam_cases", "ece",
}


make_rows = functools.partial(synthetic.make_rows, questions=QUESTION, statements=STATEMENT,
                              topics=TOPICS)


def exam_rows(wrong: int = 0) -> list[dict]:
    """20 easy exam cases; the first ``wrong`` of them carry the opposite gold label."""
    rows = [{**r, "hard": i % 5 == 0, "note": f"n{i}"}
            for i, r in enumerate(make_rows(20, 5, topics=EXAM_TOPICS))]
    for r in rows[:wrong]:
        r["label"] = "Statement" if r["label"] == "Question" else "Question"
    return rows


def setup_run(tmp: Path, exam: list[dict], exam_min_accuracy: float = 0.9,
              question_categories: tuple[str, ...] = (), rules: list[dict] | None = None):
    spec = {
        "name": "tiny",
        "tasks": [{"name": "is_question", "constitution": "c.md", "exam": "exam/q.jsonl",
                   "labels": [{"name": "Question", "definition": "q",
                               "categories": list(question_categories)},
                              {"name": "Statement", "definition": "s"}],
                   **({"rules": rules} if rules else {})}],
        "train": {"grid": {"C": [4.0]}, "cv_folds": 3, "seed": 1},
        "evaluate": {"target_precision": 0.95, "exam_min_accuracy": exam_min_accuracy},
        "export": {"size_budget_kb": None},
    }
    (tmp / "bp").mkdir(parents=True)
    (tmp / "bp" / "blueprint.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    (tmp / "bp" / "c.md").write_text("constitution", "utf-8")
    write_jsonl(tmp / "bp" / "exam" / "q.jsonl", exam)
    bp = load_blueprint(tmp / "bp", check_files=False)
    run = tmp / "run"
    write_jsonl(run / "refine/is_question/train.jsonl", make_rows(200, 1, noise=0.05))
    write_jsonl(run / "refine/is_question/test.jsonl", make_rows(100, 2, noise=0.05))
    write_refine_summary(run, train_rows=200, data=b"x")
    train_stage(bp, run, log=lambda _: None)
    return bp, run


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    bp, run = setup_run(tmp_path_factory.mktemp("pass"), exam_rows())
    return bp, run, evaluate_stage(bp, run, log=lambda _: None)["is_question"]


# ----------------------------------------------------------------- threshold and measures


def test_threshold_is_the_lowest_that_meets_the_target():
    # confidences 0.99 ok, 0.95 ok, 0.90 wrong, 0.80 ok (two classes)
    proba = np.array([[0.99, 0.01], [0.95, 0.05], [0.10, 0.90], [0.80, 0.20]])
    y = np.array([0, 0, 0, 0])
    assert choose_threshold(proba, y, 0.99, margin=0) == 0.95
    assert choose_threshold(proba, y, 0.75, margin=0) == 0.80  # 3 of 4 right: all confident
    assert choose_threshold(proba, y, 0.60) == pytest.approx(0.80 - 1e-6, abs=1e-12)


def test_threshold_keeps_tied_probabilities_together():
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.7, 0.3]])
    y = np.array([0, 1, 0])  # the tie at 0.9 is half wrong
    t = choose_threshold(proba, y, 0.99)
    assert t > 0.9  # no threshold can admit one 0.9 answer without the other
    assert confident_stats(proba, y, t)[0] == 0.0


def test_threshold_margin_keeps_float32_runtimes_on_the_same_side():
    p = np.float64(np.float32(0.8)) + 1e-8  # a float64 probability that float32 rounds down
    proba = np.array([[p, 1 - p]] * 5 + [[0.6, 0.4]])
    y = np.array([0, 0, 0, 0, 0, 1])
    t = choose_threshold(proba, y, 0.99)
    assert float(np.float32(p)) < p  # the float32 runtime sees a smaller probability...
    assert float(np.float32(p)) >= t and p >= t  # ...yet both are confident
    assert t > 0.6


def test_threshold_is_never_above_one():
    """A model wrong at probability ~1 (seen on the default blueprint at --target 2000): the
    threshold that makes no answer confident used to be 1.000001, which the export then
    refused (spec rule B11: a threshold is in [0, 1])."""
    proba = np.array([[1.0, 0.0], [1.0 - 1e-9, 1e-9], [0.7, 0.3]])
    y = np.array([1, 0, 0])  # the most confident answer is wrong
    t = choose_threshold(proba, y, 0.99)
    assert t == 1.0
    assert confident_stats(proba, y, t)[0] == pytest.approx(1 / 3)  # only p == 1 exactly


def test_threshold_is_never_below_one_over_k():
    proba = np.array([[0.5, 0.5], [0.6, 0.4]])
    assert choose_threshold(proba, np.array([0, 0]), 0.9) == 0.5


def test_risk_coverage_and_reliability():
    proba = np.array([[0.99, 0.01], [0.95, 0.05], [0.10, 0.90], [0.80, 0.20]])
    y = np.array([0, 0, 0, 0])
    rc = risk_coverage_curve(proba, y)
    assert rc["coverage"].tolist() == [0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(rc["precision"], [1, 1, 2 / 3, 3 / 4])
    rel = reliability_table(np.array([0.55, 0.56, 0.95]), np.array([1, 0, 1]), bins=10)
    assert rel["count"].sum() == 3 and rel.loc[5, "count"] == 2 and rel.loc[5, "accuracy"] == 0.5
    # ECE: bin 5 |0.5 - 0.555| * 2/3 + bin 9 |1 - 0.95| * 1/3
    assert expected_calibration_error(np.array([0.55, 0.56, 0.95]), np.array([1, 0, 1]), bins=10) \
        == pytest.approx(2 / 3 * 0.055 + 1 / 3 * 0.05)


# ----------------------------------------------------------------- the stage


def test_summary_has_the_contract_fields_and_files(passing):
    _, run, res = passing
    folder = run / "evaluate" / "is_question"
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary) >= REQUIRED_KEYS
    assert summary["exam_cases"] == 20 and summary["exam_passed"] is True
    assert summary["failed_exam_cases"] == []
    assert summary["exam_missing_categories"] == []  # the test blueprint names no categories
    assert summary["threshold"] >= 0.5 and summary["target_precision"] == 0.95
    for name in (*PLOTS, "errors.csv", "exam.csv", "risk_coverage.csv", "reliability.csv"):
        assert (folder / name).is_file(), name
    for name in PLOTS:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.threshold == summary["threshold"]


def test_threshold_meets_the_target_on_both_held_out_sets(passing):
    _, run, res = passing
    tm = load_trained(run, "is_question")
    test = res.test
    gold = (test["gold"] == "Statement").astype(int).to_numpy()
    proba = tm.predict_proba(test["text"].tolist())
    s = res.summary
    assert s.oof_threshold == choose_threshold(tm.oof_proba, tm.oof_y, 0.95)
    assert s.test_threshold == choose_threshold(proba, gold, 0.95)
    assert res.threshold == max(s.oof_threshold, s.test_threshold)
    for p, y in ((tm.oof_proba, tm.oof_y), (proba, gold)):
        coverage, precision = confident_stats(p, y, res.threshold)
        assert precision >= 0.95 and coverage > 0
    assert s.oof_coverage_at_threshold == confident_stats(tm.oof_proba, tm.oof_y,
                                                             res.threshold)[0]
    assert 0.0 < s.crossfit_coverage <= 1.0 and s.crossfit_confident_precision > 0.8


def test_cross_fitting_measures_the_rule_out_of_sample():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 400)
    y = rng.integers(0, 2, 400)
    # Right exactly when confidence > 0.7: the rule should learn ~0.7 on each half.
    pred = np.where(conf > 0.7, y, 1 - y)
    proba = np.where(pred[:, None] == np.arange(2), conf[:, None], 1 - conf[:, None])
    coverage, precision = cross_fitted_confidence(proba, y, 0.99, floor=0.5, seed=3)
    assert precision >= 0.97 and 0.5 < coverage < 0.65
    # The floor (the out-of-fold threshold) is respected on every part.
    coverage_hi, _ = cross_fitted_confidence(proba, y, 0.99, floor=0.9, seed=3)
    assert coverage_hi == pytest.approx((conf >= 0.9).mean())


def test_test_metrics_match_the_case_table(passing):
    _, _, res = passing
    t, s = res.test, res.summary
    assert s.test_cases == len(t) == 100
    assert s.test_accuracy == pytest.approx(t["correct"].mean())
    assert s.coverage_at_threshold == pytest.approx((t["p"] >= s.threshold).mean())
    confident = t[t["p"] >= s.threshold]
    assert s.confident_precision == pytest.approx(confident["correct"].mean())


def test_errors_list_every_misclassified_case_with_pushing_ngrams(passing):
    _, run, res = passing
    errors = pd.read_csv(run / "evaluate/is_question/errors.csv", keep_default_na=False)
    assert len(errors) == int((~res.test["correct"]).sum()) + int((~res.exam["correct"]).sum())
    assert len(errors) > 0  # 5% label noise in the test split
    assert set(errors["split"]) <= {"test", "exam"}
    assert (errors["gold"] != errors["predicted"]).all()
    assert (errors["pushing_ngrams"].str.len() > 0).all()
    unexplained = errors[errors["pushing_ngrams"] == NO_PUSH]
    tm = load_trained(run, "is_question")
    for text, gold, pred in unexplained[["text", "gold", "predicted"]].itertuples(index=False):
        assert pushing_ngrams(tm, text, pred, gold) == []


def test_a_binary_error_table_keeps_its_columns(passing):
    _, run, _ = passing
    errors = pd.read_csv(run / "evaluate/is_question/errors.csv", keep_default_na=False)
    assert list(errors.columns)[-1] == "pushing_ngrams"
    assert not set(RUNNER_UP_COLUMNS) & set(errors.columns)


def many_label_model(trainer: str):
    """A four-label model (alarm, music, weather, lights) that makes some errors."""
    from foundry.textspec import TextSpec
    from foundry.trained import as_trained
    from foundry.trainers import get_trainer, make_pipeline

    words = {"alarm": ["闹钟", "叫醒", "起床"], "music": ["歌", "音乐", "播放"],
             "weather": ["天气", "下雨", "温度"], "lights": ["灯", "开灯", "关灯"]}
    texts, y = [], []
    for k, ws in enumerate(words.values()):
        for i, w in enumerate(ws * 4):
            texts.append(f"{['帮我', '请', '我想', '能不能'][i % 4]}{w}{i}")
            y.append(k)
    pipe = make_pipeline(get_trainer(trainer), TextSpec(), True, {}, seed=0)
    pipe.fit(texts, np.array(y))
    if trainer == "tfidf_svm_int8":
        pipe.named_steps["clf"].set_temperature(0.5)
    return as_trained(pipe, list(words), TextSpec(), True, trainer, "intent")


@pytest.mark.parametrize("trainer", ["tfidf_svm_int8", "tfidf_logreg"])
def test_many_label_errors_explain_the_top_label_against_the_runner_up(trainer):
    tm = many_label_model(trainer)
    texts = ["播放天气预报的歌", "开灯叫醒我", "明天下雨吗", "音乐闹钟", "关灯", "起床温度"]
    gold = ["weather", "alarm", "weather", "alarm", "lights", "weather"]
    frame, proba = predict_frame(tm, texts, gold, threshold=0.0)
    errors = error_table(tm, {"test": frame})
    assert len(errors) == int((~frame["correct"]).sum()) > 0
    assert list(errors.columns)[-len(RUNNER_UP_COLUMNS):] == list(RUNNER_UP_COLUMNS)
    tfidf, clf = tm.pipeline.named_steps["tfidf"], tm.pipeline.named_steps["clf"]
    for row in errors.itertuples(index=False):
        p = proba[texts.index(row.text)]
        first, second = np.argsort(-p, kind="stable")[:2]
        assert (row.top, row.runner_up) == (tm.labels[first], tm.labels[second])
        assert row.top == row.predicted  # no out-of-scope label here
        assert row.log_odds == pytest.approx(np.log(p[first] / p[second]), abs=1e-6)
        assert row.vs_runner_up.startswith("'")
    # The n-grams' shares and the intercept difference add up to the log-odds.
    from foundry.trainers import log_odds_weights, vocabulary_terms

    W, b = log_odds_weights(clf, 4)
    x = tfidf.transform(["开灯叫醒我"]).tocsr()
    whole = runner_up_ngrams(x, W, b, tm.labels, vocabulary_terms(tm.pipeline), k=1000)
    shares = [float(part.rsplit(" ", 1)[1]) for part in whole["vs_runner_up"].split("; ")]
    top, second = tm.labels.index(whole["top"]), tm.labels.index(whole["runner_up"])
    assert sum(shares) + b[top] - b[second] == pytest.approx(  # shares printed to 0.001
        whole["log_odds"], abs=0.0005 * len(shares) + 1e-6)
    assert [abs(v) for v in shares] == sorted((abs(v) for v in shares), reverse=True)
    # pushing_ngrams (predicted vs gold) is in the same log-odds units
    log_p = np.log(clf.predict_proba(x)[0])
    pushes = pushing_ngrams(tm, "开灯叫醒我", "lights", "alarm", k=1000)
    against = pushing_ngrams(tm, "开灯叫醒我", "alarm", "lights", k=1000)
    i, j = tm.labels.index("lights"), tm.labels.index("alarm")
    assert sum(v for _, v in pushes) - sum(v for _, v in against) + b[i] - b[j] == \
        pytest.approx(log_p[i] - log_p[j], abs=1e-6)


def test_pushing_ngrams_sum_to_the_decision_margin(passing):
    _, run, _ = passing
    tm = load_trained(run, "is_question")
    # Calibrated or not, the pushes are those of the linear model inside.
    clf = base_classifier(tm.pipeline.named_steps["clf"])
    text = "今天天气怎么样"
    pushes = pushing_ngrams(tm, text, "Question", "Statement", k=1000)
    x = tm.pipeline.named_steps["tfidf"].transform([text])
    margin = -(clf.decision_function(x)[0] - clf.intercept_[0])  # towards class 0 = Question
    against = pushing_ngrams(tm, text, "Statement", "Question", k=1000)
    # Every n-gram pushes one way or the other: the two lists add up to the margin.
    assert sum(v for _, v in pushes) - sum(v for _, v in against) == pytest.approx(margin)
    assert margin > 0 and all(v > 0 for _, v in pushes + against)
    assert [v for _, v in pushes] == sorted((v for _, v in pushes), reverse=True)


def test_binary_int8_pushes_and_bias_are_the_exported_logit(passing):
    """The default trainer ships an int8 logistic model (two half-columns in the .onnx):
    its pushes plus the intercept difference are the log-odds ONNX Runtime computes from the
    exported graph, both ways round and for every text."""
    import onnxruntime as ort

    from foundry.pair import classifier_onnx_bytes
    from foundry.quantized import Int8Logistic

    _, run, _ = passing
    tm = load_trained(run, "is_question")
    clf = tm.pipeline.named_steps["clf"]
    assert isinstance(clf, Int8Logistic)
    session = ort.InferenceSession(classifier_onnx_bytes(tm, "is_question"))
    q, s = tm.labels.index("Question"), tm.labels.index("Statement")
    texts = ["今天天气怎么样", "帮我打开音乐", "记录一下闹钟吗", "为什么快递这么贵"]
    x = tm.pipeline.named_steps["tfidf"].transform(texts)
    _, proba = session.run(None, {"features": x.toarray().astype(np.float32)})
    logit = np.log(proba[:, q].astype(np.float64) / proba[:, s].astype(np.float64))
    bias_q = float(clf.intercept_[0]) * (1 if q == 1 else -1)  # intercept_: class 1 vs 0
    for text, want in zip(texts, logit, strict=True):
        towards = pushing_ngrams(tm, text, "Question", "Statement", k=1000)
        against = pushing_ngrams(tm, text, "Statement", "Question", k=1000)
        got = sum(v for _, v in towards) - sum(v for _, v in against) + bias_q
        assert got == pytest.approx(want, abs=1e-4)
    assert (logit > 0).any() and (logit < 0).any()  # both answers among the texts


def test_pushing_ngrams_point_to_the_question_words(passing):
    _, run, _ = passing
    tm = load_trained(run, "is_question")
    grams = [g for g, _ in pushing_ngrams(tm, "今天天气怎么样", "Question", "Statement")]
    assert any("么" in g or "怎" in g for g in grams)


def test_exam_gate_raises_with_the_failed_cases(tmp_path):
    bp, run = setup_run(tmp_path, exam_rows(wrong=4), exam_min_accuracy=0.9)
    with pytest.raises(ExamGateError) as info:
        evaluate_stage(bp, run, log=lambda _: None)
    msg = str(info.value)
    flipped = exam_rows(wrong=4)[:4]
    for case in flipped:
        assert repr(case["text"]) in msg and f"{case['label']} ->" in msg
    assert "80.0% (16/20)" in msg and "--allow-exam-failures" in msg
    assert set(info.value.failures) == {"is_question"}
    # The outputs were written before the gate closed, so the notebook can show them.
    summary = json.loads((run / "evaluate/is_question/summary.json").read_text())
    assert summary["exam_passed"] is False and len(summary["failed_exam_cases"]) == 4
    assert {c["text"] for c in summary["failed_exam_cases"]} == {c["text"] for c in flipped}


def test_allow_exam_failures_logs_instead_of_raising(tmp_path):
    bp, run = setup_run(tmp_path, exam_rows(wrong=4))
    logs: list[str] = []
    res = evaluate_stage(bp, run, allow_exam_failures=True, log=logs.append)["is_question"]
    assert not res.exam_passed and res.summary.exam_accuracy == pytest.approx(0.8)
    assert any("overridden" in m for m in logs)


def test_exam_categories_the_blueprint_names_but_the_exam_lacks(tmp_path):
    bp, run = setup_run(tmp_path, exam_rows(), question_categories=("c0", "c9"))
    logs: list[str] = []
    res = evaluate_stage(bp, run, log=logs.append)["is_question"]
    assert res.summary.exam_missing_categories == ["Question/c9"]
    assert any("no case for Question/c9" in m for m in logs)


def test_empty_exam_cannot_pass(tmp_path):
    bp, run = setup_run(tmp_path, [])
    with pytest.raises(ExamGateError, match="the exam has no cases"):
        evaluate_stage(bp, run, log=lambda _: None)


def test_reflex_rule_hits_per_split_and_a_contradiction_fails_the_stage(tmp_path):
    from foundry.reflex import RuleContradictionError

    # Only exam texts hold an exam topic: this rule is right wherever it answers.
    exact = {"name": "open", "label": "Statement", "starts_with": ["记录一下", "提醒我"],
             "also_contains": [EXAM_TOPICS[0]]}
    bp, run = setup_run(tmp_path / "ok", exam_rows(), rules=[exact])
    rules = evaluate_stage(bp, run, log=lambda _: None)["is_question"].summary.rules
    assert rules["rules"] == ["open"] and set(rules["splits"]) == {"train", "test", "exam"}
    exam = rules["splits"]["exam"]
    assert exam["rows"] == 20 and exam["hits"]["open"] >= 1
    assert rules["splits"]["train"]["hits"] == {"open": 0}
    assert exam["accuracy_with_rules"] >= exam["accuracy_model"]
    for split in rules["splits"].values():  # per rule, the model errors it took over
        assert set(split["taken_over"]) == {"open"}
        assert sum(split["taken_over"].values()) == split["model_wrong_on_hits"]
        assert split["taken_over"]["open"] <= split["hits"]["open"]
    # The training rows carry 5% label noise: a rule on every "帮我打开…" contradicts one.
    broad = {"name": "open_all", "label": "Statement", "starts_with": ["帮我打开"]}
    bp, run = setup_run(tmp_path / "bad", exam_rows(), rules=[broad])
    with pytest.raises(RuleContradictionError,
                       match=r"reflex rule 'open_all' answers Statement for the \w+ text "
                             r"'帮我打开.*' labelled Question"):
        evaluate_stage(bp, run, log=lambda _: None)


def test_exam_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="exam file not found"):
        load_exam(tmp_path / "none.jsonl", ["A", "B"])
    write_jsonl(tmp_path / "e.jsonl", [{"text": "好", "label": "A"}, {"text": "x", "label": "C"}])
    with pytest.raises(ExamDataError, match=r"e\.jsonl:2: field 'label' is 'C'"):
        load_exam(tmp_path / "e.jsonl", ["A", "B"])
    frame = load_exam(tmp_path / "e.jsonl", ["A", "B", "C"])
    assert frame.loc[0, "category"] == "" and not frame.loc[0, "hard"]


@pytest.mark.slow
def test_train_and_evaluate_notebooks_run_headless(passing, tmp_path):
    import nbformat
    import papermill

    from foundry.paths import NOTEBOOKS_DIR

    bp, run, _ = passing
    for name in ("03_train.ipynb", "04_evaluate.ipynb"):
        out = tmp_path / name
        papermill.execute_notebook(
            str(NOTEBOOKS_DIR / name), str(out), cwd=str(tmp_path), progress_bar=False,
            parameters={"blueprint": str(bp.root), "run_dir": str(run)},
        )
        nb = nbformat.read(out, as_version=4)
        images = sum("image/png" in o.get("data", {}) for c in nb.cells
                     for o in c.get("outputs", []))
        assert images >= (1 if name.startswith("03") else 4), name


def test_baseline_bench_prints_one_table(passing, capsys):
    import importlib.util

    from foundry.paths import ROOT

    spec = importlib.util.spec_from_file_location("baselines", ROOT / "bench" / "baselines.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bp, run, res = passing
    assert bench.fasttext_tokens("Hi 你好", bench.TextSpec()) == "h i _ 你 好"
    rows = bench.bench_task(bp, run, bp.task("is_question"), run / "no-models", queries=20)
    assert [r["model"].split(" ")[0] for r in rows] == ["ours:", "fastText", "fastText",
                                                        "tfidf_mlp,", "original"]
    ours = rows[0]
    assert ours["exam_acc"] == pytest.approx(res.summary.exam_accuracy)
    assert ours["test_macro_f1"] == pytest.approx(res.summary.test_macro_f1)
    assert all(r["size_kib"] > 0 and r["latency_median_us"] > 0 for r in rows)
    table = bench.format_table(rows)
    assert table.count("\n") == 6 and "| is_question | fastText .ftz (quantised) | n/a |" in table
    assert bench.wilson_interval(90, 100) == pytest.approx((0.8256, 0.9448), abs=1e-4)


def test_occlusion_pushes_name_the_deciding_ngram_of_a_nonlinear_model():
    from foundry.textspec import TextSpec
    from foundry.trained import as_trained
    from foundry.trainers import get_trainer, make_pipeline

    texts = [f"甲{i}" for i in range(20)] + [f"乙{i}" for i in range(20)]
    y = np.array([0] * 20 + [1] * 20)
    spec = TextSpec(min_n=1, max_n=1, word_boundary_padding=False)
    pipe = make_pipeline(get_trainer("tfidf_mlp"), spec, False, {"hidden": 4}, seed=0)
    pipe.fit(texts, y)
    x = pipe.named_steps["tfidf"].transform(["甲7"]).tocsr()
    pushes = occlusion_pushes(pipe.named_steps["clf"], x, 0, 1)
    assert pushes.shape == (x.nnz,)
    # Occluding one feature gives the model's log-odds without it: check one by hand.
    i = int(np.argmax(pushes))
    without = x.copy()
    without.data[i] = 0.0
    p, q = pipe.named_steps["clf"].predict_proba(x)[0], \
        pipe.named_steps["clf"].predict_proba(without)[0]
    assert pushes[i] == pytest.approx(np.log(p[0] / p[1]) - np.log(q[0] / q[1]), rel=1e-6)
    trained = as_trained(pipe, ["A", "B"], spec, False, "tfidf_mlp", "t")
    names = [gram for gram, _ in pushing_ngrams(trained, "甲7", "A", "B")]
    assert "甲" in names and "乙" not in names
