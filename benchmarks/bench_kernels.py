"""Kernel speed against the layers' pure-torch reference, a plain copy, or another build.

    python benchmarks/bench_kernels.py --device cpu            # nox -s bench-kernels
    python benchmarks/bench_kernels.py --device cuda --compile
    nox -s bench-kernels -- --against HEAD~1                   # A/B against a commit

One build: for every op the kernel's time (median), the bytes it must move
(read + written) per second, that rate as a share of a same-sized device
copy timed in alternation with the kernel (each run then finds the caches
holding the other's data, as a kernel in a model does), for an op that
rewrites its inputs also as a share of one pass over them (`x *= 1` of each:
the floor of any such kernel, where a copy's share passes 100% because a
copy reads its destination in first), and the speedup over `forward_native`
in eager mode and under torch.compile (default on CPU; --compile / --no-compile).

A/B (--against-lib, which `nox -s bench-kernels -- --against REF` passes
with REF's built extension, see tools/devkit/commands/bench.py): worker processes,
each with its own extension loaded as `vllm._C` (both builds register the
same op names, so one process can't hold both) and its own, identical,
inputs: the new build, the old one, and the new one again (the control,
the noise of unchanged code; --no-control leaves it out). Rounds go through
them in rotating order, one timing while the others wait; a round times
every case once, as the fastest of --repeats samples. Per case, the rounds'
speed ratios new/old (old time / new time; > 1 is faster) give a median, its
95% interval and a verdict, "faster", "slower" or "no change"
(tools/devkit/commands/verdict.py says how), printed with warnings for sizes too small
to time and rounds too few to decide, and written as JSON and a PNG chart.
The exit status is 1 when a case is slower by more than --threshold percent
(and than the control's noise), so a kernel PR can gate on it. Ratios, not
asserts: timings belong here, not in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from devkit.commands import verdict  # noqa: E402  (stdlib at import; numpy and scipy when judging)

OPS = (
    "rms_norm",
    "fused_add_rms_norm",
    "silu_and_mul",
    "gelu_and_mul",
    "rotary_embedding[neox]",
    "rotary_embedding[gptj]",
    "reshape_and_cache[in order]",
    "reshape_and_cache[shuffled]",
    "reshape_and_cache[sparse]",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REPLY = "@@bench "  # prefix of a worker's reply line on stdout
SAMPLE_SECONDS = 1e-3  # A/B: a sample is this many seconds of calls in a row, at least


@dataclass
class Case:
    op: str
    dtype: str
    shape: str
    nbytes: int  # bytes the op must move (read + written)
    kernel: Callable[[], object]
    native: Callable[[], object]
    outputs: tuple[torch.Tensor, ...] = field(default=())  # what the kernel writes
    in_place: bool = False  # its outputs are its inputs, rewritten

    def one_pass(self) -> None:
        """The least an op can do to its outputs: read each and write it back (x *= 1)."""
        for out in self.outputs:
            out.mul_(1)

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
    pass_share: float | None  # in-place ops: the time of Case.one_pass / the kernel's
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


def once(device: torch.device, fn: Callable[[], object], loops: int = 1) -> float:
    """Seconds per call of fn, over `loops` calls in a row."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(True), torch.cuda.Event(True)
        start.record()
        for _ in range(loops):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / loops
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops


def sample(
    device: torch.device, fn: Callable[[], object], loops: int, clock: str
) -> tuple[float, bool]:
    """Seconds per call of fn over `loops` calls in a row, by `clock`; and whether the
    OS took a CPU from one of this process's threads meanwhile (preempted).

    clock "cpu" is the CPU time of all the process's threads (a thread waiting
    for a CPU uses none), "wall" the elapsed time; on a GPU both are the
    device's elapsed time.
    """
    if device.type == "cuda":
        return once(device, fn, loops), False
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(loops):
        fn()
    w1, c1 = time.perf_counter(), time.process_time()
    preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw != switches
    return ((c1 - c0) if clock == "cpu" else (w1 - w0)) / loops, preempted


