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

from devkit import DevkitError, ci, workflows
from devkit.envs import ROOT

HAVE = ci.Source(True, "w.whl from http://index at 0123456789ab")
NONE = ci.Source(False, "http://index has no cpu wheel for 0123456789ab")


def sessions(plan: list[ci.Step]) -> list[str]:
    return [step.command for step in plan]


@pytest.mark.parametrize(
    "path, kind",
    [
        ("README.md", ci.DOCS),
        ("docs/build.rst", ci.DOCS),
        ("csrc/README.md", ci.BUILD),  # under csrc/: the build reads the directory
        ("vllm/platforms/cpu.py", ci.PYTHON_ONLY),
        ("tests/kernels/test_norm.py", ci.PYTHON_ONLY),
        ("noxfile.py", ci.PYTHON_ONLY),
        ("benchmarks/bench_kernels.py", ci.PYTHON_ONLY),
        ("examples/vllm_plugin_example/setup.py", ci.PYTHON_ONLY),
        ("tools/devkit/pipeline.py", ci.PYTHON_ONLY),
        ("tools/devkit/ci.py", ci.PYTHON_ONLY),
        (".github/workflows/pr.yml", ci.PYTHON_ONLY),
        ("tools/devkit/backend.py", ci.BUILD),
        ("tools/devkit/plan.py", ci.BUILD),
        ("csrc/cpu/cache.cpp", ci.BUILD),
        ("cmake/utils.cmake", ci.BUILD),
        ("CMakeLists.txt", ci.BUILD),
        ("pyproject.toml", ci.BUILD),
        ("requirements/test.txt", ci.BUILD),
        (".clang-format", ci.BUILD),  # unknown: not known to leave the binary alone
    ],
)
def test_each_file_kind(path, kind):
    assert ci.kind_of(path) == kind


def test_docs_only_runs_lint():
    change = ci.classify(["README.md", "docs/a.md"])
    assert change.reason == "README.md changed (and 1 more file)"
    (step,) = ci.steps(change, None, nvcc=True)
    assert (step.command, step.reason) == (
        "nox -s lint",
        "README.md changed (and 1 more file): lint",
    )


def test_python_only_runs_the_tests_on_precompiled_binaries():
    change = ci.classify(["vllm/envs.py", "CONTRIBUTING.md"])
    assert change.kind == ci.PYTHON_ONLY
    plan = ci.steps(change, HAVE, nvcc=True)
    assert sessions(plan) == [
        "nox -s lint",
        "nox -s tests",
        "nox -s dev-precompiled",
        "nox -s test-kernels-cpu -- --precompiled",
        "nox -s test-plugins -- --precompiled",
    ]
    assert plan[2].reason == (
        "vllm/envs.py changed (and 1 more file), nothing compiled: precompiled binaries "
        "(w.whl from http://index at 0123456789ab)"
    )


def test_python_only_without_a_wheel_builds_and_says_why():
    plan = ci.steps(ci.classify(["vllm/envs.py"]), NONE, nvcc=True)
    assert sessions(plan) == [
        "nox -s lint",
        "nox -s tests",
        "nox -s build-cpu",
        "nox -s test-kernels-cpu",
        "nox -s test-plugins",
    ]
    assert plan[2].reason == (
        "vllm/envs.py changed, but http://index has no cpu wheel for 0123456789ab: build"
    )


def test_a_compiled_change_builds_everything_and_cuda_compile_only():
    plan = ci.steps(ci.classify(["csrc/cpu/cache.cpp", "vllm/envs.py"]), HAVE, nvcc=True)
    assert sessions(plan) == [
        "nox -s lint",
        "nox -s tests",
        "nox -s build-cpu",
        "nox -s test-kernels-cpu",
        "nox -s test-plugins",
        "nox -s build-cuda -- --arch 9.0",
    ]
    assert plan[2].reason == "csrc/cpu/cache.cpp changed (and 1 more file): build"
    assert not any(step.skip for step in plan)
    # Without nvcc, build-cuda is listed as skipped, with why.
    cuda = ci.steps(ci.classify(["csrc/cpu/cache.cpp"]), None, nvcc=False)[-1]
    assert (cuda.session, cuda.skip) == ("build-cuda", "nvcc is not installed here")


def test_all_and_nothing():
    assert sessions(ci.steps(ci.classify(["README.md"]), None, True, run_all=True))[-1] == (
        "nox -s build-cuda -- --arch 9.0"
    )
    assert ci.steps(ci.classify([]), None, nvcc=True) == []


def _imports(module: str) -> set[str]:
    """The devkit modules `module` imports, at the top level or in a function."""
    tree = ast.parse((ROOT / "tools" / "devkit" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "devkit":
            found |= {alias.name for alias in node.names if alias.name[0].islower()}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("devkit."):
            found.add(node.module.split(".")[1])
    return found


def test_build_modules_are_what_the_backend_imports():
    closure, todo = {"__init__"}, ["backend"]
    while todo:
        module = todo.pop()
        if module not in closure:
            closure.add(module)
            todo += sorted(_imports(module) - closure)
    assert {f"tools/devkit/{m}.py" for m in closure} == ci.BUILD_MODULES
    # The scripts: what plan.py hands CMake to run.
    plan_text = (ROOT / "tools" / "devkit" / "plan.py").read_text()
    named = {f"tools/devkit/{name}" for name in re.findall(r'"(\w+\.py)"', plan_text)}
    assert named == ci.BUILD_SCRIPTS and ci.kind_of("tools/devkit/nvcc_relative.py") == ci.BUILD


def test_parse_args():
    assert ci.parse_args([]) == ci.Options()
    options = ci.parse_args(["--base", "origin/dev", "--dry-run", "--skip", "tests,lint"])
    assert options == ci.Options("origin/dev", False, True, frozenset({"tests", "lint"}))
    assert ci.parse_args(["--all"]).run_all
    with pytest.raises(DevkitError, match="takes --base REF, --all, --dry-run and --skip"):
        ci.parse_args(["--fast"])
    with pytest.raises(DevkitError, match="expected one argument"):
        ci.parse_args(["--base"])


def test_summary_table():
    steps = ci.steps(ci.classify(["README.md"]), None, True, run_all=True)[:3]
    outcomes = [
        ci.Outcome(steps[0], "passed", 12.34),
        ci.Outcome(steps[1], "failed", 3.0, "exit code 1"),
        ci.Outcome(steps[2], "not run", note="an earlier step failed"),
    ]
    assert ci.summary(outcomes, 15.5).splitlines() == [
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
    assert ci.merge_base(None, repo) == ("main", base)
    assert ci.changed_files(base, repo) == ["README.md", "vllm/a.py", "vllm/new.py"]
    with pytest.raises(DevkitError, match="no merge-base of HEAD with nowhere; fetch"):
        ci.merge_base("nowhere", repo)
    with pytest.raises(DevkitError, match="is not a git checkout"):
        ci.merge_base(None, tmp_path)


def test_precompiled_source_looks_at_the_merge_base_only(tmp_path):
    index = tmp_path / "index"
    wheel = make_wheel(tmp_path / "w" / "vllm-0.1.0+cpu-cp39-abi3-linux_x86_64.whl")
    publish_fake(index, wheel, "c0ffee")
    publish_fake(index, wheel, "nightly")
    environ = {"VLLM_PRECOMPILED_WHEEL_INDEX": str(index)}
    assert ci.precompiled_source("c0ffee", environ).available
    missing = ci.precompiled_source("beef", environ)
    assert missing == ci.Source(False, f"{index} has no cpu wheel for beef")
    (tmp_path / "pyproject.toml").write_text('[tool.vllm.precompiled]\nindex = ""\n')
    none = ci.precompiled_source("c0ffee", {}, root=tmp_path)
    assert none.note.startswith("no precompiled index is configured (set VLLM_PRECOMPILED")


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
