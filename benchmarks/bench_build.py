"""Cold, no-op and one-file rebuild times of `nox -s build-cpu`, in a fresh copy,
and the precompiled path's time against the cold build.

    nox -s bench-build

Copies the checkout (tracked and untracked, not ignored, files) to a temp
folder, gives ccache an empty cache there, then runs build-cpu three times:
cold, again with nothing changed, and after touching one .cpp. Then it
commits the copy, publishes its wheel into a wheel index in the temp folder
(`nox -s wheel -- --index`) and times `nox -s dev-precompiled` from an empty
venv against it. Prints wall times, the ratios to the cold run, and which
objects ninja rebuilt. Both the cold build and dev-precompiled start from an
empty venv with the uv cache as it is.

The edit loop: the same kind of edit of one .cpp (a new declaration), rebuilt with
`cmake --build --preset cpu --target install` and with `nox -s build-cpu`,
alternating, three times each; the medians and their ratio.

Then the second-checkout case of a shared compiler cache, for build-cpu and
the compile-only build-cuda (when nvcc is here): a redis-server on 127.0.0.1
is the team's store (VLLM_COMPILER_CACHE_REMOTE); clone A builds cold and
fills it, clone B in another directory, with an empty local cache, builds from
it. Prints B's time as a share of A's, and what a store that does not answer
(a closed port) costs a build.

`--against REF`: instead, cold `build-cpu` of this tree against REF's (a
commit before a change to what every unit compiles, e.g. the stable-ABI port),
alternating, each round in a fresh copy with an empty ccache and no venv; the
medians and their ratio, then each translation unit's peak memory, compiled
again alone under /usr/bin/time from the build's compile_commands.json.

`--cluster`: instead, a cold build here (sccache, empty cache) against a cold
build through an sccache-dist farm of two build servers on this machine
(`nox -s farm`'s code; needs root and bubblewrap), with how many compiler runs
went to the cluster. On one machine the servers share its cores: this shows
the remote share and the overhead, not a farm's speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from devkit.build.progress import ninja_outputs  # noqa: E402
from devkit.foundation.gitbase import copy_checkout  # noqa: E402

TOUCHED = "csrc/cpu/activation.cpp"
EDITED = "csrc/op_checks.cpp"


def nox(copy: Path, env: dict[str, str], *args: str) -> float:
    """Runs a session in the copy; returns its wall time."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "nox", *args], cwd=copy, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"nox {' '.join(args)} failed in {copy}:\n{out.stderr[-3000:]}")
    return time.monotonic() - started


def git(copy: Path, *args: str) -> None:
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", *identity, *args], cwd=copy, check=True, capture_output=True)


def timed_build(copy: Path, env: dict[str, str]) -> tuple[float, set[str]]:
    started_ns = time.time_ns()
    wall = nox(copy, env, "-s", "build-cpu")
    (build_dir,) = (copy / "build").glob("cpu-*")
    return wall, ninja_outputs(build_dir, started_ns)


