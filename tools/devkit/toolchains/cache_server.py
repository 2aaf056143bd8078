"""The compiler cache's server: started, its store checked, watched while a build runs.

sccache fails a compile when its server can't reach the store at startup, so
`serve` checks the store before the build (a TCP connect, then sccache's own
startup check) and falls back to the local cache with one warning line; while
the build runs, a watchdog restarts the server on the local cache alone if the
store stops answering. `cache_stats` reads the counters a build summary shows.
Stdlib only: the build backend imports this (by hand, it checks the store too).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devkit.foundation import envs, procs
from devkit.toolchains import dist
from devkit.toolchains.compiler_cache import (
    PORT_LOW,
    CompilerCache,
    environ_for,
    next_port,
    redact,
    resolve_local,
    server_port,
)

PROBE_TIMEOUT_S = 3.0  # a TCP connect to the store
START_TIMEOUT_S = 30.0  # sccache --start-server (its own limit is 10 s)
WATCH_INTERVAL_S = 1.0
PORTS_TRIED = 8  # ports held by something else that a server moves past


def _sccache(cache: CompilerCache, *args: str, timeout: float = START_TIMEOUT_S):
    done = procs.probe([cache.launcher, *args], timeout, env=environ_for(cache, os.environ))
    if done is None:
        return subprocess.CompletedProcess(args, 124, "", f"no answer within {timeout:.0f} s")
    return done


def store_address(cache: CompilerCache) -> tuple[str, int] | None:
    """The host and port the store is reached at; None when sccache alone knows."""
    if not cache.remote:
        return None
    parts = urlsplit(cache.remote)
    if cache.backend == "redis":
        return parts.hostname or "localhost", parts.port or 6379
    if cache.backend == "webdav":
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    endpoint = cache.environ.get("SCCACHE_ENDPOINT") or os.environ.get("SCCACHE_ENDPOINT")
    if endpoint:
        ep = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        return ep.hostname or "", ep.port or (80 if ep.scheme == "http" else 443)
    if cache.backend == "gcs":
        return "storage.googleapis.com", 443
    region = cache.environ.get("SCCACHE_REGION") or os.environ.get("SCCACHE_REGION")
    return (f"s3.{region}.amazonaws.com" if region else "s3.amazonaws.com"), 443


def connect_error(address: tuple[str, int] | None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a TCP connection to `address` fails; None when it connects (or nothing to try)."""
    if address is None:
        return None
    try:
        with socket.create_connection(address, timeout=timeout):
            return None
    except OSError as exc:
        return f"can't connect to {address[0]}:{address[1]} ({exc.strerror or exc})"


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [
        line.strip().removeprefix("sccache: error: ")
        for line in (result.stderr or result.stdout or "").splitlines()
        if line.strip() and not line.startswith(("Run with", "sccache: Starting"))
    ]
    return (lines[0] if lines else f"exit code {result.returncode}")[:200]


def _listening(port: str | None, wait_s: float = 1.0) -> bool:
    """Whether a server accepts connections on 127.0.0.1:`port` (one that is starting
    binds a moment before it listens, hence the wait)."""
    deadline = time.monotonic() + wait_s
    while True:
        if port and connect_error(("127.0.0.1", int(port)), timeout=wait_s) is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _with_port(cache: CompilerCache, port: str) -> CompilerCache:
    return replace(cache, environ={**cache.environ, "SCCACHE_SERVER_PORT": port})


def _start_on(cache: CompilerCache) -> tuple[str | None, bool]:
    """Starts the server of `cache` on its port: (why not or None, whether the port is
    held by something that is not a server, so another port should be tried)."""
    result = _sccache(cache, "--start-server")
    if result.returncode == 0:
        return None, False
    if "Address in use" in (result.stderr or ""):
        # Another build of this checkout started it (the same config): reuse it. Or
        # something else holds the port without a server listening; `--show-stats`
        # can't tell (it answers without a server), a connection can.
        if _listening(cache.port):
            return None, False
        return _error_line(result), True
    _sccache(cache, "--stop-server", timeout=10)
    return _error_line(result), False


