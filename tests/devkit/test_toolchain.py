"""What a built library links in."""

import shutil
import subprocess

import pytest

from devkit.toolchains import toolchain


def build_library(tmp_path, *flags):
    source = tmp_path / "lib.cpp"
    source.write_text(
        "#include <sstream>\n#include <string>\n"
        'std::string describe(long n) { std::ostringstream s; s << "got " << n; return s.str(); }\n'
    )
    library = tmp_path / f"lib{len(flags)}.so"
    subprocess.run(["g++", "-shared", "-fPIC", *flags, str(source), "-o", str(library)], check=True)
    return library


def test_private_libstdcxx_is_found(tmp_path):
    if shutil.which("g++") is None or shutil.which("nm") is None:
        pytest.skip("needs g++ and nm (binutils)")
    assert toolchain.private_libstdcxx(build_library(tmp_path)) == []
    private = toolchain.private_libstdcxx(build_library(tmp_path, "-static-libstdc++"))
    assert private and any("locale" in name for name in private)
