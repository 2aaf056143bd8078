"""The shared compiler cache end to end: real builds against a real Redis and a real
S3-compatible server (moto) on 127.0.0.1, started here and stopped after.

Clone A builds cold and fills the store; clone B, in another directory with an
empty local cache, takes its compiles from the store. Then the faults: a store
that is not there, a wrong password, a missing bucket, a store that dies
mid-build: each is one warning line and a build that succeeds.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RedisServer, free_port, stop_sccache
from test_sessions import nox

from devkit.foundation.gitbase import copy_checkout

SUMMARY = re.compile(
    r"built cpu in [\d.]+s: compiled (\d+)/(\d+) translation units \(sccache cache: "
    r"(?:(\d+) local hits, (\d+) remote hits|(\d+) hits, local or remote), (\d+) misses\)"
)
WARNING = "warning: the compiler-cache store"

# Cold compiles, five of them: minutes. `nox -s tests-e2e` runs this module on its own.
pytestmark = pytest.mark.nightly


class Clones:
    """Checkouts that build with sccache; every sccache server they start is stopped after."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports: set[str] = set()

    def clone(self, *where: str) -> Path:
        dest = self.tmp.joinpath(*where)
        dest.mkdir(parents=True)
        return copy_checkout(dest)

    def _record_ports(self, copy: Path) -> None:
        for plan_file in (copy / "build").glob("*/plan.json"):
            cache = json.loads(plan_file.read_text())["compiler_cache"] or {}
            port = cache.get("environ", {}).get("SCCACHE_SERVER_PORT")
            if port:
                self.ports.add(port)

    def build(self, copy: Path, **environ: str) -> subprocess.CompletedProcess:
        try:
            return nox(copy, "-s", "build-cpu", timeout=1800, **environ)
        finally:
            self._record_ports(copy)

    def stop_all(self) -> None:
        for port in self.ports:
            stop_sccache(port)
        # A server a build moved to another port (its own was held) is not in any
        # plan.json: stop every sccache still running from these clones' venvs.
        for pid in self._servers_left():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _servers_left(self) -> list[int]:
        left = []
        for exe in Path("/proc").glob("[0-9]*/exe"):
            with contextlib.suppress(OSError):
                if exe.resolve().is_relative_to(self.tmp.resolve()):
                    left.append(int(exe.parent.name))
        return left


def counts(result: subprocess.CompletedProcess) -> tuple[int, int, int, int, int]:
    """(compiled, total, local hits, remote hits, misses) from the summary line; with a
    read-only store sccache doesn't tell local from remote hits: (.., None, hits, ..)."""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    match = SUMMARY.search(result.stderr)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    compiled, total, local, remote, either, misses = match.groups()
    if either is not None:
        return int(compiled), int(total), None, int(either), int(misses)
    return int(compiled), int(total), int(local), int(remote), int(misses)


def warnings(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if WARNING in line]


def change(copy: Path, *names: str) -> None:
    """A real change to each source (a new definition), so its compile misses the cache."""
    for name in names:
        path = copy / name
        path.write_text(path.read_text() + f"\nstatic int devkit_test_{time.time_ns()} = 1;\n")


def test_redis_store_is_shared_across_checkouts_and_read_only_writes_nothing(
    clones, redis_server, redis_with_password
):
    store = {"VLLM_COMPILER_CACHE_REMOTE": redis_server.url}
    a = clones.clone("team", "a")
    compiled, total, local, remote, misses = counts(clones.build(a, **store))
    assert compiled == total >= 5 and (local, remote, misses) == (0, 0, total)
    filled = redis_server.keys()
    assert filled >= total

    # A fork's PR: another directory, an empty local cache, reads only.
    b = clones.clone("elsewhere", "fork", "b")
    read_only = {**store, "VLLM_COMPILER_CACHE_READ_ONLY": "1"}
    result = clones.build(b, **read_only)
    compiled, total_b, local, remote, misses = counts(result)
    assert compiled == total_b == total
    # Its local cache was empty: every hit is from the store.
    assert local is None and remote >= 0.9 * total and remote + misses == total
    assert redis_server.keys() == filled  # nothing written
    assert not warnings(result)

    # A change in the fork: a miss, compiled, still nothing written.
    change(b, "csrc/cpu/activation.cpp")
    assert counts(clones.build(b, **read_only))[3:] == (0, 1)
    assert redis_server.keys() == filled

    # Faults: nothing listening, then a wrong password; one warning each, the build goes on.
    closed = {"VLLM_COMPILER_CACHE_REMOTE": f"redis://127.0.0.1:{free_port()}"}
    change(b, "csrc/cpu/activation.cpp")
    result = clones.build(b, **closed)
    assert counts(result)[4] == 1
    (line,) = warnings(result)
    assert "does not answer (can't connect to 127.0.0.1:" in line
    assert line.endswith("building with the local cache only")
    wrong = {"VLLM_COMPILER_CACHE_REMOTE": redis_with_password.replace(":right@", ":wrong@")}
    change(b, "csrc/cpu/activation.cpp")
    result = clones.build(b, **wrong)
    assert counts(result)[4] == 1
    assert len(warnings(result)) == 1 and "redis://:***@127.0.0.1:" in warnings(result)[0]


