"""Small helpers shared across vllm (torch-dependent ones in `torch_utils`)."""
