"""The tester lab's logic (foundry.lab), without a browser."""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from foundry import lab
from foundry.lab import Lab, LabError
from foundry.runtime import MicroModel

TASK = "tiny_q"


@pytest.fixture(autouse=True)
def lab_state(tmp_path, monkeypatch) -> Path:
    """Where the tester remembers its last task: a temporary file, never the repository's."""
    path = tmp_path / "lab-state" / "lab.json"
    monkeypatch.setattr(lab, "LAB_STATE", path)
    return path


@pytest.fixture(scope="module")
def tiny_lab(tiny_models) -> Lab:
    return Lab(tiny_models[0])


@pytest.fixture(scope="module")
def model(tiny_models) -> MicroModel:
    return MicroModel.load(TASK, tiny_models[0])


#: A long exam sentence: one more character keeps it a near-duplicate for the refinery.
LONG_EXAM = "我下周要去成都出差三天那边这个季节一般穿什么衣服比较合适"


def write_models_with_blueprint(models_dir: Path, blueprint: str, task: str = TASK,
                                threshold: float = 0.6) -> None:
    """Tiny artifacts whose provenance names ``blueprint``."""
    from conftest import fit_tiny, install_model

    from foundry.export import Provenance

    install_model(fit_tiny(), models_dir, task, threshold, provenance=Provenance(blueprint=blueprint))


@pytest.fixture
def blueprints_dir(tmp_path, monkeypatch) -> Path:
    """A relocated ``blueprints/`` holding blueprint ``my_blueprint`` with task ``tiny_q``."""
    from fakes.tiny_blueprint import write_tiny_blueprint

    import foundry.paths

    folder = tmp_path / "blueprints"
    write_tiny_blueprint(folder / "my_blueprint", name="my_blueprint", task=TASK,
                         exam=(("几点了", "Question"), ("打开空调", "Statement"),
                               (LONG_EXAM, "Question")))
    monkeypatch.setattr(foundry.paths, "BLUEPRINTS_DIR", folder)
    return folder


# -- tasks --------------------------------------------------------------------------------


def test_discover_tasks_needs_both_files(tiny_models, tmp_path):
    assert lab.discover_tasks(tiny_models[0]) == [TASK]
    (tmp_path / "half_preprocessor.bin").write_bytes(b"x")  # no .onnx: not a task
    assert lab.discover_tasks(tmp_path) == []
    assert lab.discover_tasks(tmp_path / "missing") == []


def test_default_models_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(lab.MODELS_DIR_ENV, str(tmp_path))
    assert lab.default_models_dir() == tmp_path
    monkeypatch.delenv(lab.MODELS_DIR_ENV)
    assert lab.default_models_dir() == lab.MODELS_DIR


def test_unknown_task_names_the_found_ones(tiny_lab):
    with pytest.raises(LabError, match=r"no task 'nope'.*found: tiny_q"):
        tiny_lab.ask("nope", "你好")


# -- predict ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["今天天气怎么样？", "打开客厅的灯", "你好吗", "xyz"])
def test_ask_answers_exactly_like_the_runtime(tiny_lab, model, text):
    answer = tiny_lab.ask(TASK, text)
    expected = model.predict(text)
    assert answer.prediction.label == expected.label
    assert answer.prediction.probabilities == pytest.approx(expected.probabilities, abs=1e-7)


def test_ask_is_the_trained_pipelines_answer(tiny_lab, tiny_models):
    trained = tiny_models[1]
    texts = ["今天天气怎么样？", "打开客厅的灯"]
    want = [trained.labels[i] for i in trained.pipeline.predict(texts)]
    assert [tiny_lab.ask(TASK, t).prediction.label for t in texts] == want == ["Question",
                                                                               "Statement"]


# -- explanations -------------------------------------------------------------------------


def test_linear_weights_are_the_trained_coefficients(model, tiny_models):
    weights = lab.linear_weights(model.paths["onnx"], len(model.labels), model.n_features)
    assert weights is not None and weights.units == "log-odds"
    assert weights.coefficients.shape == (2, model.n_features)
    coef = tiny_models[1].pipeline.named_steps["clf"].coef_[0]  # Statement against Question
    diff = (weights.coefficients[1] - weights.coefficients[0]) * weights.scale
    np.testing.assert_allclose(diff, coef, atol=1e-5)


