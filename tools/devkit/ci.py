"""The PR pipeline behind `nox -s ci`: which sessions a change needs, and running them.

    changed files (against the merge-base with the base branch: devkit.gitbase)
        -> needs_of(): each file's row of RULES -> what the change can affect, and why
        -> steps() -> the sessions to run, each with its reason (and those not run, why)
        -> run_steps() -> one summary table (session, result, time)

RULES is the one table from changed paths to what they can affect: lint, the
devkit tests, the CPU build, the CUDA compile, the kernel and plugin tests.
The kernel and plugin tests run on precompiled binaries when no build is
needed and binaries of the checkout's compiled inputs exist (found by binary
key: devkit.binaries), whatever the merge-base. `needs_of` and `steps` are pure
functions of their arguments (unit-tested); what they need from the machine
(precompiled binaries for the key, nvcc) is looked up by `precompiled_source`
and `nvcc_found` and handed in. Each step is run as `python -m nox -s NAME --
...` from the same checkout: exactly what a contributor types.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from devkit import DevkitError, binaries, binkey, binstore, cuda, gitbase, plan, targets
from devkit.envs import ROOT

BASE_REFS = gitbase.BASE_REFS

# The one list of what the build backend imports and runs (devkit.binkey keys it).
BUILD_MODULES = binkey.BUILD_MODULES
BUILD_SCRIPTS = binkey.BUILD_SCRIPTS

# What a change can affect; each becomes sessions in `steps`.
LINT = "lint"
DEVKIT = "devkit tests"
CPU_BUILD = "CPU build"
CUDA_BUILD = "CUDA compile"
KERNELS = "kernel tests"
PLUGINS = "plugin tests"
ALL = frozenset({LINT, DEVKIT, CPU_BUILD, CUDA_BUILD, KERNELS, PLUGINS})
CPU_SIDE = frozenset({LINT, CPU_BUILD, KERNELS, PLUGINS})

CUDA_ARCH = "9.0"  # what CI compiles for: sm_90, compile-only


@dataclass(frozen=True)
class Rule:
    """Paths (fnmatch patterns; `*` crosses `/`), what a change to them can affect, why."""

    patterns: tuple[str, ...]
    needs: frozenset[str]
    why: str
    kernel_tests: tuple[str, ...] = ()  # the kernel tests it reaches; () with KERNELS: all


# First match wins: specific rows before the general ones below them.
RULES: tuple[Rule, ...] = (
    Rule(("csrc/cpu/*",), CPU_SIDE, "CPU kernels: the CPU build reads them, no CUDA unit does"),
    Rule(
        ("csrc/*.cu", "csrc/cuda/*"),
        frozenset({LINT, CUDA_BUILD}),
        "CUDA kernels: only the CUDA build compiles them",
    ),
    Rule(
        ("csrc/*",),
        CPU_SIDE | {CUDA_BUILD},
        "shared kernel sources (headers, bindings): both builds read them",
    ),
    Rule(
        ("cmake/*", "CMakeLists.txt", "pyproject.toml", "requirements/build.txt"),
        ALL,
        "the build's own configuration",
    ),
    Rule(tuple(sorted(BUILD_MODULES | BUILD_SCRIPTS)), ALL, "the build backend runs it"),
    Rule(("requirements/cpu.txt",), CPU_SIDE | {DEVKIT}, "the CPU target's torch pin"),
    Rule(("requirements/cuda.txt",), frozenset({LINT, DEVKIT, CUDA_BUILD}), "the CUDA torch pin"),
    Rule(("requirements/lint.txt",), frozenset({LINT}), "the linters"),
    Rule(
        ("requirements/test.txt",),
        frozenset({LINT, DEVKIT, KERNELS, PLUGINS}),
        "what every test session installs",
    ),
    Rule(
        ("vllm/envs.py", "vllm/_op_table.py", "CONTRIBUTING.md"),
        frozenset({LINT, DEVKIT, KERNELS, PLUGINS}),
        "the env-var registry, the op table and their views, which the devkit reads and checks",
    ),
    Rule(
        ("vllm/model_executor/layers/activation.py",),
        frozenset({LINT, KERNELS}),
        "the activation layers: their kernel tests, on precompiled binaries",
        ("tests/kernels/test_activation.py", "tests/kernels/test_custom_op.py"),
    ),
    Rule(
        ("vllm/model_executor/layers/layernorm.py",),
        frozenset({LINT, KERNELS}),
        "the norm layers: their kernel tests, on precompiled binaries",
        ("tests/kernels/test_layernorm.py",),
    ),
    Rule(
        ("vllm/model_executor/layers/rotary_embedding/*",),
        frozenset({LINT, KERNELS}),
        "the rotary embedding: its kernel tests, on precompiled binaries",
        ("tests/kernels/test_rotary_embedding.py",),
    ),
    Rule(
        ("vllm/*",),
        frozenset({LINT, KERNELS, PLUGINS}),
        "the Python package: its tests and the kernel tests, on precompiled binaries",
    ),
    Rule(("tests/kernels/*",), frozenset({LINT, KERNELS}), "the kernel tests"),
    Rule(("tests/plugins/*", "examples/*"), frozenset({LINT, PLUGINS}), "the plugin tests"),
    Rule(
        ("tools/*", "tests/devkit/*", "noxfile.py", "benchmarks/*", ".github/*", ".ci/*"),
        frozenset({LINT, DEVKIT}),
        "the developer tooling: its tests",
    ),
    Rule(("tests/*",), frozenset({LINT, DEVKIT, KERNELS, PLUGINS}), "shared test setup"),
    Rule(("docs/*", "*.md", "*.rst", "*.txt", "LICENSE"), frozenset({LINT}), "documentation"),
)
UNKNOWN = Rule(("*",), ALL, "not known to leave anything alone")


def rule_for(path: str) -> Rule:
    """The row of RULES a changed file falls under (UNKNOWN: everything)."""
    posix = PurePosixPath(path).as_posix()
    for rule in RULES:
        if any(fnmatch.fnmatchcase(posix, pattern) for pattern in rule.patterns):
            return rule
    return UNKNOWN


@dataclass(frozen=True)
class Need:
    """One thing a change can affect, the first file that decided it, and its row's why."""

    what: str
    decided_by: str
    why: str
    count: int = 1  # how many changed files need it
    subset: tuple[str, ...] = ()  # KERNELS: the test files that are enough; (): all

    @property
    def reason(self) -> str:
        more = self.count - 1
        others = f" (and {more} more file{'s' * (more != 1)})" if more > 0 else ""
        return f"{self.decided_by} changed{others}: {self.why}"


