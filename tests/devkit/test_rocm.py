"""ROCm arch and toolchain checks (with a fake hipcc)."""

import pytest

from devkit import DevkitError, rocm


def fake_rocm(root):
    (root / "bin").mkdir(parents=True)
    hipcc = root / "bin" / "hipcc"
    hipcc.write_text("#!/bin/sh\nexit 0\n")
    hipcc.chmod(0o755)
    return root


@pytest.mark.parametrize(
    ("text", "arch"), [("gfx942", "gfx942"), (" GFX90A ", "gfx90a"), ("gfx90a:xnack-", "gfx90a")]
)
def test_parse_arch(text, arch):
    assert rocm.parse_arch(text) == arch


def test_bad_or_many_archs():
    with pytest.raises(
        DevkitError, match=r"'gfx1030' is not a supported ROCm arch; supported: gfx90a"
    ):
        rocm.parse_arch("gfx1030")
    with pytest.raises(DevkitError, match="build-rocm builds one arch, got 2"):
        rocm.parse_arch("gfx942;gfx90a")


def test_toolchain_before_a_missing_arch(tmp_path):
    environ = {"PATH": str(tmp_path / "nothing")}
    if (rocm.Path("/opt/rocm/bin/hipcc")).is_file():
        pytest.skip("a real ROCm is installed at /opt/rocm")
    with pytest.raises(DevkitError, match="^no ROCm toolchain: hipcc is not on PATH"):
        rocm.find_rocm(None, environ)
    with pytest.raises(DevkitError, match="not a supported ROCm arch"):
        rocm.find_rocm("gfx1030", environ)  # a bad arch is named even without ROCm


def test_found_toolchain(tmp_path):
    home = fake_rocm(tmp_path / "rocm-6.4")
    found = rocm.find_rocm("gfx942", {"ROCM_PATH": str(home)})
    assert (found.home, found.arch) == (home, "gfx942")
    assert rocm.find_rocm("gfx950", {"PATH": str(home / "bin")}).home == home
    with pytest.raises(DevkitError, match="build-rocm needs one arch"):
        rocm.find_rocm(None, {"ROCM_PATH": str(home)})
    with pytest.raises(DevkitError, match="ROCM_PATH=/nowhere has no bin/hipcc"):
        rocm.find_rocm("gfx942", {"ROCM_PATH": "/nowhere"})
