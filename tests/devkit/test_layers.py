"""devkit's folders are its layers: a module imports only its own layer and those below.

    foundation < toolchains < artifacts < build < checks < commands

So a newcomer knows which room a change belongs in, and the floor never learns
about what stands on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

DEVKIT = Path(__file__).resolve().parents[2] / "tools" / "devkit"
LAYERS = ("foundation", "toolchains", "artifacts", "build", "checks", "commands")
# The one import that reaches up: a binary key digests the build requirements
# through the backend's own reader of requirement lines.
ALLOWED = {("artifacts/binkey.py", "build")}


def test_every_module_is_in_a_layer():
    loose = [p.name for p in DEVKIT.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"put these in one of {LAYERS}: {loose}"
    assert {p.name for p in DEVKIT.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        LAYERS
    )


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in DEVKIT.rglob("*.py"):
        if path.parent == DEVKIT:
            continue
        mine = LAYERS.index(path.parent.name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("devkit."):
                other = node.module.split(".")[1]
                where = (str(path.relative_to(DEVKIT)), other)
                if LAYERS.index(other) > mine and where not in ALLOWED:
                    upward.append(f"{where[0]} imports {node.module}")
    assert not upward, f"imports from a layer above (move one of them): {sorted(upward)}"
