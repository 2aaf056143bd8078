"""The steps of a developer path, shared by every target.

    sources -> venv -> torch -> resources -> build -> verify -> summary

Each step prints what it does and why; a failure is a DevkitError with one
line that says what to do. noxfile.py calls these with a target name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devkit import (
    DevkitError,
    abi_audit,
    binaries,
    binkey,
    cmakecache,
    compiler_cache,
    cuda,
    dist,
    envs,
    layout,
    lock,
    metadata,
    optable,
    precompiled,
    procs,
    progress,
    resources,
    rocm,
    sources,
    targets,
    toolchain,
    venv,
)
from devkit import plan as plan_module
from devkit.envs import ROOT
from devkit.options import Options
from devkit.plan import BuildPlan

# The ops every build must register, by library (the op table's).
EXPECTED_OPS = optable.expected_ops()

# What the build backend itself imports: all a precompiled install needs.
BACKEND_PACKAGES = ("scikit-build-core", "packaging", "setuptools-scm")

# Run in the venv with the dispatch key as argv[1]; prints JSON.
SMOKE_CHECK = f"""
import json, sys, torch, vllm._C, vllm._custom_ops
key = sys.argv[1]
missing = [f"{{lib}}::{{op}}" for lib, ops in {EXPECTED_OPS!r}.items() for op in ops
           if not hasattr(getattr(torch.ops, lib), op)
           or not torch._C._dispatch_has_kernel_for_dispatch_key(f"{{lib}}::{{op}}", key)]
print(json.dumps({{"missing": missing, "so": vllm._C.__file__}}))
"""


def say(message: str) -> None:
    print(f"[vllm] {message}", flush=True)


# uv's way of saying which URL failed, and why (its last "cause:" line).
_UV_FETCH = re.compile(r"Failed to fetch: `?(\S+?)`?$", re.M)
_UV_CAUSE = re.compile(r"^\s*cause: (.+)$", re.M)


def uv_network_error(stderr: str) -> str | None:
    """One line naming the URL uv couldn't fetch, from its error output; None if none."""
    fetch = _UV_FETCH.search(stderr)
    if not fetch:
        return None
    causes = _UV_CAUSE.findall(stderr)
    why = causes[-1] if causes else "failed"
    if "timed out" in why:
        why = f"no answer within UV_HTTP_TIMEOUT={envs.get('UV_HTTP_TIMEOUT')} s, retried"
    return (
        f"uv couldn't fetch {fetch[1]} ({why}); fix or remove that index (pip's config, "
        "PIP_EXTRA_INDEX_URL, VLLM_TORCH_INDEX_URL) or its proxy, or set UV_OFFLINE=1 to "
        "install from uv's cache"
    )


def run(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    capture: bool = False,
    label: str | None = None,
    network: bool = False,
) -> str:
    """Runs a command, echoed first (or its label); a failure becomes one DevkitError line.

    `network`: a uv step that fetches; a fetch that fails is named in that line.
    """
    step = label or shlex.join(str(c) for c in cmd)
    print("$ " + step, flush=True)
    try:
        result = procs.run(cmd, env=env, capture=capture, step=step, tee_stderr=network)
    except KeyboardInterrupt:
        raise procs.Interrupted("SIGINT (Ctrl-C)", step) from None
    if result.returncode != 0 and network and uv_network_error(result.stderr or ""):
        raise DevkitError(uv_network_error(result.stderr or ""))
    if result.returncode != 0:
        what = label or f"{Path(cmd[0]).name} {' '.join(map(str, cmd[1:3]))} ..."
        raise DevkitError(
            f"`{what}` failed with exit code {result.returncode}; its output is above"
        )
    return result.stdout or ""


