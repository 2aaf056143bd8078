"""`nox -s doctor`: what a build would use, and what is wrong, one line each.

Every fact comes from the same devkit function the build calls, so the
report can't disagree with the build. A problem line says how to fix it; the
exit status is non-zero when the chosen target's build would fail.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.artifacts import wheelindex
from devkit.foundation import envs, files, layout, procs
from devkit.toolchains import (
    cache_server,
    compiler_cache,
    cuda,
    dist,
    options,
    plan,
    resources,
    sources,
    targets,
    toolchain,
)
from devkit.toolchains.targets import GIB


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fact(self, name: str, value: str) -> None:
        print(f"  {name:<22} {value}")

    def check(self, name: str, fn: Callable[[], Any], show: Callable[[Any], str] = str) -> Any:
        """Runs a devkit step; its DevkitError becomes a problem line."""
        try:
            value = fn()
        except DevkitError as exc:
            self.problems.append(str(exc))
            print(f"! {name:<22} {exc}")
            return None
        self.fact(name, show(value))
        return value


def _version(tool: str | None) -> str:
    if not tool:
        return "not found"
    out = procs.probe([tool, "--version"], timeout=30)
    if out is None:
        return f"{tool} (does not run)"
    first = (out.stdout or out.stderr).strip().splitlines()[:1]
    return f"{first[0] if first else '?'} ({tool})"


def _gpus() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    out = procs.probe([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out else []


def _binary_key(report: Report, found: plan.BuildPlan) -> None:
    """The key this checkout's binaries are stored and looked up by, what went into it,
    and whether the local store has them."""
    from devkit.artifacts import binkey, binstore

    try:
        compiler = binkey.compiler_identity(nvcc=str(found.cuda.nvcc) if found.cuda else None)
    except DevkitError as exc:
        compiler = None
        print(f"  {'compiler':<22} {exc}")
    key = report.check(
        "binary key",
        lambda: binkey.for_plan(found, compiler=compiler),
        lambda k: "\n".join(f"{'':<24} {line}" for line in k.describe()).lstrip(),
    )
    if key is None:
        return
    store = binstore.Store.default(log=lambda line: print(f"  {'':<22} {line}"))
    try:
        entry = store.find(key.digest)
    except DevkitError as exc:
        report.problems.append(str(exc))
        print(f"! {'binary store':<22} {exc}")
        return
    have = f"has key {key.short} ({entry.build_id[:16]}...)" if entry else "lacks this key"
    report.fact("binary store", f"{store.root}: {have}")
    index = wheelindex.default_index()
    report.fact("precompiled index", index or "none configured")


def diagnose(target_name: str, arch: str | None = None) -> int:
    report = Report()
    print(f"doctor: would `nox -s build-{target_name}` work here?")
    report.fact("python", f"{platform.python_version()} ({sys.executable})")
    report.check("environment variables", envs.check_all, lambda _: "valid")
    target = report.check("target", lambda: targets.get_target(target_name), lambda t: t.torch_spec)
    if target is None:
        return 1
    venv = layout.venv_dir(target.name)
    info = _torch_facts(report, target, venv)
    bin_dir = venv / "bin" if venv.exists() else None
    _machine_facts(report, target, bin_dir)
    # The plan the build would follow, from the same function the build calls.
    request = plan.Request(target.name, arch=arch, bin_dir=str(bin_dir) if bin_dir else None)
    found = report.check(
        "build plan",
        lambda: plan.resolve(request, info or plan.expected_torch(target)),
        lambda p: "\n".join(f"{'':<24} {line}" for line in p.describe()).lstrip(),
    )
    if found:
        _binary_key(report, found)
        _cache_facts(report, found)
    else:
        _cluster_fact(report)
    if report.problems:
        print(f"doctor: {len(report.problems)} problem(s) would stop build-{target.name}:")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    print(f"doctor: build-{target.name} should work here")
    return 0


def _torch_facts(report: Report, target: targets.Target, venv: Path) -> targets.TorchInfo | None:
    """The venv, its torch and where torch would come from."""
    report.fact("venv", files.show(venv) + ("" if venv.exists() else " (not made yet)"))
    info = (
        report.check(
            "torch in venv",
            lambda: targets.probe_torch(venv / "bin" / "python"),
            lambda i: i.version if i else "none",
        )
        if venv.exists()
        else None
    )
    if info:
        report.check(
            "torch flavour",
            lambda: targets.check_torch(target, info) or info,
            lambda i: f"{i.flavour}{', CUDA ' + i.cuda if i.cuda else ''}: the pin",
        )
    pip = sources.read_pip_sources()
    report.fact("pip mirrors", " ".join(pip.mirrors()) or "none")
    report.check(
        "torch source", lambda: sources.choose_torch_sources(target, pip), lambda s: s.note
    )
    return info


def _machine_facts(report: Report, target: targets.Target, bin_dir: Path | None) -> None:
    """GPUs, the build tools, cores and memory."""
    if target.cuda_version:
        report.fact("GPUs", "; ".join(_gpus()) or "none (nvidia-smi finds none)")
    for tool in ("cmake", "ninja", "ccache", "sccache"):
        report.fact(tool, _version(toolchain.find_tool(tool, bin_dir)))
    cores, memory = resources.usable_cores(), resources.available_memory()
    report.fact("cores, memory", f"{cores} cores, {memory / GIB:.1f} GiB available")


def _cache_facts(report: Report, found: plan.BuildPlan) -> None:
    """The compiler-cache store and the compile cluster answer; the arch fits the GPU."""
    cache = found.compiler_cache
    if cache and cache.remote:
        started = time.monotonic()
        error = cache_server.check_store(cache)
        took = f"{time.monotonic() - started:.1f}s"
        report.fact(
            "compiler-cache store",
            f"{compiler_cache.redact(cache.remote)} answers (sccache's startup check, {took})"
            if error is None
            else f"{compiler_cache.redact(cache.remote)} does NOT answer ({error}; {took}): "
            "builds warn and use the local cache",
        )
    _cluster_fact(report)
    local = cuda.local_gpu_arch() if found.cuda else None
    msg = arch_problem(found.cuda.arch, local) if found.cuda and local else None
    if msg:
        report.problems.append(msg)
        print(f"! {'arch vs GPU':<22} {msg}")


def _cluster_fact(report: Report) -> None:
    report.check(
        "compile cluster",
        dist.resolve,
        lambda c: dist.doctor_line(c) if c else "none (VLLM_COMPILER_DIST is unset)",
    )


def arch_problem(built: cuda.CudaArch, local: cuda.CudaArch) -> str | None:
    """The problem line when a build for `built` can't run on the local GPU (the
    precompiled check's rule, cuda.runs_on), else None."""
    if cuda.runs_on(built, local) is False:
        return f"arch {built} won't run on the local GPU ({local}); use --arch {local}"
    return None


def main(argv: list[str]) -> int:
    found = options.parse("doctor", argv)
    return diagnose(found.target or targets.default_target(), found.arch)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
