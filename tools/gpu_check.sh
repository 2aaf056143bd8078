#!/usr/bin/env bash
# The CUDA path on a GPU machine, in one go: build for the local arch against
# the machine's own torch, run the kernel tests on the GPU, benchmark.
#   tools/gpu_check.sh [OUT_DIR]        (logs and bench.json land in OUT_DIR)
# The GPU image has torch but no nox/uv and no network: put their wheels in
# .whl/ first (CONTRIBUTING.md, "On a GPU machine without network").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-out}
mkdir -p "$out"

if [ -d .whl ]; then
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site" PATH="$site/bin:$PATH"
  export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="$PWD/.whl" UV_OFFLINE=1
fi
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv | tee "$out/gpu.txt"
status=0
python3 -m nox -s build-cuda -- --use-existing-torch 2>&1 | tee "$out/build.log" || status=1
# A failing input check must raise, not crash (it segfaulted once on an H200):
# one bad call, with what the answer depends on, before the whole suite.
{
  g++ --version | head -1
  nvcc --version | tail -1
  so=$(python3 -c "import vllm._C; print(vllm._C.__file__)" 2>/dev/null)
  echo "extension: $so"
  nm -C "$so" | grep -E "_M_insert|__ostream_insert" || true
  python3 -X faulthandler -c "
import torch, vllm._custom_ops as ops
x, out = torch.randn(4, 7, device='cuda'), torch.empty(4, 3, device='cuda')
try:
    ops.silu_and_mul(out, x)
except RuntimeError as exc:
    print('bad input raised RuntimeError:', str(exc).splitlines()[0])"
  echo "exit status $?"
} > "$out/bad-input.txt" 2>&1
cat "$out/bad-input.txt"
python3 -m nox -s test-kernels-cuda -- --use-existing-torch -n 8 -q tests/kernels 2>&1 \
  | tee "$out/tests.log" || status=1
python3 -m nox -s bench-kernels -- --use-existing-torch --dtypes bf16 --hidden 4096,8192 \
  --compile --json "$out/bench-bf16.json" 2>&1 | tee "$out/bench-bf16.log" || status=1
python3 -m nox -s bench-kernels -- --use-existing-torch --dtypes fp16 --hidden 4096,8192 \
  --compile --json "$out/bench-fp16.json" 2>&1 | tee "$out/bench-fp16.log" || status=1
exit $status
