"""scikit-build-core metadata provider: the version and the dependencies.

The version comes from git, by setuptools-scm's rules, with the target as
the last part of the local version:

    on a release tag v0.1.0           0.1.0+cpu
    N commits after it (or untagged)  0.1.1.devN+g<sha12>.cpu (0.1.0.devN+g<sha12>.cpu:
                                      the next release is vllm/version.py's
                                      __base_version__ when that is newer, and N
                                      counts commits since the root when untagged)
    uncommitted changes               ... +g<sha12>.d<YYYYMMDD>.cpu
    outside git (a copied tree)       0.1.0+cpu

A tag v<digits> that is not a release version (v1.0-bogus, v2024-12-01) is
left out of the count, with a warning naming it; a checkout git refuses (owned
by another user) is one line naming git's safe.directory.

and `.precompiled` after the target when the binaries come from a wheel. The
dependencies are the target's requirements file, whose torch pin becomes
`torch>=<floor>` for a target on the stable ABI (Target.torch_floor). Both follow
the build plan, which the backend hands over (`use`) before these run.
setuptools-scm is imported only here, in the project venv (requirements/build.txt).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from devkit import DevkitError, envs, targets
from devkit.envs import ROOT

_plan = None  # the backend's devkit.plan.BuildPlan, set by use()


def use(plan) -> None:
    """The build plan the providers follow: its target, precompiled or not, its torch."""
    global _plan
    _plan = plan


def _target() -> targets.Target:
    if _plan is not None:
        return _plan.row
    name = envs.get("VLLM_TARGET_DEVICE")
    return targets.get_target("cpu" if name == "auto" else name)


# Release tags are v0.1.0 (git tag -a v0.1.0); git describe looks at no others.
_DESCRIBE = ["git", "describe", "--dirty", "--tags", "--long", "--abbrev=40", "--match", "v[0-9]*"]


def base_version() -> str:
    """The next release, vllm/version.py's __base_version__."""
    text = (ROOT / "vllm" / "version.py").read_text()
    match = re.search(r'^__base_version__ = "([^"]+)"', text, re.M)
    assert match, "vllm/version.py must define __base_version__"
    return match.group(1)


# What a release tag looks like: v0.1.0, v1.2, v0.2.0rc1, v0.1.0.post1.
_RELEASE_TAG = re.compile(r"^v\d+(\.\d+){1,2}((a|b|rc)\d+)?(\.post\d+)?$")


def _git(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)


def git_commit(root=ROOT) -> str:
    """The checkout's commit, with -dirty for uncommitted changes (the build info's
    git_commit; the plan records it); "" outside git."""
    try:
        out = _git(root, "describe", "--always", "--dirty", "--abbrev=40", "--match=NONE")
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def git_refusal(root=ROOT) -> str | None:
    """One line when git refuses the checkout because another user owns it."""
    out = _git(root, "rev-parse", "--git-dir")
    if out.returncode != 0 and "dubious ownership" in out.stderr:
        return (
            f"git refuses {root}: another user owns it (git's safe.directory check), so its "
            f"version and commit can't be read; run `git config --global --add safe.directory "
            f"{root}` and rerun"
        )
    return None


def non_version_tags(root=ROOT) -> list[str]:
    """Tags git describe would consider (v<digit>...) that are not release versions."""
    out = _git(root, "tag", "--list", "v[0-9]*")
    return [t for t in out.stdout.split() if not _RELEASE_TAG.match(t)]


def scm_version(suffix: str, root=ROOT, base: str | None = None) -> str:
    """The version of the checkout at `root` with `suffix` (cpu, cu130.precompiled)."""
    base = base or base_version()
    try:
        import setuptools_scm
        from packaging.version import Version
        from setuptools_scm.version import guess_next_dev_version
    except ImportError:
        raise DevkitError(
            "setuptools-scm is not installed in this venv (it makes the version from git); "
            "rerun the session, or uv pip install -r requirements/build.txt"
        ) from None

    def version_scheme(version) -> str:
        if version.exact:
            return str(version.tag)
        if version.tag == Version("0.0") or Version(base) > version.tag:  # untagged, or older
            return f"{base}.dev{version.distance}"
        return guess_next_dev_version(version)

    def local_scheme(version) -> str:
        if version.exact:
            return f"+{suffix}"
        dirty = f".d{version.time:%Y%m%d}" if version.dirty else ""
        return f"+{version.node[:13]}{dirty}.{suffix}"

    if not (Path(root) / ".git").exists():
        return f"{base}+{suffix}"  # a copied tree: no history to count
    refusal = git_refusal(root)
    if refusal:
        raise DevkitError(refusal)
    bad = non_version_tags(root)
    if bad:
        print(
            f"[vllm build] warning: ignoring git tag(s) {', '.join(bad)}: not release versions "
            "(vX.Y.Z); delete them (git tag -d NAME) or rename them",
            file=sys.stderr,
            flush=True,
        )
    try:
        return setuptools_scm.get_version(
            root=str(root),
            version_scheme=version_scheme,
            local_scheme=local_scheme,
            scm={"git": {"describe_command": [*_DESCRIBE, *(f"--exclude={t}" for t in bad)]}},
        )
    except LookupError as exc:
        raise DevkitError(
            f"git can't tell the version of {root} ({exc}); check git works"
        ) from None


def requirement_lines(path) -> list[str]:
    """Requirements in a requirements file: comments, options and blanks dropped."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def dynamic_metadata(field: str, settings: dict[str, Any] | None = None) -> Any:
    target = _target()
    if field == "version":
        # 0.1.0+cpu; 0.1.0+cpu.precompiled when the binaries come from a wheel.
        precompiled = ".precompiled" if _plan and _plan.precompiled else ""
        return scm_version(f"{target.version_suffix}{precompiled}")
    if field == "dependencies":
        lines = requirement_lines(target.requirements_file)
        if _plan and _plan.use_existing_torch:  # whatever torch is there stays
            return [line for line in lines if not re.match(r"torch\b", line)]
        if target.torch_floor:  # a stable-ABI binary runs on any torch from its floor
            lines = [
                target.torch_requirement if re.match(r"torch\b", line) else line for line in lines
            ]
        return list(dict.fromkeys(lines))  # the pin's per-platform lines became one
    raise ValueError(f"devkit.metadata provides version and dependencies, not {field}")
