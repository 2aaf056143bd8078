"""The compiler cache of a build: ccache on this machine, or sccache with a shared store.

    VLLM_COMPILER_CACHE (auto|ccache|sccache|off) + VLLM_COMPILER_CACHE_REMOTE
        -> resolve() -> CompilerCache (in the build plan) -> the env of every compile

Without a remote, ccache (installed with the build tools) is the default and
its cache is shared by every checkout on the machine (CCACHE_BASEDIR at the
checkout root). With `VLLM_COMPILER_CACHE_REMOTE` (redis://, s3://, gs://,
http(s):// for WebDAV), sccache runs in front of every compiler with two
levels: a local disk cache under the build root, then the shared store
(sccache's own backends; SCCACHE_BASEDIRS at the checkout root, so clones in
other directories hit). Every SCCACHE_* variable already set is left as it is.

sccache fails a compile when its server can't reach the store at startup, so
`serve` checks the store before the build (a TCP connect, then sccache's own
startup check) and falls back to the local cache with one warning line; while
the build runs, a watchdog restarts the server on the local cache alone if the
store stops answering. Stdlib only: the build backend imports this.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from devkit import DevkitError, dist, envs, layout, procs
from devkit.toolchain import find_tool

# URL scheme -> sccache's name for the backend (its SCCACHE_MULTILEVEL_CHAIN level).
BACKENDS = {"redis": "redis", "rediss": "redis", "s3": "s3", "gs": "gcs"}
BACKENDS.update(http="webdav", https="webdav")
# Where each backend's read-only switch lives.
RW_MODE = {
    "redis": "SCCACHE_REDIS_RW_MODE",
    "s3": "SCCACHE_S3_RW_MODE",
    "gcs": "SCCACHE_GCS_RW_MODE",
    "webdav": "SCCACHE_WEBDAV_RW_MODE",
}
# sccache variables that name a store: set by hand, they make `auto` pick sccache.
STORE_VARIABLES = (
    "SCCACHE_REDIS_ENDPOINT",
    "SCCACHE_BUCKET",
    "SCCACHE_GCS_BUCKET",
    "SCCACHE_WEBDAV_ENDPOINT",
    "SCCACHE_MEMCACHED_ENDPOINT",
    "SCCACHE_MULTILEVEL_CHAIN",
)
# Prefixes (after SCCACHE_) of the variables that configure a store.
STORE_PREFIXES = ("REDIS", "S3_", "GCS_", "WEBDAV_", "MEMCACHED", "AZURE", "OSS_", "COS_", "GHA_")
STORE_PREFIXES += ("MULTILEVEL",)
PROBE_TIMEOUT_S = 3.0  # a TCP connect to the store
START_TIMEOUT_S = 30.0  # sccache --start-server (its own limit is 10 s)
WATCH_INTERVAL_S = 1.0
PORT_LOW = 10000  # the servers' ports are picked from PORT_LOW up to the ephemeral range
PORT_STRIDE = 7919  # from a held port to the next one tried
PORTS_TRIED = 8


@dataclass(frozen=True)
class CompilerCache:
    """The launcher in front of every compiler, and everything it reads from the env."""

    kind: str  # ccache | sccache
    launcher: str  # its path
    remote: str | None = None  # VLLM_COMPILER_CACHE_REMOTE, as given; None: local only
    backend: str | None = None  # redis | s3 | gcs | webdav
    read_only: bool = False  # VLLM_COMPILER_CACHE_READ_ONLY: the store is read, never written
    environ: dict[str, str] = field(default_factory=dict)  # what the build sets for it
    fallback: str | None = None  # why the remote is not used this time
    dist: str | None = None  # VLLM_COMPILER_DIST: the scheduler compiles go to (dist.py)

    @property
    def port(self) -> str | None:
        return self.environ.get("SCCACHE_SERVER_PORT")

    def describe(self) -> str:
        if self.kind == "ccache":
            ro = ", read-only" if self.read_only else ""
            return f"ccache ({self.launcher}{ro}), shared by the checkouts on this machine"
        where = f"local disk {self.environ.get('SCCACHE_DIR', '(sccache default)')}"
        if self.remote:
            mode = "read-only" if self.read_only else "read-write"
            where += f", then store {redact(self.remote)} ({self.backend}, {mode})"
        elif self.fallback:
            where += f" (the store is not used: {self.fallback})"
        if self.dist:
            where += f"; misses compile on the cluster {self.dist}"
        return f"sccache ({self.launcher}): {where}; server port {self.port}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CompilerCache | None:
        return cls(**data) if data else None


def _split(url: str):
    """urlsplit, with its port read: a bad port or bracket is one line naming the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that isn't 0-65535
    except ValueError as exc:
        raise DevkitError(
            f"VLLM_COMPILER_CACHE_REMOTE={redact(url)!r} is not a valid URL ({exc}); use e.g. "
            "redis://host:6379, with a port from 1 to 65535 and IPv6 hosts in [brackets]"
        ) from None
    return parts


