"""Cold, no-op and one-file rebuild times of `nox -s build-cpu`, in a fresh copy.

    nox -s bench-build

Copies the checkout (tracked and untracked, not ignored, files) to a temp
folder, gives ccache an empty cache there, then runs build-cpu three times:
cold, again with nothing changed, and after touching one .cpp. Prints wall
times, the ratios to the cold run, and which objects ninja rebuilt.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from devkit.pipeline import copy_checkout, ninja_outputs  # noqa: E402

TOUCHED = "csrc/cpu/activation.cpp"


def timed_build(copy: Path, env: dict[str, str]) -> tuple[float, set[str]]:
    started, started_ns = time.monotonic(), time.time_ns()
    subprocess.run(
        [sys.executable, "-m", "nox", "-s", "build-cpu"],
        cwd=copy,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.monotonic() - started
    (build_dir,) = (copy / "build").glob("cpu-*")
    return wall, ninja_outputs(build_dir, started_ns)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "checkout"
        copy_checkout(copy)
        env = {**os.environ, "CCACHE_DIR": str(Path(tmp) / "ccache")}
        cold, cold_objs = timed_build(copy, env)
        noop, noop_objs = timed_build(copy, env)
        (copy / TOUCHED).touch()
        touched, touched_objs = timed_build(copy, env)
    print(f"cold (empty ccache, uv cache as is): {cold:6.1f} s, {len(cold_objs)} objects compiled")
    print(f"no change:   {noop:6.1f} s = {noop / cold:5.1%} of cold, {len(noop_objs)} compiled")
    print(
        f"touched {TOUCHED}: {touched:6.1f} s = {touched / cold:5.1%} of cold, "
        f"compiled {sorted(touched_objs)}"
    )


if __name__ == "__main__":
    main()
