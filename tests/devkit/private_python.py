"""A private copy of the running interpreter, for tests that break venvs on purpose.

A venv half-made by Ctrl-C runs as the interpreter its bin/python links to,
and anything installed through it lands in that interpreter's site-packages.
Tests link such venvs to this copy, never to the machine's own Python: the
binary is copied, the standard library linked entry by entry, and
site-packages is an empty directory of its own, so sys.prefix is the copy.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def make(dest: Path) -> Path:
    """A Python at dest/bin/python3.X whose sys.prefix is dest; returns that binary."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    real_lib = Path(sys.base_prefix) / "lib" / version
    (dest / "bin").mkdir(parents=True)
    binary = dest / "bin" / version
    # copy2 keeps the mtime, as a reinstalled interpreter of the same build would.
    shutil.copy2(os.path.realpath(sys._base_executable), binary)
    lib = dest / "lib" / version
    lib.mkdir(parents=True)
    for entry in real_lib.iterdir():
        if entry.name != "site-packages":
            (lib / entry.name).symlink_to(entry)
    (lib / "site-packages").mkdir()
    # libpython and the headers, for builds against it (CMake's FindPython): directories
    # of its own with linked entries, so nothing new lands in the real ones.
    for entry in real_lib.parent.iterdir():
        if entry.name != version:
            (dest / "lib" / entry.name).symlink_to(entry)
    for include in (Path(sys.base_prefix) / "include").glob("python3*"):
        (dest / "include" / include.name).mkdir(parents=True)
        for entry in include.iterdir():
            (dest / "include" / include.name / entry.name).symlink_to(entry)
    prefix = subprocess.run(
        [str(binary), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(prefix) == dest, f"the private Python's prefix is {prefix}, not {dest}"
    return binary


def site_packages(dest: Path) -> list[str]:
    """What has been installed into the private Python (nothing, if all went well)."""
    (lib,) = (dest / "lib").glob("python3*")
    return sorted(p.name for p in (lib / "site-packages").iterdir())
