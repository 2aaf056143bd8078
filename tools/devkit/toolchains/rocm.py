"""The ROCm toolchain: one GPU arch, hipcc, and hipify into the build directory.

As for CUDA, every check here runs before any download: a bad arch or a
missing ROCm is one line within seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import procs

# The archs the kernels are built and supported for (MI210/MI250, MI300,
# MI350, RDNA3, RDNA4).
SUPPORTED_ARCHS = ("gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1101", "gfx1200", "gfx1201")


def parse_arch(text: str | None) -> str:
    """One arch from --arch or PYTORCH_ROCM_ARCH, checked against SUPPORTED_ARCHS."""
    items = [item for item in re.split(r"[;\s,]+", (text or "").strip()) if item]
    if not items:
        raise DevkitError(
            "build-rocm needs one arch: `nox -s build-rocm -- --arch gfx942` or PYTORCH_ROCM_ARCH; "
            f"supported: {', '.join(SUPPORTED_ARCHS)}"
        )
    if len(items) > 1:
        raise DevkitError(
            f"build-rocm builds one arch, got {len(items)} ({text!r}); pick one, e.g. --arch gfx942"
        )
    arch = items[0].lower().split(":")[0]  # gfx90a:xnack- -> gfx90a
    if arch not in SUPPORTED_ARCHS:
        raise DevkitError(
            f"{items[0]!r} is not a supported ROCm arch; supported: {', '.join(SUPPORTED_ARCHS)}"
        )
    return arch


@dataclass(frozen=True)
class RocmToolchain:
    home: Path
    hipcc: Path
    arch: str

    def describe(self) -> str:
        return f"hipcc in {self.home}; arch {self.arch}"

    def clang(self) -> Path | None:
        """ROCm's clang++, which CMake's HIP language compiles with (it rejects hipcc)."""
        for path in (self.home / "lib" / "llvm" / "bin", self.home / "llvm" / "bin"):
            if (path / "clang++").is_file():
                return path / "clang++"
        return None  # CMake then asks `hipconfig --hipclangpath`

    def cmake_defines(self, hipified_dir: Path) -> dict[str, str]:
        """What CMakeLists.txt's rocm branch needs: the hipified sources, ROCm, one arch."""
        defines = {
            "VLLM_HIPIFIED_DIR": str(hipified_dir),
            "ROCM_PATH": str(self.home),
            "CMAKE_HIP_PLATFORM": "amd",
            "CMAKE_HIP_COMPILER_ROCM_ROOT": str(self.home),
            # CMake's --offload-arch, and hip-config's list (else rocm_agent_enumerator's).
            "CMAKE_HIP_ARCHITECTURES": self.arch,
            "GPU_TARGETS": self.arch,
        }
        clang = self.clang()
        if clang:
            defines["CMAKE_HIP_COMPILER"] = str(clang)
        return defines


def find_rocm(arch_text: str | None, environ: Mapping[str, str] | None = None) -> RocmToolchain:
    """ROCm (ROCM_PATH, ROCM_HOME, hipcc on PATH, /opt/rocm) and the one arch to build.

    A given arch is checked first (a bad one lists the supported ones, with
    or without ROCm); then the toolchain; then a missing arch.
    """
    environ = os.environ if environ is None else environ
    arch = parse_arch(arch_text) if (arch_text or "").strip() else None
    home = _rocm_home(environ)
    if arch is None:
        local = local_gpu_arch(home)
        arch = parse_arch(local)  # with no GPU: the one line asking for --arch
    return RocmToolchain(home, home / "bin" / "hipcc", arch)


def local_gpu_arch(home: Path | None = None) -> str | None:
    """The first local AMD GPU's arch (rocminfo's first gfx agent); None without one."""
    candidates = [home / "bin" / "rocminfo"] if home else []
    found = shutil.which("rocminfo")
    candidates += [Path(found)] if found else []
    candidates.append(Path("/opt/rocm/bin/rocminfo"))
    for tool in candidates:
        if tool.is_file():
            answer = procs.probe([tool])
            if answer is None:
                return None
            match = re.search(r"^\s*Name:\s*(gfx[0-9a-f]+)\s*$", answer.stdout, re.M)
            return match.group(1) if match else None
    return None


def _rocm_home(environ: Mapping[str, str]) -> Path:
    for name in ("ROCM_PATH", "ROCM_HOME"):
        if environ.get(name):
            home = Path(environ[name])
            if not (home / "bin" / "hipcc").is_file():
                raise DevkitError(f"{name}={home} has no bin/hipcc; fix or unset it")
            return home
    hipcc = shutil.which("hipcc", path=environ.get("PATH", ""))
    candidates = [Path(hipcc).resolve().parent.parent] if hipcc else []
    for home in [*candidates, Path("/opt/rocm")]:
        if (home / "bin" / "hipcc").is_file():
            return home
    raise DevkitError(
        "no ROCm toolchain: hipcc is not on PATH and ROCM_PATH is unset; install ROCm "
        "and set ROCM_PATH (e.g. /opt/rocm)"
    )


def hipify(source_dir: Path, output_dir: Path) -> list[Path]:
    """Translates the CUDA sources under source_dir into output_dir (never in place).

    Runs torch's hipify, which the ROCm build of torch and the CPU wheel both
    ship, into a fresh directory (hipify skips files it finds translated),
    then copies into output_dir only the files whose bytes changed, so Ninja
    recompiles only what changed. Returns the HIP files, in output_dir.
    """
    source_dir, output_dir = source_dir.resolve(), output_dir.resolve()
    if output_dir == source_dir or source_dir in output_dir.parents:
        raise DevkitError(f"hipify output {output_dir} must be outside {source_dir}")
    from torch.utils.hipify import hipify_python  # needs torch: run in the build venv

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".hipify-", dir=output_dir.parent) as tmp:
        staging = Path(tmp).resolve() / output_dir.name
        results = hipify_python.hipify(
            project_directory=str(source_dir),
            output_directory=str(staging),
            includes=[str(source_dir / "*")],
            ignores=[str(source_dir / "cpu" / "*")],  # CPU kernels have nothing to translate
            is_pytorch_extension=True,
            show_progress=False,
        )
        written = set()
        for result in results.values():
            path = getattr(result, "hipified_path", None)
            if path and Path(path).is_file():
                written.add(output_dir / Path(path).resolve().relative_to(staging))
        _sync_tree(staging, output_dir)
    return sorted(written)


def _sync_tree(source: Path, dest: Path) -> None:
    """Makes dest hold source's files, rewriting only those that differ."""
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    for rel in sorted(wanted):
        target = dest / rel
        if not target.is_file() or target.read_bytes() != (source / rel).read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target)  # mtime now: Ninja sees the change
    if dest.is_dir():
        for path in sorted(dest.rglob("*"), reverse=True):  # files before their dirs
            if path.is_file() and path.relative_to(dest) not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare_build(source_dir: Path, hipified: Path) -> Path:
    """Hipifies source_dir into `hipified` (the plan's hipified_dir, which its CMake
    definitions name); returns it.

    Hipify imports torch (seconds), so it is skipped when neither the sources
    nor the hipified tree changed since it last ran (a stamp beside the tree).
    """
    stamp = hipified.with_name(f"{hipified.name}.stamp")
    state = {"source": _tree_digest(source_dir)}
    if not (
        hipified.is_dir()
        and stamp.is_file()
        and stamp.read_text() == json.dumps({**state, "output": _tree_digest(hipified)})
    ):
        hipify(source_dir, hipified)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({**state, "output": _tree_digest(hipified)}))
    return hipified
