"""Developer paths: one session each. `nox -l` lists them.

The logic lives in tools/devkit (stdlib-only, unit-tested); sessions only
pick a target and call its steps. Build sessions manage their own uv venv
(.venv-<target>), which the target's test session reuses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))

from devkit import DevkitError, pipeline, precompiled  # noqa: E402

# Without uv, the sessions that make nox venvs (tests, lint) fall back to virtualenv;
# the build sessions need uv and say `pip install uv`.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "build-cpu", "test-kernels-cpu", "test-plugins"]
nox.options.stop_on_first_error = True  # no kernel tests after a failed build
nox.needs_version = ">=2024.4.15"


def _step(session: nox.Session, fn, *args):
    """Runs a devkit step; its one-line error ends the session without a traceback."""
    try:
        return fn(*args)
    except DevkitError as exc:
        session.error(str(exc))


def _build(session: nox.Session, target: str, posargs_to_uv: bool = False) -> pipeline.Env:
    """The target's venv, built; --arch and --use-existing-torch are taken from posargs."""
    options = _step(session, pipeline.parse_options, session.posargs)
    env = _step(session, pipeline.prepare_env, target, options)
    session.log(_step(session, pipeline.build, env, options.rest if posargs_to_uv else ()))
    return env


def _test_kernels(session: nox.Session, env: pipeline.Env, device: str) -> None:
    _step(session, pipeline.install_test_requirements, env)
    args = env.options.rest or ("-n", "auto", "tests/kernels")
    session.run(str(env.python), "-m", "pytest", "--device", device, *args, external=True)


@nox.session(name="build-cpu", venv_backend="none")
def build_cpu(session: nox.Session) -> None:
    """Build the CPU extension into .venv-cpu (editable; posargs go to uv pip install)."""
    _build(session, "cpu", posargs_to_uv=True)


@nox.session(name="test-kernels-cpu", venv_backend="none")
def test_kernels_cpu(session: nox.Session) -> None:
    """Run tests/kernels on the CPU build (rebuilds incrementally; posargs go to pytest)."""
    _test_kernels(session, _build(session, "cpu"), "cpu")


@nox.session(venv_backend="none")
def wheel(session: nox.Session) -> None:
    """Build a wheel with build info into dist/ (-- --target cpu|cuda [--index DIR] [--arch X])."""
    options = _step(session, pipeline.parse_options, session.posargs)
    env = _step(session, pipeline.prepare_env, options.target or pipeline.default_target(), options)
    wheel = _step(session, pipeline.build_wheel, env)
    if options.index:
        session.log(_step(session, precompiled.publish, wheel, Path(options.index).resolve()))


@nox.session(name="dev-precompiled", venv_backend="none")
def dev_precompiled(session: nox.Session) -> None:
    """Editable install with a prebuilt wheel's binaries, no compiler (-- --target cpu|cuda)."""
    options = _step(session, pipeline.parse_options, session.posargs)
    target = options.target or pipeline.default_target()
    env = _step(session, pipeline.prepare_env, target, options, f"precompiled-{target}", True)
    session.log(_step(session, pipeline.install_precompiled, env))


@nox.session(name="build-cuda", venv_backend="none")
def build_cuda(session: nox.Session) -> None:
    """Build the CUDA extension for one arch (-- --arch 9.0|hopper [--use-existing-torch])."""
    _build(session, "cuda", posargs_to_uv=True)


@nox.session(name="build-rocm", venv_backend="none")
def build_rocm(session: nox.Session) -> None:
    """Build the ROCm extension for one arch (-- --arch gfx942 [--use-existing-torch])."""
    _build(session, "rocm", posargs_to_uv=True)


@nox.session(name="test-kernels-cuda", venv_backend="none")
def test_kernels_cuda(session: nox.Session) -> None:
    """Run tests/kernels on the local GPU, CUDA or ROCm (--use-existing-torch; posargs: pytest)."""
    target = pipeline.gpu_target()
    if target is None:
        session.skip(
            "no GPU here (nvidia-smi and rocminfo find none): the GPU kernel tests did not run"
        )
    # ROCm's torch names its device "cuda" too.
    _test_kernels(session, _build(session, target), "cuda")


@nox.session(name="test-plugins", venv_backend="none")
def test_plugins(session: nox.Session) -> None:
    """Test plugin loading with examples/vllm_plugin_example installed (posargs to pytest)."""
    env = _step(session, pipeline.prepare_env, "cpu", pipeline.Options(), "plugins")
    session.log(_step(session, pipeline.build, env))
    _step(session, pipeline.install_test_requirements, env)
    _step(session, pipeline.run, env.uv_pip("examples/vllm_plugin_example"), pipeline.uv_env())
    session.run(str(env.python), "-m", "pytest", "tests/plugins", *session.posargs, external=True)


@nox.session(venv_backend="none")
def doctor(session: nox.Session) -> None:
    """Report what a build would use and what is wrong (-- --target cpu|cuda [--arch X])."""
    from devkit import doctor as doctor_module

    if doctor_module.main(session.posargs) != 0:
        session.error("doctor found problems; each is listed above with its fix")


@nox.session(name="bench-kernels", venv_backend="none")
def bench_kernels(session: nox.Session) -> None:
    """Time the kernels against forward_native and a copy (on the GPU if any; posargs to it)."""
    env = _build(session, pipeline.default_target())
    device = "cpu" if env.target.name == "cpu" else "cuda"  # ROCm's torch says cuda too
    script = "benchmarks/bench_kernels.py"
    session.run(str(env.python), script, "--device", device, *env.options.rest, external=True)


@nox.session(name="bench-build", venv_backend="none")
def bench_build(session: nox.Session) -> None:
    """Time build-cpu cold, unchanged and after touching one file, in a fresh copy."""
    session.run(sys.executable, "benchmarks/bench_build.py", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of tools/devkit and end-to-end tests of the sessions."""
    # Build tools too: the end-to-end tests build in a copy of the checkout.
    session.install("-r", "requirements/test.txt", "-r", "requirements/build.txt", "nox", "uv")
    session.run("pytest", "-n", "auto", "tests/devkit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (Python) and clang-format (C++), checking only."""
    session.install("-r", "requirements/lint.txt")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = [str(p) for p in Path("csrc").rglob("*") if p.suffix in {".cpp", ".h", ".cu", ".cuh"}]
    session.run("clang-format", "--dry-run", "--Werror", *sources)
