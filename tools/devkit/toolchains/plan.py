"""The build plan: every decision a build makes, resolved once by `resolve`.

    Request (what the caller asked) + TorchInfo (what the venv has)
        -> resolve() -> BuildPlan -> <build dir>/plan.json

A session resolves the plan twice: before anything is downloaded, against
the target's pin (so a bad arch or nvcc fails in seconds), and again once the
venv's torch is known; it writes the plan to `<build dir>/plan.json` and hands
that file to the build backend (`-C devkit.plan=...`), which follows it as it
is. Run by hand (`uv pip install --no-build-isolation -e .`), the backend calls
the same `resolve` on the variables a contributor sets. doctor prints the plan;
progress, presets and the profile read the build directory the plan names.

No other module decides the toolchain, the arch, the job count, the compiler
cache or the build directory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.foundation import envs, layout
from devkit.toolchains import compiler_cache, cuda, dist, resources, rocm, targets
from devkit.toolchains.compiler_cache import CompilerCache
from devkit.toolchains.targets import TorchInfo

PLAN_FILE = layout.PLAN_FILE
CONFIG_KEY = "devkit.plan"  # the -C setting that hands a session's plan to the backend


@dataclass(frozen=True)
class Request:
    """What the caller asked for; `resolve` works out the rest."""

    target: str  # cpu | cuda | rocm
    arch: str | None = None  # --arch; else TORCH_CUDA_ARCH_LIST / PYTORCH_ROCM_ARCH; else the GPU
    venv_name: str = ""  # a venv other than the target's own gets its own build dir
    use_existing_torch: bool = False  # build against the interpreter's own torch
    precompiled: bool = False  # take a prebuilt wheel's binaries: no toolchain, no jobs
    build_dir: str | None = None  # the caller's -C build-dir, which wins
    bin_dir: str | None = None  # the venv's bin/, where ccache is installed
    python: str = field(default_factory=lambda: sys.executable)  # the venv's interpreter


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build of one target uses, and why; plan.json holds it."""

    target: str
    torch: TorchInfo
    python: str
    build_dir: Path
    jobs: resources.JobPlan
    compiler_cache: CompilerCache | None  # ccache or sccache in front of every compiler
    build_type: str
    cpu_isa: str
    use_existing_torch: bool = False
    precompiled: bool = False
    cuda: cuda.CudaToolchain | None = None
    rocm: rocm.RocmToolchain | None = None
    name: str = ""  # the build dir's short name: cpu, cuda, cpu-plugins (presets use it)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.target)

    @property
    def install_dir(self) -> Path | None:
        """Where an editable install puts the compiled files (and the redirect imports
        them from), so `cmake --build --preset <name>-install` updates the venv."""
        return None if self.precompiled else self.build_dir / "editable"

    @property
    def row(self) -> targets.Target:
        return targets.get_target(self.target)

    @property
    def gpu_arch(self) -> str:
        """The arch recorded in the build info: sm_90, sm_80+PTX, gfx942; "" for CPU."""
        if self.cuda:
            return f"sm_{self.cuda.arch.number}" + ("+PTX" if self.cuda.arch.ptx else "")
        return self.rocm.arch if self.rocm else ""

    def cmake_defines(self) -> dict[str, str]:
        """The CMake cache entries of this build (ROCm's hipified sources come at build time)."""
        defines = {
            "VLLM_TARGET_DEVICE": self.target,
            "VLLM_COMPILER_LAUNCHER": self.compiler_cache.launcher if self.compiler_cache else "",
            "VLLM_CPU_ISA": self.cpu_isa,
            "Python_EXECUTABLE": self.python,
            # Recorded in vllm/_build_info.json (cmake/utils.cmake).
            "VLLM_BUILD_INFO_TORCH_VERSION": self.torch.version,
            "VLLM_BUILD_INFO_TORCH_GIT_VERSION": self.torch.git_version or "",
            # The GPU runtime the binary needs: a CPU binary needs none, whichever
            # torch built it (a CPU build on the CUDA torch 2.14.1 runs on CPU torch).
            "VLLM_BUILD_INFO_CUDA_VERSION": (self.torch.cuda or "") if self.cuda else "",
            "VLLM_BUILD_INFO_HIP_VERSION": (self.torch.hip or "") if self.rocm else "",
            "VLLM_BUILD_INFO_GPU_ARCH": self.gpu_arch,
            # The stable-ABI floor (targets.Target.torch_floor); empty: the full API.
            "VLLM_TORCH_FLOOR": self.row.torch_floor or "",
            # <build dir>/compile_commands.json, for clangd (presets.py links it).
            "CMAKE_EXPORT_COMPILE_COMMANDS": "ON",
        }
        if self.cuda:
            defines.update(self.cuda.cmake_defines(self.jobs.nvcc_threads or 1))
        defines["VLLM_CUDA_COMPILER_LAUNCHER"] = ""  # set or not, it replaces the last one
        if self.cuda and self.compiler_cache and self.compiler_cache.kind == "sccache":
            # nvcc's steps name the source by its absolute path (its module id too):
            # nvcc_relative.py makes the paths under the checkout relative for sccache.
            relative = envs.ROOT / "tools" / "devkit" / "build" / "nvcc_relative.py"
            defines["VLLM_CUDA_COMPILER_LAUNCHER"] = f"{relative};{self.compiler_cache.launcher}"
        return defines

    def build_environ(self) -> dict[str, str]:
        """What the backend's process (CMake, torch's CMake config, ccache) reads from the
        environment, as this plan decided it."""
        environ = {"CMAKE_BUILD_PARALLEL_LEVEL": str(self.jobs.jobs)}
        # CCACHE_BASEDIR / SCCACHE_BASEDIRS, the store, the sccache server's port.
        environ.update(self.compiler_cache.environ if self.compiler_cache else {})
        if self.cuda:
            # Torch's CMake config reads both; a plain X.Y keeps its arch parser
            # from guessing (or emitting compute_50); the flags it derives are
            # replaced by VLLM_CUDA_GENCODE anyway.
            environ["TORCH_CUDA_ARCH_LIST"] = f"{self.cuda.arch.major}.{self.cuda.arch.minor}"
            environ["CUDA_HOME"] = str(self.cuda.home)
        if self.rocm:
            # Torch's CMake config (LoadHIP.cmake) reads both from the environment.
            environ["PYTORCH_ROCM_ARCH"] = self.rocm.arch
            environ["ROCM_PATH"] = str(self.rocm.home)
        return environ

    def toolchain_lines(self) -> list[str]:
        """The GPU toolchain and arch, and any warning about them; none for CPU."""
        if self.cuda:
            return [self.cuda.describe(), *([self.cuda.warning] if self.cuda.warning else [])]
        return [self.rocm.describe()] if self.rocm else []

    def describe(self) -> list[str]:
        """The plan as a person reads it, one decision a line."""
        lines = [f"target {self.target}, torch {self.torch.version}, build dir {self.build_dir}"]
        if self.precompiled:
            return [*lines, "binaries from a prebuilt wheel: no compiler runs"]
        cache = (
            self.compiler_cache.describe()
            if self.compiler_cache
            else "none (set VLLM_COMPILER_CACHE=auto)"
        )
        return [*lines, *self.toolchain_lines(), self.jobs.reason, f"compiler cache: {cache}"]

    # -- plan.json ----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": self.target,
            "torch": self.torch.__dict__,
            "python": self.python,
            "build_dir": str(self.build_dir),
            "jobs": self.jobs.__dict__,
            "compiler_cache": self.compiler_cache.to_json() if self.compiler_cache else None,
            "build_type": self.build_type,
            "cpu_isa": self.cpu_isa,
            "use_existing_torch": self.use_existing_torch,
            "precompiled": self.precompiled,
            "name": self.name,
            "cuda": None,
            "rocm": None,
        }
        if self.cuda:
            data["cuda"] = {
                "home": str(self.cuda.home),
                "nvcc": str(self.cuda.nvcc),
                "version": list(self.cuda.version),
                "arch": str(self.cuda.arch),
                "arch_source": self.cuda.arch_source,
                "warning": self.cuda.warning,
            }
        if self.rocm:
            data["rocm"] = {k: str(v) for k, v in self.rocm.__dict__.items()}
        data["cmake_defines"] = self.cmake_defines()  # for readers; derived on load
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildPlan:
        found_cuda = data.get("cuda")
        found_rocm = data.get("rocm")
        return cls(
            target=data["target"],
            torch=TorchInfo(**data["torch"]),
            python=data["python"],
            build_dir=Path(data["build_dir"]),
            jobs=resources.JobPlan(**data["jobs"]),
            compiler_cache=CompilerCache.from_json(data["compiler_cache"]),
            build_type=data["build_type"],
            cpu_isa=data["cpu_isa"],
            use_existing_torch=data["use_existing_torch"],
            precompiled=data["precompiled"],
            name=data.get("name", ""),
            cuda=cuda.CudaToolchain(
                home=Path(found_cuda["home"]),
                nvcc=Path(found_cuda["nvcc"]),
                version=tuple(found_cuda["version"]),
                arch=cuda.parse_arch(found_cuda["arch"]),
                arch_source=found_cuda["arch_source"],
                warning=found_cuda["warning"],
            )
            if found_cuda
            else None,
            rocm=rocm.RocmToolchain(
                Path(found_rocm["home"]), Path(found_rocm["hipcc"]), found_rocm["arch"]
            )
            if found_rocm
            else None,
        )

    def write(self) -> Path:
        """Writes <build dir>/plan.json (whole or not at all); returns its path."""
        path = self.build_dir / PLAN_FILE
        try:
            self.build_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{PLAN_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise DevkitError(
                f"can't write the build plan into {self.build_dir} ({exc.strerror}); "
                "point VLLM_BUILD_DIR at a writable directory"
            ) from None
        return path


def load(path: str | Path) -> BuildPlan:
    """A plan written by `BuildPlan.write`."""
    try:
        return BuildPlan.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DevkitError(f"can't read the build plan {path} ({exc}); rerun the session") from None


def check_cmake_args(value: str | None) -> None:
    """CMAKE_ARGS as scikit-build-core will split it (shell words): an unclosed quote
    is one line here instead of its traceback."""
    import shlex

    try:
        shlex.split(value or "")
    except ValueError as exc:
        raise DevkitError(
            f"CMAKE_ARGS={value!r} can't be split into arguments ({exc}); close the quote "
            "or unset CMAKE_ARGS"
        ) from None


def expected_torch(target: targets.Target) -> TorchInfo:
    """The torch a fresh venv of `target` will have: what the pre-download checks use."""
    return TorchInfo(
        target.torch_spec.removeprefix("torch=="), target.cuda_version, target.hip_version
    )


def _arch_request(
    request: Request, target: targets.Target, environ: Mapping[str, str] | None
) -> tuple[str | None, str]:
    """The arch text and where it came from: --arch, else the target's variable."""
    if request.arch:
        return request.arch, "--arch"
    name = "TORCH_CUDA_ARCH_LIST" if target.cuda_version else "PYTORCH_ROCM_ARCH"
    return envs.get(name, environ), name


def resolve(
    request: Request, torch: TorchInfo, environ: Mapping[str, str] | None = None
) -> BuildPlan:
    """The plan for `request` against `torch`; the first problem is one DevkitError line.

    Cheap checks first: the variables, the target, the arch; then the
    toolchain (which runs nvcc), the jobs and the compiler cache.
    """
    envs.check_all(environ)
    check_cmake_args(envs.get("CMAKE_ARGS", environ))
    target = targets.get_target(request.target)
    if request.build_dir:
        build_dir = envs.ROOT / request.build_dir  # an absolute one replaces ROOT
    else:
        build_dir = targets.build_dir(target.name, torch.version, request.venv_name)
    common: dict[str, Any] = dict(
        target=target.name,
        torch=torch,
        python=request.python,
        build_dir=build_dir,
        build_type=envs.get("CMAKE_BUILD_TYPE", environ),
        cpu_isa=envs.get("VLLM_CPU_ISA", environ),
        use_existing_torch=request.use_existing_torch,
        name=f"{target.name}-{request.venv_name}" if request.venv_name else target.name,
    )
    if request.precompiled:
        none = resources.JobPlan(0, None, "no compile jobs: binaries from a prebuilt wheel")
        return BuildPlan(**common, jobs=none, compiler_cache=None, precompiled=True)

    if target.name != "cpu" and torch.flavour != target.name:  # CPU kernels build on any torch
        raise DevkitError(
            f"the {target.name} target needs torch built for it, but torch {torch.version} is a "
            f"{torch.flavour} build; use `nox -s build-{target.name}`, which installs "
            f"{target.torch_spec}, or set VLLM_TARGET_DEVICE={torch.flavour}"
        )
    found_cuda = found_rocm = None
    if target.cuda_version:
        arch_text, source = _arch_request(request, target, environ)
        found_cuda = cuda.resolve_toolchain(
            arch_text, source, torch.cuda or "none", torch.version, environ
        )
    elif target.hip_version:
        arch_text, _ = _arch_request(request, target, environ)
        found_rocm = rocm.find_rocm(arch_text, environ)
    bin_dir = Path(request.bin_dir) if request.bin_dir else None
    cluster = dist.resolve(environ)  # its free slots set the job count
    return BuildPlan(
        **common,
        jobs=resources.plan_for_this_machine(target, environ, dist.free_slots(cluster, environ)),
        compiler_cache=compiler_cache.resolve(environ, bin_dir=bin_dir),
        cuda=found_cuda,
        rocm=found_rocm,
    )
