"""CONTRIBUTING's generated tables against their one source."""

import pytest

from devkit import DevkitError
from devkit.commands import docgen


@pytest.mark.parametrize("path", docgen.FILES, ids=lambda path: path.name)
def test_generated_blocks_are_up_to_date(path):
    stale = docgen.stale(path.read_text())
    assert not stale, f"{path.name}'s generated {stale} block(s) are stale: run `nox -s docs`"


def test_every_block_is_in_a_file():
    text = "".join(path.read_text() for path in docgen.FILES)
    assert [name for name in docgen.BLOCKS if f" generated: {name} " not in text] == []


def test_a_stale_cpp_block_is_rewritten_and_the_rest_kept():
    begin = "// generated: op-registrations (nox -s docs)\n"
    text = f"#include <x>\n{begin}STABLE_TORCH_LIBRARY(_C, ops) {{}}\n"
    text += "// end generated: op-registrations\nint y;\n"
    assert docgen.stale(text) == ["op-registrations"]
    rendered = docgen.render(text)
    assert rendered.startswith(f"#include <x>\n{begin}STABLE_TORCH_LIBRARY(_C, ops) {{\n")
    assert '  ops.impl("convert_fp8", TORCH_BOX(&convert_fp8));' in rendered
    assert rendered.endswith("}\n// end generated: op-registrations\nint y;\n")
    assert docgen.stale(rendered) == []


def test_every_registered_variable_is_a_row_in_registry_order():
    from devkit.foundation import envs

    rows = docgen.env_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(envs.registry.REGISTRY)


def test_a_stale_block_is_named_and_rewritten():
    begin = "<!-- generated: env-vars (nox -s docs) -->\n"
    text = f"intro\n{begin}| old |\n<!-- end generated: env-vars -->\noutro\n"
    assert docgen.stale(text) == ["env-vars"]
    rendered = docgen.render(text)
    assert rendered.startswith(f"intro\n{begin}| variable |")
    assert rendered.endswith("\n<!-- end generated: env-vars -->\noutro\n")
    assert docgen.stale(rendered) == []


def test_an_unknown_block_is_one_line():
    text = "<!-- generated: nope x -->\n|\n<!-- end generated: nope -->"
    with pytest.raises(DevkitError, match="generated block 'nope' that docgen lacks"):
        docgen.render(text)


def test_a_bad_block_in_one_file_writes_none(tmp_path):
    good = tmp_path / "a.md"
    good.write_text("<!-- generated: ops (x) -->\n| old |\n<!-- end generated: ops -->\n")
    bad = tmp_path / "b.h"
    bad.write_text("// generated: nope (x)\nint x;\n// end generated: nope\n")
    with pytest.raises(DevkitError, match="^b.h: a generated block 'nope' that docgen lacks"):
        docgen.write((good, bad))
    assert "| old |" in good.read_text()
    assert docgen.write((good,)) == ["ops"]
    assert docgen.stale(good.read_text()) == []


def test_every_session_is_a_row_with_its_docstring():
    rows = docgen.sessions_table().splitlines()[2:]
    names = [row.split("`")[1] for row in rows]
    assert {"build-cpu", "dev-precompiled", "tests", "docs", "lint"} <= set(names)
    (build_cpu,) = [row for row in rows if row.startswith("| `build-cpu` |")]
    assert build_cpu.startswith("| `build-cpu` | yes | Build the CPU extension")
