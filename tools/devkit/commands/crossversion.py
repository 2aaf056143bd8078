"""Cross-version kernel tests: the CPU binary built against one torch, tested under another.

The CPU target is built on LibTorch's stable ABI (targets.Target.torch_floor),
which promises one binary for every torch from the floor on. These sessions
hold it to that:

    nox -s test-kernels-torch      (README's test command runs it)
    nox -s test-kernels-cpu -- --torch 2.14.1
        the binary of .venv-cpu (built against the pin, 2.13.0+cpu) runs
        tests/kernels in .venv-cpu-torch2.14.1
    nox -s test-kernels-cpu -- --build-torch 2.14.1
        a binary built against 2.14.1's headers (.venv-cpu-build-torch2.14.1,
        a build dir of its own) runs tests/kernels in .venv-cpu-torch2.13.0

The test venv has torch, the build tools and requirements/test.txt but no
vllm: the tests import a staged copy of vllm/ holding the binary under test
(in the build dir, stage-<venv>), first on PYTHONPATH, with PYTHONSAFEPATH=1
so that the checkout's own vllm/ (the working directory) can't shadow it, in
pytest and in the processes the tests start. Only the targets' pins can be installed
(the mirrors here hold those; PyTorch's indexes hold them too).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from devkit import DevkitError
from devkit.build import pipeline
from devkit.foundation import files, log
from devkit.foundation.envs import ROOT
from devkit.toolchains import targets
from devkit.toolchains.options import Options


def pin_for(version: str) -> targets.Target:
    """The target whose torch pin `version` is: 2.13.0 (or 2.13.0+cpu) cpu, 2.14.1 cuda.

    Only pins at or above the CPU binary's floor: below it the binary can't load.
    """
    floor = targets.get_target("cpu").torch_floor or "0.0"
    usable = [
        row
        for row in targets.TARGETS.values()
        if targets.release(row.torch_version) >= targets.release(floor)
    ]
    for row in usable:
        if version in (row.torch_version, row.torch_spec.removeprefix("torch==")):
            return row
    known = ", ".join(sorted({row.torch_version for row in usable}))
    raise DevkitError(
        f"torch {version} is no target's pin at or above the CPU binary's floor {floor}; "
        f"the cross-version tests install one of {known}, which the package mirrors hold"
    )


def other_pin() -> str:
    """The newest target pin other than the CPU's (2.14.1): what `test-kernels-torch`
    runs the CPU binary under when no --torch is given."""
    floor = targets.release(targets.get_target("cpu").torch_floor or "0.0")
    cpu = targets.get_target("cpu").torch_version
    pins = {row.torch_version for row in targets.TARGETS.values()} - {cpu}
    usable = sorted((p for p in pins if targets.release(p) >= floor), key=targets.release)
    if not usable:
        raise DevkitError(f"no target pins a torch other than {cpu} at or above the floor")
    return usable[-1]


def build_setup(options: Options, build_torch: str | None) -> pipeline.Setup:
    """The venv the binary is built in: .venv-cpu, or one with `build_torch`'s headers."""
    row = pin_for(build_torch) if build_torch else targets.get_target("cpu")
    if row.name == "cpu":
        return pipeline.set_up("cpu", options)
    return pipeline.set_up("cpu", options, f"cpu-build-torch{row.torch_version}", torch_pin=row)


def test_setup(test_torch: str | None, built: pipeline.Setup) -> pipeline.Setup:
    """A venv with `test_torch` (default: the CPU pin) and the test requirements, no vllm."""
    row = pin_for(test_torch) if test_torch else targets.get_target("cpu")
    if row.torch_version == built.torch.version.partition("+")[0]:
        raise DevkitError(
            f"the binary was built against torch {built.torch.version} and would be tested "
            f"under it too: pass --torch with another pin, or drop --torch and --build-torch"
        )
    # The build tools too: some kernel tests run CMake (3.26+, from requirements/build.txt).
    setup = pipeline.set_up("cpu", Options(), f"cpu-torch{row.torch_version}", torch_pin=row)
    pipeline.install_test_requirements(setup)
    return setup


def stage(built: pipeline.Setup, tested: pipeline.Setup) -> Path:
    """vllm/ with the built binary and its build info, in the build dir; returns its parent."""
    installed = built.plan.install_dir / "vllm" if built.plan.install_dir else None
    binaries = sorted(installed.glob("_C*.so")) if installed else []
    if not binaries:
        raise DevkitError(f"no built extension in {installed}; build it first (nox -s build-cpu)")
    dest = built.build_dir / f"stage-{tested.path.name.removeprefix('.')}"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        ROOT / "vllm",
        dest / "vllm",
        ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_build_info.json"),
    )
    shutil.copy2(binaries[0], dest / "vllm" / binaries[0].name)
    shutil.copy2(installed / "_build_info.json", dest / "vllm" / "_build_info.json")
    log.say(
        f"testing {binaries[0].name} built against torch {built.torch.version} under torch "
        f"{tested.torch.version} ({files.show(tested.path)})"
    )
    return dest
