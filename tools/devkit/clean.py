"""`nox -s clean`: remove what builds made in this checkout, and say how much it freed.

    build dirs          <VLLM_BUILD_DIR>/<target>-torch...   (each build dir's plan.json
    their venvs         .venv-<name>                          names its target and venv)
    staged binaries     <VLLM_BUILD_DIR>/precompiled
    editor files        CMakeUserPresets.json, the compile_commands.json link

`--target T` removes only T's build dirs and venvs; `--all` also empties the
compiler caches (ccache, sccache) and uv's cache, which live outside the
checkout and serve every checkout. Nothing git tracks is ever removed: a
path that holds a tracked file is refused before anything is deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError, envs, plan, presets, targets, toolchain
from devkit.envs import ROOT

GB = 1000**3


def size_of(path: Path) -> int:
    """Bytes under `path` (files, not following links); 0 if it is gone."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except OSError:
                pass
    return total


@dataclass(frozen=True)
class Removal:
    path: Path
    why: str  # "build dir of cpu", "venv of cpu", ...


def _plan_target_and_venv(build_dir: Path, root: Path) -> tuple[str, Path | None]:
    """A build dir's target and, when inside the checkout, its venv (from plan.json)."""
    target = build_dir.name.split("-", 1)[0]
    try:
        found = plan.load(build_dir / plan.PLAN_FILE)
    except DevkitError:
        return target, None
    venv = Path(found.python).parent.parent  # <venv>/bin/python
    inside = venv.is_relative_to(root) and venv.name.startswith(".venv")
    return found.target, venv if inside else None


def removals(target: str | None = None, root: Path = ROOT) -> list[Removal]:
    """What `clean` would remove, for one target or all; nothing is deleted here."""
    build_root = root / envs.get("VLLM_BUILD_DIR")  # an absolute one replaces root
    found: dict[Path, str] = {}
    if build_root.is_dir():
        for build_dir in sorted(p for p in build_root.iterdir() if p.is_dir()):
            if build_dir.name == "precompiled":
                continue
            build_target, venv = _plan_target_and_venv(build_dir, root)
            if target in (None, build_target):
                found[build_dir] = f"build dir of {build_target}"
                if venv and venv.exists():
                    found[venv] = f"venv of {build_target}"
    for name in targets.TARGETS if target is None else [target]:
        for venv in (root / f".venv-{name}", root / f".venv-precompiled-{name}"):
            if venv.exists():
                found.setdefault(venv, f"venv of {name}")
    staged = build_root / "precompiled"
    if target is None and staged.exists():
        found[staged] = "staged precompiled binaries"
    if target is None:
        for name in (presets.PRESETS_FILE, presets.COMPILE_COMMANDS):
            if (root / name).is_symlink() or (root / name).is_file():
                found[root / name] = "editor file (rewritten by the next build)"
    return [Removal(path, why) for path, why in found.items()]


def tracked(paths: list[Path], root: Path = ROOT) -> list[Path]:
    """Those of `paths` that hold a file git tracks ([] outside git)."""
    inside = [p for p in paths if p.is_relative_to(root)]
    if not inside:
        return []
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *(str(p.relative_to(root)) for p in inside)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:  # not a git checkout
        return []
    files = [root / name for name in out.stdout.split("\0") if name]
    return [p for p in inside if any(f == p or f.is_relative_to(p) for f in files)]


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


def cache_dirs(environ: Mapping[str, str] | None = None) -> list[tuple[Path, str]]:
    """The compiler caches' folders: CCACHE_DIR / SCCACHE_DIR, else their defaults."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME", str(Path.home())))
    xdg = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    ccache = Path(env["CCACHE_DIR"]) if env.get("CCACHE_DIR") else xdg / "ccache"
    sccache = Path(env["SCCACHE_DIR"]) if env.get("SCCACHE_DIR") else xdg / "sccache"
    return [(ccache, "ccache's cache"), (sccache, "sccache's local cache")]


def _uv_cache(uv: str) -> Path | None:
    out = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, timeout=60)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def clean(target: str | None = None, everything: bool = False, root: Path = ROOT) -> list[str]:
    """Removes this checkout's build products (and with `everything` the caches);
    returns the lines to print, the last one the total freed."""
    if target is not None:
        targets.get_target(target)  # an unknown target is one line, before anything
    planned = removals(target, root)
    refused = tracked([r.path for r in planned], root)
    if refused:
        raise DevkitError(
            f"not cleaning: git tracks files in {', '.join(map(str, refused))}; "
            "move them out of the build paths (or untrack them) first"
        )
    lines, freed = [], 0
    for removal in planned:
        size = size_of(removal.path)
        _remove(removal.path)
        freed += size
        lines.append(f"removed {_show(removal.path, root)} ({removal.why}, {size / GB:.2f} GB)")
    if everything:
        for folder, why in cache_dirs():
            if folder.exists():
                size = size_of(folder)
                shutil.rmtree(folder)
                freed += size
                lines.append(f"emptied {folder} ({why}, {size / GB:.2f} GB)")
        uv = toolchain.find_tool("uv")
        cache = _uv_cache(uv) if uv else None
        if uv and cache and cache.exists():
            size = size_of(cache)
            subprocess.run([uv, "cache", "clean"], capture_output=True, timeout=600, check=False)
            gone = size - size_of(cache)
            freed += gone
            lines.append(f"emptied {cache} (uv's cache, `uv cache clean`, {gone / GB:.2f} GB)")
    what = f"the {target} target's" if target else "this checkout's"
    if not lines:
        return [f"nothing to clean: {what} build dirs and venvs are already gone"]
    caches = " and the compiler and uv caches" if everything else ""
    return [*lines, f"freed {freed / GB:.2f} GB: {what} build dirs and venvs{caches}"]


def _show(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
