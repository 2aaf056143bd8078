"""Binaries found by what they are built from: store after a build, look up before one.

    a build (build-cpu, wheel, ci's)  -> store_build() -> the local store, by key
    dev-precompiled, ci               -> lookup():
        VLLM_PRECOMPILED_WHEEL_LOCATION (a wheel named on purpose)
        -> the local store, by key        (devkit.artifacts.binstore)
        -> the index, by key              (<index>/keys/<digest>/<variant>/)
        -> the index at the merge-base    (an entry published before keys; drift warned)
        -> nightly, only on purpose       (VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL=1)
        -> None: the caller builds once, and that build stores its binaries

The key (devkit.artifacts.binkey) of a lookup is the checkout's compiled inputs against
the venv's torch: any build of equal inputs fits, whatever its commit.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.artifacts import binkey, binstore, precompiled, wheelcheck, wheelindex
from devkit.foundation import envs, locations
from devkit.foundation.envs import ROOT
from devkit.toolchains import cpuisa, cuda, targets

KEYS = wheelindex.KEYS


@dataclass(frozen=True)
class Found:
    """Where a lookup found binaries for a key."""

    wheel: wheelindex.Wheel
    by_key: bool  # the key matched: the binaries are this checkout's


def lookup_key(
    target: targets.Target,
    torch: targets.TorchInfo,
    arch: str | None = None,
    root: Path = ROOT,
    environ: Mapping[str, str] | None = None,
) -> binkey.Key:
    """The checkout's key for `target` against `torch`: what a build here would make."""
    gpu_arch = ""
    if target.cuda_version:
        text = arch or envs.get("TORCH_CUDA_ARCH_LIST", environ)
        found = cuda.parse_arch(text) if text else cuda.local_gpu_arch()
        if found is not None:
            gpu_arch = f"sm_{found.number}" + ("+PTX" if found.ptx else "")
    elif target.hip_version:
        gpu_arch = arch or envs.get("PYTORCH_ROCM_ARCH", environ) or ""
    return binkey.compute(target.name, torch, gpu_arch=gpu_arch, root=root, environ=environ)


def key_of_build(plan: Any, log: Callable[[str], None]) -> binkey.Key | None:
    """The key of a build about to run (a BuildPlan); None, with a warning, when
    it can't be computed: the build goes on, its binaries are just not stored."""
    try:
        return binkey.for_plan(plan)
    except (DevkitError, OSError) as exc:
        log(f"warning: no binary key for this build ({exc}); its binaries won't be stored")
        return None


def fallback_keys(key: binkey.Key, environ: Mapping[str, str] | None = None) -> list[binkey.Key]:
    """The keys of builds for a lower CPU ISA, which this CPU runs too: looked up after the
    checkout's own when VLLM_CPU_ISA is auto (the nightly builds for avx2, so that any
    x86-64 CPU with AVX2 runs it). None for a chosen ISA, or a GPU target."""
    if key.inputs.get("target") != "cpu" or envs.get("VLLM_CPU_ISA", environ) != "auto":
        return []
    order = [*cpuisa.DETECT_ORDER, "default"]
    isa = key.inputs.get("cpu_isa")
    lower = order[order.index(isa) + 1 :] if isa in order else []
    return [
        binkey.Key({**key.inputs, "cpu_isa": other}, key.compiler, key.files) for other in lower
    ]


def _read_info(source: Path) -> dict[str, Any]:
    if source.is_dir():
        return json.loads((source / "_build_info.json").read_text())
    return wheelcheck.read_build_info(source)


def compiler_of(info: Mapping[str, Any]) -> str:
    """The compiler a build used, as its build info records it (CMake's id and version)."""
    parts = [str(info.get("compiler") or "unknown compiler")]
    if info.get("cuda_version"):
        parts.append(f"CUDA {info['cuda_version']}")
    if info.get("hip_version"):
        parts.append(f"HIP {info['hip_version']}")
    return "; ".join(parts)


def store_build(
    key: binkey.Key,
    source: Path,
    log: Callable[[str], None],
    store: binstore.Store | None = None,
    root: Path = ROOT,
) -> binstore.Entry | None:
    """Stores a build's binaries under its key: `source` is a wheel, or the vllm/
    directory of an editable build's install tree. Never fails the build."""
    store = store or binstore.Store.default(log)
    try:
        info = _read_info(source)
        files_now = binkey.files_digest(root)[0]
    except (DevkitError, OSError, ValueError) as exc:
        log(f"warning: binaries not stored ({exc})")
        return None
    if files_now != key.inputs["files"]:
        log("binaries not stored: the sources changed while they were being built")
        return None
    build = binkey.Key(key.inputs, compiler_of(info), key.files)
    manifest = {
        "digest": build.digest,
        "inputs": build.inputs,
        "compiler": build.compiler,
        "commit": info.get("git_commit"),
        "target": info.get("target"),
    }
    with tempfile.TemporaryDirectory(prefix="vllm-binaries-") as tmp:
        try:
            if source.is_dir():
                payload = binstore.binaries_zip(source, Path(tmp) / "binaries.zip")
                name = f"vllm-binaries-{build.short}.zip"
            else:
                payload, name = source, source.name
        except (DevkitError, OSError) as exc:
            log(f"warning: binaries not stored ({exc})")
            return None
        entry = store.put(build.build_id, payload, manifest, name)
    if entry is not None:
        log(f"binaries stored under key {build.short} in {store.root}")
    return entry