def show(path: Path) -> str:
    """A path as a person wants to read it: relative to the checkout when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def copy_checkout(dest: Path) -> Path:
    """Copies what a clone of this checkout would hold (tracked, and untracked
    but not ignored, files) to dest: a clean place to run sessions in."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def venv_dir(target: str) -> Path:
    """The venv of a target, shared by its build and test sessions."""
    return layout.venv_dir(target)


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the venv uses the interpreter running nox
    # A hanging index costs one bounded wait, not uv's 30 s x 4 tries.
    env["UV_HTTP_TIMEOUT"] = str(envs.get("UV_HTTP_TIMEOUT"))
    env["UV_HTTP_RETRIES"] = str(envs.get("UV_HTTP_RETRIES"))
    env.pop("VIRTUAL_ENV", None)
    return env


def use_utf8_for_a_non_ascii_checkout() -> None:
    """Python 3.11 reads .pth files in the locale's encoding (UTF-8 mode or not), and the
    editable install's .pth names the checkout: under LC_ALL=C, with a non-ASCII path, the
    venv's Python can't start. The session's processes get a UTF-8 locale, with a word."""
    import codecs
    import locale

    getencoding = getattr(locale, "getencoding", lambda: locale.getpreferredencoding(False))
    encoding = codecs.lookup(getencoding()).name
    if str(ROOT).isascii() or encoding == "utf-8":
        return
    os.environ["LC_ALL"] = "C.UTF-8"
    say(
        f"the checkout's path {ROOT} is not ASCII and the locale's encoding is {encoding}: "
        "the session runs with LC_ALL=C.UTF-8; set it too to use the venv's Python yourself"
    )


def lock_file(path: Path) -> Path:
    """The lock of a venv: a file beside it, as the venv may not exist yet (devkit.lock)."""
    return path.with_name(path.name + ".lock")


def venv_lock(path: Path, what: str):
    """One session at a time sets up or builds into a venv; `what` it does."""
    return lock.hold(lock_file(path), what, say, (ROOT,))


@contextlib.contextmanager
def build_lock(env: Env):
    """One build per build directory at a time, and per venv: the build installs into
    it, and a run killed during the build leaves processes that use both (their groups
    are recorded in both locks, so the next run stops them before it touches either)."""
    with contextlib.ExitStack() as stack:
        what = f"the build in {show(env.build_dir)}"
        if not env.options.use_existing_torch:  # not our venv: no lock file beside it
            stack.enter_context(venv_lock(env.path, what))
        inside = (ROOT, env.build_dir)
        stack.enter_context(lock.hold(env.build_dir / "build.lock", what, say, inside))
        yield


def probe_torch(python: Path) -> targets.TorchInfo | None:
    """The torch of the environment of `python` (read, not imported); None if absent."""
    out = run(
        [str(python), "-c", targets.PROBE_TORCH],
        capture=True,
        label=f"{show(python)} -c <read torch's version>",
    )
    found = json.loads(out.strip().splitlines()[-1])
    return targets.TorchInfo(**found) if found else None


def find_uv() -> str:
    uv = toolchain.find_tool("uv")
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


def ninja_objects(build_dir: Path) -> set[str]:
    """Object files the current build.ninja makes (the log also remembers removed ones)."""
    build_file = build_dir / "build.ninja"
    if not build_file.is_file():
        return set()
    return set(re.findall(r"^build (\S+\.o):", build_file.read_text(), re.M))


@dataclass
class Env:
    """A target's venv, set up, and the build plan resolved for it."""

    target: targets.Target
    path: Path
    python: Path
    torch: targets.TorchInfo
    uv_source_args: list[str]  # where uv may take packages from
    options: Options
    plan: BuildPlan

    def uv_pip(self, *args: str) -> list[str]:
        return [find_uv(), "pip", "install", "-p", str(self.python), *self.uv_source_args, *args]

    @property
    def build_dir(self) -> Path:
        return self.plan.build_dir


def _existing_torch(target: targets.Target) -> targets.TorchInfo:
    info = targets.read_torch_info()
    if info is None or info.flavour != target.name:
        what = f"torch {info.version} ({info.flavour})" if info else "no torch"
        raise DevkitError(
            f"--use-existing-torch: {sys.executable} has {what}; install a {target.name} "
            "torch there, or drop --use-existing-torch to get the pinned one"
        )
    return info


