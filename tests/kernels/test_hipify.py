"""The part of the ROCm build that runs anywhere: hipify the real csrc/ out of tree."""

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from devkit import rocm  # noqa: E402


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_hipify_translates_into_the_build_directory(tmp_path):
    csrc = ROOT / "csrc"
    before = tree_digest(csrc)
    written = rocm.hipify(csrc, tmp_path / "hipified")
    assert tree_digest(csrc) == before  # the source tree is untouched

    names = {p.name for p in written}
    assert {
        "activation_kernels.hip",
        "layernorm_kernels.hip",
        "pos_encoding_kernels.hip",
        "cache_kernels.hip",
        "hip_utils.cuh",
    } <= names
    utils = (tmp_path / "hipified" / "hip_utils.cuh").read_text()
    assert "#include <hip/hip_runtime.h>" in utils and "<cuda_runtime.h>" not in utils
    assert "#include <c10/hip/HIPGuard.h>" in utils
    norm = (tmp_path / "hipified" / "layernorm_kernels.hip").read_text()
    assert '#include "hip_utils.cuh"' in norm and "cuda_utils.cuh" not in norm
    assert "hipStream_t" in norm and "cudaStream_t" not in norm
    assert not any("cpu" in p.parts for p in written)  # CPU kernels are left alone
