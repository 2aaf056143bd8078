"""Files written whole or not at all, and paths shown as a person reads them.

Standard library only (the build backend writes through it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from devkit.foundation.envs import ROOT


def atomic_write(path: Path, data: str | bytes | Path, mode: int = 0o644) -> None:
    """Writes `data` (text, bytes, or a file's contents) to `path` whole or not at all:
    into a temporary file beside it, then renamed over it. A reader sees the old file
    or the new one, never half of one; nothing is left behind on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, Path):
                with data.open("rb") as src:
                    shutil.copyfileobj(src, out)
            else:
                out.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def show(path: Path, root: Path = ROOT) -> str:
    """A path as a person wants to read it: relative to the checkout when inside it."""
    path = Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def sha256_of(path: Path) -> str:
    """The sha256 of a file's contents, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
