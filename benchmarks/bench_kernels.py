"""Kernel speed against the layers' pure-torch reference, a plain copy, or another build.

    python benchmarks/bench_kernels.py --device cpu            # nox -s bench-kernels
    python benchmarks/bench_kernels.py --device cuda --compile
    nox -s bench-kernels -- --against HEAD~1                   # A/B against a commit

One build: for every op the kernel's time (median), the bytes it must move
(read + written) per second, that rate as a share of a same-sized device
copy timed in alternation with the kernel (each run then finds the caches
holding the other's data, as a kernel in a model does), and the speedup over
`forward_native` in
eager mode and under torch.compile (default on CPU; --compile / --no-compile).

A/B (--against-lib, which `nox -s bench-kernels -- --against REF` passes
with REF's built extension, see tools/devkit/bench.py): two worker
processes, each with its own extension loaded as `vllm._C` (both register
the same op names, so one process can't hold both) and its own, identical,
inputs. Rounds alternate between them (A B A B ...), one timing while the
other waits; each round times every case once (median of --repeats). The
ratio new/old of speeds (old time / new time; > 1 is faster) is reported per
op and dtype as its median with the min-max over rounds, and written as JSON
and a PNG chart. Ratios, not asserts: timings belong here, not in tests.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REPLY = "@@bench "  # prefix of a worker's reply line on stdout


@dataclass
class Case:
    op: str
    dtype: str
    shape: str
    nbytes: int  # bytes the op must move (read + written)
    kernel: Callable[[], object]
    native: Callable[[], object]

    @property
    def key(self) -> str:
        return f"{self.op} {self.dtype} {self.shape}"


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


def load_extension(lib: str | None) -> None:
    """Loads `lib` (a built _C.abi3.so) as vllm._C; None: the installed one."""
    if lib:
        loader = importlib.machinery.ExtensionFileLoader("vllm._C", lib)
        spec = importlib.util.spec_from_file_location("vllm._C", lib, loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["vllm._C"] = module
        loader.exec_module(module)
    import vllm._C  # noqa: F401


def timer(device: torch.device, repeats: int) -> Callable[..., list[float]]:
    """Median seconds of each fn over `repeats` runs, after warm-up.

    Given several fns, the runs alternate between them (a b a b ...), so that
    a noisy neighbour or a change of clock falls on all of them alike.
    """

    def once(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(True), torch.cuda.Event(True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def measure(*fns: Callable[[], object]) -> list[float]:
        for fn in fns:
            for _ in range(3):
                fn()
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for fn, times in zip(fns, samples, strict=True):
                times.append(once(fn))
        return [statistics.median(times) for times in samples]

    return measure


def norm_and_act_cases(
    tokens: int, hidden: int, dtype_name: str, device: torch.device
) -> Iterator[Case]:
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul
    from vllm.model_executor.layers.layernorm import RMSNorm

    dtype = DTYPES[dtype_name]
    es = dtype.itemsize
    x = torch.randn(tokens, hidden, dtype=dtype, device=device)
    out = torch.empty_like(x)
    norm = RMSNorm(hidden, dtype=dtype).to(device)
    residual, x2 = torch.randn_like(x), x.clone()  # the fused op writes both
    shape = f"{tokens}x{hidden}"
    yield Case(
        "rms_norm",
        dtype_name,
        shape,
        (2 * tokens * hidden + hidden) * es,
        lambda: ops.rms_norm(out, x, norm.weight, 1e-6),
        lambda: norm.forward_native(x),
    )
    yield Case(
        "fused_add_rms_norm",
        dtype_name,
        shape,
        (4 * tokens * hidden + hidden) * es,
        lambda: ops.fused_add_rms_norm(x2, residual, norm.weight, 1e-6),
        lambda: norm.forward_native(x, residual),
    )
    gate = torch.randn(tokens, 2 * hidden, dtype=dtype, device=device)
    for name, op, layer in (
        ("silu_and_mul", ops.silu_and_mul, SiluAndMul()),
        ("gelu_and_mul", ops.gelu_and_mul, GeluAndMul()),
    ):
        yield Case(
            name,
            dtype_name,
            f"{tokens}x{2 * hidden}",
            3 * tokens * hidden * es,
            lambda op=op: op(out, gate),
            lambda layer=layer: layer.forward_native(gate),
        )


def rotary_and_cache_cases(tokens: int, dtype_name: str, device: torch.device) -> Iterator[Case]:
    """rotary_embedding (NeoX, GPT-J) at 32 heads x 128; reshape_and_cache at 8 kv heads."""
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

    dtype = DTYPES[dtype_name]
    es = dtype.itemsize
    heads, kv_heads, head_size, block = 32, 8, 128, 16
    positions = torch.randint(0, 8192, (tokens,), device=device)
    q = torch.randn(tokens, heads * head_size, dtype=dtype, device=device)
    k = torch.randn(tokens, kv_heads * head_size, dtype=dtype, device=device)
    moved = 2 * (q.numel() + k.numel()) * es + tokens * head_size * es + tokens * 8
    for style, neox in (("neox", True), ("gptj", False)):
        rope = RotaryEmbedding(head_size, head_size, 8192, 10000.0, neox, dtype).to(device)
        yield Case(
            f"rotary_embedding[{style}]",
            dtype_name,
            f"{tokens}x{heads}x{head_size}",
            moved,
            lambda rope=rope, neox=neox: ops.rotary_embedding(
                positions, q, k, head_size, rope.cos_sin_cache, neox
            ),
            lambda rope=rope: rope.forward_native(positions, q, k),
        )

    key = torch.randn(tokens, kv_heads, head_size, dtype=dtype, device=device)
    value = torch.randn_like(key)
    x = 16 // es
    scale = torch.ones((), device=device)
    # in order: a prefill filling its blocks; shuffled: every slot of the
    # cache once, in random order; sparse: a random half of a cache twice
    # the size (decode-like: partly filled blocks).
    full_blocks = max(1, -(-tokens // block))
    for order, blocks in (("in order", full_blocks), ("shuffled", full_blocks)) + (
        ("sparse", 2 * full_blocks),
    ):
        key_cache = torch.zeros(
            blocks, kv_heads, head_size // x, block, x, dtype=dtype, device=device
        )
        value_cache = torch.zeros(blocks, kv_heads, head_size, block, dtype=dtype, device=device)
        if order == "in order":
            slots = torch.arange(tokens, device=device)
        else:
            slots = torch.randperm(blocks * block, device=device)[:tokens]

        def native(key_cache=key_cache, value_cache=value_cache, slots=slots) -> None:
            b, o = slots // block, slots % block
            key_cache[b, :, :, o, :] = key.view(tokens, kv_heads, head_size // x, x)
            value_cache[b, :, :, o] = value

        yield Case(
            f"reshape_and_cache[{order}]",
            dtype_name,
            f"{tokens}x{kv_heads}x{head_size}",
            4 * key.numel() * es,
            lambda key_cache=key_cache, value_cache=value_cache, slots=slots: ops.reshape_and_cache(
                key, value, key_cache, value_cache, slots, "auto", scale, scale
            ),
            native,
        )


def all_cases(args: argparse.Namespace, device: torch.device) -> Iterator[Case]:
    torch.manual_seed(0)
    for dtype_name in args.dtypes.split(","):
        for hidden in args.hidden.split(","):
            yield from norm_and_act_cases(args.tokens, int(hidden), dtype_name, device)
        yield from rotary_and_cache_cases(args.tokens, dtype_name, device)


def same_sized_copy(nbytes: int, device: torch.device) -> Callable[[], object]:
    """A copy_ that reads nbytes / 2 and writes nbytes / 2.

    The source is written first: never-written pages from torch.empty all map
    to the kernel's one zero page, whose reads hit the CPU's caches, and the
    copy would run faster than memory allows (~1.4x on a 2-core VM).
    """
    src = torch.ones(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else "cpu"


def run_one_build(args: argparse.Namespace, device: torch.device) -> None:
    """The kernels of this venv's build against forward_native and a copy."""
    load_extension(None)
    measure = timer(device, args.repeats or 20)
    name = device_name(device)
    compile_native = args.compile if args.compile is not None else device.type == "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows: list[Row] = []
    for case in all_cases(args, device):
        kernel_s, copy_s = measure(case.kernel, same_sized_copy(case.nbytes, device))
        (eager_s,) = measure(case.native)
        compiled_s = None
        if compile_native:
            torch._dynamo.reset()
            (compiled_s,) = measure(torch.compile(case.native))
        gbps = case.nbytes / kernel_s / 1e9
        row = Row(
            case.op,
            case.dtype,
            case.shape,
            kernel_s * 1e6,
            gbps,
            copy_s / kernel_s,
            eager_s / kernel_s,
            compiled_s / kernel_s if compiled_s else None,
        )
        rows.append(row)
        vs_compile = f"{row.vs_compile:6.2f}x" if row.vs_compile else "     -"
        print(
            f"{case.op:28s} {case.dtype:5s} {case.shape:14s} {row.kernel_us:10.1f} us "
            f"{gbps:8.1f} GB/s {row.copy_share:6.0%} of copy  "
            f"{row.vs_eager:6.2f}x eager  {vs_compile} compile",
            flush=True,
        )
    if args.json:
        payload = {"device": name, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(payload, indent=1))


