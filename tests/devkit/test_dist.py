"""Distributed compilation end to end: a real sccache-dist scheduler and build servers
on 127.0.0.1 (tools/devkit/commands/farm.py, the recipe CONTRIBUTING documents), started here
and stopped after, also when a test fails.

A copy of the checkout builds cold through two build servers, and the kernel tests
run on the result; then the faults, each a finished build and one line: a scheduler
that is not there, a wrong token, a cluster whose only server has no bubblewrap (it
never joins), one whose bubblewrap fails every compile, and build servers killed
mid-build. Build servers sandbox compiles on overlay mounts: they need root.
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from test_sessions import nox
from test_shared_cache import change, nox_environ

from devkit import DevkitError
from devkit.commands.farm import Farm, find_sccache_dist
from devkit.toolchains import dist, resources, targets
from devkit.toolchains.targets import GIB

SUMMARY = re.compile(
    r"built cpu in [\d.]+s: compiled (\d+)/(\d+) translation units \(sccache (?:cache: "
    r"(\d+) local hits, (\d+) remote hits, (\d+) misses|no compiler-cache lookups)\); "
    r"(?:cluster (\S+): (?:(\d+) compiler runs on the cluster, (\d+) here|compiler runs "
    r"unknown); )?MAX_JOBS="
)
WARNING = re.compile(r"^(?:\[vllm\] |nox > )?(warning: .*)$", re.M)


def needs_a_farm() -> None:
    try:
        find_sccache_dist()
    except DevkitError as exc:
        pytest.skip(str(exc))
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("build servers need root and bubblewrap (.ci/run installs bubblewrap)")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    needs_a_farm()
    with Farm(tmp_path_factory.mktemp("farm"), servers=2) as found:
        yield found


def dist_environ(farm: Farm, **more: str) -> dict[str, str]:
    environ = {"VLLM_COMPILER_DIST": farm.url}
    environ["VLLM_COMPILER_DIST_TOKEN_FILE"] = str(farm.token_file)
    return {**environ, **more}


def built(result: subprocess.CompletedProcess) -> dict:
    """The summary line's numbers; the cluster part is None when the build did not use it."""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    match = SUMMARY.search(result.stderr)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    compiled, total, local_hits, remote_hits, misses, url, remote, here = match.groups()
    return {
        "compiled": int(compiled),
        "total": int(total),
        "hits": None if misses is None else int(local_hits) + int(remote_hits),
        "misses": None if misses is None else int(misses),
        "cluster": url,
        "remote": None if remote is None else int(remote),
        "here": None if here is None else int(here),
    }


def warnings(result: subprocess.CompletedProcess) -> list[str]:
    return WARNING.findall(result.stdout + result.stderr)


def secrets_of(farm: Farm) -> list[str]:
    text = (farm.directory / "scheduler.toml").read_text()
    return [farm.token_file.read_text().strip(), *re.findall(r'secret_key = "(.+)"', text)]


def assert_nothing_secret(result: subprocess.CompletedProcess, farm: Farm) -> None:
    for secret in secrets_of(farm):
        assert secret not in result.stdout + result.stderr


# -- the setting, without a cluster -------------------------------------------------


def test_the_setting_is_checked_before_any_work(tmp_path):
    def resolve(**environ):
        return dist.resolve(environ)

    assert resolve() is None
    for url in ("10.0.0.5:10600", "ftp://sched:10600", "http://sched:10600/api", "http://sched"):
        with pytest.raises(DevkitError, match=r"DIST=.*(not a scheduler URL|no valid port)"):
            resolve(VLLM_COMPILER_DIST=url, VLLM_COMPILER_DIST_TOKEN="t")
    with pytest.raises(DevkitError, match="has a user or token in it") as caught:
        resolve(VLLM_COMPILER_DIST="http://me:s3cret@sched:10600")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(DevkitError, match="no token is: set VLLM_COMPILER_DIST_TOKEN_FILE"):
        resolve(VLLM_COMPILER_DIST="http://sched:10600")
    cluster = resolve(VLLM_COMPILER_DIST="https://sched:443/", VLLM_COMPILER_DIST_TOKEN=" t0k ")
    assert (cluster.url, cluster.token_from) == ("https://sched:443", "VLLM_COMPILER_DIST_TOKEN")
    assert cluster.token({"VLLM_COMPILER_DIST_TOKEN": " t0k "}) == "t0k"

    missing = tmp_path / "no-token"
    environ = {"VLLM_COMPILER_DIST": "http://sched:10600"}
    environ["VLLM_COMPILER_DIST_TOKEN_FILE"] = str(missing)
    with pytest.raises(DevkitError, match=f"VLLM_COMPILER_DIST_TOKEN_FILE={missing}: can't read"):
        resolve(**environ).token(environ)
    missing.write_text("\n")
    with pytest.raises(DevkitError, match="is empty; put the cluster's client token in it"):
        resolve(**environ).token(environ)


