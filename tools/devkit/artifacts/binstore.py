"""The local binary store: every build's binaries, kept under their binary key.

    <store>/entries/<digest>-<compiler12>/   one build (devkit.artifacts.binkey's build id)
        manifest.json    key, inputs, compiler, payload name, sha256, size, commit
        <payload>        a zip of vllm/*.so and vllm/_build_info.json (a wheel's
                         layout: devkit.artifacts.precompiled stages from it)
    <store>/tmp/         entries being written, and entries being removed

The store is in the user's cache directory (platformdirs' user cache dir,
vllm/binaries; VLLM_BINARY_STORE moves it), shared by every checkout of the
user. Each build stores into it; `nox -s dev-precompiled` looks there first, so
a second checkout, branch or rebase with the same compiled inputs installs
without a compiler.

- **Atomic**: an entry is written whole into tmp/ and renamed into place; a
  reader sees it complete or not at all. Two writers of one key both succeed:
  the second finds a valid entry there and keeps it.
- **Verified on read**: an entry whose manifest or payload is missing,
  unreadable or of the wrong size (a partial copy, a crash) is ignored, and
  the next build of its key replaces it; a payload of the right size whose
  sha256 is not the manifest's was altered after it was stored, and is refused
  with an error naming it.
- **Bounded**: VLLM_BINARY_STORE_MAX_MB; past it the least recently used
  entries go (a lookup that takes an entry marks it used).
- **Never fails a build**: a store that can't be written (disk full, no
  permission) is one warning; the build's result stands.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.foundation import envs, log
from devkit.foundation.files import sha256_of

MANIFEST = "manifest.json"
ENTRIES = "entries"
TMP = "tmp"
_STALE_TMP_S = 3600  # a writer's tmp dir this old is a crash's leftover
MIB = 1 << 20


def default_root(environ: dict[str, str] | None = None) -> Path:
    """VLLM_BINARY_STORE, else <user cache dir>/vllm/binaries."""
    given = envs.get("VLLM_BINARY_STORE", environ)
    if given:
        return Path(given).expanduser()
    try:
        import platformdirs
    except ImportError:  # not in this interpreter: the same place on Linux
        cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vllm"
    else:
        cache = Path(platformdirs.user_cache_dir("vllm", appauthor=False))
    return cache / "binaries"


class DigestMismatch(DevkitError):
    """A stored payload whose bytes are not the ones stored."""


@dataclass(frozen=True)
class Entry:
    """One stored build: its directory, manifest and payload."""

    path: Path
    manifest: dict[str, Any]

    @property
    def payload(self) -> Path:
        return self.path / self.manifest["payload"]

    @property
    def build_id(self) -> str:
        return self.path.name


def _sha256_copy(src: Path, dest: Path) -> str:
    digest = hashlib.sha256()
    with src.open("rb") as fin, dest.open("wb") as fout:
        for block in iter(lambda: fin.read(MIB), b""):
            digest.update(block)
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def binaries_zip(package_dir: Path, dest: Path) -> Path:
    """A zip of a built package's vllm/*.so and vllm/_build_info.json (an editable
    build's install tree), in a wheel's layout; returns `dest`."""
    files = sorted(package_dir.glob("*.so")) + [package_dir / "_build_info.json"]
    missing = [f.name for f in files if not f.is_file()]
    if missing or len(files) < 2:
        raise DevkitError(
            f"{package_dir} lacks {', '.join(missing) or 'vllm/*.so'}: nothing to store"
        )
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            info = zipfile.ZipInfo(f"vllm/{f.name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16 if f.suffix == ".so" else 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, f.read_bytes())
    return dest


class Store:
    def __init__(self, root: Path, max_bytes: int, log: Callable[[str], None] = log.say) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.log = log

    @classmethod
    def default(cls, log: Callable[[str], None] = log.say) -> Store:
        return cls(default_root(), envs.get("VLLM_BINARY_STORE_MAX_MB") * MIB, log)

    @property
    def entries_dir(self) -> Path:
        return self.root / ENTRIES

    # -- reading ------------------------------------------------------------

    def _entries(self, pattern: str = "*") -> Iterator[Path]:
        if self.entries_dir.is_dir():
            yield from self.entries_dir.glob(pattern)

    def check(self, path: Path) -> Entry | None:
        """The entry at `path`, verified; None when partial or corrupt (ignored);
        DigestMismatch when its payload is whole but not what was stored."""
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            payload = path / manifest["payload"]
            size = payload.stat().st_size
            expected_size, expected_sha = int(manifest["size"]), str(manifest["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if size != expected_size:
            return None  # a partial or truncated copy
        actual = sha256_of(payload)
        if actual != expected_sha:
            raise DigestMismatch(
                f"binary store entry {path} holds {manifest['payload']} with sha256 "
                f"{actual[:16]}..., but its manifest says {expected_sha[:16]}...: it was "
                f"altered after it was stored; refusing it. Remove it (rm -r {path}); the "
                "next build of its key stores it again"
            )
        return Entry(path, manifest)

    def find(self, digest: str) -> Entry | None:
        """The most recently used valid build of the compiled inputs `digest`, marked used.

        Partial or corrupt entries are skipped (one line each); a digest
        mismatch is refused (DigestMismatch)."""
        candidates = []
        for path in self._entries(f"{digest}-*"):
            try:
                candidates.append((path.stat().st_mtime, path))
            except OSError:  # removed meanwhile
                continue
        for _, path in sorted(candidates, reverse=True):
            entry = self.check(path)
            if entry is None:
                self.log(f"ignoring the partial or corrupt entry {path}; a build replaces it")
                continue
            self._touch(path)
            return entry
        return None

    def _touch(self, path: Path) -> None:
        try:
            os.utime(path)
        except OSError:
            pass  # a read-only store still serves

    # -- writing ------------------------------------------------------------

    def put(
        self, build_id: str, payload: Path, manifest: dict[str, Any], name: str | None = None
    ) -> Entry | None:
        """Stores `payload` under `build_id`; the entry, or None when it could not be
        stored (one warning: the caller's build has succeeded regardless)."""
        final = self.entries_dir / build_id
        tmp: Path | None = None
        try:
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            (self.root / TMP).mkdir(parents=True, exist_ok=True)
            self._clean_stale_tmp()
            tmp = Path(tempfile.mkdtemp(prefix="put-", dir=self.root / TMP))
            name = name or payload.name
            sha = _sha256_copy(payload, tmp / name)
            meta = {
                **manifest,
                "build_id": build_id,
                "payload": name,
                "sha256": sha,
                "size": (tmp / name).stat().st_size,
                "stored_at": time.time(),
            }
            (tmp / MANIFEST).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            entry = self._install(tmp, final)
            self.evict(keep=final)
            return entry
        except DigestMismatch:
            raise
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "the disk is full" if full else (exc.strerror or str(exc))
            self.log(
                f"warning: binaries not stored in {self.root} ({why}); the build itself "
                "succeeded. Free space there, or move the store (VLLM_BINARY_STORE)"
            )
            return None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _install(self, tmp: Path, final: Path) -> Entry:
        """Renames the written entry into place; another writer's valid entry wins."""
        for _ in range(3):
            try:
                os.rename(tmp, final)
                return Entry(final, json.loads((final / MANIFEST).read_text()))
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            try:
                there = self.check(final)
            except DigestMismatch:
                there = None  # a build of this key replaces an altered entry too
            if there is not None:
                self._touch(final)
                return there
            self._remove(final)  # partial or corrupt: replaced
        raise OSError(errno.EBUSY, f"{final} kept changing while it was being replaced")

    def _remove(self, path: Path) -> None:
        """Out of its name first (a rename), then deleted: no reader sees half of it."""
        try:
            aside = Path(tempfile.mkdtemp(prefix="rm-", dir=self.root / TMP))
            os.rename(path, aside / "entry")
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _clean_stale_tmp(self) -> None:
        now = time.time()
        for path in (self.root / TMP).iterdir():
            try:
                if now - path.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue

    def size(self) -> int:
        return sum(self._entry_size(p) for p in self._entries())

    @staticmethod
    def _entry_size(path: Path) -> int:
        try:
            return sum(f.stat().st_size for f in path.iterdir())
        except OSError:
            return 0

    def evict(self, keep: Path | None = None) -> list[str]:
        """Removes the least recently used entries until the store fits its cap."""
        sized = []
        for path in self._entries():
            try:
                sized.append((path.stat().st_mtime, path, self._entry_size(path)))
            except OSError:
                continue
        total = sum(size for _, _, size in sized)
        removed = []
        for _, path, size in sorted(sized):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            self._remove(path)
            total -= size
            removed.append(path.name)
        if removed:
            self.log(
                f"store over {self.max_bytes // MIB} MiB (VLLM_BINARY_STORE_MAX_MB): removed "
                f"{len(removed)} least recently used entr{'y' if len(removed) == 1 else 'ies'}"
            )
        return removed
