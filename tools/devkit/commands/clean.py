"""`nox -s clean`: remove what builds made in this checkout, and say how much it freed.

Only what devkit.foundation.layout names and its own mark confirms is removed:

    build dirs          <build root>/<target>-torch...   with a plan.json naming that dir
    their venvs         .venv-<name>                      with devkit's venv mark
    staged binaries     <build root>/precompiled
    bench worktrees     <build root>/bench-against       (and unregistered from git)
    editor files        our presets in CMakeUserPresets.json (others are kept), the
                        compile_commands.json link (a file of your own is kept)

Anything else under the build root is listed as not ours and left alone, and
nothing is removed through a link: a link in the build root is left as it is.
The build root is this checkout's (a shared VLLM_BUILD_DIR's subdirectory for it),
never the checkout itself or a parent of it. The locks a build takes are taken
first, so a clean waits for a running build (and says whose). `--dry-run` lists
what would go. `--target T` removes only T's build dirs and venvs; `--all` also
empties the compiler caches (ccache's, and sccache's as devkit configures it) and
uv's cache, which serve every checkout. Nothing git tracks is ever removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.build import presets
from devkit.foundation import gitbase, layout, lock, procs
from devkit.foundation.envs import ROOT
from devkit.foundation.files import atomic_write, show
from devkit.toolchains import plan, targets, toolchain

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
    lock: Path | None = None  # the lock its builds hold


@dataclass
class Survey:
    """What clean would remove, and what it saw and leaves alone (with why)."""

    removals: list[Removal] = field(default_factory=list)
    left: list[tuple[Path, str]] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)  # our preset names to drop
    bench: bool = False  # a bench worktree goes: git's registry is pruned after


def _build_dir_plan(path: Path) -> plan.BuildPlan | None:
    """The plan of a build dir we made: its name is ours and its plan.json names it."""
    if path.is_symlink() or not path.is_dir() or not layout.BUILD_DIR_NAME.match(path.name):
        return None
    try:
        found = plan.load(path / layout.PLAN_FILE)
    except DevkitError:
        return None
    same = os.path.normpath(found.build_dir) == os.path.normpath(path)
    return found if same or found.build_dir.resolve() == path.resolve() else None


def _venv_target(name: str) -> str:
    bare = name.removeprefix(layout.VENV_PREFIX).removeprefix("precompiled-")
    return "cpu" if bare == "plugins" else bare


def check_root(build_root: Path, root: Path) -> None:
    """Refuses a build root that is the checkout or one of its parents."""
    real, checkout = build_root.resolve(), root.resolve()
    if checkout.is_relative_to(real):
        raise DevkitError(
            f"not cleaning: the build root {build_root} holds the checkout {root}; "
            "point VLLM_BUILD_DIR at a directory of its own (or unset it for build/)"
        )


def survey(
    target: str | None = None, root: Path = ROOT, environ: Mapping[str, str] | None = None
) -> Survey:
    """What `clean` would remove, for one target or all; nothing is deleted here."""
    found = Survey()
    build_root = layout.build_root(environ, root)
    check_root(build_root, root)
    venvs: dict[Path, str] = {}
    if build_root.is_dir():
        for entry in sorted(build_root.iterdir()):
            _sort_entry(entry, target, root, found, venvs)
    if layout.is_shared(environ, root):
        _earlier_shared(layout.shared_root(environ, root), target, root, found)
    for venv in sorted(root.glob(f"{layout.VENV_PREFIX}*")):
        if venv.suffix == ".lock" or ".tmp-" in venv.name or not venv.is_dir():
            continue
        if not layout.is_our_venv(venv):
            found.left.append((venv, "no devkit mark: not made by a session"))
            continue
        venv_target = venvs.get(venv, _venv_target(venv.name))
        if target in (None, venv_target):
            lock_path = lock.lock_file(venv)
            found.removals.append(Removal(venv, f"venv of {venv_target}", lock_path))
    for venv in venvs.keys() - {r.path for r in found.removals}:
        if venv.exists() and not layout.is_our_venv(venv):
            found.left.append((venv, "a venv made by hand, named by a build's plan"))
    if target is None:
        _editor_files(root, build_root, found)
    return found


def _sort_entry(
    entry: Path, target: str | None, root: Path, found: Survey, venvs: dict[Path, str]
) -> None:
    """One entry of the build root: ours to remove, a cache kept, or not ours."""
    if entry.is_symlink():
        found.left.append((entry, "a link: nothing behind it is removed"))
        return
    if entry.name == layout.SCCACHE and entry == layout.default_sccache_dir(None, root):
        found.left.append((entry, "sccache's local cache: kept; `-- --all` empties it"))
        return
    if entry.name in (layout.STAGED, layout.BENCH) and entry.is_dir():
        if target is None:
            why = (
                "staged precompiled binaries" if entry.name == layout.STAGED else "bench worktrees"
            )
            found.removals.append(Removal(entry, why))
            found.bench = found.bench or entry.name == layout.BENCH
        return
    build = _build_dir_plan(entry)
    if build is None:
        found.left.append((entry, "not ours: no build's plan.json in it"))
        return
    venv = Path(build.python).parent.parent  # <venv>/bin/python
    if venv.parent.resolve() == root.resolve():
        venvs[root / venv.name] = build.target
    if target in (None, build.target):
        found.removals.append(
            Removal(entry, f"build dir of {build.target}", entry / layout.BUILD_LOCK)
        )
        found.presets += [build.name, f"{build.name}-install"]


def _earlier_shared(shared: Path, target: str | None, root: Path, found: Survey) -> None:
    """Build dirs this checkout made at the top of a shared root, before each checkout
    had a subdirectory there: ours only if their plan names a venv of this checkout.
    The rest of a shared root is other people's: not even listed."""
    if not shared.is_dir():
        return
    for entry in sorted(shared.iterdir()):
        build = _build_dir_plan(entry)
        venv = Path(build.python).parent.parent if build else None
        if build and venv and venv.parent.resolve() == root.resolve():
            if target in (None, build.target):
                why = f"build dir of {build.target}, from before the per-checkout subdirectory"
                found.removals.append(Removal(entry, why, entry / layout.BUILD_LOCK))


