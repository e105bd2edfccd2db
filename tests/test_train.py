"""The train stage: search, size budget, calibration, persistence, determinism."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fakes import synthetic
from fakes.summaries import write_refine_summary
from fakes.synthetic import EXAM_TOPICS, write_jsonl

from foundry.blueprint import load_blueprint
from foundry.train import TrainDataError, load_split, sample_weights, train_stage
from foundry.trained import (
    MODEL_FILE,
    TRAIN_JSON,
    artifact_size,
    load_trained,
    prune_to_budget,
    takes_sparse_weights,
)
from foundry.trainers import get_trainer, size_ladder

TOPICS = ["天气", "日程", "音乐", "电影", "火车票", "会议", "闹钟", "外卖", "快递", "作业",
          "医院", "地铁", "咖啡", "电脑"]
QUESTION = ["{t}怎么样", "{t}是什么", "今天{t}好吗", "{t}在哪里", "为什么{t}这么贵", "{t}几点开始"]
STATEMENT = ["帮我打开{t}", "记录一下{t}", "我觉得{t}不错", "把{t}关掉", "提醒我{t}", "明天去{t}"]


make_rows = functools.partial(synthetic.make_rows, questions=QUESTION, statements=STATEMENT,
                              topics=TOPICS, endings=["", "呀", "呢", "啊"], categories=3)


def write_refined(run: Path, task: str = "is_question", n_train: int = 240, n_test: int = 80,
                  noise: float = 0.03, balance: str = "undersample") -> None:
    """What the refine stage leaves for the train stage."""
    train = make_rows(n_train, 1, noise)
    write_jsonl(run / "refine" / task / "train.jsonl", train)
    write_jsonl(run / "refine" / task / "test.jsonl", make_rows(n_test, 2, noise))
    write_refine_summary(run, task, train_rows=len(train), balance=balance)


def make_blueprint(root: Path, *, labels: tuple[str, str] = ("Question", "Statement"),
                   train: dict | None = None, export: dict | None = None,
                   exam: list[dict] | None = None):
    """A one-task blueprint in ``root`` (its exam is written too)."""
    spec = {
        "name": "tiny",
        "tasks": [{
            "name": "is_question",
            "labels": [{"name": n, "definition": n} for n in labels],
            "constitution": "c.md",
            "exam": "exam/is_question.jsonl",
        }],
        "train": {"grid": {"C": [1.0, 4.0]}, "cv_folds": 3, "time_budget_s": 60, "seed": 7,
                  **(train or {})},
        "export": {"size_budget_kb": None, **(export or {})},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    rows = exam if exam is not None else [{**r, "hard": False, "note": ""}
                                          for r in make_rows(40, 3, topics=EXAM_TOPICS)]
    write_jsonl(root / "exam" / "is_question.jsonl", rows)
    return load_blueprint(root, check_files=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One default training run, shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("train")
    bp = make_blueprint(tmp / "bp")
    write_refined(tmp / "run")
    results = train_stage(bp, tmp / "run", log=lambda _: None)
    return bp, tmp / "run", results["is_question"]


def test_train_stage_writes_the_contract_files(trained_run):
    _, run, res = trained_run
    folder = run / "train" / "is_question"
    for name in (MODEL_FILE, TRAIN_JSON, "cv_results.csv", "size_curve.csv", "oof.csv",
                 "calibration.csv"):
        assert (folder / name).is_file(), name
    info = json.loads((folder / TRAIN_JSON).read_text())
    assert info["trainer"] == "tfidf_logreg" and info["labels"] == ["Question", "Statement"]
    assert info["train_rows"] == 240 and len(info["data_sha256"]) == 64
    assert res.candidates_evaluated == res.candidates_total == 2 and not res.budget_hit
    assert 0.8 < res.cv_macro_f1 <= 1.0


def test_load_trained_round_trips_the_model(trained_run):
    _, run, res = trained_run
    tm = load_trained(run, "is_question")
    assert [name for name, _ in tm.pipeline.steps] == ["tfidf", "clf"]
    assert tm.trainer == "tfidf_logreg" and tm.sublinear_tf is True
    assert tm.spec.min_n == 1 and tm.spec.max_n == 3
    assert tm.n_features == res.n_features
    assert sorted(tm.cv_results["rank"].astype(int)) == [1, 2]
    best = tm.cv_results.loc[tm.cv_results["rank"] == 1]
    assert float(best["mean_macro_f1"].iloc[0]) == tm.cv_results["mean_macro_f1"].max()
    assert tm.oof_proba.shape == (240, 2) and tm.oof_y.shape == (240,)
    np.testing.assert_allclose(tm.oof_proba.sum(axis=1), 1.0)
    p = tm.predict_proba(["今天天气怎么样", "帮我打开音乐"])
    assert p[0, 0] > 0.5 > p[1, 0]  # column 0 is labels[0] = Question


def two_task_blueprint(root: Path, workers: int):
    """``make_blueprint``'s blueprint with a second task, ``is_question_b``."""
    make_blueprint(root, train={"workers": workers})
    spec = yaml.safe_load((root / "blueprint.yaml").read_text("utf-8"))
    spec["tasks"].append({**spec["tasks"][0], "name": "is_question_b",
                          "exam": "exam/is_question.jsonl"})
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    return load_blueprint(root, check_files=False)


