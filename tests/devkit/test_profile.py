"""build-profile: the slowest files, the last run as a Chrome trace."""

import json

import pytest

from devkit import DevkitError
from devkit.commands import profile

# Two runs; ninja recompacted the log at the start of the second (first three
# lines, in no order), then appended its steps. mtime = command start (ns).
RUN1, RUN2 = 1_700_000_000_000, 1_700_000_100_000  # ms
LOG = "# ninja log v7\n" + "".join(
    f"{start}\t{end}\t{(run + start) * 1_000_000}\t{output}\th\n"
    for start, end, run, output in [
        (3000, 3400, RUN1, "_C.abi3.so"),
        (0, 1500, RUN1, "CMakeFiles/_C.dir/csrc/a.cpp.o"),
        (0, 2900, RUN1, "CMakeFiles/_C.dir/csrc/b.cpp.o"),
        (0, 4100, RUN2, "CMakeFiles/_C.dir/csrc/a.cpp.o"),
        (2, 5000, RUN2, "CMakeFiles/_C.dir/csrc/c.cpp.o"),
        (4100, 6000, RUN2, "CMakeFiles/_C.dir/csrc/d.cpp.o"),
        (6000, 6400, RUN2, "_C.abi3.so"),
        (6400, 6401, RUN2, "CMakeFiles/install.util"),
    ]
)


@pytest.fixture
def build_dir(tmp_path):
    (tmp_path / ".ninja_log").write_text(LOG)
    return tmp_path


def test_last_build_skips_the_recompacted_older_builds(build_dir):
    steps = profile.last_build(build_dir / ".ninja_log")
    assert [s.output.split("/")[-1] for s in steps] == [
        "a.cpp.o",
        "c.cpp.o",
        "d.cpp.o",
        "_C.abi3.so",
        "install.util",
    ]


def test_chrome_trace_puts_parallel_steps_in_lanes(build_dir):
    trace = profile.chrome_trace(profile.last_build(build_dir / ".ninja_log"))
    events = {e["name"]: e for e in trace["traceEvents"]}
    assert events["csrc/a.cpp"]["tid"] != events["csrc/c.cpp"]["tid"]  # ran at once
    assert events["csrc/d.cpp"]["tid"] == events["csrc/a.cpp"]["tid"]  # after a, same lane
    assert (events["csrc/c.cpp"]["ts"], events["csrc/c.cpp"]["dur"]) == (2000, 4_998_000)
    assert {e["ph"] for e in trace["traceEvents"]} == {"X"}
    assert events["_C.abi3.so"]["cat"] == "build" and events["csrc/a.cpp"]["cat"] == "compile"


def test_table_and_files(build_dir):
    slowest = profile.slowest(build_dir)
    assert [s.output.split("/")[-1] for s in slowest[:2]] == ["c.cpp.o", "a.cpp.o"]
    assert all(not s.output.endswith(".util") for s in slowest)
    table = profile.table(slowest).splitlines()
    assert table[2].split() == ["csrc/c.cpp", "5.0"]
    paths = profile.write(build_dir, chart=False)
    assert [p.name for p in paths] == ["slowest.txt", "trace.json"]
    assert len(json.loads(paths[1].read_text())["traceEvents"]) == 5


def test_no_build_is_one_line(tmp_path):
    with pytest.raises(DevkitError, match="has no .ninja_log; build first"):
        profile.find_build_dir(None, str(tmp_path))