def timer(device: torch.device, repeats: int) -> Callable[..., list[float]]:
    """Median seconds of each fn over `repeats` runs, after warm-up.

    Given several fns, the runs alternate between them (a b a b ...), so that
    a noisy neighbour or a change of clock falls on all of them alike.
    """

    def measure(*fns: Callable[[], object]) -> list[float]:
        for fn in fns:
            for _ in range(3):
                fn()
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for fn, times in zip(fns, samples, strict=True):
                times.append(once(device, fn))
        return [statistics.median(times) for times in samples]

    return measure


def selected(args: argparse.Namespace, op: str) -> bool:
    """Whether --ops names op: exactly, or as its family (rotary_embedding: both styles).

    A family is selected when one of its members is (its inputs are made once for all).
    """
    if not args.ops:
        return True
    return any(
        op == name or op.startswith(name + "[") or name.startswith(op + "[")
        for name in args.ops.split(",")
    )


def with_extra_passes(case: Case, passes: int) -> Case:
    """case, its kernel followed by `passes` passes over its outputs (a planted slowdown)."""
    if passes <= 0:
        return case

    def slower() -> None:
        case.kernel()
        for _ in range(passes):
            case.one_pass()

    return dataclasses.replace(case, kernel=slower)


def norm_and_act_cases(
    args: argparse.Namespace, tokens: int, hidden: int, dtype_name: str, device: torch.device
) -> Iterator[Case]:
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul
    from vllm.model_executor.layers.layernorm import RMSNorm

    dtype = DTYPES[dtype_name]
    es = dtype.itemsize
    shape = f"{tokens}x{hidden}"
    if selected(args, "rms_norm") or selected(args, "fused_add_rms_norm"):
        x = torch.randn(tokens, hidden, dtype=dtype, device=device)
        norm = RMSNorm(hidden, dtype=dtype).to(device)
        out = torch.empty_like(x)
        residual, x2 = torch.randn_like(x), x.clone()  # the fused op writes both
    # (op, passes over a tokens x hidden tensor, kernel, native, outputs)
    norms = (
        (
            "rms_norm",
            2,
            lambda: ops.rms_norm(out, x, norm.weight, 1e-6),
            lambda: norm.forward_native(x),
            lambda: (out,),
        ),
        (
            "fused_add_rms_norm",
            4,
            lambda: ops.fused_add_rms_norm(x2, residual, norm.weight, 1e-6),
            lambda: norm.forward_native(x, residual),
            lambda: (x2, residual),
        ),
    )
    for name, passes, kernel, native, outputs in norms:
        if selected(args, name):
            nbytes = (passes * tokens * hidden + hidden) * es
            in_place = name == "fused_add_rms_norm"
            yield Case(name, dtype_name, shape, nbytes, kernel, native, outputs(), in_place)
    if selected(args, "silu_and_mul") or selected(args, "gelu_and_mul"):
        gate = torch.randn(tokens, 2 * hidden, dtype=dtype, device=device)
        act_out = torch.empty(tokens, hidden, dtype=dtype, device=device)
    for name, op, layer in (
        ("silu_and_mul", ops.silu_and_mul, SiluAndMul()),
        ("gelu_and_mul", ops.gelu_and_mul, GeluAndMul()),
    ):
        if not selected(args, name):
            continue
        yield Case(
            name,
            dtype_name,
            f"{tokens}x{2 * hidden}",
            3 * tokens * hidden * es,
            lambda op=op: op(act_out, gate),
            lambda layer=layer: layer.forward_native(gate),
            (act_out,),
        )


