"""Blocks generated from their one source (`nox -s docs`): CONTRIBUTING.md's tables, and
the op table's C++ and CMake (devkit.optable).

A generated block sits between two markers, comments in the file's language, so
the text around it stays hand-written:

    <!-- generated: env-vars (nox -s docs writes it from vllm/envs.py) -->
    | variable | default | values | what |
    ...
    <!-- end generated: env-vars -->

(`// generated: ...` in C++, `# generated: ...` in CMake). `render` rewrites
every such block; `stale` names the blocks whose text differs from what
`render` would write (tests/devkit/test_docgen.py fails on them).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import envs
from devkit.toolchains import optable

ROOT = envs.ROOT
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
# Every file that holds generated blocks.
FILES = (
    CONTRIBUTING,
    ROOT / "csrc" / "ops.h",
    ROOT / "csrc" / "torch_bindings.cpp",
    ROOT / "CMakeLists.txt",
)


def env_table() -> str:
    """One row per variable of vllm/envs.py's registry, in its order."""
    rows = ["| variable | default | values | what |", "| --- | --- | --- | --- |"]
    for var in envs.registry.REGISTRY.values():
        default = "unset" if var.default is None else f"`{var.default}`"
        rows.append(f"| `{var.name}` | {default} | {var.shown_values} | {var.doc} |")
    return "\n".join(rows)


def sessions_table() -> str:
    """One row per nox session of noxfile.py: its name, whether it is a default, its docstring.

    Reads nox's own registry after loading the noxfile, so it needs nox
    (nox's environment and the tests' venv have it).
    """
    import nox.registry

    if not nox.registry.get():  # inside `nox -s docs` the noxfile is loaded already
        spec = importlib.util.spec_from_file_location("_docgen_noxfile", ROOT / "noxfile.py")
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    defaults = set(nox.options.sessions or ())
    rows = ["| session | in README's test command | what it does |", "| --- | --- | --- |"]
    for name, func in nox.registry.get().items():
        doc = (func.__doc__ or "").strip().splitlines()[0].replace("|", "\\|")
        rows.append(f"| `{name}` | {'yes' if name in defaults else ''} | {doc} |")
    return "\n".join(rows)


# block name: (what writes it, its one source, named in the opening marker)
BLOCKS: dict[str, tuple[Callable[[], str], str]] = {
    "sessions": (sessions_table, "noxfile.py"),
    "env-vars": (env_table, "vllm/envs.py"),
    "ops": (optable.markdown_table, "vllm/_op_table.py"),
    "op-declarations": (optable.cpp_declarations, "vllm/_op_table.py"),
    "op-registrations": (optable.cpp_registrations, "vllm/_op_table.py"),
    "op-sources": (optable.cmake_sources, "vllm/_op_table.py"),
}

_BLOCK = re.compile(
    r"(?P<open>^(?P<lead><!--|//|#) generated: (?P<name>[\w-]+) [^\n]*\n)"  # the opening marker
    r"(?P<body>.*?)"  # the table
    r"(?P<close>\n(?P=lead) end generated: (?P=name)(?: -->)?$)",
    re.S | re.M,
)


def render(text: str) -> str:
    """`text` with every generated block rewritten from its source."""

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise DevkitError(f"a generated block {name!r} that docgen lacks; remove its markers")
        return match["open"] + BLOCKS[name][0]() + match["close"]

    return _BLOCK.sub(fill, text)


def stale(text: str) -> list[str]:
    """Names of the generated blocks in `text` that `render` would change."""
    return _changed(text, render(text))


def _changed(text: str, new: str) -> list[str]:
    """Names of the generated blocks whose bodies differ between `text` and `new`."""
    rendered = {m["name"]: m["body"] for m in _BLOCK.finditer(new)}
    return [m["name"] for m in _BLOCK.finditer(text) if m["body"] != rendered[m["name"]]]


def write(paths: tuple[Path, ...] = FILES) -> list[str]:
    """Regenerates each file in place; returns the blocks that changed.

    Every file is rendered before any is written: a block that can't be
    rendered leaves them all as they were.
    """
    rendered = {}
    for path in paths:
        text = path.read_text()
        try:
            new = render(text)
        except DevkitError as exc:
            raise DevkitError(f"{path.name}: {exc}") from None
        rendered[path] = (_changed(text, new), new)
    for path, (names, text) in rendered.items():
        if names:
            path.write_text(text)
    return [name for names, _ in rendered.values() for name in names]
