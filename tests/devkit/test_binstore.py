"""The binary key and the local binary store, with their faults: a corrupt or partial
entry, a digest mismatch, a full disk while storing, two writers of one key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from conftest import CUDA_PIN, ROCM_PIN

from devkit.artifacts import binaries, binkey, binstore
from devkit.foundation import files, gitbase
from devkit.foundation.envs import ROOT
from devkit.foundation.gitbase import copy_checkout
from devkit.toolchains import cpuisa, plan, targets

CPU = targets.get_target("cpu")
TORCH = plan.expected_torch(CPU)
INFO = {
    "target": "cpu",
    "torch_version": TORCH.version,
    "compiler": "GNU 12.2.0",
    "cpu_isa": "avx2",
    "python_abi": "abi3",
    "git_commit": "0" * 40,
}


def quiet(lines: list[str]):
    return lines.append


def package(directory: Path, so_bytes: bytes = b"\x7fELF" + b"k" * 4096) -> Path:
    """An editable build's vllm/ directory: a .so and its build info."""
    directory.mkdir(parents=True)
    (directory / "_C.abi3.so").write_bytes(so_bytes)
    (directory / "_build_info.json").write_text(json.dumps(INFO))
    return directory


def put(store: binstore.Store, tmp_path: Path, build_id: str, size: int = 4096):
    payload = binstore.binaries_zip(
        package(tmp_path / f"pkg-{build_id}-{time.monotonic_ns()}", os.urandom(size)),
        tmp_path / f"{build_id}-{time.monotonic_ns()}.zip",
    )
    return store.put(build_id, payload, {"compiler": "GNU 12.2.0"}, "binaries.zip")


# -- the key -------------------------------------------------------------------


def test_the_key_is_the_same_in_two_directories_and_follows_compiled_files_only(tmp_path):
    a = copy_checkout(tmp_path / "a")
    b = copy_checkout(tmp_path / "elsewhere" / "b")
    os.utime(b / "csrc" / "ops.h", (1, 1))  # file times don't count
    key_a = binkey.compute("cpu", TORCH, root=a, flags=set())
    assert key_a.digest == binkey.compute("cpu", TORCH, root=b, flags=set()).digest
    assert key_a.inputs["cpu_isa"] == "default"  # auto, on a CPU without AVX2

    (b / "vllm" / "platforms" / "cpu.py").write_text("# Python only\n")
    (b / "README.md").write_text("docs\n")
    assert binkey.compute("cpu", TORCH, root=b, flags=set()).digest == key_a.digest

    (b / "csrc" / "ops.h").write_text((b / "csrc" / "ops.h").read_text() + "// x\n")
    changed = binkey.compute("cpu", TORCH, root=b, flags=set())
    assert binkey.changed_inputs(changed.inputs, key_a.inputs) == ["files"]


def test_the_key_follows_target_isa_torch_and_build_requirements(tmp_path):
    base = binkey.compute("cpu", TORCH, cpu_isa="avx2")
    assert binkey.compute("cpu", TORCH, cpu_isa="avx512").digest != base.digest
    assert binkey.compute("cpu", TORCH, cpu_isa="avx2", build_type="Debug").digest != base.digest
    other = targets.TorchInfo(CUDA_PIN, "13.0", None)
    cpu, cuda, rocm = (targets.get_target(name) for name in ("cpu", "cuda", "rocm"))
    # On the stable ABI the floor is the version: one key for every torch from it on.
    assert binkey.torch_identity(cpu, other) == binkey.torch_identity(cpu, TORCH)
    assert binkey.torch_identity(cpu, other) == {
        "flavour": "cpu",
        "cuda_major": "",
        "version": "2.10abi",
    }
    assert binkey.torch_identity(cuda, other)["cuda_major"] == "13"
    rocm_torch = targets.TorchInfo(ROCM_PIN, None, "7.1")
    assert binkey.torch_identity(rocm, rocm_torch)["version"] == ROCM_PIN
    copy = copy_checkout(tmp_path / "c")
    same = binkey.compute("cpu", TORCH, cpu_isa="avx2", root=copy)
    assert same.digest == base.digest
    with (copy / "requirements" / "build.txt").open("a") as f:
        f.write("# a comment does not count\n")
    assert binkey.compute("cpu", TORCH, cpu_isa="avx2", root=copy).digest == base.digest
    with (copy / "requirements" / "build.txt").open("a") as f:
        f.write("wheel>=0.40\n")
    assert binkey.compute("cpu", TORCH, cpu_isa="avx2", root=copy).digest != base.digest
    # The compiler names a build, not the lookup.
    built = binkey.Key(base.inputs, "GNU 12.2.0")
    assert built.digest == base.digest and built.build_id.startswith(base.digest + "-")