def redact(url: str) -> str:
    """The URL without its password."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError:  # unparsable: hide whatever stands between '://' and '@'
        return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _choose_kind(environ: Mapping[str, str], remote: str | None, cluster: bool) -> str | None:
    choice = envs.get("VLLM_COMPILER_CACHE", environ)
    if cluster and choice in ("off", "ccache"):
        raise DevkitError(
            f"VLLM_COMPILER_DIST needs sccache, but VLLM_COMPILER_CACHE={choice}; "
            "set VLLM_COMPILER_CACHE=auto (or sccache), or unset VLLM_COMPILER_DIST"
        )
    if choice == "off":
        if remote:
            raise DevkitError(
                "VLLM_COMPILER_CACHE=off but VLLM_COMPILER_CACHE_REMOTE is set; unset one of them"
            )
        return None
    if choice == "ccache" and remote:
        raise DevkitError(
            "VLLM_COMPILER_CACHE_REMOTE needs sccache, but VLLM_COMPILER_CACHE=ccache; "
            "set VLLM_COMPILER_CACHE=auto (or sccache)"
        )
    if choice == "auto":
        by_hand = any(environ.get(name) for name in STORE_VARIABLES)
        return "sccache" if remote or by_hand or cluster else "ccache"
    return choice


def store_environ(url: str, read_only: bool, environ: Mapping[str, str]) -> tuple[str, dict]:
    """sccache's backend name and the SCCACHE_* settings that `url` means."""
    parts = _split(url)
    backend = BACKENDS.get(parts.scheme)
    if backend is None or not parts.hostname:
        raise DevkitError(
            f"VLLM_COMPILER_CACHE_REMOTE={redact(url)!r} is not a store sccache knows; use "
            "redis://host:port[/db], s3://bucket[/prefix], gs://bucket[/prefix] or https://host/path"
        )
    prefix = parts.path.strip("/")
    out: dict[str, str] = {}
    if backend == "redis":
        netloc = parts.netloc
        out["SCCACHE_REDIS_ENDPOINT"] = urlunsplit((parts.scheme, netloc, "", "", ""))
        if prefix:
            if not prefix.isdigit():
                raise DevkitError(
                    f"VLLM_COMPILER_CACHE_REMOTE={redact(url)!r}: the path of a redis:// URL is "
                    "the database number, e.g. redis://cache:6379/2"
                )
            out["SCCACHE_REDIS_DB"] = prefix
    elif backend == "s3":
        out["SCCACHE_BUCKET"] = parts.hostname
        if len(parts.hostname) < 3:
            raise DevkitError(
                f"VLLM_COMPILER_CACHE_REMOTE={url!r}: S3 bucket names have 3 to 63 characters"
            )
        endpoint = envs.get("AWS_ENDPOINT_URL", environ)
        if endpoint:  # an S3-compatible store (MinIO, Ceph, R2, moto)
            out["SCCACHE_ENDPOINT"] = endpoint
            out["SCCACHE_S3_USE_SSL"] = "false" if endpoint.startswith("http://") else "true"
        region = envs.get("AWS_REGION", environ) or envs.get("AWS_DEFAULT_REGION", environ)
        if region or endpoint:
            out["SCCACHE_REGION"] = region or "us-east-1"
        if prefix:
            out["SCCACHE_S3_KEY_PREFIX"] = prefix + "/"
    elif backend == "gcs":
        out["SCCACHE_GCS_BUCKET"] = parts.hostname
        if prefix:
            out["SCCACHE_GCS_KEY_PREFIX"] = prefix + "/"
        key_path = envs.get("GOOGLE_APPLICATION_CREDENTIALS", environ)
        if key_path:
            out["SCCACHE_GCS_KEY_PATH"] = key_path
    else:  # webdav
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        out["SCCACHE_WEBDAV_ENDPOINT"] = urlunsplit((parts.scheme, host, parts.path, "", ""))
        if parts.username:
            out["SCCACHE_WEBDAV_USERNAME"] = parts.username
        if parts.password:
            out["SCCACHE_WEBDAV_PASSWORD"] = parts.password
    out[RW_MODE[backend]] = "READ_ONLY" if read_only else "READ_WRITE"
    # Local disk first, the store second; read-only too, since sccache 0.16
    # keys entries differently without the disk level (so a store read alone
    # never hits what a read-write chain wrote).
    out["SCCACHE_MULTILEVEL_CHAIN"] = f"disk,{backend}"
    return backend, out


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _port_range() -> tuple[int, int]:
    """[low, high) for the server's port: below the ephemeral range, where no outgoing
    connection (uv's downloads, sccache's own to the store) can be holding it."""
    ephemeral = _ephemeral_ports()[0]
    low = min(PORT_LOW, ephemeral - 1000)
    return low, max(ephemeral, low + 1000)


