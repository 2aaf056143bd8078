"""`nox -s ci`: the change classifier, the plan, and the workflows that run it.

The unit tests are pure (file lists in, steps out) or use a temporary git
repository; the end-to-end tests (test_ci_e2e.py) run the pipeline in clones.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest
from test_precompiled import git, make_wheel, publish_fake

from devkit import DevkitError
from devkit.artifacts import binaries, binstore
from devkit.checks import ci, ci_run, workflows
from devkit.foundation.envs import ROOT
from devkit.toolchains import plan, targets

HAVE = ci.Source(True, "w.whl from http://index at 0123456789ab")
NONE = ci.Source(False, "http://index has no cpu wheel for 0123456789ab")


def sessions(plan: list[ci.Step]) -> list[str]:
    return [step.command for step in plan]


KERNELS_ON_PREBUILT = [
    "nox -s lint",
    "nox -s dev-precompiled",
    "nox -s test-kernels-cpu -- --precompiled",
    "nox -s test-plugins -- --precompiled",
]
# The plan's CPU steps: the build, its kernel tests and the plugins on it.
CPU_BUILT = ["nox -s build-cpu", "nox -s test-kernels-cpu", "nox -s test-plugins -- --precompiled"]
CUDA_COMPILE = "nox -s build-cuda -- --arch 9.0"


@pytest.mark.parametrize(
    "path, needs",
    [
        ("README.md", {ci.LINT}),
        ("benchmarks/MEASUREMENTS.md", {ci.LINT}),
        ("benchmarks/bench_kernels.py", {ci.LINT, ci.DEVKIT}),
        ("docs/build.rst", {ci.LINT}),
        ("csrc/README.md", ci.CPU_SIDE | {ci.CUDA_BUILD}),  # under csrc/: the build reads it
        ("vllm/platforms/cpu.py", {ci.LINT, ci.KERNELS, ci.PLUGINS}),
        ("vllm/envs.py", {ci.LINT, ci.DEVKIT, ci.KERNELS, ci.PLUGINS}),  # the devkit reads it
        ("vllm/_op_table.py", {ci.LINT, ci.DEVKIT, ci.KERNELS, ci.PLUGINS}),  # and this
        ("tests/kernels/test_norm.py", {ci.LINT, ci.KERNELS}),
        ("examples/vllm_plugin_example/setup.py", {ci.LINT, ci.PLUGINS}),
        ("noxfile.py", {ci.LINT, ci.DEVKIT}),
        ("benchmarks/bench_kernels.py", {ci.LINT, ci.DEVKIT}),
        ("tools/devkit/build/pipeline.py", {ci.LINT, ci.DEVKIT}),
        ("tools/devkit/checks/ci.py", {ci.LINT, ci.DEVKIT}),
        (".github/workflows/pr.yml", {ci.LINT, ci.DEVKIT}),
        ("tools/devkit/build/backend.py", ci.ALL),
        ("tools/devkit/toolchains/plan.py", ci.ALL),
        ("csrc/cpu/cache.cpp", ci.CPU_SIDE),  # no CUDA unit reads csrc/cpu/
        ("csrc/cache_kernels.cu", {ci.LINT, ci.CUDA_BUILD}),
        ("csrc/ops.h", ci.CPU_SIDE | {ci.CUDA_BUILD}),  # shared by both builds
        ("cmake/utils.cmake", ci.ALL),
        ("CMakeLists.txt", ci.ALL),
        ("pyproject.toml", ci.ALL),
        ("requirements/test.txt", {ci.LINT, ci.DEVKIT, ci.KERNELS, ci.PLUGINS}),
        (".clang-format", ci.ALL),  # unknown: not known to leave anything alone
    ],
)
def test_each_path_and_what_it_can_affect(path, needs):
    assert ci.rule_for(path).needs == needs


def test_every_rule_says_why_and_every_need_is_known():
    for rule in (*ci.RULES, ci.UNKNOWN):
        assert rule.why and rule.needs <= ci.ALL and rule.patterns


def test_docs_only_runs_lint():
    needs = ci.needs_of(["README.md", "docs/a.md"])
    (step,) = ci.steps(needs, None, nvcc=True)
    assert (step.command, step.reason) == (
        "nox -s lint",
        "README.md changed (and 1 more file): documentation",
    )
    assert "not run: build-cuda: no changed file reaches the CUDA compile" in ci.not_planned(needs)


def test_python_only_runs_its_tests_on_precompiled_binaries_and_not_the_devkit_suite():
    needs = ci.needs_of(["vllm/platforms/cpu.py", "README.md"])
    plan = ci.steps(needs, HAVE, nvcc=True)
    assert sessions(plan) == KERNELS_ON_PREBUILT
    assert plan[1].reason == (
        "vllm/platforms/cpu.py changed: the Python package: its tests and the kernel tests, "
        "on precompiled binaries; nothing compiled changed: prebuilt binaries "
        "(w.whl from http://index at 0123456789ab)"
    )
    assert "not run: tests (the devkit suite): no changed file reaches the devkit tests" in (
        ci.not_planned(needs)
    )


def test_python_only_without_binaries_builds_and_says_why():
    plan = ci.steps(ci.needs_of(["vllm/platforms/cpu.py"]), NONE, nvcc=True)
    assert sessions(plan) == ["nox -s lint", *CPU_BUILT]
    assert plan[1].reason.endswith("; but http://index has no cpu wheel for 0123456789ab: build")


def test_devkit_change_runs_the_devkit_tests_only():
    plan = ci.steps(
        ci.needs_of(["tools/devkit/checks/ci.py", "tests/devkit/test_ci.py"]), HAVE, True
    )
    assert sessions(plan) == ["nox -s lint", "nox -s tests"]


def test_a_cpu_kernel_change_builds_cpu_and_no_cuda():
    plan = ci.steps(ci.needs_of(["csrc/cpu/cache.cpp", "vllm/platforms/cpu.py"]), HAVE, True)
    assert sessions(plan) == ["nox -s lint", *CPU_BUILT]
    assert plan[1].reason == (
        "csrc/cpu/cache.cpp changed: CPU kernels: the CPU build reads them, no CUDA unit does"
    )


def test_a_cuda_kernel_change_compiles_cuda_only():
    plan = ci.steps(ci.needs_of(["csrc/cache_kernels.cu"]), HAVE, nvcc=True)
    assert sessions(plan) == ["nox -s lint", CUDA_COMPILE]


def test_a_shared_header_builds_both_and_cuda_compile_only():
    plan = ci.steps(ci.needs_of(["csrc/ops.h"]), HAVE, nvcc=True)
    assert sessions(plan) == ["nox -s lint", *CPU_BUILT, CUDA_COMPILE]
    assert not any(step.skip for step in plan)
    # Without nvcc, build-cuda is listed as skipped, with why.
    cuda = ci.steps(ci.needs_of(["csrc/ops.h"]), None, nvcc=False)[-1]
    assert (cuda.session, cuda.skip) == ("build-cuda", "nvcc is not installed here")


def test_all_and_nothing():
    all_steps = ["nox -s lint", "nox -s tests", *CPU_BUILT, CUDA_COMPILE]
    assert sessions(ci.steps({}, None, True, run_all=True)) == all_steps
    assert ci.steps(ci.needs_of([]), None, nvcc=True) == []


def _file(dotted: str) -> str:
    """devkit.a.b -> tools/devkit/a/b.py, or its package's tools/devkit/a/b/__init__.py."""
    path = "tools/" + dotted.replace(".", "/")
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


