"""The benchmark blueprints: they check clean, and a small slice of CLINC150 forges end to end
(dataset provider, dev selection, int8 weights, out-of-scope threshold, test files, baselines).

The full benchmark forges take minutes each; they are measured by ``bench/intents.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foundry.blueprint import load_blueprint
from foundry.check import check_blueprint
from foundry.datasets import load_dataset
from foundry.paths import BLUEPRINTS_DIR

INTENTS = ["alarm", "balance", "book_flight", "translate", "weather", "timer"]


@pytest.mark.parametrize("name, labels, rows", [
    ("assistant_intents_zh", 60, {"train": 11514, "dev": 2033, "test": 2974}),
    ("clinc150", 151, {"train": 15100, "dev": 3100, "test": 5500}),
])
def test_benchmark_blueprints_check_clean(name: str, labels: int, rows: dict[str, int]) -> None:
    report = check_blueprint(name)
    assert report.ok, report.format()
    bp = load_blueprint(name)
    task = bp.tasks[0]
    assert len(task.labels) == labels
    for role, n in rows.items():
        assert len(load_dataset(bp, task, role)) == n
    assert (bp.root / "ATTRIBUTION.md").is_file() and (bp.root / "data" / "LICENSE").is_file()


def _slice(tmp: Path) -> Path:
    """CLINC150 reduced to six intents + oos, with the shipped files' formats (JSONL and a CSV)."""
    src = BLUEPRINTS_DIR / "clinc150"
    root = tmp / "clinc_slice"
    (root / "data").mkdir(parents=True)
    spec = yaml.safe_load((src / "blueprint.yaml").read_text(encoding="utf-8"))
    task = spec["tasks"][0]
    task["labels"] = [lab for lab in task["labels"] if lab["name"] in (*INTENTS, "oos")]
    task["exam"] = "exam.jsonl"
    task["constitution"] = "constitution.md"
    task["dataset"]["published"] = "published.csv"
    per_file = {"train": 40, "oos_train": 60, "val": 15, "oos_val": 40, "test": 15,
                "oos_test": 40}
    for f in task["dataset"]["files"]:
        stem = Path(f["path"]).stem
        rows = [json.loads(line) for line in (src / f["path"]).read_text(encoding="utf-8").splitlines()]
        rows = [r for r in rows if r["intent"] in (*INTENTS, "oos")]
        keep, count = [], {}
        for r in rows:
            if count.get(r["intent"], 0) < per_file[stem]:
                keep.append(r)
                count[r["intent"]] = count.get(r["intent"], 0) + 1
        if stem == "train":  # one CSV file too
            import csv

            f["path"] = "data/train.csv"
            with open(root / f["path"], "w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, ["text", "intent"])
                writer.writeheader()
                writer.writerows(keep)
        else:
            if stem == "val":  # one dev row repeats a test text: refit_on_dev must skip it
                test_row = json.loads((src / "data/test.jsonl").read_text(
                    encoding="utf-8").splitlines()[0])
                keep.append({"text": test_row["text"].upper(), "intent": test_row["intent"]})
            (root / f["path"]).write_text(
                "".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    spec["name"] = "clinc_slice"
    spec["train"]["grid"] = {"C": [1.0, 2.0]}
    spec["export"]["size_budget_kb"] = 40
    (root / "blueprint.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    (root / "constitution.md").write_text("CLINC150 slice.\n", encoding="utf-8")
    (root / "published.csv").write_text((src / "data/published.csv").read_text(encoding="utf-8"),
                                        encoding="utf-8")
    exam = [r for r in (json.loads(line) for line in (src / task_exam(src)).read_text(
        encoding="utf-8").splitlines()) if r["label"] in (*INTENTS, "oos")]
    (root / "exam.jsonl").write_text("".join(json.dumps(r) + "\n" for r in exam), encoding="utf-8")
    return root


def task_exam(src: Path) -> str:
    return yaml.safe_load((src / "blueprint.yaml").read_text(encoding="utf-8"))["tasks"][0]["exam"]


@pytest.mark.slow
def test_clinc_slice_forges_with_out_of_scope(tmp_path: Path) -> None:
    root = _slice(tmp_path)
    models = tmp_path / "models"
    run = subprocess.run(
        [sys.executable, "-m", "foundry", "forge", str(root), "--models-dir", str(models),
         "--run-id", "t1", "--allow-exam-failures"],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    folder = Path(next(line.split("run folder ")[1].split(";")[0]
                       for line in run.stdout.splitlines() if "run folder" in line))
    summary = json.loads((folder / "evaluate" / "intent_clinc" / "summary.json").read_text())
    held = summary["heldout"]
    assert held["rows"] == 6 * 15 + 40
    oos = held["out_of_scope"]
    assert 0 <= oos["in_scope_accuracy"] <= 1 and oos["oos_rows"] == 40
    choice = summary["out_of_scope"]
    bp = load_blueprint(root)
    assert summary["threshold"] == choice["threshold"]
    assert choice["dev_oos_recall"] >= bp.spec.evaluate.out_of_scope_recall
    train = json.loads((folder / "train" / "intent_clinc" / "train.json").read_text())
    assert train["selected_on"] == "dev" and train["trainer"] == "tfidf_svm_int8"
    # refit_on_dev: the shipped model saw the dev rows, the threshold only cross-fitted ones
    from foundry.train_dev import dev_rows, dev_rows_near_held_out
    from foundry.trained import load_trained

    assert bp.spec.train.refit_on_dev and train["refit_on_dev"] is True
    dev_texts, _ = dev_rows(bp, bp.tasks[0])
    assert dev_rows_near_held_out(bp, bp.tasks[0], dev_texts) == {6 * 15}  # end of val.jsonl
    trained = load_trained(folder, "intent_clinc")
    in_sample = trained.predict_proba(dev_texts)
    assert trained.oof_proba.shape == in_sample.shape
    assert (trained.oof_proba.max(axis=1) < in_sample.max(axis=1)).mean() > 0.6
    assert train["size_bytes"] <= 40 * 1000
    # seven labels in 40 KB: the vocabulary takes about half the budget (cut to half on the
    # training rows; the refit learns it on train + dev, a little larger), the weights are
    # thinned to fit the rest and ship as the sparse layout, which every backend reads alike
    assert train["bin_bytes"] <= 0.55 * 40 * 1000 and train["onnx_bytes"] > 15 * 1000
    n_dense = train["n_features"] * len(train["labels"])
    assert 0 < train["n_weights"] < n_dense
    assert b"W_gaps" in (models / "intent_clinc_classifier.onnx").read_bytes()
    card = (models / "intent_clinc_card.md").read_text(encoding="utf-8")
    assert f"sparse: {train['n_weights']:,} of {n_dense:,} weights" in card
    from foundry.runtime import MicroModel

    answers = {backend: MicroModel.load("intent_clinc", models, backend=backend).predict_proba(
        dev_texts[:40]) for backend in ("numpy", "onnxruntime")}
    assert abs(answers["numpy"] - answers["onnxruntime"]).max() < 1e-5
    from fakes.summaries import rewritten_differently

    assert rewritten_differently(folder, "intent_clinc", tmp_path / "again") == []
    for name in ("oos_curve.png", "confusion_heldout.png", "confused_pairs.csv"):
        assert (folder / "evaluate" / "intent_clinc" / name).is_file()
    notebook = (folder / "notebooks" / "04_evaluate.ipynb").read_text(encoding="utf-8")
    assert "original recipe" in notebook and "Larson et al., 2019" in notebook
    # Test texts never reached training.
    test_texts = {r.text for r in load_dataset(load_blueprint(root), load_blueprint(root).tasks[0],
                                               "test")}
    trained_on = [json.loads(line)["text"] for line in
                  (folder / "refine" / "intent_clinc" / "train.jsonl").read_text().splitlines()]
    assert not test_texts & set(trained_on)
    # The artifacts load in the Python runtime and pass their own conformance vectors.
    verify = subprocess.run([sys.executable, "-m", "foundry", "verify", "intent_clinc",
                             "--models-dir", str(models)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    from foundry.runtime import MicroModel

    model = MicroModel.load("intent_clinc", models_dir=models)
    assert model.predict("set an alarm for seven am").label == "alarm"
