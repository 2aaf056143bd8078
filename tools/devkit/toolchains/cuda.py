"""The CUDA toolchain: GPU arch, nvcc, the CUDA prefix, and their checks.

Everything here runs before any download or compile, so that a wrong arch or
a mismatched nvcc is one line within seconds, not an error an hour in.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import procs

# Names a contributor may type instead of a compute capability.
ARCH_NAMES = {
    "turing": "7.5",
    "t4": "7.5",
    "ampere": "8.0",
    "a100": "8.0",
    "a10": "8.6",
    "rtx3090": "8.6",
    "ada": "8.9",
    "l4": "8.9",
    "l40s": "8.9",
    "rtx4090": "8.9",
    "hopper": "9.0",
    "h100": "9.0",
    "h200": "9.0",
    "blackwell": "10.0",
    "b200": "10.0",
    "gb200": "10.0",
    "rtx5090": "12.0",
}

_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)(?:\.(\d))?([af]?)(\+ptx)?$", re.I)


@dataclass(frozen=True)
class CudaArch:
    major: int
    minor: int
    suffix: str = ""  # "a": arch-specific features (sm_90a); "f": family
    ptx: bool = False  # also embed PTX, for GPUs newer than this one

    @property
    def number(self) -> str:
        return f"{self.major}{self.minor}{self.suffix}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}{self.suffix}" + ("+PTX" if self.ptx else "")

    def gencode_flags(self) -> list[str]:
        """nvcc flags that compile this arch and nothing else."""
        flags = [f"-gencode=arch=compute_{self.number},code=sm_{self.number}"]
        if self.ptx:
            flags.append(f"-gencode=arch=compute_{self.number},code=compute_{self.number}")
        return flags


def runs_on(built: str | CudaArch, gpu: CudaArch) -> bool | None:
    """Whether machine code built for `built` (sm_90, sm_90a, sm_80+PTX, or a
    CudaArch) runs on `gpu`: the one rule doctor and the precompiled check share.

    A cubin runs on its major version at an equal or higher minor (sm_80 runs on
    an 8.6 GPU, sm_86 not on an 8.0); an arch-specific one (a) only on its own
    arch, a family one (f) on its major; PTX on anything at least as new. None
    when `built` is not a CUDA arch this knows.
    """
    if isinstance(built, str):
        match = re.fullmatch(r"sm_(\d+)(\d)([af]?)(\+PTX)?", built)
        if not match:
            return None
        built = CudaArch(int(match[1]), int(match[2]), match[3], bool(match[4]))
    here, there = (gpu.major, gpu.minor), (built.major, built.minor)
    if built.ptx and here >= there:
        return True
    if built.suffix == "a":
        return here == there
    return gpu.major == built.major and gpu.minor >= built.minor


def parse_arch(text: str) -> CudaArch:
    """'9.0', '90', 'sm_90', '9.0a', '8.0+PTX', 'hopper' -> CudaArch."""
    raw = text.strip()
    key = raw.lower().removesuffix("+ptx")
    if key in ARCH_NAMES:
        raw = ARCH_NAMES[key] + raw[len(key) :]
    match = _ARCH.match(raw.replace(" ", ""))
    if not match:
        raise DevkitError(
            f"{text!r} is not a CUDA arch; use a compute capability such as 9.0, 9.0a "
            f"or 8.0+PTX, or a name: {', '.join(sorted(ARCH_NAMES))}"
        )
    digits, minor, suffix, ptx = match.groups()
    if minor is None:  # "90" or "sm_90": the last digit is the minor
        if len(digits) < 2:
            raise DevkitError(f"{text!r} is not a CUDA arch; write it as major.minor, e.g. 9.0")
        digits, minor = digits[:-1], digits[-1]
    return CudaArch(int(digits), int(minor), suffix.lower(), bool(ptx))


def parse_arch_list(text: str) -> CudaArch:
    """One arch from --arch or TORCH_CUDA_ARCH_LIST; these builds are single-arch."""
    items = [item for item in re.split(r"[;\s,]+", text.strip()) if item]
    if len(items) != 1:
        raise DevkitError(
            f"build-cuda builds one arch, got {len(items)} ({text.strip()!r}); "
            "pick one, e.g. --arch 9.0 (each extra arch multiplies compile time)"
        )
    return parse_arch(items[0])


def check_supported(arch: CudaArch, supported: list[str], nvcc: str) -> None:
    """The arch must be one nvcc lists (`nvcc --list-gpu-arch`)."""
    base = f"compute_{arch.major}{arch.minor}"
    if base not in supported:
        listed = ", ".join(f"{n[8:-1]}.{n[-1]}" for n in supported)
        raise DevkitError(f"{nvcc} can't compile for {arch}; it supports {listed}")
    if arch.suffix and arch.major < 9:
        raise DevkitError(f"arch {arch}: the '{arch.suffix}' variants exist from 9.0 on")


def find_cuda_home(environ: Mapping[str, str] | None = None) -> Path:
    """The CUDA prefix: CUDA_HOME (or CUDA_PATH), else nvcc's on PATH, else /usr/local/cuda."""
    environ = os.environ if environ is None else environ

    def valid(home: Path) -> bool:
        return (home / "bin" / "nvcc").is_file() and (home / "include" / "cuda_runtime.h").is_file()

    for name in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(name):
            home = Path(environ[name])
            if not valid(home):
                raise DevkitError(
                    f"{name}={home} has no bin/nvcc and include/cuda_runtime.h; fix or unset it"
                )
            return home
    candidates = []
    nvcc = shutil.which("nvcc", path=environ.get("PATH", ""))
    if nvcc:  # resolved: /usr/local/bin/nvcc may be a link into the real prefix
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if valid(home):
            return home
    raise DevkitError("no CUDA toolkit found (nvcc); install it and set CUDA_HOME to its prefix")


