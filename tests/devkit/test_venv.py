"""Venvs checked before use and made whole (devkit.toolchains.venv), with real interpreters.

Every broken venv here links to a private copy of the interpreter
(private_python.py), never to the machine's own Python.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import private_python
import pytest

from devkit import DevkitError
from devkit.foundation.procs import check
from devkit.toolchains import venv
from devkit.toolchains.uv import find_uv, uv_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base(tmp_path) -> Path:
    """The private interpreter's prefix."""
    private_python.make(tmp_path / "base")
    return tmp_path / "base"


def base_python(base: Path) -> Path:
    return next((base / "bin").glob("python3*"))


def plant_half_made(path: Path, base: Path) -> None:
    """What an interrupted `uv venv` leaves: bin/python, no pyvenv.cfg."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(base_python(base))


def make_wheel(dest: Path, name: str = "faultprobe") -> Path:
    """A minimal pure-Python wheel, to install without an index."""
    wheel = dest / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
        record = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
        archive.writestr(f"{info}/RECORD", record)
    return wheel


def prefix_of(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True)
    return Path(out.stdout.decode().strip())


def test_a_half_made_venv_is_made_again_and_uv_installs_into_it(tmp_path, base):
    path = tmp_path / "work" / ".venv-cpu"
    plant_half_made(path, base)
    # What the bug did: the half-made venv runs as its base, and uv caches that mapping.
    assert prefix_of(path / "bin" / "python") == base
    uv = find_uv()
    poisoned = subprocess.run(
        [uv, "pip", "list", "-p", str(path / "bin" / "python")], capture_output=True, text=True
    )
    assert "environment at: " in poisoned.stderr and "base" in poisoned.stderr
    said = []
    python = venv.ensure(path, tmp_path, uv, check, uv_env(), said.append, str(base_python(base)))
    assert said == [
        "work/.venv-cpu is half-made (no pyvenv.cfg: an interrupted `uv venv`?); making it again",
        "made work/.venv-cpu (activate with: source work/.venv-cpu/bin/activate)",
    ]
    assert (path / "pyvenv.cfg").is_file() and prefix_of(python) == path
    assert not list(path.parent.glob(".venv-cpu.tmp-*"))  # made under a temporary name
    # Refreshes uv's stale entry (UV_OFFLINE, which uv refuses with --refresh, is let be).
    venv.check_uv_target(python, path, uv, {**uv_env(), "UV_OFFLINE": "1"})
    subprocess.run(
        [uv, "pip", "install", "-q", "--no-index", "-p", str(python), make_wheel(tmp_path)],
        check=True,
        env=uv_env(),
    )
    assert list(path.glob("lib/python*/site-packages/faultprobe.py"))
    assert private_python.site_packages(base) == []  # nothing went into the base


def test_uv_pointing_elsewhere_is_refused(tmp_path, base):
    """A path uv resolves to another environment than the venv: nothing is installed."""
    other = tmp_path / "other"
    venv.create(other, str(base_python(base)), find_uv(), check, uv_env())
    with pytest.raises(DevkitError, match=r"uv would install into .*other, not into .*wrong"):
        # A python inside `other`, handed over as if it were the venv `wrong`.
        venv.check_uv_target(other / "bin" / "python", tmp_path / "wrong", find_uv(), uv_env())


def test_a_venv_whose_python_is_gone_names_the_fix(tmp_path, base):
    path = tmp_path / ".venv-cpu"
    venv.create(path, str(base_python(base)), find_uv(), check, uv_env())
    shutil.rmtree(base)
    found = venv.problem(path, path / "bin" / "python", tmp_path, sys.version_info[:2])
    assert found == (
        f".venv-cpu was made by a Python in {base}/bin that is gone; "
        "delete .venv-cpu and rerun (the session makes it again)"
    )
    with pytest.raises(DevkitError, match="that is gone; delete .venv-cpu and rerun"):
        venv.usable(path, tmp_path, print)


def test_a_venv_of_another_python_names_the_fix(tmp_path, base):
    path = tmp_path / ".venv-cpu"
    venv.create(path, str(base_python(base)), find_uv(), check, uv_env())
    found = venv.problem(path, path / "bin" / "python", tmp_path, (3, 99))
    here = ".".join(map(str, sys.version_info[:3]))
    assert found == (
        f".venv-cpu was made by Python {here}, but this session runs Python 3.99; "
        "delete .venv-cpu and rerun (the session makes it again)"
    )
    # The venv's own Python matches: usable, untouched.
    assert venv.usable(path, tmp_path, print) == path / "bin" / "python"


def test_a_directory_without_pyvenv_cfg_that_is_not_half_made_is_left_alone(tmp_path):
    path = tmp_path / ".venv-cpu"
    for i in range(venv.HALF_MADE_MAX_ENTRIES + 1):
        (path / "lib" / f"f{i}").parent.mkdir(parents=True, exist_ok=True)
        (path / "lib" / f"f{i}").write_text("")
    with pytest.raises(DevkitError, match="no pyvenv.cfg, so it is not a venv; move it away"):
        venv.usable(path, tmp_path, print)
    assert (path / "lib" / "f0").exists()


def test_leftovers_of_interrupted_creations_are_removed(tmp_path):
    path = tmp_path / ".venv-cpu"
    (tmp_path / ".venv-cpu.tmp-123" / "bin").mkdir(parents=True)
    assert venv.usable(path, tmp_path, print) is None
    assert not (tmp_path / ".venv-cpu.tmp-123").exists()


def test_activate_finds_the_renamed_venv(tmp_path, base):
    path = tmp_path / ".venv-cpu"
    venv.create(path, str(base_python(base)), find_uv(), check, uv_env())
    out = subprocess.run(
        ["bash", "-c", f". {path}/bin/activate && echo $VIRTUAL_ENV"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    assert Path(out.stdout.strip()).resolve() == path.resolve()


def test_missing_library_files_are_found(tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    (site / "torch-2.12.0.dist-info").mkdir(parents=True)
    (site / "torch" / "lib").mkdir(parents=True)
    (site / "torch" / "lib" / "libc10.so").write_text("")
    (site / "torch-2.12.0.dist-info" / "RECORD").write_text(
        "torch/lib/libc10.so,sha256=x,1\ntorch/lib/libtorch_cpu.so,sha256=y,2\ntorch/a.py,,\n"
    )
    assert venv.missing_files(tmp_path, "torch") == ["torch/lib/libtorch_cpu.so"]