def worker(args: argparse.Namespace, device: torch.device) -> None:
    """One build's side of an A/B run: a round per "round" line on stdin."""
    load_extension(args.lib or None)
    measure = timer(device, args.repeats or (20 if device.type == "cuda" else 5))
    cases = list(all_cases(args, device))
    for line in sys.stdin:
        if line.strip() != "round":
            break
        times: dict[str, float | None] = {}
        for case in cases:
            try:
                (times[case.key],) = measure(case.kernel)
            except (RuntimeError, AttributeError, TypeError) as exc:  # op absent or changed
                print(f"{case.key}: {str(exc).splitlines()[0]}", file=sys.stderr)
                times[case.key] = None
        print(REPLY + json.dumps(times), flush=True)


class Worker:
    """A worker process of this script for one build."""

    def __init__(self, args: argparse.Namespace, lib: str) -> None:
        cmd = [sys.executable, __file__, "--worker", "--lib", lib, "--device", args.device]
        cmd += ["--dtypes", args.dtypes, "--tokens", str(args.tokens), "--hidden", args.hidden]
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def round(self) -> dict[str, float | None]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_ab(args: argparse.Namespace, device: torch.device) -> None:
    """This venv's build (new) against --against-lib (old), rounds interleaved."""
    new, old = Worker(args, ""), Worker(args, args.against_lib)
    rounds: list[tuple[dict, dict]] = []
    try:
        new.round(), old.round()  # warm-up: thread pools, caches, lazy inits
        for r in range(args.rounds):
            rounds.append((new.round(), old.round()))  # A B A B ...
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        new.close()
        old.close()

    label = args.against_name or Path(args.against_lib).name
    print(f"A/B on {device_name(device)}, torch {torch.__version__}: new = working tree, ")
    print(f"old = {label}; speed ratio new/old (> 1: faster), median [min-max] of {args.rounds}")
    results = []
    for key in rounds[0][0]:
        ratios = [o[key] / n[key] for n, o in rounds if n.get(key) and o.get(key)]
        entry = {
            "case": key,
            "new_s": [n[key] for n, _ in rounds],
            "old_s": [o[key] for _, o in rounds],
        }
        if ratios:
            entry.update(ratio=statistics.median(ratios), min=min(ratios), max=max(ratios))
            print(
                f"  {key:48s} {entry['ratio']:6.2f}x  [{entry['min']:.2f}-{entry['max']:.2f}]",
                flush=True,
            )
        else:
            print(f"  {key:48s}      -  (not in both builds)", flush=True)
        results.append(entry)

    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"ab-{time.strftime('%Y%m%d-%H%M%S')}"
    payload = {"device": device_name(device), "torch": torch.__version__, "old": label}
    payload.update(rounds=args.rounds, results=results)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    chart(results, label, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")


def chart(results: list[dict], label: str, path: Path) -> None:
    """Horizontal bars of each case's ratio, min-max as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if "ratio" in r]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5))
    ys = range(len(shown))
    ratios = [r["ratio"] for r in shown]
    err = [[r["ratio"] - r["min"] for r in shown], [r["max"] - r["ratio"] for r in shown]]
    ax.barh(ys, ratios, xerr=err, color=["tab:green" if v >= 1 else "tab:red" for v in ratios])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys), [r["case"] for r in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"speed new / old ({label}); > 1 is faster")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", default="4096", help="comma-separated")
    parser.add_argument(
        "--repeats", type=int, default=None, help="default: 20 (5 per A/B round on cpu)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile of forward_native (default: on CPU)",
    )
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--against-lib", help="A/B: the old build's _C.abi3.so")
    parser.add_argument("--against-name", help="A/B: how to call the old build")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds (default 5)")
    parser.add_argument("--out", help="A/B: directory for the JSON and PNG")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    with torch.inference_mode():
        if args.worker:
            worker(args, device)
        elif args.against_lib:
            run_ab(args, device)
        else:
            run_one_build(args, device)


if __name__ == "__main__":
    main()
