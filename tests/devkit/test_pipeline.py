"""Pieces of the build pipeline that read what the build left behind."""

import re

from devkit.build import progress
from devkit.build.metadata import dynamic_metadata, requirement_lines
from devkit.foundation import layout
from devkit.toolchains import uv

LOG = """# ninja log v7
1\t7691\t1000\tCMakeFiles/_C.dir/csrc/torch_bindings.cpp.o\t1f94
3\t6803\t2000\tCMakeFiles/_C.dir/csrc/cpu/activation.cpp.o\t39db
17718\t17951\t2000\t_C.abi3.so\tc11c
20\t6803\t3000\tCMakeFiles/_C.dir/csrc/cpu/activation.cpp.o\t39dc
"""


def test_ninja_outputs(tmp_path):
    assert progress.ninja_outputs(tmp_path) == set()
    (tmp_path / ".ninja_log").write_text(LOG)
    assert progress.ninja_outputs(tmp_path) == {
        "CMakeFiles/_C.dir/csrc/torch_bindings.cpp.o",
        "CMakeFiles/_C.dir/csrc/cpu/activation.cpp.o",
    }
    assert progress.ninja_outputs(tmp_path, since_ns=2500) == {
        "CMakeFiles/_C.dir/csrc/cpu/activation.cpp.o"
    }


def test_ninja_objects_are_those_build_ninja_makes(tmp_path):
    assert progress.ninja_objects(tmp_path) == set()
    (tmp_path / "build.ninja").write_text(
        "build CMakeFiles/_C.dir/csrc/torch_bindings.cpp.o: CXX_COMPILER__C_Release /x.cpp\n"
        "build _C.abi3.so: CXX_SHARED_LIBRARY_LINKER__C_Release a.o\n"
    )
    assert progress.ninja_objects(tmp_path) == {"CMakeFiles/_C.dir/csrc/torch_bindings.cpp.o"}


def test_version_and_dependencies_follow_the_target(monkeypatch):
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cpu")
    # 0.1.0+cpu outside git, 0.1.0.devN+g<sha12>.cpu in a checkout.
    assert re.search(r"[+.]cpu$", dynamic_metadata("version"))
    deps = dynamic_metadata("dependencies")
    assert "torch>=2.10" in deps  # the stable ABI: any torch from the floor


def test_requirement_lines_drop_comments_and_options(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# c\n-r other.txt\n\ntorch==1.0  # pinned\n--extra-index-url x\nnumpy\n")
    assert requirement_lines(path) == ["torch==1.0", "numpy"]


def test_venvs_are_per_target():
    assert layout.venv_dir("cpu").name == ".venv-cpu"


def test_a_failed_fetch_of_uv_is_one_line_naming_the_url():
    stderr = (
        "Using Python 3.11.7 environment at: .venv-cpu\n"
        "error: Request failed after 1 retry in 17.0s\n"
        "  cause: Failed to fetch: `http://127.0.0.1:9/simple/numpy/`\n"
        "  cause: error sending request for url (http://127.0.0.1:9/simple/numpy/)\n"
        "  cause: operation timed out\n"
    )
    assert uv.network_error(stderr).startswith(
        "uv couldn't fetch http://127.0.0.1:9/simple/numpy/ (no answer within "
        "UV_HTTP_TIMEOUT=8 s, retried); fix or remove that index"
    )
    assert uv.network_error("error: No solution found\n") is None
