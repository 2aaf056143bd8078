"""git, called one way; and the merge-base of HEAD with the main branch, one rule.

`nox -s ci` diffs against it, the precompiled path names an index entry by it,
and `bench-kernels --against` builds it: all three ask `merge_base`, in the
same order of branches. Standard library only (the build backend imports it
through devkit.artifacts.wheelindex).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import procs
from devkit.foundation.envs import ROOT

BASE_REFS = ("origin/main", "main")  # the default base: the first that exists
TIMEOUT_S = 60


def git(*args: str, root: Path = ROOT, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """`git ARGS` in `root`, its output captured as text; a git that is missing or hangs
    is a failed result (returncode -1, the reason as stderr), never an exception."""
    out = procs.probe(["git", *args], timeout=timeout, cwd=root)
    if out is None:
        why = f"git did not start, or did not answer within {timeout:g} s"
        return subprocess.CompletedProcess(["git", *args], -1, "", why)
    return out


def git_output(*args: str, root: Path = ROOT) -> str:
    """The output of `git ARGS` in `root`, stripped; a failure is one DevkitError line."""
    result = git(*args, root=root)
    if result.returncode != 0:
        raise DevkitError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def commit(root: Path = ROOT) -> str:
    """The checkout's commit, with -dirty for uncommitted changes (the build info's
    git_commit; the plan records it); "" outside git."""
    out = git(
        "describe", "--always", "--dirty", "--abbrev=40", "--match=NONE", root=root, timeout=10
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def copy_checkout(dest: Path, root: Path = ROOT) -> Path:
    """Copies what a clone of this checkout would hold (tracked, and untracked
    but not ignored, files) to dest: a clean place to run sessions in."""
    out = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", root=root)
    if out.returncode != 0:
        raise DevkitError(
            f"git ls-files failed in {root} ({out.stderr.strip()}); is it a checkout?"
        )
    for name in filter(None, out.stdout.split("\0")):
        if (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    return dest


def merge_base(base: str | None = None, root: Path = ROOT) -> tuple[str, str]:
    """(the base ref, the merge-base commit of HEAD with it); `base` None tries BASE_REFS.

    A DevkitError says what to do when there is none (not git, no such branch).
    """
    for ref in (base,) if base else BASE_REFS:
        out = git("merge-base", "HEAD", ref, root=root)
        if out.returncode == 0 and out.stdout.strip():
            return ref, out.stdout.strip()
    if git("rev-parse", "--git-dir", root=root).returncode != 0:
        raise DevkitError(f"{root} is not a git checkout, so it has no merge-base with main")
    tried = base or " nor ".join(BASE_REFS)
    raise DevkitError(
        f"no merge-base of HEAD with {tried}; fetch the base branch "
        "(git fetch origin main) or name another (--base REF)"
    )
