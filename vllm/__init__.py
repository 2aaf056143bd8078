"""vllm: a vLLM-shaped package whose product is its developer workflow.

Importing the package stays cheap (no torch); the compiled ops load with
`vllm._custom_ops`, the layers with `vllm.model_executor.layers`.
"""

from vllm.version import __version__

__all__ = ["__version__"]
