import json
import os
import shutil
import subprocess
import sys

import pytest

from foundry.cli import main


def test_predict_arguments(tiny_models, capsys):
    models_dir, _ = tiny_models
    assert main(["predict", "tiny_q", "今天天气怎么样？", "--models-dir", str(models_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("Question")


@pytest.mark.parametrize("order", [
    ["--models-dir", "{m}", "今天天气怎么样？", "打开客厅的灯"],
    ["今天天气怎么样？", "--json", "--models-dir", "{m}", "打开客厅的灯"],
    ["今天天气怎么样？", "打开客厅的灯", "--models-dir", "{m}", "--json"],
])
def test_predict_options_anywhere_among_the_texts(tiny_models, capsys, order):
    models_dir, _ = tiny_models
    argv = ["predict", "tiny_q", *[a.replace("{m}", str(models_dir)) for a in order]]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    if "--json" in order:
        assert [json.loads(line)["text"] for line in out] == ["今天天气怎么样？", "打开客厅的灯"]


def test_predict_rejects_an_unknown_option_among_the_texts(tiny_models, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "tiny_q", "你好", "--jsn", "--models-dir", str(tiny_models[0])])
    assert info.value.code == 2 and "unrecognized arguments: --jsn" in capsys.readouterr().err


def test_lab_passes_port_and_ip_to_jupyterlab(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert main(["lab", "--port", "9123", "--ip", "0.0.0.0", "--no-browser",
                 "--models-dir", str(tmp_path)]) == 0
    cmd, kw = calls[0]
    assert cmd[1:4] == ["-m", "jupyterlab", "notebooks/10_tester.ipynb"]
    assert "--ServerApp.port=9123" in cmd and "--ServerApp.ip=0.0.0.0" in cmd
    assert kw["env"]["FOUNDRY_MODELS_DIR"] == str(tmp_path.resolve())


def test_blueprint_new_prints_the_next_commands(tmp_path, monkeypatch, capsys):
    import foundry.scaffold as scaffold

    monkeypatch.setattr(scaffold, "BLUEPRINTS_DIR", tmp_path)
    assert main(["blueprint", "new", "demo", "--task", "feedback"]) == 0
    out = capsys.readouterr().out
    assert "created blueprint 'demo' with task 'feedback'" in out
    for line in ("foundry blueprint check demo", "foundry forge demo",
                 "foundry predict feedback", "docs/your-first-blueprint.md",
                 "grammar/feedback.yaml", "exam/feedback.jsonl"):
        assert line in out, line
    assert "name: feedback" in (tmp_path / "demo" / "blueprint.yaml").read_text(encoding="utf-8")
    assert main(["blueprint", "new", "demo"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["blueprint", "new", "Bad-Name"]) == 2
    assert "must match" in capsys.readouterr().err


def test_blueprint_new_refuses_a_task_name_another_blueprint_has(capsys):
    assert main(["blueprint", "new", "fresh_one", "--task", "is_question"]) == 2
    assert "task 'is_question' is already defined in" in capsys.readouterr().err


def test_predict_json_from_stdin(tiny_models):
    models_dir, _ = tiny_models
    out = subprocess.run(
        [sys.executable, "-m", "foundry", "predict", "tiny_q", "--json", "--models-dir", str(models_dir)],
        input="今天天气怎么样？\n打开客厅的灯\n\n", capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert [r["text"] for r in rows] == ["今天天气怎么样？", "打开客厅的灯", ""]
    assert rows[0]["label"] == "Question" and rows[1]["label"] == "Statement"
    assert set(rows[0]) == {"text", "label", "probabilities", "confident"}
    assert set(rows[0]["probabilities"]) == {"Question", "Statement"}


def test_verify_ok(tiny_models, capsys):
    models_dir, _ = tiny_models
    assert main(["verify", "--models-dir", str(models_dir)]) == 0
    assert "ok   tiny_q" in capsys.readouterr().out


def test_verify_reports_mismatch(tiny_models, tmp_path, capsys):
    models_dir, _ = tiny_models
    for f in models_dir.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    conf_path = tmp_path / "tiny_q_conformance.json"
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    conf["vectors"][3]["probabilities"][0] += 0.01
    conf_path.write_text(json.dumps(conf), encoding="utf-8")
    assert main(["verify", "tiny_q", "--models-dir", str(tmp_path)]) == 1
    assert "probabilities differ" in capsys.readouterr().err


def _copy_models(models_dir, into):
    for f in models_dir.iterdir():
        if f.is_file():
            shutil.copy(f, into / f.name)


@pytest.mark.parametrize("edit, message", [
    (lambda conf: conf.update(vectors=[]), "holds no vectors"),
    (lambda conf: conf.update(preprocessor_sha256="0" * 64), "written for another export"),
])
def test_verify_refuses_vectors_that_prove_nothing(tiny_models, tmp_path, capsys, edit, message):
    """`{"vectors": []}` verified as "ok 0 vectors"; vectors of another export blamed the runtime."""
    _copy_models(tiny_models[0], tmp_path)
    conf_path = tmp_path / "tiny_q_conformance.json"
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    edit(conf)
    conf_path.write_text(json.dumps(conf), encoding="utf-8")
    assert main(["verify", "tiny_q", "--models-dir", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_verify_without_models(tmp_path, capsys):
    assert main(["verify", "--models-dir", str(tmp_path)]) == 1
    assert "no *_preprocessor.bin" in capsys.readouterr().err


def test_missing_model_is_an_artifact_error_exit_1(tmp_path, capsys):
    # docs/preprocessor-spec.md, section 5: exit 1 for an artifact problem (as the Node CLI)
    assert main(["predict", "nope", "x", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "nope_preprocessor.bin: preprocessor file not found" in err
    assert len(err.strip().splitlines()) == 1


def _run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "foundry", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


@pytest.mark.parametrize("target", ["-5", "3", "0"])
def test_forge_rejects_targets_the_blueprint_would_reject(target, tmp_path):
    proc = _run_cli("forge", "text_classification", "--target", target,
                    env={**os.environ, "FOUNDRY_RUNS_DIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert f"--target {target}" in proc.stderr and "greater than or equal to 10" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir()), "a run folder was made for a refused forge"


@pytest.mark.parametrize("run_id", ["../../escape", "/tmp/abs", "a/b", "raw", "LATEST", ".hidden"])
def test_forge_rejects_run_ids_outside_the_runs_folder(run_id, tmp_path):
    proc = _run_cli("forge", "text_classification", "--run-id", run_id, "--steps", "generate",
                    env={**os.environ, "FOUNDRY_RUNS_DIR": str(tmp_path / "runs")})
    assert proc.returncode == 2, proc.stderr
    assert "run id" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs" / "LATEST").exists()


def test_predict_into_a_closed_pipe_is_quiet(tiny_models):
    models_dir, _ = tiny_models
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundry", "predict", "tiny_q", "--models-dir", str(models_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first answer (like `| head -0`)
    _, err = proc.communicate("今天天气怎么样？\n".encode() * 20_000, timeout=120)
    assert proc.returncode == 141, err.decode()
    assert err == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_predict_onto_a_full_disk_says_so(tiny_models):
    models_dir, _ = tiny_models
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "foundry", "predict", "tiny_q", "你好", "--models-dir",
             str(models_dir)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("foundry predict: cannot write the output: "
                                   "No space left on device")


def test_predict_from_an_unreadable_stdin_says_so(tiny_models, tmp_path):
    models_dir, _ = tiny_models
    write_only = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)  # reading it fails (EBADF)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "foundry", "predict", "tiny_q", "--models-dir", str(models_dir)],
            stdin=write_only, capture_output=True, text=True, timeout=120)
    finally:
        os.close(write_only)
    assert proc.returncode == 1
    assert proc.stderr.startswith("foundry predict: cannot read stdin: Bad file descriptor")
    assert "Traceback" not in proc.stderr


def test_blueprint_check_bad_path(capsys):
    assert main(["blueprint", "check", "/nonexistent/bp"]) == 2
    assert "no blueprint" in capsys.readouterr().err


def test_parse_steps_orders_the_pipeline():
    from foundry.forge import parse_steps

    assert parse_steps("train,generate") == ["generate", "train"]
    assert parse_steps(None) == ["generate", "refine", "train", "evaluate", "export"]


def test_parse_steps_rejects_unknown_steps():
    from foundry.forge import parse_steps

    with pytest.raises(ValueError, match="unknown step.*bogus"):
        parse_steps("generate,bogus")


def test_verify_completes_an_export_interrupted_between_its_renames(tmp_path, capsys):
    """Issue 15: a crash between the renames left a new .onnx beside the old .bin until the
    next export, and verify blamed the runtime ("290 of 290 vectors differ")."""
    from conftest import QUESTIONS, STATEMENTS, fit_tiny, write_tiny_models

    from foundry.artifacts import COMMIT_MARKER, PENDING_DIR
    from foundry.export import conformance_texts, model_files
    from foundry.runtime import ArtifactError, MicroModel

    write_tiny_models(tmp_path, task="t")
    new = model_files(fit_tiny(C=0.5), task="t", threshold=0.6,
                      texts=conformance_texts(QUESTIONS + STATEMENTS, []))
    staging = tmp_path / PENDING_DIR / "t.123-abcd"
    staging.mkdir(parents=True)
    for suffix, data in new.items():
        (staging / f"t_{suffix}").write_bytes(data)
    (staging / COMMIT_MARKER).write_bytes(b"")
    (staging / "t_classifier.onnx").replace(tmp_path / "t_classifier.onnx")  # the crash
    with pytest.raises(ArtifactError, match=r"interrupted while switching.*foundry verify"):
        MicroModel.load("t", tmp_path)
    assert main(["verify", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "completed an interrupted export of t" in out and "ok   t:" in out
    assert (tmp_path / "t_preprocessor.bin").read_bytes() == new["preprocessor.bin"]
    assert not (tmp_path / PENDING_DIR).exists()
