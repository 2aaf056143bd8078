"""The A/B verdict (tools/devkit/commands/verdict.py) on made-up rounds: statistics, not timings.

The rounds here are numbers chosen to have a known answer; the A/B of real
kernels, the planted slowdown included, is tests/kernels/test_bench_ab.py.
"""

import math
import random

import pytest

from devkit.commands import verdict

MS = 1e-3


def noisy(times: float, rounds: int, spread: float, seed: int) -> list[float]:
    """`rounds` times around `times`, each off by up to ±spread (uniform, seeded)."""
    rng = random.Random(seed)
    return [times * (1 + rng.uniform(-spread, spread)) for _ in range(rounds)]


def test_the_same_build_with_noise_is_no_change():
    new, old, control = (noisy(2 * MS, 10, 0.08, seed) for seed in (1, 2, 3))
    v = verdict.judge("rms_norm fp32 4096x4096", new, old, control)
    assert v.verdict == verdict.NO_CHANGE
    assert v.ratio is not None and v.ratio.low < 1 < v.ratio.high
    assert verdict.exit_status([v]) == 0


def test_twice_the_time_is_slower_and_fails_the_gate():
    new = noisy(4 * MS, 10, 0.08, 1)
    old, control = noisy(2 * MS, 10, 0.08, 2), noisy(4 * MS, 10, 0.08, 3)
    v = verdict.judge("silu_and_mul bf16 4096x8192", new, old, control)
    assert v.verdict == verdict.SLOWER and v.decided
    assert v.ratio is not None and v.ratio.high < 0.6
    assert verdict.exit_status([v]) == 1
    assert "exit status 1" in verdict.report([v], 0.05)[-1]


def test_half_the_time_is_faster_and_passes_the_gate():
    v = verdict.judge("x", noisy(1 * MS, 10, 0.05, 1), noisy(2 * MS, 10, 0.05, 2))
    assert v.verdict == verdict.FASTER
    assert verdict.exit_status([v]) == 0


def test_one_round_a_neighbour_slowed_moves_nothing():
    """The sign test's interval counts rounds: one round 5x slower is one round."""
    new = [2 * MS] * 11
    old = [2 * MS] * 11
    new[4] = 10 * MS
    v = verdict.judge("x", new, old)
    assert v.verdict == verdict.NO_CHANGE and v.decided
    assert v.ratio is not None and v.ratio.median == pytest.approx(1.0)


def test_a_change_within_the_threshold_is_no_change():
    new, old = [2.1 * MS] * 10, [2 * MS] * 10  # 5% more time: 0.952x
    assert verdict.judge("x", new, old, threshold=0.10).verdict == verdict.NO_CHANGE
    assert verdict.judge("x", new, old, threshold=0.02).verdict == verdict.SLOWER


def test_the_same_builds_difference_widens_the_band():
    """A 10% difference is no change when the build against itself differs by 12%."""
    new = noisy(2.2 * MS, 10, 0.01, 1)
    old = noisy(2.0 * MS, 10, 0.01, 2)
    alone = verdict.judge("x", new, old)
    assert alone.verdict == verdict.SLOWER
    control = noisy(2.2 / 1.12 * MS, 10, 0.01, 3)
    v = verdict.judge("x", new, old, control)
    assert v.verdict == verdict.NO_CHANGE
    assert math.exp(v.band) == pytest.approx(1.12, rel=0.02)


def test_five_rounds_are_too_few_to_decide():
    v = verdict.judge("x", [4 * MS] * 5, [2 * MS] * 5)
    assert v.verdict == verdict.NO_CHANGE and not v.decided
    assert v.ratio is not None and not v.ratio.known
    (line,) = verdict.warnings([v])
    assert "5 rounds are too few" in line and f"{verdict.MIN_ROUNDS} at least" in line
    six = verdict.judge("x", [4 * MS] * verdict.MIN_ROUNDS, [2 * MS] * verdict.MIN_ROUNDS)
    assert six.verdict == verdict.SLOWER


def test_microseconds_are_too_small_to_time():
    v = verdict.judge("rms_norm fp32 16x64", [3e-6] * 10, [3e-6] * 10)
    assert v.too_small
    (line,) = verdict.warnings([v])
    assert "too small to time" in line and "rms_norm fp32 16x64 3.0 us" in line


def test_an_interval_across_the_band_is_undecided():
    new = [2 * MS] * 5 + [2.4 * MS] * 5  # half the rounds 20% slower
    v = verdict.judge("x", new, [2 * MS] * 10)
    assert v.verdict == verdict.NO_CHANGE and not v.decided
    (line,) = verdict.warnings([v])
    assert line.startswith("undecided") and "x [" in line
    assert "no change (undecided)" in verdict.report([v], 0.05)[1]


def test_an_op_missing_from_one_build_has_no_verdict():
    v = verdict.judge("new_op fp32 4096", [2 * MS] * 10, [None] * 10)
    assert v.verdict is None and v.ratio is None
    assert verdict.exit_status([v]) == 0
    assert "(not timed in both builds)" in verdict.report([v], 0.05)[1]


def test_negative_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold -0.1 is negative"):
        verdict.judge("x", [MS] * 10, [MS] * 10, threshold=-0.1)


def test_json_has_the_verdict_and_its_interval():
    v = verdict.judge("x", [4 * MS] * 10, [2 * MS] * 10, [4 * MS] * 10)
    data = v.as_json()
    assert data["verdict"] == "slower" and data["decided"] is True
    assert data["ratio"]["low"] <= data["ratio"]["median"] <= data["ratio"]["high"]
    assert data["control"]["median"] == pytest.approx(1.0)
    assert data["band"][0] < 1 < data["band"][1]
