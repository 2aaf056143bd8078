"""`nox -s bench-kernels` on one build, at a small size: what each row reports.

The ops that rewrite their inputs (fused_add_rms_norm, rotary) are also timed
against one `x *= 1` pass over what they rewrite, the floor of such a kernel;
the others are not. Only which columns exist is asserted, never a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from test_bench_ab import SCRIPT

IN_PLACE = {"fused_add_rms_norm", "rotary_embedding[neox]", "rotary_embedding[gptj]"}


def test_in_place_ops_are_timed_against_one_pass(device: torch.device, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(SCRIPT), "--device", device.type, "--no-compile", "--repeats", "3"]
    cmd += ["--dtypes", "fp32", "--tokens", "64", "--hidden", "256", "--json", str(out)]
    cmd += ["--ops", "rms_norm,fused_add_rms_norm,rotary_embedding,silu_and_mul"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = {r["op"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == IN_PLACE | {"rms_norm", "silu_and_mul"}
    for op, row in rows.items():
        assert row["kernel_us"] > 0 and row["copy_share"] > 0, row
        assert (row["pass_share"] is not None) == (op in IN_PLACE), row
        assert row["pass_share"] is None or row["pass_share"] > 0, row
    printed = {line.split()[0]: line for line in result.stdout.splitlines() if " us " in line}
    assert {op for op, line in printed.items() if "of a pass" in line} == IN_PLACE, result.stdout
