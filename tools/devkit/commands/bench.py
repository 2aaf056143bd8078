"""A/B kernel benchmarks: the working tree's extension against another commit's.

`nox -s bench-kernels -- --against REF` times both builds in one run. This
module does the git and build half (stdlib only); the timing half is
benchmarks/bench_kernels.py.

- **REF** (default: the merge-base of HEAD with `origin/main`, else `main`:
  devkit.foundation.gitbase, as `nox -s ci` takes it)
  is resolved to a commit and checked out with `git worktree add --detach`
  at `<build root>/bench-against/<sha12>/src`, inside the checkout (build/ is
  ignored by git), never outside it.
- **Its extension** is built from that worktree as a wheel, through REF's own
  build backend, but with the working tree's venv: the same torch and build
  tools, so the two builds differ only in their sources. Its build directory
  is `<build root>/bench-against/<sha12>/build`, its own (venv-independent);
  the shared compiler cache (CCACHE_BASEDIR is each checkout's root) makes
  unchanged files cache hits. Only `vllm/_C.abi3.so` is kept from the wheel,
  in `.../lib/`, and reused while the venv's torch stays the same.
- **Timing**: both builds register the same op names, so one process can't
  hold both. bench_kernels.py starts one worker process per build, each
  loading its own `_C.abi3.so` as `vllm._C`, and alternates rounds (A B A B
  ...), one worker timing while the other waits, so the noise of a shared
  machine falls on both alike; it reports per op and dtype the speed ratio
  new/old with its min-max over rounds, and writes JSON and a PNG chart.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError
from devkit.build import pipeline
from devkit.foundation import files, gitbase, layout, log, procs
from devkit.foundation.envs import ROOT
from devkit.foundation.files import atomic_write
from devkit.foundation.gitbase import git_output
from devkit.toolchains import uv


@dataclass(frozen=True)
class RefBuild:
    """REF's extension, built: what the benchmark needs to load and label it."""

    sha: str
    name: str  # as the user wrote it (or "merge-base with main")
    lib: Path  # REF's _C.abi3.so
    out_dir: Path  # where the A/B results go


def resolve_ref(ref: str) -> tuple[str, str]:
    """(commit sha, label) of REF; "" is the merge-base of HEAD with main."""
    if ref:
        try:
            return git_output("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"), ref
        except DevkitError:
            raise DevkitError(
                f"--against {ref}: not a commit here; pass a branch, tag or sha "
                "(e.g. --against HEAD~1)"
            ) from None
    try:
        branch, sha = gitbase.merge_base(root=ROOT)
    except DevkitError as exc:
        raise DevkitError(
            f"--against without REF: {exc}; or pass one, e.g. --against HEAD~1"
        ) from None
    return sha, f"merge-base with {branch}"


def _worktree(sha: str, src: Path) -> None:
    """REF checked out, detached, at src (reused when it is there at sha)."""
    if src.exists():
        try:
            if git_output("rev-parse", "HEAD", root=src) == sha:
                return
        except DevkitError:
            pass
        git_output("worktree", "remove", "--force", str(src))
    git_output("worktree", "prune")
    src.parent.mkdir(parents=True, exist_ok=True)
    git_output("worktree", "add", "--detach", str(src), sha)


def build_ref(setup: pipeline.Setup, ref: str) -> RefBuild:
    """REF's extension, built in its worktree with the setup's venv (cached per sha and torch)."""
    sha, name = resolve_ref(ref)
    root = layout.bench_root() / sha[:12]
    lib = root / "lib" / "_C.abi3.so"
    stamp = root / "lib" / "stamp.json"
    expected = {"sha": sha, "torch": setup.torch.version, "python": str(setup.python)}
    if lib.exists() and stamp.exists() and json.loads(stamp.read_text()) == expected:
        log.say(f"--against {name}: {sha[:12]}'s extension is built ({files.show(lib)})")
        return RefBuild(sha, name, lib, root)

    src = root / "src"
    log.say(f"--against {name}: {sha[:12]} in a worktree at {files.show(src)}")
    _worktree(sha, src)
    # REF's backend may predate the build plan: it gets the plan's decisions as the
    # variables a contributor sets by hand, which every version of it reads.
    environ = {
        **uv.uv_env(),
        **setup.plan.build_environ(),
        "VLLM_TARGET_DEVICE": setup.plan.target,
        "MAX_JOBS": str(setup.plan.jobs.jobs),
    }
    staging = Path(tempfile.mkdtemp(prefix=".wheel-", dir=root))
    try:
        cmd = [
            uv.find_uv(),
            "build",
            "--wheel",
            "--no-build-isolation",
            "--python",
            str(setup.python),
            "-C",
            f"build-dir={root / 'build'}",
            "--out-dir",
            str(staging),
            str(src),
        ]
        procs.check(cmd, env=environ)
        wheels = list(staging.glob("*.whl"))
        if len(wheels) != 1:
            raise DevkitError(f"building {sha[:12]} made {len(wheels)} wheels, expected one")
        with zipfile.ZipFile(wheels[0]) as whl:
            members = [n for n in whl.namelist() if n.startswith("vllm/_C") and n.endswith(".so")]
            if not members:
                raise DevkitError(f"{sha[:12]}'s wheel holds no vllm/_C*.so")
            lib.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(lib, whl.read(members[0]))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stamp.write_text(json.dumps(expected))
    log.say(f"--against {name}: built {files.show(lib)}")
    return RefBuild(sha, name, lib, root)
