"""An out-of-tree vllm plugin: a platform, and a general plugin that adds an op."""

from __future__ import annotations


def detect_platform() -> str | None:
    """vllm.platform_plugins: the platform class when the hardware is present.

    A real plugin probes its device here and returns None without it; this
    example's "device" is the CPU, so it is always present.
    """
    return "vllm_plugin_example.platform:ExamplePlatform"


def register() -> None:
    """vllm.general_plugins: registers the op `torch.ops.vllm_example.scale`."""
    import torch

    if hasattr(torch.ops.vllm_example, "scale"):
        return
    library = torch.library.Library("vllm_example", "DEF")
    library.define("scale(Tensor x, float factor) -> Tensor")
    library.impl("scale", lambda x, factor: x * factor, "CompositeExplicitAutograd")
    register.library = library  # keep the registration alive