def _editor_files(root: Path, build_root: Path, found: Survey) -> None:
    link = root / presets.COMPILE_COMMANDS
    if link.is_symlink():
        points = Path(os.path.normpath(link.parent / os.readlink(link)))
        if points.is_relative_to(build_root) or points.resolve().is_relative_to(
            build_root.resolve()
        ):
            found.removals.append(Removal(link, "editor file (rewritten by the next build)"))
    elif link.exists():
        found.left.append((link, "a file of your own, not our link"))
    path = root / presets.PRESETS_FILE
    if path.is_file() and not path.is_symlink():
        ours = [p.get("name") for p in _read_presets(path).get("configurePresets", [])]
        found.presets += [n for n in ours if n and _is_ours(path, n)]


def _read_presets(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_ours(path: Path, name: str) -> bool:
    for preset in _read_presets(path).get("configurePresets", []):
        if isinstance(preset, dict) and preset.get("name") == name:
            return preset.get("description") == presets.OUR_DESCRIPTION
    return False


def drop_presets(path: Path, names: list[str]) -> str | None:
    """Removes our presets named `names` (and the build presets that use them) from the
    presets file; deletes the file when nothing else is in it. Returns what it did."""
    data = _read_presets(path)
    if not data:
        return None
    ours = {n for n in names if _is_ours(path, n)}
    if not ours:
        return None
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if key.endswith("Presets") and isinstance(value, list):
            value = [
                p
                for p in value
                if not isinstance(p, dict)
                or (p.get("name") not in ours and p.get("configurePreset") not in ours)
            ]
            if not value:
                continue
        kept[key] = value
    if set(kept) <= {"version"}:
        path.unlink()
        return f"removed {path.name} (only our presets were in it)"
    atomic_write(path, json.dumps(kept, indent=2) + "\n")
    return f"removed our presets {', '.join(sorted(ours))} from {path.name}; yours are kept"


def removals(target: str | None = None, root: Path = ROOT) -> list[Removal]:
    """What `clean` would remove (see `survey`)."""
    return survey(target, root).removals


def tracked(paths: list[Path], root: Path = ROOT) -> list[Path]:
    """Those of `paths` that hold a file git tracks ([] outside git)."""
    real = root.resolve()
    inside = [p for p in paths if p.resolve().is_relative_to(real)]
    if not inside:
        return []
    names = (str(p.resolve().relative_to(real)) for p in inside)
    out = gitbase.git("ls-files", "-z", "--", *names, root=real)
    if out.returncode != 0:  # not a git checkout
        return []
    files = [real / name for name in out.stdout.split("\0") if name]
    return [p for p in inside if any(f.is_relative_to(p.resolve()) for f in files)]


def _remove(path: Path, bases: list[Path], root: Path) -> None:
    """Removes one surveyed path, checked again: never through a link, never outside
    the build roots or the checkout, never the checkout or a parent of it."""
    if path.is_symlink():
        path.unlink()
        return
    real = path.resolve()
    within = any(real.is_relative_to(base.resolve()) and real != base.resolve() for base in bases)
    if not within or root.resolve().is_relative_to(real):
        raise DevkitError(f"not removing {path}: it is outside this checkout's build paths")
    if path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


def _uv_cache(uv: str) -> Path | None:
    out = procs.probe([uv, "cache", "dir"])
    return Path(out.stdout.strip()) if out and out.returncode == 0 and out.stdout.strip() else None


def _empty_caches(caches: list[tuple[Path, str]], dry_run: bool) -> tuple[list[str], int]:
    lines, freed = [], 0
    verb = "would empty" if dry_run else "emptied"
    for folder, why in caches:
        if folder.is_dir() and not folder.is_symlink():
            size = size_of(folder)
            if not dry_run:
                shutil.rmtree(folder)
            freed += size
            lines.append(f"{verb} {folder} ({why}, {size / GB:.2f} GB)")
    uv = toolchain.find_tool("uv")
    cache = _uv_cache(uv) if uv else None
    if uv and cache and cache.exists():
        size = size_of(cache)
        if not dry_run:
            procs.probe([uv, "cache", "clean"], timeout=600)
        gone = size if dry_run else size - size_of(cache)
        freed += gone
        lines.append(f"{verb} {cache} (uv's cache, `uv cache clean`, {gone / GB:.2f} GB)")
    return lines, freed


@contextlib.contextmanager
def _build_locks(found: Survey, say: Callable[[str], None], root: Path):
    """The locks the build takes, in its order (venvs, then build dirs)."""
    paths = [r.lock for r in found.removals if r.lock is not None]
    venv_locks = sorted(p for p in paths if p.name != layout.BUILD_LOCK)
    build_locks = sorted(p for p in paths if p.name == layout.BUILD_LOCK)
    with contextlib.ExitStack() as stack:
        for path in [*venv_locks, *build_locks]:
            inside = (root, path.parent)
            stack.enter_context(lock.hold(path, "`nox -s clean`", say, inside))
        yield


def _remove_all(
    found: Survey, bases: list[Path], root: Path, dry_run: bool, say: Callable[[str], None]
) -> tuple[list[str], int]:
    """Removes what was surveyed, under the build's locks; the lines and bytes freed."""
    verb = "would remove" if dry_run else "removed"
    lines, freed = [], 0
    with contextlib.nullcontext() if dry_run else _build_locks(found, say, root):
        for removal in found.removals:
            if not (removal.path.exists() or removal.path.is_symlink()):
                continue  # gone while this clean waited for a lock
            size = size_of(removal.path)
            if not dry_run:
                _remove(removal.path, bases, root)
            freed += size
            lines.append(f"{verb} {show(removal.path, root)} ({removal.why}, {size / GB:.2f} GB)")
    return lines, freed


def _after(found: Survey, root: Path, dry_run: bool) -> list[str]:
    """Our presets out of the presets file, and git told the bench worktrees are gone."""
    lines = []
    presets_file = root / presets.PRESETS_FILE
    if found.presets and not dry_run:
        done = drop_presets(presets_file, found.presets)
        lines += [done] if done else []
    elif found.presets and any(_is_ours(presets_file, n) for n in found.presets):
        lines.append(f"would remove our presets from {presets.PRESETS_FILE}; yours are kept")
    if found.bench and not dry_run:
        gitbase.git("worktree", "prune", root=root)
        lines.append("unregistered the bench worktrees from git (`git worktree prune`)")
    return lines


def clean(
    target: str | None = None,
    everything: bool = False,
    root: Path = ROOT,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Removes this checkout's build products (and with `everything` the caches);
    returns the lines to print, the last one the total freed."""
    if target is not None:
        targets.get_target(target)  # an unknown target is one line, before anything
    bases = [layout.build_root(None, root), layout.shared_root(None, root), root]
    found = survey(target, root)
    cache_folders = layout.cache_dirs(None, root) if everything else []  # refused before anything
    refused = tracked([r.path for r in found.removals], root)
    if refused:
        raise DevkitError(
            f"not cleaning: git tracks files in {', '.join(map(str, refused))}; "
            "move them out of the build paths (or untrack them) first"
        )
    lines = [f"left alone {show(path, root)} ({why})" for path, why in found.left]
    done, freed = _remove_all(found, bases, root, dry_run, say)
    done += _after(found, root, dry_run)
    lines += done
    removed = len(done)
    if everything:
        cache_lines, cache_freed = _empty_caches(cache_folders, dry_run)
        lines += cache_lines
        freed += cache_freed
        removed += len(cache_lines)
    what = f"the {target} target's" if target else "this checkout's"
    if not removed:
        return [*lines, f"nothing to clean: {what} build dirs and venvs are already gone"]
    caches = " and the compiler and uv caches" if everything else ""
    total = "would free" if dry_run else "freed"
    return [*lines, f"{total} {freed / GB:.2f} GB: {what} build dirs and venvs{caches}"]
