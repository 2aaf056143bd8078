"""Tools on PATH or in the venv, and what a built library links in.

The compiler cache is devkit.toolchains.compiler_cache."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from devkit.foundation import procs


def find_tool(name: str, bin_dir: Path | None = None) -> str | None:
    """`name` from bin_dir (default: the running interpreter's venv), else PATH."""
    here = bin_dir if bin_dir is not None else Path(sys.executable).parent
    candidate = here / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


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
    out = procs.probe([nm, "-D", "--defined-only", "--demangle", str(library)])
    if out is None:
        return None
    return [
        line.split(" ", 2)[-1]
        for line in out.stdout.splitlines()
        if _PRIVATE_LIBSTDCXX.search(line)
    ]