def start_server(cache: CompilerCache) -> tuple[CompilerCache, str | None]:
    """Starts (or finds running) the sccache server of `cache`: (the cache, on the port
    its server listens on; why it did not start, else None).

    sccache's startup checks the store (it reads and writes a check object),
    so a wrong password or a missing bucket fails here, not in a compile. A port
    held by something else moves the server to the next port of the checkout's
    sequence, unless SCCACHE_SERVER_PORT was given.
    """
    tries = 1 if "SCCACHE_SERVER_PORT" in os.environ else PORTS_TRIED
    on = cache
    for _ in range(tries):
        error, held = _start_on(on)
        if not held:
            return on, error
        on = _with_port(on, next_port(on.port or str(PORT_LOW)))
    if tries == 1:
        return cache, f"{error} (SCCACHE_SERVER_PORT={cache.port} is taken; set it to a free one)"
    return cache, f"{error} ({tries} ports tried; set SCCACHE_SERVER_PORT to a free one)"


def stop_server(cache: CompilerCache | None) -> None:
    if cache and cache.kind == "sccache":
        _sccache(cache, "--stop-server", timeout=30)


def check_store(cache: CompilerCache) -> str | None:
    """Why the store of `cache` does not answer; None when it does (doctor's probe).

    A TCP connect, then sccache's own startup check on a throwaway server
    (a free port, an empty local cache in a temporary directory).
    """
    error = connect_error(store_address(cache))
    if error or not cache.remote:
        return error
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="devkit-sccache-") as tmp:
        probe = _with_port(cache, port)
        probe = replace(probe, environ={**probe.environ, "SCCACHE_DIR": tmp})
        probe, error = start_server(probe)
        stop_server(probe)
    return error


@dataclass
class Served:
    """The cache a build uses, and its counters from before the build."""

    cache: CompilerCache | None
    before: CacheStats | None = None
    restarted: bool = False  # the store died mid-build: the server was restarted without it

    def lookups(self) -> CacheStats | None:
        """This build's lookups (since the restart, if the server was restarted)."""
        after = cache_stats(self.cache)
        if after is None or self.before is None:
            return None
        return after if self.restarted else after - self.before


def _watch(served: Served, stop: threading.Event, warn: Callable[[str], None]) -> None:
    """Restarts the server on the local cache alone (same port) if the store stops answering."""
    cache = served.cache
    assert cache is not None
    address = store_address(cache)
    while not stop.wait(WATCH_INTERVAL_S):
        error = connect_error(address)
        if error is None or stop.is_set():
            continue
        local = resolve_local(cache, error)
        local = _with_port(local, cache.port or "")
        warn(
            f"warning: the compiler-cache store {redact(cache.remote or '')} stopped answering "
            f"mid-build ({error}); the build goes on with the local cache"
        )
        stop_server(cache)
        error, _ = _start_on(local)  # the same port: the compiles running know no other
        if error:
            warn(
                f"warning: sccache's server did not restart ({error}); the compiles left fail, "
                "and the next run starts it afresh"
            )
        served.cache, served.restarted = local, True
        return


def ready(cache: CompilerCache | None, warn: Callable[[str], None]) -> CompilerCache | None:
    """`cache` with its server up; without its store if the store does not answer
    (one warning line); None if even the local server won't start."""
    if cache is None or cache.kind != "sccache":
        return cache
    if cache.dist:
        cache = _dist_ready(cache, warn)
    if cache.remote:
        error = connect_error(store_address(cache))
        if error is None:
            cache, error = start_server(cache)
        if error is None:
            return cache
        warn(
            f"warning: the compiler-cache store {redact(cache.remote)} does not answer "
            f"({error}); building with the local cache only"
        )
        cache = resolve_local(cache, error)
    cache, error = start_server(cache)
    if error:
        warn(f"warning: sccache's server did not start ({error}); building without a cache")
        return None
    return cache


def _dist_ready(cache: CompilerCache, warn: Callable[[str], None]) -> CompilerCache:
    """`cache` with its cluster's client config written; without the cluster (one
    warning line, another server port) when the cluster can't take compiles."""
    cluster = dist.resolve()
    conf = cache.environ.get("SCCACHE_CONF")
    error = "is not used: SCCACHE_CONF is set by hand" if not (cluster and conf) else None
    error = error or dist.prepare(cluster, Path(conf))
    if error is None:
        return cache
    warn(f"warning: the compile cluster {cache.dist} {error}; compiling on this machine only")
    return without_dist(cache)


