"""One session per venv and build directory (devkit.foundation.lock), with real processes."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devkit.foundation import lock, procs

TOOLS = Path(__file__).resolve().parents[2] / "tools"

# Holds the lock given as argv[1]; starts `sleep` in a group of its own (cwd argv[2])
# and prints its pid; releases when stdin closes.
HOLDER = """
import sys
sys.path.insert(0, {tools!r})
from pathlib import Path
from devkit.foundation import lock, procs
import subprocess
with lock.hold(Path(sys.argv[1]), "the build in b", print, (Path(sys.argv[2]),)):
    child = subprocess.Popen(["sleep", "300"], cwd=sys.argv[2], start_new_session=True)
    for listener in procs.group_listeners:
        listener(child.pid)
    print("held", child.pid, flush=True)
    sys.stdin.read()
    child.kill()
"""


def start_holder(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(tools=str(TOOLS)), str(tmp_path / "b.lock"), tmp_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().split()
    assert line[0] == "held", line
    return proc, int(line[1])


def test_a_second_holder_waits_and_says_for_whom(tmp_path):
    holder, _ = start_holder(tmp_path)
    said: list[str] = []
    got = threading.Event()

    def take():
        with lock.hold(tmp_path / "b.lock", "the build in b", said.append):
            got.set()

    thread = threading.Thread(target=take)
    thread.start()
    while not said:
        time.sleep(0.05)
    assert said[0] == f"waiting for the build in b (pid {holder.pid}) to finish"
    assert not got.is_set()
    holder.stdin.close()
    holder.wait()
    thread.join(timeout=60)
    assert got.is_set() and said[1].startswith("waited ")


def test_a_killed_holders_lock_is_taken_and_its_processes_stopped(tmp_path):
    holder, sleeper = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert procs.group_members(sleeper) == [sleeper]  # orphaned, still running
    said: list[str] = []
    with lock.hold(tmp_path / "b.lock", "the build in b", said.append, (tmp_path,)):
        assert said == [
            f"stopped 1 process(es) left running by an interrupted run (pid {holder.pid}) "
            "of the build in b"
        ]
        assert procs.group_members(sleeper) == []
    # Released cleanly: the next holder finds nothing to stop.
    said.clear()
    with lock.hold(tmp_path / "b.lock", "the build in b", said.append):
        pass
    assert said == []


def test_a_recycled_group_id_elsewhere_is_not_stopped(tmp_path):
    stranger = subprocess.Popen(["sleep", "300"], cwd="/", start_new_session=True)
    try:
        started = procs.start_time(stranger.pid)
        (tmp_path / "b.lock").write_text(f'{{"pid": 1, "groups": [[{stranger.pid}, {started}]]}}')
        with lock.hold(tmp_path / "b.lock", "the build in b", print, (tmp_path,)):
            assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recycled_group_id_with_another_start_time_is_not_stopped(tmp_path):
    """A stranger in the build's own directory, whose pid is the recorded group id but
    which started at another time than the recorded leader (pid reuse after a SIGKILL)."""
    stranger = subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)
    try:
        started = procs.start_time(stranger.pid)
        assert started is not None
        for left in (f"[[{stranger.pid}, {started - 1}]]", f"[{stranger.pid}]"):  # old format too
            (tmp_path / "b.lock").write_text(f'{{"pid": 1, "groups": {left}}}')
            said: list[str] = []
            with lock.hold(tmp_path / "b.lock", "the build in b", said.append, (tmp_path,)):
                assert stranger.poll() is None and said == []
        # The same record with the true start time: provably the group, stopped.
        (tmp_path / "b.lock").write_text(f'{{"pid": 1, "groups": [[{stranger.pid}, {started}]]}}')
        with lock.hold(tmp_path / "b.lock", "the build in b", print, (tmp_path,)):
            assert stranger.wait(timeout=30) is not None
    finally:
        stranger.kill()
        stranger.wait()


def test_an_unwritable_lock_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    try:
        with lock.hold(tmp_path / "file" / "x.lock", "x", print):
            raise AssertionError("took a lock under a file")
    except lock.DevkitError as exc:
        assert str(exc).startswith(f"can't create the lock file {tmp_path}/file/x.lock (")
    assert os.path.isfile(tmp_path / "file")