def test_s3_store_is_shared_across_checkouts(clones, s3_server):
    a = clones.clone("s3", "a")
    compiled, total, local, remote, misses = counts(clones.build(a, **s3_server.environ()))
    assert (local, remote, misses) == (0, 0, total) and s3_server.keys() >= total

    b = clones.clone("s3-elsewhere", "b")
    result = clones.build(b, **s3_server.environ())
    compiled, total_b, local, remote, misses = counts(result)
    assert compiled == total_b == total and local == 0
    assert remote >= 0.9 * total and remote + misses == total
    assert not warnings(result)

    # A bucket that does not exist (what wrong credentials look like to sccache):
    # one warning, and B's own local cache, filled from the store, serves it.
    missing = {**s3_server.environ(), "VLLM_COMPILER_CACHE_REMOTE": "s3://no-such-bucket"}
    change(b, "csrc/cpu/layernorm.cpp")
    result = clones.build(b, **missing)
    assert counts(result)[4] == 1
    (line,) = warnings(result)
    assert "NoSuchBucket" in line or "does not exist" in line, line


def test_a_store_that_dies_mid_build(clones):
    """Redis is killed after the build's first write; the build finishes on the local cache."""
    redis = RedisServer()
    try:
        copy = clones.clone("dies", "a")
        environ = {"VLLM_COMPILER_CACHE_REMOTE": redis.url}
        process = subprocess.Popen(
            [sys.executable, "-m", "nox", "-s", "build-cpu"],
            cwd=copy,
            env={**nox_environ(), **environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while redis.keys() <= 1 and process.poll() is None:  # the startup check writes one
            time.sleep(0.2)
        killed_at = time.monotonic()
        redis.stop()
        stdout, stderr = process.communicate(timeout=1800)
        after_kill = time.monotonic() - killed_at
    finally:
        redis.stop()
        clones._record_ports(copy)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    compiled, total, *_ = counts(result)
    assert compiled == total
    (line,) = warnings(result)
    assert "stopped answering mid-build" in line
    print(f"build went on {after_kill:.1f}s after the store died")


def nox_environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("NOX", "VIRTUAL_ENV"))}


def test_two_builds_at_once_share_one_server(clones, redis_server):
    """build-cpu and test-plugins (two venvs, two build dirs) at once in one checkout."""
    copy = clones.clone("both", "a")
    environ = {**nox_environ(), "VLLM_COMPILER_CACHE_REMOTE": redis_server.url}
    sessions = (["build-cpu"], ["test-plugins", "--", "--collect-only", "-q"])
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "nox", "-s", *args],
            cwd=copy,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in sessions
    ]
    try:
        outputs = [p.communicate(timeout=1800) for p in processes]
        results = [
            subprocess.CompletedProcess(p.args, p.returncode, *out)
            for p, out in zip(processes, outputs, strict=True)
        ]
    finally:
        clones._record_ports(copy)
    for result in results:
        compiled, total, local, remote, misses = counts(result)
        assert compiled == total and local + remote + misses >= total
        assert not warnings(result)
    plans = [json.loads(p.read_text()) for p in (copy / "build").glob("*/plan.json")]
    ports = {plan["compiler_cache"]["environ"]["SCCACHE_SERVER_PORT"] for plan in plans}
    assert len(plans) == 2 and len(ports) == 1  # one server for the checkout


def test_doctor_shows_the_store_and_whether_it_answers(tmp_path, redis_server):
    copy = copy_checkout(tmp_path)
    result = nox(
        copy, "-s", "doctor", "--", "--target", "cpu", VLLM_COMPILER_CACHE_REMOTE=redis_server.url
    )
    assert result.returncode == 0, result.stdout
    assert f"then store {redis_server.url} (redis, read-write); server port " in result.stdout
    assert re.search(rf"compiler-cache store +{redis_server.url} answers", result.stdout)
    dead = f"redis://127.0.0.1:{free_port()}"
    result = nox(copy, "-s", "doctor", "--", "--target", "cpu", VLLM_COMPILER_CACHE_REMOTE=dead)
    assert result.returncode == 0  # a dead store doesn't stop a build
    assert f"{dead} does NOT answer (can't connect to" in result.stdout
