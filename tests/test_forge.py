"""forge orchestration: failures name the stage, the cell and the executed notebook."""

import nbformat
import pytest

import foundry.forge as forge_mod
from foundry.forge import ForgeError, forge


def _notebook(code: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'blueprint = ""\nrun_dir = ""\nmodels_dir = ""\nprovider = ""\n'
        "target_per_task = 0\nallow_exam_failures = False"
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.mark.slow
def test_failing_stage_names_cell_and_notebook(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(_notebook("from pathlib import Path\nPath(run_dir, 'ok').write_text(provider)"),
                   notebooks / "01_generate.ipynb")
    nbformat.write(_notebook("raise RuntimeError('refinery on fire')"), notebooks / "02_refine.ipynb")
    monkeypatch.setattr(forge_mod, "NOTEBOOKS_DIR", notebooks)
    with pytest.raises(ForgeError) as info:
        forge("text_classification", steps="generate,refine,train", provider="offline",
              run_id="r1", runs_root=tmp_path / "runs", models_dir=tmp_path / "models")
    message = str(info.value)
    run = tmp_path / "runs" / "text_classification" / "r1"
    assert "stage 'refine' failed" in message and "refinery on fire" in message
    assert str(run / "notebooks" / "02_refine.ipynb") in message
    # The stage before ran, received its parameters, and left its audit record.
    assert (run / "ok").read_text() == "offline"
    assert (run / "notebooks" / "01_generate.ipynb").is_file()
    assert (run / "notebooks" / "01_generate.html").is_file()
    assert (run / "notebooks" / "02_refine.html").is_file()
    # Nothing after the failing stage ran, and the failed run is not marked as the latest.
    assert not (run / "notebooks" / "03_train.ipynb").exists()
    assert not (tmp_path / "runs" / "text_classification" / "LATEST").exists()
