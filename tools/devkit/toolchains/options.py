"""Session options: one argparse parser per session, from one table.

`nox -s build-cuda -- --help` lists the session's own options; arguments it
does not know are passed through (to uv, pytest or a script), as before.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from devkit import DevkitError


@dataclass(frozen=True)
class Options:
    """What a contributor can choose on a session's command line."""

    arch: str | None = None  # GPU arch: --arch, else TORCH_CUDA_ARCH_LIST, else the local GPU
    use_existing_torch: bool = False  # build against the interpreter's torch
    target: str | None = None  # wheel, dev-precompiled, doctor, clean, build-profile
    index: str | None = None  # wheel: --index DIR publishes into a wheel index
    all: bool = False  # clean: the compiler and uv caches too
    dry_run: bool = False  # clean: list what would go, remove nothing
    build_dir: str | None = None  # build-profile: the build dir to read
    precompiled: bool = False  # test sessions: a prebuilt wheel's binaries, no compiler
    against: str | None = None  # bench-kernels: REF to A/B against; "": the merge-base
    torch: str | None = None  # test-kernels-cpu: run the tests under this torch (a pin)
    build_torch: str | None = None  # test-kernels-cpu: build against this torch's headers
    rest: tuple[str, ...] = ()  # passed through (to uv or pytest)


# name: (argparse keywords, help)
_OPTIONS: dict[str, tuple[dict, str]] = {
    "--arch": (
        {"metavar": "ARCH"},
        "the one GPU arch to build: 9.0, 90, sm_90, 9.0a, 8.0+PTX, hopper, ... for CUDA; "
        "gfx942, ... for ROCm (default: TORCH_CUDA_ARCH_LIST / PYTORCH_ROCM_ARCH, else the "
        "local GPU's)",
    ),
    "--use-existing-torch": (
        {"action": "store_true"},
        "build against the torch of the interpreter running nox, in its environment "
        "(NGC containers, GPU images); nothing is downloaded for torch",
    ),
    "--target": (
        {"choices": ("cpu", "cuda", "rocm")},
        "the build target (default: this machine's GPU's, else cpu)",
    ),
    "--index": ({"metavar": "DIR"}, "also publish the wheel into this wheel index"),
    "--all": ({"action": "store_true"}, "also empty the compiler caches and uv's cache"),
    "--dry-run": ({"action": "store_true"}, "list what would be removed; remove nothing"),
    "--precompiled": (
        {"action": "store_true"},
        "test a prebuilt wheel's binaries (dev-precompiled's venv) instead of building: "
        "no compiler runs",
    ),
    "--build-dir": (
        {"metavar": "DIR"},
        "the build dir to read (default: the target's newest under build/)",
    ),
    "--torch": (
        {"metavar": "VERSION"},
        "run the tests in a venv of their own with this torch (a target's pin: 2.13.0 or "
        "2.14.1), against the binary built on the CPU pin: the stable ABI's promise",
    ),
    "--build-torch": (
        {"metavar": "VERSION"},
        "build the binary against this torch's headers (a target's pin) in a venv of its "
        "own; with --torch, test it under that one (default: the CPU pin)",
    ),
    "--against": (
        {"metavar": "REF", "nargs": "?", "const": ""},
        "also build REF (a commit, branch or tag) in a worktree and time both, interleaved, "
        "as new/old ratios (default REF: the merge-base with main)",
    ),
}

# session: (its options, where the other arguments go)
SESSIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "build-cpu": ((), "uv pip install (e.g. -v shows the compiler's output)"),
    "build-cuda": (("--arch", "--use-existing-torch"), "uv pip install (e.g. -v)"),
    "build-rocm": (("--arch", "--use-existing-torch"), "uv pip install (e.g. -v)"),
    "test-kernels-cpu": (
        ("--precompiled", "--torch", "--build-torch"),
        "pytest (default: -n auto tests/kernels)",
    ),
    "test-kernels-torch": (("--torch", "--build-torch"), "pytest (default: -n auto tests/kernels)"),
    "test-kernels-cuda": (("--arch", "--use-existing-torch"), "pytest"),
    "test-plugins": (("--precompiled",), "pytest"),
    "wheel": (("--target", "--arch", "--index"), "nowhere: they are refused"),
    "dev-precompiled": (("--target",), "nowhere: they are refused"),
    "doctor": (("--target", "--arch"), "nowhere: they are refused"),
    "bench-kernels": (
        ("--arch", "--use-existing-torch", "--against"),
        "benchmarks/bench_kernels.py",
    ),
    "clean": (("--target", "--all", "--dry-run"), "nowhere: they are refused"),
    "docs": ((), "nowhere: they are refused"),
    "build-profile": (("--target", "--build-dir"), "nowhere: they are refused"),
}


class HelpShown(Exception):
    """--help was asked for; the text is the help."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one DevkitError line instead of usage and exit 2
        raise DevkitError(f"{self.prog}: {message}; see `{self.prog} -- --help`")


def parser(session: str) -> argparse.ArgumentParser:
    names, rest_to = SESSIONS[session]
    prog = f"nox -s {session}"
    result = _Parser(
        prog=prog,
        add_help=False,
        allow_abbrev=False,
        description=f"Options of `{prog}`, given after `--`; other arguments go to {rest_to}.",
    )
    result.add_argument("-h", "--help", action="store_true", help="show this and stop")
    for name in names:
        keywords, text = _OPTIONS[name]
        result.add_argument(name, help=text, **keywords)
    return result


def parse(session: str, posargs: Sequence[str]) -> Options:
    """The session's options; unknown arguments in `rest`. Raises HelpShown for --help."""
    found = parser(session)
    names, rest_to = SESSIONS[session]
    known, rest = found.parse_known_args(list(posargs))
    if known.help:
        raise HelpShown(found.format_help())
    if rest and rest_to.startswith("nowhere"):
        raise DevkitError(
            f"nox -s {session} takes no argument {rest[0]!r}; see `nox -s {session} -- --help`"
        )
    values = {k: v for k, v in vars(known).items() if k != "help"}
    if values.get("index"):  # before the venv is made
        from pathlib import Path

        from devkit.foundation import layout

        index = Path(values["index"]).expanduser().resolve()
        layout.check_dir(f"--index {values['index']}", index, "--index", "(a wheel index)")
    return Options(**values, rest=tuple(rest))
