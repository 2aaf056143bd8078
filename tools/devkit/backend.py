"""The PEP 517 build backend: scikit-build-core, told what devkit decides.

pyproject.toml names this module (backend-path = ["tools"]), so
`uv pip install --no-build-isolation -e .` and `uv build` go through it, with
or without nox. Before handing over to scikit-build-core it settles:

- the target (VLLM_TARGET_DEVICE; auto follows the installed torch flavour),
- a persistent build directory per target, torch and Python,
  build/<target>-torch<version>-<python tag>, so reruns are incremental,
- the compile job count (MAX_JOBS, else devkit.resources),
- the compiler cache launcher, and the CMake definitions that carry these.

Config settings given on the command line (-C build-dir=...) still win.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scikit_build_core import build as _skbuild

from devkit import DevkitError, cuda, envs, precompiled, resources, rocm, targets, toolchain
from devkit.envs import ROOT

_Settings = dict[str, Any] | None


def _git_commit() -> str:
    """The checkout's commit, with -dirty for uncommitted changes; "" outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40", "--match=NONE"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _say(message: str) -> None:
    print(f"[vllm build] {message}", file=sys.stderr, flush=True)


def _torch_and_target(why: str, session: str) -> tuple[targets.TorchInfo, str]:
    """The venv's torch, and the target: VLLM_TARGET_DEVICE, or torch's flavour for auto.

    Checks every variable first. The resolved name is exported: the version
    and dependency providers (devkit.metadata) read it.
    """
    envs.check_all()
    info = targets.read_torch_info()
    if info is None:
        raise DevkitError(
            f"torch is not importable by {sys.executable} and {why}; install the target's "
            f"torch first (nox -s {session} does it) and use --no-build-isolation"
        )
    name = targets.resolve_target_name(envs.get("VLLM_TARGET_DEVICE"), info)
    os.environ["VLLM_TARGET_DEVICE"] = name
    return info, name


def _settings(config_settings: _Settings) -> dict[str, Any]:
    """Our config settings, under those the caller gave."""
    info, name = _torch_and_target("the extension is compiled against it", "build-cpu")
    target = targets.get_target(name)

    plan = resources.plan_for_this_machine(target)
    os.environ["CMAKE_BUILD_PARALLEL_LEVEL"] = str(plan.jobs)
    launcher = toolchain.compiler_launcher()
    if launcher and Path(launcher).name == "ccache":
        # Paths relative to the checkout: clones and worktrees share hits.
        os.environ.setdefault("CCACHE_BASEDIR", str(ROOT))
    # The caller's -C build-dir wins (see the end), so the hipified sources go there too.
    given = (config_settings or {}).get("build-dir")
    build_dir = ROOT / given if given else targets.build_dir(name, info.version)
    _say(f"target {name}, torch {info.version}, build dir {build_dir}")
    _say(plan.reason)
    _say(f"compiler cache: {launcher or 'none'}")
    defines, gpu_arch = {}, ""
    if target.cuda_version:
        cuda_toolchain = cuda.resolve_toolchain(
            envs.get("TORCH_CUDA_ARCH_LIST"),
            "TORCH_CUDA_ARCH_LIST",
            info.cuda or "none",
            info.version,
        )
        _say(cuda_toolchain.describe())
        if cuda_toolchain.warning:
            _say(cuda_toolchain.warning)
        defines = cuda_toolchain.cmake_defines(plan.nvcc_threads or 1)
        # Torch's CMake config reads both; a plain X.Y keeps its arch parser
        # from guessing (or emitting compute_50); the flags it derives are
        # replaced by VLLM_CUDA_GENCODE anyway.
        arch = cuda_toolchain.arch
        gpu_arch = f"sm_{arch.number}" + ("+PTX" if arch.ptx else "")
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{arch.major}.{arch.minor}"
        os.environ["CUDA_HOME"] = str(cuda_toolchain.home)
    elif target.hip_version:
        rocm_toolchain = rocm.find_rocm(envs.get("PYTORCH_ROCM_ARCH"))
        _say(rocm_toolchain.describe())
        # csrc/ hipified into <build dir>/hipified; the defines name it, ROCm and
        # the arch (VLLM_BUILD_INFO_GPU_ARCH too, over the empty one below).
        defines = rocm.prepare_build(rocm_toolchain, ROOT / "csrc", build_dir)
        # Torch's CMake config (LoadHIP.cmake) reads both from the environment.
        os.environ["PYTORCH_ROCM_ARCH"] = rocm_toolchain.arch
        os.environ["ROCM_PATH"] = str(rocm_toolchain.home)

    ours: dict[str, Any] = {
        "build-dir": str(build_dir),
        "cmake.build-type": envs.get("CMAKE_BUILD_TYPE"),
        "cmake.define.VLLM_TARGET_DEVICE": name,
        "cmake.define.VLLM_COMPILER_LAUNCHER": launcher or "",
        "cmake.define.VLLM_CPU_ISA": envs.get("VLLM_CPU_ISA"),
        "cmake.define.Python_EXECUTABLE": sys.executable,
        # Recorded in vllm/_build_info.json (cmake/utils.cmake).
        "cmake.define.VLLM_BUILD_INFO_TORCH_VERSION": info.version,
        "cmake.define.VLLM_BUILD_INFO_TORCH_GIT_VERSION": info.git_version or "",
        "cmake.define.VLLM_BUILD_INFO_CUDA_VERSION": info.cuda or "",
        "cmake.define.VLLM_BUILD_INFO_HIP_VERSION": info.hip or "",
        "cmake.define.VLLM_BUILD_INFO_GPU_ARCH": gpu_arch,
        "cmake.define.VLLM_BUILD_INFO_GIT_COMMIT": _git_commit(),
        **{f"cmake.define.{key}": value for key, value in defines.items()},
    }
    return {**ours, **(config_settings or {})}


