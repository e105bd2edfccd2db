"""foundry.reflex: reflex rules, from blueprint.yaml to every runtime.

- the matching language (contains / starts_with / ends_with / equals, also_contains,
  unless_contains) on the normalised text, and the words normalised at compile time;
- the blueprint schema rejects unknown labels, empty lists and unknown keys with the file
  and field path;
- models are written as format 5 with or without rules (formats 3 and 4 still load);
- the Python runtime (numpy, ONNX Runtime, native), the Node CLI, the Rust CLI and the C ABI
  answer the same rule for the same text, and their JSON lines say which rule answered;
- rule hits and contradictions on labelled splits (:class:`RuleContradictionError`).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import QUESTIONS, STATEMENTS, TINY_RULE_TEXTS, tiny_reflex

from foundry.blueprint import BlueprintError, Rule, load_blueprint
from foundry.errors import ConfigError, GateError
from foundry.reflex import (
    RuleContradictionError,
    check_no_contradiction,
    compile_rules,
    rule_hits,
)
from foundry.runtime import MicroModel
from foundry.textspec import TextSpec

REPO = Path(__file__).resolve().parents[1]
RUST_CLI = REPO / "runtimes" / "rust" / "target" / "release" / "foundry-rt"
NODE_CLI = REPO / "runtimes" / "node" / "cli.js"
LIBFOUNDRY = REPO / "runtimes" / "rust" / "target" / "release" / "libfoundry.so"


def one_rule(**fields):
    return compile_rules([Rule(label="B", **fields)], ["A", "B"], TextSpec()).rules[0]


@pytest.mark.parametrize(("fields", "hits", "misses"), [
    ({"contains": ["删除", "清空"]}, ["请删除它", "清空", "把记录清空吧"], ["删掉它", "除删", ""]),
    ({"starts_with": ["delete"]}, ["delete it", "deleted"], ["undelete", " x delete"]),
    ({"ends_with": ["吗"]}, ["好吗", "吗"], ["吗了", "吗 ?"]),
    ({"equals": ["ok", "好的"]}, ["ok", "好的", " OK "], ["ok!", "好的吧"]),
    ({"contains": ["删除"], "also_contains": ["提醒", "全部"]}, ["删除全部提醒"], ["删除提醒"]),
    ({"contains": ["删除"], "unless_contains": ["不要", "别"]}, ["删除提醒"],
     ["不要删除", "别删除了"]),
    ({"starts_with": ["请"], "ends_with": ["吗"], "contains": ["删"]}, ["请删吗"],
     ["请删", "删吗", "请吗"]),
])
def test_each_word_list_matches_on_the_normalised_text(fields, hits, misses):
    rule = one_rule(**fields)
    spec = TextSpec()
    from foundry.textspec import normalize

    assert [rule.matches(normalize(t, spec)) for t in hits] == [True] * len(hits)
    assert [rule.matches(normalize(t, spec)) for t in misses] == [False] * len(misses)


def test_words_are_normalised_like_texts():
    rule = one_rule(contains=["ＤＥＬＥＴＥ", "  Remove\u200b  All "], ends_with=["？"])
    assert rule.contains == ("delete", "remove all") and rule.ends_with == ("?",)
    with pytest.raises(ConfigError, match=r"rules\[0\].contains: the word '\\u200b' is empty"):
        compile_rules([Rule(label="A", contains=["\u200b"])], ["A", "B"], TextSpec())
    with pytest.raises(ConfigError, match="repeated rule names"):
        compile_rules([Rule(label="A", contains=["x"], name="rule2"), Rule(label="A", equals=["y"])],
                      ["A", "B"], TextSpec())


def test_the_first_matching_rule_answers():
    reflex = tiny_reflex()
    from foundry.textspec import normalize

    got = {t: reflex.first(normalize(t, TextSpec())) for t in TINY_RULE_TEXTS}
    names = {t: None if i is None else reflex.rules[i].name for t, i in got.items()}
    assert names == TINY_RULE_TEXTS


def _blueprint_with(tmp_path: Path, rules) -> Path:
    from fakes.blueprint_copy import copy_blueprint

    root = copy_blueprint("text_classification", tmp_path)
    path = root / "blueprint.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["tasks"][0]["rules"] = rules
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return root


@pytest.mark.parametrize(("rules", "message"), [
    ([{"label": "Nope", "contains": ["x"]}], r"tasks\[0\]: .*rules\[0\].label: 'Nope' is not one"),
    ([{"label": "Question", "contains": []}], r"tasks\[0\].rules\[0\].contains: an empty word list"),
    ([{"label": "Question", "contains": ["x"], "regex": "a.*"}],
     r"tasks\[0\].rules\[0\].regex: Extra inputs"),
    ([{"label": "Question", "unless_contains": ["x"]}],
     r"tasks\[0\].rules\[0\]: a rule needs at least one of contains"),
    ([{"label": "Question", "contains": [" "]}], r"rules\[0\].contains: the word ' ' is empty"),
    ([{"label": "Question", "contains": ["x" * 65]}], r"has 65 characters; at most 64"),
    ([{"label": "Question", "contains": ["x"], "name": "a b"}], r"rules\[0\].name: rule name"),
    ([{"label": "Question", "contains": ["x"], "name": "a"},
      {"label": "Question", "contains": ["y"], "name": "a"}], r"repeated rule names \['a'\]"),
])
def test_the_blueprint_check_rejects_bad_rules_by_file_and_field(tmp_path, rules, message):
    root = _blueprint_with(tmp_path, rules)
    with pytest.raises(BlueprintError, match=message) as info:
        load_blueprint(root)
    assert str(root / "blueprint.yaml") in str(info.value)


def test_a_good_rule_loads(tmp_path):
    root = _blueprint_with(tmp_path, [{"label": "Question", "ends_with": ["吗", "?"],
                                      "unless_contains": ["不知道"]}])
    task = load_blueprint(root).tasks[0]
    assert task.rules[0].ends_with == ["吗", "?"] and task.rules[0].name is None


def test_models_with_and_without_rules_are_format_5(ruled_models, tiny_models):
    ruled_dir, tasks = ruled_models
    tiny_dir, _ = tiny_models
    assert MicroModel.load(tasks[0], ruled_dir).preprocessor.format_version == 5
    plain = MicroModel.load("tiny_q", tiny_dir)
    assert plain.preprocessor.format_version == 5 and not plain.reflex
    doc = json.loads((tiny_dir / "tiny_q_conformance.json").read_text(encoding="utf-8"))
    assert doc["format_version"] == 5 and all("rule" not in v for v in doc["vectors"])
    assert "rule" not in plain.predict("你好吗").to_json("你好吗", bool(plain.reflex))


def _texts() -> list[str]:
    return [*TINY_RULE_TEXTS, *QUESTIONS, *STATEMENTS, "请问删除吗", "OK?", "不要删除 delete"]


def _python_answers(models_dir: Path, task: str, backend: str) -> list[dict]:
    model = MicroModel.load(task, models_dir, backend=backend)
    texts = _texts()
    many = model.predict_many(texts)
    one = [model.predict(t) for t in texts]
    assert [p.rule for p in many] == [p.rule for p in one] == [model.rule(t) for t in texts]
    return [p.to_json(t, True) for t, p in zip(texts, many, strict=True)]


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime", "native"])
def test_python_backends_answer_by_the_same_rules(ruled_models, backend):
    from foundry import native

    if backend == "native" and not native.available():
        pytest.fail("the native runtime is not built: run `make native`")
    models_dir, tasks = ruled_models
    for task in tasks:
        answers = _python_answers(models_dir, task, backend)
        for answer in answers:
            want = TINY_RULE_TEXTS.get(answer["text"], answer["rule"])
            assert answer["rule"] == want, answer
            if answer["rule"] is not None:
                assert answer["confident"] and answer["probabilities"][answer["label"]] == 1.0
        # the out-of-scope label never replaces a rule's answer
        model = MicroModel.load(task, models_dir, backend=backend)
        if model.out_of_scope:
            assert any(a["rule"] is None and not a["confident"] for a in answers)
            assert model.predict("删除所有提醒").label == "Statement"
            assert model.predict("请问明天下雨吗").label == "Question"


def _cli_lines(cmd: list[str], texts: list[str]) -> list[dict]:
    run = subprocess.run(cmd, input="".join(t + "\n" for t in texts).encode(),
                         capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    return [json.loads(line) for line in run.stdout.decode().split("\n") if line]


def test_every_cli_says_which_rule_answered(ruled_models):
    node = shutil.which("node")
    if not RUST_CLI.is_file() or node is None:
        pytest.fail("build the runtimes first: make rust node")
    models_dir, tasks = ruled_models
    texts = _texts()
    for task in tasks:
        want = _python_answers(models_dir, task, "numpy")
        for cmd in ([str(RUST_CLI), "--models-dir", str(models_dir), "--task", task],
                    [node, str(NODE_CLI), "--models-dir", str(models_dir), "--task", task]):
            got = _cli_lines(cmd, texts)
            assert [list(g) for g in got] == [list(w) for w in want]  # same keys, same order
            assert [(g["label"], g["confident"], g["rule"]) for g in got] \
                == [(w["label"], w["confident"], w["rule"]) for w in want], cmd[0]
            for g, w in zip(got, want, strict=True):
                assert all(abs(g["probabilities"][k] - v) <= 1e-5
                           for k, v in w["probabilities"].items())
            verify = subprocess.run([*cmd, "--verify"], capture_output=True, timeout=120)
            assert verify.returncode == 0, verify.stderr.decode()


def test_the_c_abi_applies_the_rules(ruled_models):
    if not LIBFOUNDRY.is_file():
        pytest.fail(f"{LIBFOUNDRY} is not built: run `make c`")
    lib = ctypes.CDLL(str(LIBFOUNDRY))
    lib.foundry_model_load.restype = ctypes.c_void_p
    lib.foundry_model_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.c_size_t]
    lib.foundry_model_rule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.foundry_model_rule_name.restype = ctypes.c_char_p
    lib.foundry_model_rule_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.foundry_model_num_rules.argtypes = [ctypes.c_void_p]
    lib.foundry_model_predict.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_double),
                                          ctypes.POINTER(ctypes.c_int)]
    lib.foundry_model_free.argtypes = [ctypes.c_void_p]
    models_dir, tasks = ruled_models
    error = ctypes.create_string_buffer(512)
    handle = lib.foundry_model_load(str(models_dir).encode(), tasks[0].encode(), error, 512)
    assert handle, error.value.decode()
    try:
        assert lib.foundry_model_num_rules(handle) == 4
        python = MicroModel.load(tasks[0], models_dir, backend="numpy")
        for text in _texts():
            data = text.encode()
            index = lib.foundry_model_rule(handle, data, len(data))
            name = None if index < 0 else lib.foundry_model_rule_name(handle, index).decode()
            want = python.predict(text)
            assert name == want.rule, text
            proba, confident = (ctypes.c_double * 2)(), ctypes.c_int()
            label = lib.foundry_model_predict(handle, data, len(data), proba, ctypes.byref(confident))
            assert python.labels[label] == want.label and bool(confident.value) == want.confident
            if want.rule is not None:
                assert list(proba) == list(want.probabilities.values())
    finally:
        lib.foundry_model_free(handle)


def test_rule_hits_and_contradictions():
    reflex = tiny_reflex()
    texts = ["删除所有提醒", "请问明天下雨吗", "你好吗", "删除了吗"]
    hits = rule_hits(reflex, "dev", texts, ["Statement", "Question", "Question", "Question"],
                     TextSpec())
    assert hits.rows == 4 and hits.hits == (2, 1, 0, 0)
    assert hits.contradictions[0] == (("删除了吗", "Question"),)
    with pytest.raises(RuleContradictionError, match=r"reflex rule 'delete' answers Statement for the "
                                                     r"dev text '删除了吗' labelled Question") as info:
        check_no_contradiction(reflex, [hits], "tiny")
    assert isinstance(info.value, GateError)
    clean = rule_hits(reflex, "train", texts[:3], ["Statement", "Question", "Question"], TextSpec())
    check_no_contradiction(reflex, [clean], "tiny")
