"""The binary key: what a build's binaries are a function of, as one digest.

Two checkouts whose compiled inputs are equal get the same binaries, whatever
their commit, branch, directory or file times; so binaries are stored
(devkit.artifacts.binstore) and published (devkit.artifacts.wheelindex) under this key, and
found by it.

    compiled inputs -> Key.digest   what a lookup matches (no compiler needed)
    + the compiler  -> Key.build_id names one build of those inputs

The compiled inputs are: the content of every file the build reads (csrc/,
cmake/, CMakeLists.txt, and the devkit modules and scripts the backend runs:
BUILD_MODULES and BUILD_SCRIPTS below, the one list, which ci.py uses too),
the build requirements (requirements/build.txt, the target's torch pin, the
build tables of pyproject.toml), the target, the machine's architecture and
the CPU ISA or GPU arch the kernels are compiled for, the build type, and
torch's identity (flavour, CUDA major, and the stable-ABI floor or the exact
version: see `torch_identity`).

A build knows its compiler (it is about to run it), so its key names it; a
checkout that only takes prebuilt binaries has no compiler to ask (and needs
none), so its lookup matches the compiled inputs and takes a build of them by
any compiler. `nox -s doctor` prints the key and each input's digest.

Standard library only: the pipeline computes it before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from devkit import DevkitError
from devkit.foundation import envs, gitbase, machine, procs
from devkit.foundation.envs import ROOT
from devkit.toolchains import cpuisa, targets

# The devkit modules the build backend imports (directly or not), and the
# scripts the build runs: a change to one of them can change the binary. A unit
# test (test_ci.py) keeps this in step with backend.py's imports and the plan's
# CMake defines.
BUILD_MODULES = frozenset(
    f"tools/devkit/{name}.py"
    for name in (
        "__init__",
        "artifacts/__init__",
        "artifacts/precompiled",
        "artifacts/wheelcheck",
        "artifacts/wheelindex",
        "build/__init__",
        "build/backend",
        "build/cmakecache",
        "build/metadata",
        "build/presets",
        "foundation/__init__",
        "foundation/envs",
        "foundation/files",
        "foundation/gitbase",
        "foundation/layout",
        "foundation/locations",
        "foundation/lock",
        "foundation/log",
        "foundation/machine",
        "foundation/procs",
        "toolchains/__init__",
        "toolchains/cache_server",
        "toolchains/compiler_cache",
        "toolchains/cpuisa",
        "toolchains/cuda",
        "toolchains/dist",
        "toolchains/optable",
        "toolchains/plan",
        "toolchains/resources",
        "toolchains/rocm",
        "toolchains/targets",
        "toolchains/toolchain",
    )
)
BUILD_SCRIPTS = frozenset({"tools/devkit/build/nvcc_relative.py"})  # nvcc's launcher under sccache
# Directories and files whose every file the build reads.
SOURCE_DIRS = ("csrc", "cmake")
SOURCE_FILES = ("CMakeLists.txt",)
# The tables of pyproject.toml that steer the build (not [tool.vllm.precompiled],
# nor the linters').
PYPROJECT_TABLES = (("build-system",), ("tool", "scikit-build"))


def torch_identity(target: targets.Target, torch: targets.TorchInfo) -> dict[str, str]:
    """What of torch the binaries depend on: its flavour, CUDA major and version.

    The one place that says so. A target on the LibTorch stable ABI builds one
    binary for every torch from its floor on, so its "version" is the floor
    (2.10abi) and its flavour the target's: a torch bump keeps the key, as it
    keeps the build directory; a full-ABI target (ROCm) names the exact torch.
    """
    cuda_major = (torch.cuda or "").split(".")[0]
    if not target.torch_floor:
        return {"flavour": torch.flavour, "cuda_major": cuda_major, "version": torch.version}
    # A CPU binary on the stable ABI needs no CUDA, whichever torch built it.
    cuda_major = cuda_major if target.cuda_version else ""
    return {"flavour": target.name, "cuda_major": cuda_major, "version": f"{target.torch_floor}abi"}


def compiler_identity(cxx: str | None = None, nvcc: str | None = None) -> str:
    """The C++ compiler's (and nvcc's) first `--version` line, e.g. "g++ (Debian 12.2.0)".

    Runs the compiler: for builds only, which run it anyway.
    """
    found = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    parts = [_first_line(found, "C++ compiler")]
    if nvcc:
        parts.append(_first_line(nvcc, "nvcc", last=True))
    return "; ".join(parts)


def _first_line(tool: str | None, what: str, last: bool = False) -> str:
    if not tool:
        raise DevkitError(f"no {what} found (CXX, c++, g++); install one, e.g. apt install g++")
    out = procs.probe([tool, "--version"])
    if out is None:
        raise DevkitError(f"{tool} --version can't start or doesn't answer; check the {what}")
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not lines:
        raise DevkitError(f"{tool} --version exited {out.returncode}; check the {what}")
    return lines[-1] if last else lines[0]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_files(root: Path = ROOT) -> list[str]:
    """The files the build reads, as sorted POSIX paths relative to `root`.

    Git's view where there is one (tracked, and untracked but not ignored);
    otherwise every file under the directories.
    """
    wanted = [*SOURCE_DIRS, *SOURCE_FILES, *sorted(BUILD_MODULES | BUILD_SCRIPTS)]
    out = gitbase.git(
        "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *wanted, root=root
    )
    if out.returncode == 0:
        names = {name for name in out.stdout.split("\0") if name}
    else:  # not a git checkout (an sdist, a copy)
        names = set()
        for name in wanted:
            path = root / name
            if path.is_dir():
                names |= {
                    p.relative_to(root).as_posix()
                    for p in path.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                }
            elif path.is_file():
                names.add(name)
    return sorted(n for n in names if (root / n).is_file())  # not a deleted tracked file


def files_digest(root: Path = ROOT) -> tuple[str, int]:
    """One digest of the build's files (their paths and bytes), and how many there are."""
    digest = hashlib.sha256()
    names = source_files(root)
    for name in names:
        data = (root / name).read_bytes()
        digest.update(f"{PurePosixPath(name)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest(), len(names)


def requirements_digest(target: targets.Target, root: Path = ROOT) -> str:
    """The build requirements: requirements/build.txt, the target's pin, pyproject's build
    tables (comments and blank lines don't count)."""
    from devkit.build import metadata

    lines = {
        "build.txt": metadata.requirement_lines(root / "requirements" / "build.txt"),
        "target": metadata.requirement_lines(root / target.requirements),
        "build_tools": list(target.build_tools),
        "pyproject": _pyproject_tables(root),
    }
    return _sha256(json.dumps(lines, sort_keys=True).encode())


def _pyproject_tables(root: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: nox and scikit-build-core both bring tomli
        import tomli as tomllib
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, ValueError) as exc:
        raise DevkitError(f"can't read {root / 'pyproject.toml'} ({exc}); fix it") from None
    found = {}
    for path in PYPROJECT_TABLES:
        table: Any = project
        for part in path:
            table = table.get(part, {}) if isinstance(table, dict) else {}
        found[".".join(path)] = table
    return found


@dataclass(frozen=True)
class Key:
    """A build's binary key, and what went into it."""

    inputs: dict[str, str]  # name -> value or digest, in the order doctor prints them
    compiler: str | None = None  # the compiler's identity; None for a lookup
    files: int = 0  # how many files the files digest covers

    @property
    def digest(self) -> str:
        """The compiled inputs' digest: what lookups match."""
        return _sha256(json.dumps(self.inputs, sort_keys=True).encode())

    @property
    def build_id(self) -> str:
        """The key of one build: the inputs' digest and its compiler's."""
        if self.compiler is None:
            raise DevkitError("a build's key needs its compiler (binaries.store_build reads it)")
        return f"{self.digest}-{_sha256(self.compiler.encode())[:12]}"

    @property
    def short(self) -> str:
        return self.digest[:16]

    def describe(self) -> list[str]:
        """The key and its inputs, one a line, as doctor prints them."""
        lines = [f"{self.digest} (lookups match this)"]
        for name, value in self.inputs.items():
            note = f" ({self.files} files)" if name == "files" else ""
            lines.append(f"  {name:<16} {value or '-'}{note}")
        compiler = self.compiler or "any"
        lines.append(f"  {'compiler':<16} {compiler} (names each stored build, not in lookups)")
        return lines


def compute(
    target_name: str,
    torch: targets.TorchInfo,
    *,
    cpu_isa: str | None = None,
    gpu_arch: str = "",
    build_type: str | None = None,
    compiler: str | None = None,
    root: Path = ROOT,
    environ: Mapping[str, str] | None = None,
    flags: set[str] | None = None,
) -> Key:
    """The key of `target` built against `torch` from the checkout at `root`.

    `cpu_isa` and `build_type` default to VLLM_CPU_ISA and CMAKE_BUILD_TYPE;
    `auto` is resolved against this CPU (or `flags`).
    """
    target = targets.get_target(target_name)
    isa = cpu_isa or envs.get("VLLM_CPU_ISA", environ)
    if target.name == "cpu":
        isa = cpuisa.resolve(isa, flags if flags is not None else machine.cpu_flags())
    else:
        isa = ""  # the GPU targets' kernels don't take it
    files, count = files_digest(root)
    torch_id = torch_identity(target, torch)
    inputs = {
        "files": files,
        "requirements": requirements_digest(target, root),
        "target": target.name,
        "machine": platform.machine(),
        "cpu_isa": isa,
        "gpu_arch": gpu_arch,
        "build_type": build_type or envs.get("CMAKE_BUILD_TYPE", environ),
        **{f"torch_{name}": value for name, value in torch_id.items()},
    }
    return Key(inputs, compiler, count)


def for_plan(plan: Any, root: Path = ROOT, compiler: str | None = None) -> Key:
    """The key of a resolved build plan (devkit.toolchains.plan.BuildPlan)."""
    return compute(
        plan.target,
        plan.torch,
        cpu_isa=plan.cpu_isa,
        gpu_arch=plan.gpu_arch,
        build_type=plan.build_type,
        compiler=compiler,
        root=root,
    )


def changed_inputs(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    """The names of the inputs two keys disagree on (for a warning)."""
    return [name for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]


def describe_difference(a: Mapping[str, str], b: Mapping[str, str]) -> str:
    names: Sequence[str] = changed_inputs(a, b)
    return ", ".join(names) if names else "nothing"