def needs_of(files: Sequence[str]) -> dict[str, Need]:
    """What the changed files can affect together, each with the file that decided it."""
    found: dict[str, Need] = {}
    for name in sorted(set(files)):
        rule = rule_for(name)
        own = _own_kernel_test(name) or rule.kernel_tests
        for what in sorted(rule.needs):
            subset = own if what == KERNELS else ()
            if what in found:
                old = found[what]
                # Two subsets add up; a file that needs them all makes it all.
                both = tuple(sorted(set(old.subset) | set(subset))) if old.subset and subset else ()
                found[what] = Need(what, old.decided_by, old.why, old.count + 1, both)
            else:
                found[what] = Need(what, name, rule.why, 1, subset)
    return found


def _own_kernel_test(path: str) -> tuple[str, ...]:
    """A changed kernel test file is its own subset."""
    posix = PurePosixPath(path)
    if posix.parent.as_posix() == "tests/kernels" and posix.name.startswith("test_"):
        return (posix.as_posix(),)
    return ()


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
    """Whether precompiled CPU binaries of the checkout's key exist, and where or why not."""

    available: bool
    note: str  # one line: where they are, or why none is used


def steps(
    needs: Mapping[str, Need], source: Source | None, nvcc: bool, run_all: bool = False
) -> list[Step]:
    """The sessions the needs call for, in order, each with its reason.

    `source` says whether precompiled binaries exist (looked up only when the
    kernel or plugin tests run without a build); `nvcc` whether the
    compile-only CUDA build can run.
    """
    if run_all:
        needs = {what: Need(what, "--all", "everything runs") for what in ALL}

    def why(what: str) -> str:
        need = needs[what]
        return "--all" if run_all else need.reason

    plan = []
    if LINT in needs:
        plan.append(Step("lint", reason=why(LINT)))
    if DEVKIT in needs:
        plan.append(Step("tests", reason=why(DEVKIT)))
    tests = [what for what in (KERNELS, PLUGINS) if what in needs]
    subset = needs[KERNELS].subset if KERNELS in needs and not run_all else ()
    pytest_args = ("-n", "auto", *subset) if subset else ()
    only = f" ({len(subset)} of the kernel test files)" if subset else ""
    if CPU_BUILD in needs:
        plan.append(Step("build-cpu", reason=why(CPU_BUILD)))
        if KERNELS in needs:
            plan.append(
                Step("test-kernels-cpu", pytest_args, f"{why(KERNELS)}{only} (on this build)")
            )
        if PLUGINS in needs:
            # build-cpu stored its binaries under this checkout's key: the plugin venv
            # takes them from the local store instead of compiling them again.
            stored = f"{why(PLUGINS)} (this build's binaries, from the local store)"
            plan.append(Step("test-plugins", ("--precompiled",), stored))
    elif tests and source is not None and source.available:
        first = needs[tests[0]]
        plan.append(
            Step(
                "dev-precompiled",
                reason=f"{first.reason}; nothing compiled changed: prebuilt binaries "
                f"({source.note})",
            )
        )
        if KERNELS in needs:
            no_compiler = f"{why(KERNELS)}{only}, no compiler"
            plan.append(Step("test-kernels-cpu", ("--precompiled", *pytest_args), no_compiler))
        if PLUGINS in needs:
            plan.append(Step("test-plugins", ("--precompiled",), f"{why(PLUGINS)}, no compiler"))
    elif tests:
        missing = source.note if source else "no prebuilt binaries were looked up"
        first = needs[tests[0]]
        plan.append(Step("build-cpu", reason=f"{first.reason}; but {missing}: build"))
        if KERNELS in needs:
            plan.append(Step("test-kernels-cpu", pytest_args, f"{why(KERNELS)}{only}"))
        if PLUGINS in needs:
            stored = f"{why(PLUGINS)} (this build's binaries, from the local store)"
            plan.append(Step("test-plugins", ("--precompiled",), stored))
    if CUDA_BUILD in needs:
        no_nvcc = "" if nvcc else "nvcc is not installed here"
        cuda_why = (
            f"{why(CUDA_BUILD)}; compile-only for sm_90, machine code and registration checked"
        )
        plan.append(Step("build-cuda", ("--arch", CUDA_ARCH), cuda_why, no_nvcc))
    return plan


