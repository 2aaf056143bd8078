"""CMake presets and the compile_commands link, checked with the real cmake."""

import json
import subprocess
from pathlib import Path

from conftest import CPU_TORCH, build_tool, cmake
from test_rocm import fake_rocm

from devkit.build import presets
from devkit.toolchains import plan, targets

ROOT = Path(__file__).resolve().parents[2]

CMAKE = cmake()
NINJA_DIR = str(Path(build_tool("ninja") or "").parent)

PROJECT = """\
cmake_minimum_required(VERSION 3.26)
project(tiny LANGUAGES C)
add_library(tiny SHARED tiny.c)
install(TARGETS tiny LIBRARY DESTINATION vllm)
"""


def tiny_plan(tmp_path: Path, name: str = "cpu") -> plan.BuildPlan:
    found = plan.resolve(plan.Request("cpu"), CPU_TORCH, {"VLLM_COMPILER_CACHE": "off"})
    return plan.BuildPlan(**{**found.__dict__, "build_dir": tmp_path / "build", "name": name})


def run_cmake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{NINJA_DIR}:/usr/bin:/bin"}
    return subprocess.run(
        [CMAKE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_presets_configure_build_and_install_with_cmake(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text(PROJECT)
    (tmp_path / "tiny.c").write_text("int tiny(void) { return 1; }\n")
    found = tiny_plan(tmp_path)
    presets.write_presets(found, tmp_path)
    env = {"PATH": f"{NINJA_DIR}:/usr/bin:/bin"}

    def cmake(*args: str) -> str:
        out = subprocess.run(
            [CMAKE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    assert '"cpu-install"' in cmake("--list-presets=build")
    cmake("--preset", "cpu")
    cache = (tmp_path / "build" / "CMakeCache.txt").read_text()
    assert "VLLM_TARGET_DEVICE:UNINITIALIZED=cpu" in cache
    cmake("--build", "--preset", "cpu-install")
    assert (tmp_path / "build" / "editable" / "vllm" / "libtiny.so").is_file()

    link = presets.link_compile_commands(found.build_dir, tmp_path)
    assert link and link.resolve() == (found.build_dir / "compile_commands.json").resolve()
    entries = json.loads(link.read_text())
    assert [Path(e["file"]).name for e in entries] == ["tiny.c"]


def test_presets_of_other_names_are_kept_and_ours_replaced(tmp_path):
    (tmp_path / presets.PRESETS_FILE).write_text(
        json.dumps(
            {
                "version": 6,
                "configurePresets": [{"name": "mine", "binaryDir": "/x"}, {"name": "cpu"}],
                "buildPresets": [{"name": "cpu-install"}],
            }
        )
    )
    presets.write_presets(tiny_plan(tmp_path), tmp_path)
    presets.write_presets(tiny_plan(tmp_path, "cpu-plugins"), tmp_path)
    written = json.loads((tmp_path / presets.PRESETS_FILE).read_text())
    assert written["version"] == 6
    names = [p["name"] for p in written["configurePresets"]]
    assert names == ["mine", "cpu", "cpu-plugins"]
    builds = {p["name"]: p for p in written["buildPresets"]}
    assert builds["cpu-install"]["targets"] == ["install"]
    assert builds["cpu"]["jobs"] >= 1 and set(builds) == {
        "cpu",
        "cpu-install",
        "cpu-plugins",
        "cpu-plugins-install",
    }


def test_a_users_own_compile_commands_is_left_alone(tmp_path):
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "compile_commands.json").write_text("[]")
    (tmp_path / "compile_commands.json").write_text("mine")
    assert presets.link_compile_commands(tmp_path / "build", tmp_path) is None
    assert (tmp_path / "compile_commands.json").read_text() == "mine"
    assert presets.link_compile_commands(tmp_path / "nothing", tmp_path) is None


# What CMakeLists.txt's rocm branch asks of its cache before any HIP compile, with
# the real cmake/utils.cmake: the plan, the hipified tree, the build info.
ROCM_PROJECT = """\
cmake_minimum_required(VERSION 3.26)
project(tiny LANGUAGES CXX)
include("{utils}")
vllm_read_plan(VLLM_PLAN "${{VLLM_PLAN_FILE}}")
vllm_hipified_sources(SOURCES "${{VLLM_HIPIFIED_DIR}}" csrc/a_kernels.cu)
message(STATUS "SOURCES=${{SOURCES}}")
vllm_write_build_info(vllm "${{VLLM_PLAN}}")
"""


def test_a_fresh_rocm_preset_carries_everything_the_configure_needs(tmp_path):
    """`cmake --preset rocm` in an empty build dir: VLLM_HIPIFIED_DIR, ROCm, the arch and
    the build info all come from the plan (they once came from the backend alone)."""
    home = fake_rocm(tmp_path / "rocm")
    rocm_torch = plan.expected_torch(targets.get_target("rocm"))  # the pin
    found = plan.resolve(
        plan.Request("rocm", arch="gfx942", build_dir=str(tmp_path / "build")),
        rocm_torch,
        {"ROCM_PATH": str(home), "VLLM_COMPILER_CACHE": "off"},
    )
    found.write()
    (tmp_path / "CMakeLists.txt").write_text(
        ROCM_PROJECT.format(utils=ROOT / "cmake" / "utils.cmake")
    )
    found.hipified_dir.mkdir(parents=True)  # the backend's hipify, standing in
    (found.hipified_dir / "a_kernels.hip").write_text("")
    presets.write_presets(found, tmp_path)
    preset = json.loads((tmp_path / presets.PRESETS_FILE).read_text())["configurePresets"][0]
    assert preset["cacheVariables"]["VLLM_HIPIFIED_DIR"] == str(found.hipified_dir)
    assert preset["environment"]["PYTORCH_ROCM_ARCH"] == "gfx942"

    out = run_cmake(tmp_path, "--preset", "rocm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"-- SOURCES={found.hipified_dir}/a_kernels.hip\n" in out.stdout
    cache = (found.build_dir / "CMakeCache.txt").read_text()
    assert "CMAKE_HIP_ARCHITECTURES:UNINITIALIZED=gfx942" in cache
    info = json.loads((found.build_dir / "_build_info.json").read_text())
    assert (info["target"], info["gpu_arch"], info["hip_version"], info["torch_abi"]) == (
        "rocm",
        "gfx942",
        rocm_torch.hip,
        "full",
    )
    assert info["git_commit"] == found.git_commit and info["compiler"].startswith("GNU ")

    # Without the plan file CMake stops with the one line that says where plans come from.
    found.plan_file.unlink()
    (found.build_dir / "CMakeCache.txt").unlink()
    out = run_cmake(tmp_path, "--preset", "rocm")
    error = " ".join(out.stderr.split())
    assert out.returncode != 0 and "/plan.json' is not a file: configure through" in error
