"""The CMake cache of a build directory follows CMAKE_ARGS.

scikit-build-core hands CMAKE_ARGS to CMake's configure step, and every -D in
it lands in CMakeCache.txt, where it stays: one run with a bogus flag broke
every later plain build. So the arguments of the last configure are recorded
beside the cache, and when CMAKE_ARGS differs (set, changed or unset) the cache
is dropped and CMake configures afresh. The object files stay: ninja
recompiles only what the new flags change.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from devkit import DevkitError

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
        tmp = record.with_name(f".{RECORD}.{os.getpid()}")
        tmp.write_text(cmake_args)
        os.replace(tmp, record)
    return dropped


def check_cmake_args(value: str | None) -> None:
    """CMAKE_ARGS as scikit-build-core will split it (shell words): an unclosed quote
    is one line here instead of its traceback."""
    import shlex

    try:
        shlex.split(value or "")
    except ValueError as exc:
        raise DevkitError(
            f"CMAKE_ARGS={value!r} can't be split into arguments ({exc}); close the quote "
            "or unset CMAKE_ARGS"
        ) from None
