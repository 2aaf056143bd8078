"""The build plan: one resolve for the session, the backend and doctor."""

import json
import re

import pytest
from conftest import CPU_PIN, CUDA_PIN
from test_cuda import fake_toolkit

from devkit import DevkitError, backend, plan, targets
from devkit.targets import TorchInfo

CPU_TORCH = TorchInfo(CPU_PIN, None, None, "abc")
CUDA_TORCH = TorchInfo(f"{CUDA_PIN}+cu130", "13.0", None, "def")


def cuda_environ(tmp_path) -> dict[str, str]:
    fake_toolkit(tmp_path / "cuda")
    return {"CUDA_HOME": str(tmp_path / "cuda"), "PATH": "", "VLLM_COMPILER_CACHE": "off"}


def test_cpu_plan_names_build_dir_jobs_and_defines():
    found = plan.resolve(plan.Request("cpu"), CPU_TORCH, {"MAX_JOBS": "3"})
    assert found.build_dir == targets.build_dir("cpu", CPU_PIN)
    assert found.jobs.jobs == 3 and found.jobs.reason.startswith("MAX_JOBS=3: set by you")
    assert found.cuda is None and found.gpu_arch == ""
    defines = found.cmake_defines()
    assert defines["VLLM_TARGET_DEVICE"] == "cpu"
    assert defines["VLLM_BUILD_INFO_TORCH_VERSION"] == CPU_PIN
    assert found.build_environ()["CMAKE_BUILD_PARALLEL_LEVEL"] == "3"


def test_a_venv_of_its_own_gets_a_build_dir_of_its_own():
    own = plan.resolve(plan.Request("cpu", venv_name="plugins"), CPU_TORCH, {})
    assert own.build_dir.name.endswith("-plugins")
    given = plan.resolve(plan.Request("cpu", build_dir="elsewhere"), CPU_TORCH, {})
    assert given.build_dir == targets.ROOT / "elsewhere"
    # Presets are named after it; the plan file keeps the name.
    assert (own.name, given.name) == ("cpu-plugins", "cpu")
    assert plan.BuildPlan.from_json(own.to_json()).name == "cpu-plugins"
    assert own.install_dir == own.build_dir / "editable"


def test_cuda_plan_resolves_the_toolchain_once(tmp_path):
    environ = cuda_environ(tmp_path)
    found = plan.resolve(plan.Request("cuda", arch="hopper"), CUDA_TORCH, environ)
    assert str(found.cuda.arch) == "9.0" and found.cuda.arch_source == "--arch"
    assert found.gpu_arch == "sm_90"
    assert found.cmake_defines()["VLLM_CUDA_GENCODE"] == "-gencode=arch=compute_90,code=sm_90"
    assert found.build_environ()["TORCH_CUDA_ARCH_LIST"] == "9.0"
    # Without --arch: the target's variable.
    environ["TORCH_CUDA_ARCH_LIST"] = "8.0+PTX"
    found = plan.resolve(plan.Request("cuda"), CUDA_TORCH, environ)
    assert found.gpu_arch == "sm_80+PTX" and found.cuda.arch_source == "TORCH_CUDA_ARCH_LIST"


def test_nvcc_goes_through_nvcc_relative_with_sccache_only(tmp_path):
    (tmp_path / "bin").mkdir()
    for tool in ("ccache", "sccache"):
        (tmp_path / "bin" / tool).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / tool).chmod(0o755)
    request = plan.Request("cuda", arch="9.0", bin_dir=str(tmp_path / "bin"))
    environ = {**cuda_environ(tmp_path), "VLLM_COMPILER_CACHE": "sccache"}
    defines = plan.resolve(request, CUDA_TORCH, environ).cmake_defines()
    relative = targets.ROOT / "tools" / "devkit" / "nvcc_relative.py"
    assert defines["VLLM_CUDA_COMPILER_LAUNCHER"] == f"{relative};{tmp_path / 'bin' / 'sccache'}"
    environ["VLLM_COMPILER_CACHE"] = "ccache"  # CCACHE_BASEDIR covers a whole nvcc compile
    assert (
        plan.resolve(request, CUDA_TORCH, environ).cmake_defines()["VLLM_CUDA_COMPILER_LAUNCHER"]
        == ""
    )