def _precompiled_settings(hook: str, config_settings: _Settings) -> dict[str, Any]:
    """VLLM_USE_PRECOMPILED: no CMake; the binaries of a prebuilt wheel instead.

    devkit.precompiled finds, checks and stages them under the build root; the
    editable install points at the staged files (wheel.force-include).
    """
    if hook in ("build_wheel", "prepare_metadata_for_build_wheel"):
        raise DevkitError(
            "VLLM_USE_PRECOMPILED=1 is for editable installs (`uv pip install "
            "--no-build-isolation -e .`); a wheel is built from source (nox -s wheel)"
        )
    info, name = _torch_and_target("the binaries are checked against it", "dev-precompiled")
    # platlib: the staged binaries make it a platform wheel, as a built one is.
    ours: dict[str, Any] = {"wheel.cmake": "false", "wheel.platlib": "true"}
    if hook == "build_editable":
        staging_root = targets.build_root() / "precompiled"
        files = precompiled.install(targets.get_target(name), info, staging_root)
        # A dict setting's keys follow its name: wheel.force-include.<source> = <dest>.
        ours.update({f"wheel.force-include.{src}": dest for dest, src in files.items()})
        _say(f"no compiler: took {', '.join(files)} from a prebuilt wheel")
    return {**ours, **(config_settings or {})}


def _run(hook: str, *args: Any, config_settings: _Settings = None, **kwargs: Any) -> Any:
    try:
        if envs.get("VLLM_USE_PRECOMPILED"):
            settings = _precompiled_settings(hook, config_settings)
        else:
            settings = _settings(config_settings)
    except DevkitError as exc:
        # One line, no traceback: the frontend shows this output on failure.
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return getattr(_skbuild, hook)(*args, config_settings=settings, **kwargs)


def build_wheel(wheel_directory, config_settings: _Settings = None, metadata_directory=None):
    return _run(
        "build_wheel",
        wheel_directory,
        config_settings=config_settings,
        metadata_directory=metadata_directory,
    )


def build_editable(wheel_directory, config_settings: _Settings = None, metadata_directory=None):
    return _run(
        "build_editable",
        wheel_directory,
        config_settings=config_settings,
        metadata_directory=metadata_directory,
    )


def build_sdist(sdist_directory, config_settings: _Settings = None):
    return _skbuild.build_sdist(sdist_directory, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings: _Settings = None):
    return _run(
        "prepare_metadata_for_build_wheel", metadata_directory, config_settings=config_settings
    )


def prepare_metadata_for_build_editable(metadata_directory, config_settings: _Settings = None):
    return _run(
        "prepare_metadata_for_build_editable", metadata_directory, config_settings=config_settings
    )


# With --no-build-isolation nothing is installed for these; they stay honest
# for isolated builds (which can't see the target's torch and fail clearly).
get_requires_for_build_wheel = _skbuild.get_requires_for_build_wheel
get_requires_for_build_editable = _skbuild.get_requires_for_build_editable
get_requires_for_build_sdist = _skbuild.get_requires_for_build_sdist