def test_auto_isa_is_what_cmake_picks():
    assert cpuisa.resolve("auto", {"avx2", "fma"}) in ("avx2", "default")
    assert cpuisa.resolve("avx2", set()) == "avx2"


def test_one_merge_base_call_site():
    calls = [
        path.name
        for path in (ROOT / "tools" / "devkit").rglob("*.py")
        if '"merge-base"' in path.read_text()
    ]
    assert calls == ["gitbase.py"]


def test_merge_base_prefers_origin_main(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "a")
    assert gitbase.merge_base(root=repo)[0] == "main"
    run("update-ref", "refs/remotes/origin/main", "HEAD")
    assert gitbase.merge_base(root=repo)[0] == "origin/main"


# -- the store -----------------------------------------------------------------


def test_store_then_find_by_the_inputs_digest(tmp_path):
    lines: list[str] = []
    store = binstore.Store(tmp_path / "store", 1 << 30, quiet(lines))
    key = binkey.compute("cpu", TORCH, cpu_isa="avx2")
    entry = binaries.store_build(key, package(tmp_path / "vllm"), lines.append, store)
    assert entry is not None and entry.build_id == binkey.Key(key.inputs, "GNU 12.2.0").build_id
    found = binaries.lookup(CPU, key, lines.append, store, {"VLLM_PRECOMPILED_WHEEL_INDEX": ""})
    assert found is not None and found.by_key
    assert "local binary store" in found.wheel.origin
    with zipfile.ZipFile(found.wheel.location) as zf:
        assert sorted(zf.namelist()) == ["vllm/_C.abi3.so", "vllm/_build_info.json"]
    assert store.find("f" * 64) is None


def test_a_partial_or_corrupt_entry_is_ignored_and_replaced(tmp_path):
    lines: list[str] = []
    store = binstore.Store(tmp_path / "store", 1 << 30, quiet(lines))
    entry = put(store, tmp_path, "a" * 64 + "-c1")
    payload = entry.payload
    payload.write_bytes(payload.read_bytes()[:100])  # a partial copy
    assert store.find("a" * 64) is None
    assert lines[-1].startswith(f"ignoring the partial or corrupt entry {entry.path}")
    again = put(store, tmp_path, "a" * 64 + "-c1")
    assert again is not None and store.find("a" * 64) == again
    (again.path / binstore.MANIFEST).write_text("{not json")  # a corrupt manifest
    assert store.find("a" * 64) is None
    assert put(store, tmp_path, "a" * 64 + "-c1") is not None
    assert store.find("a" * 64) is not None


