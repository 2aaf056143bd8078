"""The precompiled path: a wheel index, and installs that compile nothing.

The unit tests use small wheels made here and a real HTTP server on
127.0.0.1; the end-to-end test serves a real CPU wheel (built and published
once per run: conftest.py's published_cpu_wheel) and runs `nox -s
dev-precompiled` in a fresh clone with compilers that fail if anything calls
them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import CPU_PIN, CPU_TORCH, CUDA_PIN
from test_sessions import abort_line, nox

from devkit import DevkitError
from devkit.artifacts import precompiled, wheelcheck, wheelindex
from devkit.build.smoke import EXPECTED_OPS
from devkit.toolchains import cuda, targets

CPU = targets.get_target("cpu")
TORCH = targets.TorchInfo(CPU_PIN, None, None, "abc")
INFO = {
    "target": "cpu",
    "torch_version": CPU_PIN,
    "cuda_version": None,
    "hip_version": None,
    "cpu_isa": "avx2",
    "python_abi": "abi3",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
}
WHEEL_NAME = "vllm-0.1.0+cpu-cp39-abi3-linux_x86_64.whl"


def make_wheel(path: Path, info: dict | None = None, extra: dict[str, bytes] | None = None):
    """A wheel with an extension, build info and a Python file (what the project builds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("vllm/_C.abi3.so", b"\x7fELF not really")
        zf.writestr("vllm/_build_info.json", json.dumps(info or INFO))
        zf.writestr("vllm/__init__.py", "")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def forge(wheel: Path, dest: Path, **changes) -> Path:
    """A copy of `wheel` whose build info has `changes`; everything else byte-equal."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == wheelcheck.BUILD_INFO:
                data = json.dumps({**json.loads(data), **changes}).encode()
            out.writestr(item, data)
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Server:
    """A static file server on 127.0.0.1 that remembers what was asked of it."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                requests.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    served = Server(root)
    yield served
    served.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def publish_fake(index: Path, wheel: Path, commit: str, sha: str | None = None) -> None:
    entry = index / commit / "cpu"
    entry.mkdir(parents=True, exist_ok=True)
    shutil.copy(wheel, entry / wheel.name)
    meta = {"wheel": wheel.name, "sha256": sha or sha256(wheel), "commit": commit}
    (entry / "metadata.json").write_text(json.dumps(meta))


# -- compatibility ------------------------------------------------------------

AVX512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}


def test_a_matching_wheel_has_no_problems():
    assert wheelcheck.check_compat(INFO, CPU, TORCH, AVX512) == []


def test_every_mismatch_is_listed_with_its_fix():
    info = {**INFO, "torch_version": "2.12.0+cpu", "cpu_isa": "avx512", "python_abi": "cp310"}
    problems = wheelcheck.check_compat(info, CPU, TORCH, {"avx2", "fma"}, python=(3, 11))
    assert problems == [
        f"built against torch 2.12.0+cpu, the venv has torch {CPU_PIN}: install "
        f"torch==2.12.0+cpu, or take a wheel built against {CPU_PIN}",
        "built for avx512, which this CPU lacks (avx512bw, avx512dq, avx512f, avx512vl): take "
        "a wheel built with VLLM_CPU_ISA=avx2 or default, or build it here (nox -s build-cpu)",
        "built for Python ABI cp310, this venv is cp311: take an abi3 wheel",
    ]


STABLE_INFO = {**INFO, "torch_abi": "stable", "torch_floor": "2.10", "cuda_major": None}


def test_a_stable_abi_wheel_fits_any_torch_from_its_floor():
    for version, cuda_version in ((CPU_PIN, None), (CUDA_PIN, "13.0"), ("2.10.0", None)):
        torch = targets.TorchInfo(version, cuda_version, None)
        assert wheelcheck.check_compat(STABLE_INFO, CPU, torch, AVX512) == [], version


