"""The steps of a developer path, shared by every target.

    sources -> venv -> torch -> plan -> build -> verify (devkit.build.smoke) -> summary

Each step prints what it does and why; a failure is a DevkitError with one
line that says what to do. noxfile.py calls these with a target name. What
the steps stand on lives in its own room: running commands (procs), uv (uv),
locks (lock), following the build (progress), this machine (machine).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError
from devkit.artifacts import binaries, binkey
from devkit.artifacts.wheelcheck import read_build_info
from devkit.build import cmakecache, metadata, progress
from devkit.build.smoke import smoke_check
from devkit.foundation import envs, layout, lock, procs
from devkit.foundation.envs import ROOT
from devkit.foundation.files import show
from devkit.foundation.log import say
from devkit.foundation.procs import check
from devkit.toolchains import (
    cache_server,
    dist,
    resources,
    sources,
    targets,
    uv,
    venv,
)
from devkit.toolchains import plan as plan_module
from devkit.toolchains.options import Options
from devkit.toolchains.plan import BuildPlan

# What the build backend itself imports: all a precompiled install needs.
BACKEND_PACKAGES = ("scikit-build-core", "packaging", "setuptools-scm")


@dataclass
class Setup:
    """A target's venv, set up, and the build plan resolved for it."""

    target: targets.Target
    path: Path
    python: Path
    torch: targets.TorchInfo
    uv_source_args: list[str]  # where uv may take packages from
    options: Options
    plan: BuildPlan

    def uv_pip(self, *args: str) -> list[str]:
        return [uv.find_uv(), "pip", "install", "-p", str(self.python), *self.uv_source_args, *args]

    @property
    def build_dir(self) -> Path:
        return self.plan.build_dir


def _existing_torch(target: targets.Target) -> targets.TorchInfo:
    info = targets.read_torch_info()
    if info is None or info.flavour != target.name:
        what = f"torch {info.version} ({info.flavour})" if info else "no torch"
        raise DevkitError(
            f"--use-existing-torch: {sys.executable} has {what}; install a {target.name} "
            "torch there, or drop --use-existing-torch to get the pinned one"
        )
    return info


def set_up(
    target_name: str,
    options: Options = Options(),  # noqa: B008 (frozen)
    venv_name: str = "",
    precompiled: bool = False,
    torch_pin: targets.Target | None = None,
) -> Setup:
    """Venv with the build requirements and the target's torch, checked, and its build plan.

    `torch_pin`: another target whose pinned torch the venv gets instead (the
    cross-version tests: a CPU venv with the CUDA target's torch 2.14.1); only
    for a target on the stable ABI, whose binary serves any torch from its floor.

    The venv is .venv-<target>, or .venv-<venv_name> for a session that needs
    its own (with a build directory of its own too: see targets.build_dir).
    A `precompiled` setup compiles nothing: no toolchain is checked, and of the
    build tools only the backend's own packages are installed.

    Every check that can fail fast (variables, CUDA arch and nvcc, where
    torch comes from) runs before anything is created or downloaded: the request
    is checked against the target's pin (plan.preflight), and the plan resolved
    once, against the venv's torch, reusing that check.
    """
    procs.install_handlers()  # SIGTERM, SIGHUP: one line, and the build's processes stopped
    procs.use_utf8_for_a_non_ascii_checkout()
    target = targets.get_target(target_name)
    pinned_by = target
    if torch_pin is not None and torch_pin.name != target.name:
        target, pinned_by = _with_torch_of(target, torch_pin), torch_pin
    existing = _existing_torch(target) if options.use_existing_torch else None
    request = plan_module.Request(
        target=target.name,
        arch=options.arch,
        venv_name=venv_name,
        use_existing_torch=options.use_existing_torch,
        precompiled=precompiled,
    )
    checked = plan_module.preflight(request, existing or plan_module.expected_torch(target))
    for line in checked.toolchain_lines():
        say(line)
    uv_exe = uv.find_uv()
    build_reqs = _build_requirements(target, precompiled)
    if existing:
        path, python, source_args = _into_existing(existing, build_reqs, uv_exe)
    else:
        path = layout.venv_dir(venv_name or target.name)
        python, source_args = _into_venv(path, target, pinned_by, build_reqs, uv_exe)
    info = targets.probe_torch(python)
    if info is None:
        raise DevkitError(f"torch is not installed in {show(path)}; delete it and rerun")
    if not existing:
        targets.check_torch(pinned_by, info)
    say(f"torch {info.version} ({info.flavour}) in {show(path)}")
    # The plan, once: the venv's torch (its version names the build dir) and tools.
    request = dataclasses.replace(request, python=str(python), bin_dir=str(python.parent))
    build_plan = plan_module.resolve(request, info, checked=checked)
    return Setup(target, path, python, info, source_args, options, build_plan)


def _build_requirements(target: targets.Target, precompiled: bool) -> list[str]:
    """requirements/build.txt and the target's build tools; the backend's own alone
    for a precompiled setup."""
    build_reqs = [
        *metadata.requirement_lines(ROOT / "requirements" / "build.txt"),
        *target.build_tools,
    ]
    if precompiled:
        build_reqs = [r for r in build_reqs if r.startswith(BACKEND_PACKAGES)]
    return build_reqs