def _entry_wheel(
    index: str, where: str, variant: str, meta: Mapping[str, Any], origin: str
) -> wheelindex.Wheel:
    """The wheel an index entry's metadata names, at its place in the index."""
    location = locations.join(index, *where.split("/"), variant, meta["wheel"])
    return wheelindex.Wheel(location, meta["sha256"], origin)


def _index_wheel(
    index: str, where: str, variant: str, origin: str
) -> tuple[wheelindex.Wheel, str | None] | None:
    """An index entry's wheel and the binary key it was published with (None: not
    recorded), from one read of its metadata; None when the index has no such entry."""
    meta = wheelindex.read_metadata(index, where, variant)
    if meta is None:
        return None
    return _entry_wheel(index, where, variant, meta, origin), _published_key(meta)


@dataclass(frozen=True)
class Hit:
    """Binaries `find` found, not fetched: a local store's entry, or the index's entry."""

    key: binkey.Key  # the key they were found by: the checkout's, or a lower-ISA one of it
    entry: binstore.Entry | None = None  # in the local store
    meta: Mapping[str, Any] | None = None  # else the index's entry, with this metadata


def find(
    key: binkey.Key,
    variant: str,
    store: binstore.Store,
    index: str | None,
    environ: Mapping[str, str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Hit | None:
    """Where binaries for `key` (or a lower-ISA key of it) are: the local store first, then
    `index` (wheelindex.default_index; None: none) by key; None when neither has them
    (each miss said to `log`). Fetches nothing."""
    candidates = [key, *fallback_keys(key, environ)]
    for candidate in candidates:
        entry = store.find(candidate.digest)  # a digest mismatch: refused (DigestMismatch)
        if entry is not None:
            return Hit(candidate, entry=entry)
    log(f"key {key.short}: not in the local binary store ({store.root})")

    if index:
        for candidate in candidates:
            meta = wheelindex.read_metadata(index, f"{KEYS}/{candidate.digest}", variant)
            if meta is not None:
                return Hit(candidate, meta=meta)
        log(f"key {key.short}: not in {index}")
    return None


def lookup(
    target: targets.Target,
    key: binkey.Key,
    log: Callable[[str], None],
    store: binstore.Store | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path = ROOT,
) -> Found | None:
    """Binaries for `key`, from the store, then the index; None when nothing has them."""
    store = store or binstore.Store.default(log)
    variant = target.version_suffix
    index = wheelindex.default_index(environ, root)
    hit = find(key, variant, store, index, environ, log)
    if hit is not None:
        if hit.entry is not None:
            compiler = hit.entry.manifest["compiler"]
            origin = f"the local binary store (key {hit.key.short}, built with {compiler})"
            sha256 = hit.entry.manifest["sha256"]
            wheel = wheelindex.Wheel(str(hit.entry.payload), sha256, origin)
            _say_isa(hit.key, key, log)
            return Found(wheel, by_key=True)
        assert index is not None and hit.meta is not None
        where, origin = f"{KEYS}/{hit.key.digest}", f"index {index} by key {hit.key.short}"
        found = _entry_wheel(index, where, variant, hit.meta, origin)
        _say_isa(hit.key, key, log)
        return Found(_keep(found, hit.key, store, log), by_key=True)

    if index:
        commit = envs.get("VLLM_PRECOMPILED_WHEEL_COMMIT", environ) or wheelindex.merge_base(root)
        if commit:
            legacy = _index_wheel(index, commit, variant, f"index {index} at {commit[:12]}")
            if legacy is not None:
                wheel, published = legacy
                if published in (None, key.digest):
                    return Found(wheel, by_key=published == key.digest)
    if envs.get("VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL", environ):
        if not index:
            raise DevkitError(
                "VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL=1 needs an index; set "
                f"{wheelindex.INDEX_HINT.removeprefix('set ')}"
            )
        nightly = _index_wheel(index, wheelindex.NIGHTLY, variant, f"index {index}, nightly")
        if nightly is None:
            raise DevkitError(f"{index} has no {variant} nightly; publish one or unset the switch")
        wheel, published = nightly
        if published != key.digest:
            log(
                f"warning: VLLM_TEST_USE_PRECOMPILED_NIGHTLY_WHEEL=1: the nightly's key "
                f"{(published or 'unknown')[:16]} is not this checkout's {key.short}: its "
                "binaries are not built from your csrc/ (taken on purpose)"
            )
        return Found(wheel, by_key=published == key.digest)
    return None


def _say_isa(taken: binkey.Key, wanted: binkey.Key, log: Callable[[str], None]) -> None:
    if taken.digest != wanted.digest:
        log(
            f"taking the {taken.inputs['cpu_isa']} build of these sources (VLLM_CPU_ISA=auto: "
            f"this CPU runs it; none for {wanted.inputs['cpu_isa']} was found)"
        )


def _published_key(meta: Mapping[str, Any]) -> str | None:
    value = meta.get("binary_key")
    return value if isinstance(value, str) else None


def _keep(
    wheel: wheelindex.Wheel, key: binkey.Key, store: binstore.Store, log: Callable[[str], None]
) -> wheelindex.Wheel:
    """An index's wheel for `key`, fetched (checked by sha256) and kept in the local store:
    the next checkout finds it there."""
    path = precompiled.fetch(wheel)
    entry = store_build(key, path, log, store)
    if entry is None:
        return wheelindex.Wheel(str(path), wheel.sha256, wheel.origin)
    return wheelindex.Wheel(str(entry.payload), entry.manifest["sha256"], wheel.origin)
