"""The nox sessions end to end, run as a contributor runs them.

Each test works in a copy of the checkout (what a clone would hold: tracked
and untracked, not ignored, files), so nothing here touches your own venvs or
build directories.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import CPU_PIN, CUDA_PIN

from devkit.build.progress import ninja_outputs
from devkit.build.smoke import EXPECTED_OPS
from devkit.foundation.gitbase import copy_checkout

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def nox(cwd: Path, *args: str, timeout: int = 60, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NOX", "VIRTUAL_ENV"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "nox", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def abort_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if "aborted:" in line]
    assert len(lines) == 1, result.stderr
    return lines[0].split("aborted: ", 1)[1]


def test_every_session_is_listed_with_a_docstring():
    out = nox(ROOT, "-l").stdout
    listed = dict(re.findall(r"^[*-] (\S+) -> (.+)$", out, re.M))
    assert {"build-cpu", "test-kernels-cpu", "tests", "lint"} <= set(listed)
    assert all(doc.strip() for doc in listed.values())


def test_bad_variable_fails_before_any_work(tmp_path):
    copy = copy_checkout(tmp_path)
    result = nox(copy, "-s", "build-cpu", MAX_JOBS="lots")
    assert result.returncode != 0
    assert abort_line(result).startswith(
        "MAX_JOBS='lots' is not a positive integer; set e.g. MAX_JOBS=2 or unset it"
    )
    assert not (copy / ".venv-cpu").exists()


def test_unreachable_torch_index_fails_in_one_line(tmp_path):
    copy = copy_checkout(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cpu"
    result = nox(copy, "-s", "build-cpu", "test-kernels-cpu", VLLM_TORCH_INDEX_URL=url)
    assert result.returncode != 0
    expected = (
        f"VLLM_TORCH_INDEX_URL={url} can't be reached ({url}/: Connection refused); "
        "fix the URL or unset it."
    )
    assert abort_line(result) == expected
    assert not (copy / ".venv-cpu").exists()


def summary(result: subprocess.CompletedProcess) -> tuple[int, int]:
    """(compiled, total) translation units from the session's summary line."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    match = re.search(
        r"built cpu in [\d.]+s: compiled (\d+)/(\d+) translation units", result.stderr
    )
    assert match, result.stderr[-3000:]
    return int(match[1]), int(match[2])


def test_build_cpu_is_incremental_and_makes_a_cpu_wheel(tmp_path):
    copy = copy_checkout(tmp_path)
    cold = nox(copy, "-s", "build-cpu", timeout=1800)
    compiled, total = summary(cold)
    assert compiled == total >= 5
    # Without a terminal: one plain progress line per translation unit, in order.
    units = re.findall(r"^\[vllm\] \[(\d+)/(\d+)\] (\S+) \([\d.]+ s\)$", cold.stdout, re.M)
    assert [(int(n), int(of)) for n, of, _ in units] == [(n, total) for n in range(1, total + 1)]
    assert {"csrc/cpu/activation.cpp", "csrc/torch_bindings.cpp"} <= {s for *_, s in units}
    assert "[vllm] configuring with cmake" in cold.stdout
    assert re.search(r"^\[vllm\] compiled \d+ file\(s\); slowest: csrc/", cold.stdout, re.M)
    build_dirs = list((copy / "build").glob("cpu-torch2.10abi-cp3*"))
    assert len(build_dirs) == 1

    # Nothing changed: nothing recompiles.
    assert summary(nox(copy, "-s", "build-cpu", timeout=600)) == (0, total)

    # One source touched: exactly that one recompiles.
    touched = time.time_ns()
    (copy / "csrc/cpu/activation.cpp").touch()
    touched_build = nox(copy, "-s", "build-cpu", timeout=600)
    assert summary(touched_build) == (1, total)
    assert re.findall(r"^\[vllm\] \[\d+/\d+\] .*$", touched_build.stdout, re.M)[0].startswith(
        "[vllm] [1/1] csrc/cpu/activation.cpp ("
    )
    assert ninja_outputs(build_dirs[0], touched) == {"CMakeFiles/_C.dir/csrc/cpu/activation.cpp.o"}

    # The by-hand wheel path, through the same backend and build directory.
    python = copy / ".venv-cpu" / "bin" / "python"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    subprocess.run(
        [
            uv,
            "build",
            "--wheel",
            "--no-build-isolation",
            "--python",
            str(python),
            "--out-dir",
            str(copy / "dist"),
        ],
        cwd=copy,
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
    )
    (wheel,) = (copy / "dist").glob("*.whl")
    assert wheel.name.startswith("vllm-0.1.0+cpu-cp39-abi3-")
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "vllm/_C.abi3.so" in names
    assert "vllm/_custom_ops.py" in names
    info = json.loads(archive.read("vllm/_build_info.json"))
    assert (info["target"], info["torch_version"], info["python_abi"]) == (
        "cpu",
        CPU_PIN,
        "abi3",
    )
    assert info["cpu_isa"] in ("avx512", "avx2", "default") and info["gpu_arch"] is None


