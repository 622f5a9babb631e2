"""The gate's statistical rule: is a candidate's metric worse than the baseline's by more than a factor,
not worse, or can the samples not tell?

Each side's samples (timings, or counted costs of repeated measurements; larger is worse) give a median
and an interval for it: the distribution-free 99% interval of asv's own statistics
(``asv_runner.statistics.quantile_ci``, order statistics of the binomial distribution); where there are
too few samples for that coverage (2 to 7), Student's t 99% interval of the mean of their logarithms
around the median; one sample is taken as exact (a deterministic metric measured once). The ratio of the medians,
candidate / baseline, gets the interval ``ratio * exp(±h)``, where ``h`` combines the two sides' relative
half-widths in log space in quadrature, ``h = sqrt(h_b² + h_c²)`` (each side's ``h`` is the larger of
``log(high / median)`` and ``log(median / low)``), as for the difference of two independent estimates.

- ``worse``: the ratio exceeds ``factor`` and its interval lies above 1 (the slowdown is real);
- ``inconclusive``: not worse, but the interval's upper bound exceeds ``factor``: the samples are too
  noisy to rule out a regression the factor cares about. ``noise`` says how noisy: ``exp(h) - 1``, the
  ratio's relative half-width;
- ``better``: the ratio is below ``1 / factor`` and its interval lies below 1;
- ``same``: anything else (a regression beyond ``factor`` is ruled out).

Deterministic metrics (all samples equal) have point intervals: worse exactly when the ratio exceeds the
factor. Where an interval reaches zero (an error ratio of exactly 0), the intervals are compared directly:
worse when the candidate's lies above the baseline's and the ratio exceeds the factor, same when the
candidate's upper end is within the factor of the baseline's lower end, else inconclusive.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from asv_runner.statistics import quantile_ci

__all__ = ["CONFIDENCE", "STATUSES", "Verdict", "decide", "interval"]

CONFIDENCE = 0.99
STATUSES = ("worse", "inconclusive", "better", "same")  # worst first
T_99 = (63.657, 9.925, 5.841, 4.604, 4.032, 3.707)  # Student's t, two-sided 99%, 1 to 6 degrees of freedom


def interval(samples: Sequence[float]) -> tuple[float, float, float]:
    """``(median, low, high)``: the median and its 99% interval (see the module's docstring)."""
    if not samples:
        raise ValueError("no samples")
    if any(not (math.isfinite(s) and s >= 0) for s in samples):
        raise ValueError(f"samples must be finite non-negative numbers (a cost, a time), got {list(samples)}")
    median, (low, high) = quantile_ci(list(samples), 0.5, alpha_min=1 - CONFIDENCE)
    if min(samples) == 0 and not (math.isfinite(low) and math.isfinite(high)):
        low, high = min(samples), max(samples)  # no logarithms of an exact zero (an error ratio of 0)
    elif len(samples) < len(T_99) + 2:
        logs = [math.log(s) for s in samples]
        h = T_99[len(samples) - 2] * statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
        low, high = median * math.exp(-h), median * math.exp(h)
    return median, low, high


@dataclass(frozen=True)
class Verdict:
    status: str
    ratio: float  # candidate median / baseline median
    low: float  # bounds of the ratio
    high: float
    noise: float  # the ratio's relative half-width
    baseline: float  # the medians
    candidate: float


def decide(baseline: Sequence[float], candidate: Sequence[float], factor: float) -> Verdict:
    """The verdict on one metric (see the module's docstring)."""
    if not factor > 1:
        raise ValueError(f"factor must be greater than 1, got {factor}")
    (b, b_low, b_high), (c, c_low, c_high) = interval(baseline), interval(candidate)
    if b_low == 0 or c_low == 0:  # no ratio of intervals that reach zero: compare them directly
        ratio = c / b if b else math.inf if c else 1.0
        worse, same = c_low > b_high and ratio > factor, c_high <= b_low * factor
        status = "worse" if worse else "same" if same else "inconclusive"
        return Verdict(status, ratio, math.nan, math.nan, math.nan, b, c)
    h = math.hypot(max(math.log(b_high / b), math.log(b / b_low)), max(math.log(c_high / c), math.log(c / c_low)))
    ratio = c / b
    low, high, noise = ratio * math.exp(-h), ratio * math.exp(h), math.expm1(h)
    if ratio > factor and low > 1:
        status = "worse"
    elif high > factor:
        status = "inconclusive"
    elif ratio < 1 / factor and high < 1:
        status = "better"
    else:
        status = "same"
    return Verdict(status, ratio, low, high, noise, b, c)
