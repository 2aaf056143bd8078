"""Prebuilt binaries into an editable install: fetch, check, stage.

An editable install with VLLM_USE_PRECOMPILED=1 takes the compiled files of a
prebuilt wheel (devkit.artifacts.wheelindex locates it) instead of running CMake:

    locate -> fetch (cached by sha256) -> check against the venv -> stage

Nothing is written before every check has passed (devkit.artifacts.wheelcheck). Staging
extracts the extension and its build info into a temporary directory under
<build>/precompiled/ and renames it into place; the editable install then
points at the staged files. The source tree is never written to.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.artifacts.wheelcheck import BUILD_INFO, ensure_fits, read_build_info, source_drift
from devkit.artifacts.wheelindex import Wheel, locate
from devkit.foundation import envs, layout, locations
from devkit.foundation.files import sha256_of
from devkit.foundation.log import say_err
from devkit.toolchains import targets

# The files an install takes from a wheel: the package's compiled extensions
# and what they were built with. Python sources come from the checkout.
_BINARY = re.compile(r"^vllm/[^/]+\.so$")
_STALL_S = 15.0  # a download ends when it moved less than _STALL_MIN_BYTES in this long
_STALL_MIN_BYTES = 64 * 1024
_PROGRESS_S = 3.0  # a progress line this often


# ---------------------------------------------------------------------------
# Fetch.
# ---------------------------------------------------------------------------


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
    local = locations.local_path(wheel.location)
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
        say_err(f"{wheel.name}: in the cache ({cached.parent}), nothing to download")
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
            say_err(f"warning: {wheel.name} has no published sha256; it is not checked")
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def _download(wheel: Wheel, out) -> None:
    response = locations.open_url(wheel.location, wheel.name)
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
                    say_err(f"downloading {wheel.name}: {done / 2**20:.1f}{of} MiB")
    except (OSError, http.client.HTTPException) as exc:  # the connection dropped, timed out
        raise DevkitError(f"{wheel.location}: the download failed ({exc}); try again") from None
    if total and done != total:
        raise DevkitError(
            f"{wheel.location}: the download stopped at {done} of {total} bytes; try again"
        )
    say_err(f"downloaded {wheel.name}: {done / 2**20:.1f} MiB in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------------------
# Inspect and check.
# ---------------------------------------------------------------------------


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
    say: Callable[[str], None] = say_err,
    found: Wheel | None = None,
    key_matches: bool = False,
) -> tuple[Wheel, Path, dict[str, Any]]:
    """Locate, fetch and check a wheel for this venv: (the wheel, its local copy, its info).

    `found`: a wheel already chosen (devkit.artifacts.binaries, by binary key); `key_matches`:
    its key is the checkout's, so its binaries are this csrc/'s whatever its commit.
    `say` tells the contributor where it came from, and the csrc/ drift.
    """
    wheel = found or locate(target, torch)
    say(f"precompiled wheel: {wheel.name}, from {wheel.origin}")
    path = fetch(wheel)
    info = read_build_info(path)
    ensure_fits(info, target, torch, wheel.name)
    drift = None if key_matches else source_drift(info)
    if drift:
        say(f"warning: {drift}")
    return wheel, path, info


def _silent(_line: str) -> None:
    pass


def install(
    target: targets.Target, torch: targets.TorchInfo, staging_root: Path, told: bool = False
) -> dict[str, Path]:
    """prepare, then stage: what the backend's editable install needs.

    `told`: a session located, checked and announced this wheel (and its csrc/ drift)
    already; it is checked again here, silently, so each line shows once.
    """
    wheel, path, info = prepare(target, torch, say=_silent if told else say_err)
    return stage(path, info, staging_root, wheel.sha256)