# -- the CUDA path: checks that fail fast, and a compile-only build ----------


def path_without_gpu() -> str:
    """PATH minus any directory with nvidia-smi, so the tests see no GPU."""
    dirs = [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)]
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / "nvidia-smi").exists())


def test_build_cuda_without_arch_or_gpu(tmp_path):
    copy = copy_checkout(tmp_path)
    result = nox(copy, "-s", "build-cuda", PATH=path_without_gpu(), TORCH_CUDA_ARCH_LIST="")
    assert result.returncode != 0
    assert abort_line(result).startswith("no GPU here to take the arch from; pass one, e.g.")
    assert not (copy / ".venv-cuda").exists()


def test_build_cuda_with_a_bad_arch_lists_the_good_ones(tmp_path):
    copy = copy_checkout(tmp_path)
    result = nox(copy, "-s", "build-cuda", "--", "--arch", "hopper;ampere")
    assert abort_line(result).startswith("build-cuda builds one arch, got 2")
    result = nox(copy, "-s", "build-cuda", "--", "--arch", "volta")
    assert abort_line(result).startswith("'volta' is not a CUDA arch; use a compute capability")
    assert not (copy / ".venv-cuda").exists()


def test_build_cuda_with_an_older_nvcc_first_on_path(tmp_path):
    from test_cuda import fake_toolkit

    copy = copy_checkout(tmp_path / "copy")
    fake_toolkit(tmp_path / "cuda-12.8", version="12.8")
    path = os.pathsep.join([str(tmp_path / "cuda-12.8" / "bin"), path_without_gpu()])
    result = nox(
        copy, "-s", "build-cuda", "--", "--arch", "9.0", PATH=path, CUDA_HOME="", CUDA_PATH=""
    )
    assert abort_line(result) == (
        f"nvcc 12.8 can't build for torch {CUDA_PIN} (CUDA 13.0): install CUDA 13.x and point "
        "CUDA_HOME at it, or use a torch built for CUDA 12."
    )
    assert not (copy / ".venv-cuda").exists()


def test_kernel_tests_without_gpu_say_so_and_pass(tmp_path):
    copy = copy_checkout(tmp_path)
    result = nox(copy, "-s", "test-kernels-cuda", PATH=path_without_gpu())
    assert result.returncode == 0
    assert (
        "skipped: no GPU here (nvidia-smi and rocminfo find none): the GPU kernel tests did not run"
        in (result.stderr)
    )