def test_tasks_trained_in_worker_processes_are_the_models_of_one_process(tmp_path):
    runs, logs = {}, {}
    for workers in (1, 2):
        bp = two_task_blueprint(tmp_path / f"bp{workers}", workers)
        run = runs[workers] = tmp_path / f"run{workers}"
        write_refined(run, "is_question", n_train=160)
        write_refined(run, "is_question_b", n_train=200, noise=0.06)
        logs[workers] = []
        results = train_stage(bp, run, log=logs[workers].append)
        assert list(results) == ["is_question", "is_question_b"]
    for task in ("is_question", "is_question_b"):
        one, two = (runs[w] / "train" / task for w in (1, 2))
        # the same numbers; the pickle's bytes may not match (its memo follows object identity)
        a_tm, b_tm = load_trained(runs[1], task), load_trained(runs[2], task)
        assert a_tm.pipeline.named_steps["tfidf"].vocabulary_ == \
            b_tm.pipeline.named_steps["tfidf"].vocabulary_
        texts = [r["text"] for r in make_rows(40, 99)]
        np.testing.assert_array_equal(a_tm.predict_proba(texts), b_tm.predict_proba(texts))
        for name in ("oof.csv", "calibration.csv", "size_curve.csv"):
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
        a, b = (json.loads((d / TRAIN_JSON).read_text("utf-8")) for d in (one, two))
        assert {k: v for k, v in a.items() if k != "elapsed_s"} == \
            {k: v for k, v in b.items() if k != "elapsed_s"}
    # the workers' log lines come back, task by task in blueprint order
    def strip_seconds(lines: list[str]) -> list[str]:
        return [line.rsplit(";", 1)[0] for line in lines]

    assert strip_seconds(logs[2]) == strip_seconds(logs[1])
    assert logs[2][-1].startswith("is_question_b: best")


def test_a_task_that_fails_in_a_worker_process_raises_its_own_error(tmp_path):
    bp = two_task_blueprint(tmp_path / "bp", workers=2)
    write_refined(tmp_path / "run", "is_question")
    write_refined(tmp_path / "run", "is_question_b")
    (tmp_path / "run" / "refine" / "is_question_b" / "train.jsonl").write_text(
        '{"text": "", "label": "Question"}\n', "utf-8")
    with pytest.raises(TrainDataError, match="is_question_b"):
        train_stage(bp, tmp_path / "run", log=lambda _: None)


