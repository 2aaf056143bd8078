"""The ROCm toolchain: one GPU arch, hipcc, and hipify into the build directory.

As for CUDA, every check here runs before any download: a bad arch or a
missing ROCm is one line within seconds.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError

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


def find_rocm(arch_text: str | None, environ: Mapping[str, str] | None = None) -> RocmToolchain:
    """ROCm (ROCM_PATH, ROCM_HOME, hipcc on PATH, /opt/rocm) and the one arch to build.

    A given arch is checked first (a bad one lists the supported ones, with
    or without ROCm); then the toolchain; then a missing arch.
    """
    environ = os.environ if environ is None else environ
    arch = parse_arch(arch_text) if (arch_text or "").strip() else None
    home = _rocm_home(environ)
    return RocmToolchain(home, home / "bin" / "hipcc", arch or parse_arch(None))


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
    ship; returns the HIP files written.
    """
    from torch.utils.hipify import hipify_python  # needs torch: run in the build venv

    source_dir, output_dir = source_dir.resolve(), output_dir.resolve()
    if output_dir == source_dir or source_dir in output_dir.parents:
        raise DevkitError(f"hipify output {output_dir} must be outside {source_dir}")
    if output_dir.exists():
        shutil.rmtree(output_dir)  # a fresh copy: hipify skips files it finds translated
    results = hipify_python.hipify(
        project_directory=str(source_dir),
        output_directory=str(output_dir),
        includes=[str(source_dir / "*")],
        ignores=[str(source_dir / "cpu" / "*")],  # CPU kernels have nothing to translate
        is_pytorch_extension=True,
        show_progress=False,
    )
    written = []
    for result in results.values():
        path = getattr(result, "hipified_path", None)
        if path and Path(path).is_file():
            written.append(Path(path))
    return sorted(set(written))
