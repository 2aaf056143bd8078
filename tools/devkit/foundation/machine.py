"""This machine: its CPU's feature flags. Standard library only."""

from __future__ import annotations

import re
from pathlib import Path


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags (Linux /proc/cpuinfo); None where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(match.group(1).split()) if match else None
