"""What a prebuilt wheel was built for, and whether its binaries run here.

A wheel made by `nox -s wheel` records its build in vllm/_build_info.json:
target, torch (and its ABI), CUDA or HIP, CPU ISA, GPU arch, Python ABI,
commit. `check_compat` names every way that doesn't fit a venv and machine,
each with its fix; `source_drift` warns when csrc/ moved on since its commit.
Standard library only (the build backend checks before it stages).
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from devkit import DevkitError
from devkit.foundation import gitbase, machine
from devkit.foundation.envs import ROOT
from devkit.toolchains import cpuisa, cuda, targets

BUILD_INFO = "vllm/_build_info.json"


# Directories of the checkout whose changes the binaries would miss.
_COMPILED_SOURCES = ("csrc", "cmake", "CMakeLists.txt")


def _check_entries(wheel_name: str, names: list[str]) -> None:
    """Refuses a wheel with an entry that would land outside its root (zip-slip)."""
    for name in names:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise DevkitError(
                f"{wheel_name} has an entry that escapes the package ({name!r}): "
                "refusing the whole wheel; republish it from a clean build"
            )


def read_build_info(path: Path) -> dict[str, Any]:
    """The wheel's vllm/_build_info.json, after checking every entry name.

    The CRCs of what is used are checked as it is read (here, and in stage).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            _check_entries(path.name, zf.namelist())
            raw = zf.read(BUILD_INFO)
    except zipfile.BadZipFile:
        raise DevkitError(
            f"{path.name} is not a valid wheel (a corrupt zip); delete it and fetch it again, "
            "or republish it"
        ) from None
    except KeyError:
        raise DevkitError(
            f"{path.name} has no {BUILD_INFO}, so it can't be checked against this venv; "
            "use a wheel built by `nox -s wheel`"
        ) from None
    try:
        info = json.loads(raw)
    except ValueError:
        raise DevkitError(f"{path.name}: {BUILD_INFO} is not JSON; republish it") from None
    if not isinstance(info, dict):
        raise DevkitError(
            f"{path.name}: {BUILD_INFO} is {type(info).__name__}, not an object; republish it"
        )
    return info


def _major_minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def _major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def check_compat(
    info: Mapping[str, Any],
    target: targets.Target,
    torch: targets.TorchInfo,
    cpu: set[str] | None,
    python: tuple[int, int] = sys.version_info[:2],
    gpu: cuda.CudaArch | None = None,
) -> list[str]:
    """Every way the wheel's binaries don't fit this venv and machine, each with its fix.

    `cpu`: this CPU's feature flags; `gpu`: the local NVIDIA GPU's arch. None
    for either means unknown (no GPU: nothing to check the kernels against).
    """
    problems = []
    if info.get("target") != target.name:
        problems.append(
            f"built for target {info.get('target')}, not {target.name}: "
            f"take a {target.version_suffix} wheel"
        )
    problems += _torch_problems(info, torch)
    problems += _machine_problems(info, target, cpu, gpu)
    abi = info.get("python_abi")
    here = "cp{}{}".format(*python)
    if abi != "abi3" and abi != here:
        problems.append(f"built for Python ABI {abi}, this venv is {here}: take an abi3 wheel")
    return problems


