"""Prebuilt binaries, for contributors who don't compile: publish and install.

Maintainers publish wheels into a static index (`nox -s wheel -- --index DIR`)
that any HTTP server or bucket can serve:

    DIR/<commit>/<variant>/vllm-<version>-<tags>.whl
    DIR/<commit>/<variant>/metadata.json    wheel, sha256, size, commit,
                                            commit_time, build_info
    DIR/<commit>/<variant>/simple/vllm/     a PEP 503 simple index of that wheel
    DIR/nightly/<variant>/...               the same, of the newest commit
    DIR/keys/<binary key>/<variant>/...     the same, by binary key (devkit.binkey):
                                            what dev-precompiled and ci look up

<variant> is the target's version suffix (cpu, cu130, rocm7.1), so
`uv pip install --index-url <base>/nightly/cpu/simple vllm` installs a nightly.
The project's own index is one setting, pyproject.toml's
[tool.vllm.precompiled] index, which VLLM_PRECOMPILED_WHEEL_INDEX overrides.

An editable install with VLLM_USE_PRECOMPILED=1 takes the compiled files of
such a wheel instead of running CMake:

    locate -> fetch (cached by sha256) -> check against the venv -> stage

Nothing is written before every check has passed. Staging extracts the
extension and its build info into a temporary directory under
<build>/precompiled/ and renames it into place; the editable install then
points at the staged files. The source tree is never written to.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from devkit import DevkitError, cuda, envs, gitbase, layout, targets
from devkit.envs import ROOT

METADATA = "metadata.json"
NIGHTLY = "nightly"
KEYS = "keys"  # <index>/keys/<binary key>/<variant>/: entries by what they are built from
BUILD_INFO = "vllm/_build_info.json"
# The files an install takes from a wheel: the package's compiled extensions
# and what they were built with. Python sources come from the checkout.
_BINARY = re.compile(r"^vllm/[^/]+\.so$")
# What the CPU must have for the kernels of each VLLM_CPU_ISA (the flags
# cmake/utils.cmake's detection looks for).
ISA_CPU_FLAGS: dict[str, tuple[str, ...]] = {
    "default": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
}
# Directories of the checkout whose changes the binaries would miss.
_COMPILED_SOURCES = ("csrc", "cmake", "CMakeLists.txt")
_TIMEOUT_S = 15  # each socket operation; and all of a small read (metadata)
_STALL_S = 15.0  # a download ends when it moved less than _STALL_MIN_BYTES in this long
_STALL_MIN_BYTES = 64 * 1024
_PROGRESS_S = 3.0  # a progress line this often
SIMPLE = "simple"  # the PEP 503 index beside each entry's wheel
INDEX_HINT = "set VLLM_PRECOMPILED_WHEEL_INDEX, or pyproject.toml's [tool.vllm.precompiled] index"


def say(message: str) -> None:
    # stderr: the backend's output channel (uv shows it with -v or on failure).
    print(f"[vllm precompiled] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Wheel:
    """A wheel to take binaries from, and how it was chosen."""

    location: str  # a local path or an http(s):// or file:// URL
    sha256: str | None  # from the index's metadata; None when nothing says
    origin: str  # for the log: "VLLM_PRECOMPILED_WHEEL_LOCATION", "dist/", ...

    @property
    def name(self) -> str:
        path = urllib.parse.unquote(urllib.parse.urlparse(self.location).path)
        return PurePosixPath(path).name


# ---------------------------------------------------------------------------
# Reading locations: local paths and URLs alike.
# ---------------------------------------------------------------------------


def _is_url(location: str) -> bool:
    return re.match(r"^(https?|file)://", location) is not None


def _local_path(location: str) -> Path | None:
    """The file a location names on this machine; None for http(s)."""
    if location.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    return None if _is_url(location) else Path(location).expanduser()


def _join(base: str, *parts: str) -> str:
    if not _is_url(base):
        return str(Path(base).expanduser().joinpath(*parts))
    return base.rstrip("/") + "/" + "/".join(urllib.parse.quote(p) for p in parts)


def _open_url(url: str, what: str):
    """An open HTTP response; None on 404; a DevkitError for anything else."""
    try:
        return urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise DevkitError(f"{url} answered HTTP {exc.code} ({exc.reason}) for {what}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlparse(url).netloc
        raise DevkitError(
            f"can't reach {host} for {what} ({reason}); start the server or fix the URL"
        ) from None


def _read(location: str, what: str) -> bytes | None:
    """The bytes at a path or URL; None when it isn't there (404, no such file).
    A URL's whole answer must come within _TIMEOUT_S (not each read: a server that
    drips a byte at a time is cut off too)."""
    path = _local_path(location)
    if path is not None:
        return path.read_bytes() if path.is_file() else None
    response = _open_url(location, what)
    if response is None:
        return None
    deadline = time.monotonic() + _TIMEOUT_S
    chunks: list[bytes] = []
    try:
        with response:
            while block := response.read1(1 << 16):
                chunks.append(block)
                if time.monotonic() > deadline:
                    raise DevkitError(
                        f"{location}: {what} did not arrive within {_TIMEOUT_S}s "
                        f"({sum(map(len, chunks))} bytes so far); the server is stalled, "
                        "try again later or point the index elsewhere"
                    )
    except (OSError, http.client.HTTPException) as exc:
        raise DevkitError(f"{location}: reading {what} failed ({exc}); try again") from None
    return b"".join(chunks)


# ---------------------------------------------------------------------------
# Locate.
# ---------------------------------------------------------------------------


def merge_base(root: Path = ROOT) -> str | None:
    """The commit where HEAD left the main branch (HEAD itself on main); None outside git."""
    try:
        return gitbase.merge_base(root=root)[1]
    except DevkitError:
        return None


def default_index(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> str | None:
    """VLLM_PRECOMPILED_WHEEL_INDEX, else pyproject.toml's [tool.vllm.precompiled] index
    (a directory there is relative to the checkout); None when neither is set."""
    index = envs.get("VLLM_PRECOMPILED_WHEEL_INDEX", environ)
    if index:
        return index
    try:
        import tomllib
    except ImportError:  # Python 3.10: nox and scikit-build-core both bring tomli
        import tomli as tomllib
    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        project = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DevkitError(f"can't read {root / 'pyproject.toml'} ({exc}); fix it") from None
    index = project.get("tool", {}).get("vllm", {}).get("precompiled", {}).get("index") or None
    if index and not _is_url(index):
        index = str(root / index)
    return index


def read_metadata(index: str, commit: str, variant: str) -> dict[str, Any] | None:
    """An index entry's metadata; None when the index has no such entry."""
    url = _join(index, commit, variant, METADATA)
    raw = _read(url, f"the {variant} wheel of {commit[:12]}")
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        meta["wheel"], meta["sha256"]  # noqa: B018 - both must be there
    except (ValueError, KeyError, TypeError):
        raise DevkitError(f"{url} is not an index entry's metadata; republish it") from None
    problem = metadata_problem(meta)
    if problem:
        raise DevkitError(f"{url}: {problem}; republish the entry (nox -s wheel -- --index)")
    return meta


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def metadata_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with an index entry's metadata, or None: the wheel a plain file
    name, its sha256 64 hex digits (or null: refused later, unless named by hand),
    the build info an object."""
    wheel, digest = meta.get("wheel"), meta.get("sha256")
    if not isinstance(wheel, str) or not wheel.endswith(".whl") or "/" in wheel or "\\" in wheel:
        return f"its wheel {wheel!r} is not a wheel's file name"
    if wheel.startswith("."):
        return f"its wheel {wheel!r} is not a wheel's file name"
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        return f"its sha256 {digest!r} is not 64 hex digits"
    if "build_info" in meta and not isinstance(meta["build_info"], dict):
        return f"its build_info {meta['build_info']!r} is not an object"
    return None


def _from_index(index: str, commit: str, variant: str) -> Wheel | None:
    meta = read_metadata(index, commit, variant)
    if meta is None:
        return None
    location = _join(index, commit, variant, meta["wheel"])
    if meta["sha256"] is None:
        raise DevkitError(
            f"{index} lists {meta['wheel']} for {commit[:12]} without a sha256, so it can't be "
            f"checked: republish it, or take it unchecked by naming it: "
            f"VLLM_PRECOMPILED_WHEEL_LOCATION={location}"
        )
    return Wheel(location, meta["sha256"], f"index {index} at {commit[:12]}")


def _fits(wheel: Path, target: targets.Target, torch: targets.TorchInfo) -> bool:
    try:
        return not problems_here(read_build_info(wheel), target, torch)
    except DevkitError:
        return False


def locate(
    target: targets.Target,
    torch: targets.TorchInfo | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path = ROOT,
) -> Wheel:
    """The wheel to take binaries from, in the order CONTRIBUTING.md documents.

    With `torch`, a wheel in dist/ counts only if it fits that torch (and this
    machine); otherwise the newest of the target's wheels there is taken.
    """
    variant = target.version_suffix
    location = envs.get("VLLM_PRECOMPILED_WHEEL_LOCATION", environ)
    if location:
        return Wheel(location, None, "VLLM_PRECOMPILED_WHEEL_LOCATION")

    in_dist = sorted(
        (p for p in (root / "dist").glob("vllm-*-*.whl") if is_variant(p.name, variant)),
        key=lambda p: p.stat().st_mtime,
    )
    for wheel in reversed(in_dist):
        if torch is None or _fits(wheel, target, torch):
            return Wheel(str(wheel), None, "dist/ (the newest wheel that fits)")
    if in_dist:
        say(f"dist/ has {len(in_dist)} {variant} wheel(s), none for this venv; looking further")

    index = default_index(environ, root)
    if index:
        commit = envs.get("VLLM_PRECOMPILED_WHEEL_COMMIT", environ) or merge_base(root)
        if commit:
            found = _from_index(index, commit, variant)
            if found:
                return found
            say(
                f"warning: {index} has no {variant} wheel for {commit[:12]}; taking nightly, "
                "whose binaries may not match your csrc/"
            )
        else:
            say(f"warning: no merge-base with main here; taking {index}'s nightly")
        found = _from_index(index, NIGHTLY, variant)
        if found:
            return Wheel(found.location, found.sha256, f"index {index}, nightly")
        raise DevkitError(
            f"{index} has no {variant} wheel for {commit or 'this checkout'} nor in nightly/; "
            "publish one (nox -s wheel -- --index DIR) or set VLLM_PRECOMPILED_WHEEL_LOCATION"
        )
    raise DevkitError(
        "no precompiled wheel to use: no index is configured (pyproject.toml's "
        "[tool.vllm.precompiled] index is empty); set VLLM_PRECOMPILED_WHEEL_INDEX (a wheel "
        "index's URL or directory) or VLLM_PRECOMPILED_WHEEL_LOCATION (a wheel's path or URL), "
        f"or build one into dist/ with `nox -s wheel -- --target {target.name}`"
    )


def is_variant(name: str, variant: str) -> bool:
    """Whether a wheel's file name carries `variant` as its version's last local part:
    vllm-0.1.0+cpu-... and vllm-0.1.0.dev3+g0123456789ab.cpu-... are cpu wheels."""
    version = name.split("-")[1] if name.count("-") >= 4 else ""
    local = version.partition("+")[2]
    return local == variant or local.endswith(f".{variant}")


# ---------------------------------------------------------------------------
# Fetch.
# ---------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha(path: Path, expected: str, wheel: Wheel) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DevkitError(
            f"{wheel.name} has sha256 {actual[:16]}..., but {wheel.origin} says "
            f"{expected[:16]}...: the file is corrupt or was replaced; republish it"
        )


def cache_dir() -> Path:
    return Path(envs.get("VLLM_CACHE_ROOT")).expanduser() / "precompiled"


def fetch(wheel: Wheel, cache: Path | None = None) -> Path:
    """A local copy of the wheel, checked against its sha256 when one is known.

    Downloads are cached by that sha256, so a second install downloads
    nothing; a wheel without one (a bare URL) is downloaded each time.
    """
    local = _local_path(wheel.location)
    if local is not None:
        if not local.is_file():
            raise DevkitError(
                f"{local} does not exist ({wheel.origin}); fix the path or publish the wheel"
            )
        if wheel.sha256:
            _check_sha(local, wheel.sha256, wheel)
        return local

    if cache is None:  # the user's setting: a file there is one line, not a traceback
        cache = cache_dir()
        given = f"VLLM_CACHE_ROOT={envs.get('VLLM_CACHE_ROOT')}"
        layout.check_dir(given, cache, "VLLM_CACHE_ROOT")
    cached = cache / (wheel.sha256 or "unchecked") / wheel.name
    if wheel.sha256 and cached.is_file() and sha256_of(cached) == wheel.sha256:
        say(f"{wheel.name}: in the cache ({cached.parent}), nothing to download")
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=cached.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(wheel, out)
        if wheel.sha256:
            _check_sha(tmp, wheel.sha256, wheel)
        else:
            say(f"warning: {wheel.name} has no published sha256; it is not checked")
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def _download(wheel: Wheel, out) -> None:
    response = _open_url(wheel.location, wheel.name)
    if response is None:
        raise DevkitError(
            f"{wheel.location} is not there (HTTP 404; {wheel.origin}); republish it or "
            "point VLLM_PRECOMPILED_WHEEL_* elsewhere"
        )
    started = time.monotonic()
    total = int(response.headers.get("Content-Length") or 0)
    done, shown = 0, started
    window = [(started, 0)]  # (time, bytes so far): the rate over the last _STALL_S
    try:
        with response:
            # read1: what has arrived (a read of N bytes would wait for all N).
            while block := response.read1(1 << 20):
                out.write(block)
                done += len(block)
                now = time.monotonic()
                window = [w for w in window if now - w[0] <= _STALL_S] + [(now, done)]
                if now - started >= _STALL_S and done - window[0][1] < _STALL_MIN_BYTES:
                    raise DevkitError(
                        f"{wheel.location}: the download stalled ({done - window[0][1]} bytes "
                        f"in the last {_STALL_S:.0f}s, {done} in all); try again later, or "
                        "point VLLM_PRECOMPILED_WHEEL_* at another server"
                    )
                if now - shown >= _PROGRESS_S:
                    shown = now
                    of = f"/{total / 2**20:.1f}" if total else ""
                    say(f"downloading {wheel.name}: {done / 2**20:.1f}{of} MiB")
    except (OSError, http.client.HTTPException) as exc:  # the connection dropped, timed out
        raise DevkitError(f"{wheel.location}: the download failed ({exc}); try again") from None
    if total and done != total:
        raise DevkitError(
            f"{wheel.location}: the download stopped at {done} of {total} bytes; try again"
        )
    say(f"downloaded {wheel.name}: {done / 2**20:.1f} MiB in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------------------
# Inspect and check.
# ---------------------------------------------------------------------------


def _check_entries(wheel_name: str, names: list[str]) -> None:
    """Refuses a wheel with an entry that would land outside its root (zip-slip)."""
    for name in names:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise DevkitError(
                f"{wheel_name} has an entry that escapes the package ({name!r}): "
                "refusing the whole wheel; republish it from a clean build"
            )


def read_build_info(path: Path) -> dict[str, Any]:
    """The wheel's vllm/_build_info.json, after checking every entry name.

    The CRCs of what is used are checked as it is read (here, and in stage).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            _check_entries(path.name, zf.namelist())
            raw = zf.read(BUILD_INFO)
    except zipfile.BadZipFile:
        raise DevkitError(
            f"{path.name} is not a valid wheel (a corrupt zip); delete it and fetch it again, "
            "or republish it"
        ) from None
    except KeyError:
        raise DevkitError(
            f"{path.name} has no {BUILD_INFO}, so it can't be checked against this venv; "
            "use a wheel built by `nox -s wheel`"
        ) from None
    try:
        info = json.loads(raw)
    except ValueError:
        raise DevkitError(f"{path.name}: {BUILD_INFO} is not JSON; republish it") from None
    if not isinstance(info, dict):
        raise DevkitError(
            f"{path.name}: {BUILD_INFO} is {type(info).__name__}, not an object; republish it"
        )
    return info


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags (Linux /proc/cpuinfo); None where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(match.group(1).split()) if match else None


