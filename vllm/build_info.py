"""What the installed extension was built with and for (vllm/_build_info.json).

    >>> import vllm.build_info
    >>> vllm.build_info.get()["torch_version"]
    '2.13.0+cpu'

The build writes the file beside the extension (cmake/utils.cmake). Fields:
target, torch_version (with its local tag), torch_git_version, cuda_version,
hip_version, gpu_arch, cpu_isa, cxx11_abi, python_abi, git_commit, compiler,
build_type, cxx_standard; a field that does not apply is null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import vllm


def get() -> dict[str, Any] | None:
    """The build info of the installed extension; None when none is installed."""
    # An editable install spreads the package over the source tree and
    # site-packages (where the build installs the file): look in each.
    for directory in vllm.__path__:
        path = Path(directory) / "_build_info.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None
