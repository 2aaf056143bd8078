"""ROCm arch and toolchain checks (with a fake hipcc), and the build's CMake inputs."""

from pathlib import Path

import pytest
from conftest import ROCM_HIP, ROCM_PIN, run_cmake_script

from devkit import DevkitError
from devkit.toolchains import rocm

ROOT = Path(__file__).resolve().parents[2]


def fake_rocm(root):
    (root / "bin").mkdir(parents=True)
    hipcc = root / "bin" / "hipcc"
    hipcc.write_text("#!/bin/sh\nexit 0\n")
    hipcc.chmod(0o755)
    return root


@pytest.mark.parametrize(
    ("text", "arch"), [("gfx942", "gfx942"), (" GFX90A ", "gfx90a"), ("gfx90a:xnack-", "gfx90a")]
)
def test_parse_arch(text, arch):
    assert rocm.parse_arch(text) == arch


def test_bad_or_many_archs():
    with pytest.raises(
        DevkitError, match=r"'gfx1030' is not a supported ROCm arch; supported: gfx90a"
    ):
        rocm.parse_arch("gfx1030")
    with pytest.raises(DevkitError, match="build-rocm builds one arch, got 2"):
        rocm.parse_arch("gfx942;gfx90a")


def test_toolchain_before_a_missing_arch(tmp_path):
    environ = {"PATH": str(tmp_path / "nothing")}
    if (rocm.Path("/opt/rocm/bin/hipcc")).is_file():
        pytest.skip("a real ROCm is installed at /opt/rocm")
    with pytest.raises(DevkitError, match="^no ROCm toolchain: hipcc is not on PATH"):
        rocm.find_rocm(None, environ)
    with pytest.raises(DevkitError, match="not a supported ROCm arch"):
        rocm.find_rocm("gfx1030", environ)  # a bad arch is named even without ROCm


def test_found_toolchain(tmp_path):
    home = fake_rocm(tmp_path / "rocm-6.4")
    found = rocm.find_rocm("gfx942", {"ROCM_PATH": str(home)})
    assert (found.home, found.arch) == (home, "gfx942")
    assert rocm.find_rocm("gfx950", {"PATH": str(home / "bin")}).home == home
    with pytest.raises(DevkitError, match="build-rocm needs one arch"):
        rocm.find_rocm(None, {"ROCM_PATH": str(home)})
    with pytest.raises(DevkitError, match="ROCM_PATH=/nowhere has no bin/hipcc"):
        rocm.find_rocm("gfx942", {"ROCM_PATH": "/nowhere"})


ROCMINFO = """*******
Agent 1
*******
  Name:                    AMD EPYC 9654 96-Core Processor
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx942
  Marketing Name:          AMD Instinct MI300X
  Device Type:             GPU
"""


def test_without_an_arch_the_local_gpu_decides(tmp_path):
    home = fake_rocm(tmp_path / "rocm")
    rocminfo = home / "bin" / "rocminfo"
    rocminfo.write_text(f"#!/bin/sh\ncat <<'EOF'\n{ROCMINFO}EOF\n")
    rocminfo.chmod(0o755)
    assert rocm.local_gpu_arch(home) == "gfx942"
    assert rocm.find_rocm(None, {"ROCM_PATH": str(home)}).arch == "gfx942"
    assert rocm.find_rocm("gfx90a", {"ROCM_PATH": str(home)}).arch == "gfx90a"  # --arch wins


def test_cmake_defines_name_the_hipified_tree_rocm_and_one_arch(tmp_path):
    home = fake_rocm(tmp_path / "rocm")
    found = rocm.find_rocm("gfx942", {"ROCM_PATH": str(home)})
    assert found.describe() == f"hipcc in {home}; arch gfx942"
    defines = found.cmake_defines(tmp_path / "build" / "hipified")
    assert defines == {
        "VLLM_HIPIFIED_DIR": str(tmp_path / "build" / "hipified"),
        "ROCM_PATH": str(home),
        "CMAKE_HIP_PLATFORM": "amd",
        "CMAKE_HIP_COMPILER_ROCM_ROOT": str(home),
        "CMAKE_HIP_ARCHITECTURES": "gfx942",
        "GPU_TARGETS": "gfx942",
    }  # no ROCm clang++: CMake asks hipconfig
    clang = home / "lib" / "llvm" / "bin" / "clang++"
    clang.parent.mkdir(parents=True)
    clang.write_text("")
    assert found.cmake_defines(tmp_path)["CMAKE_HIP_COMPILER"] == str(clang)


def test_hipify_refuses_to_write_into_the_sources(tmp_path):
    # Checked before torch is imported: this runs without torch.
    with pytest.raises(DevkitError, match="must be outside"):
        rocm.hipify(tmp_path, tmp_path / "hipified")
    with pytest.raises(DevkitError, match="must be outside"):
        rocm.hipify(tmp_path, tmp_path)