@pytest.mark.nightly  # a CUDA torch and nvcc: minutes; PR CI's `nox -s ci` compiles it too
def test_build_cuda_compiles_sm90_without_a_gpu(tmp_path):
    """CI's compile-only CUDA build: sm_90 machine code and CUDA kernels registered."""
    from devkit.toolchains import cuda

    try:
        cuda.find_cuda_home()
    except Exception as exc:
        pytest.skip(f"needs the CUDA toolkit (nvcc 13): {exc}")
    copy = copy_checkout(tmp_path)
    result = nox(copy, "-s", "build-cuda", "--", "--arch", "9.0", timeout=3000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "machine code: _C.abi3.so holds sm_90 only (cuobjdump --list-elf)" in result.stdout
    num_ops = sum(len(ops) for ops in EXPECTED_OPS.values())
    assert f"smoke check: {num_ops} ops with CUDA kernels" in result.stdout
    units = re.findall(r"^\[vllm\] \[\d+/\d+\] (\S+) \(", result.stdout, re.M)
    assert {"csrc/layernorm_kernels.cu", "csrc/op_checks.cpp"} <= set(units)
    # The editable install keeps the compiled files in the build dir (presets.py).
    (info_file,) = (copy / "build").glob("cuda-*/editable/vllm/_build_info.json")
    info = json.loads(info_file.read_text())
    assert (info["target"], info["gpu_arch"], info["cuda_version"]) == ("cuda", "sm_90", "13.0")
    assert re.search(r"built cuda in [\d.]+s: compiled \d+/\d+ translation units", result.stderr)


def test_doctor_reports_the_cuda_problem_with_its_fix(tmp_path):
    copy = copy_checkout(tmp_path)
    environ = {"PATH": path_without_gpu(), "TORCH_CUDA_ARCH_LIST": ""}
    result = nox(copy, "-s", "doctor", "--", "--target", "cuda", **environ)
    assert result.returncode != 0
    assert "doctor: 1 problem(s) would stop build-cuda:" in result.stdout
    assert "  - no GPU here to take the arch from; pass one" in result.stdout
    result = nox(copy, "-s", "doctor", "--", "--target", "cpu", **environ)
    assert result.returncode == 0, result.stdout
    assert re.search(r"^  build plan +target cpu, torch .*\n +MAX_JOBS=\d+: ", result.stdout, re.M)


def test_build_rocm_without_rocm_or_with_a_bad_arch(tmp_path):
    copy = copy_checkout(tmp_path)
    environ = {"ROCM_PATH": "", "ROCM_HOME": "", "PATH": path_without_gpu()}
    if Path("/opt/rocm/bin/hipcc").is_file():
        pytest.skip("a real ROCm is installed here")
    result = nox(copy, "-s", "build-rocm", **environ)
    assert abort_line(result).startswith("no ROCm toolchain: hipcc is not on PATH")
    result = nox(copy, "-s", "build-rocm", "--", "--arch", "gfx1030", **environ)
    assert abort_line(result) == (
        "'gfx1030' is not a supported ROCm arch; supported: gfx90a, gfx942, gfx950, "
        "gfx1100, gfx1101, gfx1200, gfx1201."
    )
    assert not (copy / ".venv-rocm").exists()


def test_build_rocm_with_rocm_goes_on_to_torch(tmp_path):
    """With a toolchain and an arch, build-rocm proceeds like build-cuda (here it stops at
    an unreachable torch index, before anything is downloaded)."""
    copy = copy_checkout(tmp_path / "copy")
    (tmp_path / "rocm" / "bin").mkdir(parents=True)
    (tmp_path / "rocm" / "bin" / "hipcc").write_text("#!/bin/sh\n")
    environ = {
        "ROCM_PATH": str(tmp_path / "rocm"),
        "VLLM_TORCH_INDEX_URL": "http://127.0.0.1:9/simple",
        "PATH": path_without_gpu(),
    }
    result = nox(copy, "-s", "build-rocm", "--", "--arch", "gfx942", **environ)
    assert f"hipcc in {tmp_path / 'rocm'}; arch gfx942" in result.stdout
    assert abort_line(result).startswith("VLLM_TORCH_INDEX_URL=http://127.0.0.1:9/simple can't")
    assert not (copy / ".venv-rocm").exists()
