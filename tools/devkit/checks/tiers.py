"""The tiers of tests/devkit and the pytest runs of `nox -s tests` and `nox -s tests-e2e`.

    unit       no marker             seconds each; first, so a broken helper fails in seconds
    e2e        @pytest.mark.e2e      sessions and builds for real; README's test command runs them
    nightly    @pytest.mark.nightly  end to end, too slow for README's command; the nightly workflow

tests/kernels has the nightly marker too: its big cases but one size per kernel
(tests/kernels/conftest.py), which `nox -s test-kernels-cpu` leaves out by default.

The markers are registered in pyproject.toml and explained in tests/devkit/conftest.py;
CONTRIBUTING.md, "Test tiers", says which tier runs where. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEVKIT = "tests/devkit"
# Real sccache servers against real stores, in a run of their own: beside the other
# end-to-end builds their servers were seen to go away mid-build (unexplained).
SHARED_CACHE = "tests/devkit/test_shared_cache.py"

# Expensive tests of one xdist group stay on one worker, one after another.
XDIST = ("-n", "auto", "--dist", "loadgroup")


@dataclass(frozen=True)
class Run:
    """One pytest run of a session: what it is (for the log line) and its arguments."""

    what: str
    args: tuple[str, ...]


SESSIONS: dict[str, tuple[Run, ...]] = {
    "tests": (
        Run("unit tests", ("-n", "auto", "-m", "not e2e", DEVKIT)),
        Run(
            "end-to-end tests (not the nightly ones)",
            (*XDIST, "-m", "e2e and not nightly", DEVKIT, "--ignore", SHARED_CACHE),
        ),
    ),
    "tests-e2e": (
        Run(
            "nightly end-to-end tests",
            (*XDIST, "-m", "nightly", DEVKIT, "--ignore", SHARED_CACHE),
        ),
        Run("nightly end-to-end tests: the shared compiler cache", ("-n", "2", SHARED_CACHE)),
    ),
}


def runs(session: str, posargs: Sequence[str] = ()) -> tuple[Run, ...]:
    """The pytest runs of `session`. With posargs, one run of the session's tiers plus
    them (`nox -s tests -- -k venv`; a `-m` of theirs wins: `-- -m nightly -k cache`)."""
    planned = SESSIONS[session]
    if not posargs:
        return planned
    marks = "not nightly" if session == "tests" else "nightly"
    return (
        Run(
            f"tests/devkit, -m {marks!r} and {' '.join(posargs)}",
            (*XDIST, "-m", marks, DEVKIT, *posargs),
        ),
    )


def kernel_tests(device: str) -> tuple[str, ...]:
    """test-kernels-<device>'s pytest arguments when none are given. On the CPU the
    big cases marked nightly are left out (seconds each there); a GPU runs them all."""
    nightly = ("-m", "not nightly") if device == "cpu" else ()
    return ("-n", "auto", *nightly, "tests/kernels")


NIGHTLY_KERNEL_TESTS = ("-n", "auto", "-m", "nightly", "tests/kernels")
