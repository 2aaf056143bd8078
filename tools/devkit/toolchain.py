"""Toolchain detection: the compiler cache (and, later, CUDA/ROCm prefixes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError, envs


def find_tool(name: str, bin_dir: Path | None = None) -> str | None:
    """`name` from bin_dir (default: the running interpreter's venv), else PATH."""
    here = bin_dir if bin_dir is not None else Path(sys.executable).parent
    candidate = here / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def compiler_launcher(environ=None, bin_dir: Path | None = None) -> str | None:
    """The ccache/sccache binary to put in front of every compiler, or None.

    VLLM_COMPILER_CACHE=auto prefers sccache (remote storage, if configured)
    over ccache (installed with requirements/build.txt); off disables both.
    """
    choice = envs.get("VLLM_COMPILER_CACHE", environ)
    if choice == "off":
        return None
    names = ["sccache", "ccache"] if choice == "auto" else [choice]
    for name in names:
        path = find_tool(name, bin_dir)
        if path:
            return path
    if choice != "auto":
        raise DevkitError(
            f"VLLM_COMPILER_CACHE={choice} but {choice} is not on PATH; "
            f"install it or set VLLM_COMPILER_CACHE=auto"
        )
    return None


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(self.hits - other.hits, self.misses - other.misses)

    def describe(self) -> str:
        total = self.hits + self.misses
        if total == 0:
            return "no compiler-cache lookups"
        return f"cache hits {self.hits}/{total}"


def parse_ccache_stats(text: str) -> CacheStats:
    """Reads `ccache --print-stats` (one `key<TAB>value` a line)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().isdigit():
            values[key.strip()] = int(value)
    hits = values.get("direct_cache_hit", 0) + values.get("preprocessed_cache_hit", 0)
    return CacheStats(hits=hits, misses=values.get("cache_miss", 0))


def cache_stats(launcher: str | None) -> CacheStats | None:
    """Cumulative hit/miss counters of the launcher; None when unknown."""
    if not launcher or Path(launcher).name != "ccache":
        return None
    try:
        out = subprocess.run(
            [launcher, "--print-stats"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_ccache_stats(out.stdout) if out.returncode == 0 else None


# libstdc++'s own iostream/locale machinery. A shared library that defines
# these carries a private copy of libstdc++ (linked in from some static
# archive); it then formats through facets the process never initialised,
# and a TORCH_CHECK message with a number in it crashes.
_PRIVATE_LIBSTDCXX = re.compile(r" std::(locale|codecvt|basic_ios|ios_base|num_put)\b")


def private_libstdcxx(library: Path) -> list[str] | None:
    """libstdc++ internals defined (exported) by `library`; None when nm is missing."""
    nm = shutil.which("nm")
    if nm is None:
        return None
    out = subprocess.run(
        [nm, "-D", "--defined-only", "--demangle", str(library)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [
        line.split(" ", 2)[-1]
        for line in out.stdout.splitlines()
        if _PRIVATE_LIBSTDCXX.search(line)
    ]
