"""The extension is installed by a copy renamed over the old file (cmake/
install_atomically.cmake): a process reading it while a build installs finds the
old binary or the new one, never none or half of one (issue 20, item 6)."""

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The test venv's own (requirements/build.txt), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} comes with requirements/build.txt; install it")
    return found


PROJECT = """
cmake_minimum_required(VERSION 3.26)
project(t C)
add_library(m MODULE m.c)
install(CODE "set(_vllm_src \\"$<TARGET_FILE:m>\\")\\nset(_vllm_dest \\"vllm\\")" COMPONENT m)
install(SCRIPT "{script}" COMPONENT m)
"""


def build(src: Path, body: str) -> bytes:
    # A big static table, so that a copy takes long enough to be caught half-done.
    (src / "m.c").write_text(
        f"const char blob[4 << 20] = {{{body}}};\nint f(void) {{ return 1; }}\n"
    )
    subprocess.run([tool("cmake"), "--build", str(src / "b")], check=True, capture_output=True)
    return next((src / "b").glob("*m.so")).read_bytes()


def test_a_reader_never_sees_the_extension_missing_or_partial(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    script = ROOT / "cmake" / "install_atomically.cmake"
    (src / "CMakeLists.txt").write_text(PROJECT.format(script=script))
    (src / "m.c").write_text("int f(void) { return 0; }\n")
    prefix = tmp_path / "prefix"
    configure = [tool("cmake"), "-S", str(src), "-B", str(src / "b"), "-G", "Ninja"]
    configure.append(f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}")
    subprocess.run(
        [*configure, f"-DCMAKE_INSTALL_PREFIX={prefix}"], check=True, capture_output=True
    )
    versions = []
    for body in ("1", "2"):
        versions.append(build(src, body))
        shutil.copy(next((src / "b").glob("*m.so")), tmp_path / f"v{body}.so")
    installed = prefix / "vllm" / next((src / "b").glob("*m.so")).name
    subprocess.run([tool("cmake"), "--install", str(src / "b")], check=True, capture_output=True)

    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                data = installed.read_bytes()
            except FileNotFoundError:
                seen.append("missing")
                continue
            seen.append("whole" if data in versions else f"partial ({len(data)} bytes)")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(20):  # install the other version over it, 20 times
            shutil.copy(tmp_path / f"v{1 + i % 2}.so", next((src / "b").glob("*m.so")))
            out = subprocess.run(
                [tool("cmake"), "--install", str(src / "b")],
                check=True,
                capture_output=True,
                text=True,
            )
            assert f"-- Installing: {installed}" in out.stdout
    finally:
        done.set()
        reader.join()
    assert seen and set(seen) == {"whole"}, sorted(set(seen))
    assert installed.read_bytes() == versions[1]
    assert not list(installed.parent.glob("*.installing"))  # no leftovers
    # An identical file is left alone (its inode kept: nothing to see for a reader).
    inode = installed.stat().st_ino
    out = subprocess.run(
        [tool("cmake"), "--install", str(src / "b")], check=True, capture_output=True, text=True
    )
    assert f"-- Up-to-date: {installed}" in out.stdout and installed.stat().st_ino == inode
