"""Live build progress: the follower against real ninja builds (no CMake, no torch)."""

import io
import re
import sys
import time
from pathlib import Path

import pytest
from conftest import build_tool

from devkit import DevkitError
from devkit.build import progress

NINJA = build_tool("ninja")

# A build.ninja with the shape CMake writes: objects, then a link.
BUILD_NINJA = """\
rule cc
  command = {python} -c "import time; time.sleep({seconds})" && touch $out
  description = Building CXX object $out
rule link
  command = touch $out
  description = Linking CXX shared module $out
build CMakeFiles/_C.dir/csrc/a.cpp.o: cc {src}/a.cpp
build CMakeFiles/_C.dir/csrc/b.cpp.o: cc {src}/b.cpp
build CMakeFiles/_C.dir/csrc/c.cpp.o: cc {src}/c.cpp
build _C.abi3.so: link CMakeFiles/_C.dir/csrc/a.cpp.o CMakeFiles/_C.dir/csrc/b.cpp.o """
BUILD_NINJA += "CMakeFiles/_C.dir/csrc/c.cpp.o\ndefault _C.abi3.so\n"


def project(tmp_path: Path, seconds: float = 0.4) -> tuple[Path, Path]:
    src, build = tmp_path / "src", tmp_path / "build"
    src.mkdir()
    build.mkdir()
    for name in "abc":
        (src / f"{name}.cpp").write_text("")
    text = BUILD_NINJA.format(python=sys.executable, seconds=seconds, src=src)
    (tmp_path / "build.ninja.in").write_text(text)
    return src, build


def build_command(tmp_path: Path, build: Path) -> list[str]:
    """What scikit-build-core does, in small: configure (CMakeInit.txt, then
    build.ninja), then ninja."""
    script = (
        f"touch {build}/CMakeInit.txt && sleep 0.6 && cp {tmp_path}/build.ninja.in "
        f"{build}/build.ninja && echo 'uv says hello' && {NINJA} -C {build} -j 1 >/dev/null"
    )
    return ["sh", "-c", script]


pytestmark = pytest.mark.skipif(NINJA is None, reason="ninja comes with requirements/build.txt")


def test_plain_output_has_one_line_per_translation_unit(tmp_path):
    src, build = project(tmp_path)
    out = io.StringIO()
    follower = progress.follow(build_command(tmp_path, build), None, build, 1, progress.Screen(out))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()  # no terminal: plain lines only
    assert "uv says hello" in lines  # uv's own output still shows
    assert "[vllm] configuring with cmake" in lines
    configured = [line for line in lines if line.startswith("[vllm] configured in ")]
    assert len(configured) == 1 and configured[0].endswith(": 3 translation unit(s) to compile")
    units = [line for line in lines if re.match(r"\[vllm\] \[\d/3\] ", line)]
    assert [u.split()[1] for u in units] == ["[1/3]", "[2/3]", "[3/3]"]
    assert sorted(u.split()[2] for u in units) == ["csrc/a.cpp", "csrc/b.cpp", "csrc/c.cpp"]
    assert all(re.search(r"\(0\.\d s\)$", u) for u in units)
    linked = [
        i
        for i, line in enumerate(lines)
        if re.fullmatch(r"\[vllm\] linked _C\.abi3\.so \([\d.]+ s\)", line)
    ]
    assert len(linked) == 1 and lines[linked[0] + 1] == "[vllm] installing into the venv"
    assert follower.summary().startswith("compiled 3 file(s); slowest: csrc/")

    # One source changed: the plan is that one file, and the estimate comes
    # from the previous build's durations in the same build dir.
    time.sleep(0.01)
    (src / "b.cpp").write_text("changed")
    out = io.StringIO()
    follower = progress.follow(build_command(tmp_path, build), None, build, 1, progress.Screen(out))
    units = [
        line for line in out.getvalue().splitlines() if re.match(r"\[vllm\] \[\d+/\d+\]", line)
    ]
    assert len(units) == 1 and units[0].startswith("[vllm] [1/1] csrc/b.cpp (")
    assert set(follower.previous) >= {"CMakeFiles/_C.dir/csrc/b.cpp.o", "_C.abi3.so"}


