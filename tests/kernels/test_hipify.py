"""The part of the ROCm build that runs anywhere: hipify the real csrc/ out of tree."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from devkit.foundation import envs  # noqa: E402
from devkit.toolchains import plan, rocm, targets  # noqa: E402


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_hipify_translates_into_the_build_directory(tmp_path):
    csrc = ROOT / "csrc"
    before = tree_digest(csrc)
    written = rocm.hipify(csrc, tmp_path / "hipified")
    assert tree_digest(csrc) == before  # the source tree is untouched

    names = {p.name for p in written}
    assert {
        "activation_kernels.hip",
        "layernorm_kernels.hip",
        "pos_encoding_kernels.hip",
        "cache_kernels.hip",
        "hip_utils.cuh",
    } <= names
    utils = (tmp_path / "hipified" / "hip_utils.cuh").read_text()
    assert "#include <hip/hip_runtime.h>" in utils and "<cuda_runtime.h>" not in utils
    # The kernels reach torch through its stable C shim, which hipify leaves alone.
    assert "#include <torch/csrc/stable/accelerator.h>" in utils
    norm = (tmp_path / "hipified" / "layernorm_kernels.hip").read_text()
    assert '#include "hip_utils.cuh"' in norm and "cuda_utils.cuh" not in norm
    assert "hipStream_t" in norm and "cudaStream_t" not in norm
    assert not any("cpu" in p.parts for p in written)  # CPU kernels are left alone


def fake_rocm(root: Path) -> rocm.RocmToolchain:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hipcc").write_text("#!/bin/sh\n")
    return rocm.find_rocm("gfx942", {"ROCM_PATH": str(root)})


def test_prepare_build_hipifies_csrc_for_cmake(tmp_path):
    """What the build backend runs for a ROCm build, with the real hipify."""
    csrc = ROOT / "csrc"
    before = tree_digest(csrc)
    hipified = rocm.prepare_build(csrc, (tmp_path / "build" / "hipified").resolve())
    assert tree_digest(csrc) == before
    assert hipified == (tmp_path / "build" / "hipified").resolve()
    # CMakeLists.txt's rocm branch compiles each X.cu as hipified/X.hip ...
    for cu in csrc.glob("*.cu"):
        assert (hipified / f"{cu.stem}.hip").is_file(), cu.name
    # ... and the host C++ from csrc/, which must therefore be what hipify leaves unchanged.
    for name in ("torch_bindings.cpp", "op_checks.cpp", "ops.h", "op_checks.h"):
        if (csrc / name).is_file():
            assert (hipified / name).read_bytes() == (csrc / name).read_bytes(), name


def test_hipify_rewrites_only_what_changed(tmp_path):
    """Unchanged outputs keep their mtime, so Ninja recompiles only the changed kernel."""
    csrc = tmp_path / "csrc"
    shutil.copytree(ROOT / "csrc", csrc)
    out = tmp_path / "build" / "hipified"
    rocm.hipify(csrc, out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    time.sleep(0.05)

    kernel = csrc / "activation_kernels.cu"
    kernel.write_text(kernel.read_text() + "\n// changed\n")
    (out / "stale.hip").write_text("")  # a file hipify no longer makes
    rocm.hipify(csrc, out)
    changed = {
        p.name for p in out.iterdir() if p.is_file() and p.stat().st_mtime_ns != mtimes.get(p.name)
    }
    # The .cu copy and its .hip twin; the removed stale file is not listed.
    assert changed == {"activation_kernels.cu", "activation_kernels.hip"}
    assert not (out / "stale.hip").exists()
    assert "// changed" in (out / "activation_kernels.hip").read_text()
    assert not list(out.parent.glob(".hipify-*"))  # the staging directory is gone


# A stand-in for ROCm's clang++ (g++ underneath) so that CMake's HIP language
# can be enabled here: enough to configure and generate, not to compile HIP.
FAKE_CLANG = """#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
if "--version" in args:
    print("clang version 18.0.0 (a stand-in for configure checks)")
    sys.exit(0)
hip = any(a.endswith(".hip") for a in args)
out, it = [], iter(args)
for a in it:
    if a == "-x":
        lang = next(it)
        out += ["-x", "c++" if lang == "hip" else lang]
    elif not a.startswith(("--offload-arch", "-fno-gpu-rdc", "--cuda-", "-print-targets")):
        out.append(a)