def test_probability_columns_follow_the_blueprint_label_order(tmp_path):
    bp = make_blueprint(tmp_path / "bp", labels=("Statement", "Question"))
    write_refined(tmp_path / "run", n_train=120)
    train_stage(bp, tmp_path / "run", log=lambda _: None)
    tm = load_trained(tmp_path / "run", "is_question")
    assert tm.labels == ["Statement", "Question"]
    p = tm.predict_proba(["今天天气怎么样"])
    assert p[0, 1] > p[0, 0]
    assert tm.predict(["帮我打开音乐"]) == ["Statement"]


def test_training_is_deterministic(tmp_path, trained_run):
    bp, run, _ = trained_run
    again = tmp_path / "run"
    write_refined(again)
    train_stage(make_blueprint(tmp_path / "bp"), again, log=lambda _: None)
    a, b = load_trained(run, "is_question"), load_trained(again, "is_question")
    assert a.pipeline.named_steps["tfidf"].vocabulary_ == b.pipeline.named_steps["tfidf"].vocabulary_
    probe = make_rows(30, 99)
    texts = [r["text"] for r in probe]
    np.testing.assert_array_equal(a.predict_proba(texts), b.predict_proba(texts))
    np.testing.assert_array_equal(a.oof_proba, b.oof_proba)
    assert a.summary.model_dump(exclude={"elapsed_s"}) == \
        b.summary.model_dump(exclude={"elapsed_s"})


def test_size_budget_prunes_until_the_pair_fits(tmp_path):
    budget_kb = 6.0
    bp = make_blueprint(tmp_path / "bp", export={"size_budget_kb": budget_kb})
    write_refined(tmp_path / "run")
    res = train_stage(bp, tmp_path / "run", log=lambda _: None)["is_question"]
    tm = load_trained(tmp_path / "run", "is_question")
    assert res.n_features < res.n_features_unpruned
    onnx_len, bin_len, _ = artifact_size(tm, 15, bp.name, bp.content_sha256())
    assert onnx_len + bin_len == res.size_bytes <= budget_kb * 1000
    curve = tm.size_curve
    assert curve["chosen"].sum() == 1
    assert int(curve.loc[curve["chosen"], "n_features"].iloc[0]) == res.n_features
    assert curve["size_bytes"].is_monotonic_decreasing
    assert tm.unpruned_pipeline is not None
    assert len(tm.unpruned_pipeline.named_steps["tfidf"].vocabulary_) == res.n_features_unpruned


def test_unreachable_size_budget_names_the_field(tmp_path):
    bp = make_blueprint(tmp_path / "bp", export={"size_budget_kb": 0.5})
    write_refined(tmp_path / "run", n_train=120)
    with pytest.raises(ValueError, match=r"export\.size_budget_kb: 0\.5 KB is unreachable"):
        train_stage(bp, tmp_path / "run", log=lambda _: None)


def test_prune_to_budget_rescales_k_until_it_fits():
    class FakePipe:
        def __init__(self, k):
            self.named_steps = {"tfidf": type("V", (), {"vocabulary_": dict.fromkeys(range(k))})}
            self.k = k

    calls = []

    def fit_top(k):
        calls.append(k)
        return FakePipe(k), [str(i) for i in range(k)]

    def measure(pipe):  # 1000 bytes fixed + 30 per feature
        return 1000 + 20 * pipe.k, 10 * pipe.k, "fake"

    out = prune_to_budget(FakePipe(2000), fit_top, measure, budget_bytes=31000, log=lambda _: None)
    assert out.size <= 31000 and len(out.vocabulary) == calls[-1]
    assert calls[-1] > 900  # the best k is 1000: rescaling must not overshoot wildly
    unchanged = prune_to_budget(FakePipe(10), fit_top, measure, budget_bytes=None)
    assert unchanged.vocabulary is None and unchanged.size == 1300