# Run in the venv with the requirement lines as argv[1]; prints those it doesn't satisfy
# (versions and markers checked with the venv's `packaging`), or null without packaging.
_UNSATISFIED = """
import importlib.metadata as m, json, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    print("null"); sys.exit()
bad = []
for line in json.loads(sys.argv[1]):
    req = Requirement(line)
    if req.marker and not req.marker.evaluate():
        continue
    try:
        found = m.version(req.name)
    except m.PackageNotFoundError:
        bad.append(line); continue
    if not req.specifier.contains(found, prereleases=True):
        bad.append(line)
print(json.dumps(bad))
"""


def unsatisfied(python: Path, requirements: list[str]) -> list[str]:
    """The requirements the venv doesn't satisfy, versions included (all, if unsure)."""
    out = run(
        [str(python), "-c", _UNSATISFIED, json.dumps(requirements)],
        capture=True,
        label="<which requirements the venv lacks>",
    )
    found = json.loads(out.strip().splitlines()[-1])
    return requirements if found is None else found


def _missing(python: Path, requirements: list[str]) -> list[str]:
    """The requirements whose distribution the venv lacks (versions not enforced)."""
    names = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]: line for line in requirements}
    script = (
        "import importlib.metadata as m, json, sys\n"
        "def has(n):\n"
        "    try: m.version(n); return True\n"
        "    except m.PackageNotFoundError: return False\n"
        f"print(json.dumps([n for n in {sorted(names)!r} if not has(n)]))"
    )
    out = run([str(python), "-c", script], capture=True, label="<which build tools are missing>")
    return [names[name] for name in json.loads(out.strip().splitlines()[-1])]


def prepare_env(
    target_name: str,
    options: Options = Options(),  # noqa: B008 (frozen)
    venv_name: str = "",
    precompiled: bool = False,
    torch_pin: targets.Target | None = None,
) -> Env:
    """Venv with the build requirements and the target's torch, checked, and its build plan.

    `torch_pin`: another target whose pinned torch the venv gets instead (the
    cross-version tests: a CPU venv with the CUDA target's torch 2.14.1); only
    for a target on the stable ABI, whose binary serves any torch from its floor.

    The venv is .venv-<target>, or .venv-<venv_name> for a session that needs
    its own (with a build directory of its own too: see targets.build_dir).
    A `precompiled` env compiles nothing: no toolchain is checked, and of the
    build tools only the backend's own packages are installed.

    Every check that can fail fast (variables, CUDA arch and nvcc, where
    torch comes from) runs before anything is created or downloaded: the request
    is checked against the target's pin (plan.preflight), and the plan resolved
    once, against the venv's torch, reusing that check.
    """
    procs.install_handlers()  # SIGTERM, SIGHUP: one line, and the build's processes stopped
    use_utf8_for_a_non_ascii_checkout()
    target = targets.get_target(target_name)
    pinned_by = target
    if torch_pin is not None and torch_pin.name != target.name:
        target, pinned_by = _with_torch_of(target, torch_pin), torch_pin
    existing = _existing_torch(target) if options.use_existing_torch else None
    request = plan_module.Request(
        target=target.name,
        arch=options.arch,
        venv_name=venv_name,
        use_existing_torch=options.use_existing_torch,
        precompiled=precompiled,
    )
    checked = plan_module.preflight(request, existing or plan_module.expected_torch(target))
    for line in checked.toolchain_lines():
        say(line)
    uv = find_uv()
    pip = sources.read_pip_sources()
    build_reqs = [
        *metadata.requirement_lines(ROOT / "requirements" / "build.txt"),
        *target.build_tools,
    ]
    if precompiled:
        build_reqs = [r for r in build_reqs if r.startswith(BACKEND_PACKAGES)]

    if existing:
        # The interpreter's own environment (an NGC container's, a GPU image's
        # venv): a venv of its own could not see that torch.
        say(f"using the existing torch {existing.version} of {sys.executable}")
        source_args = pip.uv_args()
        path, python = Path(sys.prefix), Path(sys.executable)
        missing = _missing(python, build_reqs)
        if missing:
            run([uv, "pip", "install", "-p", str(python), *source_args, *missing], env=uv_env())
    else:
        path = venv_dir(venv_name or target.name)
        with venv_lock(path, f"the setup of {show(path)}"):
            python = venv.usable(path, ROOT, say)
            wanted = [
                *build_reqs,
                *[
                    line
                    for line in metadata.requirement_lines(target.requirements_file)
                    if pinned_by is target or not re.match(r"torch\b", line)
                ],
                target.torch_spec,
            ]
            todo = unsatisfied(python, wanted) if python else wanted
            reinstall = []
            damaged = venv.missing_files(path, "torch") if python else []
            if damaged:
                say(
                    f"torch in {show(path)} lacks {damaged[0]} ({len(damaged)} of its "
                    "libraries): reinstalling it"
                )
                reinstall = ["--reinstall-package", "torch"]
            # Sources are probed (seconds) only when something is to be installed,
            # before the venv is made: an unreachable index creates nothing.
            torch_sources = sources.choose_torch_sources(
                pinned_by, pip, probe=bool(todo or damaged)
            )
            say(torch_sources.note)
            source_args = torch_sources.uv_args()
            if python is None:
                python = venv.ensure(path, ROOT, uv, run, uv_env(), say)
            venv.check_uv_target(python, path, uv, uv_env())
            if todo or damaged:
                cmd = [uv, "pip", "install", "-p", str(python), *source_args, *reinstall, *wanted]
                run(cmd, env=uv_env(), network=True)
            else:
                say(f"{show(path)} has every build requirement: nothing to install, no network")

    info = probe_torch(python)
    if info is None:
        raise DevkitError(f"torch is not installed in {show(path)}; delete it and rerun")
    if not existing:
        targets.check_torch(pinned_by, info)
    say(f"torch {info.version} ({info.flavour}) in {show(path)}")
    # The plan, once: the venv's torch (its version names the build dir) and tools.
    request = dataclasses.replace(request, python=str(python), bin_dir=str(python.parent))
    build_plan = plan_module.resolve(request, info, checked=checked)
    return Env(target, path, python, info, source_args, options, build_plan)


