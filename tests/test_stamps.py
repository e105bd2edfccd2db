"""foundry.stamps: a stage refuses outputs made from other inputs than the current ones
(issue 15: re-running early stages left later outputs stale, and `--steps export` shipped a
model whose provenance described other data than it was trained on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fakes.blueprint_copy import copy_blueprint

from foundry.blueprint import BLUEPRINT_FILE, load_blueprint
from foundry.errors import StaleInputError
from foundry.stamps import STAMP_FILE, check_fresh

TASK = "is_question"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """A blueprint (one task) and a run folder in which generate..evaluate ran."""
    from foundry.evaluate import evaluate_tasks
    from foundry.generate import generate_stage
    from foundry.refine import refine_stage
    from foundry.train import train_stage

    root = tmp_path_factory.mktemp("stamps")
    bp_dir = copy_blueprint("text_classification", root, name="stamped", changes={
        "train": {"grid": {"C": [4.0]}, "cv_folds": 3}})
    raw = yaml.safe_load((bp_dir / BLUEPRINT_FILE).read_text(encoding="utf-8"))
    raw["tasks"] = [t for t in raw["tasks"] if t["name"] == TASK]
    (bp_dir / BLUEPRINT_FILE).write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    bp = load_blueprint(bp_dir)
    run = root / "runs" / "stamped" / "r1"
    quiet = {"log": lambda _m: None}
    generate_stage(bp, run, provider="offline", target=240, **quiet)
    refine_stage(bp, run, progress=False, **quiet)
    train_stage(bp, run, **quiet)
    evaluate_tasks(bp, run, **quiet)
    return bp_dir, run


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the blueprint and the run (each test damages its own)."""
    bp_dir, run = base
    bp_copy, run_copy = tmp_path / "stamped", tmp_path / "runs" / "stamped" / "r1"
    shutil.copytree(bp_dir, bp_copy)
    shutil.copytree(run, run_copy, ignore=shutil.ignore_patterns("raw"))
    # the manifest names the raw file by absolute path: the base run's raw data is reused
    return bp_copy, run_copy


def test_a_complete_run_is_fresh_and_every_stage_is_stamped(copy):
    bp_dir, run = copy
    for stage in ("generate", "refine", "train", "evaluate"):
        assert (run / stage / TASK / STAMP_FILE).is_file()
    check_fresh(load_blueprint(bp_dir), run, "export", TASK)


def test_rerunning_refine_makes_train_and_later_stale(copy, tmp_path):
    from foundry.export import export_stage
    from foundry.refine import refine_stage
    from foundry.train import train_stage

    bp_dir, run = copy
    (bp_dir / "corrections").mkdir()
    (bp_dir / "corrections" / f"{TASK}.jsonl").write_text(
        json.dumps({"text": "帮我开一下客厅的灯吗", "label": "Statement"}, ensure_ascii=False)
        + "\n", encoding="utf-8")
    bp = load_blueprint(bp_dir)
    with pytest.raises(StaleInputError, match=r"the refine stage was made from other lab "
                                              r"corrections.*--steps refine,train"):
        train_stage(bp, run, log=lambda _m: None)
    refine_stage(bp, run, progress=False, log=lambda _m: None)
    check_fresh(bp, run, "train", TASK)  # train may run on the new refinery output
    models = tmp_path / "models"
    with pytest.raises(StaleInputError) as info:
        export_stage(bp, run, models, log=lambda _m: None)
    message = str(info.value)
    assert "the train stage was made from other refine outputs" in message
    assert "--run-id r1 --steps train,evaluate,export" in message
    assert not models.exists()


def test_a_changed_blueprint_setting_outdates_only_the_stages_that_use_it(copy):
    bp_dir, run = copy
    raw = yaml.safe_load((bp_dir / BLUEPRINT_FILE).read_text(encoding="utf-8"))
    raw["evaluate"]["target_precision"] = 0.95
    (bp_dir / BLUEPRINT_FILE).write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    bp = load_blueprint(bp_dir)
    check_fresh(bp, run, "evaluate", TASK)  # train did not use the evaluate settings
    with pytest.raises(StaleInputError, match=r"the evaluate stage was made from other "
                                              r"blueprint.*--steps evaluate,export"):
        check_fresh(bp, run, "export", TASK)


def test_the_worker_counts_outdate_nothing(copy):
    bp_dir, run = copy
    raw = yaml.safe_load((bp_dir / BLUEPRINT_FILE).read_text(encoding="utf-8"))
    raw["refine"]["workers"] = raw["train"]["workers"] = 7
    (bp_dir / BLUEPRINT_FILE).write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    bp = load_blueprint(bp_dir)
    for stage in ("train", "evaluate", "export"):  # each reads the outputs before it
        check_fresh(bp, run, stage, TASK)


def test_outputs_edited_after_the_stage_are_refused(copy):
    bp_dir, run = copy
    summary = run / "evaluate" / TASK / "summary.json"
    data = json.loads(summary.read_text(encoding="utf-8"))
    data["exam_passed"] = True
    data["exam_accuracy"] = 1.0
    summary.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StaleInputError, match="evaluate stage has outputs that changed after"):
        check_fresh(load_blueprint(bp_dir), run, "export", TASK)


def test_a_missing_stamp_in_a_stamped_run_is_refused_but_an_unstamped_run_is_not(copy):
    bp_dir, run = copy
    bp = load_blueprint(bp_dir)
    (run / "train" / TASK / STAMP_FILE).unlink()
    with pytest.raises(StaleInputError, match="the train stage has no input fingerprint"):
        check_fresh(bp, run, "export", TASK)
    for stamp in run.rglob(STAMP_FILE):
        stamp.unlink()
    check_fresh(bp, run, "export", TASK)  # made before fingerprints existed: not checked
