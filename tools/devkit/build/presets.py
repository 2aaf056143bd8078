"""The edit loop without nox: CMake presets and clangd's compile_commands.json.

Every build through the backend (a session, or `uv pip install -e .` by hand)
writes, from its build plan:

    CMakeUserPresets.json      a configure, a build and an install preset per
                               build dir, named by the plan (cpu, cuda, cpu-plugins)
    compile_commands.json      a link to the last build's, for clangd

so `cmake --build --preset cpu-install` (or `--preset cpu --target install`)
recompiles what changed and installs it where the editable install imports it
from. Both files are git-ignored; the presets file keeps presets of other names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.foundation.envs import ROOT
from devkit.foundation.files import atomic_write as _write_atomically
from devkit.toolchains.plan import BuildPlan

PRESETS_FILE = "CMakeUserPresets.json"
COMPILE_COMMANDS = "compile_commands.json"
# Version 4 (CMake 3.23): build presets with `targets`; the build needs CMake >= 3.26.
PRESETS_VERSION = 4
# Marks the presets devkit wrote (clean removes those, and keeps yours); kept as first
# written so that older checkouts' presets still match.
OUR_DESCRIPTION = "written by tools/devkit/presets.py from the build plan"


def presets_for(plan: BuildPlan) -> dict[str, list[dict[str, Any]]]:
    """The three presets of one build dir, all named after the plan."""
    name = plan.name
    configure = {
        "name": name,
        "displayName": f"{name}: {plan.build_dir.name}",
        "description": OUR_DESCRIPTION,
        "generator": "Ninja",
        "binaryDir": str(plan.build_dir),
        "cacheVariables": {"CMAKE_BUILD_TYPE": plan.build_type, **plan.cmake_defines()},
        "environment": plan.build_environ(),
    }
    if plan.install_dir:
        configure["installDir"] = str(plan.install_dir)
    build = {"name": name, "configurePreset": name, "jobs": plan.jobs.jobs}
    install = {**build, "name": f"{name}-install", "targets": ["install"]}
    return {"configurePresets": [configure], "buildPresets": [build, install]}


def merge(existing: dict[str, Any], ours: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """`existing` (a presets file's content) with `ours` replacing presets of the same names."""
    merged: dict[str, Any] = {
        **existing,
        "version": max(existing.get("version", 0), PRESETS_VERSION),
    }
    for kind, presets in ours.items():
        names = {p["name"] for p in presets}
        kept = [p for p in existing.get(kind, []) if p.get("name") not in names]
        merged[kind] = [*kept, *presets]
    return merged


def write_presets(plan: BuildPlan, root: Path = ROOT) -> Path:
    """Writes (or updates) root/CMakeUserPresets.json with the plan's presets."""
    path = root / PRESETS_FILE
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            raise DevkitError(
                f"{path} is not valid JSON; fix it or delete it (the build rewrites it)"
            ) from None
    _write_atomically(path, json.dumps(merge(existing, presets_for(plan)), indent=2) + "\n")
    return path


def link_compile_commands(build_dir: Path, root: Path = ROOT) -> Path | None:
    """root/compile_commands.json -> the build dir's; None when the build made none.

    A regular file of that name (a user's own) is left alone.
    """
    target = build_dir / COMPILE_COMMANDS
    link = root / COMPILE_COMMANDS
    if not target.is_file() or (link.exists() and not link.is_symlink()):
        return None
    tmp = link.with_name(f".{COMPILE_COMMANDS}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
    return link


def write_all(plan: BuildPlan, root: Path = ROOT) -> list[str]:
    """Presets and the compile_commands link for a finished build; lines that say so."""
    lines = [f"presets {plan.name}, {plan.name}-install in {PRESETS_FILE}"]
    write_presets(plan, root)
    if link_compile_commands(plan.build_dir, root):
        lines.append(f"{COMPILE_COMMANDS} -> {plan.build_dir / COMPILE_COMMANDS} (for clangd)")
    return lines
