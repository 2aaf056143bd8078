"""Precompiled wheels from servers and indexes that are slow, broken or hostile:
each ends in one line, and nothing is written outside the download cache."""

import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from devkit import DevkitError
from devkit.artifacts import precompiled, wheelcheck, wheelindex
from devkit.foundation import locations
from devkit.toolchains import targets

CPU = targets.get_target("cpu")
WHEEL = "vllm-0.1.0-cp311-abi3-linux_x86_64.whl"


class DripServer:
    """A server on 127.0.0.1 that answers every request with a 200, promises 100000
    bytes and sends one byte every `every_s` seconds, until closed."""

    def __init__(self, every_s: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.every_s = every_s
        self.served = 0  # requests answered
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                self.served += 1
                while not self.closed.wait(self.every_s):
                    conn.sendall(b"x")
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def drip():
    server = DripServer(every_s=0.3)
    yield server
    server.close()


@pytest.fixture
def short_deadlines(monkeypatch):
    """The deadlines of a real session are 15 s; these tests wait 2."""
    monkeypatch.setattr(locations, "TIMEOUT_S", 2)
    monkeypatch.setattr(precompiled, "_STALL_S", 2.0)
    monkeypatch.setattr(precompiled, "_PROGRESS_S", 0.5)


def test_a_dripping_download_ends_in_one_line_with_progress(
    tmp_path, drip, short_deadlines, capsys
):
    wheel = wheelindex.Wheel(f"{drip.url}/{WHEEL}", "0" * 64, "the index")
    with pytest.raises(DevkitError) as err:
        precompiled.fetch(wheel, tmp_path / "cache")
    assert str(err.value).startswith(f"{drip.url}/{WHEEL}: the download stalled (")
    assert "try again later" in str(err.value) and "\n" not in str(err.value)
    progress = [line for line in capsys.readouterr().err.splitlines() if "downloading" in line]
    assert progress and progress[0].startswith(f"[vllm] downloading {WHEEL}: 0.0/0.1")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_dripping_metadata_ends_in_one_line(drip, short_deadlines):
    with pytest.raises(DevkitError) as err:
        wheelindex.read_metadata(drip.url, "c0ffee" * 6 + "abcd", "cpu")
    assert "did not arrive within 2s" in str(err.value) and "stalled" in str(err.value)


def entry(index: Path, meta: dict) -> Path:
    commit = "c0ffee" * 6 + "abcd"
    (index / commit / "cpu").mkdir(parents=True)
    (index / commit / "cpu" / "metadata.json").write_text(json.dumps(meta))
    return index


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"wheel": WHEEL, "sha256": "../../.."}, "its sha256 '../../..' is not 64 hex digits"),
        ({"wheel": WHEEL, "sha256": "F" * 64}, "is not 64 hex digits"),
        ({"wheel": 5, "sha256": "0" * 64}, "its wheel 5 is not a wheel's file name"),
        ({"wheel": "../x.whl", "sha256": "0" * 64}, "its wheel '../x.whl' is not a wheel's"),
        ({"wheel": WHEEL, "sha256": "0" * 64, "build_info": "x"}, "its build_info 'x' is not"),
        ({"wheel": WHEEL}, "is not an index entry's metadata"),
    ],
)
def test_hostile_metadata_is_one_line_and_makes_nothing(tmp_path, meta, expected, monkeypatch):
    index = entry(tmp_path / "index", meta)
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "cache"))
    environ = {
        "VLLM_PRECOMPILED_WHEEL_INDEX": str(index),
        "VLLM_PRECOMPILED_WHEEL_COMMIT": "c0ffee" * 6 + "abcd",
    }
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DevkitError) as err:
        wheelindex.locate(CPU, None, environ, root=tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_wheel_without_digest_is_refused_unless_named(tmp_path):
    index = entry(tmp_path / "index", {"wheel": WHEEL, "sha256": None})
    commit = "c0ffee" * 6 + "abcd"
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": str(index), "VLLM_PRECOMPILED_WHEEL_COMMIT": commit}
    with pytest.raises(DevkitError) as err:
        wheelindex.locate(CPU, None, environ, root=tmp_path)
    location = index / commit / "cpu" / WHEEL
    assert str(err.value) == (
        f"{index} lists {WHEEL} for {commit[:12]} without a sha256, so it can't be checked: "
        "republish it, or take it unchecked by naming it: "
        f"VLLM_PRECOMPILED_WHEEL_LOCATION={location}"
    )
    named = wheelindex.locate(
        CPU, None, {"VLLM_PRECOMPILED_WHEEL_LOCATION": str(location)}, root=tmp_path
    )
    assert (named.location, named.sha256) == (str(location), None)


def test_build_info_that_is_not_an_object_is_one_line(tmp_path):
    wheel = tmp_path / WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(wheelcheck.BUILD_INFO, "[1, 2]")
    with pytest.raises(DevkitError, match=rf"^{WHEEL}: .* is list, not an object; republish it$"):
        wheelcheck.read_build_info(wheel)


# A dev-precompiled session's first steps, against the index given as argv[1].
SESSION = """
import sys
sys.path[:0] = [{tools!r}, {root!r}]
from devkit import DevkitError
from devkit.build import prebuilt
from devkit.build import pipeline
try:
    prebuilt.precompiled_setup("cpu", pipeline.Options(), "precompiled-cpu")
except DevkitError as exc:
    print(exc, flush=True)
"""


def test_sigterm_while_fetching_says_the_download_starts_again(tmp_path, drip):
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    script = SESSION.format(tools=str(root / "tools"), root=str(root))
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VLLM_PRECOMPILED_WHEEL_INDEX": drip.url,
        "VLLM_PRECOMPILED_WHEEL_COMMIT": "c0ffee" * 6 + "abcd",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=environ, stdout=subprocess.PIPE, text=True
    )
    while drip.served == 0:  # the metadata is being dripped
        assert proc.poll() is None
        threading.Event().wait(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    *said, last = out.strip().splitlines()  # the lookup's lines, then the one line
    assert [line for line in said if not line.startswith("[vllm]")] == []
    assert last == (
        "SIGTERM stopped the session; its processes were stopped too, and the next run "
        "resumes where this one stopped (a download starts again; nothing half-fetched is kept)"
    )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing half-fetched


def test_a_cache_root_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    """VLLM_CACHE_ROOT naming a file: by hand (the backend's fetch), as in a session."""
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "afile"))
    wheel = wheelindex.Wheel("http://127.0.0.1:9/x.whl", "0" * 64, "x")
    with pytest.raises(DevkitError) as err:
        precompiled.fetch(wheel)
    assert str(err.value) == (
        f"VLLM_CACHE_ROOT={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a "
        "directory; point VLLM_CACHE_ROOT at a directory (or unset it)"
    )
