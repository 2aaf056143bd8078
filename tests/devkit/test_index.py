"""The published index's PEP 503 pages, read back by uv from a loopback server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from test_precompiled import Server, git, make_wheel

from devkit.artifacts import wheelindex
from devkit.foundation import files


def test_publish_writes_a_simple_index_beside_each_entry(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    commit = git(repo, "rev-parse", "HEAD")
    name = f"vllm-0.1.0.dev1+g{commit[:12]}.cpu-cp39-abi3-linux_x86_64.whl"
    wheel = make_wheel(tmp_path / "w" / name, {"target": "cpu", "git_commit": commit})
    index = tmp_path / "index"
    wheelindex.publish(wheel, index, repo)
    sha = files.sha256_of(wheel)
    for entry in (index / commit / "cpu", index / "nightly" / "cpu"):
        page = (entry / "simple" / "vllm" / "index.html").read_text()
        href = f'href="../../vllm-0.1.0.dev1%2Bg{commit[:12]}.cpu-cp39-abi3-linux_x86_64.whl'
        assert f'{href}#sha256={sha}"' in page
        assert (entry / "simple" / "index.html").read_text().count('href="vllm/"') == 1
    # dev-precompiled's dist/ lookup knows these names are cpu wheels.
    assert wheelindex.is_variant(name, "cpu")
    assert wheelindex.is_variant("vllm-0.1.0+rocm7.1-cp39-abi3-linux_x86_64.whl", "rocm7.1")
    assert not wheelindex.is_variant(name, "cu130")


def test_uv_resolves_the_simple_index_over_http(tmp_path):
    """uv reads the nightly page and finds the wheel with its sha256 (the install itself,
    of a real wheel, is in test_ci_e2e.py)."""
    index = tmp_path / "index"
    wheel = make_wheel(tmp_path / "w" / "vllm-0.1.0+cpu-cp39-abi3-linux_x86_64.whl")
    entry = index / "nightly" / "cpu"
    entry.mkdir(parents=True)
    shutil.copy(wheel, entry / wheel.name)
    for name, page in wheelindex.simple_pages(wheel.name, files.sha256_of(wheel)).items():
        (entry / name).parent.mkdir(parents=True, exist_ok=True)
        (entry / name).write_bytes(page)
    server = Server(index)
    try:
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
        out = subprocess.run(
            [uv, "pip", "compile", "--no-deps", "--no-header", "--index-url"]
            + [f"{server.url}/nightly/cpu/simple", "--python-platform", "linux", "-"],
            input="vllm\n",
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "UV_NO_CONFIG": "1", "HOME": str(tmp_path)},
        )
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    assert "vllm==0.1.0+cpu" in out.stdout, out.stdout
