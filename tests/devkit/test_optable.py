"""The op table (vllm/_op_table.py) and the views devkit.optable generates from it.

test_docgen.py checks that the checked-in views are fresh; these check what
the views say: the C++ schemas are the table's, the C++ signatures follow the
schemas, every kernel source belongs to a family, every target has a key.
"""

import re

import pytest

from devkit import DevkitError
from devkit.build import smoke
from devkit.foundation.envs import ROOT
from devkit.toolchains import optable, targets

TABLE = optable.table()


def _literals(block: str) -> dict[str, str]:
    """The schema each ops.def(...) of a registration block defines, its literals joined."""
    calls = re.findall(r"ops\.def\((.*?)\);", block, re.S)
    schemas = ["".join(re.findall(r'"([^"]*)"', call)) for call in calls]
    return {schema.partition("(")[0]: schema for schema in schemas}


def test_the_registrations_define_the_tables_schemas_within_the_column_limit():
    block = optable.cpp_registrations()
    assert _literals(block) == {op.name: op.schema for op in TABLE.OPS}
    assert max(map(len, block.splitlines())) <= optable.WIDTH
    for op in TABLE.OPS:
        assert f'ops.impl("{op.name}", TORCH_BOX(&{op.name}));' in block


def test_a_long_schema_is_split_between_words():
    schema = "an_op(" + ", ".join(f"Tensor argument_{i}" for i in range(12)) + ") -> ()"
    lines = optable._string_call("  ops.def(", schema)
    assert lines[0] == "  ops.def("
    assert all(len(line) <= optable.WIDTH for line in lines)
    assert "".join(re.findall(r'"([^"]*)"', "".join(lines))) == schema
    assert lines[-1].endswith('");')


def test_the_declarations_follow_the_schemas():
    declarations = optable.cpp_declarations()
    assert "void rms_norm(Tensor& result, Tensor& input, std::optional<Tensor> weight," in (
        declarations
    )
    assert "const std::string& kv_cache_dtype" in declarations
    assert max(map(len, declarations.splitlines())) <= optable.WIDTH
    assert declarations.count("void ") == len(TABLE.OPS)


def test_an_argument_type_without_a_cpp_type_is_one_line(monkeypatch):
    op = TABLE.Op("_C", "activation", "scaled(Tensor! out, Scalar s) -> ()", "doc")
    monkeypatch.setattr(TABLE, "OPS", (op,))
    with pytest.raises(DevkitError, match="scaled's schema has an argument of type 'Scalar'"):
        optable.cpp_declarations()


def test_every_kernel_source_belongs_to_a_family_of_the_table():
    listed = {f for family in TABLE.families() for f in TABLE.family_sources(family).values()}
    assert all((ROOT / f).is_file() for f in listed | set(TABLE.HOST_SOURCES))
    found = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("cpu/*.cpp")}
    found |= {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cu")}
    assert found == listed, "a kernel file that no op of vllm/_op_table.py names"


def test_every_target_registers_for_the_tables_key():
    assert set(TABLE.DISPATCH_KEYS) == set(targets.TARGETS)
    assert targets.get_target("cpu").dispatch_key == "CPU"
    assert targets.get_target("rocm").dispatch_key == "CUDA"
    assert "set(VLLM_DISPATCH_KEY_rocm CUDA)" in optable.cmake_sources()


def test_the_smoke_check_expects_every_op_of_the_table():
    expected = [f"{lib}::{name}" for lib, names in smoke.EXPECTED_OPS.items() for name in names]
    assert expected == [op.qualname for op in TABLE.OPS]
    assert "_C_cache_ops::convert_fp8" in expected
