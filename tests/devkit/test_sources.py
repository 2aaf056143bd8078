"""pip mirrors handed to uv, and the torch index fallback."""

import contextlib
import functools
import http.server
import os
import socket
import threading

import pytest
from conftest import CPU_PIN

from devkit import DevkitError
from devkit.toolchains import sources
from devkit.toolchains.targets import TARGETS

CPU = TARGETS["cpu"]
WHEEL = f"torch-{CPU_PIN}-cp311-cp311-manylinux_2_28_x86_64.whl"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An environ in which pip reads only the config files a test writes."""
    monkeypatch.setattr(sources, "SYSTEM_PIP_CONF", tmp_path / "etc-pip.conf")
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "xdg")}


@pytest.fixture
def python311(monkeypatch):
    monkeypatch.setattr(sources, "python_tag", lambda: "cp311")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pip_config_files_are_read_in_pips_order(tmp_path, isolated):
    write(
        tmp_path / "xdg" / "pip" / "pip.conf",
        "[global]\nindex-url = https://mirror.example/simple\nfind-links = /srv/a\n",
    )
    write(
        tmp_path / "home" / ".config" / "pip" / "pip.conf",
        "[global]\nextra-index-url =\n  https://one.example/simple\n  https://two.example/simple\n"
        "[install]\nfind-links = /srv/b /srv/c\n",
    )
    got = sources.read_pip_sources(isolated)
    assert got == sources.PipSources(
        index_url="https://mirror.example/simple",
        extra_index_urls=("https://one.example/simple", "https://two.example/simple"),
        find_links=("/srv/b", "/srv/c"),
    )


def test_pip_variables_override_files_and_devnull_disables_files(tmp_path, isolated):
    write(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nfind-links = /srv/a\n")
    environ = {**isolated, "PIP_FIND_LINKS": "/srv/env", "PIP_EXTRA_INDEX_URL": "file:///m/simple"}
    assert sources.read_pip_sources(environ).find_links == ("/srv/env",)
    environ = {**isolated, "PIP_CONFIG_FILE": os.devnull}
    assert sources.read_pip_sources(environ) == sources.PipSources()


def test_pip_config_file_variable_is_read_last(tmp_path, isolated):
    write(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nindex-url = https://a.example\n")
    extra = write(tmp_path / "extra.conf", "[global]\nindex-url = https://b.example\n")
    environ = {**isolated, "PIP_CONFIG_FILE": str(extra)}
    assert sources.read_pip_sources(environ).index_url == "https://b.example"


def test_translation_to_uv_flags():
    pip = sources.PipSources("https://m.example/simple", ("file:///opt/pypi/simple",), ("/w",))
    assert pip.uv_args() == [
        "--default-index",
        "https://m.example/simple",
        "--index",
        "file:///opt/pypi/simple",
        "--find-links",
        "/w",
    ]
    chosen = sources.TorchSources(CPU.torch_index, pip, "unsafe-best-match", "")
    assert chosen.uv_args()[:4] == [
        "--index-strategy",
        "unsafe-best-match",
        "--index",
        CPU.torch_index,
    ]


def test_find_links_directory_and_file_index(tmp_path, python311):
    links = tmp_path / "wheels"
    write(links / WHEEL, "")
    assert sources.holds_pin(str(links), CPU)
    index = tmp_path / "simple"
    write(index / "torch" / "index.html", f'<a href="../../files/{WHEEL}#sha256=00">{WHEEL}</a>')
    assert sources.holds_pin(index.as_uri(), CPU)
    cuda_build = f"torch-{CPU.torch_version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    write(tmp_path / "other" / cuda_build, "")
    assert not sources.holds_pin(str(tmp_path / "other"), CPU)  # the CUDA build, not the pin
    assert not sources.holds_pin(str(tmp_path / "missing"), CPU)


@pytest.fixture
def http_index(tmp_path):
    """A PEP 503 index served on loopback, holding the pin (URL-encoded, as real ones do)."""
    root = tmp_path / "served"
    write(
        root / "simple" / "torch" / "index.html",
        f'<a href="/f/{WHEEL.replace("+", "%2B")}">{WHEEL}</a>',
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


def test_http_index_over_loopback(http_index, python311):
    assert sources.reachable(http_index)
    assert sources.holds_pin(http_index, CPU)
    assert not sources.reachable(closed_port_url())


def test_reachable_torch_index_is_used_with_the_mirrors(http_index):
    pip = sources.PipSources(find_links=("/w",))
    chosen = sources.choose_torch_sources(CPU, pip, {"VLLM_TORCH_INDEX_URL": http_index})
    assert chosen.torch_index == http_index
    assert chosen.uv_args()[-2:] == ["--find-links", "/w"]


def test_unreachable_index_falls_back_to_a_mirror_holding_the_pin(tmp_path, python311):
    links = tmp_path / "wheels"
    write(links / WHEEL, "")
    pip = sources.PipSources(extra_index_urls=(str(tmp_path / "empty"),), find_links=(str(links),))
    chosen = sources.choose_torch_sources(CPU, pip, {}, is_reachable=lambda url: False)
    assert chosen.torch_index is None
    assert "--index" in chosen.uv_args()  # the mirrors are still handed over
    assert chosen.note == (
        f"{CPU.torch_index} unreachable; {CPU.torch_spec} from your pip mirror {links}"
    )


def test_unreachable_index_without_mirror_names_the_override(tmp_path):
    pip = sources.PipSources(find_links=(str(tmp_path),))
    with pytest.raises(DevkitError) as err:
        sources.choose_torch_sources(CPU, pip, {}, is_reachable=lambda url: False)
    assert str(err.value) == (
        f"{CPU.torch_index} can't be reached and no pip mirror holds {CPU.torch_spec}; "
        "set VLLM_TORCH_INDEX_URL to an index that has it (or add its wheel to PIP_FIND_LINKS)"
    )


def test_unreachable_override_is_an_error():
    url = closed_port_url()
    refused = r"VLLM_TORCH_INDEX_URL=(.*) can't be reached \(\1/: Connection refused\); fix"
    with pytest.raises(DevkitError, match=refused):
        sources.choose_torch_sources(CPU, sources.PipSources(), {"VLLM_TORCH_INDEX_URL": url})


@pytest.fixture
def hanging_index():
    with serve_hanging_index() as url:
        yield url


@contextlib.contextmanager
def serve_hanging_index():
    """An index on loopback whose root answers and whose package pages never do."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.rstrip("/") == "/simple":
                body = b"<a href='torch/'>torch</a>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                release.wait(120)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    release.set()
    server.shutdown()
    server.server_close()