def _with_torch_of(target: targets.Target, pin: targets.Target) -> targets.Target:
    """`target`'s row with `pin`'s torch (version, local tag, index); stable-ABI targets only."""
    if not target.torch_floor:
        raise DevkitError(
            f"the {target.name} target is built on torch's full C++ API, for its own pin "
            f"{target.torch_spec} only: it can't be built or tested against {pin.torch_spec}"
        )
    return dataclasses.replace(
        target,
        torch_version=pin.torch_version,
        torch_local=pin.torch_local,
        torch_index=pin.torch_index,
        index_strategy=pin.index_strategy,
    )


def backend_env(env: Env) -> tuple[dict[str, str], list[str]]:
    """The environment and the config settings that hand the plan to the build backend."""
    plan_file = env.plan.write()
    if not env.plan.precompiled:
        # Here, where it shows; the backend does it only for builds by hand.
        cmakecache.follow_cmake_args(env.build_dir, envs.get("CMAKE_ARGS") or "", say)
    return env.plan.compile_environ(uv_env()), ["-C", f"{plan_module.CONFIG_KEY}={plan_file}"]


def build(env: Env, uv_args: Sequence[str] = ()) -> str:
    """Editable, no-isolation install of the package (incremental); returns the summary.

    `uv_args` go to `uv pip install` (e.g. -v to see the compiler output).
    """
    started = time.monotonic()
    started_ns = time.time_ns()
    say(env.plan.jobs.reason)
    # --no-deps: prepare_env installed them (or left an existing torch alone), so a
    # rebuild resolves nothing and needs no network.
    extra = [*uv_args, "--no-deps"]
    key = binaries.key_of_build(env.plan, say)  # what the binaries are built from, before
    # The store is checked first: a dead one is one warning and the local cache.
    with build_lock(env), compiler_cache.serve(env.plan.compiler_cache, say) as served:
        env.plan = dataclasses.replace(env.plan, compiler_cache=served.cache)
        cache = served.cache
        say(f"compiler cache: {cache.describe() if cache else 'none (VLLM_COMPILER_CACHE=auto)'}")
        environ, settings = backend_env(env)
        ran_before = dist.compiles(cache.launcher, environ) if cache and cache.dist else None
        # The command a contributor can type in the activated venv, plus the plan.
        cmd = env.uv_pip("--no-build-isolation", *settings, *extra, "-e", str(ROOT))
        screen = dist.JobFailures(progress.Screen()) if cache and cache.dist else None
        try:
            followed = progress.run(cmd, environ, env.plan.build_dir, env.plan.jobs.jobs, screen)
        except DevkitError:
            if not (cache and screen and screen.failed):
                raise
            # A build server failed jobs (not the code): the rest builds here, incrementally.
            say(
                f"warning: the compile cluster {cache.dist} failed {len(screen.failed)} job(s) "
                f"({screen.failed[0]}); building again on this machine only"
            )
            cache = compiler_cache.ready(compiler_cache.without_dist(cache), say)
            jobs = resources.plan_for_this_machine(env.target)
            env.plan = dataclasses.replace(env.plan, compiler_cache=cache, jobs=jobs)
            served.cache, served.restarted, ran_before = cache, True, None
            environ, settings = backend_env(env)
            cmd = env.uv_pip("--no-build-isolation", *settings, *extra, "-e", str(ROOT))
            followed = progress.run(cmd, environ, env.plan.build_dir, env.plan.jobs.jobs)
        if followed.summary():
            say(followed.summary())
        lookups = served.lookups()
        ran = dist.compiles(cache.launcher, environ) if ran_before and cache else None
        cluster_lines = []
        if cache and cache.dist and ran_before:
            done = ran - ran_before if ran else None
            compiled_now = len(
                ninja_outputs(env.build_dir, started_ns) & ninja_objects(env.build_dir)
            )
            cluster_lines = dist.summary(cache.dist, done, compiled_now)
        for line in cluster_lines[1:]:
            say(line)  # compiles that came back from the cluster
        smoke_check(env)
        if key and env.plan.install_dir:
            binaries.store_build(key, env.plan.install_dir / "vllm", say)
        # Read while the lock is held: a clean waiting for it removes the build dir.
        objects = ninja_objects(env.build_dir)
        compiled = len(ninja_outputs(env.build_dir, started_ns) & objects)

    total = len(objects)
    kind = f"{served.cache.kind} " if served.cache else ""
    stats = f"{kind}{lookups.describe()}" if lookups else "cache hits unknown"
    return (
        f"built {env.target.name} in {time.monotonic() - started:.1f}s: "
        f"compiled {compiled}/{total} translation units ({stats}); "
        + "".join(f"{line}; " for line in cluster_lines[:1])
        + f"{env.plan.jobs.reason}; "
        f"venv {show(env.path)}"
    )