def _server_port(root: Path, settings: Mapping[str, str]) -> str:
    """A port of this checkout and cache config: builds with the same config share the
    server; another checkout (whose SCCACHE_BASEDIRS differ) gets its own."""
    digest = hashlib.sha256(json.dumps([str(root), sorted(settings.items())]).encode())
    low, high = _port_range()
    return str(low + int(digest.hexdigest(), 16) % (high - low))


def _next_port(port: str) -> str:
    """Where the server goes when `port` is held by something else; every build of
    the checkout walks the same sequence, so they still find one server."""
    low, high = _port_range()
    return str(low + (int(port) - low + PORT_STRIDE) % (high - low))


def _finish_sccache(
    cache: CompilerCache, settings: dict[str, str], environ: Mapping[str, str], root: Path
) -> CompilerCache:
    # Paths relative to the checkout (and to its part of a shared VLLM_BUILD_DIR).
    basedirs = ":".join(map(str, layout.base_dirs(environ, root)))
    settings.setdefault("SCCACHE_BASEDIRS", basedirs)
    # One local cache per checkout (a disk cache takes one server at a time), in its build root.
    settings.setdefault("SCCACHE_DIR", str(layout.default_sccache_dir(environ, root)))
    # A compile whose server went away runs the compiler itself.
    settings.setdefault("SCCACHE_IGNORE_SERVER_IO_ERROR", "1")
    if cache.read_only and not cache.remote:
        settings.setdefault("SCCACHE_LOCAL_RW_MODE", "READ_ONLY")
    given = {k: v for k, v in environ.items() if k.startswith("SCCACHE_")}
    effective = {**settings, **given}
    ours = {k: v for k, v in settings.items() if k not in given}
    if "SCCACHE_SERVER_PORT" not in given:
        ours["SCCACHE_SERVER_PORT"] = _server_port(root, effective)
    else:
        ours["SCCACHE_SERVER_PORT"] = given["SCCACHE_SERVER_PORT"]
    return replace(cache, environ=ours)


