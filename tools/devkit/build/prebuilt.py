"""The dev-precompiled path: an editable install whose binaries come prebuilt.

A wheel named on purpose (VLLM_PRECOMPILED_WHEEL_LOCATION) is taken as it is;
otherwise the binaries are looked up by the checkout's binary key (the local
store, then the index: devkit.artifacts.binaries), and where none has them the target
is built once, here, and its binaries stored for every later checkout. The
wheel is located, fetched and checked once, here; the backend stages it.
"""

from __future__ import annotations

import time

from devkit import DevkitError
from devkit.artifacts import binaries, binkey, precompiled
from devkit.artifacts.wheelindex import locate
from devkit.build.pipeline import (
    Setup,
    backend_env,
    binary_key,
    build,
    build_lock,
    set_up,
)
from devkit.build.smoke import smoke_check
from devkit.foundation import envs, layout, procs
from devkit.foundation.envs import ROOT
from devkit.foundation.files import show
from devkit.foundation.log import say
from devkit.foundation.procs import check
from devkit.toolchains import plan as plan_module
from devkit.toolchains import targets
from devkit.toolchains.options import Options


def install_precompiled(setup: Setup, found: binaries.Found) -> str:
    """Editable install whose binaries come from a prebuilt wheel; returns the summary.

    The wheel `found` (named, or by key) is fetched and checked here, where its
    progress and problems show; the backend (VLLM_USE_PRECOMPILED=1) then stages
    the binaries from the local copy. No compiler runs.
    """
    started = time.monotonic()
    wheel, path, info = precompiled.prepare(
        setup.target, setup.torch, say=say, found=found.wheel, key_matches=found.by_key
    )
    with build_lock(setup):
        environ, settings = backend_env(setup)
        environ["VLLM_PRECOMPILED_WHEEL_LOCATION"] = str(path)  # the copy just checked
        # --no-deps: set_up has just installed them, torch checked; no resolve.
        uv_args = setup.uv_pip("--no-build-isolation", *settings, "--no-deps", "-e", str(ROOT))
        check(uv_args, env=environ)
        smoke_check(setup)
    return (
        f"installed {setup.target.name} from {wheel.origin} in {time.monotonic() - started:.1f}s, "
        f"compiling nothing (torch {info['torch_version']}, commit "
        f"{(info.get('git_commit') or 'unknown')[:12]}); venv {show(setup.path)}"
    )


def precompiled_setup(target_name: str, options: Options, venv_name: str) -> tuple[Setup, str]:
    """A venv whose binaries come from a prebuilt build, and the install's summary.

    A wheel named on purpose (VLLM_PRECOMPILED_WHEEL_LOCATION) is taken as it
    is; otherwise the binaries are looked up by the checkout's binary key (the
    local store, then the index: devkit.artifacts.binaries), and where none has them the
    target is built once, here, and its binaries stored for every later checkout.
    """
    procs.install_handlers()  # SIGTERM while locating or downloading: one line too
    procs.resume_note = "a download starts again; nothing half-fetched is kept"
    given = f"VLLM_CACHE_ROOT={envs.get('VLLM_CACHE_ROOT')}"
    layout.check_dir(given, precompiled.cache_dir(), "VLLM_CACHE_ROOT")  # before any venv
    target = targets.get_target(target_name)
    if envs.get("VLLM_PRECOMPILED_WHEEL_LOCATION"):
        found = binaries.Found(locate(target), by_key=False)  # located once, here
        setup = set_up(target_name, options, venv_name, precompiled=True)
        return setup, install_precompiled(setup, found)
    # Looked up before any venv is made or torch downloaded: the venv will hold the
    # target's pinned torch, which is what the key names.
    key = binaries.lookup_key(target, plan_module.expected_torch(target), options.arch)
    found = binaries.lookup(target, key, say)
    if found is None:
        found = build_once(target_name, options, key)
    setup = set_up(target_name, options, venv_name, precompiled=True)
    return setup, install_precompiled(setup, found)


def build_once(target_name: str, options: Options, key: binkey.Key) -> binaries.Found:
    """No store or index has the key's binaries: build them (the target's own venv and
    build dir, as build-<target> does), which stores them; then take them from the store."""
    say(
        f"no prebuilt binaries for key {key.short} (the local store and the index lack it): "
        f"building {target_name} once, which stores them; every later checkout with the same "
        "compiled inputs takes them without a compiler"
    )
    started = time.monotonic()
    setup = set_up(target_name, options)
    say(build(setup))
    say(f"built once in {time.monotonic() - started:.1f}s")
    built_key = binary_key(setup)
    if built_key.digest != key.digest:
        changed = binkey.describe_difference(built_key.inputs, key.inputs)
        raise DevkitError(
            f"the build's key {built_key.short} is not the lookup's {key.short} ({changed} "
            "differ): pass the same --arch and VLLM_CPU_ISA, or run build-"
            f"{target_name} and use its venv"
        )
    found = binaries.lookup(setup.target, key, say)
    if found is None:
        raise DevkitError(
            "the build succeeded but its binaries could not be stored (see the warning "
            f"above); use its venv, {show(setup.path)}, or free space and rerun"
        )
    return found
