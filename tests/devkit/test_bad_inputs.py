"""Bad input is one line naming the value and the fix, before anything is made
(issue 20, items 10 and 11)."""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import CPU_TORCH

from devkit import DevkitError
from devkit.build import metadata
from devkit.checks import ci, ci_run
from devkit.foundation import envs, layout
from devkit.toolchains import compiler_cache, options, plan

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.mark.parametrize(
    "url", ["redis://h:abc", "redis://h:99999", "http://[::1", "redis://u:pw@h:x"]
)
def test_a_store_url_with_a_bad_port_or_bracket_is_one_line(url):
    environ = {"VLLM_COMPILER_CACHE_REMOTE": url}
    with pytest.raises(DevkitError) as err:
        compiler_cache.resolve(environ)
    line = str(err.value)
    assert line.startswith("VLLM_COMPILER_CACHE_REMOTE=") and "is not a valid URL" in line
    assert "with a port from 1 to 65535" in line and "pw" not in line and "\n" not in line


def test_cmake_args_with_an_unclosed_quote_is_one_line():
    with pytest.raises(DevkitError) as err:
        plan.resolve(plan.Request("cpu"), CPU_TORCH, {"CMAKE_ARGS": "-DX='a"})
    assert str(err.value) == (
        "CMAKE_ARGS=\"-DX='a\" can't be split into arguments (No closing quotation); "
        "close the quote or unset CMAKE_ARGS"
    )


def git(root: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout


def test_tags_that_are_not_versions_are_named_and_ignored(tmp_path, capfd):
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "one")
    git(tmp_path, "tag", "v0.1.0")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "two")
    git(tmp_path, "tag", "v1.0-bogus")
    git(tmp_path, "tag", "v2024-12-01")
    version = metadata.scm_version("cpu", root=tmp_path, base="0.1.0")
    assert version.startswith("0.1.1.dev1+g") and version.endswith(".cpu")
    assert (
        "ignoring git tag(s) v1.0-bogus, v2024-12-01: not release versions"
        in capfd.readouterr().err
    )


def test_a_checkout_git_refuses_names_safe_directory(tmp_path, request):
    """Another user's checkout (a container's root building a mounted tree): run as
    nobody against a repository root owns."""
    setpriv = shutil.which("setpriv")
    if (
        setpriv is None
        or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0"
    ):
        pytest.skip("needs root and setpriv to act as another user")
    scratch = Path(tempfile.mkdtemp(prefix="devkit-safe-directory-"))  # readable by nobody
    scratch.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(scratch))
    repo = scratch / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    script = f"import sys; sys.path[:0] = [{str(TOOLS)!r}, {str(TOOLS.parent)!r}]\n"
    script += f"from devkit.build import metadata; print(metadata.git_refusal({str(repo)!r}))"
    out = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(scratch)},
    )
    assert out.stdout.strip() == (
        f"git refuses {repo}: another user owns it (git's safe.directory check), so its version "
        f"and commit can't be read; run `git config --global --add safe.directory {repo}` and rerun"
    ), out.stderr


def test_changed_file_names_are_read_with_z(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "one")
    base = git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "café.md").write_text("x\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "two")
    (tmp_path / "docs" / "naïve new.md").write_text("untracked\n")
    assert ci_run.changed_files(base, tmp_path) == ["docs/café.md", "docs/naïve new.md"]
    assert set(ci.needs_of(ci_run.changed_files(base, tmp_path))) == {ci.LINT}


def test_ci_refuses_a_skip_that_names_no_step():
    with pytest.raises(
        DevkitError, match=r"^nox -s ci: --skip tset names no step of ci; the steps are "
    ):
        ci_run.parse_args(["--skip", "tset"])
    assert ci_run.parse_args(["--skip", "tests,lint"]).skip == {"tests", "lint"}


def test_a_uv_number_too_large_for_uv_is_one_line():
    with pytest.raises(DevkitError, match=r"^UV_HTTP_TIMEOUT='99999999999999999999' is too large"):
        envs.get("UV_HTTP_TIMEOUT", {"UV_HTTP_TIMEOUT": "99999999999999999999"})


def test_directories_named_by_a_file_are_one_line_before_anything(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(DevkitError) as err:
        options.parse("wheel", ["--index", str(tmp_path / "afile")])
    assert str(err.value) == (
        f"--index {tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a directory; "
        "point --index at a directory (a wheel index)"
    )
    with pytest.raises(
        DevkitError, match=r"^VLLM_CACHE_ROOT=x: .* is a file, not a directory; point"
    ):
        layout.check_dir("VLLM_CACHE_ROOT=x", tmp_path / "afile" / "precompiled", "VLLM_CACHE_ROOT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_variable_uv_refuses_is_named_not_blamed_on_the_venv(tmp_path):
    from devkit.toolchains import toolchain, venv

    uv = toolchain.find_tool("uv")
    assert uv, "uv comes with the test requirements"
    path = tmp_path / "v"
    subprocess.run([uv, "venv", "-q", str(path)], check=True)
    environ = {"PATH": "/usr/bin:/bin", "UV_HTTP_TIMEOUT": "99999999999999999999"}
    with pytest.raises(DevkitError) as err:
        venv.check_uv_target(path / "bin" / "python", path, uv, environ)
    assert str(err.value).startswith(
        "uv can't read UV_HTTP_TIMEOUT=99999999999999999999 (number too large"
    )
    assert str(err.value).endswith("; fix or unset UV_HTTP_TIMEOUT") and "delete" not in str(
        err.value
    )


@pytest.mark.parametrize("url", ["redis://h:abc", "redis://h:99999", "http://[::1"])
def test_doctor_names_a_bad_store_url_in_one_line(url, monkeypatch, capsys):
    from devkit.commands import doctor

    monkeypatch.setenv("VLLM_COMPILER_CACHE_REMOTE", url)
    assert doctor.diagnose("cpu") != 0
    out = capsys.readouterr()
    problems = [line for line in out.out.splitlines() if "is not a valid URL" in line]
    assert problems and all(f"VLLM_COMPILER_CACHE_REMOTE='{url}'" in line for line in problems)
    assert "Traceback" not in out.out + out.err