def rotary_and_cache_cases(
    args: argparse.Namespace, tokens: int, dtype_name: str, device: torch.device
) -> Iterator[Case]:
    """rotary_embedding (NeoX, GPT-J) at 32 heads x 128; reshape_and_cache at 8 kv heads."""
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

    dtype = DTYPES[dtype_name]
    es = dtype.itemsize
    heads, kv_heads, head_size, block = 32, 8, 128, 16
    if selected(args, "rotary_embedding"):
        positions = torch.randint(0, 8192, (tokens,), device=device)
        q = torch.randn(tokens, heads * head_size, dtype=dtype, device=device)
        k = torch.randn(tokens, kv_heads * head_size, dtype=dtype, device=device)
        moved = 2 * (q.numel() + k.numel()) * es + tokens * head_size * es + tokens * 8
    for style, neox in (("neox", True), ("gptj", False)):
        if not selected(args, f"rotary_embedding[{style}]"):
            continue
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
            (q, k),
            in_place=True,
        )

    x = 16 // es
    scale = torch.ones((), device=device)
    # in order: a prefill filling its blocks; shuffled: every slot of the
    # cache once, in random order; sparse: a random half of a cache twice
    # the size (decode-like: partly filled blocks).
    full_blocks = max(1, -(-tokens // block))
    if selected(args, "reshape_and_cache"):
        key = torch.randn(tokens, kv_heads, head_size, dtype=dtype, device=device)
        value = torch.randn_like(key)
    for order, blocks in (("in order", full_blocks), ("shuffled", full_blocks)) + (
        ("sparse", 2 * full_blocks),
    ):
        if not selected(args, f"reshape_and_cache[{order}]"):
            continue
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
            (key_cache, value_cache),
        )


def all_cases(args: argparse.Namespace, device: torch.device) -> Iterator[Case]:
    torch.manual_seed(0)
    for dtype_name in args.dtypes.split(","):
        for hidden in args.hidden.split(","):
            yield from norm_and_act_cases(args, args.tokens, int(hidden), dtype_name, device)
        yield from rotary_and_cache_cases(args, args.tokens, dtype_name, device)


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
    measure = timer(device, args.repeats)
    name = device_name(device)
    compile_native = args.compile if args.compile is not None else device.type == "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows: list[Row] = []
    for case in all_cases(args, device):
        timed = [case.kernel, same_sized_copy(case.nbytes, device)]
        if case.in_place:
            timed.append(case.one_pass)
        kernel_s, copy_s, *pass_s = measure(*timed)
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
            pass_s[0] / kernel_s if pass_s else None,
            eager_s / kernel_s,
            compiled_s / kernel_s if compiled_s else None,
        )
        rows.append(row)
        vs_compile = f"{row.vs_compile:6.2f}x" if row.vs_compile else "     -"
        of_pass = f"{row.pass_share:6.0%} of a pass" if row.pass_share else " " * 16
        print(
            f"{case.op:28s} {case.dtype:5s} {case.shape:14s} {row.kernel_us:10.1f} us "
            f"{gbps:8.1f} GB/s {row.copy_share:6.0%} of copy {of_pass}  "
            f"{row.vs_eager:6.2f}x eager  {vs_compile} compile",
            flush=True,
        )
    if args.json:
        payload = {"device": name, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(payload, indent=1))


def worker(args: argparse.Namespace, device: torch.device) -> None:
    """One build's side of an A/B run: a round per "round" line on stdin.

    A round times each case as the fastest of --repeats samples, a sample
    being enough calls in a row to last SAMPLE_SECONDS (counted in the first
    round, which is a warm-up), after one call that brings its data back
    into the caches.
    """
    load_extension(args.lib or None)
    loops: dict[str, int] = {}
    for line in sys.stdin:
        if line.strip() != "round":
            break
        # Fresh inputs (the same values) every round: where they land in memory
        # (which pages, huge or not) then varies from round to round, instead of
        # favouring one process for the whole run.
        cases: list[Case] = []
        cases = [with_extra_passes(c, args.plant_slowdown) for c in all_cases(args, device)]
        times: dict[str, float | None] = {}
        preempted: dict[str, bool] = {}
        for case in cases:
            try:
                if case.key not in loops:
                    for _ in range(3):
                        case.kernel()
                    single = once(device, case.kernel)
                    loops[case.key] = max(1, min(1000, math.ceil(SAMPLE_SECONDS / single)))
                case.kernel()
                n = loops[case.key]
                times[case.key], preempted[case.key] = min(
                    sample(device, case.kernel, n, args.clock) for _ in range(args.repeats)
                )
            except (RuntimeError, AttributeError, TypeError) as exc:  # op absent or changed
                print(f"{case.key}: {str(exc).splitlines()[0]}", file=sys.stderr)
                times[case.key] = None
        print(REPLY + json.dumps({"times": times, "preempted": preempted}), flush=True)


