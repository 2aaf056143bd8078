"""Versions from git (setuptools-scm): tagged, untagged, dirty, and outside git."""

from __future__ import annotations

import re

import pytest
from conftest import ROCM_PIN
from test_precompiled import git

from devkit.build import metadata


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in range(3):
        (repo / "f").write_text(str(n))
        git(repo, "add", "f")
        git(repo, "commit", "-qm", str(n))
    return repo


def test_untagged_counts_commits_since_the_root(repo):
    sha = git(repo, "rev-parse", "HEAD")[:12]
    assert metadata.scm_version("cpu", repo, "0.1.0") == f"0.1.0.dev3+g{sha}.cpu"
    assert metadata.scm_version("cu130.precompiled", repo, "0.1.0") == (
        f"0.1.0.dev3+g{sha}.cu130.precompiled"
    )


def test_on_a_release_tag_and_after_it(repo):
    git(repo, "tag", "-a", "v0.1.0", "-m", "0.1.0")
    git(repo, "tag", "nightly-2026-12-01")  # not a release tag: ignored
    assert metadata.scm_version("cpu", repo, "0.1.0") == "0.1.0+cpu"
    (repo / "f").write_text("next")
    git(repo, "commit", "-qam", "next")
    sha = git(repo, "rev-parse", "HEAD")[:12]
    # setuptools-scm's guess-next-dev: after v0.1.0 comes 0.1.1.devN ...
    assert metadata.scm_version("cpu", repo, "0.1.0") == f"0.1.1.dev1+g{sha}.cpu"
    # ... unless vllm/version.py already names a later release.
    assert metadata.scm_version("cpu", repo, "0.2.0") == f"0.2.0.dev1+g{sha}.cpu"


def test_uncommitted_changes_add_the_date(repo):
    (repo / "f").write_text("dirty")
    version = metadata.scm_version("cpu", repo, "0.1.0")
    assert re.fullmatch(r"0\.1\.0\.dev3\+g[0-9a-f]{12}\.d\d{8}\.cpu", version), version


def test_outside_git_the_base_version(tmp_path):
    assert metadata.scm_version("cpu", tmp_path, "0.1.0") == "0.1.0+cpu"
    assert metadata.base_version() == "0.1.0"


def test_a_stable_abi_target_requires_torch_from_its_floor(monkeypatch):
    """The wheel's Requires-Dist: the CPU binary runs on any torch >= its floor."""
    monkeypatch.setattr(metadata, "_plan", None)
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cpu")
    dependencies = metadata.dynamic_metadata("dependencies")
    assert [d for d in dependencies if d.startswith("torch")] == ["torch>=2.10"]
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "rocm")  # the full C++ API: the exact pin
    assert any(
        d.startswith(f"torch=={ROCM_PIN}") for d in metadata.dynamic_metadata("dependencies")
    )
