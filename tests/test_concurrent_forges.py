"""Two forges of one blueprint at the same time, into one models folder (issue 15).

They used to share a run folder (one-second run ids), store every generated batch twice, and
break each other's exports. Now each gets its own run folder, the raw store is generated once
under its lock (the second forge waits, then reuses it), the exports take turns, and the
models folder verifies.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fakes.blueprint_copy import copy_blueprint

from foundry.runs import RunState

pytestmark = pytest.mark.slow

TARGET = 200
TASKS = ("is_question", "confirmation")


def test_two_concurrent_forges_of_one_blueprint(tmp_path):
    bp = copy_blueprint("text_classification", tmp_path, name="twin", changes={
        "evaluate": {"exam_min_accuracy": 0.0},
        "train": {"grid": {"C": [4.0]}, "cv_folds": 3}})
    runs, models = tmp_path / "runs", tmp_path / "models"
    env = {**os.environ, "FOUNDRY_RUNS_DIR": str(runs)}
    cmd = [sys.executable, "-m", "foundry", "forge", str(bp), "--target", str(TARGET),
           "--models-dir", str(models)]
    # Started together, without run ids: each draws its own.
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=1200) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err

    run_dirs = sorted(d for d in (runs / "twin").iterdir() if d.is_dir() and d.name != "raw")
    assert len(run_dirs) == 2
    for run in run_dirs:
        assert RunState.load(run).is_complete(), RunState.load(run).describe()
        assert len(list((run / "notebooks").glob("0*.ipynb"))) == 5

    # The raw store is outside runs/ (data/ beside it), where `make clean-runs` never goes.
    assert not (runs / "twin" / "raw").exists()
    raw_files = [p for p in (tmp_path / "data" / "raw" / "twin").glob("*/*.jsonl")
                 if p.name.count(".") == 1]
    assert sorted(p.stem for p in raw_files) == sorted(TASKS)
    for raw in raw_files:
        lines = raw.read_text(encoding="utf-8").splitlines()
        assert len(lines) == TARGET and len(set(lines)) == TARGET, raw

    verify = subprocess.run([sys.executable, "-m", "foundry", "verify", "--models-dir",
                             str(models)], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.count("conformance vectors reproduced") == 2
    assert not (models / ".pending").exists()
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == sorted(
        f"{t}_{s}" for t in TASKS
        for s in ("classifier.onnx", "preprocessor.bin", "conformance.json", "card.md"))