def _into_existing(
    existing: targets.TorchInfo, build_reqs: list[str], uv_exe: str
) -> tuple[Path, Path, list[str]]:
    """The interpreter's own environment (an NGC container's, a GPU image's venv), with
    what it lacks installed: a venv of its own could not see that torch."""
    say(f"using the existing torch {existing.version} of {sys.executable}")
    source_args = sources.read_pip_sources().uv_args()
    python = Path(sys.executable)
    missing = uv.missing(python, build_reqs)
    if missing:
        cmd = [uv_exe, "pip", "install", "-p", str(python), *source_args, *missing]
        check(cmd, env=uv.uv_env())
    return Path(sys.prefix), python, source_args


def _into_venv(
    path: Path,
    target: targets.Target,
    pinned_by: targets.Target,
    build_reqs: list[str],
    uv_exe: str,
) -> tuple[Path, list[str]]:
    """The venv at `path`, made if need be, with everything `wanted` installed; returns
    its python and the sources uv takes packages from."""
    with lock.venv_lock(path, f"the setup of {show(path)}"):
        python = venv.usable(path, ROOT, say)
        wanted = [
            *build_reqs,
            *[
                line
                for line in metadata.requirement_lines(target.requirements_file)
                if pinned_by is target or not re.match(r"torch\b", line)
            ],
            target.torch_spec,
        ]
        todo = uv.unsatisfied(python, wanted) if python else wanted
        reinstall = []
        damaged = venv.missing_files(path, "torch") if python else []
        if damaged:
            say(
                f"torch in {show(path)} lacks {damaged[0]} ({len(damaged)} of its "
                "libraries): reinstalling it"
            )
            reinstall = ["--reinstall-package", "torch"]
        # Sources are probed (seconds) only when something is to be installed,
        # before the venv is made: an unreachable index creates nothing.
        pip = sources.read_pip_sources()
        torch_sources = sources.choose_torch_sources(pinned_by, pip, probe=bool(todo or damaged))
        say(torch_sources.note)
        source_args = torch_sources.uv_args()
        if python is None:
            python = venv.ensure(path, ROOT, uv_exe, check, uv.uv_env(), say)
        venv.check_uv_target(python, path, uv_exe, uv.uv_env())
        if todo or damaged:
            uv.fetching(
                [uv_exe, "pip", "install", "-p", str(python), *source_args, *reinstall, *wanted]
            )
        else:
            say(f"{show(path)} has every build requirement: nothing to install, no network")
    return python, source_args


def _with_torch_of(target: targets.Target, pin: targets.Target) -> targets.Target:
    """`target`'s row with `pin`'s torch (version, local tag, index); stable-ABI targets only."""
    if not target.torch_floor:
        raise DevkitError(
            f"the {target.name} target is built on torch's full C++ API, for its own pin "
            f"{target.torch_spec} only: it can't be built or tested against {pin.torch_spec}"
        )
    return dataclasses.replace(
        target,
        torch_version=pin.torch_version,
        torch_local=pin.torch_local,
        torch_index=pin.torch_index,
        index_strategy=pin.index_strategy,
    )


def backend_env(setup: Setup) -> tuple[dict[str, str], list[str]]:
    """The environment and the config settings that hand the plan to the build backend."""
    plan_file = setup.plan.write()
    if not setup.plan.precompiled:
        # Here, where it shows; the backend does it only for builds by hand.
        cmakecache.follow_cmake_args(setup.build_dir, envs.get("CMAKE_ARGS") or "", say)
    return setup.plan.compile_environ(uv.uv_env()), ["-C", f"{plan_module.CONFIG_KEY}={plan_file}"]


def build(setup: Setup, uv_args: Sequence[str] = ()) -> str:
    """Editable, no-isolation install of the package (incremental); returns the summary.

    `uv_args` go to `uv pip install` (e.g. -v to see the compiler output).
    """
    started = time.monotonic()
    started_ns = time.time_ns()
    say(setup.plan.jobs.reason)
    # --no-deps: set_up installed them (or left an existing torch alone), so a
    # rebuild resolves nothing and needs no network.
    extra = [*uv_args, "--no-deps"]
    key = binaries.key_of_build(setup.plan, say)  # what the binaries are built from, before
    # The store is checked first: a dead one is one warning and the local cache.
    with build_lock(setup), cache_server.serve(setup.plan.compiler_cache, say) as served:
        setup.plan = dataclasses.replace(setup.plan, compiler_cache=served.cache)
        cache = served.cache
        say(f"compiler cache: {cache.describe() if cache else 'none (VLLM_COMPILER_CACHE=auto)'}")
        cluster_lines = _compile(setup, served, extra, started_ns)
        lookups = served.lookups()
        for line in cluster_lines[1:]:
            say(line)  # compiles that came back from the cluster
        smoke_check(setup)
        if key and setup.plan.install_dir:
            binaries.store_build(key, setup.plan.install_dir / "vllm", say)
        # Read while the lock is held: a clean waiting for it removes the build dir.
        objects = progress.ninja_objects(setup.build_dir)
        compiled = len(progress.ninja_outputs(setup.build_dir, started_ns) & objects)

    kind = f"{served.cache.kind} " if served.cache else ""
    stats = f"{kind}{lookups.describe()}" if lookups else "cache hits unknown"
    return (
        f"built {setup.target.name} in {time.monotonic() - started:.1f}s: "
        f"compiled {compiled}/{len(objects)} translation units ({stats}); "
        + "".join(f"{line}; " for line in cluster_lines[:1])
        + f"{setup.plan.jobs.reason}; "
        f"venv {show(setup.path)}"
    )


