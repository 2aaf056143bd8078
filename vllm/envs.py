"""Every environment variable the project reads, in one registry.

Each entry has a name, a type, a default and a one-line doc; values are
validated when read, and a bad value is an `EnvError` whose message names the
fix. This module imports only the standard library: the build backend and the
noxfile load it straight from the source tree (tools/devkit/foundation/envs.py), before
torch or the package are installed.

    >>> from vllm import envs
    >>> envs.MAX_JOBS          # None when unset
    >>> envs.get("VLLM_TARGET_DEVICE", {"VLLM_TARGET_DEVICE": "cpu"})
    'cpu'

CONTRIBUTING.md's table of variables is generated from this registry
(`nox -s docs`); tests/devkit/test_docgen.py fails when it is stale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class EnvError(ValueError):
    """An environment variable holds a value the project can't use."""


@dataclass(frozen=True)
class EnvVar:
    name: str
    kind: str  # "choice" | "int" | "bool" | "str"; the parser follows from it
    default: Any
    doc: str  # Markdown: CONTRIBUTING's table is generated from it (nox -s docs)
    choices: tuple[str, ...] = ()
    values: str = ""  # what a "str" value looks like; the others follow from the kind

    @property
    def shown_values(self) -> str:
        """The table's "values" cell: the choices, `1`/`0`, or what `values` says."""
        if self.kind == "choice":
            return ", ".join(f"`{choice}`" for choice in self.choices)
        if self.kind == "bool":
            return "`1`, `0`"
        if self.kind == "int":
            return self.values or "positive integer"
        return self.values

    def parse(self, raw: str) -> Any:
        raw = raw.strip()
        if self.kind == "choice":
            for choice in self.choices:
                if raw.lower() == choice.lower():
                    return choice
            raise EnvError(
                f"{self.name}={raw!r} is not one of {', '.join(self.choices)}; "
                f"set one of those or unset {self.name}"
            )
        if self.kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise EnvError(f"{self.name}={raw!r} is not a boolean; set {self.name}=1 or 0")
        if self.kind == "int":
            # isdigit() alone admits '²', which int() refuses.
            if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
                raise EnvError(
                    f"{self.name}={raw!r} is not a positive integer; "
                    f"set e.g. {self.name}=2 or unset it"
                )
            if int(raw) >= 2**31:  # the tools these go to (uv, ninja) refuse larger ones
                raise EnvError(
                    f"{self.name}={raw!r} is too large (at most {2**31 - 1}); "
                    f"set e.g. {self.name}=2 or unset it"
                )
            return int(raw)
        return raw