def test_size_ladder_is_descending_and_contains_both_ends():
    ladder = size_ladder(5000, 1200)
    assert ladder[0] == 5000 and 1200 in ladder and ladder == sorted(ladder, reverse=True)
    assert size_ladder(1000, 1000)[0] == 1000 and len(size_ladder(1000, 1000)) > 1


def test_time_budget_only_warns_so_machine_speed_never_changes_the_model(tmp_path):
    """A spent budget must not cut the grid: a busy machine would pick other parameters."""
    grid = {"C": [0.01, 2.0, 4.0]}
    results, logs = {}, {}
    for budget in (1e-6, 1e6):
        bp = make_blueprint(tmp_path / f"bp{budget}", train={"grid": grid,
                                                             "time_budget_s": budget})
        write_refined(tmp_path / f"run{budget}", n_train=120)
        lines: list[str] = []
        results[budget] = train_stage(bp, tmp_path / f"run{budget}", log=lines.append)
        logs[budget] = lines
    tight, ample = results[1e-6]["is_question"], results[1e6]["is_question"]
    assert tight.candidates_evaluated == tight.candidates_total == 3 and tight.budget_hit
    assert not ample.budget_hit
    assert tight.best_params == ample.best_params and tight.cv_macro_f1 == ample.cv_macro_f1
    assert any("over train.time_budget_s" in line for line in logs[1e-6])
    assert not any("over train.time_budget_s" in line for line in logs[1e6])
    cv = load_trained(tmp_path / "run1e-06", "is_question").cv_results
    assert list(cv["status"]) == ["done", "done", "done"]


@pytest.mark.parametrize("trainer", ["tfidf_linear_svm", "tfidf_complement_nb"])
def test_other_trainers_and_an_ngram_grid(tmp_path, trainer):
    grid = {"ngram": [[1, 1], [1, 2]]}
    grid.update({"C": [1.0]} if trainer == "tfidf_linear_svm" else {"alpha": [0.5]})
    bp = make_blueprint(tmp_path / "bp", train={"trainer": trainer, "grid": grid})
    write_refined(tmp_path / "run", n_train=120)
    res = train_stage(bp, tmp_path / "run", log=lambda _: None)["is_question"]
    tm = load_trained(tmp_path / "run", "is_question")
    assert tm.trainer == trainer and res.candidates_evaluated == 2
    assert [tm.spec.min_n, tm.spec.max_n] == res.best_params["ngram"]
    assert max(len(g.strip()) for g in tm.pipeline.named_steps["tfidf"].vocabulary_) <= tm.spec.max_n
    if trainer == "tfidf_linear_svm":
        assert tm.calibration in ("sigmoid", "isotonic")


def test_split_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": "好的", "label": "Statement"}, {"text": "吗", "label": "Maybe"}])
    with pytest.raises(TrainDataError, match=r"train\.jsonl:2: field 'label' is 'Maybe'"):
        load_split(path, ["Question", "Statement"])
    write_jsonl(path, [{"text": "好的", "label": "Statement", "weight": -1}])
    with pytest.raises(TrainDataError, match=r"train\.jsonl:1: field 'weight'"):
        load_split(path, ["Question", "Statement"])


def test_weights_and_class_weight_balancing(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": "吗", "label": "Question", "weight": 2.0},
                       {"text": "好", "label": "Statement"}, {"text": "嗯", "label": "Statement"}])
    split = load_split(path, ["Question", "Statement"])
    np.testing.assert_allclose(sample_weights(split, "undersample"), [2.0, 1.0, 1.0])
    # Weights written by the refine stage are used as they are, never re-balanced on top.
    np.testing.assert_allclose(sample_weights(split, "class_weight"), [2.0, 1.0, 1.0])
    # A split without weights is balanced here: each class weighs the same in total.
    write_jsonl(path, [{"text": "吗", "label": "Question"},
                       {"text": "好", "label": "Statement"}, {"text": "嗯", "label": "Statement"}])
    split = load_split(path, ["Question", "Statement"])
    np.testing.assert_allclose(sample_weights(split, "class_weight"), [1.5, 0.75, 0.75])


