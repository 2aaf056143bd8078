"""Every environment variable the project reads, in one registry.

Each entry has a name, a type, a default and a one-line doc; values are
validated when read, and a bad value is an `EnvError` whose message names the
fix. This module imports only the standard library: the build backend and the
noxfile load it straight from the source tree (tools/devkit/envs.py), before
torch or the package are installed.

    >>> from vllm import envs
    >>> envs.MAX_JOBS          # None when unset
    >>> envs.get("VLLM_TARGET_DEVICE", {"VLLM_TARGET_DEVICE": "cpu"})
    'cpu'

CONTRIBUTING.md documents the same table; tests/devkit/test_envs.py keeps the
two in step.
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
    doc: str
    choices: tuple[str, ...] = ()

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
        # -- what to build --------------------------------------------------
        EnvVar(
            "VLLM_TARGET_DEVICE",
            "choice",
            "auto",
            "Target to build: cpu, cuda or rocm; auto follows the installed torch flavour.",
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
            "Root of the persistent CMake build directories (one per target and torch).",
        ),
        EnvVar(
            "TORCH_CUDA_ARCH_LIST",
            "str",
            None,
            "The one GPU arch of a CUDA build (9.0, 9.0a, 8.0+PTX, hopper); default: local GPU's.",
        ),
        EnvVar(
            "CUDA_HOME",
            "str",
            None,
            "CUDA toolkit prefix; default: nvcc's on PATH, else /usr/local/cuda.",
        ),
        EnvVar(
            "CUDA_PATH",
            "str",
            None,
            "Same as CUDA_HOME, read when CUDA_HOME is unset.",
        ),
        EnvVar(
            "PYTORCH_ROCM_ARCH",
            "str",
            None,
            "GPU arch of a ROCm build (gfx90a, gfx942, ...); --arch wins; default: the local GPU.",
        ),
        EnvVar(
            "ROCM_PATH",
            "str",
            None,
            "ROCm prefix (holds bin/hipcc); default: hipcc's on PATH, else /opt/rocm.",
        ),
        EnvVar(
            "ROCM_HOME",
            "str",
            None,
            "Same as ROCM_PATH, read when ROCM_PATH is unset.",
        ),
        EnvVar(
            "CMAKE_ARGS",
            "str",
            None,
            "Extra CMake arguments for this build only; a change reconfigures from a fresh cache.",
        ),
        EnvVar(
            "VLLM_USE_EXISTING_TORCH",
            "bool",
            False,
            "Build against the installed torch, unpinned (what --use-existing-torch sets).",
        ),
        # -- how hard to build ----------------------------------------------
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
            "Compiler launcher: auto (sccache with a store, else ccache), ccache, sccache, off.",
            ("auto", "ccache", "sccache", "off"),
        ),
        EnvVar(
            "VLLM_COMPILER_CACHE_REMOTE",
            "str",
            None,
            "Shared compiler-cache store (sccache): redis://host:port[/db], s3://bucket[/prefix], "
            "gs://bucket[/prefix], http(s):// (WebDAV).",
        ),
        EnvVar(
            "VLLM_COMPILER_CACHE_READ_ONLY",
            "bool",
            False,
            "Read the compiler cache (the store, if any), never write it: for forks' PRs.",
        ),
        EnvVar(
            "AWS_ENDPOINT_URL",
            "str",
            None,
            "Read as the AWS SDKs read it: an S3-compatible store's URL for an s3:// remote.",
        ),
        EnvVar(
            "AWS_REGION",
            "str",
            None,
            "Read as the AWS SDKs read it: the region of an s3:// remote.",
        ),
        EnvVar(
            "AWS_DEFAULT_REGION",
            "str",
            None,
            "Read as the AWS SDKs read it, when AWS_REGION is unset.",
        ),
        EnvVar(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "str",
            None,
            "Read as Google's SDKs read it: the key file of a gs:// remote (SCCACHE_GCS_KEY_PATH).",
        ),
        # -- precompiled binaries (dev-precompiled) --------------------------
        EnvVar(
            "VLLM_USE_PRECOMPILED",
            "bool",
            False,
            "Editable install that takes the compiled files from a prebuilt wheel: no compiler.",
        ),
        EnvVar(
            "VLLM_PRECOMPILED_WHEEL_LOCATION",
            "str",
            None,
            "Path or URL of the wheel to take the binaries from; wins over dist/ and the index.",
        ),
        EnvVar(
            "VLLM_PRECOMPILED_WHEEL_INDEX",
            "str",
            None,
            "URL or directory of a wheel index (nox -s wheel -- --index DIR) to look in; "
            "default: pyproject.toml's [tool.vllm.precompiled] index.",
        ),
        EnvVar(
            "VLLM_PRECOMPILED_WHEEL_COMMIT",
            "str",
            None,
            "Commit to take from the index; default: the merge-base of HEAD with main.",
        ),
        EnvVar(
            "VLLM_CACHE_ROOT",
            "str",
            "~/.cache/vllm",
            "Where downloaded wheels are cached (precompiled/, by sha256).",
        ),
        # -- runtime -----------------------------------------------------------
        EnvVar(
            "VLLM_PLUGINS",
            "str",
            None,
            "Comma-separated plugin names to load (both entry-point groups); unset: all.",
        ),
        # -- where torch comes from -----------------------------------------
        EnvVar(
            "VLLM_TORCH_INDEX_URL",
            "str",
            None,
            "Index (or mirror) to install the target's torch from, instead of the PyTorch one.",
        ),
        EnvVar(
            "UV_OFFLINE",
            "bool",
            False,
            "uv's own: no network; the sessions then probe no index either.",
        ),
        EnvVar(
            "UV_HTTP_TIMEOUT",
            "int",
            8,
            "Seconds uv waits for an index to answer (the sessions' default; uv's own is 30).",
        ),
        EnvVar(
            "UV_HTTP_RETRIES",
            "int",
            1,
            "How often uv retries a failed request (the sessions' default; uv's own is 3).",
        ),
        EnvVar(
            "PIP_INDEX_URL",
            "str",
            None,
            "Read as pip reads it; handed to uv as its default index.",
        ),
        EnvVar(
            "PIP_EXTRA_INDEX_URL",
            "str",
            None,
            "Read as pip reads it (space-separated); handed to uv as extra indexes.",
        ),
        EnvVar(
            "PIP_FIND_LINKS",
            "str",
            None,
            "Read as pip reads it (space-separated); handed to uv as --find-links.",
        ),
        EnvVar(
            "PIP_CONFIG_FILE",
            "str",
            None,
            "Read as pip reads it: one more pip config file whose mirrors are handed to uv.",
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
