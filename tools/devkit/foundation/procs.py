"""Child processes that end with the session, and signals that end it in one line.

A build runs uv -> the backend -> CMake -> ninja -> compilers. Each command
a step runs gets a process group of its own, so that when the session stops
(Ctrl-C, SIGTERM, SIGHUP, an error) every process of the build is stopped and
waited for: no orphaned compiler keeps writing object files into the build
directory after the session said it was done. The group is recorded in the
locks the session holds (devkit.foundation.lock), so that after a SIGKILL, which nothing
can catch, the next run stops the leftovers before it builds.

SIGTERM and SIGHUP become `Interrupted`, a DevkitError: one line naming the
interrupted step and saying that the next run resumes.

Three ways to run a command, one meaning of "run" (start it in a group of its
own, wait, stop the group on any exception): `run` returns the result, `check`
echoes the command and turns a failure into the one failure line, `probe` asks
a tool a quick question (bounded, never raising).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.foundation import log
from devkit.foundation.envs import ROOT

STOP_GRACE_S = 10.0  # SIGTERM first; SIGKILL for what is still running after this

# Called with the pgid of each new group (devkit.foundation.lock records it in the locks held).
group_listeners: list[Callable[[int], None]] = []
current_step: str | None = None
# What the next run finds, for the Interrupted line (a precompiled session downloads).
resume_note = "the build directory keeps what was compiled"


class Interrupted(DevkitError):
    """The session got SIGTERM, SIGHUP or SIGINT."""

    def __init__(self, signame: str, step: str | None = None):
        self.signame = signame
        self.step = step
        where = f" while running `{step}`" if step else ""
        super().__init__(
            f"{signame} stopped the session{where}; its processes were stopped too, and the "
            f"next run resumes where this one stopped ({resume_note})"
        )


def _raise(signum: int, _frame) -> None:
    raise Interrupted(signal.Signals(signum).name, current_step)


def install_handlers() -> None:
    """SIGTERM and SIGHUP raise Interrupted (Python's default ends silently)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise)


def start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat's field 22);
    None if there is no such process. A pid and this together name one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def group_members(pgid: int, inside: Iterable[Path] = (), started: int | None = None) -> list[int]:
    """Live processes of process group `pgid` (other than this one), from /proc;
    with `inside`, only those whose working directory is under one of those paths;
    with `started` (the group leader's start time when the group was recorded), none
    if the leader now is another process, and only members started since then: a
    recycled group id then names nobody's processes but ours."""
    if started is not None:
        leader = start_time(pgid)
        if leader is not None and leader != started:
            return []  # the id names a stranger's group now
    roots = [Path(p).resolve() for p in inside]
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z" or int(fields[2]) != pgid:
                continue
            if started is not None and int(fields[19]) < started:
                continue  # older than the group it would belong to: not of that group
            if roots:
                cwd = Path(os.readlink(entry / "cwd"))
                if not any(cwd == r or cwd.is_relative_to(r) for r in roots):
                    continue
        except (OSError, IndexError, ValueError):
            continue
        members.append(int(entry.name))
    return sorted(members)


def stop_group(
    pgid: int,
    grace_s: float = STOP_GRACE_S,
    inside: Iterable[Path] = (),
    started: int | None = None,
) -> int:
    """SIGTERM to every process of the group, SIGKILL after `grace_s`; waits until none
    is left. Returns how many there were. `inside`, `started`: see group_members."""
    inside = list(inside)
    members = group_members(pgid, inside, started)
    if not members:
        return 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in group_members(pgid, inside, started):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and group_members(pgid, inside, started):
            time.sleep(0.05)
        if not group_members(pgid, inside, started):
            break
    return len(members)


def popen(cmd: Sequence[str], **kwargs) -> subprocess.Popen:
    """Starts `cmd` in a process group of its own, which the listeners record."""
    # Popen's process_group=0 is Python 3.11+.
    own_group: dict = (
        {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    )
    proc = subprocess.Popen([str(c) for c in cmd], **kwargs, **own_group)
    try:  # a signal may arrive while a listener runs: the group must not outlive it
        for listener in group_listeners:
            listener(proc.pid)
    except BaseException:
        stop_tree(proc.pid)
        proc.wait()
        raise
    return proc


def _children() -> dict[int, list[int]]:
    """Every live process's children, by parent pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return children


def stop_tree(pid: int) -> None:
    """Stops the process group of `pid` and the groups of all its descendants.

    ninja starts each compiler in a process group of its own, so stopping the
    build's group alone can leave compilers running; their groups are found
    first, while the tree still hangs together, then each is stopped.
    """
    children, groups, todo = _children(), [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                group = os.getpgid(child)
            except OSError:
                continue
            if group not in groups and group != os.getpgid(0):
                groups.append(group)
    for group in groups:
        stop_group(group)


def run(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    capture: bool = False,
    step: str = "",
    tee_stderr: bool = False,
) -> subprocess.CompletedProcess:
    """Runs `cmd` in a process group of its own and waits for it; on any exception
    (Ctrl-C, Interrupted) stops the whole group first, then re-raises. `step` names
    it in the Interrupted message. With `tee_stderr`, its stderr is passed through as
    it comes and also returned (as the result's stderr)."""
    global current_step
    current_step = step or " ".join(map(str, cmd[:3]))
    err: list[str] = []
    proc = popen(
        cmd,
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if tee_stderr else None,
    )
    try:
        if tee_stderr:
            assert proc.stderr is not None
            for line in proc.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                err.append(line)
        out, _ = proc.communicate()
    except BaseException:
        stop_tree(proc.pid)
        proc.wait()
        raise
    finally:
        current_step = None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(err))


def failure(cmd: Sequence[str], returncode: int, label: str | None = None) -> DevkitError:
    """The one line of a command that failed: what it was, its exit code, where its output is."""
    what = label or f"{Path(cmd[0]).name} {' '.join(map(str, cmd[1:3]))} ..."
    return DevkitError(f"`{what}` failed with exit code {returncode}; its output is above")


def check(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    capture: bool = False,
    label: str | None = None,
    explain: Callable[[str], str | None] | None = None,
) -> str:
    """Runs a command, echoed first (or its label); returns its stdout when `capture`.
    A failure becomes the one failure line; with `explain`, the command's stderr is
    passed through as it comes, and a line `explain` makes of it replaces that one."""
    step = label or shlex.join(str(c) for c in cmd)
    print("$ " + step, flush=True)
    try:
        result = run(cmd, env=env, capture=capture, step=step, tee_stderr=explain is not None)
    except KeyboardInterrupt:
        raise Interrupted("SIGINT (Ctrl-C)", step) from None
    if result.returncode != 0:
        why = explain(result.stderr or "") if explain else None
        raise DevkitError(why) if why else failure(cmd, result.returncode, label)
    return result.stdout or ""


def python_json(python: Path | str, script: str, *args: str, label: str) -> Any:
    """Runs `script` in the interpreter `python` (with `check`: one failure line) and
    returns the JSON of the last line it prints."""
    out = check([str(python), "-c", script, *args], capture=True, label=label)
    return json.loads(out.strip().splitlines()[-1])


def probe(
    cmd: Sequence[str],
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess | None:
    """A quick question to a tool (`--version`, a query), its output captured as text;
    None when it can't start or doesn't answer within `timeout`."""
    try:
        return subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def use_utf8_for_a_non_ascii_checkout() -> None:
    """Python 3.11 reads .pth files in the locale's encoding (UTF-8 mode or not), and the
    editable install's .pth names the checkout: under LC_ALL=C, with a non-ASCII path, the
    venv's Python can't start. The session's processes get a UTF-8 locale, with a word."""
    import codecs
    import locale

    getencoding = getattr(locale, "getencoding", lambda: locale.getpreferredencoding(False))
    encoding = codecs.lookup(getencoding()).name
    if str(ROOT).isascii() or encoding == "utf-8":
        return
    os.environ["LC_ALL"] = "C.UTF-8"
    log.say(
        f"the checkout's path {ROOT} is not ASCII and the locale's encoding is {encoding}: "
        "the session runs with LC_ALL=C.UTF-8; set it too to use the venv's Python yourself"
    )
