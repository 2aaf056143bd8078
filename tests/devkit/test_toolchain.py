"""The compiler cache, and what a built library links in."""

import shutil
import subprocess

import pytest

from devkit import DevkitError, toolchain

STATS = (
    "cache_miss\t4\ndirect_cache_hit\t5\npreprocessed_cache_hit\t1\nstats_updated_timestamp\t17\n"
)


def make_tool(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_parse_ccache_stats():
    stats = toolchain.parse_ccache_stats(STATS)
    assert stats == toolchain.CacheStats(hits=6, misses=4)
    assert (stats - toolchain.CacheStats(2, 4)).describe() == "cache hits 4/4"
    assert toolchain.CacheStats(0, 0).describe() == "no compiler-cache lookups"


def test_auto_prefers_sccache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    ccache = make_tool(tmp_path, "ccache")
    assert toolchain.compiler_launcher({}, bin_dir=tmp_path) == ccache
    sccache = make_tool(tmp_path, "sccache")
    assert toolchain.compiler_launcher({}, bin_dir=tmp_path) == sccache
    environ = {"VLLM_COMPILER_CACHE": "ccache"}
    assert toolchain.compiler_launcher(environ, bin_dir=tmp_path) == ccache


def test_off_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    make_tool(tmp_path, "ccache")
    assert toolchain.compiler_launcher({"VLLM_COMPILER_CACHE": "off"}, bin_dir=tmp_path) is None
    assert toolchain.compiler_launcher({}, bin_dir=tmp_path / "nothing") is None
    with pytest.raises(DevkitError, match="VLLM_COMPILER_CACHE=sccache but sccache is not on PATH"):
        toolchain.compiler_launcher({"VLLM_COMPILER_CACHE": "sccache"}, bin_dir=tmp_path)


def test_real_ccache_counters(tmp_path, monkeypatch):
    ccache = toolchain.find_tool("ccache")
    if ccache is None:
        pytest.skip("ccache is not installed here (requirements/build.txt installs it)")
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path))
    assert toolchain.cache_stats(ccache) == toolchain.CacheStats(0, 0)


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
