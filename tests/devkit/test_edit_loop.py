"""The edit loop without nox, end to end in a copy of the checkout: a build
writes clangd's compile_commands.json and CMake presets; `cmake --build
--preset cpu --target install` after an edit recompiles that one file into
the venv; build-profile reads the build; clean removes it all.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from test_sessions import ROOT, nox

from devkit.build.progress import ninja_outputs
from devkit.foundation.gitbase import copy_checkout

BAD_DTYPE = """
import torch, vllm._C
x = torch.ones(2, 4, dtype=torch.int64)
try:
    torch.ops._C.rms_norm(torch.empty_like(x), x, torch.ones(4, dtype=torch.int64), 1e-6)
except RuntimeError as exc:
    print(str(exc).splitlines()[0])
"""


@pytest.mark.nightly  # a build, a preset rebuild, build-profile's matplotlib venv: minutes
def test_presets_edit_loop_profile_and_clean(tmp_path):
    copy = copy_checkout(tmp_path / "copy")
    result = nox(copy, "-s", "build-cpu", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (build_dir,) = (copy / "build").glob("cpu-torch*")

    # clangd: the root link points at the build's compile_commands.json.
    link = copy / "compile_commands.json"
    assert link.is_symlink() and link.resolve() == (build_dir / "compile_commands.json").resolve()
    files = {str(Path(e["file"]).relative_to(copy)) for e in json.loads(link.read_text())}
    assert {"csrc/cpu/layernorm.cpp", "csrc/op_checks.cpp", "csrc/torch_bindings.cpp"} <= files

    # The edit loop: change one check's message, rebuild with the preset.
    python = copy / ".venv-cpu" / "bin" / "python"
    before = subprocess.run([python, "-c", BAD_DTYPE], capture_output=True, text=True, check=True)
    assert before.stdout.strip() == "rms_norm: input must be float32, bfloat16 or float16, got Long"
    source = copy / "csrc" / "op_checks.cpp"
    text = source.read_text()
    assert '" must be float32, bfloat16 or float16, got "' in text
    source.write_text(text.replace("float16, got", "float16 (edited), got"))
    started = time.time_ns()
    cmake = copy / ".venv-cpu" / "bin" / "cmake"
    rebuilt = subprocess.run(
        [cmake, "--build", "--preset", "cpu", "--target", "install"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert ninja_outputs(build_dir, started) == {"CMakeFiles/_C.dir/csrc/op_checks.cpp.o"}
    after = subprocess.run([python, "-c", BAD_DTYPE], capture_output=True, text=True, check=True)
    assert after.stdout.strip() == (
        "rms_norm: input must be float32, bfloat16 or float16 (edited), got Long"
    )

    # build-profile: the table, the trace of the last run (the preset's), the chart.
    result = nox(copy, "-s", "build-profile", "--", "--target", "cpu", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    paths = dict(re.findall(r"^(table|trace|chart): +(\S+)", result.stdout, re.M))
    assert set(paths) == {"table", "trace", "chart"}
    assert "csrc/op_checks.cpp" in Path(paths["table"]).read_text()
    events = json.loads(Path(paths["trace"]).read_text())["traceEvents"]
    assert [e["name"] for e in events if e["cat"] == "compile"] == ["csrc/op_checks.cpp"]
    assert Path(paths["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # clean: the build dir, the venv, the editor files; nothing a clone holds.
    result = nox(copy, "-s", "clean", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"freed \d+\.\d\d GB: this checkout's build dirs and venvs", result.stderr)
    assert not build_dir.exists() and not (copy / ".venv-cpu").exists() and not link.is_symlink()
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all((copy / name).exists() for name in names if (ROOT / name).is_file())