def test_a_stable_abi_wheel_refuses_a_torch_below_its_floor_in_one_line():
    torch = targets.TorchInfo("2.9.1+cpu", None, None)
    assert wheelcheck.check_compat(STABLE_INFO, CPU, torch, AVX512) == [
        f"built on torch's stable ABI for torch>=2.10 (against {CPU_PIN}), the venv has "
        "torch 2.9.1+cpu: install torch>=2.10"
    ]


def test_a_stable_abi_cuda_wheel_binds_the_cuda_major_only():
    cuda_row = targets.get_target("cuda")
    info = {**STABLE_INFO, "target": "cuda", "torch_version": CUDA_PIN, "cuda_version": "13.0"}
    info["cuda_major"], info["cpu_isa"] = 13, None
    same_major = targets.TorchInfo("2.15.0", "13.2", None)
    assert wheelcheck.check_compat(info, cuda_row, same_major, AVX512) == []
    other_major = targets.TorchInfo(CUDA_PIN, "12.8", None)
    assert wheelcheck.check_compat(info, cuda_row, other_major, AVX512) == [
        "built for CUDA 13 (13.0), the venv's torch has CUDA 12.8: install a torch for CUDA 13"
    ]


def test_target_cuda_version_and_unknown_isa():
    cuda = targets.get_target("cuda")
    torch = targets.TorchInfo(CUDA_PIN, "12.8", None)
    info = {**INFO, "target": "cuda", "torch_version": CUDA_PIN, "cuda_version": "13.0"}
    info["cpu_isa"] = "avx10"
    problems = wheelcheck.check_compat(info, cuda, torch, AVX512)
    assert problems == [
        "built for CUDA 13.0, the venv's torch has CUDA 12.8: install a torch for CUDA 13.0",
        "built for an unknown CPU ISA 'avx10': take a wheel built by this repo",
    ]
    assert wheelcheck.check_compat(INFO, cuda, torch, AVX512)[0].startswith(
        "built for target cpu, not cuda: take a cu130 wheel"
    )


@pytest.mark.parametrize(
    "built, gpu, runs",
    [
        ("sm_90", "9.0", True),
        ("sm_80", "8.6", True),
        ("sm_86", "8.0", False),
        ("sm_80", "9.0", False),
        ("sm_80+PTX", "9.0", True),
        ("sm_90a", "9.0", True),
        ("sm_90a", "10.0", False),
        ("sm_100", "10.0", True),
        ("sm_120", "12.0", True),
    ],
)
def test_which_gpus_a_cuda_build_runs_on(built, gpu, runs):
    assert cuda.runs_on(built, cuda.parse_arch(gpu)) is runs


def test_a_wheel_for_another_gpu_is_refused():
    info = {**INFO, "gpu_arch": "sm_90"}
    (problem,) = wheelcheck.check_compat(info, CPU, TORCH, AVX512, gpu=cuda.parse_arch("8.0"))
    assert problem == (
        "built for sm_90, which this GPU (compute capability 8.0) can't run: take a wheel "
        "built for it, or build it here (nox -s build-cpu -- --arch 8.0)"
    )
    assert wheelcheck.check_compat(info, CPU, TORCH, AVX512, gpu=None) == []


def test_ensure_fits_is_one_line_naming_the_wheel():
    info = {**INFO, "torch_version": "2.12.0+cpu"}
    with pytest.raises(DevkitError, match=r"^w.whl does not fit this venv: \(1\) built against"):
        wheelcheck.ensure_fits(info, CPU, TORCH, "w.whl")


# -- reading wheels -------------------------------------------------------------


@pytest.mark.parametrize(
    "entry", ["../evil.so", "vllm/../../evil.so", "/etc/evil", "C:/evil", "vllm\\..\\evil"]
)
def test_a_zip_slip_entry_refuses_the_whole_wheel(tmp_path, entry):
    wheel = make_wheel(tmp_path / WHEEL_NAME, extra={entry: b"x"})
    with pytest.raises(DevkitError, match="has an entry that escapes the package"):
        wheelcheck.read_build_info(wheel)


