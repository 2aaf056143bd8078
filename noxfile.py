"""Developer paths: one session each. `nox -l` lists them.

The logic lives in tools/devkit (stdlib-only, unit-tested); sessions only
pick a target and call its steps. Build sessions manage their own uv venv
(.venv-<target>), which the target's test session reuses.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))

from devkit import (  # noqa: E402
    DevkitError,
    bench,
    crossversion,
    options,
    pipeline,
    precompiled,
    workflows,
)
from devkit import ci as ci_module  # noqa: E402

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


def _options(session: nox.Session) -> options.Options:
    """The session's own options (`-- --help` lists them and stops); the rest passed on."""
    try:
        return _step(session, options.parse, session.name, session.posargs)
    except options.HelpShown as shown:
        print(shown, end="")
        session.skip("--help: nothing was run")


def _build(session: nox.Session, target: str, posargs_to_uv: bool = False) -> pipeline.Env:
    """The target's venv, built; --arch and --use-existing-torch are taken from posargs."""
    found = _options(session)
    env = _step(session, pipeline.prepare_env, target, found)
    session.log(_step(session, pipeline.build, env, found.rest if posargs_to_uv else ()))
    return env


def _precompiled(session: nox.Session, options: pipeline.Options, venv_name: str) -> pipeline.Env:
    """The CPU venv with a prebuilt wheel's binaries (--precompiled): no compiler runs."""
    env, installed = _step(session, pipeline.precompiled_env, "cpu", options, venv_name)
    session.log(installed)
    return env


def _test_kernels(session: nox.Session, env: pipeline.Env, device: str) -> None:
    _step(session, pipeline.install_test_requirements, env)
    args = env.options.rest or ("-n", "auto", "tests/kernels")
    # On prebuilt binaries the tests know no compiler is meant to run.
    environ = {"VLLM_USE_PRECOMPILED": "1"} if env.plan.precompiled else None
    cmd = [str(env.python), "-m", "pytest", "--device", device, *args]
    session.run(*cmd, external=True, env=environ)


@nox.session(name="build-cpu", venv_backend="none")
def build_cpu(session: nox.Session) -> None:
    """Build the CPU extension into .venv-cpu (editable; posargs go to uv pip install)."""
    _build(session, "cpu", posargs_to_uv=True)


@nox.session(name="test-kernels-cpu", venv_backend="none")
def test_kernels_cpu(session: nox.Session) -> None:
    """Run tests/kernels on the CPU build (-- --precompiled, --torch V, --build-torch V; pytest)."""
    found = _options(session)
    if found.torch or found.build_torch:
        built = _step(session, crossversion.build_env, found, found.build_torch)
        session.log(_step(session, pipeline.build, built))
        tested = _step(session, crossversion.test_env, found.torch, built)
        staged = _step(session, crossversion.stage, built, tested)
        args = found.rest or ("-n", "auto", "tests/kernels")
        cmd = [str(tested.python), "-m", "pytest", "--device", "cpu", *args]
        environ = {"PYTHONPATH": str(staged), "PYTHONSAFEPATH": "1"}
        session.run(*cmd, external=True, env=environ)
        return
    if found.precompiled:
        env = _precompiled(session, found, "precompiled-cpu")
    else:
        env = _build(session, "cpu")
    _test_kernels(session, env, "cpu")


@nox.session(venv_backend="none")
def wheel(session: nox.Session) -> None:
    """Build a wheel with build info into dist/ (-- --target cpu|cuda [--index DIR] [--arch X])."""
    found = _options(session)
    env = _step(session, pipeline.prepare_env, found.target or pipeline.default_target(), found)
    wheel = _step(session, pipeline.build_wheel, env)
    if found.index:
        session.log(_step(session, precompiled.publish, wheel, Path(found.index).resolve()))


@nox.session(name="dev-precompiled", venv_backend="none")
def dev_precompiled(session: nox.Session) -> None:
    """Editable install with a prebuilt wheel's binaries, no compiler (-- --target cpu|cuda)."""
    found = _options(session)
    target = found.target or pipeline.default_target()
    _, installed = _step(session, pipeline.precompiled_env, target, found, f"precompiled-{target}")
    session.log(installed)


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
    _options(session)  # --help, and a bad option, even without a GPU
    target = pipeline.gpu_target()
    if target is None:
        session.skip(
            "no GPU here (nvidia-smi and rocminfo find none): the GPU kernel tests did not run"
        )
    # ROCm's torch names its device "cuda" too.
    _test_kernels(session, _build(session, target), "cuda")