def resolve(
    environ: Mapping[str, str] | None = None, bin_dir: Path | None = None, root: Path | None = None
) -> CompilerCache | None:
    """The compiler cache the variables ask for; None for VLLM_COMPILER_CACHE=off.

    auto: sccache when a store is given (or sccache's own store variables are
    set), else ccache. An explicit choice that is not installed in `bin_dir` (a
    venv's bin/) is one line; without `bin_dir` (no venv yet) it is the bare name.
    """
    environ = os.environ if environ is None else environ
    root = envs.ROOT if root is None else root
    remote = envs.get("VLLM_COMPILER_CACHE_REMOTE", environ)
    read_only = bool(envs.get("VLLM_COMPILER_CACHE_READ_ONLY", environ))
    cluster = dist.resolve(environ)
    kind = _choose_kind(environ, remote, cluster is not None)
    if kind is None:
        return None
    launcher = find_tool(kind, bin_dir)
    if launcher is None and envs.get("VLLM_COMPILER_CACHE", environ) == "auto" and kind == "ccache":
        return None  # nothing installed yet (a bare interpreter); the venv will have it
    if launcher is None and bin_dir is None:
        # No venv yet (the session's first plan, doctor before a build): the venv gets
        # sccache from requirements/build.txt, and the plan is resolved again then.
        launcher = kind
    if launcher is None:
        asked = (
            "VLLM_COMPILER_CACHE_REMOTE needs sccache" if remote else f"VLLM_COMPILER_CACHE={kind}"
        )
        raise DevkitError(
            f"{asked} but {kind} is not installed; install requirements/build.txt (it has both) "
            "or set VLLM_COMPILER_CACHE=auto"
        )
    if kind == "ccache":
        settings = {"CCACHE_BASEDIR": str(root)}  # clones and worktrees share hits
        if read_only:
            settings["CCACHE_READONLY"] = "true"
        ours = {k: v for k, v in settings.items() if k not in environ}
        return CompilerCache("ccache", launcher, read_only=read_only, environ=ours)
    backend, settings = store_environ(remote, read_only, environ) if remote else (None, {})
    cache = CompilerCache("sccache", launcher, remote, backend, read_only)
    if cluster:  # sccache's client config, written when a build starts (dist.prepare)
        build_root = root / envs.get("VLLM_BUILD_DIR", environ)
        settings["SCCACHE_CONF"] = str(dist.config_path(cluster, build_root, environ))
        cache = replace(cache, dist=cluster.url)
    return _finish_sccache(cache, settings, environ, root)


def _is_store_variable(name: str) -> bool:
    """An sccache variable that names or configures a store (not the local cache)."""
    return name in ("SCCACHE_BUCKET", "SCCACHE_ENDPOINT", "SCCACHE_REGION") or name.startswith(
        tuple(f"SCCACHE_{s}" for s in STORE_PREFIXES)
    )


def resolve_local(cache: CompilerCache, reason: str) -> CompilerCache:
    """`cache` without its store: sccache on its local disk cache alone."""
    keep = ("SCCACHE_BASEDIRS", "SCCACHE_DIR", "SCCACHE_IGNORE_SERVER_IO_ERROR")
    settings = {k: v for k, v in cache.environ.items() if k in keep}
    basedirs = settings.get("SCCACHE_BASEDIRS") or os.environ.get("SCCACHE_BASEDIRS")
    root = Path(basedirs.split(":")[0]) if basedirs else envs.ROOT  # the checkout comes first
    given_port = os.environ.get("SCCACHE_SERVER_PORT")
    port = cache.port if given_port else _server_port(root, settings)
    settings["SCCACHE_SERVER_PORT"] = port or ""
    return replace(cache, remote=None, backend=None, fallback=reason, environ=settings)


# -- the sccache server -------------------------------------------------------


def environ_for(cache: CompilerCache | None, base: Mapping[str, str]) -> dict[str, str]:
    """`base` with what a compile through `cache` needs; a store that did not answer
    (fallback) is taken out, also when the caller set it with SCCACHE_* variables."""
    environ = dict(base)
    if cache is None:
        return environ
    if cache.fallback:
        environ = {k: v for k, v in environ.items() if not _is_store_variable(k)}
    environ.update(cache.environ)
    return environ


def _sccache(cache: CompilerCache, *args: str, timeout: float = START_TIMEOUT_S):
    try:
        return subprocess.run(
            [cache.launcher, *args],
            env=environ_for(cache, os.environ),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"no answer within {timeout:.0f} s")


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
        on = _with_port(on, _next_port(on.port or str(PORT_LOW)))
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
        probe = replace(cache, environ={**cache.environ, "SCCACHE_SERVER_PORT": port})
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
        local = replace(local, environ={**local.environ, "SCCACHE_SERVER_PORT": cache.port or ""})
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
        settings["SCCACHE_SERVER_PORT"] = _server_port(root, {**settings, "dist": "off"})
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