def test_corrupt_and_info_less_wheels(tmp_path):
    corrupt = tmp_path / "corrupt.whl"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DevkitError, match=r"is not a valid wheel \(a corrupt zip\)"):
        wheelcheck.read_build_info(corrupt)
    bare = tmp_path / "bare.whl"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("vllm/_C.abi3.so", b"x")
    with pytest.raises(DevkitError, match="has no vllm/_build_info.json"):
        wheelcheck.read_build_info(bare)


def test_stage_takes_only_the_binaries_and_is_complete_or_absent(tmp_path):
    wheel = make_wheel(tmp_path / WHEEL_NAME)
    files = precompiled.stage(wheel, INFO, tmp_path / "staged")
    assert sorted(files) == ["vllm/_C.abi3.so", "vllm/_build_info.json"]
    assert files["vllm/_C.abi3.so"].read_bytes() == b"\x7fELF not really"
    (staged,) = (tmp_path / "staged").iterdir()  # no temporary directory left
    assert staged.name == f"cpu-{sha256(wheel)[:16]}"
    assert not (staged / "vllm" / "__init__.py").exists()
    assert precompiled.stage(wheel, INFO, tmp_path / "staged") == files  # reused


def test_the_backend_repeats_no_line_the_session_said(tmp_path, monkeypatch, capsys):
    """dev-precompiled announces the wheel and its csrc/ drift once: in the session. The
    backend, handed the session's plan, checks the same wheel again without a word."""
    info = {**INFO, "cpu_isa": "default", "torch_version": CPU_TORCH.version}
    wheel = make_wheel(tmp_path / WHEEL_NAME, info)
    monkeypatch.setenv("VLLM_PRECOMPILED_WHEEL_LOCATION", str(wheel))
    by_hand = precompiled.install(CPU, CPU_TORCH, tmp_path / "staged")
    said = capsys.readouterr().err.splitlines()
    assert (
        said[0] == f"[vllm] precompiled wheel: {WHEEL_NAME}, from VLLM_PRECOMPILED_WHEEL_LOCATION"
    )
    assert said[1].startswith("[vllm] warning: the wheel's commit 0123456789ab is not in this")
    assert precompiled.install(CPU, CPU_TORCH, tmp_path / "staged", told=True) == by_hand
    assert capsys.readouterr().err == ""


def test_a_member_failing_its_crc_stages_nothing(tmp_path):
    wheel = make_wheel(tmp_path / WHEEL_NAME)
    data = wheel.read_bytes()
    wheel.write_bytes(data.replace(b"ELF not really", b"ELF not REALLY"))  # stored, not deflated
    info = wheelcheck.read_build_info(wheel)  # the build info itself is intact
    with pytest.raises(DevkitError, match=r"vllm/_C.abi3.so: .*CRC.*; fetch it again"):
        precompiled.stage(wheel, info, tmp_path / "staged")
    assert list((tmp_path / "staged").iterdir()) == []


# -- locating and fetching --------------------------------------------------------


def test_locate_order_location_then_dist_then_index(tmp_path, monkeypatch, capsys):
    for name in ("LOCATION", "INDEX", "COMMIT"):
        monkeypatch.delenv(f"VLLM_PRECOMPILED_WHEEL_{name}", raising=False)
    index = tmp_path / "index"
    publish_fake(index, make_wheel(tmp_path / "w" / WHEEL_NAME), "c0ffee")
    environ = {
        "VLLM_PRECOMPILED_WHEEL_INDEX": str(index),
        "VLLM_PRECOMPILED_WHEEL_COMMIT": "c0ffee",
    }
    found = wheelindex.locate(CPU, TORCH, environ, root=tmp_path)
    assert (found.origin, found.sha256) == (
        f"index {index} at c0ffee",
        sha256(index / "c0ffee/cpu" / WHEEL_NAME),
    )

    in_dist = make_wheel(tmp_path / "dist" / WHEEL_NAME)
    assert wheelindex.locate(CPU, TORCH, environ, root=tmp_path).location == str(in_dist)

    # A newer wheel in dist/ built against another torch is passed over, with a word.
    other = make_wheel(
        tmp_path / "dist" / "vllm-0.2.0+cpu-cp39-abi3-linux_x86_64.whl",
        {**INFO, "torch_version": "2.12.0+cpu"},
    )
    os.utime(other, (other.stat().st_mtime + 10,) * 2)
    assert wheelindex.locate(CPU, TORCH, environ, root=tmp_path).location == str(in_dist)
    in_dist.unlink()
    assert wheelindex.locate(CPU, TORCH, environ, root=tmp_path).origin.startswith("index")
    assert "dist/ has 1 cpu wheel(s), none for this venv" in capsys.readouterr().err

    environ["VLLM_PRECOMPILED_WHEEL_LOCATION"] = "https://example.invalid/x.whl"
    assert (
        wheelindex.locate(CPU, TORCH, environ, root=tmp_path).origin
        == "VLLM_PRECOMPILED_WHEEL_LOCATION"
    )


