"""The PEP 517 build backend: scikit-build-core, told what the build plan says.

pyproject.toml names this module (backend-path = ["tools"]), so
`uv pip install --no-build-isolation -e .` and `uv build` go through it, with
or without nox. It applies the build plan (devkit.toolchains.plan):

- from a session, `-C devkit.plan=<build dir>/plan.json`: loaded once and
  applied as it is. No variable is read or validated, nothing is resolved
  and nothing is written: a MAX_JOBS or VLLM_USE_PRECOMPILED left in the shell
  can't make the build differ from the plan the session printed, locked and
  started the compiler cache for. A plan that can't be read, or that names
  another torch than this interpreter's, is one line: rerun the session.
- by hand: the plan `plan.resolve` makes from VLLM_TARGET_DEVICE (auto follows
  the installed torch), TORCH_CUDA_ARCH_LIST, MAX_JOBS and the rest, written
  once to <build dir>/plan.json by the hooks that build.

The plan names the persistent build directory (build/<target>-torch<version>-
<python tag>, so reruns are incremental), the job count, the compiler cache,
the CMake definitions (BuildPlan.cmake_defines) and the compile environment
(BuildPlan.compile_environ); CMake reads the plan file for the build info.

Config settings given on the command line (-C build-dir=...) still win.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
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
from devkit.foundation import envs, layout, lock
from devkit.foundation.envs import ROOT
from devkit.foundation.log import say_err as _say
from devkit.toolchains import cache_server, plan, rocm, targets

_Settings = dict[str, Any] | None


def _torch_and_target(why: str, session: str) -> tuple[targets.TorchInfo, str]:
    """The venv's torch, and the target: VLLM_TARGET_DEVICE, or torch's flavour for auto."""
    info = targets.read_torch_info()
    if info is None:
        raise DevkitError(
            f"torch is not importable by {sys.executable} and {why}; install the target's "
            f"torch first (nox -s {session} does it) and use --no-build-isolation"
        )
    return info, targets.resolve_target_name(envs.get("VLLM_TARGET_DEVICE"), info)


def _session_plan(path: str) -> plan.BuildPlan:
    """The session's plan, loaded once and applied as it is (see the module's docstring);
    only checked against this interpreter's torch, which the build compiles against."""
    found = plan.load(path)
    here = targets.read_torch_info()
    if here != found.torch:
        raise DevkitError(
            f"the build plan {path} is for torch {found.torch.version}, but "
            f"{sys.executable} has {here.version if here else 'no torch'}; rerun the session"
        )
    return found


def _plan_by_hand(config_settings: dict[str, Any]) -> plan.BuildPlan:
    """The plan `resolve` makes from the environment variables (validated there, once);
    `_by_hand_build` writes it."""
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
    handed = given.pop(plan.CONFIG_KEY, None)
    build = _session_plan(handed) if handed else _plan_by_hand(given)
    # The version and dependency providers (devkit.build.metadata) follow the plan.
    metadata.use(build)
    if build.precompiled:
        return build, {**_precompiled_settings(hook, build, by_session), **given}
    for line in build.describe():
        _say(line)
    environ = build.compile_environ(os.environ)
    os.environ.clear()  # a store that did not answer leaves (its SCCACHE_* too)
    os.environ.update(environ)
    if build.hipified_dir and hook.startswith("build_"):
        # csrc/ hipified into the build dir the plan's defines name (VLLM_HIPIFIED_DIR).
        rocm.prepare_build(ROOT / "csrc", build.hipified_dir)
    ours: dict[str, Any] = {
        "build-dir": str(build.build_dir),
        "cmake.build-type": build.build_type,
        **{f"cmake.define.{key}": value for key, value in build.cmake_defines().items()},
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
        staging_root = layout.staged_dir()
        files = precompiled.install(build.row, build.torch, staging_root, told)
        # A dict setting's keys follow its name: wheel.force-include.<source> = <dest>.
        ours.update({f"wheel.force-include.{src}": dest for dest, src in files.items()})
        _say(f"no compiler: took {', '.join(files)} from a prebuilt wheel")
    return ours


@contextlib.contextmanager
def _by_hand_build(hook: str, build: plan.BuildPlan, config_settings: _Settings):
    """What a session does before it hands its plan over, for a build by hand (`uv pip
    install -e .`): the build dir's lock held, then the plan written (once a build) and
    CMAKE_ARGS followed. Only the hooks that configure CMake; none for a session's plan."""
    by_hand = plan.CONFIG_KEY not in (config_settings or {})
    if not (by_hand and hook.startswith("build_") and not build.precompiled):
        yield
        return
    what = f"the build by hand in {build.build_dir} (uv pip install -e .)"
    with lock.hold(build.build_dir / layout.BUILD_LOCK, what, _say, (ROOT, build.build_dir)):
        build.write()
        cmakecache.follow_cmake_args(build.build_dir, envs.get("CMAKE_ARGS") or "", _say)
        yield


def _run(hook: str, *args: Any, config_settings: _Settings = None, **kwargs: Any) -> Any:
    with contextlib.ExitStack() as stack:
        try:
            build, settings = _settings(hook, config_settings)
            stack.enter_context(_by_hand_build(hook, build, config_settings))
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


def _hook(name: str):
    """The PEP 517 hook `name`, run through `_run`; the prepare_metadata hooks take
    no metadata_directory."""

    def hook(directory, config_settings: _Settings = None, metadata_directory=None):
        extra = {} if name.startswith("prepare_") else {"metadata_directory": metadata_directory}
        return _run(name, directory, config_settings=config_settings, **extra)

    hook.__name__ = hook.__qualname__ = name
    return hook


build_wheel = _hook("build_wheel")
build_editable = _hook("build_editable")
prepare_metadata_for_build_wheel = _hook("prepare_metadata_for_build_wheel")
prepare_metadata_for_build_editable = _hook("prepare_metadata_for_build_editable")


def build_sdist(sdist_directory, config_settings: _Settings = None):
    return _skbuild.build_sdist(sdist_directory, config_settings)


# With --no-build-isolation nothing is installed for these; they stay honest
# for isolated builds (which can't see the target's torch and fail clearly).
get_requires_for_build_wheel = _skbuild.get_requires_for_build_wheel
get_requires_for_build_editable = _skbuild.get_requires_for_build_editable
get_requires_for_build_sdist = _skbuild.get_requires_for_build_sdist