def test_prepare_build_hipifies_only_when_something_changed(tmp_path, monkeypatch):
    """The stamp logic, with a stand-in for torch's hipify (the real one: tests/kernels)."""
    calls = []

    def fake_hipify(source_dir, output_dir):
        calls.append(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for cu in source_dir.glob("*.cu"):
            (output_dir / f"{cu.stem}.hip").write_text(cu.read_text().replace("cuda", "hip"))
        return sorted(output_dir.iterdir())

    monkeypatch.setattr(rocm, "hipify", fake_hipify)
    source = tmp_path / "csrc"
    source.mkdir()
    (source / "a.cu").write_text("cudaStream_t s;")
    build = tmp_path / "build"
    hipified = build / "hipified"

    assert rocm.prepare_build(source, hipified) == hipified
    assert (build / "hipified" / "a.hip").read_text() == "hipStream_t s;"
    assert (build / "hipified.stamp").is_file()
    rocm.prepare_build(source, hipified)
    assert len(calls) == 1  # nothing changed: hipify (and its torch import) skipped
    (source / "a.cu").write_text("cudaEvent_t e;")
    rocm.prepare_build(source, hipified)
    assert len(calls) == 2 and (build / "hipified" / "a.hip").read_text() == "hipEvent_t e;"
    (build / "hipified" / "a.hip").unlink()  # a damaged output is made again
    rocm.prepare_build(source, hipified)
    assert len(calls) == 3 and (build / "hipified" / "a.hip").is_file()


CMAKE_SCRIPT = """
include("{utils}")
set(CMAKE_HIP_FLAGS "-O3 --offload-arch=gfx900")
vllm_hip_flags(HIP CXX "gfx942")
message(STATUS "HIP=${{HIP}}")
message(STATUS "CXX=${{CXX}}")
message(STATUS "CMAKE_HIP_FLAGS=${{CMAKE_HIP_FLAGS}}")
vllm_hipified_sources(SOURCES "{hipified}" csrc/a_kernels.cu csrc/b_kernels.cu)
message(STATUS "SOURCES=${{SOURCES}}")
"""


def test_cmake_hip_helpers(tmp_path):
    """cmake/utils.cmake's ROCm functions, run by CMake in script mode (no HIP compiler)."""
    utils = ROOT / "cmake" / "utils.cmake"
    hipified = tmp_path / "hipified"
    hipified.mkdir()
    for name in ("a_kernels.hip", "b_kernels.hip"):
        (hipified / name).write_text("")
    result = run_cmake_script(tmp_path, CMAKE_SCRIPT.format(utils=utils, hipified=hipified))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "-- HIP=-D__HIP_PLATFORM_AMD__=1;-DUSE_ROCM=1;-DHIPBLAS_V2;-DCUDA_HAS_FP16=1;" in out
    assert "-- CXX=-D__HIP_PLATFORM_AMD__=1;-DUSE_ROCM=1;-DHIPBLAS_V2\n" in out
    assert "-- CMAKE_HIP_FLAGS=-O3 \n" in out  # torch's arch flags removed
    assert f"-- SOURCES={hipified}/a_kernels.hip;{hipified}/b_kernels.hip\n" in out

    (hipified / "b_kernels.hip").unlink()
    result = run_cmake_script(tmp_path, CMAKE_SCRIPT.format(utils=utils, hipified=hipified))
    assert result.returncode != 0
    error = " ".join(result.stderr.split())  # CMake wraps its messages
    assert "b_kernels.hip is missing: hipify did not translate csrc/b_kernels.cu" in error
    bad_arch = CMAKE_SCRIPT.format(utils=utils, hipified=hipified).replace(
        '"gfx942"', '"gfx942;gfx90a"'
    )
    result = run_cmake_script(tmp_path, bad_arch)
    assert result.returncode != 0 and "must be one arch" in " ".join(result.stderr.split())


def test_backend_passes_the_rocm_build_to_cmake(tmp_path, monkeypatch):
    """backend._settings for a ROCm torch: hipify into the build dir, defines, environment."""
    from devkit.build import backend
    from devkit.foundation import layout
    from devkit.toolchains import targets

    home = fake_rocm(tmp_path / "rocm")
    for name, value in {
        "VLLM_TARGET_DEVICE": "auto",
        "PYTORCH_ROCM_ARCH": "gfx950",
        "ROCM_PATH": str(home),
        "VLLM_BUILD_DIR": str(tmp_path / "build"),
        "VLLM_COMPILER_CACHE": "off",
        "CMAKE_BUILD_PARALLEL_LEVEL": "",
    }.items():
        monkeypatch.setenv(name, value)
    rocm_torch = targets.TorchInfo(ROCM_PIN, None, ROCM_HIP)
    monkeypatch.setattr(targets, "read_torch_info", lambda: rocm_torch)
    hipified = []
    monkeypatch.setattr(rocm, "hipify", lambda src, out: hipified.append((src, out)) or [])

    built, settings = backend._settings("build_editable", {})
    build_root = tmp_path / "build" / layout.checkout_key(ROOT)  # a shared root's subdirectory
    build_dir = build_root / f"rocm-torch{ROCM_PIN}-{targets.python_tag()}"
    assert settings["build-dir"] == str(build_dir)
    assert hipified == [(ROOT / "csrc", build_dir.resolve() / "hipified")]
    define = {k.removeprefix("cmake.define."): v for k, v in settings.items()}
    assert define["VLLM_TARGET_DEVICE"] == "rocm"
    assert define["VLLM_HIPIFIED_DIR"] == str(build_dir.resolve() / "hipified")
    assert define["CMAKE_HIP_ARCHITECTURES"] == "gfx950"
    assert define["ROCM_PATH"] == str(home)
    # CMake reads the build info from the plan file (VLLM_PLAN_FILE).
    assert Path(define["VLLM_PLAN_FILE"]) == build_dir / "plan.json"
    assert (built.build_info()["gpu_arch"], built.build_info()["hip_version"]) == (
        "gfx950",
        rocm_torch.hip,
    )
    # Torch's CMake config (LoadHIP.cmake) reads these from the environment.
    assert (backend.os.environ["PYTORCH_ROCM_ARCH"], backend.os.environ["ROCM_PATH"]) == (
        "gfx950",
        str(home),
    )
    # A caller's -C build-dir (test-plugins' venvs) gets the hipified tree too.
    _, settings = backend._settings("build_editable", {"build-dir": str(tmp_path / "other")})
    assert settings["cmake.define.VLLM_HIPIFIED_DIR"] == str(tmp_path / "other" / "hipified")
