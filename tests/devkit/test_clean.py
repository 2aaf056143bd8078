"""clean: what it removes, and everything it never touches.

The data-loss cases each build a sibling directory, a shared build root and a
symlinked build root full of things that are not ours, and check that they
survive byte for byte.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import CPU_PIN, CPU_TORCH

from devkit import DevkitError
from devkit.build import presets
from devkit.commands import clean
from devkit.foundation import layout
from devkit.toolchains import plan

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def make_venv(path: Path, ours: bool = True) -> None:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_bytes(b"y" * 1_000_000)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    if ours:
        layout.mark_venv(path)


def make_build(root: Path, build_dir: Path, venv: str = ".venv-cpu") -> plan.BuildPlan:
    """A cpu build dir in `build_dir` whose plan names root/<venv>."""
    found = plan.resolve(
        plan.Request("cpu", python=str(root / venv / "bin" / "python")),
        CPU_TORCH,
        {"VLLM_COMPILER_CACHE": "off"},
    )
    built = plan.BuildPlan(**{**found.__dict__, "build_dir": build_dir})
    built.write()
    (build_dir / "big.o").write_bytes(b"x" * 3_000_000)
    return built


def make_checkout(root: Path, build_root: Path | None = None) -> Path:
    """A git checkout with a cpu build (plan.json naming .venv-cpu) and a cuda venv;
    returns the build dir."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "README.md").write_text("tracked\n")
    subprocess.run(["git", "-C", str(root), "add", "README.md"], check=True)
    build_root = build_root or layout.build_root(None, root)
    build_dir = build_root / layout.build_dir_name("cpu", CPU_PIN)
    built = make_build(root, build_dir)
    make_venv(root / ".venv-cpu")
    make_venv(root / ".venv-cuda")
    (build_root / "precompiled").mkdir()
    (build_dir / "compile_commands.json").write_text("[]\n")
    presets.write_all(built, root)
    return build_dir