def edit_loop(copy: Path, env: dict[str, str], runs: int = 3) -> tuple[list[float], list[float]]:
    """Seconds of the preset rebuild and of build-cpu, each after the same kind of edit
    (a new declaration in EDITED, so the compiler cache can't answer), alternating."""
    source = copy / EDITED
    cmake = copy / ".venv-cpu" / "bin" / "cmake"
    preset: list[float] = []
    session: list[float] = []
    for run in range(runs):
        for times, how in ((preset, "preset"), (session, "nox")):
            with source.open("a") as out:
                # Code, not a comment: ccache would find a comment-only change.
                out.write(f"namespace {{ [[maybe_unused]] int bench_edit_{run}_{how}; }}\n")
            started = time.monotonic()
            if how == "preset":
                cmd = [cmake, "--build", "--preset", "cpu", "--target", "install"]
                subprocess.run(cmd, cwd=copy, env=env, check=True, capture_output=True)
                times.append(time.monotonic() - started)
            else:
                times.append(nox(copy, env, "-s", "build-cpu"))
    return preset, session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary(copy: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    """Wall time of a session and its summary line's cache counts."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "nox", *args], cwd=copy, env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {copy}:\n{out.stderr[-3000:]}")
    found = re.search(r"\((\S+ cache: [^)]*)\)(?:; (cluster \S+: [^;]*))?", out.stderr)
    if not found:
        return wall, "cache counts unknown"
    return wall, found[1] + (f"; {found[2]}" if found[2] else "")


def stop_sccache(copy: Path) -> None:
    """Stops the sccache servers the builds of `copy` started (ports in their plans)."""
    for plan_file in (copy / "build").glob("*/plan.json"):
        cache = json.loads(plan_file.read_text()).get("compiler_cache") or {}
        port = cache.get("environ", {}).get("SCCACHE_SERVER_PORT")
        if port and cache.get("kind") == "sccache":
            subprocess.run(
                [cache["launcher"], "--stop-server"],
                env={"SCCACHE_SERVER_PORT": port},
                capture_output=True,
            )


def second_checkout(tmp: Path, name: str, args: list[str]) -> None:
    """Clone A cold against an empty store, clone B elsewhere from the store; B/A."""
    redis = shutil.which("redis-server")
    if redis is None:
        print(f"{name}: second checkout skipped: needs redis-server (apt-get install redis-server)")
        return
    port = free_port()
    server = subprocess.Popen(
        [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    slug = re.sub(r"\W+", "-", name)
    clones = [copy_checkout(tmp / slug / "a"), copy_checkout(tmp / f"{slug}-elsewhere" / "b")]
    try:
        time.sleep(0.5)
        env = {**os.environ, "VLLM_COMPILER_CACHE_REMOTE": f"redis://127.0.0.1:{port}"}
        a, a_counts = summary(clones[0], env, *args)
        b, b_counts = summary(clones[1], env, *args)
        print(f"{name}, clone A cold, empty store: {a:6.1f} s ({a_counts})")
        print(f"{name}, clone B from the store:    {b:6.1f} s = {b / a:5.1%} of A ({b_counts})")
        # A store that does not answer: the same no-op build, with and without it.
        base, _ = summary(clones[1], env, *args)
        dead = {**env, "VLLM_COMPILER_CACHE_REMOTE": f"redis://127.0.0.1:{free_port()}"}
        down, _ = summary(clones[1], dead, *args)
        print(f"{name}, a store that does not answer costs {down - base:+.1f} s (no-op build)")
    finally:
        try:
            for copy in clones:
                stop_sccache(copy)
        finally:
            server.terminate()
            server.wait()


def through_cluster(tmp: Path, name: str, args: list[str]) -> None:
    """A cold build here against a cold build through two local build servers."""
    from devkit.commands.farm import Farm

    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        print(f"{name}: cluster skipped: build servers need root and bubblewrap")
        return
    slug = re.sub(r"\W+", "-", name)
    here_copy, there_copy = copy_checkout(tmp / slug / "here"), copy_checkout(tmp / slug / "dist")
    with Farm(tmp / f"{slug}-farm", servers=2) as farm:
        try:
            env = {**os.environ, "VLLM_COMPILER_CACHE": "sccache"}
            here, here_counts = summary(here_copy, env, *args)
            env.update(VLLM_COMPILER_DIST=farm.url)
            env.update(VLLM_COMPILER_DIST_TOKEN_FILE=str(farm.token_file))
            there, there_counts = summary(there_copy, env, *args)
        finally:
            for copy in (here_copy, there_copy):
                stop_sccache(copy)
    print(f"{name}, cold here:                {here:6.1f} s ({here_counts})")
    share = f"{there / here:5.1%} of here"
    print(f"{name}, cold through 2 servers:   {there:6.1f} s = {share} ({there_counts})")


def export(ref: str, dest: Path) -> Path:
    """REF's tracked files, as `git archive` writes them, in dest."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def unit_peaks(tree: Path) -> dict[str, int]:
    """Peak RSS (bytes) of each translation unit of tree's CPU build, compiled alone."""
    (build_dir,) = (tree / "build").glob("cpu-*")
    peaks = {}
    for entry in json.loads((build_dir / "compile_commands.json").read_text()):
        cmd = shlex.split(entry["command"])
        cmd = [word for word in cmd if not word.endswith(("ccache", "sccache"))]
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *cmd],
            cwd=entry["directory"],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{entry['file']} did not compile again alone:\n{out.stderr[-2000:]}")
        name = str(Path(entry["file"]).resolve().relative_to(tree.resolve()))
        peaks[name] = int(out.stderr.strip().splitlines()[-1]) * 1024
    return peaks


