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

This module decides which cache and how it is configured (the plan records
it); devkit.toolchains.cache_server starts its server, checks the store and watches it.
Stdlib only: the build backend imports this.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from devkit import DevkitError
from devkit.foundation import envs, layout
from devkit.toolchains import dist
from devkit.toolchains.toolchain import find_tool

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
PORT_LOW = 10000  # the servers' ports are picked from PORT_LOW up to the ephemeral range
PORT_STRIDE = 7919  # from a held port to the next one tried


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


def server_port(root: Path, settings: Mapping[str, str]) -> str:
    """A port of this checkout and cache config: builds with the same config share the
    server; another checkout (whose SCCACHE_BASEDIRS differ) gets its own."""
    digest = hashlib.sha256(json.dumps([str(root), sorted(settings.items())]).encode())
    low, high = _port_range()
    return str(low + int(digest.hexdigest(), 16) % (high - low))


def next_port(port: str) -> str:
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
        ours["SCCACHE_SERVER_PORT"] = server_port(root, effective)
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
    port = cache.port if given_port else server_port(root, settings)
    settings["SCCACHE_SERVER_PORT"] = port or ""
    return replace(cache, remote=None, backend=None, fallback=reason, environ=settings)


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
