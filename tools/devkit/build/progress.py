"""Live progress of a build, followed from its build directory while uv runs.

uv hides the backend's output (unless -v), so the session watches the files
the build writes in the plan's build dir instead:

    CMakeInit.txt   written by scikit-build-core as it starts configuring
    build.ninja     rewritten when CMake has configured
    ninja -n        (a dry run: reads the logs, writes nothing, keeps the
                    depfiles) which objects are still to compile, right
                    after configure
    .ninja_log      one line per finished step: start, end (ms), output

On a terminal that becomes one updating line,
`compiling [3/6] csrc/cpu/layernorm.cpp, 41 s, about 20 s left` (the estimate
from the previous build's durations in the same build dir); without one (CI,
tests) one plain line per finished translation unit,
`[3/6] csrc/cpu/layernorm.cpp (4.1 s)`. The summary names the slowest files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from devkit.foundation import log, procs
from devkit.toolchains import toolchain

POLL_S = 0.25
# File times come from a coarse clock (a tick behind time.time_ns()).
MTIME_SLACK_NS = 100_000_000
_OBJECT = re.compile(r"^\[\d+/\d+\] Building \w+ object (\S+)$", re.M)
_LINK = re.compile(r"^\[\d+/\d+\] Linking \w+ [\w ]+? (\S+)$", re.M)


@dataclass(frozen=True)
class LogEntry:
    """One finished ninja step, from .ninja_log."""

    output: str
    start_ms: int
    end_ms: int
    mtime_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


def read_entries(path: Path) -> list[LogEntry]:
    """Every entry of a .ninja_log (v5 and later), in file order; [] if there is none."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    steps = []
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) == 5 and all(p.isdigit() for p in parts[:3]):
            steps.append(LogEntry(parts[3], int(parts[0]), int(parts[1]), int(parts[2])))
    return steps


def read_log(path: Path) -> dict[str, LogEntry]:
    """The newest entry per output of a .ninja_log."""
    return {step.output: step for step in read_entries(path)}


def ninja_outputs(build_dir: Path, since_ns: int = 0) -> set[str]:
    """Object files in the build's .ninja_log, only those written after since_ns if given."""
    return {
        step.output
        for step in read_entries(build_dir / ".ninja_log")
        if step.output.endswith(".o") and step.mtime_ns >= since_ns
    }


def ninja_objects(build_dir: Path) -> set[str]:
    """Object files the current build.ninja makes (the log also remembers removed ones)."""
    build_file = build_dir / "build.ninja"
    if not build_file.is_file():
        return set()
    return set(re.findall(r"^build (\S+\.o):", build_file.read_text(), re.M))


def source_of(output: str) -> str:
    """The source an object is compiled from: CMakeFiles/_C.dir/csrc/x.cpp.o -> csrc/x.cpp."""
    name = re.sub(r"^CMakeFiles/[^/]+\.dir/", "", output)
    return name.removesuffix(".o").removesuffix(".obj")


def parse_dry_run(text: str) -> tuple[list[str], list[str]]:
    """The objects and the linked files a `ninja -n` would build, in its order."""
    return _OBJECT.findall(text), _LINK.findall(text)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _ninja(build_dir: Path) -> str | None:
    """The ninja CMake configured the build dir with (its CMakeCache.txt), else this
    interpreter's venv's, else PATH's: another version may read the log differently."""
    try:
        cache = (build_dir / "CMakeCache.txt").read_text()
    except OSError:
        cache = ""
    match = re.search(r"^CMAKE_MAKE_PROGRAM:\w+=(.+)$", cache, re.M)
    if match and Path(match[1].strip()).is_file():
        return match[1].strip()
    return toolchain.find_tool("ninja")


def dry_run(build_dir: Path) -> str:
    """`ninja -n` in the build dir: what is still to build. Writes no log, deletes nothing.

    It runs beside the real build, and a dry run "finishes" each compile at once and
    then reads and deletes its depfile, as ninja does after a real one. A depfile is
    there before its compile ends when a compiler cache preprocesses first (sccache
    writes it seconds before an object comes back from the cluster), and sccache then
    fails the unit ("failed to zip up compiler outputs"): `-d keepdepfile` leaves it.
    """
    ninja = _ninja(build_dir)
    if ninja is None:
        return ""
    out = procs.probe([ninja, "-C", str(build_dir), "-n", "-d", "keepdepfile"])
    return out.stdout if out else ""


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