def test_ccache_or_no_cache_with_a_cluster_is_one_line(tmp_path):
    from devkit.toolchains import compiler_cache

    environ = {"VLLM_COMPILER_DIST": "http://sched:10600", "VLLM_COMPILER_DIST_TOKEN": "t"}
    for choice in ("ccache", "off"):
        with pytest.raises(DevkitError, match=f"needs sccache, but VLLM_COMPILER_CACHE={choice}"):
            compiler_cache.resolve({**environ, "VLLM_COMPILER_CACHE": choice}, root=tmp_path)
    cache = compiler_cache.resolve(environ, root=tmp_path)
    assert (cache.kind, cache.dist) == ("sccache", "http://sched:10600")
    conf = Path(cache.environ["SCCACHE_CONF"])
    assert conf.parent == tmp_path / "build" and conf.name.startswith("sccache-dist-")
    other = compiler_cache.resolve({**environ, "VLLM_COMPILER_DIST_TOKEN": "u"}, root=tmp_path)
    # Another token: another client config, so another sccache server.
    assert other.environ["SCCACHE_CONF"] != str(conf) and other.port != cache.port
    assert not conf.exists()  # written when a build starts, not when the plan is made


def test_client_config_is_private_and_complete(tmp_path):
    cluster = dist.Cluster("http://127.0.0.1:10600", "VLLM_COMPILER_DIST_TOKEN")
    path = tmp_path / "build" / "sccache-dist.toml"
    dist.write_config(cluster, path, {"VLLM_COMPILER_DIST_TOKEN": 'a"b'})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads(path.read_text())["dist"]
    assert config["scheduler_url"] == cluster.url
    assert config["auth"] == {"type": "token", "token": 'a"b'}
    assert config["cache_dir"] == str(tmp_path / "build" / "sccache-dist-toolchains")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing half-written


def test_jobs_follow_the_cluster_and_max_jobs_still_wins():
    cpu = targets.get_target("cpu")
    plan = resources.plan_jobs(cpu, 2, 20 * GIB, {}, cluster=(30, "http://s:1 (..)"))
    assert plan.jobs == 20  # 30 free slots + 2 cores, bounded by 1 GiB a job here
    assert plan.reason.startswith("MAX_JOBS=20: 30 free slots on the cluster http://s:1 (..)")
    assert plan.reason.endswith("memory here decides")
    plan = resources.plan_jobs(cpu, 2, 20 * GIB, {}, cluster=(4, "c"))
    assert plan.jobs == 6 and plan.reason.endswith("slots and cores decide")
    plan = resources.plan_jobs(cpu, 2, 20 * GIB, {"MAX_JOBS": "3"}, cluster=(4, "c"))
    assert plan.jobs == 3
    assert plan.reason.startswith("MAX_JOBS=3: set by you") and "cluster has 4 free" in plan.reason


def test_jobs_that_failed_on_a_server_are_noticed():
    import io

    from devkit.build import progress

    shown = io.StringIO()
    screen = dist.JobFailures(progress.Screen(shown, tty=False))
    for line in (
        "[1/2] Building CXX object a.o",
        "  sccache: Job failed on server 10.0.0.6:10501:",
    ):
        screen.line(line)
    screen.line("  bwrap: no sandbox here")
    screen.line("  sccache: Compiler killed by signal 1")
    assert screen.failed == ["Job failed on server 10.0.0.6:10501: bwrap: no sandbox here"]
    assert shown.getvalue().count("\n") == 4  # every line still shown


