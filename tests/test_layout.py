"""The shape of the package's code: no function in foundry/ longer than 80 lines.

A function is measured from its ``def`` line to its last line (``end_lineno - lineno + 1``),
docstring and comments included; nested functions count within their parent and on their
own. Generated protobuf modules are left out. A long function is split into small,
well-named steps (see ``RESOLVE_STEPS`` in foundry/refine.py for a funnel driven by one
ordered list).
"""

from __future__ import annotations

import ast
from pathlib import Path

import foundry

PACKAGE = Path(foundry.__file__).parent
MAX_FUNCTION_LINES = 80


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """``(name, first line, length in lines)`` of every function and method in ``source``."""
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_function_lengths_are_measured_from_def_to_last_line() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(81))
    source = f"def outer():\n    def inner():\n        pass\n{body}\nasync def short():\n    pass\n"
    assert function_lengths(source) == [("outer", 1, 84), ("short", 86, 2), ("inner", 2, 2)]


def test_no_function_in_foundry_is_longer_than_80_lines() -> None:
    paths = [p for p in sorted(PACKAGE.rglob("*.py")) if not p.name.endswith("_pb2.py")]
    assert len(paths) > 30  # the package was found
    too_long = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({length} lines)"
        for path in paths
        for name, line, length in function_lengths(path.read_text(encoding="utf-8"))
        if length > MAX_FUNCTION_LINES
    ]
    assert not too_long, (f"functions longer than {MAX_FUNCTION_LINES} lines (split them into "
                          "small, well-named steps): " + "; ".join(too_long))
