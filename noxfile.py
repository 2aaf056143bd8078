"""Developer paths: one session each. `nox -l` lists them.

The logic lives in tools/devkit (stdlib-only, unit-tested); sessions only
pick a target and call its steps. Build sessions manage their own uv venv
(.venv-<target>), shared by the target's test session.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))

from devkit import DevkitError, pipeline  # noqa: E402

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "build-cpu", "test-kernels-cpu"]
nox.options.stop_on_first_error = True  # no kernel tests after a failed build
nox.needs_version = ">=2024.4.15"


def _step(session: nox.Session, fn, *args):
    """Runs a devkit step; its one-line error ends the session without a traceback."""
    try:
        return fn(*args)
    except DevkitError as exc:
        session.error(str(exc))


@nox.session(name="build-cpu", venv_backend="none")
def build_cpu(session: nox.Session) -> None:
    """Build the CPU extension into .venv-cpu (editable; posargs go to uv pip install)."""
    env = _step(session, pipeline.prepare_env, "cpu")
    session.log(_step(session, pipeline.build, env, session.posargs))


@nox.session(name="test-kernels-cpu", venv_backend="none")
def test_kernels_cpu(session: nox.Session) -> None:
    """Run tests/kernels on the CPU build (rebuilds incrementally; posargs go to pytest)."""
    env = _step(session, pipeline.prepare_env, "cpu")
    session.log(_step(session, pipeline.build, env))
    _step(session, pipeline.install_test_requirements, env)
    args = session.posargs or ["-n", "auto", "tests/kernels"]
    session.run(str(env.python), "-m", "pytest", "--device", "cpu", *args, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of tools/devkit and end-to-end tests of the sessions."""
    session.install("-r", "requirements/test.txt")
    session.run("pytest", "-n", "auto", "tests/devkit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (Python) and clang-format (C++), checking only."""
    session.install("-r", "requirements/lint.txt")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = [str(p) for p in Path("csrc").rglob("*") if p.suffix in {".cpp", ".h", ".cu", ".cuh"}]
    session.run("clang-format", "--dry-run", "--Werror", *sources)
