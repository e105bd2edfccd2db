"""The two READMEs stay in step, and their commands can be run in the order shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = ("README.md", "README.zh-CN.md")
#: Lines that are commands to type (the synopsis lines of `foundry forge` are translated).
RUNNABLE = (".venv/bin/", "make ", "echo ", "node ", "export ")


def commands(name: str) -> list[list[str]]:
    """The runnable commands of each bash block, comments stripped."""
    text = (REPO / name).read_text(encoding="utf-8")
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        lines = [line.split("  #")[0].strip() for line in block.splitlines()]
        blocks.append([line for line in lines if line.startswith(RUNNABLE)])
    return blocks


def test_both_readmes_show_the_same_commands():
    assert commands(READMES[0]) == commands(READMES[1])


@pytest.mark.parametrize("name", READMES)
def test_the_node_runtime_is_installed_before_it_is_used(name):
    for block in commands(name):
        for i, line in enumerate(block):
            if line.startswith("node ") or "| node " in line:
                assert "make node" in block[:i], f"{name}: {line!r} before `make node`"
