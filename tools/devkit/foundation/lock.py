"""One session at a time per venv and per build directory.

Two ninjas in one build directory corrupt its deps log; two `uv venv` at one
path race into "already exists". `hold` takes an exclusive flock(2) on a lock
file beside the thing it guards; a second session prints what it waits for
and waits. The kernel drops the lock when its holder dies, so a lock left by a
killed run is simply taken; the processes that run left behind (its process
groups, recorded in the lock file by devkit.foundation.procs with each leader's start time)
are stopped first, so they can't race the new build. A group is stopped only if
it is provably that one: its leader, if alive, started when recorded, and its
members started since and work in the build's directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import layout, log, procs
from devkit.foundation.envs import ROOT
from devkit.foundation.files import show

STILL_WAITING_EVERY_S = 30.0
POLL_S = 0.2


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Lock:
    """A held lock: its file records the holder's pid, what it does, and the process
    groups it started."""

    def __init__(self, path: Path, fd: int, what: str):
        self.path = path
        self.fd = fd
        self.what = what
        self.groups: list[list[int]] = []  # [pgid, the leader's start time]

    def record(self, pgid: int | None = None) -> None:
        if pgid is not None:
            started = procs.start_time(pgid)
            if started is not None:  # gone already: nothing to stop later
                self.groups.append([pgid, started])
        data = json.dumps({"pid": os.getpid(), "what": self.what, "groups": self.groups})
        data = data.encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


@contextmanager
def hold(
    path: Path, what: str, say: Callable[[str], None], inside: tuple[Path, ...] = ()
) -> Iterator[Lock]:
    """Holds the lock file `path` for the block; `what` names what the holder does, for
    the line of a session that waits ("waiting for the build in build/cpu-... (pid N)
    to finish"). `inside`: where the processes a killed holder left behind work (their
    cwd), to tell them from strangers that reuse a group id."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DevkitError(
            f"can't create the lock file {path} ({exc.strerror}); make {path.parent} writable"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait(fd, path, what, say)
        lock = Lock(path, fd, what)
        left = _read(path)
        for pgid, started in _groups(left):
            stopped = procs.stop_group(pgid, inside=inside or (path.parent,), started=started)
            if stopped:
                say(
                    f"stopped {stopped} process(es) left running by an interrupted run "
                    f"(pid {left.get('pid')}) of {left.get('what', what)}"
                )
        lock.record()
        procs.group_listeners.append(lock.record)
        try:
            yield lock
        finally:
            procs.group_listeners.remove(lock.record)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _groups(left: dict) -> list[tuple[int, int]]:
    """The recorded groups with their leader's start time. Entries without one (lock
    files of older versions, or edited by hand) can't be proven ours: skipped."""
    found = []
    for entry in left.get("groups", []) if isinstance(left.get("groups"), list) else []:
        if isinstance(entry, list) and len(entry) == 2 and all(type(v) is int for v in entry):
            found.append((entry[0], entry[1]))
    return found


def _wait(fd: int, path: Path, what: str, say: Callable[[str], None]) -> None:
    found = _read(path)
    holder, what = found.get("pid", "unknown"), found.get("what", what)
    say(f"waiting for {what} (pid {holder}) to finish")
    started = time.monotonic()
    next_note = started + STILL_WAITING_EVERY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            now = time.monotonic()
            if now >= next_note:
                say(f"still waiting for {what} (pid {holder}), {now - started:.0f}s so far")
                next_note = now + STILL_WAITING_EVERY_S
            time.sleep(POLL_S)
    say(f"waited {time.monotonic() - started:.1f}s for {what}")


def lock_file(path: Path) -> Path:
    """The lock of a venv: a file beside it, as the venv may not exist yet."""
    return path.with_name(path.name + ".lock")


def venv_lock(path: Path, what: str):
    """One session at a time sets up or builds into the venv at `path`; `what` it does."""
    return hold(lock_file(path), what, log.say, (ROOT,))


@contextmanager
def build_lock(build_dir: Path, venv: Path | None) -> Iterator[None]:
    """One build per build directory at a time, and per venv (None: not ours, no lock):
    the build installs into it, and a run killed during the build leaves processes that
    use both (their groups are recorded in both locks, so the next run stops them
    before it touches either)."""
    with contextlib.ExitStack() as stack:
        what = f"the build in {show(build_dir)}"
        if venv is not None:
            stack.enter_context(venv_lock(venv, what))
        inside = (ROOT, build_dir)
        stack.enter_context(hold(build_dir / layout.BUILD_LOCK, what, log.say, inside))
        yield