def _imports(path: str) -> set[str]:
    """The devkit files the file at `path` imports, at the top level or in a function
    (with the packages' __init__.py files that importing them runs)."""
    tree = ast.parse((ROOT / path).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("devkit"):
            names = [f"{node.module}.{a.name}" for a in node.names if a.name[0].islower()]
            for dotted in [node.module, *names]:
                parts = dotted.split(".")
                found |= {_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)}
    return {f for f in found if (ROOT / f).is_file()}


def test_build_modules_are_what_the_backend_imports():
    closure, todo = set(), ["tools/devkit/build/backend.py"]
    while todo:
        path = todo.pop()
        if path not in closure:
            closure.add(path)
            todo += sorted(_imports(path) - closure)
    assert closure == ci.BUILD_MODULES
    # The scripts: what plan.py hands CMake to run.
    plan_text = (ROOT / "tools" / "devkit" / "toolchains" / "plan.py").read_text()
    scripts = re.findall(r'"(\w+)" / "(\w+\.py)"', plan_text)
    named = {f"tools/devkit/{layer}/{name}" for layer, name in scripts}
    relative = "tools/devkit/build/nvcc_relative.py"
    assert named == ci.BUILD_SCRIPTS and ci.rule_for(relative).needs == ci.ALL


def test_parse_args():
    assert ci_run.parse_args([]) == ci_run.Args()
    options = ci_run.parse_args(["--base", "origin/dev", "--dry-run", "--skip", "tests,lint"])
    assert options == ci_run.Args("origin/dev", False, True, frozenset({"tests", "lint"}))
    assert ci_run.parse_args(["--all"]).run_all
    with pytest.raises(DevkitError, match="takes --base REF, --all, --dry-run and --skip"):
        ci_run.parse_args(["--fast"])
    with pytest.raises(DevkitError, match="expected one argument"):
        ci_run.parse_args(["--base"])