REGISTRY: dict[str, EnvVar] = {
    var.name: var
    for var in (
        # -- what to build -----------------------------------------------------
        EnvVar(
            "VLLM_TARGET_DEVICE",
            "choice",
            "auto",
            "Target to build; auto follows the installed torch flavour.",
            ("auto", "cpu", "cuda", "rocm"),
        ),
        EnvVar(
            "CMAKE_BUILD_TYPE",
            "choice",
            "Release",
            "CMake build type of the extension.",
            ("Release", "RelWithDebInfo", "Debug"),
        ),
        EnvVar(
            "VLLM_CPU_ISA",
            "choice",
            "auto",
            "Vector ISA of the CPU kernels; auto detects the build machine's.",
            ("auto", "avx512", "avx2", "default"),
        ),
        EnvVar(
            "VLLM_BUILD_DIR",
            "str",
            "build",
            "Root of the persistent CMake build directories (one per target and torch); "
            "outside the checkout, each checkout gets a subdirectory.",
            values="path",
        ),
        EnvVar(
            "TORCH_CUDA_ARCH_LIST",
            "str",
            None,
            "The GPU arch of a CUDA build (`--arch` wins); default: the local GPU's.",
            values="one arch: `9.0`, `9.0a`, `8.0+PTX`, `hopper`, ...",
        ),
        EnvVar(
            "CUDA_HOME",
            "str",
            None,
            "CUDA toolkit prefix; default: nvcc's on PATH, else `/usr/local/cuda`.",
            values="path",
        ),
        EnvVar(
            "CUDA_PATH",
            "str",
            None,
            "Same as `CUDA_HOME`, read when `CUDA_HOME` is unset.",
            values="path",
        ),
        EnvVar(
            "PYTORCH_ROCM_ARCH",
            "str",
            None,
            "The GPU arch of a ROCm build (`--arch` wins); default: the local GPU's (`rocminfo`).",
            values=(
                "one arch: `gfx942`, `gfx90a`, ... "
                "(`SUPPORTED_ARCHS` in tools/devkit/toolchains/rocm.py)"
            ),
        ),
        EnvVar(
            "ROCM_PATH",
            "str",
            None,
            "ROCm prefix (holds `bin/hipcc`); default: hipcc's on PATH, else `/opt/rocm`.",
            values="path",
        ),
        EnvVar(
            "ROCM_HOME",
            "str",
            None,
            "Same as `ROCM_PATH`, read when `ROCM_PATH` is unset.",
            values="path",
        ),
        EnvVar(
            "CMAKE_ARGS",
            "str",
            None,
            "Extra arguments for CMake's configure step, for the builds that pass them: a change "
            "(set, changed, unset) drops the build directory's `CMakeCache.txt`, so CMake "
            "configures afresh and ninja recompiles only what the flags change.",
            values="CMake arguments, e.g. `-DCMAKE_CXX_FLAGS=-g`",
        ),
        EnvVar(
            "VLLM_USE_EXISTING_TORCH",
            "bool",
            False,
            "Build against the torch already installed, unpinned (what `--use-existing-torch` "
            "sets).",
        ),
        # -- how hard to build -------------------------------------------------
        EnvVar(
            "MAX_JOBS",
            "int",
            None,
            "Parallel compile jobs; default min(cores, available memory / per-job memory).",
        ),
        EnvVar(
            "NVCC_THREADS",
            "int",
            None,
            "Threads per nvcc job (CUDA builds); each thread counts as a job's memory.",
        ),
        EnvVar(
            "VLLM_COMPILER_CACHE",
            "choice",
            "auto",
            "Compiler launcher: auto is sccache when a store is set (`VLLM_COMPILER_CACHE_REMOTE` "
            "or sccache's own `SCCACHE_*` store variables), else ccache; both come with the build "
            "tools.",
            ("auto", "ccache", "sccache", "off"),
        ),
        EnvVar(
            "VLLM_COMPILER_CACHE_REMOTE",
            "str",
            None,
            "The team's shared compiler-cache store (sccache's backends; WebDAV for http). See \"A "
            'compiler cache the team shares".',
            values="`redis://host:port[/db]`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `http(s)://host/path`",
        ),
        EnvVar(
            "VLLM_COMPILER_CACHE_READ_ONLY",
            "bool",
            False,
            "Read the store (without one: the local cache), never write it: PRs from forks, "
            "untrusted runners.",
        ),
        EnvVar(
            "VLLM_COMPILER_DIST",
            "str",
            None,
            "sccache-dist scheduler that compiles cache misses: http(s)://host:port.",
            values="`http(s)://host:port`",
        ),
        EnvVar(
            "VLLM_COMPILER_DIST_TOKEN",
            "str",
            None,
            "The cluster's client token (prefer VLLM_COMPILER_DIST_TOKEN_FILE).",
            values="token",
        ),
        EnvVar(
            "VLLM_COMPILER_DIST_TOKEN_FILE",
            "str",
            None,
            "A file holding the cluster's client token (the farm writes client-token).",
            values="path",
        ),
        EnvVar(
            "AWS_ENDPOINT_URL",
            "str",
            None,
            "Read as the AWS SDKs read it: an S3-compatible store (MinIO, Ceph, R2) for an "
            "`s3://` remote; `http://` turns TLS off.",
            values="URL",
        ),
        EnvVar(
            "AWS_REGION",
            "str",
            None,
            "Read as the AWS SDKs read it: the bucket's region for an `s3://` remote.",
            values="region",
        ),
        EnvVar(
            "AWS_DEFAULT_REGION",
            "str",
            None,
            "Read when `AWS_REGION` is unset.",
            values="region",
        ),
        EnvVar(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "str",
            None,
            "Read as Google's SDKs read it: the service-account key of a `gs://` remote.",
            values="path",
        ),
        # -- precompiled binaries (dev-precompiled) ----------------------------
        EnvVar(
            "VLLM_USE_PRECOMPILED",
            "bool",
            False,
            "Editable install that takes the compiled files from a prebuilt wheel: no compiler "
            "(what `dev-precompiled` sets).",
        ),
        EnvVar(
            "VLLM_PRECOMPILED_WHEEL_LOCATION",
            "str",
            None,
            "The wheel to take the binaries from; wins over `dist/` and the index.",
            values="path or URL of a `.whl`",
        ),
        EnvVar(
            "VLLM_PRECOMPILED_WHEEL_INDEX",
            "str",
            None,
            "A wheel index (`nox -s wheel -- --index DIR`) to look in, at the commit below, then "
            "`nightly/`; default: `pyproject.toml`'s `[tool.vllm.precompiled] index`.",
            values="URL or directory",
        ),
        EnvVar(
            "VLLM_PRECOMPILED_WHEEL_COMMIT",
            "str",
            None,
            "The index entry to take; default: the merge-base of `HEAD` with `main`.",
            values="commit hash",
        ),
        EnvVar(
            "VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL",
            "bool",
            False,
            "Take the index's newest nightly on purpose, even when its binary key differs.",
        ),
        EnvVar(
            "VLLM_BINARY_STORE",
            "str",
            None,
            "Directory of the local binary store; default: the user cache dir's vllm/binaries.",
            values="path",
        ),
        EnvVar(
            "VLLM_BINARY_STORE_MAX_MB",
            "int",
            4096,
            "Size cap of the local binary store; past it the least recently used builds go.",
        ),
        EnvVar(
            "VLLM_CACHE_ROOT",
            "str",
            "~/.cache/vllm",
            "Downloaded wheels are cached in its `precompiled/`, by sha256.",
            values="path",
        ),
        # -- runtime -----------------------------------------------------------
        EnvVar(
            "VLLM_PLUGINS",
            "str",
            None,
            "Plugins to load (`vllm.general_plugins` and `vllm.platform_plugins` entry points); "
            "unset: all.",
            values="names, comma-separated",
        ),
        # -- where torch comes from --------------------------------------------
        EnvVar(
            "VLLM_TORCH_INDEX_URL",
            "str",
            None,
            "Index (or mirror) to install the target's torch from, instead of the PyTorch one.",
            values="URL or path",
        ),
        EnvVar(
            "UV_OFFLINE",
            "bool",
            False,
            "uv's own: no network. The sessions then probe no index either; a venv that already "
            "has everything rebuilds without it anyway.",
        ),
        EnvVar(
            "UV_HTTP_TIMEOUT",
            "int",
            8,
            "How long uv waits for an index to answer; the sessions set it (uv's own default is "
            "30).",
            values="seconds",
        ),
        EnvVar(
            "UV_HTTP_RETRIES",
            "int",
            1,
            "How often uv retries a failed request; the sessions set it (uv's own default is 3).",
        ),
        EnvVar(
            "PIP_INDEX_URL",
            "str",
            None,
            "Read as pip reads it; handed to uv as its default index.",
            values="URL",
        ),
        EnvVar(
            "PIP_EXTRA_INDEX_URL",
            "str",
            None,
            "Read as pip reads it; handed to uv as extra indexes.",
            values="URLs",
        ),
        EnvVar(
            "PIP_FIND_LINKS",
            "str",
            None,
            "Read as pip reads it; handed to uv as `--find-links`.",
            values="paths or URLs",
        ),
        EnvVar(
            "PIP_CONFIG_FILE",
            "str",
            None,
            "Read as pip reads it: one more pip config file whose mirrors are handed to uv.",
            values="path",
        ),
    )
}


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The validated value of registered variable `name` (its default when unset or empty)."""
    try:
        var = REGISTRY[name]
    except KeyError:
        raise KeyError(f"{name} is not in vllm/envs.py's registry; add it there") from None
    raw = (os.environ if environ is None else environ).get(name, "")
    if raw.strip() == "":
        return var.default
    return var.parse(raw)


def __getattr__(name: str) -> Any:
    if name in REGISTRY:
        return get(name)
    raise AttributeError(f"module 'vllm.envs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *REGISTRY])