def test_a_digest_mismatch_is_refused(tmp_path):
    store = binstore.Store(tmp_path / "store", 1 << 30, quiet([]))
    entry = put(store, tmp_path, "b" * 64 + "-c1")
    data = bytearray(entry.payload.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    entry.payload.write_bytes(bytes(data))
    with pytest.raises(
        binstore.DigestMismatch, match=r"holds binaries.zip with sha256 .* refusing"
    ):
        store.find("b" * 64)
    # A build of the key replaces it.
    assert put(store, tmp_path, "b" * 64 + "-c1") is not None
    assert store.find("b" * 64) is not None


def test_least_recently_used_entries_go_past_the_cap(tmp_path):
    lines: list[str] = []
    store = binstore.Store(tmp_path / "store", 3 * 70_000, quiet(lines))
    ids = [c * 64 + "-c1" for c in "cdef"]
    for n, build_id in enumerate(ids[:3]):
        put(store, tmp_path, build_id, size=60_000)
        os.utime(store.entries_dir / build_id, (1000 + n, 1000 + n))
    assert store.find("c" * 64) is not None  # used: now the most recent
    put(store, tmp_path, ids[3], size=60_000)
    left = sorted(p.name for p in store.entries_dir.iterdir())
    assert left == sorted([ids[0], ids[2], ids[3]])  # d (least recently used) went
    assert "removed 1 least recently used entry" in lines[-1]


def test_two_writers_of_one_key_both_succeed(tmp_path):
    store_dir = tmp_path / "store"
    payload = binstore.binaries_zip(package(tmp_path / "vllm"), tmp_path / "p.zip")
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / "tools")!r})
        from pathlib import Path
        from devkit.artifacts import binstore
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        store = binstore.Store(Path({str(store_dir)!r}), 1 << 30, print)
        for n in range(30):
            entry = store.put("a" * 64 + f"-{{n}}", Path({str(payload)!r}), {{}}, "b.zip")
            assert entry is not None and store.check(entry.path) is not None
        print("ok")
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    go.touch()
    outs = [w.communicate(timeout=120)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outs
    assert all(out.strip().endswith("ok") for out in outs)
    store = binstore.Store(store_dir, 1 << 30, quiet([]))
    assert len(list(store.entries_dir.iterdir())) == 30
    assert all(store.check(p) for p in store.entries_dir.iterdir())
    assert not any((store_dir / binstore.TMP).iterdir())  # no writer left anything behind


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs (we are root on the test machines); unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "tiny"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_while_storing_is_one_warning(tmp_path, tiny_filesystem):
    lines: list[str] = []
    store = binstore.Store(tiny_filesystem / "store", 1 << 30, lines.append)
    key = binkey.compute("cpu", TORCH, cpu_isa="avx2")
    big = package(tmp_path / "vllm", os.urandom(1 << 20))  # 1 MiB, incompressible
    assert binaries.store_build(key, big, lines.append, store) is None
    assert len(lines) == 1 and lines[0].startswith("warning: binaries not stored in ")
    assert "the disk is full" in lines[0] and "the build itself succeeded" in lines[0]
    assert not any((store.root / binstore.TMP).iterdir())  # nothing half-written
    assert not any(store.entries_dir.iterdir())
    # A small one still fits: the store works once there is room.
    assert put(store, tmp_path, "9" * 64 + "-c1", size=1000) is not None


# -- lookup: the index by key, and the nightly on purpose ------------------------


def index_entry(index: Path, where: str, wheel: Path, key: str | None) -> None:
    entry = index / where / "cpu"
    entry.mkdir(parents=True)
    shutil.copy(wheel, entry / wheel.name)
    sha = files.sha256_of(wheel)
    meta = {"wheel": wheel.name, "sha256": sha, "commit": "c0ffee", "binary_key": key}
    (entry / "metadata.json").write_text(json.dumps(meta))


def store_key_wheel(tmp_path: Path) -> tuple[list[str], binstore.Store, binkey.Key, Path]:
    """The lookups' fixtures: the lines said, a 1 GiB store, a CPU key and a
    binaries wheel, all under tmp_path."""
    lines: list[str] = []
    store = binstore.Store(tmp_path / "store", 1 << 30, lines.append)
    key = binkey.compute("cpu", TORCH, cpu_isa="avx2")
    wheel = binstore.binaries_zip(package(tmp_path / "vllm"), tmp_path / "w.whl")
    return lines, store, key, wheel


def test_lookup_takes_the_index_by_key_and_keeps_it_in_the_store(tmp_path):
    lines, store, key, wheel = store_key_wheel(tmp_path)
    index = tmp_path / "index"
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": str(index), "VLLM_CACHE_ROOT": str(tmp_path)}
    assert binaries.lookup(CPU, key, lines.append, store, environ) is None
    index_entry(index, f"keys/{key.digest}", wheel, key.digest)
    found = binaries.lookup(CPU, key, lines.append, store, environ)
    assert found is not None and found.by_key
    assert found.wheel.origin == f"index {index} by key {key.short}"
    # Kept: the next lookup needs no index.
    again = binaries.lookup(CPU, key, lines.append, store, {"VLLM_PRECOMPILED_WHEEL_INDEX": ""})
    assert again is not None and "local binary store" in again.wheel.origin


def test_the_nightly_is_taken_only_on_purpose_with_a_warning_when_its_key_differs(tmp_path):
    lines, store, key, wheel = store_key_wheel(tmp_path)
    index = tmp_path / "index"
    index_entry(index, "nightly", wheel, "e" * 64)
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": str(index), "VLLM_PRECOMPILED_WHEEL_COMMIT": "0"}
    assert binaries.lookup(CPU, key, lines.append, store, environ) is None  # not by default
    on_purpose = {**environ, "VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL": "1"}
    found = binaries.lookup(CPU, key, lines.append, store, on_purpose)
    assert found is not None and not found.by_key
    assert found.wheel.origin == f"index {index}, nightly"
    assert lines[-1].startswith(
        f"warning: VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL=1: the nightly's key eeeeeeeeeeeeeeee "
        f"is not this checkout's {key.short}"
    )


def test_with_isa_auto_a_build_for_a_lower_isa_this_cpu_runs_is_taken(tmp_path):
    lines: list[str] = []
    store = binstore.Store(tmp_path / "store", 1 << 30, lines.append)
    wanted = binkey.compute("cpu", TORCH, cpu_isa="avx512")
    avx2 = binkey.Key({**wanted.inputs, "cpu_isa": "avx2"})
    assert binaries.store_build(avx2, package(tmp_path / "vllm"), lines.append, store)
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": "", "VLLM_CPU_ISA": "auto"}
    found = binaries.lookup(CPU, wanted, lines.append, store, environ)
    assert found is not None and f"key {avx2.short}" in found.wheel.origin
    assert lines[-1].startswith("taking the avx2 build of these sources (VLLM_CPU_ISA=auto")
    # A chosen ISA takes only its own.
    chosen = {**environ, "VLLM_CPU_ISA": "avx512"}
    assert binaries.lookup(CPU, wanted, lines.append, store, chosen) is None
