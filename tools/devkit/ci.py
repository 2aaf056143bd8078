"""The PR pipeline behind `nox -s ci`: which sessions a change needs, and running them.

    changed files (against the merge-base with the base branch)
        -> classify() -> a Change: docs, python or compiled, and the file that decided
        -> steps() -> the sessions to run, each with its reason
        -> run_steps() -> one summary table (session, result, time)

`classify` and `steps` are pure functions of their arguments (unit-tested);
what they need from the machine (is there a precompiled wheel for the
merge-base, is nvcc installed) is looked up by `precompiled_source` and
`nvcc_found` and handed in. Each step is run as `python -m nox -s NAME -- ...`
from the same checkout: exactly what a contributor types.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from devkit import DevkitError, cuda, precompiled, targets
from devkit.envs import ROOT

BASE_REFS = ("origin/main", "main")  # the default base, first that exists

# The devkit modules the build backend imports (directly or not), and the
# scripts the build runs: a change to one of them can change the binary, so it
# counts as compiled. A unit test keeps this in step with backend.py's imports
# and the plan's CMake defines.
BUILD_MODULES = frozenset(
    f"tools/devkit/{name}.py"
    for name in (
        "__init__",
        "backend",
        "cmakecache",
        "compiler_cache",
        "cuda",
        "envs",
        "layout",
        "lock",
        "metadata",
        "plan",
        "precompiled",
        "presets",
        "procs",
        "resources",
        "rocm",
        "targets",
        "toolchain",
    )
)
BUILD_SCRIPTS = frozenset({"tools/devkit/nvcc_relative.py"})  # nvcc's launcher under sccache
# What the build reads, besides csrc/: every file under these, and these files.
COMPILED = ("csrc/", "cmake/", "requirements/", "CMakeLists.txt", "pyproject.toml")
PYTHON = ("vllm/", "tests/", "benchmarks/", "examples/", "tools/", ".github/", ".ci/")
PYTHON_FILES = ("noxfile.py",)
DOCS_DIRS = ("docs/",)

DOCS, PYTHON_ONLY, BUILD = "docs", "python", "compiled"
_RANK = {DOCS: 0, PYTHON_ONLY: 1, BUILD: 2}

CUDA_ARCH = "9.0"  # what CI compiles for: sm_90, compile-only


@dataclass(frozen=True)
class Change:
    """What a change needs: the kind (docs < python < compiled) and the file that decided."""

    kind: str | None  # None: nothing changed
    decided_by: str = ""
    files: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        if self.kind is None:
            return "nothing changed"
        more = len(self.files) - 1
        others = f" (and {more} more file{'s' * (more != 1)})" if more > 0 else ""
        return f"{self.decided_by} changed{others}"


def kind_of(path: str) -> str:
    """docs, python or compiled: what one changed file needs."""
    posix = PurePosixPath(path).as_posix()
    if posix in BUILD_MODULES | BUILD_SCRIPTS or posix.startswith(COMPILED) or posix in COMPILED:
        return BUILD
    if posix.startswith(DOCS_DIRS) or posix.endswith(".md"):
        return DOCS
    if posix.startswith(PYTHON) or posix in PYTHON_FILES:
        return PYTHON_ONLY
    return BUILD  # not known to leave the binary alone: the whole pipeline


def classify(files: Sequence[str]) -> Change:
    """The change the files make together: the most demanding file decides."""
    files = tuple(sorted(set(files)))
    if not files:
        return Change(None)
    decided_by = max(files, key=lambda f: _RANK[kind_of(f)])  # first of the top rank
    return Change(kind_of(decided_by), decided_by, files)


@dataclass(frozen=True)
class Step:
    """One session of the plan, with its posargs and why it runs (or why not)."""

    session: str
    args: tuple[str, ...] = ()
    reason: str = ""
    skip: str = ""  # non-empty: not run, and this says why

    @property
    def command(self) -> str:
        args = f" -- {' '.join(self.args)}" if self.args else ""
        return f"nox -s {self.session}{args}"


@dataclass(frozen=True)
class Source:
    """Whether precompiled CPU binaries exist for the merge-base, and where or why not."""

    available: bool
    note: str  # one line: where the wheel is, or why none is used


def steps(change: Change, source: Source | None, nvcc: bool, run_all: bool = False) -> list[Step]:
    """The sessions a change needs, in order, each with its reason.

    `source` says whether precompiled binaries exist (looked up only for a
    Python-only change); `nvcc` whether the compile-only CUDA build can run.
    """
    if run_all:
        why = "--all"
        kind = BUILD
    else:
        why = change.reason
        kind = change.kind
    if kind is None:
        return []
    plan = [Step("lint", reason=f"{why}: lint")]
    if kind == DOCS:
        return plan
    plan.append(Step("tests", reason=f"{why}: devkit tests"))
    if kind == PYTHON_ONLY and source is not None and source.available:
        pre = f"{why}, nothing compiled: precompiled binaries ({source.note})"
        return [
            *plan,
            Step("dev-precompiled", reason=pre),
            Step("test-kernels-cpu", ("--precompiled",), f"{why}: kernel tests, no compiler"),
            Step("test-plugins", ("--precompiled",), f"{why}: plugin tests, no compiler"),
        ]
    if kind == PYTHON_ONLY:
        why = f"{why}, but {source.note if source else 'no precompiled wheel'}"
    plan += [
        Step("build-cpu", reason=f"{why}: build"),
        Step("test-kernels-cpu", reason=f"{why}: kernel tests"),
        Step("test-plugins", reason=f"{why}: plugin tests"),
    ]
    if kind == BUILD:
        no_nvcc = "" if nvcc else "nvcc is not installed here"
        cuda_why = f"{why}: CUDA compile-only for sm_90, machine code and registration checked"
        plan.append(Step("build-cuda", ("--arch", CUDA_ARCH), cuda_why, no_nvcc))
    return plan


# ---------------------------------------------------------------------------
# What the machine says: changed files, precompiled wheels, nvcc.
# ---------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def merge_base(base: str | None, root: Path = ROOT) -> tuple[str, str]:
    """(the base ref, the merge-base commit of HEAD with it)."""
    for ref in (base,) if base else BASE_REFS:
        out = _git(root, "merge-base", "HEAD", ref)
        if out.returncode == 0 and out.stdout.strip():
            return ref, out.stdout.strip()
    if _git(root, "rev-parse", "--git-dir").returncode != 0:
        raise DevkitError(f"{root} is not a git checkout; run nox -s ci -- --all there instead")
    tried = base or " nor ".join(BASE_REFS)
    raise DevkitError(
        f"no merge-base of HEAD with {tried}; fetch the base branch "
        "(git fetch origin main), pass --base REF, or run everything with --all"
    )


def changed_files(commit: str, root: Path = ROOT) -> list[str]:
    """Files changed since `commit`: committed, staged, unstaged and untracked."""
    # -z: names as they are (without it git quotes a non-ASCII name, which then
    # matches no path rule and counts as a change to everything).
    diff = _git(root, "diff", "-z", "--name-only", "--no-renames", commit)
    untracked = _git(root, "ls-files", "-z", "--others", "--exclude-standard")
    if diff.returncode != 0 or untracked.returncode != 0:
        raise DevkitError(f"git diff {commit[:12]} failed ({diff.stderr.strip()}); check the repo")
    return sorted(set(diff.stdout.split("\0") + untracked.stdout.split("\0")) - {""})


def precompiled_source(
    commit: str, environ: Mapping[str, str] | None = None, root: Path = ROOT
) -> Source:
    """Whether the index holds a CPU wheel of `commit` (nightly/ does not count here)."""
    index = precompiled.default_index(environ, root)
    if not index:
        return Source(False, f"no precompiled index is configured ({precompiled.INDEX_HINT})")
    variant = targets.get_target("cpu").version_suffix
    try:
        meta = precompiled.read_metadata(index, commit, variant)
    except DevkitError as exc:
        return Source(False, f"the index can't be read ({exc})")
    if meta is None:
        return Source(False, f"{index} has no {variant} wheel for {commit[:12]}")
    return Source(True, f"{meta['wheel']} from {index} at {commit[:12]}")


def nvcc_found() -> bool:
    try:
        cuda.find_cuda_home()
    except DevkitError:
        return False
    return True


# ---------------------------------------------------------------------------
# Running the plan.
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    step: Step
    result: str  # passed | failed | skipped | not run
    seconds: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Options:
    base: str | None = None
    run_all: bool = False
    dry_run: bool = False
    skip: frozenset[str] = field(default_factory=frozenset)


def parse_args(posargs: Sequence[str]) -> Options:
    """`--base REF`, `--all`, `--dry-run`, `--skip NAME[,NAME]`; anything else is an error."""
    parser = argparse.ArgumentParser(prog="nox -s ci --", exit_on_error=False, add_help=False)
    parser.add_argument("--base")
    parser.add_argument("--all", action="store_true", dest="run_all")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--skip", action="append", default=[])
    try:
        ns, unknown = parser.parse_known_args(list(posargs))
    except argparse.ArgumentError as exc:
        raise DevkitError(f"nox -s ci: {exc}; e.g. nox -s ci -- --base origin/main") from None
    if unknown:
        raise DevkitError(
            f"nox -s ci takes --base REF, --all, --dry-run and --skip NAME, not {unknown[0]}"
        )
    skip = frozenset(name for value in ns.skip for name in value.split(",") if name)
    known = {s.session for s in steps(Change(None), None, True, run_all=True)}
    for name in sorted(skip - known):
        raise DevkitError(
            f"nox -s ci: --skip {name} names no step of ci; the steps are "
            f"{', '.join(sorted(known))}"
        )
    return Options(ns.base, ns.run_all, ns.dry_run, skip)


def make_plan(
    options: Options, root: Path = ROOT, say: Callable[[str], None] = print
) -> tuple[list[Step], dict[str, str]]:
    """The steps for this checkout, printed with their reasons, and the environment they
    run with (the merge-base commit for the precompiled path)."""
    environ: dict[str, str] = {}
    change = Change(None)
    if not options.run_all:
        ref, commit = merge_base(options.base, root)
        files = changed_files(commit, root)
        say(f"ci: {len(files)} file(s) changed against {ref} (merge-base {commit[:12]})")
        for name in files[:20]:
            say(f"  {kind_of(name):8} {name}")
        if len(files) > 20:
            say(f"  ... and {len(files) - 20} more")
        change = classify(files)
        source = None
        if change.kind == PYTHON_ONLY:
            source = precompiled_source(commit, root=root)
            say(f"ci: precompiled binaries: {source.note}")
            if source.available:
                environ["VLLM_PRECOMPILED_WHEEL_COMMIT"] = commit
            else:
                say("ci: no precompiled wheel to use: building instead")
        plan = steps(change, source, nvcc_found())
    else:
        plan = steps(change, None, nvcc_found(), run_all=True)
    plan = [
        Step(s.session, s.args, s.reason, "--skip") if s.session in options.skip else s
        for s in plan
    ]
    if not plan:
        say("ci: nothing changed against the base: nothing to run (--all runs everything)")
    for number, step in enumerate(plan, 1):
        skipped = f"  [skipped: {step.skip}]" if step.skip else ""
        say(f"  {number}. {step.command:42} {step.reason}{skipped}")
    return plan, environ


def run_steps(
    plan: Sequence[Step],
    environ: Mapping[str, str],
    root: Path = ROOT,
    say: Callable[[str], None] = print,
) -> list[Outcome]:
    """Runs each step as `python -m nox -s NAME -- ARGS`; stops at the first failure."""
    outcomes: list[Outcome] = []
    failed = False
    env = {**os.environ, **environ}
    for number, step in enumerate(plan, 1):
        if step.skip:
            outcomes.append(Outcome(step, "skipped", note=step.skip))
            continue
        if failed:
            outcomes.append(Outcome(step, "not run", note="an earlier step failed"))
            continue
        say(f"ci: [{number}/{len(plan)}] {step.command}  ({step.reason})")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "nox", "-s", step.session]
        code = subprocess.run([*cmd, "--", *step.args] if step.args else cmd, cwd=root, env=env)
        seconds = time.monotonic() - started
        failed = code.returncode != 0
        result = "failed" if failed else "passed"
        outcomes.append(Outcome(step, result, seconds, f"exit code {code.returncode}" * failed))
        say(f"ci: {step.command} {result} in {seconds:.1f}s")
    return outcomes


def summary(outcomes: Sequence[Outcome], seconds: float) -> str:
    """The table a person reads at the end: session, result, time."""
    rows = [("session", "result", "time", "")]
    for o in outcomes:
        rows.append((o.step.command, o.result, f"{o.seconds:.1f}s" if o.seconds else "-", o.note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = sum(o.result == "failed" for o in outcomes)
    passed = sum(o.result == "passed" for o in outcomes)
    verdict = f"{failed} failed" if failed else "all passed"
    lines.append(f"ci: {verdict} ({passed} passed) in {seconds:.1f}s")
    return "\n".join(lines)