def without_dist(cache: CompilerCache) -> CompilerCache:
    """`cache` compiling here alone: no client config, so a server of its own (another port)."""
    settings = {k: v for k, v in cache.environ.items() if k != "SCCACHE_CONF"}
    if "SCCACHE_SERVER_PORT" not in os.environ:
        root = Path(settings.get("SCCACHE_BASEDIRS") or envs.ROOT)
        settings["SCCACHE_SERVER_PORT"] = server_port(root, {**settings, "dist": "off"})
    return replace(cache, dist=None, environ=settings)


@contextlib.contextmanager
def serve(cache: CompilerCache | None, warn: Callable[[str], None]) -> Iterator[Served]:
    """The cache a build should use, its server up, and watched while the build runs.

    A store that doesn't answer is one warning line and the local cache. The
    server stays up afterwards for the next build of this checkout (sccache
    stops it after 10 idle minutes; `sccache --stop-server` with the port
    doctor prints stops it now).
    """
    cache = ready(cache, warn)
    served = Served(cache, cache_stats(cache))
    stop = threading.Event()
    watcher = None
    if cache is not None and cache.remote:
        watcher = threading.Thread(target=_watch, args=(served, stop, warn), daemon=True)
        watcher.start()
    try:
        yield served
    finally:
        stop.set()
        if watcher:
            watcher.join()


# -- statistics ---------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """Compiler-cache lookups: hits from the local cache, hits from the store, misses."""

    local_hits: int
    remote_hits: int
    misses: int
    split: bool = True  # False: sccache did not say which level hit (a read-only store)

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(
            self.local_hits - other.local_hits,
            self.remote_hits - other.remote_hits,
            self.misses - other.misses,
            self.split and other.split,
        )

    @property
    def lookups(self) -> int:
        return self.local_hits + self.remote_hits + self.misses

    def describe(self) -> str:
        if self.lookups == 0:
            return "no compiler-cache lookups"
        if not self.split:
            hits = self.local_hits + self.remote_hits
            return f"cache: {hits} hits, local or remote, {self.misses} misses"
        return (
            f"cache: {self.local_hits} local hits, {self.remote_hits} remote hits, "
            f"{self.misses} misses"
        )


def parse_ccache_stats(text: str) -> CacheStats:
    """Reads `ccache --print-stats` (one `key<TAB>value` a line)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().isdigit():
            values[key.strip()] = int(value)
    hits = values.get("direct_cache_hit", 0) + values.get("preprocessed_cache_hit", 0)
    remote = values.get("remote_storage_hit", 0)
    local = values.get("local_storage_hit", hits - remote)
    return CacheStats(local, remote, values.get("cache_miss", 0))


def _count(section: Any) -> int:
    return sum((section or {}).get("counts", {}).values())


def parse_sccache_stats(text: str, remote: bool) -> CacheStats:
    """Reads `sccache --show-stats --stats-format=json`: per level when it has levels."""
    stats = json.loads(text)["stats"]
    hits, misses = _count(stats.get("cache_hits")), _count(stats.get("cache_misses"))
    levels = stats.get("multi_level") or []
    if levels:
        local = sum(level["hits"] for level in levels if "(disk)" in level["name"])
        return CacheStats(local, hits - local, misses)
    # sccache 0.16 has no per-level counters when a level is read-only.
    return CacheStats(0, hits, misses, split=False) if remote else CacheStats(hits, 0, misses)


def cache_stats(cache: CompilerCache | None) -> CacheStats | None:
    """Cumulative counters of the cache (its server, for sccache); None when unknown."""
    if cache is None:
        return None
    if cache.kind == "ccache":
        env = environ_for(cache, os.environ)
        out = procs.probe([cache.launcher, "--print-stats"], timeout=30, env=env)
        return parse_ccache_stats(out.stdout) if out and out.returncode == 0 else None
    result = _sccache(cache, "--show-stats", "--stats-format=json", timeout=30)
    if result.returncode != 0:
        return None
    try:
        return parse_sccache_stats(result.stdout, bool(cache.remote))
    except (ValueError, KeyError, TypeError):
        return None