def test_compiles_are_read_from_sccaches_stats():
    text = json.dumps(
        {"stats": {"compilations": 7, "dist_compiles": {"a:1": 4, "b:2": 1}, "dist_errors": 2}}
    )
    assert dist.parse_compiles(text) == dist.Compiles(remote=5, local=2, failed_remote=2)
    lines = dist.summary("http://s:1", dist.Compiles(5, 2, 2) - dist.Compiles(1, 1, 0), 5)
    assert lines[0] == "cluster http://s:1: 4 compiler runs on the cluster, 1 here"
    assert lines[1].startswith("warning: 2 compile(s) failed on the cluster http://s:1")
    # sccache's server restarted (it answers with fresh counters): nothing is made up.
    lost = dist.summary("http://s:1", dist.Compiles(0, 0, 0), 3)
    assert lost[0] == "cluster http://s:1: compiler runs unknown"
    assert lost[1].startswith("warning: sccache's server stopped counting mid-build")
    assert dist.summary("http://s:1", dist.Compiles(0, 0, 0), 0) == [
        "cluster http://s:1: 0 compiler runs on the cluster, 0 here"
    ]


# -- a real scheduler -----------------------------------------------------------------


def test_the_scheduler_reports_servers_and_checks_the_token(farm, tmp_path):
    cluster = dist.Cluster(farm.url, f"VLLM_COMPILER_DIST_TOKEN_FILE={farm.token_file}")
    found, error = dist.probe(cluster)
    assert error == "" and found.servers == 2 and found.cpus >= 2 and found.free == found.cpus
    assert dist.free_slots(cluster) == (found.cpus, f"{farm.url} ({found.describe()})")
    assert "the token from VLLM_COMPILER_DIST_TOKEN_FILE=" in dist.doctor_line(cluster)

    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    cluster = dist.Cluster(farm.url, f"VLLM_COMPILER_DIST_TOKEN_FILE={wrong}")
    assert dist.probe(cluster)[1] == f"refuses the token from VLLM_COMPILER_DIST_TOKEN_FILE={wrong}"
    assert dist.free_slots(cluster) is None
    by_variable = dist.Cluster(farm.url, "VLLM_COMPILER_DIST_TOKEN")
    refused = dist.probe(by_variable, {"VLLM_COMPILER_DIST_TOKEN": "guessed"})[1]
    assert refused == "refuses the token from VLLM_COMPILER_DIST_TOKEN"
    down = dist.Cluster(f"http://127.0.0.1:{free_port()}", "VLLM_COMPILER_DIST_TOKEN")
    assert dist.probe(down, {"VLLM_COMPILER_DIST_TOKEN": "t"})[1].startswith("does not answer (")


def test_doctor_shows_the_cluster(farm, tmp_path):
    from devkit.foundation.gitbase import copy_checkout

    copy = copy_checkout(tmp_path)
    result = nox(copy, "-s", "doctor", "--", "--target", "cpu", **dist_environ(farm))
    assert result.returncode == 0, result.stdout
    assert re.search(
        rf"compile cluster +{farm.url}: 2 build server\(s\), \d+ slots, 0 busy", result.stdout
    )
    assert re.search(r"MAX_JOBS=\d+: \d+ free slots on the cluster", result.stdout)
    assert "misses compile on the cluster" in result.stdout
    assert_nothing_secret(result, farm)


# -- builds through it -------------------------------------------------------------


def fake_bwrap(where: Path) -> Path:
    """A bubblewrap that passes sccache-dist's version check and runs nothing."""
    path = where / "bwrap"
    path.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "bubblewrap 0.8.0"; exit 0; }\n'
        'echo "bwrap: no sandbox here" >&2\nexit 1\n'
    )
    path.chmod(0o755)
    return path


def fault_build(clones, copy, **environ) -> tuple[dict, list[str], subprocess.CompletedProcess]:
    """A build after a real change to one unit (a miss), with `environ`."""
    change(copy, "csrc/cpu/activation.cpp")
    result = clones.build(copy, **environ)
    return built(result), warnings(result), result


