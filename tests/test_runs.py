"""Run folders and their recorded state: which run a notebook works in, and honestly so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import foundry.runs as runs_mod
from foundry.forge import ForgeError, close_steps, forge
from foundry.runs import (
    RunState,
    RunStateError,
    create_run,
    current_run_dir,
    inherit_stage_outputs,
    last_run_with,
    latest_run_dir,
    open_stage,
)

BP = "text_classification"


@pytest.fixture
def runs_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setattr(runs_mod, "RUNS_DIR", root)
    return root


def _complete(state: RunState, stages=runs_mod.STAGES) -> None:
    for stage in stages:
        state.set_stage(stage, "running")
        state.set_stage(stage, "complete")


def test_generate_by_hand_starts_a_new_run_and_makes_it_current(runs_root):
    stage = open_stage("generate", BP, log=lambda _: None)
    assert stage.run_dir.parent == (runs_root / BP).resolve()
    assert current_run_dir(BP) == runs_root / BP / stage.run_dir.name
    assert stage.state.status("generate") == "running"
    assert RunState.load(stage.run_dir).data["started_by"] == "notebooks/01_generate.ipynb"
    assert latest_run_dir(BP) is None  # not complete


def test_later_stage_continues_the_current_run_and_says_which(runs_root):
    first = open_stage("generate", BP, log=lambda _: None)
    first.complete()
    lines = []
    second = open_stage("refine", BP, log=lines.append)
    assert second.run_dir == first.run_dir
    assert f"works in {first.run_dir}" in lines[0]
    assert "generate complete" in lines[0] and "refine pending" in lines[0]


def test_a_stage_refuses_a_run_whose_previous_stage_did_not_complete(runs_root):
    done = create_run(BP, "20260101-000000", runs_root=runs_root)
    _complete(done)
    assert latest_run_dir(BP) == done.run_dir
    failed = create_run(BP, "20260102-000000", runs_root=runs_root)
    _complete(failed, ["generate", "refine"])
    failed.set_stage("train", "running")
    failed.set_stage("train", "failed", detail="cell [3] raised MemoryError")
    with pytest.raises(RunStateError) as info:
        open_stage("evaluate", BP, log=lambda _: None)
    message = str(info.value)
    # The failed run is the current one and is never taken for the complete one ...
    assert "run 20260102-000000" in message and "train is failed (cell [3] raised" in message
    # ... and the message names what to run, or the complete run to use instead.
    assert "notebooks/03_train.ipynb" in message
    assert "--steps train,evaluate" in message
    assert 'run_dir = "20260101-000000"' in message
    # Naming the complete run works.
    assert open_stage("evaluate", BP, "20260101-000000", log=lambda _: None).run_dir == \
        done.run_dir.resolve()


def test_no_run_yet_says_to_start_with_generate(runs_root):
    with pytest.raises(RunStateError, match="01_generate.ipynb first"):
        open_stage("refine", BP, log=lambda _: None)


def test_rerunning_a_stage_outdates_the_later_ones_and_the_run_is_no_longer_complete(runs_root):
    state = create_run(BP, "r1", runs_root=runs_root)
    _complete(state)
    state.set_stage("refine", "running")
    assert [state.status(s) for s in runs_mod.STAGES] == [
        "complete", "running", "outdated", "outdated", "outdated"]
    assert not state.is_complete()
    with pytest.raises(RunStateError, match="train is outdated"):
        open_stage("evaluate", BP, "r1", log=lambda _: None)


def test_relative_paths_are_resolved_against_the_project_root(runs_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # as a kernel in notebooks/ would be: anywhere but the root
    stage = open_stage("generate", "blueprints/text_classification", str(runs_root / BP / "x"),
                       models_dir="models", log=lambda _: None)
    assert stage.models_dir == runs_mod.ROOT / "models"
    assert stage.blueprint.root == (runs_mod.ROOT / "blueprints" / BP).resolve()


def test_runs_made_before_states_were_recorded(runs_root):
    old = runs_root / BP / "20250101-000000"
    other = runs_root / BP / "20250102-000000"
    for run in (old, other):
        (run / "notebooks").mkdir(parents=True)
    (runs_root / BP / "LATEST").write_text(old.name + "\n")
    (other / "refine" / "t").mkdir(parents=True)
    (other / "refine" / "t" / "summary.json").write_text("{}")
    assert RunState.load(old).is_complete()
    # Without run.json, a stage counts as complete when its outputs are there, and says so.
    assert [RunState.load(other).status(s) for s in ("generate", "refine")] == [
        "pending", "complete"]
    assert "judged by its outputs" in RunState.load(other).data["stages"]["refine"]["detail"]
    assert last_run_with(BP, ["generate", "refine"]).run_dir == old


def test_inherited_stages_are_recorded_with_their_source(runs_root):
    source = create_run(BP, "a", runs_root=runs_root)
    _complete(source, ["generate", "refine"])
    (source.run_dir / "refine" / "t").mkdir(parents=True)
    target = create_run(BP, "b", runs_root=runs_root)
    inherit_stage_outputs(target.run_dir, source.run_dir, ["generate", "refine"])
    state = RunState.load(target.run_dir)
    assert state.status("refine") == "complete"
    assert state.data["stages"]["refine"]["inherited_from"] == "a"
    assert (target.run_dir / "refine" / "t").is_dir()
    assert "refine complete (from run a)" in state.describe()


@pytest.mark.parametrize(("steps", "closed", "added"), [
    (["train", "export"], ["train", "evaluate", "export"], ["evaluate"]),
    (["generate", "export"], list(runs_mod.STAGES), ["refine", "train", "evaluate"]),
    (["refine"], ["refine"], []),
])
def test_steps_gaps_are_filled(steps, closed, added):
    assert close_steps(steps) == (closed, added)


def test_steps_without_a_run_to_start_from_are_refused_before_anything_runs(runs_root, tmp_path):
    with pytest.raises(ForgeError) as info:
        forge(BP, steps="train,export", runs_root=runs_root, models_dir=tmp_path / "m",
              log=lambda _: None)
    message = str(info.value)
    assert "no run of 'text_classification'" in message
    assert f"`foundry forge {BP} --steps generate,refine,train,evaluate,export`" in message
    assert not (runs_root / BP).exists()


# -- run ids: unique per process, confined to runs/<blueprint>/ ---------------------------------


def test_run_ids_are_unique_within_one_millisecond_and_sort_by_time():
    import re

    from foundry.runs import new_run_id

    ids = [new_run_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d{8}-\d{6}-\d{3}-[0-9a-f]{8}", i) for i in ids)
    stamps = [i.rsplit("-", 1)[0] for i in ids]
    assert stamps == sorted(stamps)


def test_new_run_folders_are_created_exclusively(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: create_run(BP, runs_root=tmp_path).run_dir, range(200)))
    assert len({d.name for d in dirs}) == 200
    assert all(d.is_dir() and d.parent == tmp_path / BP for d in dirs)


@pytest.mark.parametrize("run_id", ["../x", "../../x", "/tmp/x", "a/b", "a\\b", ".", "..",
                                    ".hidden", "", "raw", "RAW", "LATEST", "CURRENT", "x" * 129,
                                    "a b", "run\n"])
def test_run_ids_that_leave_the_folder_are_refused(run_id, tmp_path):
    from foundry.errors import ConfigError

    with pytest.raises(ConfigError, match="run id"):
        create_run(BP, run_id, runs_root=tmp_path / "runs")
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs" / BP / "CURRENT").exists()


@pytest.mark.parametrize("run_id", ["r1", "20250101-120000-001-abcd1234", "e2e-again", "v1.2_b"])
def test_plain_run_ids_are_accepted(run_id):
    from foundry.runs import check_run_id

    assert check_run_id(run_id) == run_id


def test_a_tampered_run_marker_is_not_followed(tmp_path):
    from foundry.runs import CURRENT_FILE, LATEST_FILE, mark_latest

    runs = tmp_path / "runs"
    outside = tmp_path / "outside"
    outside.mkdir()
    run = create_run(BP, "r1", runs_root=runs).run_dir
    mark_latest(run)
    assert latest_run_dir(BP, runs) == run
    for marker in (LATEST_FILE, CURRENT_FILE):
        for target in ("../../outside", str(outside)):
            (runs / BP / marker).write_text(target + "\n")
            assert latest_run_dir(BP, runs) != outside and current_run_dir(BP, runs) != outside


def test_a_run_folder_outside_runs_is_used_as_given(runs_root, tmp_path):
    elsewhere = tmp_path / "scratch" / "my-run"
    stage = open_stage("generate", BP, str(elsewhere), log=lambda _: None)
    assert stage.run_dir == elsewhere.resolve()
    assert RunState.load(elsewhere).status("generate") == "running"
    assert current_run_dir(BP) is None  # the markers of runs/<blueprint>/ are not touched


# -- raw data outside runs/ ---------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path, runs_root, monkeypatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setattr(runs_mod, "DATA_DIR", root)
    return root


def test_raw_data_of_runs_in_the_runs_folder_lives_in_data(runs_root, data_root, tmp_path):
    assert runs_mod.raw_dir(BP, runs_root / BP / "r1") == data_root.resolve() / "raw" / BP
    # A run folder made elsewhere (by hand, by a test) keeps its raw data beside it.
    assert runs_mod.raw_dir(BP, tmp_path / "x" / "r1") == (tmp_path / "x" / "raw").resolve()


def _legacy_store(runs_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """An old run and its raw store in the old place, ``runs/<bp>/raw/``: generated beside a
    run folder outside the runs folder, then moved in (as earlier versions left them)."""
    from foundry.blueprint import load_blueprint
    from foundry.generate import GenerateSummary, generate_task

    bp = load_blueprint(BP)
    made = generate_task(bp, bp.task("is_question"), tmp_path / "old" / BP / "r0",
                         provider="offline", target=120, log=lambda _: None)
    (runs_root / BP).mkdir(parents=True)
    (tmp_path / "old" / BP / "raw").rename(runs_root / BP / "raw")
    (tmp_path / "old" / BP / "r0").rename(runs_root / BP / "r0")
    old_file = runs_root / BP / "raw" / made.stream / "is_question.jsonl"
    made.model_copy(update={"raw_files": [str(old_file)]}).write(
        runs_root / BP / "r0" / "generate" / "is_question")
    GenerateSummary.load(runs_root / BP / "r0", "is_question")
    return old_file, runs_root / BP / "r0"


def test_the_next_forge_moves_an_old_raw_store_and_old_runs_still_read_it(runs_root, data_root,
                                                                          tmp_path):
    from foundry.blueprint import load_blueprint
    from foundry.generate import generate_task
    from foundry.refine import load_generated_rows

    old_file, old_run = _legacy_store(runs_root, tmp_path)
    rows = old_file.read_bytes()
    bp = load_blueprint(BP)
    logs: list[str] = []
    again = generate_task(bp, bp.task("is_question"), runs_root / BP / "r1", provider="offline",
                          target=120, log=logs.append)
    new_file = data_root.resolve() / "raw" / BP / old_file.parent.name / "is_question.jsonl"
    assert again.raw_file == new_file and again.added == 0  # resumed, nothing regenerated
    assert new_file.read_bytes() == rows
    assert any("moved 1 raw stream(s)" in line for line in logs)
    assert (runs_root / BP / "raw").is_symlink()
    assert len(load_generated_rows(old_run, bp.task("is_question"))) == 120  # via the link
    # Idempotent, and `make clean-runs` (everything under runs/<bp>/ but an old raw store)
    # cannot touch the rows any more.
    assert runs_mod.migrate_raw_store(BP) == []
    shutil.rmtree(runs_root)
    assert new_file.read_bytes() == rows


def test_a_stream_in_both_places_is_not_moved(runs_root, data_root, tmp_path):
    old_file, _ = _legacy_store(runs_root, tmp_path)
    clash = data_root / "raw" / BP / old_file.parent.name
    clash.mkdir(parents=True)
    with pytest.raises(RunStateError, match=r"exist both in .*raw.*nothing was moved"):
        runs_mod.migrate_raw_store(BP)
    assert old_file.is_file() and not (runs_root / BP / "raw").is_symlink()


def test_clean_runs_keeps_raw_data(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "runs" / BP / "r1" / "train").mkdir(parents=True)
    (tmp_path / "runs" / BP / "LATEST").write_text("r1\n")
    (tmp_path / "runs" / BP / "raw" / "s").mkdir(parents=True)  # an old store, not yet moved
    (tmp_path / "runs" / BP / "raw" / "s" / "t.jsonl").write_text("{}\n")
    (tmp_path / "data" / "raw" / BP / "s").mkdir(parents=True)
    (tmp_path / "data" / "raw" / BP / "s" / "t.jsonl").write_text("{}\n")
    subprocess.run(["make", "-s", "-f", str(repo / "Makefile"), "clean-runs"], cwd=tmp_path,
                   check=True, capture_output=True)
    assert sorted(p.name for p in (tmp_path / "runs" / BP).iterdir()) == ["raw"]
    assert (tmp_path / "runs" / BP / "raw" / "s" / "t.jsonl").is_file()
    assert (tmp_path / "data" / "raw" / BP / "s" / "t.jsonl").is_file()
    assert (tmp_path / "runs" / ".gitkeep").is_file()
