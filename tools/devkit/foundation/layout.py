"""Where everything devkit makes lives: the one table of paths (stdlib only).

    checkout            ROOT (this repository)
    build root          VLLM_BUILD_DIR (default build/), inside the checkout; one
                        outside it (absolute, or `..`) is shared, and this checkout
                        gets a subdirectory of its own there: <root>/<name>-<hash>
    build dirs          <build root>/<target>-torch<ver>-<cpXY>[-<venv>], each with
                        plan.json (its mark) and build.lock
    staged binaries     <build root>/precompiled
    bench worktrees     <build root>/bench-against/<sha12>
    sccache's cache     SCCACHE_DIR, else <build root>/sccache: one per checkout, as a
                        disk cache takes one sccache server at a time (each checkout
                        runs its own); hits across checkouts come from the shared
                        store, with both the checkout and its build root stripped
                        from the paths (SCCACHE_BASEDIRS)
    venvs               ROOT/.venv-<name>, each with the mark file VENV_MARK; its
                        lock ROOT/.venv-<name>.lock

`clean` removes only what this table names and its own marks confirm.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import envs

ROOT = envs.ROOT
PLAN_FILE = "plan.json"
BUILD_LOCK = "build.lock"
STAGED = "precompiled"
BENCH = "bench-against"
SCCACHE = "sccache"
VENV_PREFIX = ".venv-"
VENV_MARK = ".devkit-venv"  # written into every venv devkit makes
# <target>-torch<version>-cp<XY>[-<venv name>]
BUILD_DIR_NAME = re.compile(r"^(cpu|cuda|rocm)-torch[^/]+-cp\d+(-[\w.+-]+)?$")


def python_tag() -> str:
    """This interpreter's CPython tag, e.g. cp311 (a target venv uses the same Python)."""
    return "cp{}{}".format(*sys.version_info[:2])


def _setting(environ: Mapping[str, str] | None, root: Path = ROOT) -> tuple[str, Path]:
    """VLLM_BUILD_DIR as given, and as a path (`~` expanded, relative to the checkout);
    a value CMake can't take is one line."""
    raw = envs.get("VLLM_BUILD_DIR", environ)
    if ";" in raw:
        raise DevkitError(
            f"VLLM_BUILD_DIR={raw} holds ';', which CMake reads as a list separator; "
            "choose a directory name without ';'"
        )
    return raw, Path(os.path.normpath(root / Path(raw).expanduser()))