def test_summary_table():
    steps = ci.steps({}, None, True, run_all=True)[:3]
    outcomes = [
        ci_run.Outcome(steps[0], "passed", 12.34),
        ci_run.Outcome(steps[1], "failed", 3.0, "exit code 1"),
        ci_run.Outcome(steps[2], "not run", note="an earlier step failed"),
    ]
    assert ci_run.summary(outcomes, 15.5).splitlines() == [
        "session           result   time",
        "nox -s lint       passed   12.3s",
        "nox -s tests      failed   3.0s   exit code 1",
        "nox -s build-cpu  not run  -      an earlier step failed",
        "ci: 1 failed (1 passed) in 15.5s",
    ]


def test_changed_files_count_commits_and_the_working_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name in ("README.md", "vllm/a.py", "csrc/k.cpp"):
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-qb", "pr")
    (repo / "README.md").write_text("y\n")
    git(repo, "commit", "-qam", "docs")
    (repo / "vllm/a.py").write_text("y\n")  # unstaged
    (repo / "vllm/new.py").write_text("")  # untracked
    assert ci_run.merge_base(None, repo) == ("main", base)
    assert ci_run.changed_files(base, repo) == ["README.md", "vllm/a.py", "vllm/new.py"]
    with pytest.raises(DevkitError, match="no merge-base of HEAD with nowhere; fetch"):
        ci_run.merge_base("nowhere", repo)
    with pytest.raises(DevkitError, match="is not a git checkout"):
        ci_run.merge_base(None, tmp_path)


def test_precompiled_source_is_found_by_key_whatever_the_merge_base(tmp_path):
    index = tmp_path / "index"
    wheel = make_wheel(tmp_path / "w" / "vllm-0.1.0+cpu-cp39-abi3-linux_x86_64.whl")
    store = binstore.Store(tmp_path / "store", 1 << 30, log=lambda _: None)
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": str(index)}
    missing = ci_run.precompiled_source(environ, store=store)
    assert not missing.available and f"nor {index} has key" in missing.note
    target = targets.get_target("cpu")
    key = binaries.lookup_key(target, plan.expected_torch(target))
    publish_fake(index, wheel, f"keys/{key.digest}")  # under some commit: any merge-base
    found = ci_run.precompiled_source(environ, store=store)
    assert found.available and f"from {index} by key {key.short}" in found.note
    none = ci_run.precompiled_source({"VLLM_PRECOMPILED_WHEEL_INDEX": ""}, store=store)
    assert not none.available and "no precompiled index is configured" in none.note


# -- the workflow files --------------------------------------------------------


def test_every_session_the_workflows_run_exists():
    used = set()
    for path in workflows.workflow_files():
        used |= workflows.sessions_run((ROOT / path).read_text())
    assert {"ci", "test-kernels-cuda", "wheel"} <= used
    # `nox -l --json` lists the default sessions; with -s, those named (an unknown one fails).
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--json", "-s", *sorted(used)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert {entry["session"] for entry in json.loads(listed.stdout)} == used


def test_sessions_run_reads_nox_command_lines():
    text = "run: python3 -m nox -s tests build-cpu -- -k x\n  run: nox --no-venv -s lint\n"
    assert workflows.sessions_run(text) == {"tests", "build-cpu", "lint"}


def test_runner_labels_come_from_actionlint_yaml(tmp_path):
    assert workflows.runner_labels() == ["gpu"]
    assert workflows.runner_labels(tmp_path) == []


def test_a_layer_change_runs_its_kernel_tests_only_on_precompiled_binaries():
    needs = ci.needs_of(["vllm/model_executor/layers/activation.py"])
    plan = ci.steps(needs, HAVE, nvcc=True)
    assert sessions(plan) == [
        "nox -s lint",
        "nox -s dev-precompiled",
        "nox -s test-kernels-cpu -- --precompiled -n auto tests/kernels/test_activation.py "
        "tests/kernels/test_custom_op.py",
    ]
    # With a file that reaches every kernel test, all of them run.
    both = ci.needs_of(["vllm/model_executor/layers/activation.py", "vllm/_custom_ops.py"])
    assert both[ci.KERNELS].subset == ()
    # A changed kernel test is its own subset; two subsets add up.
    tests = ci.needs_of(["tests/kernels/test_cache.py", "vllm/model_executor/layers/layernorm.py"])
    assert tests[ci.KERNELS].subset == (
        "tests/kernels/test_cache.py",
        "tests/kernels/test_layernorm.py",
    )