def test_an_index_whose_package_pages_hang_is_one_line_naming_the_page(hanging_index):
    with pytest.raises(DevkitError) as err:
        sources.choose_torch_sources(
            CPU, sources.PipSources(), {"VLLM_TORCH_INDEX_URL": hanging_index}
        )
    assert str(err.value) == (
        f"VLLM_TORCH_INDEX_URL={hanging_index} can't be reached ({hanging_index}/torch/ did "
        f"not answer within {sources.REACH_TIMEOUT_S:g} s); fix the URL or unset it"
    )


def test_offline_or_complete_venvs_probe_no_index():
    url = closed_port_url()
    environ = {"VLLM_TORCH_INDEX_URL": url, "UV_OFFLINE": "1"}
    chosen = sources.choose_torch_sources(CPU, sources.PipSources(), environ)
    assert chosen.torch_index == url
    assert chosen.note == (
        f"{CPU.torch_spec}: UV_OFFLINE: uv installs from its cache; no index contacted"
    )
    environ = {"VLLM_TORCH_INDEX_URL": url}
    chosen = sources.choose_torch_sources(CPU, sources.PipSources(), environ, probe=False)
    assert chosen.note == f"{CPU.torch_spec}: already in the venv; no index contacted"
    assert chosen.torch_index is None  # later installs take the mirrors, never a dead index