if hip and "-x" not in out:  # g++ doesn't know the .hip suffix
    out = ["-x", "c++", *out]
extra = ["-D__HIP__", "-D__clang__=1", "-D__clang_major__=18", "-D__clang_minor__=0"]
os.execvp("g++", ["g++", *(extra if hip else []), *out])
"""

FAKE_HIP_LANG = """
if(NOT TARGET hip-lang::device)
  add_library(hip-lang::device INTERFACE IMPORTED)
endif()
set(_CMAKE_HIP_DEVICE_RUNTIME_TARGET hip-lang::device)
"""


@pytest.mark.skipif(
    torch.version.cuda is not None,
    reason="torch here is a CUDA build, whose CMake config needs the CUDA toolkit; the "
    "rocm branch is configured against the CPU torch (nox -s test-kernels-cpu runs it)",
)
def test_cmake_configures_the_rocm_branch(tmp_path):
    """CMakeLists.txt's rocm branch, configured with prepare_build's defines.

    A stand-in clang++ and hip-lang package make enable_language(HIP) pass;
    torch is the CPU one (no LoadHIP). What this checks: the branch configures,
    compiles each kernel's .hip twin as HIP for the one arch, and the host
    C++ from csrc/ as CXX, both with the ROCm defines.
    """
    if envs.get("VLLM_USE_PRECOMPILED"):  # test-kernels-cpu -- --precompiled: no compiler
        pytest.skip("a precompiled venv compiles nothing; the build's own runs check CMake")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cmake, ninja = shutil.which("cmake", path=path), shutil.which("ninja", path=path)
    if not (cmake and ninja and shutil.which("g++")):
        pytest.skip("needs cmake, ninja and g++")
    home = tmp_path / "rocm"
    clang = home / "lib" / "llvm" / "bin" / "clang++"
    clang.parent.mkdir(parents=True)
    clang.write_text(FAKE_CLANG)
    clang.chmod(0o755)
    (home / "lib" / "cmake" / "hip-lang").mkdir(parents=True)
    (home / "lib" / "cmake" / "hip-lang" / "hip-lang-config.cmake").write_text(FAKE_HIP_LANG)
    fake_rocm(home)
    # The plan's defines, as the backend and a preset pass them (the torch it names
    # feeds the build info only; CMake finds the CPU torch of this interpreter).
    built = plan.resolve(
        plan.Request("rocm", arch="gfx942", build_dir=str(tmp_path / "build")),
        plan.expected_torch(targets.get_target("rocm")),
        {"ROCM_PATH": str(home), "VLLM_COMPILER_CACHE": "off"},
    )
    built.write()
    rocm.prepare_build(ROOT / "csrc", built.hipified_dir)
    defines = built.cmake_defines()
    assert defines["CMAKE_HIP_COMPILER"] == str(clang)

    args = [f"-D{key}={value}" for key, value in defines.items()]
    result = subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(tmp_path / "build"), "-G", "Ninja",
         f"-DCMAKE_MAKE_PROGRAM={ninja}", "-DVLLM_TARGET_DEVICE=rocm",
         f"-DPython_EXECUTABLE={sys.executable}", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-- HIP arch: gfx942" in result.stdout
    ninja_file = (tmp_path / "build" / "build.ninja").read_text()
    hipified = defines["VLLM_HIPIFIED_DIR"]
    for cu in sorted((ROOT / "csrc").glob("*.cu")):
        rule = re.search(rf"^build \S+/{cu.stem}\.hip\.o: (\S+) (\S+)", ninja_file, re.M)
        assert (
            rule and rule[1].startswith("HIP_COMPILER") and rule[2] == f"{hipified}/{cu.stem}.hip"
        )
    for cpp in ("torch_bindings.cpp", "op_checks.cpp"):
        rule = re.search(rf"^build \S+/csrc/{cpp}\.o: (\S+) (\S+).*\n(?:  .*\n)*", ninja_file, re.M)
        assert rule and rule[1].startswith("CXX_COMPILER") and rule[2] == str(ROOT / "csrc" / cpp)
        assert "-DUSE_ROCM=1" in rule[0] and "-DVLLM_DISPATCH_KEY=CUDA" in rule[0]
    assert "--offload-arch=gfx942" in ninja_file
