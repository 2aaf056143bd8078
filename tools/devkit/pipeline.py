"""The steps of a developer path, shared by every target.

    sources -> venv -> torch -> resources -> build -> verify -> summary

Each step prints what it does and why; a failure is a DevkitError with one
line that says what to do. noxfile.py calls these with a target name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError, envs, resources, sources, targets, toolchain
from devkit.envs import ROOT

# The ops every build must register, by library.
EXPECTED_OPS = {
    "_C": [
        "silu_and_mul",
        "gelu_and_mul",
        "gelu_tanh_and_mul",
        "rms_norm",
        "fused_add_rms_norm",
        "rotary_embedding",
    ],
    "_C_cache_ops": ["reshape_and_cache"],
}

SMOKE_CHECK = f"""
import json, torch, vllm._C, vllm._custom_ops
missing = [f"{{lib}}.{{op}}" for lib, ops in {EXPECTED_OPS!r}.items()
           for op in ops if not hasattr(getattr(torch.ops, lib), op)]
print(json.dumps({{"missing": missing, "so": vllm._C.__file__}}))
"""


def say(message: str) -> None:
    print(f"[vllm] {message}", flush=True)


def run(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    capture: bool = False,
    label: str | None = None,
) -> str:
    """Runs a command, echoed first (or its label); a failure becomes one DevkitError line."""
    print("$ " + (label or shlex.join(str(c) for c in cmd)), flush=True)
    result = subprocess.run(
        [str(c) for c in cmd],
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    if result.returncode != 0:
        raise DevkitError(
            f"`{Path(cmd[0]).name} {' '.join(map(str, cmd[1:3]))} ...` failed with exit "
            f"code {result.returncode}; its output is above"
        )
    return result.stdout or ""


def venv_dir(target: str) -> Path:
    """The venv of a target, shared by its build and test sessions."""
    return ROOT / f".venv-{target}"


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the venv uses the interpreter running nox
    env.pop("VIRTUAL_ENV", None)
    return env


def find_uv() -> str:
    uv = toolchain.find_tool("uv") or shutil.which("uv")
    if not uv:
        raise DevkitError("uv is not installed; run `pip install uv` (README's Quickstart)")
    return uv


def ninja_outputs(build_dir: Path, since_ns: int = 0) -> set[str]:
    """Object files in the build's .ninja_log, only those written after since_ns if given."""
    log = build_dir / ".ninja_log"
    outputs: set[str] = set()
    if not log.is_file():
        return outputs
    for line in log.read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 5 and parts[3].endswith(".o") and int(parts[2]) >= since_ns:
            outputs.add(parts[3])
    return outputs


@dataclass
class Env:
    """A target's venv, set up: what later steps need to know about it."""

    target: targets.Target
    path: Path
    python: Path
    torch: targets.TorchInfo
    sources: sources.TorchSources
    uv: str

    def uv_pip(self, *args: str) -> list[str]:
        return [self.uv, "pip", "install", "-p", str(self.python), *args]


def prepare_env(target_name: str) -> Env:
    """Venv with the build requirements and the target's torch, checked."""
    envs.check_all()
    target = targets.get_target(target_name)
    uv = find_uv()
    # Decide where torch comes from before anything is created or downloaded.
    torch_sources = sources.choose_torch_sources(target, sources.read_pip_sources())
    say(torch_sources.note)
    path = venv_dir(target.name)
    python = path / "bin" / "python"
    if not python.exists():
        run([uv, "venv", "--python", sys.executable, str(path)], env=uv_env())
    run(
        [
            uv,
            "pip",
            "install",
            "-p",
            str(python),
            *torch_sources.uv_args(),
            "-r",
            str(ROOT / "requirements" / "build.txt"),
            "-r",
            str(target.requirements_file),
            target.torch_spec,
        ],
        env=uv_env(),
    )
    out = run(
        [str(python), "-c", targets.PROBE_TORCH],
        capture=True,
        label=f"{python.relative_to(ROOT)} -c <read torch's version>",
    )
    found = json.loads(out.strip().splitlines()[-1])
    if found is None:
        raise DevkitError(
            f"torch is not installed in {path.relative_to(ROOT)}; delete it and rerun"
        )
    info = targets.TorchInfo(**found)
    targets.check_torch(target, info)
    say(f"torch {info.version} ({info.flavour}) in {path.relative_to(ROOT)}")
    return Env(target, path, python, info, torch_sources, uv)


