"""The PEP 517 build backend: scikit-build-core, told what the build plan says.

pyproject.toml names this module (backend-path = ["tools"]), so
`uv pip install --no-build-isolation -e .` and `uv build` go through it, with
or without nox. It takes the build plan (devkit.toolchains.plan): the session's, handed
over as `-C devkit.plan=<build dir>/plan.json`, or, by hand, the one
`plan.resolve` makes from VLLM_TARGET_DEVICE (auto follows the installed
torch), TORCH_CUDA_ARCH_LIST, MAX_JOBS and the rest. The plan names the
persistent build directory (build/<target>-torch<version>-<python tag>, so
reruns are incremental), the job count, the compiler cache and the CMake
definitions; the backend writes it to <build dir>/plan.json and hands over.

Config settings given on the command line (-C build-dir=...) still win.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

try:
    from scikit_build_core import build as _skbuild
except ImportError:  # e.g. `pip install --no-build-isolation -e .` from a bare venv
    print(
        f"error: scikit-build-core is not installed for {sys.executable}, and "
        "--no-build-isolation builds with what is there; install requirements/build.txt "
        "and the target's torch first (nox -s build-cpu does all of it)",
        file=sys.stderr,
    )
    raise SystemExit(1) from None

from devkit import DevkitError
from devkit.artifacts import precompiled
from devkit.build import cmakecache, metadata, presets
from devkit.foundation import envs, lock
from devkit.foundation.envs import ROOT
from devkit.foundation.log import say_err as _say
from devkit.toolchains import cache_server, compiler_cache, plan, rocm, targets

_Settings = dict[str, Any] | None


def _git_commit() -> str:
    """The checkout's commit, with -dirty for uncommitted changes; "" outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40", "--match=NONE"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _torch_and_target(why: str, session: str) -> tuple[targets.TorchInfo, str]:
    """The venv's torch, and the target: VLLM_TARGET_DEVICE, or torch's flavour for auto."""
    envs.check_all()
    info = targets.read_torch_info()
    if info is None:
        raise DevkitError(
            f"torch is not importable by {sys.executable} and {why}; install the target's "
            f"torch first (nox -s {session} does it) and use --no-build-isolation"
        )
    return info, targets.resolve_target_name(envs.get("VLLM_TARGET_DEVICE"), info)


def _plan(config_settings: dict[str, Any]) -> plan.BuildPlan:
    """The session's plan (-C devkit.plan=...), checked against this interpreter; or, by
    hand, the plan `resolve` makes from the environment variables."""
    given = config_settings.pop(plan.CONFIG_KEY, None)
    if given:
        found = plan.load(given)
        here = targets.read_torch_info()
        if here != found.torch:
            raise DevkitError(
                f"the build plan {given} is for torch {found.torch.version}, but "
                f"{sys.executable} has {here.version if here else 'no torch'}; rerun the session"
            )
        return found
    precompiled = bool(envs.get("VLLM_USE_PRECOMPILED"))
    why = (
        "the binaries are checked against it"
        if precompiled
        else "the extension is compiled against it"
    )
    info, name = _torch_and_target(why, "dev-precompiled" if precompiled else "build-cpu")
    request = plan.Request(
        target=name,
        precompiled=precompiled,
        use_existing_torch=bool(envs.get("VLLM_USE_EXISTING_TORCH")),
        build_dir=config_settings.get("build-dir"),  # the caller's -C build-dir wins
        bin_dir=str(Path(sys.executable).parent),  # the venv uv installs into
    )
    found = plan.resolve(request, info)
    # By hand there is no session to check the store first; a dead one would
    # fail every compile, so it is checked here (one warning, the local cache).
    cache = cache_server.ready(found.compiler_cache, _say)
    return dataclasses.replace(found, compiler_cache=cache)


def _settings(hook: str, config_settings: _Settings) -> tuple[plan.BuildPlan, dict[str, Any]]:
    """The plan, and scikit-build-core's settings for its build under those the caller gave."""
    given = dict(config_settings or {})
    by_session = plan.CONFIG_KEY in given  # a session's plan: it said what it checked
    build = _plan(given)
    # The version and dependency providers (devkit.build.metadata) follow the plan.
    metadata.use(build)
    if build.precompiled:
        return build, {**_precompiled_settings(hook, build, by_session), **given}
    for line in build.describe():
        _say(line)
    environ = compiler_cache.environ_for(build.compiler_cache, os.environ)
    environ.update(build.build_environ())
    os.environ.clear()  # a store that did not answer leaves (its SCCACHE_* too)
    os.environ.update(environ)
    defines = build.cmake_defines()
    defines["VLLM_BUILD_INFO_GIT_COMMIT"] = _git_commit()
    if build.rocm:
        # csrc/ hipified into <build dir>/hipified; the defines name it, ROCm and the arch.
        defines.update(rocm.prepare_build(build.rocm, ROOT / "csrc", build.build_dir))
    build.write()
    if hook.startswith("build_"):  # the hooks that configure CMake
        cmakecache.follow_cmake_args(build.build_dir, envs.get("CMAKE_ARGS") or "", _say)
    ours: dict[str, Any] = {
        "build-dir": str(build.build_dir),
        "cmake.build-type": build.build_type,
        **{f"cmake.define.{key}": value for key, value in defines.items()},
    }
    if hook.endswith("_editable") and build.install_dir:
        # A persistent install tree that the editable install imports the extension
        # from, baked into CMake's install prefix: `cmake --build --preset <name>-install`
        # then updates the venv without pip (presets.py). Rebuilding on import stays off.
        ours.update({"editable.rebuild-dir": str(build.install_dir), "editable.rebuild": "false"})
    return build, {**ours, **given}