def test_refine_class_weights_balance_the_classes_once():
    from foundry.refine import class_weights

    labels = ["Question"] + ["Statement"] * 3
    per_label = class_weights(labels)
    totals = {lab: sum(per_label[lab] for x in labels if x == lab) for lab in set(labels)}
    assert totals["Question"] == pytest.approx(totals["Statement"])


def test_missing_refine_output_says_what_to_run(tmp_path):
    bp = make_blueprint(tmp_path / "bp")
    with pytest.raises(FileNotFoundError, match=r"'refine' stage has not run"):
        train_stage(bp, tmp_path / "run", log=lambda _: None)


def test_unknown_trainer_in_blueprint_fails_when_it_is_loaded(tmp_path):
    with pytest.raises(ValueError, match=r"train\.trainer: unknown trainer 'nope'"):
        make_blueprint(tmp_path / "bp", train={"trainer": "nope"})


def test_registry_default_is_exportable_with_the_export_module(trained_run):
    export = pytest.importorskip("foundry.export")
    bp, run, res = trained_run
    tm = load_trained(run, "is_question")
    provenance = export.Provenance(
        blueprint=bp.name, blueprint_sha256=bp.content_sha256(), data_sha256=tm.data_sha256,
        trainer=tm.trainer, train_rows=tm.train_rows)
    onnx_bytes, bin_bytes = export.artifact_bytes(tm, 0.9731, task="is_question",
                                                  provenance=provenance)
    # The size the trainer measured is the size the export writes.
    assert (len(onnx_bytes) + len(bin_bytes), res.size_source) == (
        res.size_bytes, "export.artifact_bytes")
    assert get_trainer(tm.trainer).name == "tfidf_logreg"


def test_near_duplicates_stay_in_one_fold():
    from foundry.blueprint import Refine
    from foundry.train import make_folds, similarity_groups

    rows = make_rows(120, 4)
    texts = [r["text"] for r in rows] + ["今天北京的天气怎么样呀", "今天北京的天气怎么样呢"]
    y = np.array([0 if r["label"] == "Question" else 1 for r in rows] + [0, 0])
    groups = similarity_groups(texts, y, Refine(), n_folds=3)
    assert groups[-1] == groups[-2]  # Jaccard of 3-shingles well above split_threshold
    assert len(np.unique(groups)) > 10  # ... while distinct sentences get their own groups
    folds = make_folds(y, 3, seed=0, groups=groups)
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
        assert set(y[tr]) == {0, 1}


def test_refined_group_ids_are_used_when_every_row_has_one(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": "吗", "label": "Question", "group": 3},
                       {"text": "好", "label": "Statement", "group": 5}])
    assert load_split(path, ["Question", "Statement"]).groups.tolist() == [3, 5]
    write_jsonl(path, [{"text": "吗", "label": "Question", "group": 3},
                       {"text": "好", "label": "Statement"}])
    assert load_split(path, ["Question", "Statement"]).groups is None


def test_training_refuses_exam_sentences(tmp_path):
    exam = [{**r, "hard": False, "note": ""} for r in make_rows(10, 1)[:3]]
    bp = make_blueprint(tmp_path / "bp", exam=exam)
    write_refined(tmp_path / "run", n_train=60)  # same seed as the exam rows: they leak
    with pytest.raises(TrainDataError, match=r"train\.jsonl: \d+ training row\(s\) are exam "
                                             r"sentences"):
        train_stage(bp, tmp_path / "run", log=lambda _: None)


