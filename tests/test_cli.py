import json
import shutil
import subprocess
import sys

import pytest

from foundry.cli import main


def test_predict_arguments(tiny_models, capsys):
    models_dir, _ = tiny_models
    assert main(["predict", "tiny_q", "今天天气怎么样？", "--models-dir", str(models_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("Question")


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


def test_verify_without_models(tmp_path, capsys):
    assert main(["verify", "--models-dir", str(tmp_path)]) == 1
    assert "no *_preprocessor.bin" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "nope", "x", "--models-dir", str(tmp_path)]) == 2
    assert "nope_preprocessor.bin: preprocessor file not found" in capsys.readouterr().err


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
