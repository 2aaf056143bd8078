"""Reading a location that is a local path or a URL (http, https, file).

The precompiled path reads index entries and wheels from either, and the
torch sources check reads pip's mirrors from either: both read through here.
Standard library only (the build backend stages precompiled binaries).
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from devkit import DevkitError

TIMEOUT_S = 15  # each socket operation; and all of a small read


def is_url(location: str) -> bool:
    return re.match(r"^(https?|file)://", location) is not None


def local_path(location: str) -> Path | None:
    """The file a location names on this machine; None for http(s)."""
    if location.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    return None if is_url(location) else Path(location).expanduser()


def join(base: str, *parts: str) -> str:
    """`base`/`parts`, quoted as a URL's path when `base` is a URL."""
    if not is_url(base):
        return str(Path(base).expanduser().joinpath(*parts))
    return base.rstrip("/") + "/" + "/".join(urllib.parse.quote(p) for p in parts)


def open_url(url: str, what: str, timeout: float | None = None):
    """An open HTTP response; None on 404; a DevkitError for anything else.
    `timeout` (default TIMEOUT_S) bounds each socket operation."""
    try:
        return urllib.request.urlopen(url, timeout=timeout or TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise DevkitError(f"{url} answered HTTP {exc.code} ({exc.reason}) for {what}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlparse(url).netloc
        raise DevkitError(
            f"can't reach {host} for {what} ({reason}); start the server or fix the URL"
        ) from None


def read(location: str, what: str, timeout: float | None = None) -> bytes | None:
    """The bytes at a path or URL; None when it isn't there (404, no such file).

    A URL's whole answer must come within `timeout`, default TIMEOUT_S (not each read: a server that
    drips a byte at a time is cut off too). Anything else is a DevkitError naming
    `what` was being read.
    """
    path = local_path(location)
    if path is not None:
        return path.read_bytes() if path.is_file() else None
    timeout = timeout or TIMEOUT_S
    response = open_url(location, what, timeout)
    if response is None:
        return None
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        with response:
            while block := response.read1(1 << 16):
                chunks.append(block)
                if time.monotonic() > deadline:
                    raise DevkitError(
                        f"{location}: {what} did not arrive within {timeout:g}s "
                        f"({sum(map(len, chunks))} bytes so far); the server is stalled, "
                        "try again later or point the index elsewhere"
                    )
    except (OSError, http.client.HTTPException) as exc:
        raise DevkitError(f"{location}: reading {what} failed ({exc}); try again") from None
    return b"".join(chunks)