def _extension_stamp(env: Env) -> str | None:
    """Identifies the installed extension binary by path and content.

    Every editable install rewrites the file, so its mtime changes even when
    ninja rebuilt nothing; its bytes don't.
    """
    installed = env.plan.install_dir.glob("vllm/_C*.so") if env.plan.install_dir else []
    for so in [*sorted(installed), *sorted(env.path.glob("lib/python*/site-packages/vllm/_C*.so"))]:
        return f"{so} {hashlib.sha256(so.read_bytes()).hexdigest()}"
    return None


def smoke_check(env: Env) -> None:
    """Import the extension with torch and check every op is registered.

    Importing torch takes seconds, so a binary that already passed (same
    path and bytes, recorded in the venv) is not checked again.
    """
    stamp_file = env.build_dir / "smoke-checked"
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp = _extension_stamp(env)
    if stamp and stamp_file.is_file() and stamp_file.read_text() == stamp:
        say("smoke check: passed before, and the extension is unchanged")
        return
    out = run(
        [str(env.python), "-c", SMOKE_CHECK, env.target.dispatch_key],
        capture=True,
        label=f"{show(env.python)} -c <import vllm._C, check the ops>",
    )
    smoke = json.loads(out.strip().splitlines()[-1])
    if smoke["missing"]:
        raise DevkitError(
            f"the build imported but lacks ops {', '.join(smoke['missing'])}; "
            "check csrc/torch_bindings.cpp registers them"
        )
    private = toolchain.private_libstdcxx(Path(smoke["so"]))
    if private:
        raise DevkitError(
            f"{Path(smoke['so']).name} defines libstdc++ internals ({private[0]}, "
            f"{len(private)} in all): a static library linked a private libstdc++ into it, "
            "and its error messages will crash; see CONTRIBUTING.md's troubleshooting"
        )
    count = sum(map(len, EXPECTED_OPS.values()))
    say(f"smoke check: {count} ops with {env.target.dispatch_key} kernels in {smoke['so']}")
    if env.plan.precompiled:
        pass  # a prebuilt wheel's binary, audited by the build that made it
    elif env.target.torch_floor:
        exe = env.path / "bin" / "torch-abi-audit"
        say(abi_audit.audit(exe, Path(smoke["so"]), env.target.torch_floor))
    else:
        say(
            f"torch ABI: full C++ API ({env.target.name} stays off the stable ABI): "
            "the binary needs exactly the torch it was built against"
        )
    if env.plan.cuda:
        cuobjdump = cuda.find_cuobjdump(env.path, env.plan.cuda.home)
        if cuobjdump is None:
            say("cuobjdump not found (pip install nvidia-cuda-cuobjdump): machine code unchecked")
        else:
            say(cuda.check_machine_code(cuobjdump, Path(smoke["so"]), env.plan.cuda.arch))
    stamp_file.write_text(_extension_stamp(env) or "")


