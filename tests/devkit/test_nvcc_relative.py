"""nvcc under sccache in two checkouts: the device steps hit across directories only
with tools/devkit/build/nvcc_relative.py in between (real nvcc, real sccache, one tiny .cu)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, find_sccache

from devkit.toolchains import cache_server

sys.path.insert(0, str(ROOT / "tools" / "devkit" / "build"))
import nvcc_relative  # noqa: E402  (a script: stdlib only, not part of the devkit package)

RELATIVE = ROOT / "tools" / "devkit" / "build" / "nvcc_relative.py"
KERNEL = (
    '#include "twice.h"\n__global__ void k(float* x) { x[threadIdx.x] = twice(x[threadIdx.x]); }\n'
)


def test_only_command_lines_under_a_root_change():
    listing = (
        '#$ _NVVM_BRANCH_=nvvm\n#$ gcc -E -I"/r/csrc" "/r/csrc/k.cu" -o "/tmp/x.ii"\n'
        "nvcc warning : /r/csrc/k.cu is fine\n"
        '#$ cudafe++ --orig_src_path_name "/r/csrc/k.cu" -I/rx/include /r/.venv/include\n'
    )
    out = nvcc_relative.relative_listing(listing, ["/r/"], "/r/build/cuda")
    assert out == (
        '#$ _NVVM_BRANCH_=nvvm\n#$ gcc -E -I"../../csrc" "../../csrc/k.cu" -o "/tmp/x.ii"\n'
        "nvcc warning : /r/csrc/k.cu is fine\n"  # nvcc's messages are left as they are
        '#$ cudafe++ --orig_src_path_name "../../csrc/k.cu" -I/rx/include ../../.venv/include\n'
    )
    # A nested root first; no root: nothing changes.
    nested = nvcc_relative.relative_listing("#$ cc /r/sub/a.cu\n", ["/r", "/r/sub"], "/r/sub/b")
    assert nested == "#$ cc ../a.cu\n"
    assert nvcc_relative.relative_listing("#$ cc /r/a.cu\n", [], "/r") == "#$ cc /r/a.cu\n"


def test_the_launcher_needs_sccache_and_nvcc(monkeypatch, capsys):
    monkeypatch.delenv(nvcc_relative.REAL_NVCC, raising=False)
    assert nvcc_relative.main(["sccache"]) == 2
    assert "usage: nvcc_relative.py <sccache> <nvcc>" in capsys.readouterr().err


def checkout(where: Path) -> Path:
    """A checkout-shaped directory: csrc/ with a kernel and its header, build/cuda/."""
    (where / "csrc").mkdir(parents=True)
    (where / "csrc" / "twice.h").write_text(
        "__device__ inline float twice(float x) { return 2 * x; }\n"
    )
    (where / "csrc" / "k.cu").write_text(KERNEL)
    (where / "build" / "cuda").mkdir(parents=True)
    return where


def compile_in(root: Path, sccache: str, nvcc: str, port: str, cache: Path, relative: bool):
    """What ninja runs for one .cu: absolute paths, a depfile, cwd the build dir."""
    args = [nvcc, "-arch=sm_90", f"-I{root / 'csrc'}", "-MD", "-MT", "k.o", "-MF", "k.o.d"]
    args += ["-c", str(root / "csrc" / "k.cu"), "-o", "k.o"]
    launcher = [str(RELATIVE), sccache] if relative else [sccache]
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "SCCACHE_SERVER_PORT": port,
        "SCCACHE_DIR": str(cache),
        "SCCACHE_BASEDIRS": str(root),
    }
    result = subprocess.run(
        [*launcher, *args], cwd=root / "build" / "cuda", env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    stats = subprocess.run(
        [sccache, "--show-stats", "--stats-format=json"],
        env=environ,
        capture_output=True,
        text=True,
    )
    counted = cache_server.parse_sccache_stats(stats.stdout, remote=False)
    return counted.local_hits, counted.misses


@pytest.mark.parametrize("relative", [True, False], ids=["nvcc_relative", "sccache-alone"])
@pytest.mark.e2e  # nvcc, for real
def test_a_second_checkout_hits_every_device_step(tmp_path, sccache_port, relative):
    nvcc = shutil.which("nvcc")
    sccache = find_sccache()
    if nvcc is None or sccache is None:
        pytest.skip("needs nvcc (the CUDA toolkit) and sccache (requirements/build.txt)")
    cache = tmp_path / "cache"  # one store for both: the team's, in effect
    a = checkout(tmp_path / "team" / "a")
    b = checkout(tmp_path / "elsewhere" / "b")
    hits, misses = compile_in(a, sccache, nvcc, sccache_port, cache, relative)
    assert hits == 0 and misses >= 4  # cudafe++, cicc, ptxas, the host compile
    hits_b, misses_b = compile_in(b, sccache, nvcc, sccache_port, cache, relative)
    if relative:
        assert (hits_b, misses_b - misses) == (misses, 0)  # every step of B hits
        # The same object, and a depfile whose paths resolve from B's build dir.
        assert (a / "build/cuda/k.o").read_bytes() == (b / "build/cuda/k.o").read_bytes()
        depfile = (b / "build/cuda/k.o.d").read_text()
        assert "twice.h" in depfile and str(a) not in depfile
    else:
        # Why the script exists: the module id follows the absolute path.
        assert misses_b - misses >= 2 and hits_b < misses
