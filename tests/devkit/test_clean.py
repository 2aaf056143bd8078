"""clean: what it removes, and what it never does (tracked files)."""

import subprocess

import pytest

from devkit import DevkitError, clean, plan
from devkit.targets import TorchInfo


def make_checkout(root):
    """A git checkout with a cpu build (plan.json naming .venv-cpu) and a cuda venv."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "README.md").write_text("tracked\n")
    subprocess.run(["git", "-C", str(root), "add", "README.md"], check=True)
    found = plan.resolve(
        plan.Request("cpu", python=str(root / ".venv-cpu" / "bin" / "python")),
        TorchInfo("2.13.0+cpu", None, None),
        {"VLLM_COMPILER_CACHE": "off"},
    )
    build_dir = root / "build" / "cpu-torch2.13.0+cpu-cp311"
    plan.BuildPlan(**{**found.__dict__, "build_dir": build_dir}).write()
    (build_dir / "big.o").write_bytes(b"x" * 3_000_000)
    (root / ".venv-cpu" / "bin").mkdir(parents=True)
    (root / ".venv-cpu" / "bin" / "python").write_bytes(b"y" * 1_000_000)
    (root / ".venv-cuda").mkdir()
    (root / "build" / "precompiled").mkdir()
    (root / "compile_commands.json").symlink_to(build_dir / "compile_commands.json")


def test_one_target_then_everything(tmp_path):
    make_checkout(tmp_path)
    lines = clean.clean("cuda", root=tmp_path)
    assert lines[0] == "removed .venv-cuda (venv of cuda, 0.00 GB)"
    assert lines[-1].startswith("freed 0.00 GB: the cuda target's build dirs and venvs")
    assert (tmp_path / ".venv-cpu").exists() and not (tmp_path / ".venv-cuda").exists()

    lines = clean.clean(root=tmp_path)
    assert "removed build/cpu-torch2.13.0+cpu-cp311 (build dir of cpu, 0.00 GB)" in lines
    assert "removed .venv-cpu (venv of cpu, 0.00 GB)" in lines
    assert any(line.startswith("removed build/precompiled (staged") for line in lines)
    assert any(line.startswith("removed compile_commands.json (editor file") for line in lines)
    assert lines[-1] == "freed 0.00 GB: this checkout's build dirs and venvs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "README.md", "build"]
    assert clean.clean(root=tmp_path) == [
        "nothing to clean: this checkout's build dirs and venvs are already gone"
    ]


def test_freed_size_is_counted(tmp_path):
    make_checkout(tmp_path)
    planned = clean.removals("cpu", tmp_path)
    assert sum(clean.size_of(r.path) for r in planned) >= 4_000_000


def test_tracked_files_are_never_removed(tmp_path):
    make_checkout(tmp_path)
    (tmp_path / "build" / "precompiled" / "keep.txt").write_text("tracked\n")
    subprocess.run(
        ["git", "-C", str(tmp_path), "add", "-f", "build/precompiled/keep.txt"], check=True
    )
    with pytest.raises(
        DevkitError, match=r"^not cleaning: git tracks files in .*build/precompiled"
    ):
        clean.clean(root=tmp_path)
    # Nothing was removed: the check comes before any deletion.
    assert (tmp_path / ".venv-cpu").exists() and (tmp_path / ".venv-cuda").exists()


def test_all_empties_the_caches_it_is_pointed_at(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    root.mkdir()
    make_checkout(root)
    for name in ("ccache", "sccache", "uv"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "blob").write_bytes(b"z" * 2_000_000)
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path / "ccache"))
    monkeypatch.setenv("SCCACHE_DIR", str(tmp_path / "sccache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    lines = clean.clean(everything=True, root=root)
    assert f"emptied {tmp_path / 'ccache'} (ccache's cache, 0.00 GB)" in lines
    assert not (tmp_path / "ccache").exists() and not (tmp_path / "sccache").exists()
    assert any(line.startswith(f"emptied {tmp_path / 'uv'} (uv's cache") for line in lines)
    assert not (tmp_path / "uv" / "blob").exists()
    assert lines[-1].startswith("freed 0.01 GB: this checkout's build dirs and venvs and the")


def test_an_unknown_target_is_one_line(tmp_path):
    with pytest.raises(DevkitError, match="unknown target 'gpu'"):
        clean.clean("gpu", root=tmp_path)
