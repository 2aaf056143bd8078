"""Distributed compilation: sccache's client sends compiles to an sccache-dist cluster.

    VLLM_COMPILER_DIST=<scheduler URL> + VLLM_COMPILER_DIST_TOKEN (or _TOKEN_FILE)
        -> resolve() -> Cluster -> compiler_cache (sccache, SCCACHE_CONF=<client config>)

The compiler cache stays in front: a hit never leaves the machine, a miss is
preprocessed here and compiled on a build server (in its bubblewrap sandbox,
with the toolchain sccache packages from this machine: g++, and nvcc's steps
with its host compiler), then linked here.

The token is read from the variable or the file when a build starts and is
written only to sccache's client config, a 0600 file in the build root; it is
never on a command line nor in any line printed. sccache fails a compile when
the scheduler refuses its token, so every build first asks the scheduler (its
status, then the token on an allocation request it rejects for having no
body): a scheduler that does not answer, a wrong token, or no build servers is
one warning line and a build on this machine alone. A build server that fails
mid-build costs nothing but time: sccache compiles that unit here, and the
build's summary says how many did.

Stdlib only: the build backend imports this (through compiler_cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devkit import DevkitError
from devkit.foundation import envs, procs
from devkit.foundation.files import atomic_write

PROBE_TIMEOUT_S = 3.0
# What a job costs this machine when its compile runs on the cluster: the
# preprocessor (torch's headers) and, at the end, the link. g++ -E of a CPU
# kernel with torch's headers peaks at 60 MB here (GNU time's max RSS); nvcc's
# steps that stay here (its preprocessing, fatbinary) take more and were not
# measured, so 1 GiB is a conservative bound rather than a measurement.
LOCAL_JOB_MEMORY = 1 << 30
STATUS_PATH = "/api/v1/scheduler/status"
ALLOC_PATH = "/api/v1/scheduler/alloc_job"
CONFIG_PREFIX = "sccache-dist-"


@dataclass(frozen=True)
class Cluster:
    """The scheduler a build sends its compiles to, and where its token comes from."""

    url: str  # http(s)://host:port, no trailing slash
    token_from: str  # the variable that holds it, or `VLLM_COMPILER_DIST_TOKEN_FILE=<path>`

    def token(self, environ: Mapping[str, str] | None = None) -> str:
        """The token; a missing or empty file is one line naming it."""
        environ = os.environ if environ is None else environ
        if not self.token_from.startswith("VLLM_COMPILER_DIST_TOKEN_FILE="):
            return (envs.get("VLLM_COMPILER_DIST_TOKEN", environ) or "").strip()
        path = Path(self.token_from.partition("=")[2])
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise DevkitError(
                f"VLLM_COMPILER_DIST_TOKEN_FILE={path}: can't read it ({exc.strerror or exc}); "
                "point it at the file holding the cluster's client token"
            ) from None
        if not token:
            raise DevkitError(
                f"VLLM_COMPILER_DIST_TOKEN_FILE={path} is empty; put the cluster's client "
                "token in it (the farm writes client-token)"
            )
        return token


def resolve(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The cluster VLLM_COMPILER_DIST names; None when it is unset."""
    environ = os.environ if environ is None else environ
    url = envs.get("VLLM_COMPILER_DIST", environ)
    if not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise DevkitError(
            f"VLLM_COMPILER_DIST={url!r} is not a scheduler URL; use http(s)://host:port, "
            "e.g. http://10.0.0.5:10600 (no user, no token: those go in "
            "VLLM_COMPILER_DIST_TOKEN or VLLM_COMPILER_DIST_TOKEN_FILE)"
        )
    if parts.username or parts.password:
        raise DevkitError(
            "VLLM_COMPILER_DIST has a user or token in it; give the URL alone and the token "
            "in VLLM_COMPILER_DIST_TOKEN or VLLM_COMPILER_DIST_TOKEN_FILE"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None or port < 1:
        raise DevkitError(
            f"VLLM_COMPILER_DIST={url!r} has no valid port; the scheduler's public_addr "
            "names it, e.g. http://10.0.0.5:10600"
        )
    token_file = envs.get("VLLM_COMPILER_DIST_TOKEN_FILE", environ)
    if token_file:
        token_from = f"VLLM_COMPILER_DIST_TOKEN_FILE={token_file}"
    elif envs.get("VLLM_COMPILER_DIST_TOKEN", environ):
        token_from = "VLLM_COMPILER_DIST_TOKEN"
    else:
        raise DevkitError(
            "VLLM_COMPILER_DIST is set but no token is: set VLLM_COMPILER_DIST_TOKEN_FILE to "
            "the file holding the cluster's client token (or VLLM_COMPILER_DIST_TOKEN)"
        )
    return Cluster(f"{parts.scheme}://{parts.hostname}:{port}", token_from)


# -- the scheduler --------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """What the scheduler reports: its build servers, their cores, the jobs running."""

    servers: int
    cpus: int
    in_progress: int

    @property
    def free(self) -> int:
        return max(0, self.cpus - self.in_progress)

    def describe(self) -> str:
        return (
            f"{self.servers} build server(s), {self.cpus} slots, {self.in_progress} busy, "
            f"{self.free} free"
        )


def parse_status(body: bytes) -> Status:
    """The scheduler's status answer: three little-endian u64 (bincode) in sccache 0.16."""
    if len(body) < 24:
        raise ValueError(f"{len(body)} bytes")
    servers, cpus, in_progress = struct.unpack_from("<QQQ", body)
    return Status(servers, cpus, in_progress)


def _request(url: str, token: str | None = None, post: bool = False) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, method="POST" if post else "GET", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    return str(getattr(reason, "strerror", None) or reason)


def status(cluster: Cluster) -> tuple[Status | None, str | None]:
    """(the scheduler's status, None), or (None, why it can't be read)."""
    try:
        code, body = _request(cluster.url + STATUS_PATH)
    except (OSError, ValueError) as exc:
        return None, f"does not answer ({_why(exc)})"
    if code != 200:
        return None, f"answers HTTP {code} to a status request: is it an sccache-dist scheduler?"
    try:
        return parse_status(body), None
    except ValueError as exc:
        return None, f"sent a status sccache 0.16 does not read ({exc})"


def token_error(cluster: Cluster, token: str) -> str | None:
    """Why the scheduler refuses `token`; None when it accepts it.

    An allocation request without a body: the scheduler checks the token first
    (401 when wrong), then refuses the empty body (400), so nothing is allocated.
    """
    try:
        code, _ = _request(cluster.url + ALLOC_PATH, token=token, post=True)
    except (OSError, ValueError) as exc:
        return f"does not answer ({_why(exc)})"
    if code == 401:
        return f"refuses the token from {cluster.token_from}"
    return None


def probe(cluster: Cluster, environ: Mapping[str, str] | None = None) -> tuple[Status | None, str]:
    """(status, None-or-"") when the cluster can take compiles, else (status or None, why)."""
    found, error = status(cluster)
    if found is None:
        return None, error or "?"
    error = token_error(cluster, cluster.token(environ))
    if error:
        return found, error
    if found.servers == 0:
        return found, "has no build servers"
    return found, ""


def free_slots(
    cluster: Cluster | None, environ: Mapping[str, str] | None = None
) -> tuple[int, str] | None:
    """(free slots, why) for the job count; None without a cluster or when it can't take jobs."""
    if cluster is None:
        return None
    try:
        found, error = probe(cluster, environ)
    except DevkitError:
        return None
    if found is None or error:
        return None
    return found.free, f"{cluster.url} ({found.describe()})"


def doctor_line(cluster: Cluster) -> str:
    """The cluster as doctor shows it: its servers and slots, or why builds won't use it."""
    try:
        found, error = probe(cluster)
    except DevkitError as exc:
        return f"NOT usable ({exc})"
    if found is None:
        return f"{cluster.url} {error}: builds warn and compile on this machine"
    servers = f"{found.describe()} (sccache 0.16 reports totals, not each server)"
    if error:
        return f"{cluster.url}: {servers}; it {error}: builds warn and compile on this machine"
    return f"{cluster.url}: {servers}; the token from {cluster.token_from} is accepted"


# -- sccache's client config ----------------------------------------------------


def config_path(cluster: Cluster, build_root: Path, environ: Mapping[str, str]) -> Path:
    """Where the client config goes: named by a digest of the URL and token, so a new
    token is a new file and (through SCCACHE_CONF) a new sccache server."""
    digest = hashlib.sha256(f"{cluster.url}\0{cluster.token(environ)}".encode()).hexdigest()
    return build_root / f"{CONFIG_PREFIX}{digest[:16]}.toml"


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


def config_text(cluster: Cluster, token: str, toolchain_dir: Path) -> str:
    return (
        "# Written by devkit (toolchains/dist.py) for VLLM_COMPILER_DIST; rewritten every build.\n"
        "[dist]\n"
        f"scheduler_url = {_toml_string(cluster.url)}\n"
        "toolchains = []\n"
        f"cache_dir = {_toml_string(str(toolchain_dir))}\n"
        "\n[dist.auth]\n"
        'type = "token"\n'
        f"token = {_toml_string(token)}\n"
    )


def write_config(cluster: Cluster, path: Path, environ: Mapping[str, str] | None = None) -> None:
    """sccache's client config at `path`, readable by this user alone, written whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config_text(cluster, cluster.token(environ), path.parent / "sccache-dist-toolchains")
    atomic_write(path, text, mode=0o600)


def prepare(cluster: Cluster, path: Path) -> str | None:
    """Checks the cluster and writes the client config; why not to use it, else None."""
    found, error = probe(cluster)
    if error:
        return error
    write_config(cluster, path)
    return None


# -- what ran where ---------------------------------------------------------------


@dataclass(frozen=True)
class Compiles:
    """sccache's compiler runs: on the cluster, here, and cluster runs that failed
    (each then ran here). nvcc counts once per step (cudafe++, cicc, ptxas, g++)."""

    remote: int
    local: int
    failed_remote: int

    def __sub__(self, other: Compiles) -> Compiles:
        return Compiles(
            self.remote - other.remote,
            self.local - other.local,
            self.failed_remote - other.failed_remote,
        )

    def describe(self) -> str:
        return f"{self.remote} compiler runs on the cluster, {self.local} here"


def parse_compiles(text: str) -> Compiles:
    """Reads `sccache --show-stats --stats-format=json`."""
    stats: dict[str, Any] = json.loads(text)["stats"]
    remote = sum((stats.get("dist_compiles") or {}).values())
    return Compiles(remote, stats["compilations"] - remote, stats.get("dist_errors", 0))


def compiles(launcher: str, environ: Mapping[str, str]) -> Compiles | None:
    """The counters of the sccache server `environ` names (its port); None when unknown."""
    out = procs.probe([launcher, "--show-stats", "--stats-format=json"], 30, env=dict(environ))
    try:
        return parse_compiles(out.stdout) if out and out.returncode == 0 else None
    except (ValueError, KeyError, TypeError):
        return None


JOB_FAILED = "sccache: Job failed on server "


class JobFailures:
    """Wraps the build's screen (progress.Screen) and keeps the lines in which sccache
    says a job failed on a build server (the sandbox, not the code, failed: sccache
    then fails the compile instead of running it here)."""

    def __init__(self, screen: Any) -> None:
        self.screen = screen
        self.failed: list[str] = []
        self._next = False

    def line(self, text: str) -> None:
        said = text.strip()  # uv indents the backend's output when it reports a failure
        if self._next:  # the server's own message follows sccache's line
            self.failed[-1] += f": {said[:160]}"
            self._next = False
        if said.startswith(JOB_FAILED):
            self.failed.append(said.removeprefix("sccache: ").rstrip(":"))
            self._next = True
        self.screen.line(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.screen, name)


def summary(url: str, done: Compiles | None, compiled: int) -> list[str]:
    """The build summary's cluster part, and a warning line when compiles came back."""
    if done is None or (compiled and done.remote + done.local <= 0):
        return [
            f"cluster {url}: compiler runs unknown",
            f"warning: sccache's server stopped counting mid-build (it stopped answering, as "
            f"when a build server goes away mid-compile): {compiled} unit(s) compiled without "
            "it, on this machine",
        ]
    lines = [f"cluster {url}: {done.describe()}"]
    if done.failed_remote:
        lines.append(
            f"warning: {done.failed_remote} compile(s) failed on the cluster {url} (a build "
            "server went away or could not run them) and ran on this machine instead"
        )
    return lines
