"""devkit stays readable: no module over MAX_LINES lines, no function over MAX_FUNCTION_LINES.

A module that grows past the limit is doing two jobs: split it by job (the way
precompiled.py became wheelindex, wheelcheck and precompiled). A function past
the limit is several steps: name them.
"""

from __future__ import annotations

import ast
from pathlib import Path

DEVKIT = Path(__file__).resolve().parents[2] / "tools" / "devkit"
MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(DEVKIT.rglob("*.py"))


def test_the_modules_are_found():
    names = {p.name for p in _modules()}
    assert {"__init__.py", "pipeline.py", "backend.py"} <= names


def test_no_devkit_module_is_over_the_line_limit():
    long = {
        str(p.relative_to(DEVKIT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines (split them by job): {long}"


def test_no_devkit_function_is_over_the_line_limit():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(DEVKIT)}:{node.lineno} {node.name}"] = size
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (name their steps): {long}"
