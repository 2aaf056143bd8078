"""This machine: its GPU's target, and its CPU's feature flags. Standard library only."""

from __future__ import annotations

import re
from pathlib import Path

from devkit import cuda, rocm


def gpu_target() -> str | None:
    """The target of this machine's GPU: cuda (nvidia-smi), rocm (rocminfo), or None."""
    if cuda.local_gpu_arch():
        return "cuda"
    return "rocm" if rocm.local_gpu_arch() else None


def default_target() -> str:
    """The target of this machine: its GPU's, else cpu."""
    return gpu_target() or "cpu"


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags (Linux /proc/cpuinfo); None where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(match.group(1).split()) if match else None
