"""The op table (vllm/_op_table.py), loaded from the source tree, and the views it generates.

`nox -s docs` writes each view into its generated block (docgen): the C++
declarations of csrc/ops.h, the schemas and registrations of
csrc/torch_bindings.cpp, the source lists and dispatch keys of
CMakeLists.txt, and CONTRIBUTING.md's table. The C++ is checked in, not
generated at configure time, so that the registrations read (and grep) in the
tree as the compiler sees them, `cmake --preset` and hipify need no step of
their own, a build never runs the generator (nor loads the table),
and a schema change shows in review as the C++ it becomes; the drift test is
tests/devkit/test_docgen.py. The C++ is written as clang-format leaves it
(`nox -s lint` checks).
"""

from __future__ import annotations

import textwrap
from types import ModuleType
from typing import Any

from devkit import DevkitError
from devkit.foundation import envs


def table() -> ModuleType:
    """vllm/_op_table.py, loaded once on first use (the backend's builds never need it)."""
    return envs.load_from_tree("vllm/_op_table.py")


# A schema's argument type -> the C++ parameter type of ops.h (the stable ABI's,
# csrc/torch_stable.h), as TORCH_BOX unboxes it.
CPP_TYPES = {
    "Tensor": "Tensor&",
    "Tensor!": "Tensor&",
    "Tensor?": "std::optional<Tensor>",
    "Tensor!?": "std::optional<Tensor>",
    "float": "double",
    "int": "int64_t",
    "bool": "bool",
    "str": "const std::string&",
}
WIDTH = 80  # .clang-format's ColumnLimit


def expected_ops() -> dict[str, list[str]]:
    """Each library's op names: what the build's smoke check finds registered."""
    return table().libraries()


def _arguments(op: Any) -> list[tuple[str, str]]:
    """The schema's (type, name) pairs, defaults dropped."""
    inside = op.schema.partition("(")[2].rpartition(") ->")[0]
    pairs = []
    for argument in inside.split(", ") if inside else []:
        kind, _, name = argument.partition(" ")
        pairs.append((kind, name.partition("=")[0]))
    return pairs


def _cpp_parameter(op: Any, kind: str, name: str) -> str:
    if kind not in CPP_TYPES:
        raise DevkitError(
            f"{op.name}'s schema has an argument of type {kind!r}, which has no C++ type "
            "here; add it to CPP_TYPES in tools/devkit/optable.py"
        )
    return f"{CPP_TYPES[kind]} {name}"


def _packed_call(head: str, items: list[str], tail: str) -> list[str]:
    """head + items joined by ", " + tail, items packed into lines aligned after head."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else tail)
        if line != head and len(line) + 1 + len(piece) > WIDTH:
            lines.append(line)
            line = " " * len(head) + piece
        else:
            line += ("" if line == head else " ") + piece
    return [*lines, line]


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text + ".", WIDTH, initial_indent="// ", subsequent_indent="// ")


def cpp_declarations() -> str:
    """csrc/ops.h: each op's C++ function, with what it computes."""
    blocks = []
    for op in table().OPS:
        if not op.mutates_only:
            raise DevkitError(f"{op.name} returns a value; ops.h declares void functions only")
        parameters = [_cpp_parameter(op, kind, name) for kind, name in _arguments(op)]
        lines = _comment(op.doc) + _packed_call(f"void {op.name}(", parameters, ");")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _string_call(head: str, text: str) -> list[str]:
    """`head"text");` on one line, else the literal on the next lines, split between words."""
    if len(f'{head}"{text}");') <= WIDTH:
        return [f'{head}"{text}");']
    indent = " " * (len(head) - len(head.lstrip()) + 4)
    room = WIDTH - len(indent) - 2  # the quotes
    pieces, piece = [], ""
    for word in text.split(" "):
        if piece and len(piece) + len(word) + 1 > room:  # a piece ends with its space
            pieces.append(piece)
            piece = ""
        piece += word + " "
    pieces.append(piece.removesuffix(" "))
    if len(pieces[-1]) + 2 > room:  # the last line also holds `);`
        rest, _, word = pieces[-1].rpartition(" ")
        pieces[-1:] = [rest + " ", word]
    lines = [head.rstrip()] + [f'{indent}"{p}"' for p in pieces]
    return [*lines[:-1], lines[-1] + ");"]


def cpp_registrations() -> str:
    """csrc/torch_bindings.cpp: each library's schemas, and its kernels for the build's key."""
    lines: list[str] = []
    libraries = table().libraries()
    by_name = {op.name: op for op in table().OPS}
    for library, names in libraries.items():
        lines.append(f"STABLE_TORCH_LIBRARY({library}, ops) {{")
        for name in names:
            lines += _string_call("  ops.def(", by_name[name].schema)
        lines += ["}", ""]
    for library, names in libraries.items():
        lines.append(f"STABLE_TORCH_LIBRARY_IMPL({library}, VLLM_DISPATCH_KEY, ops) {{")
        lines += [f'  ops.impl("{name}", TORCH_BOX(&{name}));' for name in names]
        lines += ["}", ""]
    return "\n".join(lines[:-1])


def cmake_sources() -> str:
    """CMakeLists.txt: each target's sources and dispatch key."""
    families = table().families()
    lines = [f"set(VLLM_HOST_SOURCES {' '.join(table().HOST_SOURCES)})"]
    for kind in ("cpu", "cuda"):
        files = [table().family_sources(family)[kind] for family in families]
        lines += [f"set(VLLM_{kind.upper()}_SOURCES", *(f"  {f}" for f in files[:-1])]
        lines.append(f"  {files[-1]})")
    lines += [f"set(VLLM_DISPATCH_KEY_{t} {key})" for t, key in table().DISPATCH_KEYS.items()]
    return "\n".join(lines)


def markdown_table() -> str:
    """CONTRIBUTING.md: one row per op, in the table's order."""
    rows = ["| op | schema | kernels | what |", "| --- | --- | --- | --- |"]
    for op in table().OPS:
        signature = op.schema.removeprefix(op.name)
        kernels = ", ".join(f"`{f}`" for f in table().family_sources(op.family).values())
        what = op.doc.replace("|", "\\|")
        rows.append(f"| `{op.qualname}` | `{signature}` | {kernels} | {what} |")
    return "\n".join(rows)