def snapshot(*places: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every link's target under `places` (not following links)."""
    found: dict[str, bytes | str] = {}
    for place in places:
        for folder, dirs, files in os.walk(place):
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink():
                    found[str(path)] = "-> " + os.readlink(path)
                elif path.is_file():
                    found[str(path)] = path.read_bytes()
                else:
                    found[str(path)] = "dir"
    return found


def bystanders(tmp_path: Path) -> list[Path]:
    """Things that are not ours: a sibling project, a shared root's other content, a
    disk behind a link; each with a dir named like a build dir's prefix."""
    made = []
    for place in ("sibling-project", "shared", "disk"):
        base = tmp_path / place
        (base / "notes").mkdir(parents=True)
        (base / "notes" / "todo.txt").write_text(f"mine, in {place}\n")
        (base / "another-project" / ".git").mkdir(parents=True)
        (base / "another-project" / "main.c").write_text("int main() {}\n")
        (base / "cpu-results").mkdir()
        (base / "cpu-results" / "data.bin").write_bytes(bytes(range(256)))
        made.append(base)
    return made


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_BUILD_DIR", raising=False)
    monkeypatch.delenv("SCCACHE_DIR", raising=False)
    root = tmp_path / "checkout"
    root.mkdir()
    return root


@pytest.fixture(params=["parent", "shared", "symlink"])
def any_root(request, checkout, tmp_path, monkeypatch):
    """The checkout with its build root as `..`, a shared directory, or a `build` link
    to another disk, each beside things that are not ours: after the test, every one
    of those is still there, byte for byte."""
    others = bystanders(tmp_path)
    if request.param == "parent":
        monkeypatch.setenv("VLLM_BUILD_DIR", "..")
    elif request.param == "shared":
        monkeypatch.setenv("VLLM_BUILD_DIR", str(tmp_path / "shared"))
    else:
        (checkout / "build").symlink_to(tmp_path / "disk")
    before = snapshot(*others)
    yield checkout
    after = snapshot(*others)
    assert {k: after.get(k) for k in before} == before


def test_one_target_then_everything(checkout):
    make_checkout(checkout)
    lines = clean.clean("cuda", root=checkout)
    assert lines[0] == "removed .venv-cuda (venv of cuda, 0.00 GB)"
    assert lines[-1].startswith("freed 0.00 GB: the cuda target's build dirs and venvs")
    assert (checkout / ".venv-cpu").exists() and not (checkout / ".venv-cuda").exists()

    lines = clean.clean(root=checkout)
    assert f"removed build/cpu-torch{CPU_PIN}-cp311 (build dir of cpu, 0.00 GB)" in lines
    assert "removed .venv-cpu (venv of cpu, 0.00 GB)" in lines
    assert any(line.startswith("removed build/precompiled (staged") for line in lines)
    assert any(line.startswith("removed compile_commands.json (editor file") for line in lines)
    assert "removed CMakeUserPresets.json (only our presets were in it)" in lines
    assert lines[-1] == "freed 0.00 GB: this checkout's build dirs and venvs"
    left = sorted(p.name for p in checkout.iterdir() if not p.name.endswith(".lock"))
    assert left == [".git", "README.md", "build"]
    assert clean.clean(root=checkout) == [
        "nothing to clean: this checkout's build dirs and venvs are already gone"
    ]


def test_freed_size_is_counted(checkout):
    make_checkout(checkout)
    planned = clean.removals("cpu", checkout)
    assert sum(clean.size_of(r.path) for r in planned) >= 4_000_000


def test_tracked_files_are_never_removed(checkout):
    make_checkout(checkout)
    (checkout / "build" / "precompiled" / "keep.txt").write_text("tracked\n")
    subprocess.run(
        ["git", "-C", str(checkout), "add", "-f", "build/precompiled/keep.txt"], check=True
    )
    with pytest.raises(
        DevkitError, match=r"^not cleaning: git tracks files in .*build/precompiled"
    ):
        clean.clean(root=checkout)
    # Nothing was removed: the check comes before any deletion.
    assert (checkout / ".venv-cpu").exists() and (checkout / ".venv-cuda").exists()


def test_the_parent_as_build_root_keeps_the_checkout_and_its_siblings(checkout, monkeypatch):
    """VLLM_BUILD_DIR=.. : this checkout's builds go to a subdirectory of its own there."""
    others = bystanders(checkout.parent)
    (checkout / "edit.py").write_text("uncommitted\n")
    monkeypatch.setenv("VLLM_BUILD_DIR", "..")
    build_dir = make_checkout(checkout)
    assert build_dir.parent == checkout.parent / layout.checkout_key(checkout)
    before = snapshot(*others, checkout / ".git", checkout / "edit.py", checkout / "README.md")
    lines = clean.clean(root=checkout)
    assert not build_dir.exists() and not (checkout / ".venv-cpu").exists()
    assert snapshot(*others, checkout / ".git", checkout / "edit.py", checkout / "README.md") == (
        before
    )
    assert not any("sibling" in line or "notes" in line for line in lines)


def test_a_shared_root_keeps_what_is_not_this_checkouts(checkout, tmp_path, monkeypatch):
    others = bystanders(tmp_path)
    shared = tmp_path / "shared"
    # Another checkout's build in the same shared root.
    neighbour = tmp_path / "neighbour"
    neighbour.mkdir()
    monkeypatch.setenv("VLLM_BUILD_DIR", str(shared))
    theirs = make_checkout(neighbour)
    ours = make_checkout(checkout)
    assert theirs.parent != ours.parent and theirs.parent.parent == ours.parent.parent == shared
    before = snapshot(*others, neighbour)
    before = {k: v for k, v in before.items() if not k.startswith(str(ours.parent) + "/")}
    clean.clean(root=checkout)
    assert not ours.exists()
    assert snapshot(*others, neighbour) == before


def test_a_shared_roots_build_dirs_from_before_the_subdirectories(checkout, tmp_path, monkeypatch):
    """Build dirs at the top of a shared root (made before each checkout had its own
    subdirectory) are ours only if their plan names a venv of this checkout."""
    shared = tmp_path / "shared"
    monkeypatch.setenv("VLLM_BUILD_DIR", str(shared))
    make_checkout(checkout)
    mine = shared / f"cpu-torch{CPU_PIN}-cp311"
    make_build(checkout, mine)
    neighbour = tmp_path / "neighbour"
    theirs = shared / f"cpu-torch{CPU_PIN}-cp311-plugins"
    make_build(neighbour, theirs, ".venv-plugins")
    before = snapshot(theirs)
    lines = clean.clean(root=checkout)
    assert not mine.exists() and snapshot(theirs) == before
    assert any(
        line.startswith(f"removed {mine} (build dir of cpu, from before the per-checkout")
        for line in lines
    )
    assert not any(str(theirs) in line for line in lines)


def test_a_symlinked_build_root_loses_only_our_build_dirs(checkout, tmp_path):
    others = bystanders(tmp_path)
    disk = tmp_path / "disk"
    (checkout / "build").symlink_to(disk)
    # A link inside the build root to a build dir elsewhere: the link is not followed.
    elsewhere = tmp_path / "sibling-project" / f"cpu-torch{CPU_PIN}-cp311-x"
    make_build(checkout, elsewhere, ".venv-x")
    (disk / elsewhere.name).symlink_to(elsewhere)
    build_dir = make_checkout(checkout)
    assert build_dir.parent == checkout / "build"
    before = snapshot(*others)
    before.pop(str(disk / "precompiled"))
    before = {k: v for k, v in before.items() if not k.startswith(f"{disk / build_dir.name}/")}
    before.pop(str(disk / build_dir.name))
    lines = clean.clean(root=checkout)
    assert f"left alone build/{elsewhere.name} (a link: nothing behind it is removed)" in lines
    assert "left alone build/notes (not ours: no build's plan.json in it)" in lines
    assert not (disk / build_dir.name).exists()
    assert snapshot(*others) == before
    assert (checkout / "build").is_symlink()


def test_the_checkout_itself_as_build_root_is_refused(checkout, monkeypatch):
    make_checkout(checkout)
    monkeypatch.setenv("VLLM_BUILD_DIR", ".")
    before = snapshot(checkout)
    with pytest.raises(DevkitError, match=r"^not cleaning: the build root .* holds the checkout"):
        clean.clean(root=checkout)
    assert snapshot(checkout) == before


def test_a_home_relative_build_root_is_cleaned(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VLLM_BUILD_DIR", "~/x")
    build_dir = make_checkout(checkout)
    assert build_dir.is_relative_to(tmp_path / "home" / "x")
    lines = clean.clean(root=checkout)
    assert any(line.startswith(f"removed {build_dir} (build dir of cpu") for line in lines)
    assert not build_dir.exists()


def test_what_the_build_preserves_clean_preserves(any_root):
    checkout = any_root
    make_checkout(checkout)
    mine = {"name": "mine", "generator": "Ninja", "binaryDir": "/tmp/mine"}
    path = checkout / presets.PRESETS_FILE
    data = json.loads(path.read_text())
    data["configurePresets"].append(mine)
    path.write_text(json.dumps(data))
    (checkout / "compile_commands.json").unlink()
    (checkout / "compile_commands.json").write_text('[{"file": "mine.c"}]\n')
    # A venv made by hand (CONTRIBUTING's "By hand"), which a build's plan names,
    # and one named like ours but not made by a session.
    byhand = layout.build_root(None, checkout) / f"cpu-torch{CPU_PIN}-cp311-byhand"
    make_build(checkout, byhand, ".venv")
    make_venv(checkout / ".venv", ours=False)
    make_venv(checkout / ".venv-mine", ours=False)
    before = snapshot(
        checkout / ".venv", checkout / ".venv-mine", checkout / "compile_commands.json"
    )
    lines = clean.clean(root=checkout)
    assert "removed our presets cpu from CMakeUserPresets.json; yours are kept" in lines
    assert json.loads(path.read_text())["configurePresets"] == [mine]
    assert "left alone compile_commands.json (a file of your own, not our link)" in lines
    assert "left alone .venv (a venv made by hand, named by a build's plan)" in lines
    assert "left alone .venv-mine (no devkit mark: not made by a session)" in lines
    after = snapshot(
        checkout / ".venv", checkout / ".venv-mine", checkout / "compile_commands.json"
    )
    assert after == before


def test_dry_run_lists_and_removes_nothing(any_root):
    checkout = any_root
    make_checkout(checkout)
    before = snapshot(checkout, layout.build_root(None, checkout))
    lines = clean.clean(root=checkout, dry_run=True)
    assert "would remove .venv-cpu (venv of cpu, 0.00 GB)" in lines
    assert "would remove our presets from CMakeUserPresets.json; yours are kept" in lines
    assert lines[-1] == "would free 0.01 GB: this checkout's build dirs and venvs"
    assert snapshot(checkout, layout.build_root(None, checkout)) == before


# Holds the build's lock (argv[1]), as a build does; releases when stdin closes.
HOLDER = """
import sys
sys.path.insert(0, {tools!r})
from pathlib import Path
from devkit.foundation import lock
with lock.hold(Path(sys.argv[1]), "the build in b", print):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_clean_waits_for_a_running_build_and_says_whose(any_root):
    checkout = any_root
    build_dir = make_checkout(checkout)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(tools=str(TOOLS)), str(build_dir / "build.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    said: list[str] = []
    result: list[list[str]] = []
    thread = threading.Thread(
        target=lambda: result.append(clean.clean("cpu", root=checkout, say=said.append))
    )
    thread.start()
    while not said:
        time.sleep(0.05)
    assert said[0] == f"waiting for the build in b (pid {holder.pid}) to finish"
    assert build_dir.exists()  # nothing removed under a running build
    holder.stdin.close()
    holder.wait()
    thread.join(timeout=60)
    assert not build_dir.exists() and result[0][-1].startswith("freed ")


def test_clean_unregisters_the_bench_worktree(checkout):
    make_checkout(checkout)
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    src = checkout / "build" / "bench-against" / "0123456789ab" / "src"
    subprocess.run([*git, "worktree", "add", "-q", "--detach", str(src), "HEAD"], check=True)
    lines = clean.clean(root=checkout)
    assert "unregistered the bench worktrees from git (`git worktree prune`)" in lines
    listed = subprocess.run(
        [*git, "worktree", "list", "--porcelain"], capture_output=True, text=True
    )
    assert listed.stdout.count("worktree ") == 1 and not src.exists()


def test_plain_clean_keeps_sccache_and_all_empties_the_one_devkit_uses(
    checkout, tmp_path, monkeypatch
):
    """Issue 21: build/sccache is not a build dir; --all empties it, not ~/.cache/sccache."""
    make_checkout(checkout)
    home_cache = tmp_path / "home" / ".cache" / "sccache"
    home_cache.mkdir(parents=True)
    (home_cache / "blob").write_text("someone else's\n")
    ours = checkout / "build" / "sccache"
    ours.mkdir()
    (ours / "blob").write_bytes(b"z" * 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path / "ccache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    lines = clean.clean(root=checkout)
    assert "left alone build/sccache (sccache's local cache: kept; `-- --all` empties it)" in lines
    assert not any("build dir of sccache" in line for line in lines)
    assert (ours / "blob").exists()
    lines = clean.clean(everything=True, root=checkout)
    assert f"emptied {ours} (sccache's local cache, 0.00 GB)" in lines
    assert not ours.exists() and (home_cache / "blob").read_text() == "someone else's\n"


def test_all_empties_the_caches_it_is_pointed_at(checkout, tmp_path, monkeypatch):
    make_checkout(checkout)
    for name in ("ccache", "sccache", "uv"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "blob").write_bytes(b"z" * 2_000_000)
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path / "ccache"))
    monkeypatch.setenv("SCCACHE_DIR", str(tmp_path / "sccache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    lines = clean.clean(everything=True, root=checkout)
    assert f"emptied {tmp_path / 'ccache'} (ccache's cache, 0.00 GB)" in lines
    assert not (tmp_path / "ccache").exists() and not (tmp_path / "sccache").exists()
    assert any(line.startswith(f"emptied {tmp_path / 'uv'} (uv's cache") for line in lines)
    assert not (tmp_path / "uv" / "blob").exists()
    assert lines[-1].startswith("freed 0.01 GB: this checkout's build dirs and venvs and the")


def test_all_refuses_a_cache_variable_that_holds_the_checkout_or_home(checkout, monkeypatch):
    build_dir = make_checkout(checkout)
    keep = checkout / "csrc" / "keep.cpp"
    keep.parent.mkdir(exist_ok=True)
    keep.write_text("// ours\n")
    monkeypatch.setenv("CCACHE_DIR", str(checkout.parent))
    with pytest.raises(DevkitError, match="not emptying ccache's cache .*: it holds .*CCACHE_DIR"):
        clean.clean(everything=True, root=checkout)
    monkeypatch.setenv("CCACHE_DIR", str(checkout / "ccache"))
    monkeypatch.setenv("SCCACHE_DIR", str(Path.home()))
    with pytest.raises(DevkitError, match="not emptying sccache's local cache"):
        clean.clean(everything=True, root=checkout)
    assert keep.read_text() == "// ours\n" and build_dir.is_dir()  # refused before anything


def test_an_unknown_target_is_one_line(checkout):
    with pytest.raises(DevkitError, match="unknown target 'gpu'"):
        clean.clean("gpu", root=checkout)


def test_nox_clean_with_the_parent_as_build_root_end_to_end(tmp_path):
    """The session itself, as the issue ran it: `VLLM_BUILD_DIR=.. nox -s clean`."""
    from test_sessions import nox

    from devkit.foundation.gitbase import copy_checkout

    others = bystanders(tmp_path)
    copy = copy_checkout(tmp_path / "checkout")
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    (copy / "edit.py").write_text("uncommitted\n")
    before = snapshot(*others, copy)
    dry = nox(copy, "-s", "clean", "--", "--dry-run", VLLM_BUILD_DIR="..")
    assert dry.returncode == 0 and "Traceback" not in dry.stderr, dry.stderr
    result = nox(copy, "-s", "clean", VLLM_BUILD_DIR="..")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "nothing to clean" in result.stderr
    after = snapshot(*others, copy)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == before
    refused = nox(copy, "-s", "build-cpu", VLLM_BUILD_DIR="a;b")
    assert "VLLM_BUILD_DIR=a;b holds ';', which CMake reads as a list separator" in refused.stderr


def test_nox_clean_during_a_real_build_waits_for_it(tmp_path):
    """A clean started while build-cpu compiles waits for the build (saying whose it
    is), then removes what it made; the build itself succeeds."""
    from test_faults import BUILD, start_build
    from test_sessions import nox, summary

    from devkit.foundation.gitbase import copy_checkout

    copy = copy_checkout(tmp_path / "copy")
    log = tmp_path / "build.log"
    build = start_build(copy, log)  # returns once a compiler runs
    cleaning = nox(copy, "-s", "clean", timeout=BUILD)
    assert build.wait(timeout=BUILD) == 0, log.read_text()[-3000:]
    summary(subprocess.CompletedProcess([], 0, log.read_text(), log.read_text()))
    assert cleaning.returncode == 0, cleaning.stderr[-3000:]
    said = cleaning.stderr
    assert "waiting for the build in build/cpu-torch" in said and "to finish" in said
    assert "removed .venv-cpu (venv of cpu" in said
    assert "removed build/cpu-torch" in said
    assert not (copy / ".venv-cpu").exists()
    assert not list((copy / "build").glob("cpu-torch*"))