def _compile(
    setup: Setup, served: cache_server.Served, extra: list[str], started_ns: int
) -> list[str]:
    """The editable install that compiles, followed; where the compile cluster fails jobs
    (not the code), again on this machine alone. Returns the cluster's summary lines."""
    cache = served.cache
    environ, settings = backend_env(setup)
    ran_before = dist.compiles(cache.launcher, environ) if cache and cache.dist else None
    # The command a contributor can type in the activated venv, plus the plan.
    cmd = setup.uv_pip("--no-build-isolation", *settings, *extra, "-e", str(ROOT))
    screen = dist.JobFailures(progress.Screen()) if cache and cache.dist else None
    try:
        followed = progress.follow(cmd, environ, setup.plan.build_dir, setup.plan.jobs.jobs, screen)
    except DevkitError:
        if not (cache and screen and screen.failed):
            raise
        # A build server failed jobs (not the code): the rest builds here, incrementally.
        say(
            f"warning: the compile cluster {cache.dist} failed {len(screen.failed)} job(s) "
            f"({screen.failed[0]}); building again on this machine only"
        )
        cache = cache_server.ready(cache_server.without_dist(cache), say)
        jobs = resources.plan_for_this_machine(setup.target)
        setup.plan = dataclasses.replace(setup.plan, compiler_cache=cache, jobs=jobs)
        served.cache, served.restarted, ran_before = cache, True, None
        environ, settings = backend_env(setup)
        cmd = setup.uv_pip("--no-build-isolation", *settings, *extra, "-e", str(ROOT))
        followed = progress.follow(cmd, environ, setup.plan.build_dir, setup.plan.jobs.jobs)
    if followed.summary():
        say(followed.summary())
    if not (cache and cache.dist and ran_before):
        return []
    ran = dist.compiles(cache.launcher, environ)
    done = ran - ran_before if ran else None
    objects = progress.ninja_objects(setup.build_dir)
    compiled_now = len(progress.ninja_outputs(setup.build_dir, started_ns) & objects)
    return dist.summary(cache.dist, done, compiled_now)


def build_lock(setup: Setup):
    """The build's locks: its build directory's, and its venv's unless that is not ours."""
    venv_path = None if setup.options.use_existing_torch else setup.path
    return lock.build_lock(setup.build_dir, venv_path)


def install_test_requirements(setup: Setup) -> None:
    """requirements/test.txt; with an existing torch, only what the interpreter lacks."""
    test_txt = ROOT / "requirements" / "test.txt"
    if setup.options.use_existing_torch:
        missing = uv.missing(setup.python, metadata.requirement_lines(test_txt))
        if missing:
            check(setup.uv_pip(*missing), env=uv.uv_env())
    else:
        check(setup.uv_pip("-r", str(test_txt)), env=uv.uv_env())


def build_wheel(setup: Setup, out_dir: Path = ROOT / "dist") -> Path:
    """A wheel of the package, built in the target's build directory; returns its path.

    `uv build` through the same backend as the editable install, so build
    info is recorded in it and the build directory stays incremental.
    """
    started = time.monotonic()
    say(setup.plan.jobs.reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheel-", dir=out_dir))
    key = binaries.key_of_build(setup.plan, say)
    try:
        with build_lock(setup), cache_server.serve(setup.plan.compiler_cache, say) as served:
            setup.plan = dataclasses.replace(setup.plan, compiler_cache=served.cache)
            environ, settings = backend_env(setup)
            cmd = [uv.find_uv(), "build", "--wheel", "--no-build-isolation", "--python"]
            cmd = [*cmd, str(setup.python), *settings, "--out-dir", str(staging), str(ROOT)]
            followed = progress.follow(cmd, environ, setup.plan.build_dir, setup.plan.jobs.jobs)
        if followed.summary():
            say(followed.summary())
        (built,) = staging.glob("*.whl")
        info = read_build_info(built)  # a wheel without it can't be installed
        wheel = out_dir / built.name
        os.replace(built, wheel)
        if key:
            binaries.store_build(key, wheel, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(
        f"built {show(wheel)} in {time.monotonic() - started:.1f}s: torch {info['torch_version']}, "
        f"commit {(info.get('git_commit') or 'unknown')[:12]}"
    )
    return wheel


def binary_key(setup: Setup) -> binkey.Key:
    """The key of what a build of `setup` makes (its compiled inputs)."""
    return binkey.for_plan(setup.plan)