def is_shared(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> bool:
    """Whether VLLM_BUILD_DIR lies outside the checkout (lexically: a `build` link to
    another disk is still the checkout's own)."""
    return not _setting(environ, root)[1].is_relative_to(root)


def checkout_key(root: Path = ROOT) -> str:
    """This checkout's subdirectory name in a shared build root: its name and a hash
    of its path, so two clones named alike never share one."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return f"{root.name}-{digest}"


def shared_root(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> Path:
    """VLLM_BUILD_DIR itself (the checkout's build root, or the shared one)."""
    raw, path = _setting(environ, root)
    check_dir(f"VLLM_BUILD_DIR={raw}", path, "VLLM_BUILD_DIR", "(or unset it for build/)")
    return path


def check_dir(given: str, path: Path, fix_name: str, unset: str = "(or unset it)") -> None:
    """Refuses a directory setting that is (or lies under) a file, or can't be written
    to, before anything is made; `given` names it as the user wrote it (NAME=value)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DevkitError(
            f"{given}: {existing} is a file, not a directory; point "
            f"{fix_name} at a directory {unset}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DevkitError(
            f"{given}: {existing} is not writable; point {fix_name} at a "
            "writable directory (e.g. VLLM_BUILD_DIR=/tmp/vllm-build)"
            if fix_name == "VLLM_BUILD_DIR"
            else f"{given}: {existing} is not writable; point {fix_name} at a writable directory"
        )


def build_root(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> Path:
    """Where this checkout's build dirs live: VLLM_BUILD_DIR, or this checkout's
    subdirectory of it when it is shared (outside the checkout)."""
    base = shared_root(environ, root)
    return base / checkout_key(root) if is_shared(environ, root) else base


def build_dir_name(target: str, torch_version: str, venv_name: str = "") -> str:
    suffix = f"-{venv_name}" if venv_name else ""
    return f"{target}-torch{torch_version}-{python_tag()}{suffix}"


def build_dir(target: str, torch_version: str, venv_name: str = "") -> Path:
    """The persistent CMake build directory of one target, torch and Python.

    A venv other than the target's own gets a directory of its own: its torch
    headers live at another path, and sharing would recompile everything
    each time the two alternate.
    """
    return build_root() / build_dir_name(target, torch_version, venv_name)


def staged_dir(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> Path:
    return build_root(environ, root) / STAGED


def bench_root(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> Path:
    return build_root(environ, root) / BENCH


def sccache_dir(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> Path:
    """sccache's local cache as devkit configures it: SCCACHE_DIR, else
    <build root>/sccache (one per checkout)."""
    env = os.environ if environ is None else environ
    if env.get("SCCACHE_DIR"):
        return Path(env["SCCACHE_DIR"]).expanduser()
    return default_sccache_dir(environ, root)


def default_sccache_dir(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> Path:
    """The SCCACHE_DIR devkit gives sccache when none is set."""
    return build_root(environ, root) / SCCACHE


def base_dirs(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> list[Path]:
    """The prefixes a compiler cache strips from paths so that checkouts share hits: the
    checkout, and its build root when that lies outside it (a shared VLLM_BUILD_DIR)."""
    return [root, build_root(environ, root)] if is_shared(environ, root) else [root]


def venv_dir(name: str, root: Path = ROOT) -> Path:
    """The venv of a target (or of a session that needs its own): .venv-<name>."""
    return root / f"{VENV_PREFIX}{name}"


def mark_venv(path: Path) -> None:
    """Marks a venv as made by devkit (clean removes only marked ones)."""
    (path / VENV_MARK).write_text("made by tools/devkit (nox); `nox -s clean` removes it\n")


def is_our_venv(path: Path) -> bool:
    """A venv devkit made: its mark, or (made before the mark existed) a relocatable
    uv venv under one of the names devkit gives."""
    if path.is_symlink() or not path.is_dir():
        return False
    if (path / VENV_MARK).is_file():
        return True
    legacy = {"cpu", "cuda", "rocm", "plugins"}
    legacy |= {f"precompiled-{n}" for n in ("cpu", "cuda", "rocm", "plugins")}
    if path.name.removeprefix(VENV_PREFIX) not in legacy:
        return False
    try:
        cfg = (path / "pyvenv.cfg").read_text()
    except OSError:
        return False
    return bool(re.search(r"^relocatable\s*=\s*true\s*$", cfg, re.M)) and "uv" in cfg


def cache_dirs(
    environ: Mapping[str, str] | None = None, root: Path = ROOT
) -> list[tuple[Path, str]]:
    """The compiler caches' folders as the build uses them: CCACHE_DIR, else ccache's
    default; SCCACHE_DIR, else devkit's (<VLLM_BUILD_DIR>/sccache)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME", str(Path.home())))
    xdg = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    ccache = Path(env["CCACHE_DIR"]) if env.get("CCACHE_DIR") else xdg / "ccache"
    sccache = sccache_dir(environ, root)
    found = [
        (ccache, "ccache's cache", "CCACHE_DIR"),
        (sccache, "sccache's local cache", "SCCACHE_DIR"),
    ]
    # A cache variable set to a folder that holds far more (the home, the checkout) is
    # refused before anything is emptied: `--all` would remove all of it.
    for folder, why, var in found:
        real = folder.resolve()
        for held in (home, root):
            if held.resolve().is_relative_to(real):
                raise DevkitError(
                    f"not emptying {why} {folder}: it holds {held}; point {var} at the "
                    "cache's own folder"
                )
    return [(folder, why) for folder, why, _ in found]