def _torch_problems(info: Mapping[str, Any], torch: targets.TorchInfo) -> list[str]:
    """The venv's torch against the one the binaries were built for (and its CUDA, HIP)."""
    problems = []
    built = info.get("torch_version")
    floor = info.get("torch_floor") if info.get("torch_abi") == "stable" else None
    if floor:
        # The stable ABI: any torch from the floor on (same target and CUDA major).
        if targets.release(torch.version) < targets.release(floor):
            problems.append(
                f"built on torch's stable ABI for torch>={floor} (against {built}), the venv "
                f"has torch {torch.version}: install torch>={floor}"
            )
    elif built != torch.version:
        problems.append(
            f"built against torch {built}, the venv has torch {torch.version}: install "
            f"torch=={built}, or take a wheel built against {torch.version}"
        )
    for field, have, name in (
        ("cuda_version", torch.cuda, "CUDA"),
        ("hip_version", torch.hip, "HIP"),
    ):
        if not info.get(field):
            continue
        # On the stable ABI only the CUDA major binds (its runtime's ABI).
        major_only = floor and field == "cuda_version"
        binding = _major if major_only else _major_minor
        need = binding(info[field])
        if need != binding(have):
            shown = f"{need} ({info[field]})" if major_only else info[field]
            problems.append(
                f"built for {name} {shown}, the venv's torch has {name} {have}: "
                f"install a torch for {name} {need}"
            )
    return problems


def _machine_problems(
    info: Mapping[str, Any],
    target: targets.Target,
    cpu: set[str] | None,
    gpu: cuda.CudaArch | None,
) -> list[str]:
    """This CPU against the binaries' ISA, this GPU against their arch (None: unknown)."""
    problems = []
    isa = info.get("cpu_isa")
    if isa:
        needed = cpuisa.CPU_FLAGS.get(isa)
        if needed is None:
            problems.append(
                f"built for an unknown CPU ISA {isa!r}: take a wheel built by this repo"
            )
        elif cpu is not None and not set(needed) <= cpu:
            lacking = ", ".join(sorted(set(needed) - cpu))
            problems.append(
                f"built for {isa}, which this CPU lacks ({lacking}): take a wheel built with "
                f"VLLM_CPU_ISA=avx2 or default, or build it here (nox -s build-{target.name})"
            )
    built_arch = info.get("gpu_arch") or ""
    if gpu is not None and cuda.runs_on(built_arch, gpu) is False:
        problems.append(
            f"built for {built_arch}, which this GPU (compute capability {gpu}) can't run: take "
            f"a wheel built for it, or build it here (nox -s build-{target.name} -- --arch {gpu})"
        )
    return problems


def problems_here(
    info: Mapping[str, Any],
    target: targets.Target,
    torch: targets.TorchInfo,
    cpu: set[str] | None = None,
) -> list[str]:
    """check_compat against this machine's CPU (or `cpu`'s flags) and its NVIDIA GPU."""
    gpu = cuda.local_gpu_arch() if str(info.get("gpu_arch")).startswith("sm_") else None
    return check_compat(
        info, target, torch, cpu if cpu is not None else machine.cpu_flags(), gpu=gpu
    )


def ensure_fits(
    info: Mapping[str, Any],
    target: targets.Target,
    torch: targets.TorchInfo,
    wheel_name: str,
    cpu: set[str] | None = None,
) -> None:
    """problems_here, as one line listing every problem, if any."""
    problems = problems_here(info, target, torch, cpu)
    if problems:
        numbered = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise DevkitError(f"{wheel_name} does not fit this venv: {numbered}")


def source_drift(info: Mapping[str, Any], root: Path = ROOT) -> str | None:
    """A warning when the checkout's compiled sources differ from the wheel's commit."""
    recorded = info.get("git_commit") or ""
    commit = recorded.removesuffix("-dirty")
    if not commit:
        return "the wheel records no commit: can't tell whether csrc/ matches its binaries"
    dirty = " (built with uncommitted changes)" if recorded.endswith("-dirty") else ""
    out = gitbase.git("diff", "--quiet", commit, "--", *_COMPILED_SOURCES, root=root)
    if out.returncode == 0:
        if dirty:
            return f"the wheel was built from {commit[:12]}{dirty}: it may not match that csrc/"
        return None
    if out.returncode == 1:
        return (
            f"csrc/ has changed since {commit[:12]}, the wheel's commit{dirty}: those changes are "
            f"not in the precompiled binaries; build them with nox -s build-{info.get('target')}"
        )
    return (
        f"the wheel's commit {commit[:12]} is not in this clone: can't tell whether csrc/ changed"
    )
