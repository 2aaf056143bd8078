"""Faults and careless input, end to end, as a careless contributor meets them:
Ctrl-C and kill, two terminals, a stale variable, no network, a broken venv.

Each ends in a correct build or in one line that names the fix. Every test
works in a copy of the checkout; broken venvs link to a private copy of the
interpreter (private_python.py), never to the machine's own Python.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import private_python
import pytest
from conftest import CPU_PIN
from test_sessions import abort_line, nox, summary
from test_sources import serve_hanging_index

from devkit.foundation import layout, lock
from devkit.foundation.envs import ROOT
from devkit.foundation.gitbase import copy_checkout
from devkit.toolchains.uv import find_uv

BUILD = 1800  # seconds a cold build may take on a busy 2-core machine

pytestmark = pytest.mark.e2e


def aborted(result: subprocess.CompletedProcess) -> str:
    """The session's one `aborted:` line, without the duration nox may add."""
    return re.sub(r" \(took [^)]*\)\.$", ".", abort_line(result))


def environ(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOX", "VIRTUAL_ENV"))}
    env.update(changes)
    return env


def run_nox(python: Path, cwd: Path, *args: str, timeout: int = 60, **env: str):
    return subprocess.run(
        [str(python), "-m", "nox", *args],
        cwd=cwd,
        env=environ(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def private_nox(tmp_path_factory) -> tuple[Path, Path]:
    """(prefix, python) of a private interpreter with nox, and neither uv nor torch."""
    prefix = tmp_path_factory.mktemp("private") / "python"
    python = private_python.make(prefix)
    subprocess.run(
        [find_uv(), "pip", "install", "-q", "-p", str(python), "nox"], check=True, timeout=600
    )
    return prefix, python


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- item 1: a venv half-made by Ctrl-C ----------------------------------------


def test_a_venv_half_made_by_ctrl_c_is_made_again_not_installed_into_its_base(
    tmp_path, private_nox
):
    prefix, python = private_nox
    copy = copy_checkout(tmp_path / "copy")
    before = private_python.site_packages(prefix)
    venv = copy / ".venv-cpu"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(python)  # bin/python, no pyvenv.cfg
    # uv now remembers .venv-cpu/bin/python as the private interpreter itself; the
    # venv made again links to the same one, so that stale entry would still apply.
    listed = subprocess.run(
        [find_uv(), "pip", "list", "-p", str(venv / "bin" / "python")],
        capture_output=True,
        text=True,
    )
    assert f"environment at: {prefix}" in listed.stderr

    result = run_nox(python, copy, "-s", "build-cpu", timeout=BUILD)
    compiled, total = summary(result)
    assert compiled == total >= 5
    assert (
        "[vllm] .venv-cpu is half-made (no pyvenv.cfg: an interrupted `uv venv`?); "
        "making it again" in result.stdout
    )
    assert (venv / "pyvenv.cfg").is_file()
    assert list(venv.glob("lib/python*/site-packages/torch/version.py"))
    assert private_python.site_packages(prefix) == before  # nothing went into the base


# -- items 2, 3, 5 and 7 on one built copy -------------------------------------


@pytest.mark.nightly  # seven builds and a torch reinstall, one after another: minutes
def test_stale_variables_offline_and_a_damaged_torch(tmp_path):
    # Item 7: a non-ASCII checkout path under LC_ALL=C (Python would read the editable
    # install's .pth as ASCII and not start).
    (tmp_path / "ünï").mkdir()
    copy = copy_checkout(tmp_path / "ünï")
    python = copy / ".venv-cpu" / "bin" / "python"
    first = nox(copy, "-s", "build-cpu", timeout=BUILD, LC_ALL="C", LANG="C")
    compiled, total = summary(first)
    assert (
        "is not ASCII and the locale's encoding is ascii: the session runs with LC_ALL=C.UTF-8"
        in (first.stdout)
    )
    (build_dir,) = (copy / "build").glob("cpu-torch*")

    # Item 2: a wheel in dist/ and a stale VLLM_USE_PRECOMPILED=1: build-cpu still compiles.
    wheel = nox(copy, "-s", "wheel", timeout=BUILD)
    assert wheel.returncode == 0, wheel.stdout[-3000:] + wheel.stderr[-3000:]
    assert list((copy / "dist").glob("vllm-*.whl"))
    with open(copy / "csrc/cpu/activation.cpp", "a") as source:
        source.write("// edited\n")
    stale = nox(copy, "-s", "build-cpu", timeout=BUILD, VLLM_USE_PRECOMPILED="1")
    assert summary(stale) == (1, total)

    # Item 3: a bogus flag fails that build only; the plain build after it works.
    (copy / "csrc/cpu/activation.cpp").touch()
    flag = "-DCMAKE_CXX_FLAGS=-fbogus-flag"
    bogus = nox(copy, "-s", "build-cpu", timeout=BUILD, CMAKE_ARGS=flag)
    assert bogus.returncode != 0
    assert "-fbogus-flag" in bogus.stdout + bogus.stderr
    plain = nox(copy, "-s", "build-cpu", timeout=BUILD)
    assert summary(plain)[1] == total
    assert f"CMAKE_ARGS changed ({flag} -> unset): configuring from a fresh CMake cache" in (
        plain.stdout
    )
    assert "fbogus" not in (build_dir / "CMakeCache.txt").read_text()

    # Item 5: no network (every proxy a closed port): a no-op rebuild needs none.
    proxy = f"http://127.0.0.1:{closed_port()}"
    offline = {k: proxy for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    offline.update({k.lower(): v for k, v in offline.items()})
    result = nox(copy, "-s", "build-cpu", timeout=BUILD, **offline)
    assert summary(result) == (0, total)
    assert "[vllm] .venv-cpu has every build requirement: nothing to install" in result.stdout
    assert summary(nox(copy, "-s", "build-cpu", timeout=BUILD, UV_OFFLINE="1")) == (0, total)

    # Item 7, by hand: a CUDA build with the CPU torch is one line, no traceback.
    by_hand = subprocess.run(
        [find_uv(), "pip", "install", "-p", str(python), "--no-build-isolation", "-e", "."],
        cwd=copy,
        env=environ(VLLM_TARGET_DEVICE="cuda", TORCH_CUDA_ARCH_LIST="9.0"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert by_hand.returncode != 0
    assert f"error: the cuda target needs torch built for it, but torch {CPU_PIN}" in (
        by_hand.stderr
    )
    assert "Traceback" not in by_hand.stderr

    # Item 7: a deleted libtorch_cpu.so is put back, not met as CMake's error.
    (library,) = copy.glob(".venv-cpu/lib/python*/site-packages/torch/lib/libtorch_cpu.so")
    library.unlink()
    result = nox(copy, "-s", "build-cpu", timeout=BUILD)
    assert summary(result) == (0, total)
    assert "lacks torch/lib/libtorch_cpu.so (1 of its libraries): reinstalling it" in (
        result.stdout
    )
    assert library.is_file()


# -- item 6: an index that hangs -------------------------------------------------


def test_an_index_whose_package_pages_hang_ends_in_one_line(tmp_path):
    copy = copy_checkout(tmp_path / "copy")
    with serve_hanging_index() as url:
        result = nox(copy, "-s", "build-cpu", VLLM_TORCH_INDEX_URL=url)
        assert aborted(result) == (
            f"VLLM_TORCH_INDEX_URL={url} can't be reached ({url}/torch/ did not answer within "
            "4 s); fix the URL or unset it."
        )
        assert not (copy / ".venv-cpu").exists()
        # A pip mirror that hangs: uv gives up after UV_HTTP_TIMEOUT, once retried.
        result = nox(copy, "-s", "build-cpu", timeout=300, PIP_EXTRA_INDEX_URL=url)
    assert re.fullmatch(
        f"uv couldn't fetch {re.escape(url)}/[\\w-]+/ \\(no answer within UV_HTTP_TIMEOUT=8 s, "
        "retried\\); fix or remove that index .*, or set UV_OFFLINE=1 to install from uv's cache.",
        aborted(result),
    ), aborted(result)


# -- item 4: two sessions at once ----------------------------------------------


def test_two_sessions_at_once_take_turns(tmp_path):
    copy = copy_checkout(tmp_path / "copy")
    sessions = [
        subprocess.Popen(
            [sys.executable, "-m", "nox", "-s", name],
            cwd=copy,
            env=environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("wheel", "build-cpu")
    ]
    outputs = [proc.communicate(timeout=BUILD)[0] for proc in sessions]
    for proc, out in zip(sessions, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    both = "\n".join(outputs)
    # Both made .venv-cpu at first, one built while the other waited.
    assert "already exists" not in both
    assert "[vllm] waiting for " in both
    waited_for = {s.pid for s in sessions}
    assert any(
        f"waiting for the build in build/cpu-torch2.10abi-cp3{sys.version_info[1]} "
        f"(pid {pid}) to finish"
        in both
        or f"waiting for the setup of .venv-cpu (pid {pid}) to finish" in both
        for pid in waited_for
    )
    # The deps log survived: nothing recompiles.
    assert summary(nox(copy, "-s", "build-cpu", timeout=BUILD))[0] == 0

    # By hand (`uv pip install -e .`, no session) the backend takes the same lock.
    (build_dir,) = [p for p in (copy / "build").glob("cpu-*") if p.is_dir()]
    with lock.hold(build_dir / "build.lock", "the test's hold", print):
        python = str(copy / ".venv-cpu" / "bin" / "python")
        by_hand = subprocess.Popen(
            [find_uv(), "pip", "install", "-v", "-p", python]
            + ["--no-build-isolation", "--no-deps", "-e", "."],
            cwd=copy,
            env=environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert by_hand.stdout is not None
        seen = []
        for line in by_hand.stdout:
            seen.append(line)
            if f"waiting for the test's hold (pid {os.getpid()}) to finish" in line:
                break
        else:
            pytest.fail("the by-hand build did not wait:\n" + "".join(seen)[-3000:])
    out = "".join(seen) + by_hand.communicate(timeout=BUILD)[0]
    assert by_hand.returncode == 0, out[-3000:]
    assert "[vllm] waited " in out


# -- item 9: SIGTERM, and SIGKILL with its orphaned compilers --------------------


def compilers_in(path: Path, compiling: str = "") -> list[int]:
    """Compiler processes working under `path` (and with `compiling` in their command
    line: "/csrc/" leaves out CMake's quick compiler checks)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() in (
                "cc1plus",
                "c++",
                "g++",
            ):
                if Path(os.readlink(entry / "cwd")).is_relative_to(path) and (
                    compiling in (entry / "cmdline").read_text()
                ):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def start_build(copy: Path, log: Path) -> subprocess.Popen:
    """build-cpu, returned once a compiler runs on one of the copy's sources (a compile
    that lasts seconds, not one of CMake's checks)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nox", "-s", "build-cpu"],
        cwd=copy,
        env=environ(VLLM_COMPILER_CACHE="off"),  # compilers that take a while
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + BUILD
    while not compilers_in(copy / "build", compiling="/csrc/"):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no compiler started"
        time.sleep(0.1)
    return proc


@pytest.mark.xdist_group("cold-build")  # compiles without a cache
def test_sigterm_says_what_it_stopped_and_sigkills_orphans_dont_race(tmp_path):
    copy = copy_checkout(tmp_path / "copy")
    log = tmp_path / "build.log"

    proc = start_build(copy, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    out = log.read_text()
    (line,) = [line for line in out.splitlines() if "aborted:" in line]
    assert "aborted: SIGTERM stopped the session while running `" in line
    assert "the next run resumes where this one stopped" in line
    assert compilers_in(copy) == []

    proc = start_build(copy, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert compilers_in(copy / "build")  # orphans, still writing object files
    result = nox(copy, "-s", "build-cpu", timeout=BUILD)
    compiled, total = summary(result)
    assert "process(es) left running by an interrupted run (pid " in result.stdout
    assert ") of the build in build/cpu-" in result.stdout
    assert compilers_in(copy) == []
    assert summary(nox(copy, "-s", "build-cpu", timeout=BUILD)) == (0, total)


# -- item 7: one line instead of a traceback -------------------------------------


def test_careless_input_is_one_line(tmp_path, private_nox):
    prefix, python = private_nox
    copy = copy_checkout(tmp_path / "copy")
    # nox without uv: lint and tests fall back to virtualenv; build sessions say what to do.
    # (First: ruff, outside a git repository, would lint the venvs made below.)
    no_uv = "/usr/bin:/bin"
    result = run_nox(python, copy, "-s", "build-cpu", PATH=no_uv)
    assert aborted(result) == "uv is not installed; run `pip install uv` (README's Quickstart)."
    result = run_nox(python, copy, "-s", "lint", timeout=600, PATH=no_uv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No backends present" not in result.stderr

    (tmp_path / "afile").write_text("")
    result = nox(copy, "-s", "build-cpu", VLLM_BUILD_DIR=str(tmp_path / "afile"))
    assert aborted(result) == (
        f"VLLM_BUILD_DIR={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a directory; "
        "point VLLM_BUILD_DIR at a directory (or unset it for build/)."
    )
    result = nox(copy, "-s", "build-cpu", MAX_JOBS="²")
    assert aborted(result).startswith("MAX_JOBS='²' is not a positive integer")
    result = nox(copy, "-s", "doctor", VLLM_BUILD_DIR="~/x", HOME=str(tmp_path / "home"))
    key = layout.checkout_key(copy)  # outside the checkout: a subdirectory of its own
    assert f"build dir {tmp_path / 'home' / 'x' / key}/cpu-torch" in result.stdout
    assert not (copy / "~").exists()
    assert not (copy / ".venv-cpu").exists()

    # A venv whose Python is gone (made from a copy of the interpreter, then deleted).
    base = private_python.make(tmp_path / "gone")
    subprocess.run([find_uv(), "venv", "-q", "--python", str(base), str(copy / ".venv-cpu")])
    shutil.rmtree(tmp_path / "gone")
    result = nox(copy, "-s", "build-cpu")
    assert aborted(result) == (
        f".venv-cpu was made by a Python in {tmp_path / 'gone' / 'bin'} that is gone; "
        "delete .venv-cpu and rerun (the session makes it again)."
    )

    # The backend in a venv without scikit-build-core (pip's --no-build-isolation).
    bare = tmp_path / "bare"
    subprocess.run([find_uv(), "venv", "-q", "--python", str(python), str(bare)], check=True)
    result = subprocess.run(
        [find_uv(), "pip", "install", "-p", str(bare), "--no-build-isolation", "-e", "."],
        cwd=copy,
        env=environ(),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    said = " ".join(result.stderr.split())  # uv indents (and may wrap) the backend's output
    assert f"error: scikit-build-core is not installed for {bare}/bin/python" in said
    assert "Traceback" not in result.stderr


def as_a_user_who_cant_write(code: str, cwd: Path, environ: dict[str, str]):
    """Runs `code` with the system Python as a user without write access: as root,
    through setpriv as nobody (root may write anywhere); otherwise as this user."""
    command = ["/usr/bin/python3", "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) drops root to nobody for this test"
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **environ}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


PLAN = """
import sys
sys.path.insert(0, "tools")
from devkit import DevkitError
from devkit.toolchains import plan, targets
from devkit.toolchains.targets import TorchInfo
try:
    plan.resolve(plan.Request("cpu"), plan.expected_torch(targets.get_target("cpu")), {})
except DevkitError as exc:
    print(exc)
"""


def test_a_read_only_checkout_or_build_dir_is_one_line():
    """The plan (what every session and the backend resolve first) in a checkout
    that was built by someone else and is read-only now, and with VLLM_BUILD_DIR
    at a read-only directory: one line, before anything is written."""
    scratch = Path(tempfile.mkdtemp(prefix="devkit-ro-"))  # nobody can't enter pytest's tmp
    try:
        scratch.chmod(0o755)
        checkout = scratch / "checkout"
        shutil.copytree(ROOT / "tools" / "devkit", checkout / "tools" / "devkit")
        (checkout / "vllm").mkdir()
        shutil.copy(ROOT / "vllm" / "envs.py", checkout / "vllm" / "envs.py")
        (checkout / "build").mkdir()
        (scratch / "elsewhere").mkdir()
        for path in [checkout, *checkout.rglob("*"), scratch / "elsewhere"]:
            path.chmod(0o555 if path.is_dir() else 0o444)

        result = as_a_user_who_cant_write(PLAN, checkout, {})
        assert result.stdout == (
            f"VLLM_BUILD_DIR=build: {checkout / 'build'} is not writable; point VLLM_BUILD_DIR "
            "at a writable directory (e.g. VLLM_BUILD_DIR=/tmp/vllm-build)\n"
        ), result.stderr
        elsewhere = str(scratch / "elsewhere" / "b")
        result = as_a_user_who_cant_write(PLAN, checkout, {"VLLM_BUILD_DIR": elsewhere})
        assert result.stdout.startswith(
            f"VLLM_BUILD_DIR={elsewhere}: {scratch / 'elsewhere'} is not writable; "
        ), result.stderr
        assert not (scratch / "elsewhere" / "b").exists()
    finally:
        for path in [scratch, *scratch.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(scratch)