def _major_minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def _major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version: 2.14.1+cu130 -> (2, 14); unreadable: (0, 0)."""
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else (0, 0)


def check_compat(
    info: Mapping[str, Any],
    target: targets.Target,
    torch: targets.TorchInfo,
    cpu: set[str] | None,
    python: tuple[int, int] = sys.version_info[:2],
    gpu: cuda.CudaArch | None = None,
) -> list[str]:
    """Every way the wheel's binaries don't fit this venv and machine, each with its fix.

    `cpu`: this CPU's feature flags; `gpu`: the local NVIDIA GPU's arch. None
    for either means unknown (no GPU: nothing to check the kernels against).
    """
    problems = []
    if info.get("target") != target.name:
        problems.append(
            f"built for target {info.get('target')}, not {target.name}: "
            f"take a {target.version_suffix} wheel"
        )
    built = info.get("torch_version")
    floor = info.get("torch_floor") if info.get("torch_abi") == "stable" else None
    if floor:
        # The stable ABI: any torch from the floor on (same target and CUDA major).
        if _release(torch.version) < _release(floor):
            problems.append(
                f"built on torch's stable ABI for torch>={floor} (against {built}), the venv "
                f"has torch {torch.version}: install torch>={floor}"
            )
    elif built != torch.version:
        problems.append(
            f"built against torch {built}, the venv has torch {torch.version}: install "
            f"torch=={built}, or take a wheel built against {torch.version}"
        )
    for field, have, name in (
        ("cuda_version", torch.cuda, "CUDA"),
        ("hip_version", torch.hip, "HIP"),
    ):
        if not info.get(field):
            continue
        if floor and field == "cuda_version":
            # On the stable ABI only the CUDA major binds (its runtime's ABI).
            if _major(info[field]) != _major(have):
                problems.append(
                    f"built for CUDA {_major(info[field])} ({info[field]}), the venv's torch "
                    f"has CUDA {have}: install a torch for CUDA {_major(info[field])}"
                )
        elif _major_minor(info[field]) != _major_minor(have):
            problems.append(
                f"built for {name} {info[field]}, the venv's torch has {name} {have}: "
                f"install a torch for {name} {_major_minor(info[field])}"
            )
    isa = info.get("cpu_isa")
    if isa:
        needed = ISA_CPU_FLAGS.get(isa)
        if needed is None:
            problems.append(
                f"built for an unknown CPU ISA {isa!r}: take a wheel built by this repo"
            )
        elif cpu is not None and not set(needed) <= cpu:
            lacking = ", ".join(sorted(set(needed) - cpu))
            problems.append(
                f"built for {isa}, which this CPU lacks ({lacking}): take a wheel built with "
                f"VLLM_CPU_ISA=avx2 or default, or build it here (nox -s build-{target.name})"
            )
    built_arch = info.get("gpu_arch") or ""
    if gpu is not None and cuda.runs_on(built_arch, gpu) is False:
        problems.append(
            f"built for {built_arch}, which this GPU (compute capability {gpu}) can't run: take "
            f"a wheel built for it, or build it here (nox -s build-{target.name} -- --arch {gpu})"
        )
    abi = info.get("python_abi")
    here = "cp{}{}".format(*python)
    if abi != "abi3" and abi != here:
        problems.append(f"built for Python ABI {abi}, this venv is {here}: take an abi3 wheel")
    return problems


def problems_here(
    info: Mapping[str, Any],
    target: targets.Target,
    torch: targets.TorchInfo,
    cpu: set[str] | None = None,
) -> list[str]:
    """check_compat against this machine's CPU (or `cpu`'s flags) and its NVIDIA GPU."""
    gpu = cuda.local_gpu_arch() if str(info.get("gpu_arch")).startswith("sm_") else None
    return check_compat(info, target, torch, cpu if cpu is not None else cpu_flags(), gpu=gpu)


def ensure_fits(
    info: Mapping[str, Any],
    target: targets.Target,
    torch: targets.TorchInfo,
    wheel_name: str,
    cpu: set[str] | None = None,
) -> None:
    """problems_here, as one line listing every problem, if any."""
    problems = problems_here(info, target, torch, cpu)
    if problems:
        numbered = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise DevkitError(f"{wheel_name} does not fit this venv: {numbered}")


def source_drift(info: Mapping[str, Any], root: Path = ROOT) -> str | None:
    """A warning when the checkout's compiled sources differ from the wheel's commit."""
    recorded = info.get("git_commit") or ""
    commit = recorded.removesuffix("-dirty")
    if not commit:
        return "the wheel records no commit: can't tell whether csrc/ matches its binaries"
    dirty = " (built with uncommitted changes)" if recorded.endswith("-dirty") else ""
    out = subprocess.run(
        ["git", "diff", "--quiet", commit, "--", *_COMPILED_SOURCES],
        cwd=root,
        capture_output=True,
    )
    if out.returncode == 0:
        if dirty:
            return f"the wheel was built from {commit[:12]}{dirty}: it may not match that csrc/"
        return None
    if out.returncode == 1:
        return (
            f"csrc/ has changed since {commit[:12]}, the wheel's commit{dirty}: those changes are "
            f"not in the precompiled binaries; build them with nox -s build-{info.get('target')}"
        )
    return (
        f"the wheel's commit {commit[:12]} is not in this clone: can't tell whether csrc/ changed"
    )


# ---------------------------------------------------------------------------
# Stage.
# ---------------------------------------------------------------------------


def stage(
    path: Path, info: Mapping[str, Any], staging_root: Path, digest: str | None = None
) -> dict[str, Path]:
    """Extracts the wheel's binaries; returns {path in the package: staged file}.

    The directory is named by the wheel's sha256, extracted into a temporary
    directory beside it and renamed into place, so it is either complete or
    absent. Only top-level vllm/*.so files and the build info are taken.
    """
    digest = digest or sha256_of(path)  # known when fetch has just checked it
    final = staging_root / f"{info.get('target')}-{digest[:16]}"
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if _BINARY.match(n)]
        if not names:
            raise DevkitError(f"{path.name} holds no compiled vllm/*.so; it is not a binary wheel")
        names.append(BUILD_INFO)
        if not final.is_dir():
            staging_root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging_root))
            try:
                for name in names:
                    dest = tmp / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        with zf.open(name) as src, dest.open("wb") as out:
                            shutil.copyfileobj(src, out)  # checks the CRC at the end
                    except zipfile.BadZipFile as exc:
                        raise DevkitError(f"{path.name}: {name}: {exc}; fetch it again") from None
                    if name.endswith(".so"):
                        dest.chmod(0o755)
                try:
                    tmp.rename(final)
                except OSError:
                    if not final.is_dir():  # not a concurrent install that got there first
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return {name: final / name for name in names}


def prepare(
    target: targets.Target,
    torch: targets.TorchInfo,
    log: Callable[[str], None] = say,
    found: Wheel | None = None,
    key_matches: bool = False,
) -> tuple[Wheel, Path, dict[str, Any]]:
    """Locate, fetch and check a wheel for this venv: (the wheel, its local copy, its info).

    `found`: a wheel already chosen (devkit.binaries, by binary key); `key_matches`:
    its key is the checkout's, so its binaries are this csrc/'s whatever its commit.
    `log` tells the contributor where it came from, and the csrc/ drift.
    """
    wheel = found or locate(target, torch)
    log(f"precompiled wheel: {wheel.name}, from {wheel.origin}")
    path = fetch(wheel)
    info = read_build_info(path)
    ensure_fits(info, target, torch, wheel.name)
    drift = None if key_matches else source_drift(info)
    if drift:
        log(f"warning: {drift}")
    return wheel, path, info


def install(
    target: targets.Target, torch: targets.TorchInfo, staging_root: Path
) -> dict[str, Path]:
    """prepare, then stage: what the backend's editable install needs."""
    wheel, path, info = prepare(target, torch)
    return stage(path, info, staging_root, wheel.sha256)


# ---------------------------------------------------------------------------
# Publish.
# ---------------------------------------------------------------------------


def _commit_time(commit: str, root: Path) -> int | None:
    out = subprocess.run(
        ["git", "show", "-s", "--format=%ct", commit], cwd=root, capture_output=True, text=True
    )
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _write_atomically(dest: Path, data: bytes | Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, Path):
                with data.open("rb") as src:
                    shutil.copyfileobj(src, out)
            else:
                out.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def simple_pages(wheel_name: str, sha256: str) -> dict[str, bytes]:
    """The PEP 503 pages of an entry holding one wheel, by path under the entry.

    `simple/` lists the project, `simple/vllm/` links the wheel (two levels
    up, with its sha256), so `--index-url <entry>/simple` serves it from any
    static file server.
    """
    href = "../../" + urllib.parse.quote(wheel_name) + f"#sha256={sha256}"
    page = (
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        "<title>{title}</title></head>\n<body>\n{links}\n</body></html>\n"
    )
    return {
        f"{SIMPLE}/index.html": page.format(
            title="Simple index", links='<a href="vllm/">vllm</a>'
        ).encode(),
        f"{SIMPLE}/vllm/index.html": page.format(
            title="Links for vllm", links=f'<a href="{href}">{wheel_name}</a>'
        ).encode(),
    }


def _write_entry(entry: Path, wheel: Path, meta: Mapping[str, Any]) -> None:
    """The wheel first, then its simple index and metadata.json, which readers go by;
    then old wheels go."""
    entry.mkdir(parents=True, exist_ok=True)
    _write_atomically(entry / wheel.name, wheel)
    for name, page in simple_pages(wheel.name, meta["sha256"]).items():
        (entry / name).parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(entry / name, page)
    _write_atomically(entry / METADATA, (json.dumps(meta, indent=2) + "\n").encode())
    for old in entry.glob("*.whl"):
        if old.name != wheel.name:
            old.unlink()


def publish(wheel: Path, index: Path, root: Path = ROOT, key: str | None = None) -> str:
    """Adds the wheel to the index by its binary key (keys/<key>/, what lookups use), at its
    commit (an alias for people), and to nightly/ if newest; returns a summary."""
    info = read_build_info(wheel)
    commit = info.get("git_commit") or ""
    if not commit or commit.endswith("-dirty"):
        raise DevkitError(
            f"{wheel.name} was built from {'uncommitted changes' if commit else 'outside git'}; "
            "an index entry must name the commit its sources are: commit, then rebuild"
        )
    variant = targets.get_target(info["target"]).version_suffix
    meta = {
        "wheel": wheel.name,
        "sha256": sha256_of(wheel),
        "size": wheel.stat().st_size,
        "commit": commit,
        "commit_time": _commit_time(commit, root),
        "variant": variant,
        "build_info": info,
        "binary_key": key,
    }
    if key:
        _write_entry(index / KEYS / key / variant, wheel, meta)
    _write_entry(index / commit / variant, wheel, meta)
    by_key = f" (key {key[:16]})" if key else ""
    done = f"published {wheel.name}{by_key} to {index / commit / variant}"
    current = read_metadata(str(index), NIGHTLY, variant)
    newer = current and (current.get("commit_time") or 0) > (meta["commit_time"] or 0)
    if newer:
        return f"{done}; nightly/ keeps the newer {current['commit'][:12]}"
    _write_entry(index / NIGHTLY / variant, wheel, meta)
    return f"{done} and to nightly/"
