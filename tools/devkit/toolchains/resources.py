"""How many compile jobs a build may run, and why.

A compile job of the CUDA target needs about 4 GiB per nvcc thread, so a
build that starts one job per core freezes a laptop. The default is the
largest count that both the cores and the available memory allow; MAX_JOBS
and NVCC_THREADS, when set, win.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit.foundation import envs
from devkit.toolchains.targets import GIB, Target


@dataclass(frozen=True)
class JobPlan:
    jobs: int
    nvcc_threads: int | None  # None for targets without nvcc
    reason: str  # one line: "MAX_JOBS=2: 2 cores; memory allows 21 (...)"


def usable_cores() -> int:
    """Cores this process may run on, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def available_memory() -> int:
    """Bytes that can be allocated without swapping: MemAvailable, capped by cgroup."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:  # no /proc: assume the page count tells the truth
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, available)


def plan_jobs(
    target: Target,
    cores: int,
    memory: int,
    environ: Mapping[str, str] | None = None,
    cluster: tuple[int, str] | None = None,
) -> JobPlan:
    """The job count for `target` on a machine with `cores` and `memory` bytes free; with
    `cluster` (its free slots, a description), compiles run there and the job count is
    bounded here by the memory a job's preprocessing and link take (dist.LOCAL_JOB_MEMORY)."""
    threads = None
    if target.nvcc_threads is not None:
        threads = envs.get("NVCC_THREADS", environ) or target.nvcc_threads
    per_job = target.job_memory * (threads or 1)
    by_cores = max(1, cores // (threads or 1))
    by_memory = max(1, memory // per_job)
    per_job_text = f"{per_job / GIB:g} GiB per job"
    if threads is not None:
        per_job_text += f" ({threads} nvcc threads)"
    memory_text = f"memory allows {by_memory} ({memory / GIB:.1f} GiB available / {per_job_text})"
    cores_text = f"{cores} cores" + (f" / {threads} nvcc threads" if threads else "")

    requested = envs.get("MAX_JOBS", environ)
    if requested is not None:
        reason = f"MAX_JOBS={requested}: set by you; {cores_text}, {memory_text}"
        if cluster is not None:
            reason += f"; the cluster has {cluster[0]} free slots"
        elif requested > by_memory:
            reason += "; expect swapping or OOM: lower MAX_JOBS"
        return JobPlan(requested, threads, reason)
    if cluster is not None:
        return _cluster_jobs(cluster, threads, by_cores, cores_text, memory)

    jobs = min(by_cores, by_memory)
    limit = "memory" if by_memory < by_cores else "cores"
    reason = f"MAX_JOBS={jobs}: {cores_text}; {memory_text}; {limit} decide"
    return JobPlan(jobs, threads, reason)


def _cluster_jobs(
    cluster: tuple[int, str], threads: int | None, by_cores: int, cores_text: str, memory: int
) -> JobPlan:
    from devkit.toolchains.dist import LOCAL_JOB_MEMORY  # stdlib only, like this module

    slots, where = cluster
    by_memory = max(1, memory // LOCAL_JOB_MEMORY)
    wanted = slots + by_cores  # the cluster's free slots, and this machine's own
    jobs = min(wanted, by_memory)
    limit = "memory here decides" if by_memory < wanted else "slots and cores decide"
    reason = (
        f"MAX_JOBS={jobs}: {slots} free slots on the cluster {where} + {cores_text} here; "
        f"memory here allows {by_memory} ({memory / GIB:.1f} GiB available / "
        f"{LOCAL_JOB_MEMORY / GIB:g} GiB to preprocess and link a job); {limit}"
    )
    return JobPlan(jobs, threads, reason)


def plan_for_this_machine(
    target: Target, environ=None, cluster: tuple[int, str] | None = None
) -> JobPlan:
    return plan_jobs(target, usable_cores(), available_memory(), environ, cluster)