class Worker:
    """A worker process of this script for one build."""

    def __init__(self, args: argparse.Namespace, lib: str, plant: int = 0) -> None:
        cmd = [sys.executable, __file__, "--worker", "--lib", lib, "--device", args.device]
        cmd += ["--dtypes", args.dtypes, "--tokens", str(args.tokens), "--hidden", args.hidden]
        cmd += ["--ops", args.ops or "", "--plant-slowdown", str(plant), "--clock", args.clock]
        cmd += ["--repeats", str(args.repeats)]
        env = dict(os.environ)
        if args.device == "cpu" and args.clock == "cpu":
            # OpenMP threads waiting for a sibling that lost its CPU sleep instead of
            # spinning (libgomp spins for milliseconds), so the wait costs no CPU time.
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def round(self) -> dict[str, dict]:
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
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_ab(args: argparse.Namespace, device: torch.device) -> int:
    """This venv's build (new) against --against-lib (old), rounds interleaved; the exit status."""
    sides = {"new": Worker(args, "", args.plant_slowdown)}
    sides["old"] = Worker(args, args.against_lib)
    if args.control:  # the new build again: the noise of unchanged code
        sides["control"] = Worker(args, "", args.plant_slowdown)
    rounds: dict[str, list[dict[str, dict]]] = {name: [] for name in sides}
    order = list(sides)
    try:
        for side in sides.values():  # warm-up: thread pools, caches, lazy inits, loop counts
            side.round()
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:  # rotating
                rounds[name].append(sides[name].round())
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for side in sides.values():
            side.close()

    def times(name: str, key: str) -> list[float | None]:
        return [r["times"].get(key) for r in rounds[name]]

    label = args.against_name or Path(args.against_lib).name
    threshold = args.threshold / 100
    verdicts = []
    for key in rounds["new"][0]["times"]:
        control = times("control", key) if args.control else None
        verdicts.append(
            verdict.judge(key, times("new", key), times("old", key), control, threshold=threshold)
        )
    status = verdict.exit_status(verdicts)
    flags = [f for side in rounds.values() for r in side for f in r["preempted"].values()]
    preempted = sum(flags) / max(1, len(flags))

    threads = torch.get_num_threads()
    clock = "the device's elapsed time" if device.type == "cuda" else f"{args.clock} clock"
    print(f"A/B on {device_name(device)}, torch {torch.__version__}, {threads} threads, {clock}:")
    print(f"  new = working tree{' (planted slowdown)' if args.plant_slowdown else ''}")
    print(f"  old = {label}")
    print(
        f"speed new/old (> 1: faster): the median of {args.rounds} rounds, each the fastest "
        f"of {args.repeats} samples, and its 95% interval"
    )
    if args.control:
        print("same build: the working tree against itself in a third process (the noise)")
    for line in verdict.report(verdicts, threshold):
        print(line, flush=True)
    if device.type == "cpu":
        print(
            f"{preempted:.0%} of the rounds' fastest samples lost a CPU to another process"
            + (
                ": the wall clock measured the load, not the kernel; --clock cpu"
                if args.clock == "wall" and preempted > 0.25
                else ""
            )
        )

    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"ab-{time.strftime('%Y%m%d-%H%M%S')}"
    results = []
    for v in verdicts:
        entry = v.as_json()
        for name, side_rounds in rounds.items():
            entry[f"{name}_s"] = [r["times"].get(v.case) for r in side_rounds]
        results.append(entry)
    payload = {"device": device_name(device), "torch": torch.__version__, "threads": threads}
    payload.update(old=label, rounds=args.rounds, repeats=args.repeats, clock=args.clock)
    payload.update(threshold=threshold, control=args.control, planted=args.plant_slowdown)
    payload.update(preempted=preempted, exit_status=status, results=results)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    chart(verdicts, label, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")
    return status


def chart(verdicts: list[verdict.Verdict], label: str, path: Path) -> None:
    """Each case's median ratio and 95% interval, coloured only where the verdict is a change.

    The grey span around 1 is the band of no change (the threshold, or the
    control's difference where larger); the hollow marker under each case
    is the control, the working tree against itself: the noise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shown = [v for v in verdicts if v.ratio is not None]
    colours = {verdict.FASTER: "tab:green", verdict.SLOWER: "tab:red"}
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(shown) + 1.6))
    xs = [1.0]
    for y, v in enumerate(shown):
        assert v.ratio is not None
        ax.barh(y, 2 * math.sinh(v.band), left=math.exp(-v.band), height=0.8, color="0.88")
        for interval, dy, style in ((v.ratio, 0.0, "o"), (v.control, 0.25, "o")):
            if interval is None:
                continue
            err = None
            if interval.known:
                err = [[interval.median - interval.low], [interval.high - interval.median]]
                xs += [interval.low, interval.high]
            xs.append(interval.median)
            control = dy > 0
            colour = "0.45" if control else colours.get(v.verdict or "", "0.3")
            ax.errorbar(
                interval.median,
                y + dy,
                xerr=err,
                fmt=style,
                color=colour,
                mfc="white" if control else colour,
                markersize=4 if control else 6,
                capsize=2,
                linewidth=0.8 if control else 1.4,
            )
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    lo, hi = min(min(xs), 0.9) / 1.05, max(max(xs), 1.1) * 1.05
    ax.set_xlim(lo, hi)
    ticks = (0.1, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 4, 5, 10)
    ax.set_xticks([t for t in ticks if lo <= t <= hi], minor=False)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2gx"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yticks(range(len(shown)), [f"{v.case}: {v.verdict}" for v in shown], fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -0.6)
    ax.set_xlabel(f"speed new / old ({label}); > 1 is faster")
    ax.legend(
        handles=[
            Line2D([], [], marker="o", color="0.3", label="new/old, 95% interval"),
            Line2D([], [], marker="o", color="0.45", mfc="white", label="same build (noise)"),
            Patch(color="0.88", label="no-change band"),
            Patch(color="tab:red", label="slower"),
            Patch(color="tab:green", label="faster"),
        ],
        fontsize=7,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=5,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def fail(message: str) -> None:
    print(f"bench_kernels.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def check(args: argparse.Namespace) -> None:
    """One line naming the bad value and what to pass instead, and exit 2."""
    for name in (args.ops or "").split(","):
        if name and not any(op == name or op.startswith(name + "[") for op in OPS):
            fail(
                f"--ops {name}: no such op; choose from {', '.join(OPS)} (or rotary_embedding, ...)"
            )
    for dtype in args.dtypes.split(","):
        if dtype not in DTYPES:
            fail(f"--dtypes {dtype}: no such dtype; choose from {', '.join(DTYPES)}")
    if args.rounds < 1:
        fail(f"--rounds {args.rounds}: pass 1 or more ({verdict.MIN_ROUNDS} to get a verdict)")
    if args.repeats is not None and args.repeats < 1:
        fail(f"--repeats {args.repeats}: pass 1 or more")
    if args.threshold < 0:
        fail(f"--threshold {args.threshold}: pass a percentage, 0 or more (e.g. 5)")
    if args.plant_slowdown < 0:
        fail(f"--plant-slowdown {args.plant_slowdown}: pass a number of passes, 0 or more")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", default="4096", help="comma-separated")
    parser.add_argument(
        "--ops", help="comma-separated ops to time (default: all): " + ", ".join(OPS)
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="default: 20 (10 per A/B round on cpu)"
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="A/B on cpu: what a sample measures. cpu (default): the CPU time of all the "
        "worker's threads, which a neighbour's load does not add to (it takes CPUs away, "
        "and time without a CPU is not counted); blind to how the work is split between "
        "threads. wall: the elapsed time, for a quiet machine",
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
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help=f"A/B rounds (default 10; {verdict.MIN_ROUNDS} at least for a verdict)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=verdict.DEFAULT_THRESHOLD * 100,
        help="A/B: a change in speed smaller than this percentage is 'no change'; the run "
        "exits 1 when a case is slower by more (default 5)",
    )
    parser.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="A/B: also time the working tree against itself in a third process, the noise "
        "of unchanged code (default: on)",
    )
    parser.add_argument(
        "--plant-slowdown",
        type=int,
        default=0,
        metavar="PASSES",
        help="A/B self-check: the working tree's kernels each make PASSES extra passes over "
        "their outputs; the verdict should be 'slower'",
    )
    parser.add_argument("--out", help="A/B: directory for the JSON and PNG")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    check(args)
    device = torch.device(args.device)
    if args.repeats is None:
        args.repeats = 10 if args.against_lib and device.type == "cpu" else 20
    with torch.inference_mode():
        if args.worker:
            worker(args, device)
        elif args.against_lib:
            raise SystemExit(run_ab(args, device))
        else:
            run_one_build(args, device)


if __name__ == "__main__":
    main()
