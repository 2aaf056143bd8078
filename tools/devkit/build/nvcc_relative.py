#!/usr/bin/env python3
"""nvcc under sccache, with the checkout's paths relative: CUDA hits across checkouts.

sccache caches an nvcc compile step by step (cudafe++, cicc, ptxas, the host
compile), running the steps `nvcc --dryrun` lists. Those steps name the
source by its absolute path, and cudafe++ derives the module id that every
later step embeds from it (a CRC of `--orig_src_path_name`), so a clone in
another directory missed on every device step although SCCACHE_BASEDIRS
names its root (sccache 0.16 normalizes paths only in a top-level C/C++
preprocessor output). This script puts itself between sccache and nvcc and
rewrites, in the dry-run listing only, every path under SCCACHE_BASEDIRS to
one relative to the compile's working directory (the build dir), which is
the same in every clone. The object that comes out is the one nvcc makes
from relative paths: its module id is unique per source file, as before.

Two modes, one file. CMake's CUDA launcher runs it as

    nvcc_relative.py <sccache> <nvcc> <nvcc's arguments>

and it runs `<sccache> nvcc_relative.py <nvcc's arguments>`, with the real
nvcc in _DEVKIT_NVCC (an internal hand-off, not a setting: sccache passes the
compile's environment to the compiler it runs). sccache then runs it as the
compiler: `--dryrun` goes through the rewrite, anything else is nvcc itself.

Standard library only: it runs under whatever python3 the build finds.
"""

from __future__ import annotations

import os
import subprocess
import sys

REAL_NVCC = "_DEVKIT_NVCC"


def relative_listing(listing: str, roots: list[str], cwd: str) -> str:
    """`nvcc --dryrun` output with each path under one of `roots` made relative to
    `cwd`; only the command lines (`#$ ...`) change.

    >>> relative_listing('#$ cicc --orig_src_path_name "/a/csrc/k.cu"\\n', ["/a"], "/a/build/cuda")
    '#$ cicc --orig_src_path_name "../../csrc/k.cu"\\n'
    """
    pairs = [(r.rstrip("/") + "/", os.path.relpath(r, cwd) + "/") for r in roots if r]
    pairs.sort(key=lambda pair: -len(pair[0]))  # a nested root before the one holding it
    lines = []
    for line in listing.splitlines(keepends=True):
        if line.startswith("#$ "):
            for absolute, relative in pairs:
                line = line.replace(absolute, relative)
        lines.append(line)
    return "".join(lines)


def basedirs(environ: dict[str, str] | os._Environ) -> list[str]:
    """SCCACHE_BASEDIRS's entries (sccache splits them like PATH)."""
    return [d for d in environ.get("SCCACHE_BASEDIRS", "").split(os.pathsep) if d]


def main(argv: list[str]) -> int:
    nvcc = os.environ.get(REAL_NVCC)
    if nvcc is None:  # the launcher: sccache runs this file as the compiler
        if len(argv) < 2:
            sys.stderr.write("usage: nvcc_relative.py <sccache> <nvcc> [nvcc arguments]\n")
            return 2
        sccache, nvcc, *args = argv
        os.environ[REAL_NVCC] = nvcc
        os.execv(sccache, [sccache, os.path.abspath(__file__), *args])
    if "--dryrun" not in argv:
        os.execv(nvcc, [nvcc, *argv])
    result = subprocess.run([nvcc, *argv], capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(relative_listing(result.stderr, basedirs(os.environ), os.getcwd()))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