def test_terminal_shows_one_updating_line_with_an_estimate(tmp_path):
    src, build = project(tmp_path, seconds=0.8)
    progress.follow(build_command(tmp_path, build), None, build, 1, progress.Screen(io.StringIO()))
    for name in "abc":
        (src / f"{name}.cpp").write_text("changed")
    out = io.StringIO()
    progress.follow(build_command(tmp_path, build), None, build, 1, progress.Screen(out, tty=True))
    screen = out.getvalue()
    statuses = [part for part in screen.split("\r\033[K") if part.startswith("[vllm] compiling")]
    assert statuses, screen
    assert re.match(
        r"\[vllm\] compiling \[1/3\] csrc/a\.cpp, [\d.]+ s, about [\d.]+ s left", statuses[0]
    )
    # Finished units are still printed as lines above the status line.
    assert re.search(r"\[vllm\] \[3/3\] csrc/\w\.cpp \(0\.\d s\)\n", screen)
    assert screen.endswith("\r\033[K")  # the status line is cleared at the end


def test_a_failing_build_is_one_line(tmp_path):
    _, build = project(tmp_path)
    out = io.StringIO()
    expected = "`sh -c echo oops; exit 3 ...` failed with exit code 3; its output is above"
    with pytest.raises(DevkitError) as failed:
        progress.follow(["sh", "-c", "echo oops; exit 3"], None, build, 1, progress.Screen(out))
    assert str(failed.value) == expected
    assert "oops" in out.getvalue().splitlines()  # the output it points at


def test_read_log_and_dry_run_parsing(tmp_path):
    log = tmp_path / ".ninja_log"
    log.write_text(
        "# ninja log v7\n"
        "0\t4100\t1700000000000000000\tCMakeFiles/_C.dir/csrc/cpu/layernorm.cpp.o\tab\n"
        "not a line\n"
        "5\t300\t1700000000000000005\tCMakeFiles/_C.dir/csrc/cpu/layernorm.cpp.o\tcd\n"
    )
    (step,) = progress.read_log(log).values()
    assert (step.seconds, step.start_ms) == (0.295, 5)
    assert progress.read_log(tmp_path / "missing") == {}
    assert (
        progress.source_of("CMakeFiles/_C.dir/csrc/cache_kernels.cu.o") == "csrc/cache_kernels.cu"
    )
    text = (
        "[1/3] Building CUDA object CMakeFiles/_C.dir/csrc/cache_kernels.cu.o\n"
        "[2/3] Building CXX object CMakeFiles/_C.dir/csrc/op_checks.cpp.o\n"
        "[3/3] Linking CXX shared module _C.abi3.so\n"
    )
    assert progress.parse_dry_run(text) == (
        ["CMakeFiles/_C.dir/csrc/cache_kernels.cu.o", "CMakeFiles/_C.dir/csrc/op_checks.cpp.o"],
        ["_C.abi3.so"],
    )


def test_dry_run_writes_no_log_and_deletes_no_depfile(tmp_path):
    """The follower asks ninja what is left while the real build runs: it must not write,
    nor take a depfile from a compile in flight (sccache's preprocessor writes it seconds
    before the object; a plain `ninja -n` reads it as its own and deletes it)."""
    _, build = project(tmp_path)
    text = (tmp_path / "build.ninja.in").read_text()
    text = text.replace(
        "  description = Building", "  depfile = $out.d\n  deps = gcc\n  description = Building"
    )
    (build / "build.ninja").write_text(text)
    in_flight = build / "CMakeFiles/_C.dir/csrc/a.cpp.o.d"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_text("CMakeFiles/_C.dir/csrc/a.cpp.o: a.cpp\n")
    objects, links = progress.parse_dry_run(progress.dry_run(build))
    assert len(objects) == 3 and links == ["_C.abi3.so"]
    assert not (build / ".ninja_log").exists()
    assert in_flight.read_text() == "CMakeFiles/_C.dir/csrc/a.cpp.o: a.cpp\n"