def test_top_contribution_for_ma_pushes_question(tiny_lab):
    e = tiny_lab.ask(TASK, "你好吗").explanation
    assert (e.label, e.versus, e.method) == ("Question", "Statement", "linear")
    top = e.contributions[0]
    assert "吗" in top.ngram
    assert top.contribution > 0 and top.favours == "Question"


def test_contributions_are_ordered_and_signed(tiny_lab):
    e = tiny_lab.ask(TASK, "打开客厅的灯吗").explanation
    sizes = [abs(c.contribution) for c in e.contributions]
    assert sizes == sorted(sizes, reverse=True)
    for c in e.contributions:
        assert c.favours == (e.label if c.contribution >= 0 else e.versus)
    # The text mixes both: some n-grams push each way.
    assert {c.favours for c in e.contributions} == {"Question", "Statement"}
    assert any("吗" in c.ngram and c.favours == "Question" for c in e.contributions)
    assert any("打开" in c.ngram and c.favours == "Statement" for c in e.contributions)


@pytest.mark.parametrize("text", ["今天天气怎么样？", "打开客厅的灯", "你好吗"])
def test_linear_contributions_add_up_to_the_log_odds(tiny_lab, text):
    answer = tiny_lab.ask(TASK, text)
    e, p = answer.explanation, answer.prediction.probabilities
    total = sum(c.contribution for c in e.contributions) + e.bias
    assert total == pytest.approx(math.log(p[e.label] / p[e.versus]), abs=1e-5)


def test_contributions_map_back_to_the_vocabulary(tiny_lab, model):
    e = tiny_lab.ask(TASK, "今天天气怎么样？").explanation
    idx, values = model.featurize("今天天气怎么样？")
    assert sorted(c.index for c in e.contributions) == idx.tolist()
    for c in e.contributions:
        assert model.vocabulary[c.ngram] == c.index
        assert c.value == pytest.approx(values[idx.tolist().index(c.index)])


def test_occlusion_is_the_probability_drop(model, tiny_models):
    text = "你好吗"
    e = lab.explain(model, text, weights=None)
    assert e.method == "occlusion" and e.units == "probability"
    top = e.contributions[0]
    assert "吗" in top.ngram and top.favours == "Question" and top.contribution > 0
    # Recompute the drop independently with scikit-learn's classifier.
    clf = tiny_models[1].pipeline.named_steps["clf"]
    idx, values = model.featurize(text)
    x = np.zeros((1, model.n_features))
    x[0, idx] = values
    occluded = x.copy()
    occluded[0, top.index] = 0.0
    drop = clf.predict_proba(x)[0, 0] - clf.predict_proba(occluded)[0, 0]
    assert top.contribution == pytest.approx(drop, abs=1e-5)


def test_text_without_known_ngrams_has_no_contributions(tiny_lab):
    e = tiny_lab.ask(TASK, "ＸＸＸ😀").explanation
    assert e.contributions == ()
    assert "bias alone" in lab.render_explanation(["Question", "Statement"], e)


def _matmul_softmax_onnx(path: Path, d: int, k: int) -> None:
    w = helper.make_tensor("W", TensorProto.FLOAT, [d, k], np.ones(d * k).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["scores"]),
         helper.make_node("ArgMax", ["scores"], ["label"], axis=1),
         helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1)],
        "nonlinear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, d])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None, 1]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, k])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph), str(path))


def test_non_linear_graph_has_no_linear_weights(tmp_path):
    path = tmp_path / "g.onnx"
    _matmul_softmax_onnx(path, 4, 2)
    assert lab.linear_weights(path, 2, 4) is None


# -- batch --------------------------------------------------------------------------------


BLOCK = "今天天气怎么样？\n\n打开客厅的灯\n  你好吗  \n嗯\n"


def test_batch_puts_uncertain_rows_first(tiny_lab, model):
    df = tiny_lab.batch(TASK, BLOCK)
    assert list(df.columns) == list(lab.BATCH_COLUMNS)
    assert sorted(df["line"]) == [1, 2, 3, 4]  # blank lines skipped, positions renumbered
    assert df["confidence"].is_monotonic_increasing
    for row in df.itertuples():
        p = model.predict(row.text)
        assert (row.label, row.confident) == (p.label, p.confident)
        assert row.confidence == pytest.approx(p.score)
    assert "你好吗" in set(df["text"])  # stripped


