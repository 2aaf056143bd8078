"""`nox -s ci` end to end: pull requests in fresh clones against an index on 127.0.0.1.

One index (one real CPU wheel, built by `nox -s wheel -- --index` once per run:
conftest.py's published_cpu_wheel, shared with test_precompiled.py) serves every
test. Inside, `nox -s ci` skips `tests`, which would run this file again; the
compile-only CUDA build is listed but skipped here, since test_sessions.py's
test_build_cuda_compiles_sm90_without_a_gpu runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_precompiled import Server, failing_compilers, git
from test_sessions import nox

from devkit.foundation.gitbase import copy_checkout

SKIP = ("--skip", "tests", "--skip", "build-cuda")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def index(published_cpu_wheel):
    """(the repository, its commit, the index's URL, the published wheel)."""
    published = published_cpu_wheel
    server = Server(published.index)
    yield published.repo, published.commit, server.url, published.wheel
    server.close()


def pull_request(index, tmp_path: Path, change: str) -> Path:
    """A fresh clone with one commit on a branch that changes `change`."""
    repo, *_ = index
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-qb", "pr")
    with (clone / change).open("a") as f:
        # Each as lint leaves it: the PR must pass lint to reach the other steps.
        f.write(
            {".cpp": "// a change\n", ".md": "\nA change.\n"}.get(
                Path(change).suffix, "\n\n# a change\n"
            )
        )
    git(clone, "commit", "-qam", f"change {change}")
    return clone


def run_ci(clone: Path, tmp_path: Path, url: str, *args: str, **env: str):
    mark = tmp_path / "compilers-called"
    environ = {
        "VLLM_CACHE_ROOT": str(tmp_path / "cache"),
        "VLLM_BINARY_STORE": str(tmp_path / "store"),  # empty: binaries come from the index
        "VLLM_PRECOMPILED_WHEEL_INDEX": url,
        **env,
    }
    started = time.monotonic()
    result = nox(clone, "-s", "ci", "--", *args, timeout=2400, **environ)
    seconds = time.monotonic() - started
    print(f"nox -s ci in {clone}: {seconds:.1f}s")  # the note's ratio (pytest -s shows it)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    return result, mark


def table(result) -> dict[str, str]:
    """The summary table: command -> result."""
    rows = re.findall(r"^(nox -s .+?)\s{2,}(passed|failed|skipped|not run)\b", result.stderr, re.M)
    return dict(rows)


@pytest.mark.nightly  # the whole kernel suite in a clone: minutes
def test_python_only_pr_runs_the_kernel_tests_on_precompiled_binaries(index, tmp_path):
    repo, commit, url, wheel = index
    clone = pull_request(index, tmp_path, "vllm/platforms/__init__.py")
    mark = tmp_path / "compilers-called"
    path = failing_compilers(tmp_path / "shims", mark)
    result, _ = run_ci(clone, tmp_path, url, *SKIP, PATH=path)
    assert not mark.exists(), mark.read_text()
    # Found by binary key: the PR's commit and merge-base are not the wheel's.
    assert f"ci: precompiled binaries: {wheel.name} from {url} by key " in result.stdout
    assert table(result) == {
        "nox -s lint": "passed",
        "nox -s dev-precompiled": "passed",
        "nox -s test-kernels-cpu -- --precompiled": "passed",
        "nox -s test-plugins -- --precompiled": "passed",
    }
    ran = [int(n) for n in re.findall(r"=+ (\d+) passed", result.stdout)]
    assert max(ran) > 100, ran  # pytest ran the kernel tests
    assert "compiling nothing" in result.stdout + result.stderr


@pytest.mark.nightly  # a build and the whole kernel suite in a clone: minutes
def test_csrc_pr_compiles_and_tests(index, tmp_path):
    _, _, url, _ = index
    clone = pull_request(index, tmp_path, "csrc/cpu/cache.cpp")
    result, _ = run_ci(clone, tmp_path, url, *SKIP)
    assert "csrc/cpu/cache.cpp changed: CPU kernels: the CPU build reads them" in result.stdout
    assert table(result) == {  # no CUDA unit reads csrc/cpu/
        "nox -s lint": "passed",
        "nox -s build-cpu": "passed",
        "nox -s test-kernels-cpu": "passed",
        "nox -s test-plugins -- --precompiled": "passed",
    }
    compiled = re.search(r"built cpu in [\d.]+s: compiled (\d+)/(\d+)", result.stderr)
    assert compiled and int(compiled[1]) == int(compiled[2]) > 0, result.stderr[-3000:]


def test_docs_pr_runs_lint_only(index, tmp_path):
    _, _, url, _ = index
    clone = pull_request(index, tmp_path, "README.md")
    result, _ = run_ci(clone, tmp_path, url)
    assert "README.md changed: documentation" in result.stdout
    assert table(result) == {"nox -s lint": "passed"}
    assert not list(clone.glob(".venv*"))


def test_a_nightly_installs_from_the_simple_index(index, tmp_path):
    _, commit, url, wheel = index
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    # --no-deps: torch comes from its own index, never PyPI's.
    install = [uv, "pip", "install", "-p", str(venv / "bin" / "python"), "--no-deps"]
    done = subprocess.run(
        [*install, "--index-url", f"{url}/nightly/cpu/simple", "vllm"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    version = subprocess.run(
        [venv / "bin" / "python", "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert version == f"0.1.0.dev1+g{commit[:12]}.cpu" == wheel.name.split("-")[1]


def test_dev_precompiled_without_an_index_or_store_builds_once(tmp_path):
    copy = copy_checkout(tmp_path / "copy")
    mark = tmp_path / "compilers-called"
    result = nox(
        copy,
        "-s",
        "dev-precompiled",
        timeout=900,
        VLLM_PRECOMPILED_WHEEL_INDEX="",
        VLLM_BINARY_STORE=str(tmp_path / "store"),
        PATH=failing_compilers(tmp_path / "shims", mark),
    )
    # Nothing has the key's binaries: it says so and builds (here the compilers fail).
    assert "no prebuilt binaries for key " in result.stdout
    assert "building cpu once, which stores them" in result.stdout
    assert result.returncode != 0 and mark.exists()