def _precompiled_settings(hook: str, build: plan.BuildPlan, told: bool) -> dict[str, Any]:
    """VLLM_USE_PRECOMPILED: no CMake; the binaries of a prebuilt wheel instead.

    devkit.artifacts.precompiled finds, checks and stages them under the build root; the
    editable install points at them (wheel.force-include).
    """
    if hook in ("build_wheel", "prepare_metadata_for_build_wheel"):
        raise DevkitError(
            "VLLM_USE_PRECOMPILED=1 is for editable installs (`uv pip install "
            "--no-build-isolation -e .`); a wheel is built from source (nox -s wheel)"
        )
    # platlib: the staged binaries make it a platform wheel, as a built one is.
    ours: dict[str, Any] = {"wheel.cmake": "false", "wheel.platlib": "true"}
    if hook == "build_editable":
        staging_root = targets.build_root() / "precompiled"
        files = precompiled.install(build.row, build.torch, staging_root, told)
        # A dict setting's keys follow its name: wheel.force-include.<source> = <dest>.
        ours.update({f"wheel.force-include.{src}": dest for dest, src in files.items()})
        _say(f"no compiler: took {', '.join(files)} from a prebuilt wheel")
    return ours


def _by_hand_lock(hook: str, build: plan.BuildPlan, config_settings: _Settings):
    """The build dir's lock for a build by hand (`uv pip install -e .`), which no session
    holds for it; a session passes its plan, and holds the lock itself."""
    by_hand = plan.CONFIG_KEY not in (config_settings or {})
    if not (by_hand and hook.startswith("build_") and not build.precompiled):
        return contextlib.nullcontext()
    what = f"the build by hand in {build.build_dir} (uv pip install -e .)"
    return lock.hold(build.build_dir / "build.lock", what, _say, (ROOT, build.build_dir))


def _run(hook: str, *args: Any, config_settings: _Settings = None, **kwargs: Any) -> Any:
    with contextlib.ExitStack() as stack:
        try:
            build, settings = _settings(hook, config_settings)
            stack.enter_context(_by_hand_lock(hook, build, config_settings))
        except DevkitError as exc:
            # One line, no traceback: the frontend shows this output on failure.
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        result = getattr(_skbuild, hook)(*args, config_settings=settings, **kwargs)
    if hook in ("build_editable", "build_wheel") and not build.precompiled:
        try:
            for line in presets.write_all(build):
                _say(line)
        except (DevkitError, OSError) as exc:  # the build itself succeeded
            _say(f"presets not written: {exc}")
    return result


def build_wheel(wheel_directory, config_settings: _Settings = None, metadata_directory=None):
    return _run(
        "build_wheel",
        wheel_directory,
        config_settings=config_settings,
        metadata_directory=metadata_directory,
    )


def build_editable(wheel_directory, config_settings: _Settings = None, metadata_directory=None):
    return _run(
        "build_editable",
        wheel_directory,
        config_settings=config_settings,
        metadata_directory=metadata_directory,
    )


def build_sdist(sdist_directory, config_settings: _Settings = None):
    return _skbuild.build_sdist(sdist_directory, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings: _Settings = None):
    return _run(
        "prepare_metadata_for_build_wheel", metadata_directory, config_settings=config_settings
    )


def prepare_metadata_for_build_editable(metadata_directory, config_settings: _Settings = None):
    return _run(
        "prepare_metadata_for_build_editable", metadata_directory, config_settings=config_settings
    )


# With --no-build-isolation nothing is installed for these; they stay honest
# for isolated builds (which can't see the target's torch and fail clearly).
get_requires_for_build_wheel = _skbuild.get_requires_for_build_wheel
get_requires_for_build_editable = _skbuild.get_requires_for_build_editable
get_requires_for_build_sdist = _skbuild.get_requires_for_build_sdist
