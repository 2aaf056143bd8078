"""uv, the installer every session drives: finding it, its environment, its errors,
and what a venv still lacks. Standard library only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import envs, procs
from devkit.toolchains import toolchain

# uv's way of saying which URL failed, and why (its last "cause:" line).
_UV_FETCH = re.compile(r"Failed to fetch: `?(\S+?)`?$", re.M)
_UV_CAUSE = re.compile(r"^\s*cause: (.+)$", re.M)


def find_uv() -> str:
    uv = toolchain.find_tool("uv")
    if not uv:
        raise DevkitError("uv is not installed; run `pip install uv` (README's Quickstart)")
    return uv


def uv_env() -> dict[str, str]:
    """The process environment uv runs with."""
    env = dict(os.environ)
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the venv uses the interpreter running nox
    # A hanging index costs one bounded wait, not uv's 30 s x 4 tries.
    env["UV_HTTP_TIMEOUT"] = str(envs.get("UV_HTTP_TIMEOUT"))
    env["UV_HTTP_RETRIES"] = str(envs.get("UV_HTTP_RETRIES"))
    env.pop("VIRTUAL_ENV", None)
    return env


def network_error(stderr: str) -> str | None:
    """One line naming the URL uv couldn't fetch, from its error output; None if none."""
    fetch = _UV_FETCH.search(stderr)
    if not fetch:
        return None
    causes = _UV_CAUSE.findall(stderr)
    why = causes[-1] if causes else "failed"
    if "timed out" in why:
        why = f"no answer within UV_HTTP_TIMEOUT={envs.get('UV_HTTP_TIMEOUT')} s, retried"
    return (
        f"uv couldn't fetch {fetch[1]} ({why}); fix or remove that index (pip's config, "
        "PIP_EXTRA_INDEX_URL, VLLM_TORCH_INDEX_URL) or its proxy, or set UV_OFFLINE=1 to "
        "install from uv's cache"
    )


def fetching(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Runs a uv command that fetches: a fetch that fails is named in its one line."""
    procs.check(cmd, env=env or uv_env(), explain=network_error)


# Run in the venv with the requirement lines as argv[1]; prints those it doesn't satisfy
# (versions and markers checked with the venv's `packaging`), or null without packaging.
_UNSATISFIED = """
import importlib.metadata as m, json, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    print("null"); sys.exit()
bad = []
for line in json.loads(sys.argv[1]):
    req = Requirement(line)
    if req.marker and not req.marker.evaluate():
        continue
    try:
        found = m.version(req.name)
    except m.PackageNotFoundError:
        bad.append(line); continue
    if not req.specifier.contains(found, prereleases=True):
        bad.append(line)
print(json.dumps(bad))
"""


def unsatisfied(python: Path, requirements: list[str]) -> list[str]:
    """The requirements the venv doesn't satisfy, versions included (all, if unsure)."""
    found = procs.python_json(
        python, _UNSATISFIED, json.dumps(requirements), label="<which requirements the venv lacks>"
    )
    return requirements if found is None else found


def missing(python: Path, requirements: list[str]) -> list[str]:
    """The requirements whose distribution the venv lacks (versions not enforced)."""
    names = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]: line for line in requirements}
    script = (
        "import importlib.metadata as m, json, sys\n"
        "def has(n):\n"
        "    try: m.version(n); return True\n"
        "    except m.PackageNotFoundError: return False\n"
        f"print(json.dumps([n for n in {sorted(names)!r} if not has(n)]))"
    )
    missing = procs.python_json(python, script, label="<which build tools are missing>")
    return [names[name] for name in missing]
