"""Real text: the blueprint's ``real`` pool and ``dev`` split through every stage."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from fakes import synthetic
from fakes.summaries import write_refine_summary
from fakes.synthetic import EXAM_TOPICS, write_jsonl

from foundry.blueprint import Label, Refine, Task, load_blueprint
from foundry.evaluate import (
    ConfidentAnswers,
    category_table,
    clopper_pearson_lower,
    corpus_table,
    evaluate_stage,
    length_table,
)
from foundry.export import model_card
from foundry.realtext import RealDataError, corpus_family, load_real, load_real_file
from foundry.refine import refine_rows
from foundry.runtime import MicroModel
from foundry.summaries import RefineSummary
from foundry.train import load_split, sample_weights, train_stage
from foundry.trained import load_trained
from foundry.trainers import REAL_SIGMOID

TASK = Task(
    name="is_question",
    labels=[Label(name="Question", definition="asks", categories=["wh", "yn"]),
            Label(name="Statement", definition="says", categories=["cmd"])],
    constitution="c.md",
    exam="exam.jsonl",
)
LONG = "我下周要去成都出差三天那边这个季节一般穿什么衣服比较合适还有需要带伞吗我还想顺便去看看大熊猫"
TOPICS = ["天气", "日程", "音乐", "电影", "火车票", "会议", "闹钟", "外卖", "快递", "作业",
          "医院", "地铁", "咖啡", "电脑"]
QUESTION = ["{t}怎么样", "{t}是什么", "今天{t}好吗", "{t}在哪里", "为什么{t}这么贵", "{t}几点开始"]
STATEMENT = ["帮我打开{t}", "记录一下{t}", "我觉得{t}不错", "把{t}关掉", "提醒我{t}", "明天去{t}"]
# "Real" rows: other phrasings of the same intents, as people write them.
REAL_QUESTION = ["{t}咋样了", "{t}啥时候", "你知道{t}吗", "{t}多少钱"]
REAL_STATEMENT = ["给我放{t}", "{t}关一下", "我在{t}", "{t}挺好"]

make_rows = functools.partial(synthetic.make_rows, questions=QUESTION, statements=STATEMENT,
                              topics=TOPICS, endings=["", "呀", "呢"], categories=1)
make_real = functools.partial(synthetic.make_rows, questions=REAL_QUESTION,
                              statements=REAL_STATEMENT, topics=TOPICS, categories=1)


def real_row(text: str, label: str = "Question", category: str = "wh", **extra) -> dict:
    return {"text": text, "label": label, "category": category, "corpus": "c/train",
            "ref": str(len(text)), **extra}


def row(text: str, label: str = "Question", source: str = "grammar") -> dict:
    return {"text": text, "label": label, "category": "wh", "source": source}


# ---------------------------------------------------------------------------------- files


def test_real_file_rows_are_validated_with_file_and_line(tmp_path):
    path = tmp_path / "real.jsonl"
    write_jsonl(path, [real_row("今天天气怎么样", context="上一句", note="ok"),
                       real_row("帮我开灯", "Statement", "cmd")])
    rows = load_real_file(path, TASK)
    assert [(r.text, r.label, r.category, r.context) for r in rows] == [
        ("今天天气怎么样", "Question", "wh", "上一句"), ("帮我开灯", "Statement", "cmd", "")]
    assert rows[1].as_row()["source"] == "real"

    cases = {
        "corpus: missing key(s) corpus": [
            {"text": "a", "label": "Question", "category": "wh", "ref": "1"}],
        "extra: unknown key(s) extra": [real_row("a", extra=1)],
        "label: 'Maybe' is not a label of task": [real_row("a", "Maybe")],
        "category: 'cmd' is not a category of label 'Question'": [real_row("a", "Question", "cmd")],
        "ref: must be a string, got 3": [{**real_row("a"), "ref": 3}],
        "text: must be a non-empty string": [real_row(" \u200b ")],
        "same text as": [real_row("ok吗"), real_row("ＯＫ吗")],
    }
    for message, rows in cases.items():
        write_jsonl(path, rows)
        with pytest.raises(RealDataError, match=f"{path}:[12]: .*{re.escape(message)}"):
            load_real_file(path, TASK)
    path.write_text("{not json\n", "utf-8")
    with pytest.raises(RealDataError, match=f"{path}:1: not valid JSON"):
        load_real_file(path, TASK)
    with pytest.raises(RealDataError, match="not found"):
        load_real_file(tmp_path / "nope.jsonl", TASK)


def test_blueprint_names_real_and_dev_files_and_checks_they_exist(tmp_path):
    spec = {"name": "bp", "tasks": [{
        "name": "is_question", "constitution": "c.md", "exam": "e.jsonl",
        "real": "real/q.jsonl", "dev": "dev/q.jsonl",
        "labels": [{"name": "Question", "definition": "q"},
                   {"name": "Statement", "definition": "s"}]}],
        "train": {"source_weights": {"real": 2.0}}}
    (tmp_path / "blueprint.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    for f in ("c.md", "e.jsonl"):
        (tmp_path / f).write_text("", "utf-8")
    with pytest.raises(Exception, match=r"tasks\[0\]\.real: file not found"):
        load_blueprint(tmp_path)
    write_jsonl(tmp_path / "real/q.jsonl", [real_row("几点了", category="Question")])
    write_jsonl(tmp_path / "dev/q.jsonl", [real_row("开灯", "Statement", "Statement")])
    bp = load_blueprint(tmp_path)
    task = bp.tasks[0]
    assert [r.text for r in load_real(bp, task, "real")] == ["几点了"]
    assert [r.text for r in load_real(bp, task, "dev")] == ["开灯"]
    assert bp.spec.train.source_weights == {"real": 2.0}
    spec["train"]["source_weights"] = {"real": 0}
    (tmp_path / "blueprint.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    with pytest.raises(Exception, match="source_weights: .*positive"):
        load_blueprint(tmp_path)


def test_blueprint_check_reports_real_rows_with_file_line_and_field(tmp_path):
    from foundry.check import check_blueprint

    spec = {"name": "bp", "tasks": [{
        "name": "is_question", "constitution": "c.md", "exam": "e.jsonl", "seeds": "s.jsonl",
        "real": "real/q.jsonl", "dev": "dev/q.jsonl",
        "labels": [{"name": "Question", "definition": "q", "categories": ["wh"]},
                   {"name": "Statement", "definition": "s", "categories": ["cmd"]}]}]}
    (tmp_path / "blueprint.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    (tmp_path / "c.md").write_text("prompt", "utf-8")
    write_jsonl(tmp_path / "e.jsonl", [{"text": "几点了", "label": "Question", "category": "wh"},
                                       {"text": "开灯", "label": "Statement", "category": "cmd"}])
    write_jsonl(tmp_path / "s.jsonl", [{"text": "几点啦", "label": "Question", "category": "wh"}])
    write_jsonl(tmp_path / "real/q.jsonl", [real_row("今天周几"), real_row("关灯", "Statement", "wh"),
                                            real_row("明天呢")])
    write_jsonl(tmp_path / "dev/q.jsonl", [real_row("明天呢"), {**real_row("好"), "corpus": 1}])
    problems = {(p.file.resolve(), p.line, p.field, p.severity): p.message
                for p in check_blueprint(tmp_path, provider="offline").problems}
    real, dev = (tmp_path / "real/q.jsonl").resolve(), (tmp_path / "dev/q.jsonl").resolve()
    assert problems[(real, 2, "category", "error")].startswith(
        "'wh' is not a category of label 'Statement'")
    assert "dev_overlap" in problems[(real, 3, "text", "warning")]
    assert problems[(dev, 2, "corpus", "error")] == "must be a string, got 1"


# ---------------------------------------------------------------------------------- refine


def test_real_rows_win_clusters_and_conflicts_and_stay_in_train():
    other = "周末想带孩子去动物园看熊猫和长颈鹿顺便在附近找一家能吃饭的餐厅再坐地铁回家休息"
    generated = [row(LONG[:-1] + "吧", "Statement"), row("明天下雨吗"), row(other),
                 *[row(f"第{i}个问题是什么") for i in range(8)],
                 *[row(f"帮我打开第{i}盏灯", "Statement") for i in range(8)]]
    real = [{"text": LONG[:-1] + "呢", "label": "Question", "category": "wh"},
            {"text": "明天下雨吗", "label": "Statement", "category": "cmd"},
            {"text": other[:-1] + "啊", "label": "Question", "category": "wh"}]
    res = refine_rows(generated, TASK, Refine(balance="undersample", test_size=0.5),
                      real=real)
    kept = {r["text"]: r for r in res.train + res.test}
    # A same-label generated near-duplicate gives way to the real row.
    assert other[:-1] + "啊" in kept and other not in kept
    assert {r["text"] for r in res.removed if r["reason"] == "near_duplicate"} == {other}
    # In a conflict only the generated row goes; the real row stays.
    conflicts = [r for r in res.removed if r["reason"] == "conflict"]
    assert {r["text"] for r in conflicts} == {"明天下雨吗", LONG[:-1] + "吧"}
    assert all("a real row says" in r["detail"] for r in conflicts)
    assert kept["明天下雨吗"]["label"] == "Statement" and kept["明天下雨吗"]["source"] == "real"
    # Real rows always train, and undersampling never drops them.
    assert {r["text"] for r in res.train if r["source"] == "real"} == {r["text"] for r in real}
    assert res.summary.real_rows == 3 and res.summary.real_kept == 3
    assert res.summary.sources["real"] == 3


def test_generated_rows_cannot_claim_to_be_real():
    res = refine_rows([row(LONG, source="real"), row(LONG[:-1] + "呢", source="grammar")],
                      TASK, Refine(balance="none", test_size=0.5))
    cluster = res.summary.largest_clusters[0]
    assert cluster["kept"] == LONG[:-1] + "呢"  # the self-declared "real" row ranks last


def test_dev_texts_and_their_near_duplicates_never_train():
    dev = [LONG, "今天几号"]
    rows = [row(LONG[:-1] + "呢"), row("今天几号"), row("今天几号呀"),
            *[row(f"第{i}个问题是什么") for i in range(6)]]
    real = [{"text": "今天几号", "label": "Question", "category": "wh"}]
    res = refine_rows(rows, TASK, Refine(balance="none", test_size=0.25), real=real,
                      dev_texts=dev)
    removed = [r for r in res.removed if r["reason"] == "dev_overlap"]
    assert {r["text"] for r in removed} == {LONG[:-1] + "呢", "今天几号"}
    assert sum(1 for r in removed if r["source"] == "real") == 1  # real rows are not exempt
    assert {r["dev"] for r in removed} == {LONG, "今天几号"}
    steps = [s["step"] for s in res.summary.funnel]
    assert steps.index("dev_overlap") == steps.index("exam_overlap") + 1
    assert {s["step"]: s["removed"] for s in res.summary.funnel}["dev_overlap"] == 3
    assert "今天几号呀" in {r["text"] for r in res.train + res.test}  # 0.5 apart: kept
    assert res.summary.dev_texts == 2


# ---------------------------------------------------------------------------- train, evaluate


def write_blueprint(root: Path, *, dev: list[dict], train: dict | None = None,
                    task: dict | None = None) -> None:
    spec = {
        "name": "tiny",
        "tasks": [{"name": "is_question", "constitution": "c.md", "exam": "exam/q.jsonl",
                   "real": "real/q.jsonl", "dev": "dev/q.jsonl",
                   "labels": [{"name": "Question", "definition": "q", "categories": ["c0"]},
                              {"name": "Statement", "definition": "s", "categories": ["c0"]}],
                   **(task or {})}],
        "train": {"grid": {"C": [4.0]}, "cv_folds": 3, "seed": 1, **(train or {})},
        "evaluate": {"target_precision": 0.95, "exam_min_accuracy": 0.5},
        "export": {"size_budget_kb": None},
    }
    root.mkdir(parents=True)
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    (root / "c.md").write_text("constitution", "utf-8")
    write_jsonl(root / "exam" / "q.jsonl", make_rows(20, 5, topics=EXAM_TOPICS))
    write_jsonl(root / "real" / "q.jsonl", [])
    write_jsonl(root / "dev" / "q.jsonl",
                [{"text": r["text"], "label": r["label"], "category": r["category"],
                  "corpus": "c/dev", "ref": str(i)} for i, r in enumerate(dev)])


def forge_real_run(tmp: Path, **train):
    """Generated rows plus real rows in the refined train split; a dev split of real rows;
    trained and evaluated."""
    dev = list({r["text"]: r for r in make_real(120, 9, noise=0.04)}.values())
    write_blueprint(tmp / "bp", dev=dev, train={"source_weights": {"real": 3.0}, **train})
    bp = load_blueprint(tmp / "bp")
    run = tmp / "run"
    real = [{**r, "source": "real"} for r in make_real(200, 3, noise=0.05)]
    write_jsonl(run / "refine/is_question/train.jsonl", make_rows(200, 1, noise=0.02) + real)
    write_jsonl(run / "refine/is_question/test.jsonl", make_rows(80, 2))
    write_refine_summary(run, train_rows=400, data=b"x")
    train_stage(bp, run, log=lambda _: None)
    return bp, run, evaluate_stage(bp, run, log=lambda _: None)["is_question"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    return forge_real_run(tmp_path_factory.mktemp("real"))


def test_source_weights_multiply_the_row_weights(real_run):
    _, run, _ = real_run
    split = load_split(run / "refine/is_question/train.jsonl", ["Question", "Statement"])
    w = sample_weights(split, "undersample", {"real": 3.0})
    assert set(w[split.real].tolist()) == {3.0} and set(w[~split.real].tolist()) == {1.0}
    assert split.real.sum() == 200


def test_the_train_stage_weighs_rows_by_the_tasks_own_source_weights(tmp_path):
    from foundry.train import _training_data

    write_blueprint(tmp_path / "bp", dev=make_real(20, 9),
                    train={"source_weights": {"real": 3.0, "seed": 2.0}},
                    task={"source_weights": {"real": 1.5}})
    bp = load_blueprint(tmp_path / "bp")
    run = tmp_path / "run"
    seeds = [{**r, "source": "seed"} for r in make_rows(10, 4)]
    real = [{**r, "source": "real"} for r in make_real(30, 3)]
    write_jsonl(run / "refine/is_question/train.jsonl", make_rows(40, 1) + seeds + real)
    write_refine_summary(run, train_rows=80, data=b"x")
    _, split, w, _ = _training_data(bp, bp.tasks[0], run)
    by_source = {s: set(w[[x == s for x in split.sources]].tolist()) for s in set(split.sources)}
    assert by_source == {"real": {1.5}, "seed": {2.0}, "synthetic": {1.0}}


def test_calibration_is_chosen_on_the_dev_split(real_run):
    bp, run, _ = real_run
    trained = load_trained(run, "is_question")
    table = trained.calibration_table
    assert REAL_SIGMOID in set(table["calibration"])
    assert set(table["chosen_by"]) == {"dev_log_loss"}
    assert table.loc[table["chosen"], "dev_log_loss"].iloc[0] <= table["dev_log_loss"].iloc[0]
    assert trained.oof_real.sum() == 200


def test_sigmoid_real_exports_like_sigmoid(tmp_path):
    """The Platt map fitted on real rows exports like any sigmoid calibration: the numpy
    backend and ONNX Runtime read it and agree with scikit-learn."""
    from foundry.export import conformance_texts, install_artifacts, model_files

    _, run, _ = forge_real_run(tmp_path / "forge", calibration=REAL_SIGMOID)
    trained = load_trained(run, "is_question")
    assert trained.calibration == REAL_SIGMOID
    files = model_files(trained, task="is_question", threshold=0.9,
                        texts=conformance_texts(["今天天气怎么样", "帮我开灯"], []))
    install_artifacts("is_question", files, tmp_path)
    texts = ["天气咋样了", "给我放音乐", "今天会议好吗"]
    want = trained.predict_proba(texts)
    for backend in ("numpy", "onnxruntime"):
        got = MicroModel.load("is_question", tmp_path, backend=backend).predict_proba(texts)
        assert np.allclose(got, want, atol=1e-5)


def test_prefit_sigmoid_wraps_the_fitted_classifier(real_run):
    from foundry.trainers import base_classifier, fit_platt, prefit_sigmoid

    _, run, _ = real_run
    trained = load_trained(run, "is_question")
    fitted = base_classifier(trained.pipeline.named_steps["clf"])
    scores = np.linspace(-3, 3, 40)
    y = (scores + np.sin(np.arange(40)) > 0).astype(int)
    wrapped = prefit_sigmoid(fitted, fit_platt(scores, y))
    assert wrapped.calibrated_classifiers_[0].estimator is fitted
    assert wrapped.classes_.tolist() == [0, 1]


def test_dev_split_takes_part_in_the_threshold_and_is_reported(real_run):
    _, _, result = real_run
    s = result.summary
    assert s.dev_cases == len(result.dev) > 50
    assert s.threshold == max(s.oof_threshold, s.test_threshold, s.dev_threshold)
    confident = result.dev[result.dev["p"] >= s.threshold]
    assert s.dev_confident == len(confident)
    assert s.dev_confident_correct == int(confident["correct"].sum())
    assert s.dev_confident_precision >= s.target_precision  # the threshold saw dev
    assert s.dev_precision_lower95 == pytest.approx(
        clopper_pearson_lower(s.dev_confident_correct, s.dev_confident))
    assert s.dev_precision_lower95 < s.dev_confident_precision
    assert {c["gold"] for c in s.dev_by_category} == {"Question", "Statement"}
    by_corpus = {c["corpus"]: c for c in s.dev_by_corpus}
    assert set(by_corpus) == {corpus_family(c) for c in result.dev["corpus"]}
    assert sum(c["cases"] for c in by_corpus.values()) == s.dev_cases
    assert sum(c["confident_errors"] for c in by_corpus.values()) == \
        s.dev_confident - s.dev_confident_correct
    assert sum(b["cases"] for b in s.dev_by_length) == s.dev_cases
    errors = s.dev_most_confident_errors
    assert [e["p"] for e in errors] == sorted((e["p"] for e in errors), reverse=True)
    assert (result.out_dir / "dev.csv").is_file() and result.plots["dev_length"].is_file()
    assert "dev" in set(result.errors["split"]) or s.dev_accuracy == 1.0


def test_a_dev_split_can_be_reported_without_setting_the_threshold(tmp_path):
    bp, run, result = forge_real_run(tmp_path)
    spec = yaml.safe_load((bp.root / "blueprint.yaml").read_text("utf-8"))
    spec["tasks"][0]["threshold_on_dev"] = False
    (bp.root / "blueprint.yaml").write_text(yaml.safe_dump(spec), "utf-8")
    changed = load_blueprint(bp.root)
    train_stage(changed, run, log=lambda _: None)  # the stamps refuse a stage of other settings
    s = evaluate_stage(changed, run, log=lambda _: None)["is_question"].summary
    assert s.threshold == max(s.oof_threshold, s.test_threshold)
    assert s.dev_in_threshold is False and s.dev_crossfit_coverage is None
    assert s.dev_cases == result.summary.dev_cases
    assert "real-text dev split" not in s.threshold_source


def test_card_reports_the_dev_split_with_its_bound(real_run):
    bp, run, result = real_run
    trained = load_trained(run, "is_question")
    card = model_card(bp.tasks[0], trained, blueprint="tiny", threshold=result.threshold,
                      onnx_size=1000, bin_size=1000, evaluation=result.summary,
                      refine_summary=RefineSummary.load(run, "is_question"))
    s = result.summary
    assert "## Real-text dev split" in card
    assert f"({s.dev_confident_correct} of {s.dev_confident})" in card
    assert "95% lower bound" in card and f"{100 * s.dev_precision_lower95:.1f}%" in card
    assert "decided by the" in card
    assert "| source corpus | cases |" in card
    for c in s.dev_by_corpus:
        assert f"| {c['corpus']} | {c['cases']} | {100 * c['accuracy']:.1f}%" in card


# ---------------------------------------------------------------------------------- measures


def test_clopper_pearson_lower_bound_matches_known_values():
    assert clopper_pearson_lower(700, 700) == pytest.approx(0.05 ** (1 / 700), rel=1e-9)
    from scipy.stats import binom

    bound = clopper_pearson_lower(693, 700)  # the p at which 693 or more right has chance 5%
    assert binom.sf(692, 700, bound) == pytest.approx(0.05, rel=1e-6)
    assert bound == pytest.approx(0.9813, abs=1e-4)
    assert clopper_pearson_lower(0, 10) == 0.0 and clopper_pearson_lower(0, 0) is None
    # A bound is below the observed share and rises with n at the same share.
    assert clopper_pearson_lower(99, 100) < clopper_pearson_lower(990, 1000) < 0.99


def test_category_and_length_tables():
    import pandas as pd

    frame = pd.DataFrame({
        "text": ["好", "今天天气怎么样", "帮我把客厅的灯和空调都打开然后放点音乐吧谢谢你啦", "开灯"],
        "gold": ["Statement", "Question", "Statement", "Statement"],
        "category": ["ack", "wh", "cmd", "cmd"],
        "p": [0.99, 0.6, 0.97, 0.95], "confident": [True, False, True, True],
        "correct": [True, True, False, True]})
    answers = ConfidentAnswers.of(frame)
    assert (answers.cases, answers.confident, answers.correct) == (4, 3, 2)
    cats = category_table(frame).set_index("category")
    assert cats.loc["cmd", "confident_errors"] == 1 and cats.loc["cmd", "cases"] == 2
    lengths = length_table(frame).set_index("length")
    assert lengths.loc["0-5", "cases"] == 2 and lengths.loc["21-40", "accuracy"] == 0.0


def test_corpus_table_groups_rows_by_the_corpus_without_its_file_part():
    import pandas as pd

    frame = pd.DataFrame({
        "corpus": ["kdconv/film_dev", "kdconv/travel_test", "lccc_base/train", "kdconv/music_dev"],
        "p": [0.99, 0.98, 0.97, 0.6], "confident": [True, True, True, False],
        "correct": [True, False, True, True]})
    assert corpus_family("kdconv/film_dev") == "kdconv" and corpus_family("crsa") == "crsa"
    table = corpus_table(frame).set_index("corpus")
    assert table.index.tolist() == ["kdconv", "lccc_base"]
    kd = table.loc["kdconv"]
    assert (kd["cases"], kd["confident_errors"]) == (3, 1)
    assert kd["accuracy"] == pytest.approx(2 / 3) and kd["confident_share"] == pytest.approx(2 / 3)
    assert kd["confident_precision"] == 0.5
    assert kd["precision_lower95"] == pytest.approx(clopper_pearson_lower(1, 2))
    assert table.loc["lccc_base", "confident_precision"] == 1.0