def test_sort_batch(tiny_lab):
    df = tiny_lab.batch(TASK, BLOCK)
    assert list(lab.sort_batch(df, "line")["line"]) == [1, 2, 3, 4]
    assert list(lab.sort_batch(df, "line", descending=True)["line"]) == [4, 3, 2, 1]
    assert lab.sort_batch(df, "confidence", descending=True)["confidence"].is_monotonic_decreasing
    with pytest.raises(LabError, match="cannot sort by 'size'"):
        lab.sort_batch(df, "size")


def test_csv_round_trips_through_the_download_link(tiny_lab):
    df = tiny_lab.batch(TASK, BLOCK)
    link = lab.csv_download_link(df, "batch.csv")
    assert 'download="batch.csv"' in link and "foundry-csv-link" in link
    payload = base64.b64decode(link.split("base64,")[1].split('"')[0])
    assert payload.startswith("\ufeff".encode())  # spreadsheets need the BOM for Chinese
    back = pd.read_csv(io.StringIO(payload.decode("utf-8-sig")))
    assert list(back.columns) == list(lab.BATCH_COLUMNS)
    assert list(back["text"]) == list(df["text"])
    np.testing.assert_allclose(back["confidence"], df["confidence"], atol=1e-4)


# -- corrections --------------------------------------------------------------------------


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_append_correction_appends_and_deduplicates(tmp_path):
    path = tmp_path / "bp" / "corrections" / "t.jsonl"
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert lab.append_correction(path, "你好吗", "Question", task="t", predicted="Statement",
                                 now=when)
    assert _lines(path) == [{"text": "你好吗", "label": "Question", "task": "t",
                             "predicted": "Statement", "time": "2026-01-02T03:04:05+00:00"}]
    # The same text after normalisation (NFKC, case, spaces) and the same label: nothing new.
    assert not lab.append_correction(path, "  你好吗\u3000", "Question")
    assert len(_lines(path)) == 1
    before = path.read_bytes()
    # A different label appends; the old line stays byte for byte (append-only).
    assert lab.append_correction(path, "你好吗", "Statement")
    assert path.read_bytes().startswith(before)
    assert lab.current_label(lab.read_corrections(path), "你好吗 ") == "Statement"
    # Back to the first label: the newest line must say so, so it is appended again.
    assert lab.append_correction(path, "你好吗", "Question")
    assert [r["label"] for r in _lines(path)] == ["Question", "Statement", "Question"]


def test_append_correction_repairs_a_missing_final_newline(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "label": "Deny"}', encoding="utf-8")
    assert lab.append_correction(path, "b", "Affirm")
    assert [r["text"] for r in _lines(path)] == ["a", "b"]


