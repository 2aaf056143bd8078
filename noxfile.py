"""Developer paths: one session each. `nox -l` lists them.

The logic lives in tools/devkit (stdlib-only, unit-tested); sessions only
pick a target and call its steps. Build sessions manage their own uv venv
(.venv-<target>), which the target's test session reuses.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))

from devkit import DevkitError  # noqa: E402
from devkit.artifacts import wheelindex  # noqa: E402
from devkit.build import pipeline, prebuilt  # noqa: E402
from devkit.checks import ci_run, workflows  # noqa: E402
from devkit.commands import bench, crossversion  # noqa: E402
from devkit.foundation import procs  # noqa: E402
from devkit.toolchains import options, targets, uv  # noqa: E402

# Without uv, the sessions that make nox venvs (tests, lint) fall back to virtualenv;
# the build sessions need uv and say `pip install uv`.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = [
    "tests",
    "build-cpu",
    "test-kernels-cpu",
    "test-kernels-torch",
    "test-plugins",
]
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


def _build(session: nox.Session, target: str, posargs_to_uv: bool = False) -> pipeline.Setup:
    """The target's venv, built; --arch and --use-existing-torch are taken from posargs."""
    found = _options(session)
    setup = _step(session, pipeline.set_up, target, found)
    session.log(_step(session, pipeline.build, setup, found.rest if posargs_to_uv else ()))
    return setup


def _precompiled(session: nox.Session, options: pipeline.Options, venv_name: str) -> pipeline.Setup:
    """The CPU venv with a prebuilt wheel's binaries (--precompiled): no compiler runs."""
    setup, installed = _step(session, prebuilt.precompiled_setup, "cpu", options, venv_name)
    session.log(installed)
    return setup


def _test_kernels(session: nox.Session, setup: pipeline.Setup, device: str) -> None:
    _step(session, pipeline.install_test_requirements, setup)
    from devkit.checks import tiers

    args = setup.options.rest or tiers.kernel_tests(device)
    # On prebuilt binaries the tests know no compiler is meant to run.
    environ = {"VLLM_USE_PRECOMPILED": "1"} if setup.plan.precompiled else None
    cmd = [str(setup.python), "-m", "pytest", "--device", device, *args]
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
        _cross_version(session, found)
        return
    if found.precompiled:
        setup = _precompiled(session, found, "precompiled-cpu")
    else:
        setup = _build(session, "cpu")
    _test_kernels(session, setup, "cpu")


@nox.session(name="test-kernels-torch", venv_backend="none")
def test_kernels_torch(session: nox.Session) -> None:
    """Run tests/kernels with the CPU binary under another torch (default: the newest pin)."""
    found = _options(session)
    if not (found.torch or found.build_torch):
        found = dataclasses.replace(found, torch=_step(session, crossversion.other_pin))
    _cross_version(session, found)


def _cross_version(session: nox.Session, found: options.Options) -> None:
    """The binary built against one torch pin, its kernel tests run under another."""
    built = _step(session, crossversion.build_setup, found, found.build_torch)
    session.log(_step(session, pipeline.build, built))
    tested = _step(session, crossversion.test_setup, found.torch, built)
    staged = _step(session, crossversion.stage, built, tested)
    from devkit.checks import tiers

    args = found.rest or tiers.kernel_tests("cpu")  # the same selection as on the pin
    cmd = [str(tested.python), "-m", "pytest", "--device", "cpu", *args]
    session.run(*cmd, external=True, env={"PYTHONPATH": str(staged), "PYTHONSAFEPATH": "1"})


@nox.session(venv_backend="none")
def wheel(session: nox.Session) -> None:
    """Build a wheel with build info into dist/ (-- --target cpu|cuda [--index DIR] [--arch X])."""
    found = _options(session)
    setup = _step(session, pipeline.set_up, found.target or targets.default_target(), found)
    wheel = _step(session, pipeline.build_wheel, setup)
    if found.index:
        key = _step(session, pipeline.binary_key, setup).digest
        index = Path(found.index).resolve()
        session.log(_step(session, wheelindex.publish, wheel, index, pipeline.ROOT, key))


@nox.session(name="dev-precompiled", venv_backend="none")
def dev_precompiled(session: nox.Session) -> None:
    """Editable install with prebuilt binaries found by key; else builds once (-- --target)."""
    found = _options(session)
    target = found.target or targets.default_target()
    _, installed = _step(
        session, prebuilt.precompiled_setup, target, found, f"precompiled-{target}"
    )
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
    target = targets.gpu_target()
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
        setup = _precompiled(session, found, "precompiled-plugins")
    else:
        setup = _step(session, pipeline.set_up, "cpu", pipeline.Options(), "plugins")
        session.log(_step(session, pipeline.build, setup))
    _step(session, pipeline.install_test_requirements, setup)
    _step(session, procs.check, setup.uv_pip("examples/vllm_plugin_example"), uv.uv_env())
    session.run(str(setup.python), "-m", "pytest", "tests/plugins", *found.rest, external=True)


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """The PR pipeline: the sessions your changes need (-- [--base REF] [--all] [--dry-run])."""
    found = _step(session, ci_run.parse_args, session.posargs)
    chosen, environ = _step(session, ci_run.choose_steps, found)
    if found.dry_run:
        return
    started = time.monotonic()
    outcomes = ci_run.run_steps(chosen, environ)
    session.log(ci_run.summary(outcomes, time.monotonic() - started))
    if any(o.result == "failed" for o in outcomes):
        session.error("a step failed; its output is above, and the table says which")


