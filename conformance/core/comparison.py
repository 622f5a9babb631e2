"""Comparing what an implementation produced with what the reference expects: :func:`compare`.

Vocabulary, end to end (here, the mirror, the report's JSON and its tables): a comparison holds each
element to its **tolerance**; the **error ratio** is |error| / tolerance, and a comparison passes when its
worst error ratio is <= 1. Every comparison records its worst error ratio, the maximum absolute and
relative errors, and the tolerance at the worst element, so a report shows how close each check came. NaN
and infinities must sit exactly where the reference has them. Where the quantity is not a number (an
exception raised, a dtype, a count of collectives) a :func:`fact` records whether it is as expected.
How large each tolerance is comes from the operator's tolerance model, never from here.

What the reference expects of a quantity is an expectation with ``judge(quantity, actual) -> Comparison``:
:class:`Expected` (a value within a tolerance, judged by :func:`compare`) or :class:`ExpectedCount` (a count
within bounds, judged as a fact: the cross-rank reductions a step issued, say).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Comparison", "Expected", "ExpectedCount", "compare", "describe_nonfinite", "fact"]


@dataclass(frozen=True)
class Expected:
    """What the reference expects of one quantity: its value (``None``: the implementation must have none)
    and the tolerance (per element, broadcast against the value; 0: exactly). ``optional``: compared only
    where the implementation reports the quantity (a batch counter)."""

    value: object
    tolerance: object = 0.0
    optional: bool = False

    def judge(self, quantity: str, actual: object) -> Comparison:
        return compare(quantity, actual, self.value, self.tolerance)


@dataclass(frozen=True)
class ExpectedCount:
    """What the reference expects of a count that has no one right value (the cross-rank reductions a step
    issues): at least ``low`` and at most ``high`` (None: no upper bound) of ``unit``, judged as a
    :func:`fact` whose note says how many there were. ``optional`` as for :class:`Expected`."""

    low: int
    high: int | None = None
    unit: str = ""
    optional: bool = False

    def judge(self, quantity: str, actual: object) -> Comparison:
        wanted = ("none" if self.high == 0 else f"at least {self.low}" if self.high is None
                  else f"{self.low} to {self.high}")
        if actual is None:
            return fact(quantity, False, f"the implementation reports no count of {self.unit}; expected {wanted}")
        ok = self.low <= int(actual) and (self.high is None or int(actual) <= self.high)
        return fact(quantity, ok, f"{int(actual)} {self.unit}; expected {wanted}")


@dataclass(frozen=True)
class Comparison:
    """One quantity of one check, compared with the reference."""

    quantity: str
    passed: bool
    error_ratio: float  # worst |error| / tolerance; <= 1 passes (0 when identical, inf on a NaN mismatch)
    max_abs_error: float
    max_rel_error: float
    tolerance: float  # the tolerance at the element with the worst error ratio
    nonfinite_mismatches: int
    note: str = ""  # observed behaviour where it is not a number (an exception, say)
    raised: str = ""  # the exception type the implementation raised ("" when it returned)
    reference_raised: str = ""  # the exception type the reference raised ("" when it returned)
    # At the non-finite mismatches: which of "NaN", "Inf", "-Inf" each side has there (none: finite values).
    actual_nonfinite: list[str] = field(default_factory=list)
    expected_nonfinite: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.note:
            return f"{self.quantity}: {self.note}"
        if self.nonfinite_mismatches:
            return describe_nonfinite(self.quantity, self.nonfinite_mismatches, self.actual_nonfinite,
                                      self.expected_nonfinite)
        return (
            f"{self.quantity}: max |error| {self.max_abs_error:.3g} (relative {self.max_rel_error:.3g}), "
            f"error/tolerance {self.error_ratio:.3g} at tolerance {self.tolerance:.3g}"
        )


def fact(quantity: str, passed: bool, note: str = "", *, error: float = 0.0, raised: str = "",
         reference_raised: str = "") -> Comparison:
    """A comparison of something that is not a number: as expected or not, with what was observed."""
    return Comparison(quantity, passed, 0.0 if passed else np.inf, error, 0.0, 0.0, 0, note, raised=raised,
                      reference_raised=reference_raised)


def describe_nonfinite(quantity: str, count: int, actual: list[str], expected: list[str]) -> str:
    """``running_var: NaN at 3 places where the reference has finite values``."""
    return (f"{quantity}: {'/'.join(actual) or 'finite values'} at {count} places where the reference has "
            f"{'/'.join(expected) or 'finite values'}")


def _nonfinite_names(values: np.ndarray) -> list[str]:
    """Which of NaN, Inf and -Inf occur in ``values``."""
    found = (("NaN", np.isnan(values)), ("Inf", values == np.inf), ("-Inf", values == -np.inf))
    return [name for name, where in found if where.any()]


def compare(quantity: str, actual: object, expected: object, tolerance: object) -> Comparison:
    """Compare elementwise against ``tolerance``; shapes must match and non-finite values must coincide.
    ``None`` on either side means "has none": it passes only against ``None``."""
    if actual is None or expected is None:
        ok = actual is None and expected is None
        has = {True: "has none", False: "has values"}
        note = "" if ok else f"the implementation {has[actual is None]} where the reference {has[expected is None]}"
        return Comparison(quantity, ok, 0.0 if ok else np.inf, 0.0, 0.0, 0.0, 0 if ok else 1, note)
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return fact(quantity, False, f"the implementation has shape {actual.shape} where the reference has "
                                     f"{expected.shape}")
    tolerance = np.broadcast_to(tolerance, expected.shape)
    finite, actual_finite = np.isfinite(expected), np.isfinite(actual)
    if finite.all() and actual_finite.all():  # the usual case, in a few passes over production-size arrays
        mismatched, both = np.zeros(expected.shape, bool), True
    else:
        same_nonfinite = (np.isnan(actual) & np.isnan(expected)) | (actual == expected)
        mismatched = (~finite & ~same_nonfinite) | (finite & ~actual_finite)
        both = finite & actual_finite
    mismatches = int(np.count_nonzero(mismatched))
    with np.errstate(divide="ignore", invalid="ignore"):  # inf - inf and x / 0 are masked out or meant
        err = np.where(both, np.abs(actual - expected), 0.0)
        ratio = np.divide(err, tolerance, out=np.zeros_like(err), where=err != 0)  # exact agreement: 0
        rel = np.divide(err, np.abs(expected), out=np.zeros_like(err), where=expected != 0)
    worst = int(np.argmax(ratio)) if ratio.size else 0
    error_ratio = float(ratio.flat[worst]) if ratio.size else 0.0
    if mismatches:
        error_ratio = np.inf
    return Comparison(
        quantity,
        passed=error_ratio <= 1.0,
        error_ratio=error_ratio,
        max_abs_error=float(err.max()) if err.size else 0.0,
        max_rel_error=float(rel.max()) if rel.size else 0.0,
        tolerance=float(tolerance.flat[worst]) if tolerance.size else 0.0,
        nonfinite_mismatches=mismatches,
        actual_nonfinite=_nonfinite_names(actual[mismatched]),
        expected_nonfinite=_nonfinite_names(expected[mismatched]),
    )
