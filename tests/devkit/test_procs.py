"""Signals end a session in one line, and its processes with it (devkit.foundation.procs)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from devkit.foundation import procs

TOOLS = Path(__file__).resolve().parents[2] / "tools"

# A session's step: a shell that starts two sleeps (a build's compilers, say).
SESSION = """
import sys
sys.path.insert(0, {tools!r})
from devkit import DevkitError
from devkit.foundation import procs
procs.install_handlers()
procs.group_listeners.append(lambda pgid: print("group", pgid, flush=True))
try:
    procs.run(["sh", "-c", "sleep 300 & sleep 300 & wait"], step="uv pip install -e .")
except DevkitError as exc:
    print("error:", exc, flush=True)
    sys.exit(1)
"""


def start_session(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", SESSION.format(tools=str(TOOLS))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    pgid = int(proc.stdout.readline().split()[1])
    while len(procs.group_members(pgid)) < 3:  # sh and both sleeps
        time.sleep(0.05)
    return proc, pgid


def test_sigterm_and_sighup_name_the_step_and_stop_its_processes(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGHUP):
        proc, pgid = start_session(tmp_path)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert out.strip() == (
            f"error: {sig.name} stopped the session while running `uv pip install -e .`; its "
            "processes were stopped too, and the next run resumes where this one stopped "
            "(the build directory keeps what was compiled)"
        )
        assert procs.group_members(pgid) == []


def test_stop_group_waits_for_every_member(tmp_path):
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 300 & wait"], start_new_session=True, cwd=tmp_path
    )
    while len(procs.group_members(proc.pid)) < 2:
        time.sleep(0.05)
    # The shell ignores SIGTERM: it takes SIGKILL after the grace period.
    assert procs.stop_group(proc.pid, grace_s=0.5, inside=(tmp_path,)) == 2
    assert procs.group_members(proc.pid) == []
    proc.wait()
