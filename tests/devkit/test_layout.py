"""devkit.foundation.layout: one build root per checkout, even when VLLM_BUILD_DIR is shared."""

import pytest

from devkit import DevkitError
from devkit.foundation import layout
from devkit.toolchains import compiler_cache


def test_a_shared_build_root_gets_one_subdirectory_per_checkout(tmp_path):
    shared = tmp_path / "vllm-build"
    environ = {"VLLM_BUILD_DIR": str(shared), "VLLM_COMPILER_CACHE": "sccache"}
    one, two = tmp_path / "a" / "vllm", tmp_path / "b" / "vllm"  # alike in name
    roots = [layout.build_root(environ, root) for root in (one, two)]
    assert roots[0] != roots[1] and roots[0].parent == roots[1].parent == shared
    assert [r.name for r in roots] == [layout.checkout_key(one), layout.checkout_key(two)]
    # Each checkout's sccache has a disk cache of its own (one server each), and strips
    # both its checkout and its build root, so the shared store hits across them.
    caches = [compiler_cache.resolve(environ, root=root).environ for root in (one, two)]
    assert [c["SCCACHE_DIR"] for c in caches] == [str(r / "sccache") for r in roots]
    assert [c["SCCACHE_BASEDIRS"] for c in caches] == [
        f"{one}:{roots[0]}",
        f"{two}:{roots[1]}",
    ]


def test_the_checkouts_own_build_root_is_not_shared(tmp_path):
    root = tmp_path / "vllm"
    assert layout.build_root({"VLLM_BUILD_DIR": "build"}, root) == root / "build"
    assert layout.build_root({"VLLM_BUILD_DIR": "out/b"}, root) == root / "out" / "b"
    parent = layout.build_root({"VLLM_BUILD_DIR": ".."}, root)
    assert parent == tmp_path / layout.checkout_key(root)


def test_a_semicolon_in_the_build_root_is_one_line(tmp_path):
    with pytest.raises(DevkitError) as err:
        layout.build_root({"VLLM_BUILD_DIR": str(tmp_path / "a;b")})
    assert str(err.value) == (
        f"VLLM_BUILD_DIR={tmp_path / 'a;b'} holds ';', which CMake reads as a list separator; "
        "choose a directory name without ';'"
    )


def test_two_checkouts_of_one_shared_root_share_the_store_not_their_binaries(
    tmp_path, redis_server
):
    """Real builds: clone A fills a Redis store, clone B (same VLLM_BUILD_DIR, another
    directory name) compiles nothing itself, and each venv imports its own _C."""
    import json
    import subprocess

    from conftest import stop_sccache
    from test_sessions import nox
    from test_shared_cache import counts

    from devkit.foundation.gitbase import copy_checkout

    shared = tmp_path / "vllm-build"
    environ = {"VLLM_BUILD_DIR": str(shared), "VLLM_COMPILER_CACHE_REMOTE": redis_server.url}
    a = copy_checkout(tmp_path / "one" / "vllm")
    b = copy_checkout(tmp_path / "two" / "other")
    try:
        first = counts(nox(a, "-s", "build-cpu", timeout=1800, **environ))
        second = counts(nox(b, "-s", "build-cpu", timeout=1800, **environ))
    finally:
        for plan_file in shared.glob("*/*/plan.json"):
            port = json.loads(plan_file.read_text())["compiler_cache"]["environ"]
            stop_sccache(port["SCCACHE_SERVER_PORT"])
    compiled, total, _, _, misses = first
    assert compiled == total == misses  # cold
    compiled, total, local, remote, misses = second
    assert (compiled, local) == (total, 0) and remote >= 0.9 * total, second
    # Each venv imports the binary of its own checkout's build dir.
    where = "import vllm._C as c; print(c.__file__)"
    for root in (a, b):
        out = subprocess.run(
            [str(root / ".venv-cpu" / "bin" / "python"), "-c", where],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip().startswith(str(shared / layout.checkout_key(root))), out.stdout
