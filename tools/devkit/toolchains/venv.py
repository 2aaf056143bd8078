"""A session's venv: checked before every use, created whole or not at all.

A venv half-made by Ctrl-C (bin/python without pyvenv.cfg) runs as the
interpreter it links to, and uv would install into that: the user's own
Python. So before a venv is used, `check` asks it where it lives; and
`create` makes it under a temporary name, renamed into place when complete.
uv also caches what an interpreter path is (its sys.prefix); `check_uv_target`
refreshes that entry and refuses if uv would still use another environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import layout, procs
from devkit.foundation.files import show

# Run by the venv's interpreter: where it lives, and which Python it is.
_WHERE = "import json, sys; print(json.dumps([sys.prefix, list(sys.version_info[:3])]))"
_TMP_MARK = ".tmp-"
HALF_MADE_MAX_ENTRIES = 40


def read_cfg(path: Path) -> dict[str, str]:
    """pyvenv.cfg's keys and values; {} when there is none."""
    values = {}
    try:
        text = (path / "pyvenv.cfg").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip()] = value.strip()
    return values


def problem(path: Path, python: Path, root: Path, expected: tuple[int, int]) -> str | None:
    """Why the venv at `path` can't be used, as one line naming the fix; None if it can.

    "half-made" (no pyvenv.cfg) is the one problem `ensure` repairs by itself.
    """
    name = show(path, root)
    fix = f"delete {name} and rerun (the session makes it again)"
    cfg = read_cfg(path)
    if not cfg:
        # What an interrupted `uv venv` leaves: a few links and empty dirs. Anything
        # bigger without pyvenv.cfg is not ours to delete.
        if sum(1 for _ in path.rglob("*")) <= HALF_MADE_MAX_ENTRIES:
            return "half-made"
        return f"{name} has no pyvenv.cfg, so it is not a venv; move it away and rerun"
    home = cfg.get("home", "")
    if not python.exists():  # a dangling link: the interpreter it was made from is gone
        return f"{name} was made by a Python in {home or 'an unknown place'} that is gone; {fix}"
    out = procs.probe([str(python), "-c", _WHERE])
    try:
        prefix, version = json.loads(out.stdout.strip().splitlines()[-1]) if out else ("", [])
    except (ValueError, IndexError):
        out = None
    if out is None:
        return f"{show(python, root)} does not run (made by {home or 'an unknown Python'}); {fix}"
    if Path(prefix).resolve() != path.resolve():
        return f"{show(python, root)} runs in {prefix}, not in the venv; {fix}"
    if tuple(version[:2]) != tuple(expected):
        made = ".".join(map(str, version))
        want = ".".join(map(str, expected))
        return f"{name} was made by Python {made}, but this session runs Python {want}; {fix}"
    return None


def create(
    path: Path, base_python: str, uv: str, run: Callable[..., object], env: Mapping[str, str]
) -> None:
    """`uv venv` under a temporary name, renamed to `path` once complete.

    --relocatable: the activate scripts find the venv from where they are, so
    the rename leaves none of them pointing at the temporary name.
    """
    tmp = path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        cmd = [uv, "venv", "--quiet", "--relocatable", "--python", base_python, str(tmp)]
        run(cmd, env=dict(env))
        layout.mark_venv(tmp)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(path: Path) -> None:
    """Temporary venvs of interrupted creations (call with the venv's lock held)."""
    for tmp in path.parent.glob(f"{path.name}{_TMP_MARK}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def usable(path: Path, root: Path, say: Callable[[str], None]) -> Path | None:
    """The python of the venv at `path`, checked; None when there is none (a half-made
    one is removed first, with a word). Any other problem is a DevkitError naming the fix.
    Call with the venv's lock held."""
    python = path / "bin" / "python"
    remove_leftovers(path)
    if not (path.exists() or python.is_symlink()):
        return None
    found = problem(path, python, root, sys.version_info[:2])
    if found == "half-made":
        say(
            f"{show(path, root)} is half-made (no pyvenv.cfg: an interrupted `uv venv`?); "
            "making it again"
        )
        aside = path.with_name(f"{path.name}{_TMP_MARK}broken-{os.getpid()}")
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return None
    if found:
        raise DevkitError(found)
    return python


def ensure(
    path: Path,
    root: Path,
    uv: str,
    run: Callable[..., object],
    env: Mapping[str, str],
    say: Callable[[str], None],
    base_python: str = sys.executable,
) -> Path:
    """The venv at `path`, created if absent or half-made, checked; returns its python."""
    python = usable(path, root, say)
    if python:
        return python
    create(path, base_python, uv, run, env)
    python = path / "bin" / "python"
    found = problem(path, python, root, sys.version_info[:2])
    if found:
        raise DevkitError(found)
    say(f"made {show(path, root)} (activate with: source {show(path, root)}/bin/activate)")
    return python


def missing_files(path: Path, dist: str, suffix: str = ".so") -> list[str]:
    """Files of distribution `dist` in the venv that its RECORD lists but are gone
    (only those ending in `suffix`: the libraries a build links against)."""
    missing = []
    for record in path.glob(f"lib/python*/site-packages/{dist}-*.dist-info/RECORD"):
        site = record.parent.parent
        for line in record.read_text().splitlines():
            name = line.split(",", 1)[0]
            if name.endswith(suffix) and not (site / name).exists():
                missing.append(name)
    return missing


_USING = re.compile(r"environment at: (.+)$", re.M)
_UNPARSED = re.compile(
    r"Failed to parse environment variable `(\w+)` with invalid value `([^`]*)`:(.*)$", re.M
)


def check_uv_target(python: Path, path: Path, uv: str, env: Mapping[str, str]) -> None:
    """Makes uv look at `python` afresh (its interpreter cache may remember a former
    occupant of the path) and refuses if uv would still use another environment.

    A dry run with nothing to install: no network, a fraction of a second.
    """
    cmd = [uv, "pip", "install", "--dry-run", "--refresh", "-p", str(python), "-r", os.devnull]
    environ = dict(env)
    environ.pop("UV_OFFLINE", None)  # uv refuses it with --refresh; nothing is fetched anyway
    out = procs.probe(cmd, env=environ, cwd=path.parent)
    if out is None:
        raise DevkitError(f"{uv} did not start or answer within a minute; check uv")
    match = _USING.search(out.stderr)
    refused = _UNPARSED.search(out.stderr)
    if out.returncode != 0 and refused:  # not the venv's fault
        raise DevkitError(
            f"uv can't read {refused[1]}={refused[2]} ({refused[3].strip()}); "
            f"fix or unset {refused[1]}"
        )
    if out.returncode != 0 or not match:
        raise DevkitError(
            f"`uv pip install -p {python}` can't use the venv ({out.stderr.strip()[-200:]}); "
            f"delete {path} and rerun"
        )
    used = (path.parent / match[1].strip()).resolve()
    if used != path.resolve():
        raise DevkitError(
            f"uv would install into {used}, not into {path}; nothing was installed: "
            f"delete {path} and rerun, and run `uv cache clean` if it persists"
        )
