"""The installed extension says what it was built with, and it matches this process."""

import torch

import vllm.build_info


def test_build_info_matches_the_running_torch(device):
    info = vllm.build_info.get()
    assert info is not None, "no vllm/_build_info.json: rebuild with nox -s build-cpu"
    assert info["torch_version"] == torch.__version__
    assert info["cuda_version"] == torch.version.cuda
    assert info["target"] == ("cpu" if device.type == "cpu" else "cuda")
    assert info["python_abi"] == "abi3" and info["cxx11_abi"] in (0, 1)