def test_the_size_budget_measures_binary_logistic_models_as_int8(tiny_fit):
    """A binary logistic model ships as two int8 columns: the meter counts those bytes."""
    from foundry.pair import artifact_bytes
    from foundry.quantized import Int8Logistic, int8_pipeline
    from foundry.textspec import TextSpec
    from foundry.trained import size_meter

    trained = tiny_fit()
    d = len(trained.pipeline.named_steps["tfidf"].vocabulary_)
    measure = size_meter(trained.labels, TextSpec(), True, "tfidf_logreg", "t", "0" * 64, 1, 15,
                         "b", "0" * 64)
    onnx_len, _, _ = measure(trained.pipeline)
    float_onnx, _ = artifact_bytes(trained, 0.5, task="t")
    assert isinstance(int8_pipeline(trained.pipeline).named_steps["clf"], Int8Logistic)
    assert onnx_len < 2 * d + 1000 < len(float_onnx)  # 2 bytes an n-gram instead of 8


def _int8_pipeline(n_labels: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    from foundry.quantized import QuantizedLinearSVC

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    y = rng.integers(0, n_labels, 600)
    texts = [" ".join(rng.choice(words[lab * 40:(lab + 1) * 40 + 60], 6)) for lab in y]
    return Pipeline([("tfidf", TfidfVectorizer()),
                     ("clf", QuantizedLinearSVC(C=1.0, random_state=0))]).fit(texts, y)


def _onnx_meter(bin_bytes: int):
    from foundry.quantized import quantized_onnx

    def measure(pipe):
        clf = pipe.named_steps["clf"]
        return len(quantized_onnx(clf, clf.w_q_.shape[1], "t")), bin_bytes, "fake"

    return measure


def test_sparsify_to_budget_thins_the_weights_and_keeps_the_vocabulary():
    from foundry.trained import Pruned, sparsify_to_budget

    pipe = _int8_pipeline(6)
    measure = _onnx_meter(1000)
    dense_onnx = measure(pipe)[0]
    before = pipe.named_steps["clf"].w_q_.copy()
    budget = 1000 + dense_onnx // 2
    out = sparsify_to_budget(Pruned(pipe, None, 0, 0, "fake"), measure, budget, log=print)
    assert out.size <= budget and out.vocabulary is None and out.dense is pipe
    assert out.max_weights == out.pipeline.named_steps["clf"].n_weights_
    assert out.size > budget * 0.95  # rescaled to the budget, not far under it
    assert (pipe.named_steps["clf"].w_q_ == before).all()  # the dense model is left whole
    fits = sparsify_to_budget(Pruned(pipe, None, 0, 0, "fake"), measure, 10**6, log=print)
    assert fits.max_weights is None and fits.pipeline is pipe
    with pytest.raises(ValueError, match=r"size_budget_kb: .*the vocabulary alone"):
        sparsify_to_budget(Pruned(pipe, None, 0, 0, "fake"), measure, 900, log=print)


def test_fit_to_budget_gives_the_vocabulary_half_then_thins_many_label_weights():
    from foundry.trained import fit_to_budget

    pipe = _int8_pipeline(6)
    n_terms = len(pipe.named_steps["tfidf"].vocabulary_)
    bin_per_term = 2

    def measure(p):
        clf = p.named_steps["clf"]
        from foundry.quantized import quantized_onnx
        return (len(quantized_onnx(clf, clf.w_q_.shape[1], "t")),
                bin_per_term * len(p.named_steps["tfidf"].vocabulary_), "fake")

    def fit_top(k):
        raise AssertionError("the vocabulary fits half the budget: no n-gram is cut")

    budget = bin_per_term * n_terms + measure(pipe)[0] // 2
    assert bin_per_term * n_terms <= budget // 2
    out = fit_to_budget(pipe, fit_top, measure, budget, log=print)
    assert out.size <= budget and out.vocabulary is None and out.max_weights is not None
    binary = _int8_pipeline(2)  # two labels: the vocabulary is cut instead
    assert not takes_sparse_weights(binary) and takes_sparse_weights(pipe)