@dataclass
class Follower:
    """Follows one build in `build_dir` that started at `started_ns` (wall clock, ns).

    `poll()` reads the build dir and returns the plain lines of what finished
    since the last poll; `status()` is the one line a terminal shows now.
    """

    build_dir: Path
    jobs: int = 1
    started_ns: int = field(default_factory=time.time_ns)
    clock: Callable[[], float] = time.monotonic
    run_dry: Callable[[Path], str] = dry_run
    phase: str = "waiting"  # waiting, configuring, compiling, linking, installing
    planned: list[str] = field(default_factory=list)  # objects of this build, in order
    links: list[str] = field(default_factory=list)
    done: dict[str, LogEntry] = field(default_factory=dict)  # finished in this build
    previous: dict[str, float] = field(default_factory=dict)  # seconds, the last build's
    _started: float = 0.0
    _phase_started: float = 0.0
    _build_ninja: int = 0
    _last_finish: float = 0.0
    _configured: bool = False
    _reported: int = 0
    _install_said: bool = False
    _unreported: list[LogEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.previous = {o: s.seconds for o, s in read_log(self.build_dir / ".ninja_log").items()}
        self._started = self._phase_started = self._last_finish = self.clock()
        self._build_ninja = _mtime_ns(self.build_dir / "build.ninja")

    def _enter(self, phase: str) -> None:
        self.phase, self._phase_started = phase, self.clock()

    def poll(self) -> list[str]:
        lines: list[str] = []
        init = _mtime_ns(self.build_dir / "CMakeInit.txt")
        if self.phase == "waiting" and init >= self.started_ns - MTIME_SLACK_NS:
            self._enter("configuring")
            lines.append("configuring with cmake")
        build_ninja = _mtime_ns(self.build_dir / "build.ninja")
        if build_ninja >= self.started_ns - MTIME_SLACK_NS and build_ninja != self._build_ninja:
            # Configured (or regenerated): what is left to build. Read the log after
            # the dry run, so a step that finished meanwhile is in one or the other.
            self._build_ninja = build_ninja
            objects, links = parse_dry_run(self.run_dry(self.build_dir))
            first = not self._configured
            self._configured = True
            self._update_done()
            finished = [o for o in self.done if o.endswith((".o", ".obj"))]
            self.planned = _union(self.planned, [*finished, *objects])
            self.links = _union(self.links, links)
            if first:
                configured = self.clock() - self._phase_started
                todo = len(self.planned)
                what = f"{todo} translation unit(s) to compile" if todo else "nothing to compile"
                lines.append(f"configured in {_seconds(configured)}: {what}")
                self._enter("compiling" if todo else "linking" if links else "installing")
        if self._configured:
            lines.extend(self._finished_lines())
        return lines

    def _update_done(self) -> None:
        fresh = [
            step
            for output, step in read_log(self.build_dir / ".ninja_log").items()
            if step.mtime_ns >= self.started_ns - MTIME_SLACK_NS and output not in self.done
        ]
        for step in sorted(fresh, key=lambda s: s.end_ms):
            self.done[step.output] = step
            self._unreported.append(step)

    def _finished_lines(self) -> list[str]:
        lines = []
        self._update_done()
        if self._unreported:
            self._last_finish = self.clock()
        for step in self._unreported:
            if step.output in self.links:
                lines.append(f"linked {step.output} ({_seconds(step.seconds)})")
            elif step.output.endswith((".o", ".obj")):
                if step.output not in self.planned:
                    self.planned.append(step.output)
                self._reported += 1
                lines.append(
                    f"[{self._reported}/{len(self.planned)}] {source_of(step.output)} "
                    f"({_seconds(step.seconds)})"
                )
        self._unreported.clear()
        if self.phase == "compiling" and all(o in self.done for o in self.planned):
            self._enter("linking" if any(o not in self.done for o in self.links) else "installing")
        if self.phase == "linking" and all(o in self.done for o in self.links):
            self._enter("installing")
        if self.phase == "installing" and not self._install_said:
            self._install_said = True
            lines.append("installing into the venv")
        return lines

    def left(self) -> float | None:
        """Seconds the compiles still need, from the last build's durations; None: unknown."""
        todo = [o for o in self.planned if o not in self.done]
        if not todo or any(o not in self.previous for o in todo):
            return None
        since = self.clock() - self._last_finish
        return max(0.0, sum(self.previous[o] for o in todo) / max(1, self.jobs) - since)

    def status(self) -> str:
        elapsed = _seconds(self.clock() - self._started)
        if self.phase == "compiling":
            todo = [o for o in self.planned if o not in self.done]
            n = len(self.planned) - len(todo) + 1
            left = self.left()
            estimate = f", about {_seconds(left)} left" if left is not None else ""
            # Ninja starts them in its order, `jobs` at a time: the first is the oldest.
            running = todo[: max(1, self.jobs)]
            now = source_of(running[0]) if running else ""
            if len(running) > 1:
                now += f" and {len(running) - 1} more"
            return f"compiling [{n}/{len(self.planned)}] {now}, {elapsed}{estimate}"
        if self.phase == "linking":
            return f"linking {', '.join(self.links)}, {elapsed}"
        if self.phase == "installing":
            return f"installing into the venv, {elapsed}"
        if self.phase == "configuring":
            return f"configuring with cmake, {elapsed}"
        return f"preparing the build (uv), {elapsed}"

    def compiled(self) -> list[LogEntry]:
        return [s for s in self.done.values() if s.output.endswith((".o", ".obj"))]

    def slowest(self, count: int = 3) -> list[LogEntry]:
        return sorted(self.compiled(), key=lambda s: s.seconds, reverse=True)[:count]

    def summary(self) -> str | None:
        compiled = self.compiled()
        if not compiled:
            return None
        names = ", ".join(f"{source_of(s.output)} {_seconds(s.seconds)}" for s in self.slowest())
        return f"compiled {len(compiled)} file(s); slowest: {names}"


def _union(first: list[str], more: Sequence[str]) -> list[str]:
    return [*first, *(o for o in dict.fromkeys(more) if o not in first)]


class Screen:
    """Prints plain lines and, on a terminal, keeps one status line under them."""

    def __init__(self, stream: TextIO = sys.stdout, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.lock = threading.Lock()
        self._status = ""

    def _clear(self) -> None:
        if self.tty and self._status:
            self.stream.write("\r\033[K")

    def line(self, text: str) -> None:
        with self.lock:
            self._clear()
            self.stream.write(text + "\n")
            if self.tty and self._status:
                self.stream.write(self._status)
            self.stream.flush()

    def status(self, text: str) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size().columns - 1
        with self.lock:
            self._clear()
            self._status = text[:width]
            self.stream.write(self._status)
            self.stream.flush()

    def done(self) -> None:
        with self.lock:
            self._clear()
            self._status = ""
            self.stream.flush()


def follow(
    cmd: Sequence[str],
    env: dict[str, str] | None,
    build_dir: Path,
    jobs: int,
    screen: Screen | None = None,
    prefix: str = log.PREFIX,
) -> Follower:
    """Runs `cmd` (uv running the backend), showing the build's progress; returns the
    follower, whose `summary()` names the slowest files. uv's own lines are shown as
    they come; a failure is one DevkitError line."""
    screen = screen or Screen()
    started_ns = time.time_ns()
    follower = Follower(build_dir, jobs, started_ns)
    step = " ".join(str(c) for c in cmd)
    screen.line("$ " + step)
    # A process group of its own (devkit.foundation.procs): an interrupted build stops all of it.
    procs.current_step = step
    process = procs.popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )

    def copy_output() -> None:
        assert process.stdout is not None
        for text in process.stdout:
            screen.line(text.rstrip("\n"))

    reader = threading.Thread(target=copy_output, daemon=True)
    try:
        reader.start()
        while process.poll() is None:
            for text in follower.poll():
                screen.line(prefix + text)
            screen.status(prefix + follower.status())
            time.sleep(POLL_S)
        reader.join()
        for text in follower.poll():  # what finished in the last interval
            screen.line(prefix + text)
    except KeyboardInterrupt:
        raise procs.Interrupted("SIGINT (Ctrl-C)", step) from None
    finally:
        if process.poll() is None:  # interrupted: don't leave the build running
            procs.stop_tree(process.pid)
            process.wait()
        procs.current_step = None
        screen.done()
    if process.returncode != 0:
        raise procs.failure(cmd, process.returncode)
    return follower
