"""The tiers of tests/devkit: every test runs in README's test command or in the
nightly workflow's session, once, and the tier each session runs is the one said."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from test_sessions import ROOT

from devkit.checks import tiers, workflows


def collected(args: tuple[str, ...]) -> list[str]:
    """The test ids one run of a session selects (its arguments, without xdist's)."""
    kept, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg in ("-n", "--dist"):
            skip = 1
        else:
            kept.append(arg)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *kept],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    assert done.returncode in (0, 5), done.stdout[-3000:] + done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_every_test_runs_once_in_tests_or_tests_e2e():
    planned = [run for session in ("tests", "tests-e2e") for run in tiers.runs(session)]
    with ThreadPoolExecutor() as pool:  # five collections at once
        every, *found = pool.map(collected, [(tiers.DEVKIT,), *(run.args for run in planned)])
    runs = {run.what: ids for run, ids in zip(planned, found, strict=True)}
    ran = [test for ids in runs.values() for test in ids]
    # None left out, none twice (a nightly test is e2e too: conftest.py says so).
    assert sorted(ran) == sorted(every)
    unit, e2e = runs["unit tests"], runs["end-to-end tests (not the nightly ones)"]
    assert "tests/devkit/test_tiers.py::test_every_test_runs_once_in_tests_or_tests_e2e" in unit
    assert any(t.startswith("tests/devkit/test_sessions.py::") for t in e2e)
    assert not any(t.startswith("tests/devkit/test_sessions.py::") for t in unit)
    assert all(t.startswith(tiers.SHARED_CACHE) for t in runs[tiers.SESSIONS["tests-e2e"][1].what])


def test_the_sessions_run_unit_tests_first_and_pass_posargs():
    first, second = tiers.runs("tests")
    assert first.args[first.args.index("-m") + 1] == "not e2e"
    assert second.args[second.args.index("-m") + 1] == "e2e and not nightly"
    (only,) = tiers.runs("tests", ["-k", "venv"])
    assert only.args[-2:] == ("-k", "venv") and "not nightly" in only.args
    (only,) = tiers.runs("tests-e2e", ["-x"])
    assert only.args[-1] == "-x" and "nightly" in only.args


def test_readme_runs_tests_and_the_nightly_workflow_runs_tests_e2e():
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"^```bash\n(.*?)^```$", readme, re.M | re.S)
    assert commands and "tests" in workflows.sessions_run(commands[1])
    assert "tests-e2e" not in workflows.sessions_run(commands[1])
    nightly = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    assert {"tests-e2e", "test-kernels-cpu"} <= workflows.sessions_run(nightly)
    assert f"nox -s test-kernels-cpu -- {' '.join(tiers.NIGHTLY_KERNEL_TESTS)}" in nightly


def test_the_cpu_kernel_tests_leave_the_nightly_cases_out():
    assert tiers.kernel_tests("cpu") == ("-n", "auto", "-m", "not nightly", "tests/kernels")
    assert tiers.kernel_tests("cuda") == ("-n", "auto", "tests/kernels")
