"""`nox -s build-profile`: where a build's time went, from its .ninja_log.

Writes into <build dir>/profile/:

    slowest.txt   the files, slowest first, with their last compile time
    trace.json    the last ninja run as a Chrome trace (open it in https://ui.perfetto.dev)
    slowest.png   a bar chart of the slowest files (matplotlib, which the session installs)

The table and the trace need only the standard library; the chart imports
matplotlib when it is drawn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.build.progress import LogEntry, read_entries, read_log, source_of
from devkit.toolchains import options as session_options
from devkit.toolchains import targets

OUT_DIR = "profile"


def last_build(path: Path, tolerance_ms: int = 2000) -> list[LogEntry]:
    """The steps of the last ninja run in a .ninja_log, by start time.

    Times in the log count from the start of each run, and ninja (1.12 and
    later) records as a step's mtime the wall-clock time its command started:
    so mtime - start is the run's own start, the same for all of its steps.
    A recompacted log (rewritten in no order) keeps older runs' steps too;
    they have another run start.
    """
    steps = read_entries(path)
    if not steps:
        return []

    def build_start(step: LogEntry) -> int:
        return step.mtime_ns // 1_000_000 - step.start_ms

    last = build_start(steps[-1])
    return sorted(
        (s for s in steps if abs(build_start(s) - last) <= tolerance_ms), key=lambda s: s.start_ms
    )


def slowest(build_dir: Path) -> list[LogEntry]:
    """Every output's last recorded step, slowest first."""
    steps = read_log(build_dir / ".ninja_log").values()
    return sorted((s for s in steps if not s.output.endswith(".util")), key=lambda s: -s.seconds)


def table(steps: Sequence[LogEntry]) -> str:
    width = max([len(source_of(s.output)) for s in steps] + [4])
    lines = [f"{'file':<{width}}  seconds", f"{'-' * width}  -------"]
    lines += [f"{source_of(s.output):<{width}}  {s.seconds:7.1f}" for s in steps]
    return "\n".join(lines) + "\n"


def chrome_trace(steps: Sequence[LogEntry]) -> dict[str, Any]:
    """Complete events ("ph": "X") in microseconds, one lane per job running at once."""
    lanes: list[int] = []  # the end of each lane's last step
    events = []
    for step in sorted(steps, key=lambda s: s.start_ms):
        lane = next((i for i, end in enumerate(lanes) if end <= step.start_ms), len(lanes))
        if lane == len(lanes):
            lanes.append(0)
        lanes[lane] = step.end_ms
        events.append(
            {
                "name": source_of(step.output),
                "cat": "compile" if step.output.endswith((".o", ".obj")) else "build",
                "ph": "X",
                "ts": step.start_ms * 1000,
                "dur": (step.end_ms - step.start_ms) * 1000,
                "pid": 1,
                "tid": lane + 1,
                "args": {"output": step.output},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def bar_chart(steps: Sequence[LogEntry], path: Path, count: int = 20) -> None:
    try:
        import matplotlib
    except ImportError:
        raise DevkitError(
            f"matplotlib is not installed in {sys.executable}; use `nox -s build-profile`, "
            "which installs it"
        ) from None
    matplotlib.use("Agg")  # no display
    from matplotlib import pyplot

    shown = list(steps[:count])[::-1]  # slowest at the top
    figure, axes = pyplot.subplots(figsize=(9, 1 + 0.35 * len(shown)))
    axes.barh([source_of(s.output) for s in shown], [s.seconds for s in shown])
    axes.set_xlabel("seconds (last compile)")
    axes.set_title(f"slowest of {len(steps)} build steps")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def find_build_dir(target: str | None, given: str | None) -> Path:
    """--build-dir, else the newest build dir (of --target) that has a .ninja_log."""
    if given:
        build_dir = Path(given).resolve()
        if not (build_dir / ".ninja_log").is_file():
            raise DevkitError(
                f"{given} has no .ninja_log; build first, or pass another --build-dir"
            )
        return build_dir
    root = targets.build_root()
    found = [
        log.parent
        for log in root.glob("*/.ninja_log")
        if target is None or log.parent.name.startswith(f"{target}-")
    ]
    if not found:
        what = f"the {target} target" if target else "any target"
        raise DevkitError(
            f"no build of {what} under {root}; run `nox -s build-{target or 'cpu'}` first"
        )
    return max(found, key=lambda d: (d / ".ninja_log").stat().st_mtime_ns)


def write(build_dir: Path, chart: bool = True) -> list[Path]:
    """The table, the trace and (with `chart`) the PNG; returns their paths."""
    steps = slowest(build_dir)
    if not steps:
        raise DevkitError(f"{build_dir}/.ninja_log lists no steps; build first")
    out = build_dir / OUT_DIR
    out.mkdir(exist_ok=True)
    paths = [out / "slowest.txt", out / "trace.json"]
    paths[0].write_text(table(steps))
    paths[1].write_text(json.dumps(chrome_trace(last_build(build_dir / ".ninja_log"))) + "\n")
    if chart:
        paths.append(out / "slowest.png")
        bar_chart(steps, paths[-1])
    return paths


def main(argv: Sequence[str]) -> int:
    try:
        options = session_options.parse("build-profile", argv)
        build_dir = find_build_dir(options.target, options.build_dir)
        paths = write(build_dir)
    except session_options.HelpShown as shown:
        print(shown)
        return 0
    except DevkitError as exc:
        print(f"build-profile: {exc}", file=sys.stderr)
        return 1
    steps = slowest(build_dir)
    print(f"build-profile of {build_dir} ({len(steps)} steps in .ninja_log), slowest first:")
    print(table(steps[:10]), end="")
    print(f"table:  {paths[0]}")
    print(f"trace:  {paths[1]} (open in https://ui.perfetto.dev)")
    print(f"chart:  {paths[2]}")
    return 0


if __name__ == "__main__":  # python -m devkit.commands.profile, with tools/ on sys.path
    raise SystemExit(main(sys.argv[1:]))
