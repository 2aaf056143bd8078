"""The build plan: every decision a build makes, resolved once by `resolve`.

    Request (what the caller asked) + TorchInfo (what the venv has)
        -> preflight() -> Preflight   (variables, target, GPU toolchain: no download yet)
        -> resolve()   -> BuildPlan   (build dir, jobs, compiler cache, git commit)
        -> BuildPlan.write() -> <build dir>/plan.json
        -> the backend loads it -> CMake reads it (VLLM_PLAN_FILE) -> the compiler

A session checks the request before any download (`preflight`: a bad arch or
nvcc fails in seconds), resolves the plan once against the venv's torch and
writes it once; the backend, handed the file (`-C devkit.plan=...`), applies it
as it is (backend.py says why). By hand, the backend resolves and writes it.
CMake reads the file for the build info (`build_info`). doctor prints the plan;
presets are written from it.

No other module decides the toolchain, the arch, the job count, the compiler
cache, the build directory or the commit the build info names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.foundation import envs, gitbase, layout
from devkit.foundation.files import atomic_write
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
    git_commit: str = ""  # the checkout's commit (-dirty), recorded in the build info

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.target)

    @property
    def install_dir(self) -> Path | None:
        """Where an editable install puts the compiled files (and the redirect imports
        them from), so `cmake --build --preset <name>-install` updates the venv."""
        return None if self.precompiled else self.build_dir / "editable"

    @property
    def plan_file(self) -> Path:
        """<build dir>/plan.json: this plan, as the backend and CMake read it."""
        return self.build_dir / PLAN_FILE

    @property
    def hipified_dir(self) -> Path | None:
        """Where a ROCm build's hipified csrc/ goes (the backend hipifies at build time)."""
        return self.build_dir.resolve() / "hipified" if self.rocm else None

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
        """The CMake cache entries of this build: everything a configure needs, so a
        preset written from the plan configures a fresh build dir (ROCm's too)."""
        defines = {
            "VLLM_TARGET_DEVICE": self.target,
            "VLLM_COMPILER_LAUNCHER": self.compiler_cache.launcher if self.compiler_cache else "",
            "VLLM_CPU_ISA": self.cpu_isa,
            "Python_EXECUTABLE": self.python,
            # CMake reads the plan's build_info from it (cmake/utils.cmake), the
            # stable-ABI floor (torch_floor) included.
            "VLLM_PLAN_FILE": str(self.plan_file),
            # <build dir>/compile_commands.json, for clangd (presets.py links it).
            "CMAKE_EXPORT_COMPILE_COMMANDS": "ON",
        }
        if self.cuda:
            defines.update(self.cuda.cmake_defines(self.jobs.nvcc_threads or 1))
        if self.rocm and self.hipified_dir:
            defines.update(self.rocm.cmake_defines(self.hipified_dir))
        defines["VLLM_CUDA_COMPILER_LAUNCHER"] = ""  # set or not, it replaces the last one
        if self.cuda and self.compiler_cache and self.compiler_cache.kind == "sccache":
            # nvcc's steps name the source by its absolute path (its module id too):
            # nvcc_relative.py makes the paths under the checkout relative for sccache.
            relative = envs.ROOT / "tools" / "devkit" / "build" / "nvcc_relative.py"
            defines["VLLM_CUDA_COMPILER_LAUNCHER"] = f"{relative};{self.compiler_cache.launcher}"
        return defines

    def build_info(self) -> dict[str, Any]:
        """What vllm/_build_info.json records that the plan decides; CMake adds what only
        the compiler knows (compiler, C++ standard and ABI, the resolved CPU ISA)."""
        # The GPU runtime the binary needs: a CPU binary needs none, whichever torch
        # built it (a CPU build on the CUDA torch 2.14.1 runs on CPU torch).
        cuda_version = self.torch.cuda if self.cuda else None
        floor = self.row.torch_floor
        return {
            "target": self.target,
            "torch_version": self.torch.version,
            "torch_git_version": self.torch.git_version or None,
            "cuda_version": cuda_version or None,
            "hip_version": (self.torch.hip if self.rocm else None) or None,
            "gpu_arch": self.gpu_arch or None,
            # What the binary needs of torch: on the stable ABI, any torch from
            # torch_floor on, of the same flavour and CUDA major; on the full C++
            # API, exactly torch_version. The precompiled check reads these.
            "torch_abi": "stable" if floor else "full",
            "torch_floor": floor or None,
            "cuda_major": int(cuda_version.split(".")[0]) if cuda_version else None,
            "python_abi": "abi3",
            "git_commit": self.git_commit or None,
        }

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

    def compile_environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` as the compiles of this plan see it: the compiler cache's variables (a
        store that did not answer taken out) and `build_environ`. The one derivation:
        the backend applies it; the session reaches its sccache server with it."""
        environ = compiler_cache.environ_for(self.compiler_cache, base)
        environ.update(self.build_environ())
        return environ

    def toolchain_lines(self) -> list[str]:
        """The GPU toolchain and arch, and any warning about them; none for CPU."""
        return Preflight(self.row, self.cuda, self.rocm).toolchain_lines()

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
            "git_commit": self.git_commit,
            "cuda": None,
            "rocm": None,
        }
        if self.cuda:
            paths = {"home": str(self.cuda.home), "nvcc": str(self.cuda.nvcc)}
            arch = {"version": list(self.cuda.version), "arch": str(self.cuda.arch)}
            data["cuda"] = {**self.cuda.__dict__, **paths, **arch}
        if self.rocm:
            data["rocm"] = {k: str(v) for k, v in self.rocm.__dict__.items()}
        data["build_info"] = self.build_info()  # CMake reads it; derived on load
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
            git_commit=data.get("git_commit", ""),
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
        """Writes <build dir>/plan.json (whole or not at all); returns its path.

        Once a build: by the session, or by the backend for a build by hand."""
        path = self.plan_file
        try:
            self.build_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(self.to_json(), indent=2) + "\n")
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


@dataclass(frozen=True)
class Preflight:
    """What `preflight` checked and found before anything is downloaded: the GPU
    toolchain (nvcc runs here), which `resolve` then takes as it is."""

    target: targets.Target
    cuda: cuda.CudaToolchain | None = None
    rocm: rocm.RocmToolchain | None = None

    def toolchain_lines(self) -> list[str]:
        """The GPU toolchain and arch, and any warning about them; none for CPU."""
        if self.cuda:
            return [self.cuda.describe(), *([self.cuda.warning] if self.cuda.warning else [])]
        return [self.rocm.describe()] if self.rocm else []


def preflight(
    request: Request, torch: TorchInfo, environ: Mapping[str, str] | None = None
) -> Preflight:
    """The cheap checks, first problem first, as one DevkitError line: every variable
    (the one place they are all validated), CMAKE_ARGS, the target, the build root,
    the compiler cache's store and cluster, torch's flavour, the arch; then the GPU
    toolchain. `torch` may be the one the venv will get."""
    envs.check_all(environ)
    envs.check_cmake_args(envs.get("CMAKE_ARGS", environ))
    target = targets.get_target(request.target)
    if not request.build_dir:
        layout.build_root()  # VLLM_BUILD_DIR writable (as targets.build_dir reads it)
    if request.precompiled:  # a prebuilt wheel's binaries: no toolchain
        return Preflight(target)
    compiler_cache.resolve(environ)  # a bad store or cluster; `resolve` decides the cache
    if target.name != "cpu" and torch.flavour != target.name:  # CPU kernels build on any torch
        raise DevkitError(
            f"the {target.name} target needs torch built for it, but torch {torch.version} is a "
            f"{torch.flavour} build; use `nox -s build-{target.name}`, which installs "
            f"{target.torch_spec}, or set VLLM_TARGET_DEVICE={torch.flavour}"
        )
    if target.cuda_version:
        arch_text, source = _arch_request(request, target, environ)
        toolchain = cuda.resolve_toolchain(
            arch_text, source, torch.cuda or "none", torch.version, environ
        )
        return Preflight(target, cuda=toolchain)
    if target.hip_version:
        arch_text, _ = _arch_request(request, target, environ)
        return Preflight(target, rocm=rocm.find_rocm(arch_text, environ))
    return Preflight(target)


def resolve(
    request: Request,
    torch: TorchInfo,
    environ: Mapping[str, str] | None = None,
    checked: Preflight | None = None,
) -> BuildPlan:
    """The plan for `request` against `torch`; the first problem is one DevkitError line.
    `checked`: the session's `preflight` of the request (against the torch the venv was
    then checked to have); without it, it runs here."""
    checked = checked or preflight(request, torch, environ)
    target = checked.target
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

    bin_dir = Path(request.bin_dir) if request.bin_dir else None
    cluster = dist.resolve(environ)  # its free slots set the job count
    return BuildPlan(
        **common,
        jobs=resources.plan_for_this_machine(target, environ, dist.free_slots(cluster, environ)),
        compiler_cache=compiler_cache.resolve(environ, bin_dir=bin_dir),
        cuda=checked.cuda,
        rocm=checked.rocm,
        git_commit=gitbase.commit(),
    )
