import shutil
from pathlib import Path

import pytest
import yaml

from foundry.blueprint import BlueprintError, load_blueprint
from foundry.check import check_blueprint
from foundry.paths import BLUEPRINTS_DIR

DEFAULT = BLUEPRINTS_DIR / "text_classification"


def _copy(tmp_path: Path, mutate=None) -> Path:
    dst = tmp_path / "bp"
    shutil.copytree(DEFAULT, dst)
    if mutate:
        data = yaml.safe_load((dst / "blueprint.yaml").read_text(encoding="utf-8"))
        mutate(data)
        (dst / "blueprint.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return dst


def test_default_blueprint_is_valid():
    bp = load_blueprint("text_classification")
    assert [t.name for t in bp.tasks] == ["is_question", "confirmation"]
    assert bp.task("is_question").label_names == ["Question", "Statement"]
    assert bp.task("confirmation").label_names == ["Affirm", "Deny"]
    assert bp.spec.generation.target_per_task >= 3000
    report = check_blueprint("text_classification")
    assert report.ok, report.format()


def test_one_label_is_rejected_with_file_field_and_reason(tmp_path):
    path = _copy(tmp_path, lambda d: d["tasks"][1].__setitem__("labels", d["tasks"][1]["labels"][:1]))
    with pytest.raises(BlueprintError) as info:
        load_blueprint(path)
    assert "blueprint.yaml: tasks[1].labels: needs at least 2 labels, got 1" in str(info.value)


def test_unknown_field_and_bad_value(tmp_path):
    def mutate(d):
        d["generation"]["temperature"] = 7
        d["refine"]["dedupe"] = 0.5

    with pytest.raises(BlueprintError) as info:
        load_blueprint(_copy(tmp_path, mutate))
    text = str(info.value)
    assert "generation.temperature" in text and "refine.dedupe" in text


def test_refit_on_dev_needs_dev_selection(tmp_path):
    path = _copy(tmp_path, lambda d: d["train"].__setitem__("refit_on_dev", True))
    with pytest.raises(BlueprintError, match=r"train\.refit_on_dev: .*needs select_on: dev"):
        load_blueprint(path)


def test_a_task_overrides_source_weights_for_itself_only(tmp_path):
    def mutate(d):
        d["train"]["source_weights"] = {"real": 2.0, "seed": 0.5}
        d["tasks"][0].pop("source_weights", None)
        d["tasks"][1]["source_weights"] = {"real": 4.0}

    bp = load_blueprint(_copy(tmp_path, mutate))
    assert bp.source_weights(bp.task("is_question")) == {"real": 2.0, "seed": 0.5}
    assert bp.source_weights(bp.task("confirmation")) == {"real": 4.0, "seed": 0.5}
    default = load_blueprint("text_classification")
    assert default.source_weights(default.task("is_question")) == {"real": 3.0}
    assert default.source_weights(default.task("confirmation")) == {}


def test_a_task_overrides_the_generation_target_for_itself_only(tmp_path):
    def mutate(d):
        d["generation"]["target_per_task"] = 500
        d["tasks"][0]["target_per_task"] = 900
        d["tasks"][1].pop("target_per_task", None)

    bp = load_blueprint(_copy(tmp_path, mutate))
    assert bp.target(bp.task("is_question")) == 900
    assert bp.target(bp.task("confirmation")) == 500
    # --target replaces every task's target, its own included
    assert [bp.target(t, 120) for t in bp.tasks] == [120, 120]


def test_a_task_target_below_ten_rows_names_the_task_field(tmp_path):
    path = _copy(tmp_path, lambda d: d["tasks"][1].__setitem__("target_per_task", 3))
    with pytest.raises(BlueprintError, match=r"tasks\[1\]\.target_per_task"):
        load_blueprint(path)


def test_a_task_overrides_text_spec_features_for_itself_only(tmp_path):
    from foundry.train import text_spec

    bp = load_blueprint("text_classification")
    assert text_spec(bp, bp.task("confirmation")).head_chars == 3  # the default blueprint's
    assert text_spec(bp, bp.task("is_question")).head_chars == 0
    bp = load_blueprint(_copy(tmp_path, lambda d: d["tasks"][0].__setitem__(
        "features", {"max_n": 4, "sublinear_tf": False})))
    assert (bp.features(bp.task("is_question")).max_n,
            bp.features(bp.task("is_question")).sublinear_tf) == (4, False)
    assert bp.features(bp.task("confirmation")).max_n == bp.spec.train.features.max_n


@pytest.mark.parametrize(("features", "message"), [
    ({"head_charz": 3}, r"tasks\[1\] \(confirmation\)\.features: unknown key\(s\) head_charz"),
    ({"head_chars": 17}, r"tasks\[1\] \(confirmation\)\.features: .*head_chars"),
    ({"min_n": 5}, r"tasks\[1\] \(confirmation\)\.features: .*min_n \(5\) must be <= max_n"),
])
def test_bad_task_features_name_the_task_and_key(tmp_path, features, message):
    path = _copy(tmp_path, lambda d: d["tasks"][1].__setitem__("features", features))
    with pytest.raises(BlueprintError, match=message):
        load_blueprint(path)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf"), "heavy"])
def test_a_bad_task_source_weight_names_the_task_and_field(tmp_path, weight):
    path = _copy(tmp_path, lambda d: d["tasks"][1].__setitem__("source_weights", {"real": weight}))
    with pytest.raises(BlueprintError, match=r"blueprint\.yaml: tasks\[1\]\.source_weights"):
        load_blueprint(path)
    report = check_blueprint(path)
    assert not report.ok
    assert "tasks[1].source_weights" in report.format()


def test_the_blueprint_seed_is_every_stage_seed_a_section_may_override(tmp_path):
    def mutate(d):
        d["seed"] = 7
        for section in ("generation", "refine", "train"):
            d[section].pop("seed", None)
        d["train"]["seed"] = 3

    spec = load_blueprint(_copy(tmp_path, mutate)).spec
    assert (spec.seed, spec.generation.seed, spec.refine.seed, spec.train.seed) == (7, 7, 7, 3)


def test_refine_takes_the_row_length_bounds_of_generation_unless_it_sets_its_own(tmp_path):
    def mutate(d):
        d["generation"].update(min_chars=2, max_chars=90)
        d["refine"].pop("min_chars", None)
        d["refine"].pop("max_chars", None)

    spec = load_blueprint(_copy(tmp_path, mutate)).spec
    assert (spec.refine.min_chars, spec.refine.max_chars) == (2, 90)
    assert spec.train.features.max_chars == 256  # the runtime truncation is not a row bound

    def own(d):
        mutate(d)
        d["refine"]["max_chars"] = 60

    assert load_blueprint(_copy(tmp_path / "own", own)).spec.refine.max_chars == 60

    def crossed(d):
        mutate(d)
        d["refine"]["min_chars"] = 100  # above the inherited max_chars

    with pytest.raises(BlueprintError, match=r"refine: .*min_chars \(100\) must be <= max_chars \(90\)"):
        load_blueprint(_copy(tmp_path / "crossed", crossed))


def test_a_seed_that_is_not_a_number_is_reported_once(tmp_path):
    def mutate(d):
        d["seed"] = "abc"
        for section in ("generation", "refine", "train"):
            d[section].pop("seed", None)  # so that each would take it

    report = check_blueprint(_copy(tmp_path, mutate))
    text = report.format()
    assert not report.ok and "seed: Input should be a valid integer" in text, text
    assert not any(f"{section}.seed" in text for section in ("generation", "refine", "train"))


def test_a_section_that_is_not_a_mapping_is_named(tmp_path):
    with pytest.raises(BlueprintError,
                       match=r"blueprint\.yaml: refine: Input should be a valid dictionary"):
        load_blueprint(_copy(tmp_path, lambda d: d.__setitem__("refine", "fast")))


def test_missing_file_is_named(tmp_path):
    path = _copy(tmp_path)
    (path / "exam" / "confirmation.jsonl").unlink()
    with pytest.raises(BlueprintError, match=r"tasks\[1\]\.exam: file not found"):
        load_blueprint(path)


def test_duplicate_task_names_across_blueprints(tmp_path):
    _copy(tmp_path)
    shutil.copytree(tmp_path / "bp", tmp_path / "bp2")
    report = check_blueprint(tmp_path / "bp")
    assert not report.ok
    assert "must be unique across blueprints" in report.format()
    assert "bp2/blueprint.yaml" in report.format()


def test_unknown_blueprint_name():
    with pytest.raises(BlueprintError, match="no blueprint 'nope'"):
        load_blueprint("nope")


def test_content_hash_ignores_corrections(tmp_path):
    path = _copy(tmp_path)
    before = load_blueprint(path).content_sha256()
    (path / "corrections").mkdir(exist_ok=True)
    (path / "corrections" / "is_question.jsonl").write_text('{"text": "x", "label": "Question"}\n')
    assert load_blueprint(path).content_sha256() == before
    (path / "seeds" / "is_question.jsonl").write_text("changed\n")
    assert load_blueprint(path).content_sha256() != before


def test_every_blueprint_field_is_described_for_check_explain():
    from foundry.blueprint import field_reference

    reference = field_reference()
    undescribed = [path for path, _, description in reference if not description]
    assert undescribed == [], f"add Field(description=...) to: {undescribed}"
    paths = {path: default for path, default, _ in reference}
    assert paths["train.trainer"] == '"tfidf_logreg"'
    assert paths["tasks[].labels[].categories"] == "[]"
    assert paths["train.features.max_chars"] == "256"


def test_check_explain_prints_every_field(capsys):
    from foundry.cli import main

    assert main(["blueprint", "check", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "train.time_budget_s = 120.0\n    seconds the grid search" in out
    assert "generation.provider = \"offline\"" in out
    assert main(["blueprint", "check"]) == 2
    assert "name a blueprint to check (or pass --explain)" in capsys.readouterr().err