def install_test_requirements(env: Env) -> None:
    """requirements/test.txt; with an existing torch, only what the interpreter lacks."""
    test_txt = ROOT / "requirements" / "test.txt"
    if env.options.use_existing_torch:
        missing = _missing(env.python, metadata.requirement_lines(test_txt))
        if missing:
            run(env.uv_pip(*missing), env=uv_env())
    else:
        run(env.uv_pip("-r", str(test_txt)), env=uv_env())


def gpu_target() -> str | None:
    """The target of this machine's GPU: cuda (nvidia-smi), rocm (rocminfo), or None."""
    if cuda.local_gpu_arch():
        return "cuda"
    return "rocm" if rocm.local_gpu_arch() else None


def default_target() -> str:
    """The target of this machine: its GPU's, else cpu."""
    return gpu_target() or "cpu"


def build_wheel(env: Env, out_dir: Path = ROOT / "dist") -> Path:
    """A wheel of the package, built in the target's build directory; returns its path.

    `uv build` through the same backend as the editable install, so build
    info is recorded in it and the build directory stays incremental.
    """
    started = time.monotonic()
    say(env.plan.jobs.reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheel-", dir=out_dir))
    key = binaries.key_of_build(env.plan, say)
    try:
        with build_lock(env), compiler_cache.serve(env.plan.compiler_cache, say) as served:
            env.plan = dataclasses.replace(env.plan, compiler_cache=served.cache)
            environ, settings = backend_env(env)
            cmd = [find_uv(), "build", "--wheel", "--no-build-isolation", "--python"]
            cmd = [*cmd, str(env.python), *settings, "--out-dir", str(staging), str(ROOT)]
            followed = progress.run(cmd, environ, env.plan.build_dir, env.plan.jobs.jobs)
        if followed.summary():
            say(followed.summary())
        (built,) = staging.glob("*.whl")
        info = precompiled.read_build_info(built)  # a wheel without it can't be installed
        wheel = out_dir / built.name
        os.replace(built, wheel)
        if key:
            binaries.store_build(key, wheel, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(
        f"built {show(wheel)} in {time.monotonic() - started:.1f}s: torch {info['torch_version']}, "
        f"commit {(info.get('git_commit') or 'unknown')[:12]}"
    )
    return wheel


def install_precompiled(env: Env, found: binaries.Found | None = None) -> str:
    """Editable install whose binaries come from a prebuilt wheel; returns the summary.

    The wheel is located (or `found` by key), fetched and checked here, where its
    progress and problems show; the backend (VLLM_USE_PRECOMPILED=1) then stages
    the binaries from the local copy. No compiler runs.
    """
    started = time.monotonic()
    wheel, path, info = precompiled.prepare(
        env.target,
        env.torch,
        log=say,
        found=found.wheel if found else None,
        key_matches=bool(found and found.by_key),
    )
    with build_lock(env):
        environ, settings = backend_env(env)
        environ["VLLM_PRECOMPILED_WHEEL_LOCATION"] = str(path)  # the copy just checked
        # --no-deps: prepare_env has just installed them, torch checked; no resolve.
        uv_args = env.uv_pip("--no-build-isolation", *settings, "--no-deps", "-e", str(ROOT))
        run(uv_args, env=environ)
        smoke_check(env)
    return (
        f"installed {env.target.name} from {wheel.origin} in {time.monotonic() - started:.1f}s, "
        f"compiling nothing (torch {info['torch_version']}, commit "
        f"{(info.get('git_commit') or 'unknown')[:12]}); venv {show(env.path)}"
    )


def binary_key(env: Env) -> binkey.Key:
    """The key of what a build of `env` makes (its compiled inputs)."""
    return binkey.for_plan(env.plan)


def precompiled_env(target_name: str, options: Options, venv_name: str) -> tuple[Env, str]:
    """A venv whose binaries come from a prebuilt build, and the install's summary.

    A wheel named on purpose (VLLM_PRECOMPILED_WHEEL_LOCATION) is taken as it
    is; otherwise the binaries are looked up by the checkout's binary key (the
    local store, then the index: devkit.binaries), and where none has them the
    target is built once, here, and its binaries stored for every later checkout.
    """
    procs.install_handlers()  # SIGTERM while locating or downloading: one line too
    procs.resume_note = "a download starts again; nothing half-fetched is kept"
    given = f"VLLM_CACHE_ROOT={envs.get('VLLM_CACHE_ROOT')}"
    layout.check_dir(given, precompiled.cache_dir(), "VLLM_CACHE_ROOT")  # before any venv
    target = targets.get_target(target_name)
    if envs.get("VLLM_PRECOMPILED_WHEEL_LOCATION"):
        wheel = precompiled.locate(target)
        say(f"precompiled wheel: {wheel.name}, from {wheel.origin}")
        env = prepare_env(target_name, options, venv_name, precompiled=True)
        return env, install_precompiled(env)
    # Looked up before any venv is made or torch downloaded: the venv will hold the
    # target's pinned torch, which is what the key names.
    key = binaries.lookup_key(target, plan_module.expected_torch(target), options.arch)
    found = binaries.lookup(target, key, say)
    if found is None:
        found = build_once(target_name, options, key)
    env = prepare_env(target_name, options, venv_name, precompiled=True)
    return env, install_precompiled(env, found)


def build_once(target_name: str, options: Options, key: binkey.Key) -> binaries.Found:
    """No store or index has the key's binaries: build them (the target's own venv and
    build dir, as build-<target> does), which stores them; then take them from the store."""
    say(
        f"no prebuilt binaries for key {key.short} (the local store and the index lack it): "
        f"building {target_name} once, which stores them; every later checkout with the same "
        "compiled inputs takes them without a compiler"
    )
    started = time.monotonic()
    env = prepare_env(target_name, options)
    say(build(env))
    say(f"built once in {time.monotonic() - started:.1f}s")
    built_key = binary_key(env)
    if built_key.digest != key.digest:
        changed = binkey.describe_difference(built_key.inputs, key.inputs)
        raise DevkitError(
            f"the build's key {built_key.short} is not the lookup's {key.short} ({changed} "
            "differ): pass the same --arch and VLLM_CPU_ISA, or run build-"
            f"{target_name} and use its venv"
        )
    found = binaries.lookup(env.target, key, say)
    if found is None:
        raise DevkitError(
            "the build succeeded but its binaries could not be stored (see the warning "
            f"above); use its venv, {show(env.path)}, or free space and rerun"
        )
    return found
