"""The A/B of `nox -s bench-kernels -- --against REF`, on the real kernels, at the default sizes.

The old build is this build's own extension (the session's `--against`
passes REF's the same way, as --against-lib), so nothing more is built: the
kernel timed against itself must be "no change", and against itself plus
three extra passes over its output (--plant-slowdown, in the new build's
worker processes) "slower", with the exit status a PR gates on. Only the
verdicts are asserted, never a time: the planted slowdown (about 4x the
memory traffic of rms_norm) is far outside what a loaded 2-core machine
makes of the same kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"
CASES = ["--ops", "rms_norm", "--dtypes", "fp32,bf16"]  # the default sizes: 4096 x 4096


def ab(device: torch.device, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    import vllm._C  # the extension this venv built

    lib = vllm._C.__file__
    cmd = [sys.executable, str(SCRIPT), "--device", device.type, "--against-lib", lib]
    cmd += ["--against-name", "this build", "--out", str(out), *CASES, *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    (written,) = out.glob("ab-*.json")
    return result, json.loads(written.read_text())


def assert_verdict(result: subprocess.CompletedProcess, data: dict, verdict: str, status: int):
    """Both cases got `verdict`, and the run exited with `status`, as its JSON says."""
    verdicts = {r["case"]: r["verdict"] for r in data["results"]}
    cases = ("rms_norm fp32 4096x4096", "rms_norm bf16 4096x4096")
    assert verdicts == dict.fromkeys(cases, verdict), result.stdout
    assert result.returncode == status and data["exit_status"] == status, result.stdout


# Minutes each on 2 cores: README's test command leaves them to the nightly workflow.
@pytest.mark.nightly
def test_the_same_kernel_is_no_change(device: torch.device, tmp_path: Path) -> None:
    result, data = ab(device, tmp_path)
    assert_verdict(result, data, "no change", 0)
    assert data["rounds"] == 10 and data["control"] is True
    assert all(r["control"] is not None for r in data["results"]), "the noise is measured"
    assert "0 slower, 0 faster, 2 no change" in result.stdout
    assert (tmp_path / Path(next(tmp_path.glob("ab-*.json")).stem + ".png")).stat().st_size > 1000


@pytest.mark.nightly
def test_a_planted_slowdown_is_slower_and_fails_the_gate(
    device: torch.device, tmp_path: Path
) -> None:
    result, data = ab(device, tmp_path, "--plant-slowdown", "3")
    assert_verdict(result, data, "slower", 1)
    assert "exit status 1: a case is slower" in result.stdout
    assert data["planted"] == 3


def test_bad_options_are_one_line_each(tmp_path: Path) -> None:
    for bad, named in (
        (["--ops", "rms_nrom"], "--ops rms_nrom: no such op; choose from rms_norm,"),
        (["--threshold", "-5"], "--threshold -5.0: pass a percentage, 0 or more"),
    ):
        cmd = [sys.executable, str(SCRIPT), "--against-lib", "x.so", "--out", str(tmp_path), *bad]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"bench_kernels.py: {named}"), line
    assert not list(tmp_path.iterdir()), "nothing written"
