"""The gate's statistical rule (perf.verdict) and its reading of sides (perf.gate), on synthetic samples:
deterministic, whatever the machine is doing. Noisy samples are seeded log-normal draws with the
run-to-run spread measured on this machine (coefficient of variation 0.13, README "Benchmarks")."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("asv_runner", reason="asv is not installed (tox -e bench runs these tests)")

from perf.gate import compare, status, table  # noqa: E402
from perf.verdict import decide, interval  # noqa: E402

CV = 0.13


def noisy(rng: np.random.Generator, median: float, n: int) -> list[float]:
    return list(median * rng.lognormal(0.0, CV, n))


@pytest.mark.parametrize(("baseline", "candidate", "factor", "expected"), [
    ([100.0] * 3, [100.0] * 3, 1.02, "same"),
    ([100.0] * 2, [104.6] * 2, 1.02, "worse"),  # a deterministic count: by the factor alone
    ([100.0] * 2, [101.9] * 2, 1.02, "same"),
    ([100.0] * 2, [90.0] * 2, 1.02, "better"),
    ([100.0, 100.1], [101.5, 101.6], 1.015, "inconclusive"),  # within the noise of the factor
    ([10.0, 40.0], [35.0, 50.0], 1.2, "inconclusive"),  # ratio 1.7, but the ranges overlap
])
def test_rule_on_small_samples(baseline: list[float], candidate: list[float], factor: float, expected: str) -> None:
    assert decide(baseline, candidate, factor).status == expected


def test_noisy_regressions_are_found_with_enough_samples() -> None:
    """40 samples a side (the gate's default: 2 rounds of 20) resolve a 1.3x slowdown at factor 1.2 on
    samples as noisy as this machine's, and never call unchanged code worse (9 times in 10 they rule a
    regression out; else they say the noise is too large)."""
    rng = np.random.default_rng(0)
    slowed = [decide(noisy(rng, 1.0, 40), noisy(rng, 1.3, 40), 1.2).status for _ in range(200)]
    unchanged = [decide(noisy(rng, 1.0, 40), noisy(rng, 1.0, 40), 1.2).status for _ in range(200)]
    assert slowed.count("worse") >= 190 and "same" not in slowed
    assert "worse" not in unchanged and unchanged.count("same") >= 180


def test_too_few_noisy_samples_are_inconclusive_not_a_pass() -> None:
    rng = np.random.default_rng(1)
    verdicts = [decide(noisy(rng, 1.0, 3), noisy(rng, 1.3, 3), 1.2) for _ in range(50)]
    assert {v.status for v in verdicts} <= {"worse", "inconclusive"}
    assert all(v.noise > 0.03 for v in verdicts if v.status == "inconclusive")


def test_interval_is_the_99_percent_interval_of_the_median_or_the_range() -> None:
    samples = list(np.arange(1.0, 101.0))
    median, low, high = interval(samples)
    assert median == 50.5 and 35 < low < 50 < high < 66  # order statistics of Bin(100, 1/2) at 99%
    median, low, high = interval([1.0, 2.0, 4.0])  # too few for order statistics: t on the logarithms
    assert median == 2.0 and low == pytest.approx(2 * np.exp(-9.925 * np.log(2) / np.sqrt(3)))
    assert interval([5.0]) == (5.0, 5.0, 5.0)


@pytest.mark.parametrize(("baseline", "candidate", "factor", "message"), [
    ([], [1.0], 1.2, "no samples"),
    ([1.0], [float("nan")], 1.2, "finite"),
    ([-1.0], [1.0], 1.2, "non-negative"),
    ([1.0], [1.0], 1.0, "factor"),
])
def test_bad_input_is_named(baseline, candidate, factor, message) -> None:
    with pytest.raises(ValueError, match=message):
        decide(baseline, candidate, factor)


BENCH = "bench_counted.BatchNorm.track_cost"


def test_exit_status_and_table() -> None:
    """1 when anything got worse or failed, else 3 when anything is inconclusive, else 0, and 2 when nothing
    was compared; the table lists what is not `same`, worst first."""
    a, b, c = ("x", (1, 8)), ("x", (2, 8)), ("x", (3, 8))
    baseline = {(BENCH, a): [100.0], (BENCH, b): [100.0], (BENCH, c): [100.0, 100.01]}
    same = {(BENCH, a): [100.0], (BENCH, b): [100.5], (BENCH, c): [100.0, 100.005]}
    assert status(compare(baseline, same, 1.02)) == 0
    assert table(compare(baseline, same, 1.02)).count("\n") == 1  # the header alone

    inconclusive = {**same, (BENCH, c): [99.0, 104.0]}
    assert status(compare(baseline, inconclusive, 1.02)) == 3

    worse = {**inconclusive, (BENCH, b): [110.0]}
    verdicts = compare(baseline, worse, 1.02)
    assert status(verdicts) == 1
    rows = table(verdicts).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["worse", "inconclusive"]
    assert "1.100" in rows[0] and "('x', (2, 8))" in rows[0]

    failed = {k: v for k, v in same.items() if k != (BENCH, a)}
    verdicts = compare(baseline, failed, 1.02)
    assert status(verdicts) == 1 and table(verdicts).splitlines()[2].startswith("| failed |")

    # A baseline that measured nothing (every benchmark timed out, say) compares nothing: never a pass.
    assert status(compare({}, same, 1.02)) == 2 and status(compare({}, {}, 1.02)) == 2


@pytest.mark.parametrize(("baseline", "candidate", "expected"), [
    ([0.0], [0.0], "same"), ([0.0], [0.3], "worse"), ([0.3], [0.0], "same"), ([0.0, 0.0], [0.0, 0.2], "inconclusive"),
])
def test_exact_zeros(baseline: list[float], candidate: list[float], expected: str) -> None:
    """An error ratio is exactly 0 where an implementation computes what the reference computes."""
    assert decide(baseline, candidate, 1.2).status == expected