def test_append_correction_rejects_empty_text_and_reports_bad_lines(tmp_path):
    with pytest.raises(LabError, match="empty text"):
        lab.append_correction(tmp_path / "c.jsonl", " \u200b ", "Question")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "Deny"}\n{oops\n', encoding="utf-8")
    with pytest.raises(LabError, match=r"bad.jsonl:2: not valid JSON"):
        lab.append_correction(bad, "b", "Affirm")


def test_lab_correct_writes_into_the_blueprint_of_the_model(tmp_path, blueprints_dir):
    bp = (blueprints_dir / "my_blueprint").resolve()
    write_models_with_blueprint(tmp_path / "models", "my_blueprint")
    tester = Lab(tmp_path / "models")
    assert tester.corrections_file(TASK) == bp / "corrections" / f"{TASK}.jsonl"
    result = tester.correct(TASK, "打开灯吗", "Question", predicted="Statement")
    assert result.appended and result.path == bp / "corrections" / f"{TASK}.jsonl"
    assert "the next `foundry forge my_blueprint` learns it" in result.message()
    again = tester.correct(TASK, "打开灯吗", "Question")
    assert not again.appended and "Already recorded" in again.message()
    assert [(r["text"], r["label"], r["task"]) for r in _lines(result.path)] == [
        ("打开灯吗", "Question", TASK)]
    with pytest.raises(LabError, match=r"'Maybe' is not a label of tiny_q"):
        tester.correct(TASK, "打开灯吗", "Maybe")


def test_correction_into_a_blueprint_folder_elsewhere_names_its_path(tiny_models, tmp_path):
    from fakes.tiny_blueprint import write_tiny_blueprint

    elsewhere = write_tiny_blueprint(tmp_path / "my_bp", name="my_bp", task=TASK)
    result = Lab(tiny_models[0], blueprint_dir=elsewhere).correct(TASK, "打开灯吗", "Question")
    assert f"the next `foundry forge {elsewhere.resolve()}` learns it" in result.message()


def test_tester_opens_on_the_default_blueprints_first_task_then_the_last_used(tmp_path,
                                                                              lab_state):
    from conftest import write_tiny_models

    models = tmp_path / "models"
    for task in ("confirmation", "aaa", "is_question"):
        write_tiny_models(models, task=task)
    tester = Lab(models)
    assert tester.tasks() == ["is_question", "confirmation", "aaa"]
    assert tester.initial_task() == "is_question"
    tester.remember("aaa")
    assert Lab(models).initial_task() == "aaa"
    assert json.loads(lab_state.read_text()) == {str(models.resolve()): "aaa"}
    # Another models dir has its own memory; a remembered task that is gone is ignored.
    assert Lab(tiny_models_dir(tmp_path)).initial_task() == TASK
    (models / "aaa_preprocessor.bin").unlink()
    assert Lab(models).initial_task() == "is_question"


def tiny_models_dir(tmp_path: Path) -> Path:
    from conftest import write_tiny_models

    write_tiny_models(tmp_path / "other")
    return tmp_path / "other"


def test_corrections_need_a_blueprint(tiny_models, tmp_path):
    with pytest.raises(LabError, match="no blueprint recorded in its provenance"):
        Lab(tiny_models[0]).corrections_file(TASK)
    override = Lab(tiny_models[0], blueprint_dir=tmp_path)
    assert override.corrections_file(TASK) == tmp_path / "corrections" / f"{TASK}.jsonl"


def test_unknown_blueprint_in_provenance_is_a_clear_error(tmp_path, blueprints_dir):
    write_models_with_blueprint(tmp_path / "models", "no_such_blueprint_xyz")
    with pytest.raises(LabError, match="provenance names blueprint 'no_such_blueprint_xyz'"):
        Lab(tmp_path / "models").corrections_file(TASK)


@pytest.mark.parametrize("text, why", [
    ("几点了", "equals the exam text '几点了'"),
    (LONG_EXAM + "？", "near-duplicate"),
    # The tiny blueprint bounds generated rows to [2, 60]; the refinery takes that bound.
    ("打开" + "客厅的灯" * 40, "characters, outside [2, 60]"),
])
def test_corrections_the_forge_would_drop_are_refused(tmp_path, blueprints_dir, text, why):
    """Issue 15: corrections equal to an exam text, or longer than refine.max_chars, were
    dropped by the refinery although the lab said the next forge learns them."""
    write_models_with_blueprint(tmp_path / "models", "my_blueprint")
    tester = Lab(tmp_path / "models")
    with pytest.raises(LabError, match="not recorded: the next forge would drop") as info:
        tester.correct(TASK, text, "Statement")
    assert why in str(info.value)
    assert not tester.corrections_file(TASK).exists()


@pytest.mark.parametrize("name", ["/tmp", "../my_blueprint", "my_blueprint/../../x"])
def test_provenance_paths_never_direct_corrections(tmp_path, blueprints_dir, name):
    """A .bin whose provenance names a path (even one that exists) gets no corrections."""
    (tmp_path / "x").mkdir()
    write_models_with_blueprint(tmp_path / "models", name)
    with pytest.raises(LabError, match="not a blueprint under"):
        Lab(tmp_path / "models").correct(TASK, "打开灯吗", "Question")
    assert not list(tmp_path.rglob("corrections"))


# -- rendering ----------------------------------------------------------------------------


def test_render_answer_has_label_bars_and_chips(tiny_lab):
    answer = tiny_lab.ask(TASK, "今天天气怎么样？")
    page = tiny_lab.render(answer)
    assert 'class="foundry-label"' in page and ">Question</span>" in page
    assert page.count('class="foundry-bar"') == 2
    assert 'data-label="Question"' in page and 'data-label="Statement"' in page
    assert page.count('class="foundry-chip"') == min(12, len(answer.explanation.contributions))
    assert ("foundry-unsure" in page) == (not answer.prediction.confident)


def test_not_sure_badge_below_the_threshold(tmp_path):
    write_models_with_blueprint(tmp_path, "", threshold=0.99)
    tester = Lab(tmp_path)
    answer = tester.ask(TASK, "今天天气怎么样？")
    assert not answer.prediction.confident
    page = tester.render(answer)
    assert 'class="foundry-unsure"' in page and 'data-confident="false"' in page


def test_a_rule_answer_gets_a_badge(ruled_models):
    from foundry.lab import render_answer
    from foundry.runtime import MicroModel

    models_dir, tasks = ruled_models
    model = MicroModel.load(tasks[0], models_dir)
    page = render_answer(model, "删除所有提醒", model.predict("删除所有提醒"))
    assert 'class="foundry-rule"' in page and "rule delete</span>" in page
    assert "foundry-unsure" not in page
    assert 'class="foundry-rule"' not in render_answer(model, "你好吗", model.predict("你好吗"))


def test_rendering_escapes_user_text(tiny_lab):
    answer = tiny_lab.ask(TASK, "<script>alert(1)</script>吗")
    page = tiny_lab.render(answer)
    assert "<script>" not in page and "&lt;script&gt;" in page
    table = lab.render_batch_table(tiny_lab.batch(TASK, "<b>x</b>"), ["Question", "Statement"])
    assert "<b>x</b>" not in table and "foundry-batch-table" in table


def test_model_is_reloaded_when_its_files_change(tmp_path):
    write_models_with_blueprint(tmp_path, "", threshold=0.6)
    tester = Lab(tmp_path)
    assert tester.model(TASK).threshold == pytest.approx(0.6)
    write_models_with_blueprint(tmp_path, "", threshold=0.9)
    assert tester.model(TASK).threshold == pytest.approx(0.9)


# -- the notebook's wiring, without a browser -----------------------------------------------


def run_tester_notebook(models_dir: Path, blueprint_dir: Path | str = "") -> dict:
    """Execute the tester's code cells in-process (parameters set) and return its namespace."""
    path = Path(__file__).parent.parent / "notebooks" / "10_tester.ipynb"
    ns: dict = {}
    for cell in json.loads(path.read_text("utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        exec(compile("".join(cell["source"]), str(path), "exec"), ns)
        if "parameters" in cell["metadata"].get("tags", []):
            ns.update(models_dir=str(models_dir), blueprint_dir=str(blueprint_dir))
    return ns


def test_notebook_asks_on_enter_and_records_corrections(tmp_path, blueprints_dir):
    bp = blueprints_dir / "my_blueprint"
    write_models_with_blueprint(tmp_path / "models", "my_blueprint")
    ns = run_tester_notebook(tmp_path / "models")
    assert ns["task_picker"].options == (TASK,) and ns["task_picker"].value == TASK
    ns["text_box"].value = "今天天气怎么样？"  # what Enter does with continuous_update=False
    assert 'class="foundry-label"' in ns["answer_html"].value
    assert 'data-label="Question"' in ns["answer_html"].value
    buttons = [b for b in ns["corrections_box"].children if hasattr(b, "click")]
    assert [b.description for b in buttons] == ["wrong → Statement"]
    buttons[0].click()
    assert "Saved" in ns["correction_status"].value
    assert _lines(bp / "corrections" / f"{TASK}.jsonl")[0]["label"] == "Statement"


def test_notebook_batch_sorts_and_shows_errors(tiny_models, tmp_path):
    ns = run_tester_notebook(tiny_models[0])
    ns["batch_area"].value = BLOCK
    ns["batch_button"].click()
    assert ns["batch_html"].value.count("foundry-batch-row") == 4
    assert "foundry-csv-link" in ns["download_html"].value
    ns["sort_by"].value = "line"
    first_row = ns["batch_html"].value.split("<tr class='foundry-batch-row'")[1]
    assert "今天天气怎么样？" in first_row
    # Corrections without a known blueprint: the error is shown next to the buttons.
    ns["text_box"].value = "你好吗"
    [b for b in ns["corrections_box"].children if hasattr(b, "click")][0].click()
    assert "foundry-error" in ns["correction_status"].value
    assert "no blueprint recorded" in ns["correction_status"].value


def test_refine_learns_what_the_lab_records(tmp_path):
    """The log the lab writes is what the refine stage reads: the last label per text wins."""
    from foundry.blueprint import Label, Refine, Task
    from foundry.refine import refine_rows

    task = Task(name="is_question", description="d", constitution="c.md", exam="e.jsonl",
                labels=[Label(name="Question", definition="asks"),
                        Label(name="Statement", definition="states")])
    path = lab.corrections_path(tmp_path, task.name)
    lab.append_correction(path, "打开灯吗", "Statement")
    lab.append_correction(path, "打开灯吗 ", "Question")  # changed mind: the newer line counts
    generated = [{"text": t, "label": y, "source": "llm"} for t, y in [
        ("打开灯吗", "Statement"), ("帮我开灯", "Statement"), ("几点了", "Question"),
        ("关掉空调", "Statement"), ("谁发明了电话", "Question")]]
    res = refine_rows(generated, task, Refine(balance="none", test_size=0.25),
                      corrections=lab.read_corrections(path))
    kept = [(r["text"], r["label"], r["source"]) for r in (*res.train, *res.test)
            if r["text"].startswith("打开灯吗")]
    assert kept == [("打开灯吗 ", "Question", "correction")]


def test_multiclass_contributions_weigh_the_label_against_the_runner_up(tmp_path):
    from conftest import fit_int8, install_model

    from foundry.blueprint import Rule
    from foundry.reflex import compile_rules

    words = {"alarm": ["闹钟", "叫醒", "起床"], "music": ["歌", "音乐", "播放"],
             "weather": ["天气", "下雨", "温度"], "oos": ["你好", "谢谢", "讲个笑话"]}
    texts = [f"{p}{w}" for ws in words.values() for w in ws for p in ("帮我", "请", "我想")]
    labels = list(words)
    trained = fit_int8(texts, np.repeat(np.arange(4), 9), labels, "intents", temperature=0.4)
    spec = trained.spec
    reflex = compile_rules([Rule(name="stop", label="alarm", contains=["关掉闹钟"])], labels,
                           spec)
    install_model(trained, tmp_path, "intents", 0.6, reflex=reflex, out_of_scope="oos",
                  texts=texts[:6] + ["关掉闹钟吧"])
    tester = Lab(tmp_path)
    model = tester.model("intents")
    seen = set()
    for text in ["帮我播放歌", "明天下雨吗", "叫醒我听音乐", "天气歌", "关掉闹钟吧"]:
        answer = tester.ask("intents", text)
        e, pred = answer.explanation, answer.prediction
        p = dict(zip(labels, model.predict_proba([text])[0].astype(float).tolist(), strict=True))
        assert e.method == "linear" and e.units == "log-odds"
        assert e.label == max(labels, key=p.get)  # the model's top label, whatever answered
        assert e.versus == max((lab_ for lab_ in labels if lab_ != e.label), key=p.get)
        assert e.log_odds == pytest.approx(math.log(p[e.label] / p[e.versus]), abs=1e-4)
        assert {c.favours for c in e.contributions} <= {e.label, e.versus}
        html = lab.render_explanation(labels, e)
        assert f"log(P({e.label}) / P({e.versus})) = {e.log_odds:+.3f}" in html
        seen.add("rule" if pred.rule else "oos" if pred.label != e.label else "model")
    assert seen == {"rule", "oos", "model"}, seen
    # binary models keep their explanation header
    binary = lab.Explanation("Question", "Statement", "linear", "log-odds",
                             (lab.Contribution("吗", 0, 0.5, 1.0, "Question"),), -0.2)
    assert binary.log_odds == pytest.approx(0.8)
    assert "weight difference Question − Statement (log-odds)" in \
        lab.render_explanation(["Question", "Statement"], binary)