@pytest.mark.e2e
@pytest.mark.xdist_group("cold-build")
def test_a_cold_build_through_the_cluster_then_each_fault(farm, clones, tmp_path):
    """One test, so that one pytest-xdist worker builds the copy the faults reuse."""
    copy = clones.clone("cluster", "a")
    result = clones.build(copy, **dist_environ(farm))
    found = built(result)
    assert found["compiled"] == found["total"] >= 5 and found["misses"] == found["total"]
    assert found["cluster"] == farm.url
    # sccache may run a unit here when no slot is free; most run on the cluster.
    assert found["remote"] + found["here"] == found["total"] and found["remote"] >= 1
    assert not warnings(result), warnings(result)
    assert_nothing_secret(result, farm)
    assert re.search(r"MAX_JOBS=\d+: \d+ free slots on the cluster", result.stderr)
    # The servers got the toolchain sccache packaged (g++ and what it loads).
    toolchains = [farm.directory / f"server-{i}" / "toolchains" for i in (1, 2)]
    assert any(any(t.rglob("*")) for t in toolchains)
    # A quick subset of the kernel tests: one per compiled unit, and the build info.
    quick = "act_and_mul_leading_dims or rms_norm_weightless or rotary_embedding_same_head"
    quick += " or reshape_and_cache_fewer_slots or build_info"
    kernels = nox(
        copy, "-s", "test-kernels-cpu", "--", "tests/kernels", "-q", "-k", quick, timeout=900
    )
    assert kernels.returncode == 0, kernels.stdout[-3000:] + kernels.stderr[-2000:]
    assert re.search(r"\d+ passed", kernels.stdout)

    # A scheduler that is not there.
    down = f"http://127.0.0.1:{free_port()}"
    found, lines, _ = fault_build(clones, copy, **dist_environ(farm, VLLM_COMPILER_DIST=down))
    assert found["misses"] == 1 and found["cluster"] is None
    assert lines == [
        f"warning: the compile cluster {down} does not answer (Connection refused); "
        "compiling on this machine only"
    ]

    # A wrong token: its source is named, never its value.
    wrong = tmp_path / "token"
    wrong.write_text("guessed\n")
    environ = dist_environ(farm, VLLM_COMPILER_DIST_TOKEN_FILE=str(wrong))
    found, lines, result = fault_build(clones, copy, **environ)
    assert found["misses"] == 1 and found["cluster"] is None
    assert lines == [
        f"warning: the compile cluster {farm.url} refuses the token from "
        f"VLLM_COMPILER_DIST_TOKEN_FILE={wrong}; compiling on this machine only"
    ]
    assert "guessed" not in result.stdout + result.stderr

    # No bubblewrap on the server: it won't start, and the farm says why in one line;
    # the scheduler then has no build servers, and the build says so.
    with pytest.raises(DevkitError, match="server-1 exited .*bwrap") as caught:
        Farm(tmp_path / "none", servers=1, bwrap=str(tmp_path / "missing" / "bwrap")).start()
    assert "\n" not in str(caught.value)
    with Farm(tmp_path / "empty", servers=0) as empty:
        found, lines, _ = fault_build(clones, copy, **dist_environ(empty))
    assert found["misses"] == 1 and found["cluster"] is None
    assert lines == [
        f"warning: the compile cluster {empty.url} has no build servers; "
        "compiling on this machine only"
    ]

    # A bubblewrap that can't sandbox: sccache fails the job (it does not fall back
    # by itself), so the build runs again here, incrementally.
    with Farm(tmp_path / "broken", servers=1, bwrap=str(fake_bwrap(tmp_path))) as broken:
        found, lines, _ = fault_build(clones, copy, **dist_environ(broken))
    assert found["compiled"] == 1 and found["misses"] == 1 and found["cluster"] is None
    (line,) = lines
    assert re.fullmatch(
        rf"warning: the compile cluster {broken.url} failed 1 job\(s\) \(Job failed on server "
        r"127\.0\.0\.1:\d+: bwrap: no sandbox here\); building again on this machine only",
        line,
    )


