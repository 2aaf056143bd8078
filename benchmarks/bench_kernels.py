"""Kernel speed against the layers' pure-torch reference and a plain copy.

    python benchmarks/bench_kernels.py --device cpu            # nox -s bench-kernels
    python benchmarks/bench_kernels.py --device cuda --compile

For every op: the kernel's time (median), the bytes it must move (read +
written) per second, that rate as a share of a same-sized device copy
measured in the same run, and the speedup over `forward_native` in eager
mode (and under torch.compile with --compile). Ratios, not asserts: timings
belong here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Row:
    op: str
    dtype: str
    shape: str
    kernel_us: float
    gbps: float
    copy_share: float  # kernel GB/s / copy GB/s
    vs_eager: float  # forward_native eager time / kernel time
    vs_compile: float | None


def timer(device: torch.device, repeats: int) -> Callable[[Callable[[], object]], float]:
    """Median seconds of fn over `repeats` runs, after warm-up."""

    def measure(fn: Callable[[], object]) -> float:
        for _ in range(3):
            fn()
        samples = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    return measure


def cases(tokens: int, hidden: int, dtype: torch.dtype, device: torch.device):
    """(name, shape, bytes moved, kernel fn, native fn) for each op."""
    es = torch.finfo(dtype).bits // 8
    x = torch.randn(tokens, hidden, dtype=dtype, device=device)
    out = torch.empty_like(x)
    norm = RMSNorm(hidden, dtype=dtype).to(device)
    residual, x2 = torch.randn_like(x), x.clone()  # the fused op writes both
    yield (
        "rms_norm",
        f"{tokens}x{hidden}",
        (2 * tokens * hidden + hidden) * es,
        lambda: ops.rms_norm(out, x, norm.weight, 1e-6),
        lambda: norm.forward_native(x),
    )
    yield (
        "fused_add_rms_norm",
        f"{tokens}x{hidden}",
        (4 * tokens * hidden + hidden) * es,
        lambda: ops.fused_add_rms_norm(x2, residual, norm.weight, 1e-6),
        lambda: norm.forward_native(x, residual),
    )
    gate = torch.randn(tokens, 2 * hidden, dtype=dtype, device=device)
    for name, op, layer in (
        ("silu_and_mul", ops.silu_and_mul, SiluAndMul()),
        ("gelu_and_mul", ops.gelu_and_mul, GeluAndMul()),
    ):
        yield (
            name,
            f"{tokens}x{2 * hidden}",
            3 * tokens * hidden * es,
            lambda op=op: op(out, gate),
            lambda layer=layer: layer.forward_native(gate),
        )


def rotary_and_cache(tokens: int, dtype: torch.dtype, device: torch.device):
    """rotary_embedding and reshape_and_cache at 32 heads x 128 (8 kv heads)."""
    es = torch.finfo(dtype).bits // 8
    heads, kv_heads, head_size, block = 32, 8, 128, 16
    rope = RotaryEmbedding(head_size, head_size, 8192, 10000.0, True, dtype).to(device)
    positions = torch.randint(0, 8192, (tokens,), device=device)
    q = torch.randn(tokens, heads * head_size, dtype=dtype, device=device)
    k = torch.randn(tokens, kv_heads * head_size, dtype=dtype, device=device)
    moved = 2 * (q.numel() + k.numel()) * es + tokens * head_size * es + tokens * 8
    yield (
        "rotary_embedding",
        f"{tokens}x{heads}x{head_size}",
        moved,
        lambda: ops.rotary_embedding(positions, q, k, head_size, rope.cos_sin_cache, True),
        lambda: rope.forward_native(positions, q, k),
    )
    key = torch.randn(tokens, kv_heads, head_size, dtype=dtype, device=device)
    value = torch.randn_like(key)
    blocks = tokens // block * 2
    x = 16 // es
    key_cache = torch.zeros(blocks, kv_heads, head_size // x, block, x, dtype=dtype, device=device)
    value_cache = torch.zeros(blocks, kv_heads, head_size, block, dtype=dtype, device=device)
    slots = torch.randperm(blocks * block, device=device)[:tokens]
    scale = torch.ones((), device=device)

    def native() -> None:
        b, o = slots // block, slots % block
        kc = key.view(tokens, kv_heads, head_size // x, x)
        key_cache[b, :, :, o, :] = kc
        value_cache[b, :, :, o] = value

    yield (
        "reshape_and_cache",
        f"{tokens}x{kv_heads}x{head_size}",
        4 * key.numel() * es,
        lambda: ops.reshape_and_cache(
            key, value, key_cache, value_cache, slots, "auto", scale, scale
        ),
        native,
    )


def copy_gbps(nbytes: int, device: torch.device, measure) -> float:
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / measure(lambda: dst.copy_(src)) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", default="4096", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=None, help="default: 20 cuda, 10 cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    device = torch.device(args.device)
    measure = timer(device, args.repeats or (20 if device.type == "cuda" else 10))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    rows: list[Row] = []
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        shapes = [(h, cases(args.tokens, int(h), dtype, device)) for h in args.hidden.split(",")]
        shapes.append((None, rotary_and_cache(args.tokens, dtype, device)))
        for _, generated in shapes:
            for op, shape, nbytes, kernel, native in generated:
                kernel_s = measure(kernel)
                eager_s = measure(native)
                compiled_s = None
                if args.compile:
                    torch._dynamo.reset()
                    compiled_s = measure(torch.compile(native))
                gbps = nbytes / kernel_s / 1e9
                row = Row(
                    op,
                    dtype_name,
                    shape,
                    kernel_s * 1e6,
                    gbps,
                    gbps / copy_gbps(nbytes, device, measure),
                    eager_s / kernel_s,
                    compiled_s / kernel_s if compiled_s else None,
                )
                rows.append(row)
                vs_compile = f"{row.vs_compile:6.2f}x" if row.vs_compile else "     -"
                print(
                    f"{op:20s} {dtype_name:5s} {shape:14s} {row.kernel_us:10.1f} us "
                    f"{gbps:8.1f} GB/s {row.copy_share:6.0%} of copy  "
                    f"{row.vs_eager:6.2f}x eager  {vs_compile} compile",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": name, "torch": torch.__version__, "rows": [asdict(r) for r in rows]},
                f,
                indent=1,
            )


if __name__ == "__main__":
    with torch.inference_mode():
        main()