def nvcc_version(nvcc: Path | str) -> tuple[int, int]:
    out = _ask([str(nvcc), "--version"])
    match = re.search(r"release (\d+)\.(\d+)", out)
    if not match:
        raise DevkitError(f"can't read the CUDA version from `{nvcc} --version`")
    return int(match[1]), int(match[2])


def nvcc_archs(nvcc: Path | str) -> list[str]:
    """compute_XY names nvcc can compile for."""
    return _ask([str(nvcc), "--list-gpu-arch"]).split()


def check_versions(nvcc: tuple[int, int], torch_cuda: str, torch_version: str) -> str | None:
    """A major mismatch is an error; a minor one a warning (returned)."""
    t_major, t_minor = (int(x) for x in torch_cuda.split(".")[:2])
    n_text = f"nvcc {nvcc[0]}.{nvcc[1]}"
    t_text = f"torch {torch_version} (CUDA {torch_cuda})"
    if nvcc[0] != t_major:
        raise DevkitError(
            f"{n_text} can't build for {t_text}: install CUDA {t_major}.x and point CUDA_HOME "
            f"at it, or use a torch built for CUDA {nvcc[0]}"
        )
    if nvcc[1] != t_minor:
        return f"warning: {n_text} differs from {t_text} in the minor version; usually fine"
    return None


@dataclass(frozen=True)
class CudaToolchain:
    """What a CUDA build compiles with, checked."""

    home: Path
    nvcc: Path
    version: tuple[int, int]
    arch: CudaArch
    arch_source: str  # where the arch came from, for the log
    warning: str | None  # a minor nvcc/torch CUDA mismatch

    def describe(self) -> str:
        major, minor = self.version
        return f"nvcc {major}.{minor} in {self.home}; arch {self.arch} ({self.arch_source})"

    def cmake_defines(self, nvcc_threads: int) -> dict[str, str]:
        return {
            "CMAKE_CUDA_COMPILER": str(self.nvcc),
            "CUDAToolkit_ROOT": str(self.home),
            # Torch's config still runs the old FindCUDA, which otherwise takes
            # the first nvcc on PATH (maybe a wrapper in /usr/local/bin) as the prefix.
            "CUDA_TOOLKIT_ROOT_DIR": str(self.home),
            "VLLM_CUDA_GENCODE": ";".join(self.arch.gencode_flags()),
            "VLLM_NVCC_THREADS": str(nvcc_threads),
        }


def resolve_toolchain(
    arch_text: str | None,
    arch_source: str,
    torch_cuda: str,
    torch_version: str,
    environ: Mapping[str, str] | None = None,
) -> CudaToolchain:
    """The arch (given, else the local GPU's), the CUDA prefix and nvcc, all checked.

    Cheap checks first: no arch and no GPU fails before nvcc is even run.
    """
    if arch_text:
        arch = parse_arch_list(arch_text)
    else:
        arch = local_gpu_arch()
        arch_source = "the local GPU"
        if arch is None:
            raise DevkitError(
                "no GPU here to take the arch from; pass one, e.g. "
                "`nox -s build-cuda -- --arch 9.0` (or hopper), or set TORCH_CUDA_ARCH_LIST"
            )
    home = find_cuda_home(environ)
    nvcc = home / "bin" / "nvcc"
    version = nvcc_version(nvcc)
    check_supported(arch, nvcc_archs(nvcc), f"nvcc {version[0]}.{version[1]}")
    warning = check_versions(version, torch_cuda, torch_version)
    return CudaToolchain(home, nvcc, version, arch, arch_source, warning)


def find_cuobjdump(venv: Path, home: Path) -> str | None:
    """cuobjdump from the venv (PyPI's nvidia-cuda-cuobjdump), the toolkit, or PATH."""
    for found in sorted(venv.glob("lib/python*/site-packages/nvidia/**/bin/cuobjdump")):
        return str(found)
    if (home / "bin" / "cuobjdump").is_file():
        return str(home / "bin" / "cuobjdump")
    return shutil.which("cuobjdump")


def check_machine_code(cuobjdump: str, library: Path, arch: CudaArch) -> str:
    """The library must hold machine code for `arch` and no other; returns a log line."""
    listed = _ask([cuobjdump, "--list-elf", str(library)])
    found = sorted(set(re.findall(r"\.(sm_\d+[af]?)\.cubin", listed)))
    expected = [f"sm_{arch.number}"]
    if found != expected:
        raise DevkitError(
            f"{library.name} holds machine code for {', '.join(found) or 'no arch'}, "
            f"expected {expected[0]} only; delete build/ and rebuild"
        )
    return f"machine code: {library.name} holds {expected[0]} only (cuobjdump --list-elf)"


@functools.cache
def local_gpu_arch() -> CudaArch | None:
    """The first local GPU's compute capability (nvidia-smi), None without a GPU; asked
    once a process (the session's target, its toolchain and its binaries all ask)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = _ask([smi, "--query-gpu=compute_cap", "--format=csv,noheader"])
    except DevkitError:
        return None
    first = out.split()[0] if out.split() else ""
    return parse_arch(first) if first else None


def _ask(cmd: list[str]) -> str:
    """The output of a CUDA tool's query; a failure is one DevkitError line."""
    out = procs.probe(cmd)
    if out is None:
        raise DevkitError(f"`{' '.join(cmd)}` failed: it did not start, or answer within 60 s")
    if out.returncode != 0:
        raise DevkitError(f"`{' '.join(cmd)}` failed: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout
