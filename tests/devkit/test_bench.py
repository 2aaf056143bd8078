"""`nox -s bench-kernels -- --against REF` end to end, in a fresh clone, on a tiny size.

The clone builds its own extension and, in a git worktree under its build
root, REF's (HEAD~1), then times both (and the control) in rotating rounds.
Two rounds of microsecond calls are what the A/B must refuse to judge: the
verdicts are "no change", with both warnings, and the exit status 0. The
verdicts at the default sizes, and a planted slowdown, are
tests/kernels/test_bench_ab.py; the statistics, tests/devkit/test_verdict.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.nightly  # two builds and a benchmark: minutes
def test_against_head_1_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", head], cwd=clone, check=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NOX", "VIRTUAL_ENV"))}
    args = ["--tokens", "16", "--hidden", "64", "--dtypes", "fp32", "--rounds", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "bench-kernels", "--", "--against", "HEAD~1", *args],
        cwd=clone,
        env=environ,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parent = subprocess.run(
        ["git", "rev-parse", "HEAD~1"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    out = clone / "build" / "bench-against" / parent[:12]
    assert (out / "src" / ".git").is_file(), "REF is checked out as a worktree in the clone"
    assert (out / "lib" / "_C.abi3.so").is_file(), "REF's extension was built"
    (results,) = out.glob("ab-*.json")
    data = json.loads(results.read_text())
    assert data["rounds"] == 2
    cases = {r["case"] for r in data["results"]}
    assert any(c.startswith("reshape_and_cache[in order] fp32") for c in cases), cases
    timed = [r for r in data["results"] if r["ratio"]]
    assert timed and all(r["verdict"] == "no change" and not r["decided"] for r in timed)
    assert all(len(r["new_s"]) == len(r["old_s"]) == len(r["control_s"]) == 2 for r in timed)
    assert data["exit_status"] == 0
    assert results.with_suffix(".png").stat().st_size > 1000
    assert "speed new/old (> 1: faster)" in result.stdout
    assert "2 rounds are too few to decide" in result.stdout
    assert "too small to time" in result.stdout
