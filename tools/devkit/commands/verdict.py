"""The A/B's verdict per case: faster, slower or no change, from interleaved rounds.

`nox -s bench-kernels -- --against REF` (benchmarks/bench_kernels.py) times
every case once per round in three processes, in rotating order: the new
build, the old build (REF), and the new build again, the *control*. A round
keeps the fastest of its calls (a neighbour's load only ever adds time).

For each case, the rounds give paired speed ratios new/old (old time / new
time; > 1 is faster), and this module turns them into a verdict:

- **The estimate** is the median ratio over rounds, with its 95% interval
  from the sign test (scipy.stats.quantile_test): distribution-free, so a
  round that a neighbour's build slowed moves it no more than any other.
  Below 6 rounds no 95% interval exists: every case is "no change", with a
  warning.
- **The noise of unchanged code** is the control: the same build against
  itself in another process, whose median ratio is off 1 by whatever two
  processes differ in (memory placement, which core, the load).
- **The band**: a change counts only when it is larger than `threshold`
  (5% by default) and larger than the control's own difference.
- **The verdict**: "faster" when the whole interval lies above the band,
  "slower" when it lies below, else "no change". A "no change" whose
  interval crosses an edge of the band is *undecided* (a warning: more
  rounds, or a quieter machine, would settle it).
- **Too small**: a case whose calls take under `MIN_SECONDS` is timed
  mostly as Python's and torch's dispatch, not the kernel: a warning.

`exit_status` is what a kernel PR gates on: 1 when a case is slower, else 0.

numpy and scipy are imported when judging (requirements/bench.txt installs
them), so that the noxfile can import devkit without them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

FASTER, SLOWER, NO_CHANGE = "faster", "slower", "no change"
CONFIDENCE = 0.95
DEFAULT_THRESHOLD = 0.05  # changes in speed smaller than this are "no change"
MIN_ROUNDS = 6  # the fewest rounds with a 95% interval for the median (sign test)
# A call faster than this is mostly dispatch (Python, torch's dispatcher, the
# timer): what an A/B of it says is not about the kernel.
MIN_SECONDS = 100e-6


@dataclass(frozen=True)
class Interval:
    """A median speed ratio over rounds and its confidence interval (nan: too few rounds)."""

    median: float
    low: float
    high: float

    @property
    def known(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def show(self) -> str:
        if not self.known:
            return f"{self.median:5.2f}x [   -    ]"
        return f"{self.median:5.2f}x [{self.low:.2f}-{self.high:.2f}]"


@dataclass(frozen=True)
class Verdict:
    """What the rounds of one case say."""

    case: str
    verdict: str | None  # FASTER, SLOWER, NO_CHANGE; None: not timed in both builds
    ratio: Interval | None  # speed new/old
    control: Interval | None  # speed of the new build against itself (None: no control)
    band: float  # |log ratio| within which a change is "no change"
    decided: bool  # False: too few rounds, or the interval crosses an edge of the band
    fastest_s: float | None  # the new build's fastest round, seconds per call
    rounds: int  # rounds timed in both builds

    @property
    def too_small(self) -> bool:
        return self.fastest_s is not None and self.fastest_s < MIN_SECONDS

    def as_json(self) -> dict:
        def interval(value: Interval | None) -> dict | None:
            if value is None:
                return None
            known = value.known
            return {
                "median": value.median,
                "low": value.low if known else None,
                "high": value.high if known else None,
            }

        return {
            "case": self.case,
            "verdict": self.verdict,
            "ratio": interval(self.ratio),
            "control": interval(self.control),
            "band": [math.exp(-self.band), math.exp(self.band)],
            "decided": self.decided,
            "too_small": self.too_small,
            "fastest_s": self.fastest_s,
            "rounds": self.rounds,
        }


def median_interval(ratios: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The median of `ratios` and its interval from the sign test, on their logarithms."""
    import numpy as np
    from scipy import stats

    logs = np.log(np.asarray(ratios, dtype=float))
    ci = stats.quantile_test(logs, q=0.0, p=0.5).confidence_interval(confidence)
    return Interval(float(np.exp(np.median(logs))), float(np.exp(ci.low)), float(np.exp(ci.high)))


def _paired(first: Sequence[float | None], second: Sequence[float | None]) -> list[float]:
    """Per round, second / first: the speed of `first` relative to `second`."""
    return [b / a for a, b in zip(first, second, strict=True) if a and b]


