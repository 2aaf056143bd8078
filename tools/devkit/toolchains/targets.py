"""The build targets, one row each: everything that differs between them.

A session or the backend looks up a row and hands it to the same pipeline;
no other module branches on the target's name for these facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import layout, procs
from devkit.foundation.envs import ROOT
from devkit.foundation.files import show
from devkit.toolchains import cuda, optable, rocm

GIB = 1024**3
PYTORCH_INDEX = "https://download.pytorch.org/whl"


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version, a pin or a floor: 2.14.1+cu130 -> (2, 14),
    2.10 -> (2, 10); unreadable (`unknown`): (0, 0), below every real one."""
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else (0, 0)


@dataclass(frozen=True)
class Target:
    name: str
    torch_version: str  # the pin, without local tag: what `torch==` must match
    torch_local: str  # local version tag of the flavour, e.g. "cpu"; "" for none
    torch_index: str  # where that flavour lives
    job_memory: int  # bytes one compile job needs at its peak
    version_suffix: str  # appended to the package version: 0.1.0+cpu
    # uv's --index-strategy: torch from its index, the rest from PyPI or the mirrors.
    index_strategy: str = "unsafe-best-match"
    nvcc_threads: int | None = None  # default NVCC_THREADS; None: no nvcc
    cuda_version: str | None = None  # CUDA of the torch flavour, checked against nvcc
    hip_version: str | None = None  # ROCm of the torch flavour
    build_tools: tuple[str, ...] = ()  # extra packages for the build venv
    # The oldest torch (MAJOR.MINOR) the binary runs under: its kernels are built on
    # LibTorch's stable ABI (TORCH_TARGET_VERSION), so one binary serves every torch
    # from there on. None: built on torch's full C++ API, for the exact torch only.
    torch_floor: str | None = None

    @property
    def dispatch_key(self) -> str:
        """Where the kernels register: CPU, CUDA (the op table's, vllm/_op_table.py)."""
        return optable.table().DISPATCH_KEYS[self.name]

    @property
    def torch_requirement(self) -> str:
        """What the wheel needs of torch: torch>=2.10 on the stable ABI, else the pin."""
        return f"torch>={self.torch_floor}" if self.torch_floor else self.torch_spec

    @property
    def torch_spec(self) -> str:
        """The exact requirement that installs this flavour, e.g. torch==2.13.0+cpu."""
        local = f"+{self.torch_local}" if self.torch_local else ""
        return f"torch=={self.torch_version}{local}"

    @property
    def requirements(self) -> str:
        """The target's requirements file, holding the torch pin."""
        return f"requirements/{self.name}.txt"

    @property
    def requirements_file(self):
        return ROOT / self.requirements


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="cpu",
            torch_version="2.13.0",
            torch_local="cpu",
            torch_index=f"{PYTORCH_INDEX}/cpu",
            # Measured (`nox -s bench-build -- --against REF`): on the stable
            # surface the largest g++ job (csrc/cpu/cache.cpp) peaks at 381 MiB,
            # the others at 285-322 MiB (before the port: 764 MiB); 0.5 GiB
            # leaves room for the link, which is smaller.
            job_memory=GIB // 2,
            version_suffix="cpu",
            torch_floor="2.10",
        ),
        Target(
            name="cuda",
            torch_version="2.14.1",
            torch_local="",  # cu130 index: 2.14.1+cu130; PyPI: 2.14.1, also CUDA 13.0
            torch_index=f"{PYTORCH_INDEX}/cu130",
            # nvcc's peak per thread (vLLM's rule of thumb for its larger kernels).
            job_memory=4 * GIB,
            version_suffix="cu130",
            # One arch per build: more nvcc threads would have nothing to split.
            nvcc_threads=1,
            cuda_version="13.0",
            # cuobjdump, to check the machine code the build holds.
            build_tools=("nvidia-cuda-cuobjdump",),
            torch_floor="2.10",
        ),
        Target(
            name="rocm",
            torch_version="2.10.0",
            torch_local="rocm7.1",
            torch_index=f"{PYTORCH_INDEX}/rocm7.1",
            job_memory=1 * GIB,  # hipcc's peak per job (the seed talk's figure)
            version_suffix="rocm7.1",
            hip_version="7.1",
        ),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise DevkitError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None