def test_gpu_target_with_a_cpu_torch_is_one_line(tmp_path):
    environ = {**cuda_environ(tmp_path), "TORCH_CUDA_ARCH_LIST": "9.0"}
    with pytest.raises(DevkitError, match="the cuda target needs torch built for it, but torch "):
        plan.resolve(plan.Request("cuda"), CPU_TORCH, environ)


def test_precompiled_plan_needs_no_toolchain():
    found = plan.resolve(plan.Request("cuda", precompiled=True), CUDA_TORCH, {"PATH": ""})
    assert found.precompiled and found.cuda is None and found.jobs.jobs == 0
    assert found.describe()[-1] == "binaries from a prebuilt wheel: no compiler runs"


def test_plan_json_round_trips(tmp_path):
    environ = {**cuda_environ(tmp_path), "VLLM_BUILD_DIR": str(tmp_path / "b")}
    found = plan.resolve(plan.Request("cuda", arch="9.0a+PTX"), CUDA_TORCH, environ)
    found = plan.BuildPlan(**{**found.__dict__, "build_dir": tmp_path / "b" / "x"})
    path = found.write()
    assert path == tmp_path / "b" / "x" / "plan.json"
    assert plan.load(path) == found
    assert json.loads(path.read_text())["cmake_defines"]["VLLM_BUILD_INFO_GPU_ARCH"] == (
        "sm_90a+PTX"
    )


def test_unreadable_plan_is_one_line(tmp_path):
    (tmp_path / "plan.json").write_text("{")
    with pytest.raises(DevkitError, match="can't read the build plan .*; rerun the session"):
        plan.load(tmp_path / "plan.json")


def test_backend_follows_the_sessions_plan_over_the_environment(tmp_path, monkeypatch):
    """A stale VLLM_USE_PRECOMPILED (or MAX_JOBS) in the shell can't change a session's build."""
    monkeypatch.setattr(targets, "read_torch_info", lambda: CPU_TORCH)
    found = plan.resolve(plan.Request("cpu"), CPU_TORCH, {"MAX_JOBS": "1"})
    found = plan.BuildPlan(**{**found.__dict__, "build_dir": tmp_path / "build"})
    monkeypatch.setenv("VLLM_USE_PRECOMPILED", "1")
    monkeypatch.setenv("MAX_JOBS", "7")
    monkeypatch.setenv("CMAKE_BUILD_PARALLEL_LEVEL", "")
    _, settings = backend._settings("build_editable", {plan.CONFIG_KEY: str(found.write())})
    assert settings["build-dir"] == str(tmp_path / "build")
    assert "wheel.cmake" not in settings  # it compiles
    assert settings["cmake.define.VLLM_TARGET_DEVICE"] == "cpu"
    assert backend.os.environ["CMAKE_BUILD_PARALLEL_LEVEL"] == "1"
    assert plan.CONFIG_KEY not in settings  # scikit-build-core never sees our key
    # The editable install's compiled files go to a tree the cmake presets install into.
    assert settings["editable.rebuild-dir"] == str(tmp_path / "build" / "editable")
    assert settings["cmake.define.CMAKE_EXPORT_COMPILE_COMMANDS"] == "ON"


def test_backend_refuses_a_plan_for_another_torch(tmp_path, monkeypatch):
    found = plan.resolve(plan.Request("cpu"), CPU_TORCH, {})
    found = plan.BuildPlan(**{**found.__dict__, "build_dir": tmp_path})
    other = TorchInfo("2.12.0+cpu", None, None)
    monkeypatch.setattr(targets, "read_torch_info", lambda: other)
    pin = re.escape(CPU_PIN)
    with pytest.raises(DevkitError, match=rf"is for torch {pin}, but .* has 2.12.0\+cpu"):
        backend._settings("build_editable", {plan.CONFIG_KEY: str(found.write())})
