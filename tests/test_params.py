"""The stage notebooks' parameters: defined once (foundry.params.NotebookParams), every
notebook's papermill ``parameters`` cell is exactly its text, and each notebook checks the
values it was given before it does anything."""

from __future__ import annotations

import ast

import nbformat
import pytest

from foundry.errors import ConfigError
from foundry.forge import STAGE_NOTEBOOKS
from foundry.params import NotebookParams
from foundry.paths import NOTEBOOKS_DIR


def _cells(name: str) -> tuple[nbformat.NotebookNode, list[nbformat.NotebookNode]]:
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("stage, name", sorted(STAGE_NOTEBOOKS.items()))
def test_every_stage_notebook_has_the_one_parameters_cell(stage, name):
    nb, code = _cells(name)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], name
    assert tagged[0].source == NotebookParams.parameters_cell(), name
    # The next cell checks the parameters before opening the stage with them.
    check = code[1].source
    assert "params = NotebookParams.from_namespace(globals())" in check, name
    assert check.index("from_namespace") < check.index(f'open_stage("{stage}", params.blueprint')
    # No parameter is read bare after that: everything goes through the checked values.
    read = {node.id for c in code[1:] for node in ast.walk(ast.parse(c.source))
            if isinstance(node, ast.Name)}
    assert not read & set(NotebookParams.model_fields), name
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Stage")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def test_the_cell_is_the_models_defaults_and_descriptions():
    namespace: dict = {}
    exec(NotebookParams.parameters_cell(), namespace)  # noqa: S102 - our own cell text
    assert NotebookParams.from_namespace(namespace) == NotebookParams()
    lines = NotebookParams.parameters_cell().splitlines()
    assert [line.split(" = ")[0] for line in lines] == list(NotebookParams.model_fields)
    assert all("  # " in line for line in lines)


@pytest.mark.parametrize("values, named", [
    ({"target_per_task": -5}, "target_per_task = -5"),
    ({"target_per_task": "300"}, "target_per_task = '300'"),
    ({"allow_exam_failures": "yes"}, "allow_exam_failures = 'yes'"),
    ({"blueprint": ""}, "blueprint = ''"),
])
def test_a_wrong_value_is_named(values, named):
    with pytest.raises(ConfigError, match="notebook parameter " + named.replace("'", ".")):
        NotebookParams.from_namespace({**NotebookParams().model_dump(), **values})


def test_a_namespace_without_some_parameters_takes_their_defaults():
    params = NotebookParams.from_namespace({"blueprint": "demo", "print": print})
    assert params.blueprint == "demo" and params.target_per_task == 0