def not_planned(needs: Mapping[str, Need], run_all: bool = False) -> list[str]:
    """What the change does not reach, one line each: the choices not made, and why."""
    if run_all:
        return []
    lines = []
    for what, sessions in (
        (LINT, "lint"),
        (DEVKIT, "tests (the devkit suite)"),
        (CPU_BUILD, "build-cpu"),
        (CUDA_BUILD, "build-cuda"),
        (KERNELS, "test-kernels-cpu"),
        (PLUGINS, "test-plugins"),
    ):
        if what not in needs:
            lines.append(f"not run: {sessions}: no changed file reaches the {what}")
    return lines


# ---------------------------------------------------------------------------
# What the machine says: changed files, precompiled wheels, nvcc.
# ---------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def merge_base(base: str | None, root: Path = ROOT) -> tuple[str, str]:
    """(the base ref, the merge-base commit of HEAD with it): devkit.gitbase's."""
    try:
        return gitbase.merge_base(base, root)
    except DevkitError as exc:
        raise DevkitError(f"{exc}; or run everything with --all") from None


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
    environ: Mapping[str, str] | None = None,
    root: Path = ROOT,
    store: binstore.Store | None = None,
) -> Source:
    """Whether CPU binaries of this checkout's binary key exist: in the local store, or
    in the index by key (whatever the merge-base)."""
    target = targets.get_target("cpu")
    try:
        key = binaries.lookup_key(target, plan.expected_torch(target), root=root, environ=environ)
        candidates = [key, *binaries.fallback_keys(key, environ)]
        store = store or binstore.Store.default()
        for candidate in candidates:
            if store.find(candidate.digest) is not None:
                where = f"key {candidate.short} in the local binary store {store.root}"
                return Source(True, where)
        index = binaries.precompiled.default_index(environ, root)
        if not index:
            return Source(
                False,
                f"key {key.short} is not in the local binary store, and no precompiled "
                f"index is configured ({binaries.precompiled.INDEX_HINT})",
            )
        for candidate in candidates:
            where = f"{binaries.KEYS}/{candidate.digest}"
            meta = binaries.precompiled.read_metadata(index, where, "cpu")
            if meta is not None:
                commit = str(meta.get("commit") or "?")[:12]
                at = f"by key {candidate.short} (built at {commit})"
                return Source(True, f"{meta['wheel']} from {index} {at}")
    except DevkitError as exc:
        return Source(False, f"the prebuilt binaries can't be looked up ({exc})")
    return Source(False, f"neither the local binary store nor {index} has key {key.short}")


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
    known = {s.session for s in steps({}, None, True, run_all=True)}
    known |= {s.session for s in steps(needs_of(["vllm/envs.py"]), Source(True, ""), True)}
    for name in sorted(skip - known):
        raise DevkitError(
            f"nox -s ci: --skip {name} names no step of ci; the steps are "
            f"{', '.join(sorted(known))}"
        )
    return Options(ns.base, ns.run_all, ns.dry_run, skip)


