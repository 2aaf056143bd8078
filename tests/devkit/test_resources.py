"""Job sizing: cores, memory, MAX_JOBS and NVCC_THREADS."""

import dataclasses

import pytest

from devkit import DevkitError
from devkit.toolchains import resources
from devkit.toolchains.targets import GIB, TARGETS

CPU = TARGETS["cpu"]
# An nvcc target as issue #3 will add it: 4 GiB per nvcc thread, 2 threads.
NVCC = dataclasses.replace(CPU, name="nvcc", job_memory=4 * GIB, nvcc_threads=2)


def test_cores_decide_on_a_small_machine():
    plan = resources.plan_jobs(CPU, cores=2, memory=24 * GIB, environ={})
    assert plan.jobs == 2
    assert plan.nvcc_threads is None
    assert plan.reason.startswith(
        f"MAX_JOBS=2: 2 cores; memory allows {24 * GIB // CPU.job_memory}"
    )
    assert plan.reason.endswith("cores decide")


def test_memory_decides_on_a_big_machine_with_little_memory():
    plan = resources.plan_jobs(CPU, cores=64, memory=int(8.5 * GIB), environ={})
    assert plan.jobs == int(8.5 * GIB) // CPU.job_memory
    assert "memory decide" in plan.reason


def test_at_least_one_job_without_free_memory():
    assert resources.plan_jobs(CPU, cores=4, memory=0, environ={}).jobs == 1


def test_max_jobs_wins_and_warns_past_memory():
    plan = resources.plan_jobs(CPU, cores=2, memory=4 * GIB, environ={"MAX_JOBS": "16"})
    assert plan.jobs == 16
    assert "set by you" in plan.reason and "lower MAX_JOBS" in plan.reason


def test_nvcc_threads_count_against_cores_and_memory():
    plan = resources.plan_jobs(NVCC, cores=16, memory=64 * GIB, environ={})
    assert (plan.jobs, plan.nvcc_threads) == (8, 2)
    plan = resources.plan_jobs(NVCC, cores=16, memory=64 * GIB, environ={"NVCC_THREADS": "4"})
    assert (plan.jobs, plan.nvcc_threads) == (4, 4)
    assert "4 nvcc threads" in plan.reason
    plan = resources.plan_jobs(NVCC, cores=16, memory=20 * GIB, environ={})
    assert plan.jobs == 2  # 20 GiB / (4 GiB x 2 threads)


@pytest.mark.parametrize("value", ["zero", "0", "-3", "2.5"])
def test_bad_max_jobs_is_one_line_error(value):
    with pytest.raises(DevkitError, match=r"^MAX_JOBS=.* is not a positive integer; set e\.g\."):
        resources.plan_jobs(CPU, cores=2, memory=GIB, environ={"MAX_JOBS": value})


def test_this_machine_is_measured():
    assert resources.usable_cores() >= 1
    assert resources.available_memory() > 0
    assert resources.plan_for_this_machine(CPU, {}).jobs >= 1
