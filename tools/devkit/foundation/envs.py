"""Loads the env-var registry (vllm/envs.py) from the source tree.

The registry lives in the package so the runtime can use it; the build
tooling must read it before the package is installed, so it is loaded by
path rather than imported as `vllm.envs`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from devkit import DevkitError

ROOT = Path(__file__).resolve().parents[3]


def load_from_tree(relative: str) -> ModuleType:
    """A stdlib-only module of the package (vllm/envs.py), loaded by its path in the tree."""
    name = "_devkit_" + relative.removesuffix(".py").replace("/", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


registry: ModuleType = load_from_tree("vllm/envs.py")


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """Like `vllm.envs.get`, with a bad value turned into a DevkitError."""
    try:
        return registry.get(name, environ)
    except registry.EnvError as exc:
        raise DevkitError(str(exc)) from None


def check_all(environ: Mapping[str, str] | None = None) -> None:
    """Validates every registered variable that is set, so a typo fails before any work."""
    for name in registry.REGISTRY:
        get(name, environ)


def check_cmake_args(value: str | None) -> None:
    """CMAKE_ARGS as scikit-build-core will split it (shell words): an unclosed quote
    is one line here instead of its traceback."""
    import shlex

    try:
        shlex.split(value or "")
    except ValueError as exc:
        raise DevkitError(
            f"CMAKE_ARGS={value!r} can't be split into arguments ({exc}); close the quote "
            "or unset CMAKE_ARGS"
        ) from None