def judge(
    case: str,
    new: Sequence[float | None],
    old: Sequence[float | None],
    control: Sequence[float | None] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    confidence: float = CONFIDENCE,
) -> Verdict:
    """The verdict on one case from its per-round times (seconds; None: not run).

    `new`, `old` and `control` (the new build again, in its own process) are
    the same rounds, in order.
    """
    if threshold < 0:
        raise ValueError(f"threshold {threshold} is negative; pass 0 or more (0.05 is 5%)")
    ratios = _paired(new, old)
    if not ratios:
        return Verdict(case, None, None, None, 0.0, True, None, 0)
    ratio = median_interval(ratios, confidence)
    band = math.log1p(threshold)
    control_interval = None
    if control is not None:
        control_ratios = _paired(new, control)
        if control_ratios:
            control_interval = median_interval(control_ratios, confidence)
            band = max(band, abs(math.log(control_interval.median)))
    fastest = min(t for t in new if t)
    verdict, decided = NO_CHANGE, False
    if ratio.known:
        low, high = math.log(ratio.low), math.log(ratio.high)
        if low > band:
            verdict = FASTER
        elif high < -band:
            verdict = SLOWER
        decided = verdict != NO_CHANGE or (low >= -band and high <= band)
    return Verdict(case, verdict, ratio, control_interval, band, decided, fastest, len(ratios))


def exit_status(verdicts: Sequence[Verdict]) -> int:
    """1 when a case is slower (beyond the band, with confidence), else 0."""
    return 1 if any(v.verdict == SLOWER for v in verdicts) else 0


def warnings(verdicts: Sequence[Verdict], confidence: float = CONFIDENCE) -> list[str]:
    """Why some verdicts say less than they seem to: one line per reason, naming the cases."""
    judged = [v for v in verdicts if v.ratio is not None]
    lines = []
    few = [v for v in judged if v.ratio is not None and not v.ratio.known]
    if few:
        rounds = min(v.rounds for v in few)
        lines.append(
            f"{rounds} rounds are too few to decide: a {confidence:.0%} interval needs "
            f"{MIN_ROUNDS} at least (--rounds; the default is 10), so "
            + ("no case" if len(few) == len(judged) else f"{len(few)} cases")
            + " can claim a change"
        )
    small = [v for v in judged if v.too_small]
    if small:
        lines.append(
            f"too small to time, under {MIN_SECONDS * 1e6:.0f} us a call, where dispatch and "
            "the timer outweigh the kernel (more --tokens or --hidden): "
            + ", ".join(f"{v.case} {(v.fastest_s or 0) * 1e6:.1f} us" for v in small)
        )
    unsure = [v for v in judged if v.ratio is not None and v.ratio.known and not v.decided]
    if unsure:
        lines.append(
            "undecided, the interval crossing an edge of the no-change band (more --rounds, "
            "or a quieter machine, would settle it): "
            + ", ".join(
                f"{v.case} [{v.ratio.low:.2f}-{v.ratio.high:.2f}] vs "
                f"[{math.exp(-v.band):.2f}-{math.exp(v.band):.2f}]"
                for v in unsure
                if v.ratio is not None
            )
        )
    return lines


def report(verdicts: Sequence[Verdict], threshold: float) -> list[str]:
    """The table, the warnings and the summary, as printed lines."""
    control = any(v.control is not None for v in verdicts)
    width = max([len(v.case) for v in verdicts] + [4])
    head = f"  {'case':{width}s}  new/old [95% interval]"
    head += "  same build (noise)" if control else ""
    lines = [head + "  verdict"]
    for v in verdicts:
        if v.ratio is None:
            lines.append(f"  {v.case:{width}s}  {'-':>22s}  (not timed in both builds)")
            continue
        row = f"  {v.case:{width}s}  {v.ratio.show():>22s}"
        if control:
            row += f"  {v.control.show() if v.control else '-':>19s}"
        mark = "" if v.decided else " (undecided)"
        lines.append(f"{row}  {v.verdict}{mark}")
    found = warnings(verdicts)
    if found:
        lines += ["warnings:", *(f"  - {line}" for line in found)]
    judged = [v for v in verdicts if v.verdict]
    counts = {name: sum(v.verdict == name for v in judged) for name in (FASTER, SLOWER, NO_CHANGE)}
    undecided = sum(not v.decided for v in judged)
    summary = f"{counts[SLOWER]} slower, {counts[FASTER]} faster, {counts[NO_CHANGE]} no change"
    summary += f" ({undecided} undecided)" if undecided else ""
    summary += f" of {len(judged)} cases; threshold {threshold:.0%}"
    if exit_status(verdicts):
        summary += (
            "; exit status 1: a case is slower beyond the band (the threshold, or the "
            "same build's difference if larger; --threshold sets it)"
        )
    lines.append(summary)
    return lines