def against(ref: str, rounds: int) -> None:
    """Cold build-cpu of this tree and of REF's, alternating; then their units' peak RSS."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", ref], cwd=ROOT, capture_output=True, text=True
    )
    if sha.returncode != 0:
        raise SystemExit(f"bench_build: --against {ref} is no commit here; name one, e.g. main")
    times: dict[str, list[float]] = {"this tree": [], ref: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for name in times:
                slug = re.sub(r"\W+", "-", name)
                tree = Path(tmp) / f"{round_}-{slug}"
                if name == ref:
                    export(ref, tree)
                else:
                    tree.mkdir()
                    copy_checkout(tree)
                env = {**os.environ, "CCACHE_DIR": str(tree.with_name(tree.name + "-ccache"))}
                times[name].append(nox(tree, env, "-s", "build-cpu"))
                print(f"round {round_ + 1}, {name}: cold build-cpu {times[name][-1]:.1f} s")
                if round_ == rounds - 1:
                    peaks = unit_peaks(tree)
                    for unit, peak in sorted(peaks.items()):
                        print(f"  {name}: {unit} peaks at {peak / 2**20:.0f} MiB")
                    print(f"  {name}: largest job {max(peaks.values()) / 2**20:.0f} MiB")
    new, old = (statistics.median(t) for t in times.values())
    print(
        f"cold build-cpu, median of {rounds}: this tree {new:.1f} s, {ref} ({sha.stdout.strip()}) "
        f"{old:.1f} s: after/before = {new / old:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only-second-checkout", action="store_true", help="only the shared-cache case"
    )
    parser.add_argument("--target", choices=["cpu", "cuda"], help="default: both")
    parser.add_argument(
        "--cluster", action="store_true", help="only: cold here vs through sccache-dist"
    )
    parser.add_argument(
        "--against", metavar="REF", help="only: cold build-cpu of this tree against REF's"
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --against (default 2)")
    args = parser.parse_args()
    if args.against:
        against(args.against, args.rounds)
        return
    if not (args.only_second_checkout or args.cluster):
        local_cache()
    case = through_cluster if args.cluster else second_checkout
    with tempfile.TemporaryDirectory() as tmp:
        if args.target != "cuda":
            case(Path(tmp), "build-cpu", ["-s", "build-cpu"])
        nvcc = shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists()
        if args.target != "cpu" and nvcc:
            cuda = ["-s", "build-cuda", "--", "--arch", "9.0"]
            case(Path(tmp), "build-cuda (compile-only, sm_90)", cuda)


def local_cache() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "checkout"
        copy_checkout(copy)
        env = {**os.environ, "CCACHE_DIR": str(Path(tmp) / "ccache")}
        cold, cold_objs = timed_build(copy, env)
        noop, noop_objs = timed_build(copy, env)
        (copy / TOUCHED).touch()
        touched, touched_objs = timed_build(copy, env)
        presets, sessions = edit_loop(copy, env)
        preset, session = statistics.median(presets), statistics.median(sessions)

        git(copy, "init", "-q", "-b", "main")
        git(copy, "add", "-A")
        git(copy, "commit", "-qm", "bench")
        index = Path(tmp) / "index"
        nox(copy, env, "-s", "wheel", "--", "--target", "cpu", "--index", str(index))
        env.update(VLLM_PRECOMPILED_WHEEL_INDEX=str(index), VLLM_CACHE_ROOT=str(Path(tmp) / "c"))
        precompiled = nox(copy, env, "-s", "dev-precompiled", "--", "--target", "cpu")
        # Both sessions end with the smoke check, whose cost is importing torch.
        started = time.monotonic()
        python = copy / ".venv-precompiled-cpu" / "bin" / "python"
        subprocess.run([python, "-c", "import torch"], check=True, capture_output=True)
        torch_import = time.monotonic() - started
    print(f"cold (empty ccache, uv cache as is): {cold:6.1f} s, {len(cold_objs)} objects compiled")
    print(f"no change:   {noop:6.1f} s = {noop / cold:5.1%} of cold, {len(noop_objs)} compiled")
    print(
        f"touched {TOUCHED}: {touched:6.1f} s = {touched / cold:5.1%} of cold, "
        f"compiled {sorted(touched_objs)}"
    )
    print(
        f"edit {EDITED}, median of 3: cmake --build --preset cpu --target install {preset:.1f} s, "
        f"nox -s build-cpu {session:.1f} s: the preset takes {preset / session:.0%}"
    )
    print(f"dev-precompiled, empty venv: {precompiled:6.1f} s = {precompiled / cold:5.1%} of cold")
    rest = (precompiled - torch_import) / (cold - torch_import)
    print(f"  of which importing torch (smoke check): {torch_import:.1f} s; without it {rest:.1%}")


if __name__ == "__main__":
    main()