def test_locate_falls_back_to_nightly_with_a_warning(tmp_path, capsys):
    index = tmp_path / "index"
    publish_fake(index, make_wheel(tmp_path / "w" / WHEEL_NAME), "nightly")
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": str(index), "VLLM_PRECOMPILED_WHEEL_COMMIT": "beef"}
    assert wheelindex.locate(CPU, TORCH, environ, root=tmp_path).origin == f"index {index}, nightly"
    assert f"warning: {index} has no cpu wheel for beef; taking nightly" in capsys.readouterr().err
    shutil.rmtree(index / "nightly")
    with pytest.raises(DevkitError, match="has no cpu wheel for beef nor in nightly/"):
        wheelindex.locate(CPU, TORCH, environ, root=tmp_path)


def test_locate_without_any_source_says_how_to_set_one(tmp_path):
    with pytest.raises(
        DevkitError, match="^no precompiled wheel to use: no index is configured .*; set VLLM_"
    ):
        wheelindex.locate(CPU, TORCH, {}, root=tmp_path)


def test_fetch_downloads_once_then_hits_the_cache(tmp_path, server):
    wheel = make_wheel(tmp_path / "served" / WHEEL_NAME)
    url = f"{server.url}/{WHEEL_NAME.replace('+', '%2B')}"
    found = wheelindex.Wheel(url, sha256(wheel), "test")
    first = precompiled.fetch(found, tmp_path / "cache")
    assert first.read_bytes() == wheel.read_bytes() and first.name == WHEEL_NAME
    assert precompiled.fetch(found, tmp_path / "cache") == first
    assert len(server.requests) == 1  # the second fetch downloaded nothing