@pytest.mark.nightly
def test_build_servers_killed_mid_build(clones, tmp_path):
    """Both servers die while compiles run on them: those compiles run here, the build ends."""
    needs_a_farm()
    with Farm(tmp_path / "dies", servers=2) as farm:
        copy = clones.clone("dies", "a")
        cluster = dist.Cluster(farm.url, f"VLLM_COMPILER_DIST_TOKEN_FILE={farm.token_file}")
        process = subprocess.Popen(
            [sys.executable, "-m", "nox", "-s", "build-cpu"],
            cwd=copy,
            env={**nox_environ(), **dist_environ(farm)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while process.poll() is None:
                found, _ = dist.status(cluster)
                if found and found.in_progress:
                    break
                time.sleep(0.2)
            for name in ("server-1", "server-2"):
                farm.stop_process(name, signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=1800)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            clones._record_ports(copy)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    found = built(result)
    assert found["compiled"] == found["total"]
    if found["remote"] is not None:  # sccache fell back by itself, and counted it
        assert found["here"] >= 1  # at least the compiles that were running on the dead servers
    # sccache compiles here what a dead server can't take; a job cut off mid-way is a
    # failed job, and the build runs again here: either way one line.
    (line,) = warnings(result)
    print(line)  # which of sccache's paths this run took (pytest -rP shows it)
    assert (
        re.fullmatch(
            rf"warning: \d+ compile\(s\) failed on the cluster {farm.url} \(a build server went "
            r"away or could not run them\) and ran on this machine instead",
            line,
        )
        or re.fullmatch(
            rf"warning: the compile cluster {farm.url} failed \d+ job\(s\) \(.*\); "
            "building again on this machine only",
            line,
        )
        or line.startswith("warning: sccache's server stopped counting mid-build")
    ), line


@pytest.mark.skipif(
    not os.environ.get("VLLM_TEST_DIST_CUDA"),
    reason="a compile-only CUDA build through the cluster takes minutes: "
    "`nox -s test-dist-cuda` runs it",
)
def test_compile_only_cuda_build_through_the_cluster(farm, clones):
    from devkit.toolchains import cuda

    try:
        cuda.find_cuda_home()
    except DevkitError as exc:
        pytest.fail(f"VLLM_TEST_DIST_CUDA is set but there is no CUDA toolkit: {exc}")
    copy = clones.clone("cuda", "a")
    try:
        result = nox(
            copy, "-s", "build-cuda", "--", "--arch", "9.0", timeout=3000, **dist_environ(farm)
        )
    finally:
        clones._record_ports(copy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "machine code: _C.abi3.so holds sm_90 only (cuobjdump --list-elf)" in result.stdout
    match = re.search(
        r"built cuda in [\d.]+s: compiled (\d+)/\1 translation units \(sccache cache: .*?\); "
        r"cluster (\S+): (\d+) compiler runs on the cluster, (\d+) here",
        result.stderr,
    )
    assert match, result.stderr[-3000:]
    # nvcc's steps (cudafe++, cicc, ptxas) and the host compiles went to the servers.
    assert match[2] == farm.url and int(match[3]) >= int(match[1])
    assert not warnings(result), warnings(result)
    assert_nothing_secret(result, farm)


@pytest.mark.e2e
def test_the_farm_session_runs_until_stopped(tmp_path):
    """`nox -s farm`, the recipe's command: up with auth, then SIGTERM stops all it started."""
    needs_a_farm()
    port = free_port()
    args = ["--dir", str(tmp_path / "farm"), "--servers", "1", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "nox", "-s", "farm", "--", *args],
        cwd=Path(__file__).resolve().parents[2],
        env=nox_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cluster = dist.Cluster(f"http://127.0.0.1:{port}", "VLLM_COMPILER_DIST_TOKEN")
    said: list[str] = []  # what it prints once it is up: read before stopping it
    try:
        deadline = time.monotonic() + 60
        found = None
        while time.monotonic() < deadline and process.poll() is None:
            found, _ = dist.status(cluster)
            if found and found.servers == 1:
                break
            time.sleep(0.2)
        assert found and found.servers == 1
        while process.stdout and not (said and said[-1].startswith("Ctrl-C stops it")):
            said.append(process.stdout.readline())
            assert said[-1], "nox -s farm ended before saying how builds use it"
        token = (tmp_path / "farm" / "client-token").read_text().strip()
        assert stat.S_IMODE((tmp_path / "farm" / "client-token").stat().st_mode) == 0o600
        assert dist.token_error(cluster, token) is None
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    out = "".join(said) + out
    assert f"export VLLM_COMPILER_DIST=http://127.0.0.1:{port}" in out
    assert token not in out + err
    assert dist.status(cluster)[0] is None  # the scheduler is gone
    logs = [tmp_path / "farm" / name for name in ("scheduler.log", "server-1.log")]
    assert all(log.is_file() for log in logs)