def make_plan(
    options: Options, root: Path = ROOT, say: Callable[[str], None] = print
) -> tuple[list[Step], dict[str, str]]:
    """The steps for this checkout, printed with their reasons (and what is not run,
    why), and the environment they run with."""
    environ: dict[str, str] = {}
    needs: dict[str, Need] = {}
    if not options.run_all:
        ref, commit = merge_base(options.base, root)
        files = changed_files(commit, root)
        say(f"ci: {len(files)} file(s) changed against {ref} (merge-base {commit[:12]})")
        for name in files[:20]:
            rule = rule_for(name)
            say(f"  {name}: {', '.join(sorted(rule.needs))} ({rule.why})")
        if len(files) > 20:
            say(f"  ... and {len(files) - 20} more")
        needs = needs_of(files)
        source = None
        if CPU_BUILD not in needs and (KERNELS in needs or PLUGINS in needs):
            source = precompiled_source(root=root)
            say(f"ci: precompiled binaries: {source.note}")
            if not source.available:
                say("ci: no prebuilt binaries of this checkout's key: building instead")
        plan = steps(needs, source, nvcc_found())
    else:
        plan = steps(needs, None, nvcc_found(), run_all=True)
    plan = [
        Step(s.session, s.args, s.reason, "--skip") if s.session in options.skip else s
        for s in plan
    ]
    if not plan:
        say("ci: nothing changed against the base: nothing to run (--all runs everything)")
    for number, step in enumerate(plan, 1):
        skipped = f"  [skipped: {step.skip}]" if step.skip else ""
        say(f"  {number}. {step.command:42} {step.reason}{skipped}")
    if plan:
        for line in not_planned(needs, options.run_all):
            say(f"  {line}")
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