def test_fetch_failures_leave_nothing_in_the_cache(tmp_path, server):
    wheel = make_wheel(tmp_path / "served" / WHEEL_NAME)
    cache = tmp_path / "cache"
    wrong = wheelindex.Wheel(f"{server.url}/{WHEEL_NAME}", "0" * 64, "the index")
    with pytest.raises(
        DevkitError, match=r"has sha256 [0-9a-f]{16}\.\.\., but the index says 0{16}"
    ):
        precompiled.fetch(wrong, cache)
    missing = wheelindex.Wheel(f"{server.url}/gone.whl", sha256(wheel), "the index")
    with pytest.raises(DevkitError, match=r"gone.whl is not there \(HTTP 404"):
        precompiled.fetch(missing, cache)
    down = wheelindex.Wheel(f"{closed_port_url()}/{WHEEL_NAME}", sha256(wheel), "x")
    with pytest.raises(
        DevkitError, match=r"^can't reach 127.0.0.1:\d+ for vllm-.*start the server"
    ):
        precompiled.fetch(down, cache)
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_dropped_download_is_one_line_and_leaves_no_file(tmp_path):
    """The server promises 1000 bytes, sends 10 and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")

    threading.Thread(target=serve_once, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/{WHEEL_NAME}"
    with listener, pytest.raises(DevkitError, match=r": the download (failed|stopped)"):
        precompiled.fetch(wheelindex.Wheel(url, "0" * 64, "x"), tmp_path / "cache")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# -- publishing -----------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_publish_writes_the_entry_and_keeps_nightly_newest(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commits = []
    for n, when in enumerate(("2026-01-02T00:00:00", "2026-01-01T00:00:00")):
        (repo / "f").write_text(str(n))
        git(repo, "add", "f")
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", str(n)],
            cwd=repo,
            check=True,
            env={**os.environ, "GIT_COMMITTER_DATE": when},
        )
        commits.append(git(repo, "rev-parse", "HEAD"))
    index = tmp_path / "index"
    newer = make_wheel(tmp_path / "a" / WHEEL_NAME, {**INFO, "git_commit": commits[0]})
    older = make_wheel(tmp_path / "b" / WHEEL_NAME, {**INFO, "git_commit": commits[1]})

    assert wheelindex.publish(newer, index, repo).endswith("and to nightly/")
    meta = json.loads((index / commits[0] / "cpu" / "metadata.json").read_text())
    assert (meta["wheel"], meta["sha256"], meta["build_info"]["git_commit"]) == (
        WHEEL_NAME,
        sha256(newer),
        commits[0],
    )
    assert wheelindex.publish(older, index, repo).endswith(
        f"nightly/ keeps the newer {commits[0][:12]}"
    )
    assert json.loads((index / "nightly/cpu/metadata.json").read_text())["commit"] == commits[0]

    dirty = make_wheel(tmp_path / "c" / WHEEL_NAME, {**INFO, "git_commit": commits[0] + "-dirty"})
    with pytest.raises(DevkitError, match="built from uncommitted changes"):
        wheelindex.publish(dirty, index, repo)


# -- end to end: a real wheel, a real server, a fresh clone, no compiler ------------

COMPILERS = (
    "cc",
    "c++",
    "gcc",
    "g++",
    "clang",
    "clang++",
    "nvcc",
    "hipcc",
    "cmake",
    "ninja",
    "ccache",
    "sccache",
    "ld",
)


def failing_compilers(directory: Path, mark: Path) -> str:
    """Shims that record their call in `mark` and fail; returns a PATH with them first."""
    directory.mkdir()
    for name in COMPILERS:
        shim = directory / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{mark}"\nexit 1\n')
        shim.chmod(0o755)
    return os.pathsep.join([str(directory), str(Path(sys.executable).parent), os.environ["PATH"]])


def snapshot(tree: Path) -> dict[str, str]:
    """Every file of a checkout but its venvs, by content: what a failure must not change."""
    return {
        str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(tree.rglob("*"))
        if p.is_file() and not p.relative_to(tree).parts[0].startswith((".venv", ".nox"))
    }


@pytest.mark.e2e
def test_dev_precompiled_end_to_end(tmp_path, server, published_cpu_wheel):
    # A fresh repository with this checkout's files, one commit on main, its CPU wheel
    # published by `nox -s wheel -- --index` (conftest.py: built once per run).
    published = published_cpu_wheel
    repo, commit, wheel = published.repo, published.commit, published.wheel
    served = tmp_path / "served"  # the server's root
    (served / "good").symlink_to(published.index)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    mark = tmp_path / "compilers-called"
    environ = {
        "PATH": failing_compilers(tmp_path / "shims", mark),
        "VLLM_CACHE_ROOT": str(tmp_path / "cache"),
        "VLLM_BINARY_STORE": str(tmp_path / "store"),
        "VLLM_PRECOMPILED_WHEEL_INDEX": f"{server.url}/good",
    }
    result = nox(clone, "-s", "dev-precompiled", timeout=900, **environ)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not mark.exists(), mark.read_text()
    assert f"from index {server.url}/good by key " in result.stdout + result.stderr
    num_ops = sum(len(ops) for ops in EXPECTED_OPS.values())
    assert f"smoke check: {num_ops} ops with CPU kernels" in result.stdout

    python = clone / ".venv-precompiled-cpu" / "bin" / "python"
    probe = (
        "import importlib.metadata as m, torch, vllm.build_info, vllm._custom_ops as ops\n"
        "x = torch.randn(4, 16); out = torch.empty(4, 8); ops.silu_and_mul(out, x)\n"
        "ref = torch.nn.functional.silu(x[:, :8]) * x[:, 8:]\n"
        "print(m.version('vllm'), vllm.build_info.get()['git_commit'], torch.allclose(out, ref))"
    )
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    # The version is git's (setuptools-scm): one commit, no tag.
    expected = f"0.1.0.dev1+g{commit[:12]}.cpu.precompiled"
    assert out.stdout.split() == [expected, commit, "True"], out.stderr

    # Again: the binaries come from the local store, the server is not asked.
    asked = len(server.requests)
    result = nox(clone, "-s", "dev-precompiled", timeout=600, **environ)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from the local binary store (key " in result.stdout + result.stderr
    assert server.requests[asked:] == []

    # A contributor's csrc/ change is not in those binaries: their key differs, so the
    # target is built once (here the compilers fail, and say so).
    (clone / "csrc" / "ops.h").write_text((clone / "csrc" / "ops.h").read_text() + "\n")
    result = nox(clone, "-s", "dev-precompiled", timeout=600, **environ)
    assert result.returncode != 0 and "building cpu once" in result.stdout
    git(clone, "checkout", "csrc/ops.h")
    mark.unlink()
    shutil.rmtree(clone / "build", ignore_errors=True)

    # Broken indexes: each ends in one line, and nothing in the clone changes.
    def bad_index(name: str, wheel_file: Path, sha: str | None = None) -> str:
        publish_fake(served / name, wheel_file, commit, sha)
        return f"{server.url}/{name}"

    corrupt = tmp_path / "corrupt" / wheel.name
    corrupt.parent.mkdir()
    corrupt.write_bytes(wheel.read_bytes()[: wheel.stat().st_size // 2])
    slip = tmp_path / "slip" / wheel.name
    slip.parent.mkdir()
    shutil.copy(wheel, slip)
    with zipfile.ZipFile(slip, "a") as zf:
        zf.writestr("vllm/../../evil.so", b"x")
    cases = {  # (an index without the key: builds once, test_ci_e2e)
        "corrupt": (bad_index("corrupt", corrupt), f"{wheel.name} is not a valid wheel"),
        "sha": (bad_index("sha", wheel, "f" * 64), f"{wheel.name} has sha256 "),
        # A stable-ABI wheel runs on every torch from its floor: one above the venv's is refused.
        "torch": (
            bad_index("torch", forge(wheel, tmp_path / wheel.name, torch_floor="2.99")),
            f"{wheel.name} does not fit this venv: (1) built on torch's stable ABI for torch>=2.99",
        ),
        "slip": (bad_index("slip", slip), f"{wheel.name} has an entry that escapes the package"),
        "down": (closed_port_url(), "can't reach 127.0.0.1:"),
    }
    # This CPU has AVX-512, so an ISA mismatch is checked against a CPU without it.
    avx512 = forge(wheel, tmp_path / "isa.whl", cpu_isa="avx512")
    info = wheelcheck.read_build_info(avx512)
    with pytest.raises(DevkitError, match=r"does not fit this venv: \(1\) built for avx512, "):
        wheelcheck.ensure_fits(info, CPU, CPU_TORCH, avx512.name, cpu={"avx2", "fma"})

    before = snapshot(clone)
    for case, (index, expected) in cases.items():
        result = nox(
            clone,
            "-s",
            "dev-precompiled",
            timeout=600,
            **{
                **environ,
                "VLLM_PRECOMPILED_WHEEL_INDEX": index,
                "VLLM_BINARY_STORE": str(tmp_path / f"store-{case}"),  # empty
            },
        )
        assert result.returncode != 0, case
        assert abort_line(result).startswith(expected), (case, abort_line(result))
        assert snapshot(clone) == before, case
    assert not mark.exists()

    # The by-hand command goes through the same backend, from the index.
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-p",
            str(python),
            "--offline",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(clone),
        ],
        cwd=clone,
        check=True,
        capture_output=True,
        env={**os.environ, **environ, "VLLM_USE_PRECOMPILED": "1"},
    )
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.split()[-1] == "True", out.stderr
    assert not mark.exists()
