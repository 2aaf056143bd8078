"""The merge-base of HEAD with the main branch: one function, one `git merge-base`.

`nox -s ci` diffs against it, the precompiled path names an index entry by it,
and `bench-kernels --against` builds it: all three ask `merge_base`, in the
same order of branches. Standard library only (the build backend imports it
through devkit.precompiled).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devkit import DevkitError
from devkit.envs import ROOT

BASE_REFS = ("origin/main", "main")  # the default base: the first that exists


def merge_base(base: str | None = None, root: Path = ROOT) -> tuple[str, str]:
    """(the base ref, the merge-base commit of HEAD with it); `base` None tries BASE_REFS.

    A DevkitError says what to do when there is none (not git, no such branch).
    """
    for ref in (base,) if base else BASE_REFS:
        out = subprocess.run(
            ["git", "merge-base", "HEAD", ref], cwd=root, capture_output=True, text=True
        )
        if out.returncode == 0 and out.stdout.strip():
            return ref, out.stdout.strip()
    inside = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True)
    if inside.returncode != 0:
        raise DevkitError(f"{root} is not a git checkout, so it has no merge-base with main")
    tried = base or " nor ".join(BASE_REFS)
    raise DevkitError(
        f"no merge-base of HEAD with {tried}; fetch the base branch "
        "(git fetch origin main) or name another (--base REF)"
    )
