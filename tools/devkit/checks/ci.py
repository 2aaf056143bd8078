"""The PR pipeline behind `nox -s ci`: which sessions a change needs, and running them.

    changed files (against the merge-base with the base branch: devkit.foundation.gitbase)
        -> needs_of(): each file's row of RULES -> what the change can affect, and why
        -> steps() -> the sessions to run, each with its reason (and those not run, why)
        -> devkit.checks.ci_run.run_steps() -> one summary table (session, result, time)

RULES is the one table from changed paths to what they can affect: lint, the
devkit tests, the CPU build, the CUDA compile, the kernel and plugin tests.
The kernel and plugin tests run on precompiled binaries when no build is
needed and binaries of the checkout's compiled inputs exist (found by binary
key: devkit.artifacts.binaries), whatever the merge-base. `needs_of` and `steps` are pure
functions of their arguments (unit-tested); what they need from the machine
(precompiled binaries for the key, nvcc) is looked up by devkit.checks.ci_run
(`precompiled_source`, `nvcc_found`) and handed in. Each step is run as `python -m nox -s NAME --
...` from the same checkout: exactly what a contributor types.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from devkit.artifacts import binkey

# The one list of what the build backend imports and runs (devkit.artifacts.binkey keys it).
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
    Rule(("benchmarks/*.md",), frozenset({LINT}), "measurements: documentation"),
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
        return "--all" if run_all else needs[what].reason

    chosen = []
    if LINT in needs:
        chosen.append(Step("lint", reason=why(LINT)))
    if DEVKIT in needs:
        chosen.append(Step("tests", reason=why(DEVKIT)))
    chosen += _cpu_steps(needs, source, why, run_all)
    if CUDA_BUILD in needs:
        no_nvcc = "" if nvcc else "nvcc is not installed here"
        cuda_why = (
            f"{why(CUDA_BUILD)}; compile-only for sm_90, machine code and registration checked"
        )
        chosen.append(Step("build-cuda", ("--arch", CUDA_ARCH), cuda_why, no_nvcc))
    return chosen


def _cpu_steps(
    needs: Mapping[str, Need],
    source: Source | None,
    why: Callable[[str], str],
    run_all: bool,
) -> list[Step]:
    """The CPU build and the kernel and plugin tests: on a build of this checkout, or on
    prebuilt binaries of its key when nothing compiled changed and they exist."""
    tests = [what for what in (KERNELS, PLUGINS) if what in needs]
    subset = needs[KERNELS].subset if KERNELS in needs and not run_all else ()
    pytest_args = ("-n", "auto", *subset) if subset else ()
    only = f" ({len(subset)} of the kernel test files)" if subset else ""
    if CPU_BUILD not in needs and tests and source is not None and source.available:
        prebuilt = f"{needs[tests[0]].reason}; nothing compiled changed: prebuilt binaries"
        chosen = [Step("dev-precompiled", reason=f"{prebuilt} ({source.note})")]
        if KERNELS in needs:
            no_compiler = f"{why(KERNELS)}{only}, no compiler"
            chosen.append(Step("test-kernels-cpu", ("--precompiled", *pytest_args), no_compiler))
        if PLUGINS in needs:
            chosen.append(Step("test-plugins", ("--precompiled",), f"{why(PLUGINS)}, no compiler"))
        return chosen
    if CPU_BUILD in needs:
        chosen = [Step("build-cpu", reason=why(CPU_BUILD))]
        kernels_why = f"{why(KERNELS)}{only} (on this build)" if KERNELS in needs else ""
    elif tests:
        missing = source.note if source else "no prebuilt binaries were looked up"
        chosen = [Step("build-cpu", reason=f"{needs[tests[0]].reason}; but {missing}: build")]
        kernels_why = f"{why(KERNELS)}{only}" if KERNELS in needs else ""
    else:
        return []
    if KERNELS in needs:
        chosen.append(Step("test-kernels-cpu", pytest_args, kernels_why))
    if PLUGINS in needs:
        # build-cpu stored its binaries under this checkout's key: the plugin venv
        # takes them from the local store instead of compiling them again.
        stored = f"{why(PLUGINS)} (this build's binaries, from the local store)"
        chosen.append(Step("test-plugins", ("--precompiled",), stored))
    return chosen


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