@nox.session(name="test-plugins", venv_backend="none")
def test_plugins(session: nox.Session) -> None:
    """Test plugin loading with examples/vllm_plugin_example installed (--precompiled; pytest)."""
    found = _options(session)
    if found.precompiled:
        env = _precompiled(session, found, "precompiled-plugins")
    else:
        env = _step(session, pipeline.prepare_env, "cpu", pipeline.Options(), "plugins")
        session.log(_step(session, pipeline.build, env))
    _step(session, pipeline.install_test_requirements, env)
    _step(session, pipeline.run, env.uv_pip("examples/vllm_plugin_example"), pipeline.uv_env())
    session.run(str(env.python), "-m", "pytest", "tests/plugins", *found.rest, external=True)


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """The PR pipeline: the sessions your changes need (-- [--base REF] [--all] [--dry-run])."""
    found = _step(session, ci_module.parse_args, session.posargs)
    plan, environ = _step(session, ci_module.make_plan, found)
    if found.dry_run:
        return
    started = time.monotonic()
    outcomes = ci_module.run_steps(plan, environ)
    session.log(ci_module.summary(outcomes, time.monotonic() - started))
    if any(o.result == "failed" for o in outcomes):
        session.error("a step failed; its output is above, and the table says which")


@nox.session(venv_backend="none")
def doctor(session: nox.Session) -> None:
    """Report what a build would use and what is wrong (-- --target cpu|cuda [--arch X])."""
    from devkit import doctor as doctor_module

    found = _options(session)
    if doctor_module.diagnose(found.target or pipeline.default_target(), found.arch) != 0:
        session.error("doctor found problems; each is listed above with its fix")


@nox.session(name="bench-kernels", venv_backend="none")
def bench_kernels(session: nox.Session) -> None:
    """Time the kernels against forward_native and a copy, or -- --against REF (A/B)."""
    found = _options(session)
    env = _step(session, pipeline.prepare_env, pipeline.default_target(), found)
    session.log(_step(session, pipeline.build, env))
    device = "cpu" if env.target.name == "cpu" else "cuda"  # ROCm's torch says cuda too
    args = ["--device", device, *found.rest]
    if found.against is not None:
        bench_txt = str(Path("requirements") / "bench.txt")
        _step(session, pipeline.run, env.uv_pip("-r", bench_txt), pipeline.uv_env())
        ref = _step(session, bench.build_ref, env, found.against)
        args += ["--against-lib", str(ref.lib), "--against-name", f"{ref.name} ({ref.sha[:12]})"]
        args += ["--out", str(ref.out_dir)]
    script = "benchmarks/bench_kernels.py"
    session.run(str(env.python), script, *args, external=True)


@nox.session(name="build-profile")
def build_profile(session: nox.Session) -> None:
    """Slowest files of the last build: table, Chrome trace, PNG chart (-- --target cuda)."""
    _options(session)  # --help, and a bad option, before installing anything
    session.install("matplotlib")
    tools = str(Path(__file__).parent / "tools")
    session.run("python", "-m", "devkit.profile", *session.posargs, env={"PYTHONPATH": tools})


@nox.session(venv_backend="none")
def clean(session: nox.Session) -> None:
    """Remove this checkout's build dirs, venvs, staged binaries (-- --target cuda, --all)."""
    from devkit import clean as clean_module

    found = _options(session)
    for line in _step(session, clean_module.clean, found.target, found.all):
        session.log(line)


@nox.session(name="bench-build", venv_backend="none")
def bench_build(session: nox.Session) -> None:
    """Time builds in fresh copies: cold, no-op, one file, a second checkout from a shared store."""
    session.run(sys.executable, "benchmarks/bench_build.py", *session.posargs, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of tools/devkit and end-to-end tests of the sessions."""
    # Build tools too: the end-to-end tests build in a copy of the checkout.
    session.install("-r", "requirements/test.txt", "-r", "requirements/build.txt", "nox", "uv")
    if session.posargs:
        session.run("pytest", "-n", "auto", "tests/devkit", *session.posargs)
        return
    shared_cache = "tests/devkit/test_shared_cache.py"
    session.run("pytest", "-n", "auto", "tests/devkit", "--ignore", shared_cache)
    # Real sccache servers against real stores, on their own: beside the other
    # end-to-end builds their servers were seen to go away mid-build (unexplained).
    session.run("pytest", "-n", "2", shared_cache)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (Python), clang-format (C++), actionlint and zizmor (workflows), checking only."""
    session.install("-r", "requirements/lint.txt")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = [str(p) for p in Path("csrc").rglob("*") if p.suffix in {".cpp", ".h", ".cu", ".cuh"}]
    session.run("clang-format", "--dry-run", "--Werror", *sources)
    files = [str(p) for p in workflows.workflow_files()]
    session.run("zizmor", "--offline", *files)
    session.run(*_step(session, workflows.actionlint_command, files), external=True)
