"""Plugin loading, with examples/vllm_plugin_example installed (nox -s test-plugins).

Each case runs in a fresh interpreter: plugins load, and the platform is
resolved, once per process.
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

try:
    importlib.metadata.version("vllm-plugin-example")
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        "examples/vllm_plugin_example is not installed; nox -s test-plugins installs it",
        allow_module_level=True,
    )

PROBE = """
import json
from vllm.platforms import current_platform
from vllm.plugins import load_general_plugins
ran = load_general_plugins()
again = load_general_plugins()
print(json.dumps({"platform": type(current_platform).__name__,
                  "oot": current_platform.is_out_of_tree(),
                  "device_name": current_platform.device_name,
                  "capability": current_platform.get_device_capability(),
                  "ran": ran, "again": again}))
"""


def probe(plugins: str | None, code: str = PROBE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_PLUGINS"}
    if plugins is not None:
        env["VLLM_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def result(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_one_active_oot_platform_wins():
    got = result(probe("example_platform"))
    assert got["platform"] == "ExamplePlatform"
    assert got["oot"] and got["device_name"] == "example"
    assert got["capability"] == [1, 0]
    assert got["ran"] == []  # no general plugin allowed


def test_allow_list_filters_and_general_plugins_run_once():
    got = result(probe("example_general"))
    assert got["platform"] == "CpuPlatform"  # no platform plugin allowed: built-in detection
    assert got["ran"] == ["example_general"]
    assert got["again"] == []


def test_general_plugin_registers_something_observable():
    code = (
        "import torch\nfrom vllm.plugins import load_general_plugins\nload_general_plugins()\n"
        "print(torch.ops.vllm_example.scale(torch.ones(2), 3.0).tolist())"
    )
    completed = probe("example_general", code)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[3.0, 3.0]"


def test_two_active_oot_platforms_fail_in_one_line():
    completed = probe(None)
    assert completed.returncode != 0
    last = completed.stderr.strip().splitlines()[-1]
    assert last == (
        "RuntimeError: two out-of-tree platforms are active: "
        "example_platform (vllm_plugin_example.platform:ExamplePlatform), "
        "example_platform_2 (vllm_plugin_example.platform:ExamplePlatform); "
        "keep one with VLLM_PLUGINS=<its name>"
    )


def test_broken_plugin_is_reported_not_fatal():
    completed = probe("example_general,example_broken,example_platform")
    got = result(completed)
    assert got["ran"] == ["example_general"]
    assert got["platform"] == "ExamplePlatform"
    assert (
        "plugin example_broken (vllm.general_plugins) failed to load: "
        "ImportError('vllm_plugin_example.broken is broken on purpose')"
    ) in completed.stderr