def build(env: Env, extra_args: Sequence[str] = ()) -> str:
    """Editable, no-isolation install of the package (incremental); returns the summary."""
    started = time.monotonic()
    started_ns = time.time_ns()
    plan = resources.plan_for_this_machine(env.target)
    say(plan.reason)
    launcher = toolchain.compiler_launcher(bin_dir=env.python.parent)
    say(f"compiler cache: {launcher or 'none (set VLLM_COMPILER_CACHE=auto)'}")
    before = toolchain.cache_stats(launcher)

    build_env = uv_env()
    build_env.update(VLLM_TARGET_DEVICE=env.target.name, MAX_JOBS=str(plan.jobs))
    if plan.nvcc_threads is not None:
        build_env["NVCC_THREADS"] = str(plan.nvcc_threads)
    # The same command a contributor can type in the activated venv.
    run(
        env.uv_pip(*env.sources.uv_args(), "--no-build-isolation", *extra_args, "-e", str(ROOT)),
        env=build_env,
    )

    smoke_check(env)

    build_dir = targets.build_dir(
        ROOT / envs.get("VLLM_BUILD_DIR"),
        env.target.name,
        env.torch.version,
        f"cp{sys.version_info.major}{sys.version_info.minor}",
    )
    compiled = len(ninja_outputs(build_dir, started_ns))
    total = len(ninja_outputs(build_dir))
    after = toolchain.cache_stats(launcher)
    cache = (after - before).describe() if before and after else "cache hits unknown"
    return (
        f"built {env.target.name} in {time.monotonic() - started:.1f}s: "
        f"compiled {compiled}/{total} translation units ({cache}); {plan.reason}; "
        f"venv {env.path.relative_to(ROOT)}"
    )


def _extension_stamp(env: Env) -> str | None:
    """Identifies the installed extension binary by path and content.

    Every editable install rewrites the file, so its mtime changes even when
    ninja rebuilt nothing; its bytes don't.
    """
    for so in sorted(env.path.glob("lib/python*/site-packages/vllm/_C*.so")):
        return f"{so} {hashlib.sha256(so.read_bytes()).hexdigest()}"
    return None


def smoke_check(env: Env) -> None:
    """Import the extension with torch and check every op is registered.

    Importing torch takes seconds, so a binary that already passed (same
    path and bytes, recorded in the venv) is not checked again.
    """
    stamp_file = env.path / ".vllm-smoke-checked"
    stamp = _extension_stamp(env)
    if stamp and stamp_file.is_file() and stamp_file.read_text() == stamp:
        say("smoke check: passed before, and the extension is unchanged")
        return
    out = run(
        [str(env.python), "-c", SMOKE_CHECK],
        capture=True,
        label=f"{env.python.relative_to(ROOT)} -c <import vllm._C, check the ops>",
    )
    smoke = json.loads(out.strip().splitlines()[-1])
    if smoke["missing"]:
        raise DevkitError(
            f"the build imported but lacks ops {', '.join(smoke['missing'])}; "
            "check csrc/*/torch_bindings.cpp registers them"
        )
    say(f"smoke check: {sum(map(len, EXPECTED_OPS.values()))} ops registered by {smoke['so']}")
    stamp_file.write_text(_extension_stamp(env) or "")


def install_test_requirements(env: Env) -> None:
    run(
        env.uv_pip(*env.sources.uv_args(), "-r", str(ROOT / "requirements" / "test.txt")),
        env=uv_env(),
    )