@nox.session(venv_backend="none")
def doctor(session: nox.Session) -> None:
    """Report what a build would use and what is wrong (-- --target cpu|cuda [--arch X])."""
    from devkit.commands import doctor as doctor_module

    found = _options(session)
    if doctor_module.diagnose(found.target or targets.default_target(), found.arch) != 0:
        session.error("doctor found problems; each is listed above with its fix")


@nox.session(name="bench-kernels", venv_backend="none")
def bench_kernels(session: nox.Session) -> None:
    """Time the kernels against forward_native and a copy, or -- --against REF (A/B)."""
    found = _options(session)
    setup = _step(session, pipeline.set_up, targets.default_target(), found)
    session.log(_step(session, pipeline.build, setup))
    device = "cpu" if setup.target.name == "cpu" else "cuda"  # ROCm's torch says cuda too
    args = ["--device", device, *found.rest]
    if found.against is not None:
        bench_txt = str(Path("requirements") / "bench.txt")
        _step(session, procs.check, setup.uv_pip("-r", bench_txt), uv.uv_env())
        ref = _step(session, bench.build_ref, setup, found.against)
        args += ["--against-lib", str(ref.lib), "--against-name", f"{ref.name} ({ref.sha[:12]})"]
        args += ["--out", str(ref.out_dir)]
    script = "benchmarks/bench_kernels.py"
    session.run(str(setup.python), script, *args, external=True)


@nox.session(name="build-profile")
def build_profile(session: nox.Session) -> None:
    """Slowest files of the last build: table, Chrome trace, PNG chart (-- --target cuda)."""
    _options(session)  # --help, and a bad option, before installing anything
    session.install("matplotlib")
    tools = str(Path(__file__).parent / "tools")
    session.run(
        "python", "-m", "devkit.commands.profile", *session.posargs, env={"PYTHONPATH": tools}
    )


@nox.session(venv_backend="none")
def clean(session: nox.Session) -> None:
    """Remove this checkout's build dirs, venvs, staged binaries (-- --target, --all, --dry-run)."""
    from devkit.commands import clean as clean_module

    found = _options(session)
    lines = _step(
        session,
        clean_module.clean,
        found.target,
        found.all,
        clean_module.ROOT,
        found.dry_run,
        session.log,
    )
    for line in lines:
        session.log(line)


@nox.session(venv_backend="none")
def farm(session: nox.Session) -> None:
    """Run an sccache-dist scheduler and build servers here until Ctrl-C (-- --help)."""
    from devkit.commands import farm as farm_module

    if _step(session, farm_module.main, session.posargs) != 0:
        session.error("the farm stopped: a process exited; its log line is above")


@nox.session(name="test-dist-cuda")
def test_dist_cuda(session: nox.Session) -> None:
    """Compile-only build-cuda through a local sccache-dist farm (minutes; root, nvcc)."""
    session.install("-r", "requirements/test.txt", "-r", "requirements/build.txt", "nox", "uv")
    test = "tests/devkit/test_dist.py::test_compile_only_cuda_build_through_the_cluster"
    session.run(
        "pytest", "-p", "no:xdist", test, *session.posargs, env={"VLLM_TEST_DIST_CUDA": "1"}
    )


@nox.session(name="bench-build", venv_backend="none")
def bench_build(session: nox.Session) -> None:
    """Time builds in fresh copies: cold, no-op, one file, a second checkout from a shared store."""
    session.run(sys.executable, "benchmarks/bench_build.py", *session.posargs, external=True)


def _devkit_tests(session: nox.Session) -> None:
    from devkit.checks import tiers

    # Build tools too: the end-to-end tests build in a copy of the checkout.
    session.install("-r", "requirements/test.txt", "-r", "requirements/build.txt", "nox", "uv")
    for run in tiers.runs(session.name, session.posargs):
        session.log(f"tests/devkit: {run.what}")
        session.run("pytest", *run.args)


@nox.session
def tests(session: nox.Session) -> None:
    """tests/devkit: unit tests, then the end-to-end ones but the nightly (-- pytest args)."""
    _devkit_tests(session)


@nox.session(name="tests-e2e")
def tests_e2e(session: nox.Session) -> None:
    """tests/devkit's nightly end-to-end tests, too slow for README's test command."""
    _devkit_tests(session)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Regenerate the generated blocks: CONTRIBUTING's tables, the op table's C++ and CMake."""
    from devkit.commands import docgen

    _options(session)
    changed = _step(session, docgen.write)
    session.log(f"rewrote {', '.join(changed)}" if changed else "generated blocks are up to date")


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