@dataclass(frozen=True)
class TorchInfo:
    """What a Python environment's torch is: version and flavour."""

    version: str  # full, with local tag: 2.13.0+cpu
    cuda: str | None  # torch.version.cuda
    hip: str | None  # torch.version.hip
    git_version: str | None = None  # torch.version.git_version

    @property
    def flavour(self) -> str:
        return "rocm" if self.hip else "cuda" if self.cuda else "cpu"


# Run with the interpreter of the environment in question; prints JSON. It
# reads torch/version.py (milliseconds) instead of importing torch (seconds);
# the build's smoke check imports torch for real.
PROBE_TORCH = (
    "import json, sys; sys.path.insert(0, {tools!r}); "
    "from devkit.toolchains.targets import read_torch_info; "
    "info = read_torch_info(); print(json.dumps(info and info.__dict__))"
).format(tools=str(ROOT / "tools"))


def probe_torch(python: Path) -> TorchInfo | None:
    """The torch of the environment of `python` (read, not imported); None if absent."""
    found = procs.python_json(
        python, PROBE_TORCH, label=f"{show(python)} -c <read torch's version>"
    )
    return TorchInfo(**found) if found else None


def read_torch_info() -> TorchInfo | None:
    """This interpreter's torch, read from torch/version.py without importing torch.

    Importing torch takes seconds; the backend asks on every build.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return None
    fields = {}
    for key in ("__version__", "cuda", "hip", "git_version"):
        match = re.search(rf"^{key}\b[^=]*=\s*['\"]([^'\"]*)['\"]", text, re.M)
        fields[key] = match.group(1) if match else None  # None: `= None`
    if not fields["__version__"]:
        return None
    return TorchInfo(fields["__version__"], fields["cuda"], fields["hip"], fields["git_version"])


# The paths live in devkit.foundation.layout; these names stay for the modules that use them.
python_tag = layout.python_tag
build_root = layout.build_root


def build_dir(target: str, torch_version: str, venv_name: str = "") -> Path:
    """The persistent CMake build directory of one target, torch and Python (layout's).

    A target on the stable ABI (torch_floor) builds one binary for every torch
    from its floor on, so its directory names the floor (cpu-torch2.10abi-cp311)
    and a torch upgrade reuses it; others name the exact torch.
    """
    row = TARGETS.get(target)
    torch_part = f"{row.torch_floor}abi" if row and row.torch_floor else torch_version
    return layout.build_dir(target, torch_part, venv_name)


def check_torch(target: Target, info: TorchInfo) -> None:
    """Raises if `info` is not the target's torch: the flavour, and the pin."""
    if info.flavour != target.name:
        raise DevkitError(
            f"torch {info.version} is a {info.flavour} build, but the {target.name} "
            f"target needs {target.torch_spec}; reinstall it from {target.torch_index}"
        )
    base, _, local = info.version.partition("+")
    if base != target.torch_version or (target.torch_local and local != target.torch_local):
        raise DevkitError(
            f"torch {info.version} is installed, but {target.requirements} pins "
            f"{target.torch_spec}; install the pin, or delete the venv and rerun"
        )
    if target.cuda_version and info.cuda != target.cuda_version:
        raise DevkitError(
            f"torch {info.version} is built for CUDA {info.cuda}, but the {target.name} "
            f"target needs CUDA {target.cuda_version}; reinstall it from {target.torch_index}"
        )


def resolve_target_name(requested: str, info: TorchInfo | None) -> str:
    """VLLM_TARGET_DEVICE, with auto replaced by the installed torch's flavour."""
    if requested != "auto":
        return requested
    if info is None:
        raise DevkitError(
            "VLLM_TARGET_DEVICE=auto needs torch installed to pick a target; "
            "set VLLM_TARGET_DEVICE=cpu (or cuda, rocm)"
        )
    return info.flavour


def gpu_target() -> str | None:
    """The target of this machine's GPU: cuda (nvidia-smi), rocm (rocminfo), or None."""
    if cuda.local_gpu_arch():
        return "cuda"
    return "rocm" if rocm.local_gpu_arch() else None


def default_target() -> str:
    """The target of this machine: its GPU's, else cpu."""
    return gpu_target() or "cpu"
