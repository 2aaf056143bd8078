"""The build plan: one resolve for the session, the backend and doctor; the backend
applies a session's plan.json as it is."""

import json
import os
import re
from pathlib import Path

import pytest
from conftest import CPU_PIN, CUDA_PIN
from test_cuda import fake_toolkit

from devkit import DevkitError
from devkit.build import backend, pipeline
from devkit.foundation import gitbase
from devkit.toolchains import plan, targets, uv
from devkit.toolchains.options import Options
from devkit.toolchains.targets import TorchInfo

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
    assert defines["VLLM_PLAN_FILE"] == str(found.build_dir / "plan.json")
    info = found.build_info()
    assert (info["torch_version"], info["torch_abi"], info["torch_floor"]) == (
        CPU_TORCH.version,
        "stable",
        "2.10",
    )
    # The commit is the plan's (read once, where it is resolved), not the backend's.
    assert info["git_commit"] == found.git_commit == gitbase.commit() != ""
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
    relative = targets.ROOT / "tools" / "devkit" / "build" / "nvcc_relative.py"
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
    info = json.loads(path.read_text())["build_info"]  # what CMake records
    assert (info["gpu_arch"], info["cuda_version"], info["cuda_major"]) == (
        "sm_90a+PTX",
        "13.0",
        13,
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
    with pytest.raises(
        DevkitError, match=rf"is for torch {re.escape(CPU_PIN)}, but .* has 2.12.0\+cpu"
    ):
        backend._settings("build_editable", {plan.CONFIG_KEY: str(found.write())})


def test_preflight_runs_the_toolchain_once_and_resolve_reuses_it(tmp_path):
    """The session checks before any download, then resolves once: nvcc is not asked again,
    and the variables are not validated again."""
    environ = cuda_environ(tmp_path)
    request = plan.Request("cuda", arch="9.0")
    checked = plan.preflight(request, plan.expected_torch(targets.get_target("cuda")), environ)
    assert checked.toolchain_lines()[0].startswith("nvcc 13.0")
    (tmp_path / "cuda" / "bin" / "nvcc").unlink()  # a second toolchain lookup would fail
    environ["UV_HTTP_TIMEOUT"] = "soon"  # and so would a second validation of every variable
    found = plan.resolve(request, CUDA_TORCH, environ, checked=checked)
    assert found.cuda == checked.cuda and found.gpu_arch == "sm_90"
    with pytest.raises(DevkitError, match="UV_HTTP_TIMEOUT"):
        plan.resolve(request, CUDA_TORCH, environ)  # without the check, it runs here


def cpu_plan(build_dir: Path, **environ: str) -> plan.BuildPlan:
    found = plan.resolve(plan.Request("cpu"), CPU_TORCH, {"VLLM_COMPILER_CACHE": "off", **environ})
    return plan.BuildPlan(**{**found.__dict__, "build_dir": build_dir})


def stamp(path: Path) -> tuple[int, int, bytes]:
    """What changes when a file is written again (an atomic write makes a new inode)."""
    return path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()


def test_the_backend_applies_the_plan_without_resolving_reading_variables_or_writing(
    tmp_path, monkeypatch
):
    """The contract: the session's plan.json is the build. The backend's environment may
    hold variables the session never saw (here: values resolve refuses); it neither
    validates nor follows them, and leaves the file as the session wrote it."""
    monkeypatch.setattr(targets, "read_torch_info", lambda: CPU_TORCH)
    found = cpu_plan(tmp_path / "build", MAX_JOBS="1", CMAKE_BUILD_TYPE="RelWithDebInfo")
    path = found.write()
    before = stamp(path)
    for name, value in {
        "MAX_JOBS": "lots",  # resolve: "MAX_JOBS=lots is not ..."
        "VLLM_CPU_ISA": "sse",
        "CMAKE_BUILD_TYPE": "Debug",
        "CMAKE_ARGS": "-DX='a",  # resolve: "can't be split into arguments"
        "VLLM_USE_PRECOMPILED": "1",
        "CMAKE_BUILD_PARALLEL_LEVEL": "",
    }.items():
        monkeypatch.setenv(name, value)
    for hook in ("prepare_metadata_for_build_editable", "build_editable"):
        applied, settings = backend._settings(hook, {plan.CONFIG_KEY: str(path)})
        assert applied == found
        assert settings["cmake.build-type"] == "RelWithDebInfo"
        assert settings["cmake.define.VLLM_CPU_ISA"] == "auto"
        assert settings["cmake.define.VLLM_PLAN_FILE"] == str(path)
        assert backend.os.environ["CMAKE_BUILD_PARALLEL_LEVEL"] == "1"
    assert stamp(path) == before  # loaded, not written
    # By hand the same environment is resolved, and its first bad variable is the one line.
    with pytest.raises(DevkitError, match="^VLLM_CPU_ISA='sse' is not one of"):
        backend._settings("build_editable", {})


def test_a_missing_or_stale_plan_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    missing = tmp_path / "build" / "plan.json"
    with pytest.raises(DevkitError, match=f"can't read the build plan {missing} .*; rerun the "):
        backend._settings("build_editable", {plan.CONFIG_KEY: str(missing)})
    path = cpu_plan(tmp_path / "build").write()
    monkeypatch.setattr(targets, "read_torch_info", lambda: TorchInfo(CUDA_PIN, "13.0", None))
    with pytest.raises(
        DevkitError, match=rf"^the build plan .* is for torch .* has {CUDA_PIN}; rerun"
    ):
        backend._settings("build_editable", {plan.CONFIG_KEY: str(path)})


def test_a_session_build_writes_the_plan_once(tmp_path, monkeypatch):
    """The trace, session to CMake: the session writes plan.json once (backend_env), the
    backend's hooks load it, and CMake is handed that file, unchanged."""
    monkeypatch.setattr(targets, "read_torch_info", lambda: CPU_TORCH)
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    found = cpu_plan(tmp_path / "build")
    setup = pipeline.Setup(
        targets.get_target("cpu"), tmp_path, Path(found.python), CPU_TORCH, [], Options(), found
    )
    assert not found.plan_file.exists()
    environ, settings = pipeline.backend_env(setup)  # the session's one write
    written = stamp(found.plan_file)
    assert settings == ["-C", f"{plan.CONFIG_KEY}={found.plan_file}"]
    assert environ == found.compile_environ(uv.uv_env())  # the one derivation
    monkeypatch.setattr(os, "environ", dict(environ))  # the backend runs in it
    config = dict([settings[1].split("=", 1)])
    for hook in ("prepare_metadata_for_build_editable", "build_editable"):
        _, ours = backend._settings(hook, config)
        assert ours["cmake.define.VLLM_PLAN_FILE"] == str(found.plan_file)
    assert stamp(found.plan_file) == written


def test_by_hand_only_the_build_hooks_write_the_plan_and_under_the_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    found = cpu_plan(tmp_path / "build")
    with backend._by_hand_build("prepare_metadata_for_build_editable", found, {}):
        pass  # the metadata hook needs the plan, not its file
    with backend._by_hand_build("build_editable", found, {plan.CONFIG_KEY: "given"}):
        pass  # a session's build: the session wrote it
    assert not found.plan_file.exists()
    with backend._by_hand_build("build_editable", found, {}):
        assert plan.load(found.plan_file) == found
        assert (found.build_dir / "build.lock").is_file()
