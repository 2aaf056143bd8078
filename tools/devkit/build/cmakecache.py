"""The CMake cache of a build directory follows CMAKE_ARGS.

scikit-build-core hands CMAKE_ARGS to CMake's configure step, and every -D in
it lands in CMakeCache.txt, where it stays: one run with a bogus flag broke
every later plain build. So the arguments of the last configure are recorded
beside the cache, and when CMAKE_ARGS differs (set, changed or unset) the cache
is dropped and CMake configures afresh. The object files stay: ninja
recompiles only what the new flags change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devkit.foundation.files import atomic_write

RECORD = "cmake-args.txt"


def follow_cmake_args(build_dir: Path, cmake_args: str, say: Callable[[str], None]) -> bool:
    """Drops `build_dir`'s CMakeCache.txt if it was configured with other CMAKE_ARGS;
    records `cmake_args` for the next build. Returns whether the cache was dropped."""
    record = build_dir / RECORD
    try:
        before = record.read_text()
    except OSError:
        before = ""  # never recorded: configured without CMAKE_ARGS
    cache = build_dir / "CMakeCache.txt"
    dropped = cmake_args != before and cache.is_file()
    if dropped:
        say(
            f"CMAKE_ARGS changed ({before or 'unset'!s} -> {cmake_args or 'unset'}): "
            "configuring from a fresh CMake cache, so they apply to this build only"
        )
        cache.unlink()
    if cmake_args != before or not record.is_file():
        build_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(record, cmake_args)
    return dropped
