"""The tolerance model: every bound the suite holds an implementation to, derived in one place.

An implementation computing in a dtype with unit roundoff ``u`` (float64 2**-53, float32 2**-24,
float16 2**-11, bfloat16 2**-8) makes errors from three sources, which the bounds add up per element:

1. Rounding of the stored result: ``u * |result|``.
2. Reductions over the ``n`` values of a channel (mean, variance, gradient sums): a recursive sum's
   rounding errors grow like a random walk, ``u * sqrt(n)`` relative to the summands' magnitude;
   pairwise or blocked sums do better, so this stays an upper bound. ``SAFETY`` = 4 covers the few
   roundings of the formula around each sum (subtraction, division, square root, products).
3. Conditioning: the mean's absolute error is relative to ``|mean| + std``, so once divided by the
   normalizing ``sigma = sqrt(var + eps)`` it grows with ``kappa = |mean| / sigma``. A two-pass
   variance does not amplify it further, so ``(1 + kappa)`` appears once; an implementation whose
   variance is ``E[x**2] - E[x]**2`` has error ~ ``u * kappa**2`` and fails on offset data, as it should.

With ``rho = SAFETY * u * sqrt(n)`` (``n = 1`` where no reduction happens, e.g. inference):

    y        u|y| + |gamma| rho (1 + kappa)(1 + |xhat|)
    dbeta    u|dbeta| + rho sum|dy|
    dgamma   u|dgamma| + rho (1 + kappa) sum(|dy| (1 + |xhat|))
    dx       u|dx| + |gamma| / sigma * rho (1 + kappa)(|dy| + mean|dy|)(1 + |xhat|)
    running  per step: u|run| + rho (|mean| + std) for the mean, u|run| + rho (1 + kappa) var for the
             variance, summed over the training steps.

Every comparison records the worst ratio error / bound (``headroom``; <= 1 passes), the maximum absolute
and relative errors, and the bound at the worst element, so a report shows how close each check came.
NaN and infinities must sit exactly where the reference has them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["SAFETY", "UNIT_ROUNDOFF", "Comparison", "Conditioning", "compare", "unit_roundoff"]

SAFETY = 4.0
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def unit_roundoff(dtype: str) -> float:
    return UNIT_ROUNDOFF[dtype]


@dataclass(frozen=True)
class Conditioning:
    """What the bounds depend on, per channel, from the reference's view of one forward call.

    ``mean``/``var`` are the statistics the layer normalized with (batch or running); ``n`` is the
    number of values each reduction ran over (1 when no reduction happened).
    """

    dtype: str
    n: int
    mean: np.ndarray
    var: np.ndarray
    eps: float
    gamma: np.ndarray

    @property
    def u(self) -> float:
        return unit_roundoff(self.dtype)

    @property
    def rho(self) -> float:
        return SAFETY * self.u * np.sqrt(max(self.n, 1))

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(self.var + self.eps)

    @property
    def kappa(self) -> np.ndarray:
        return np.abs(self.mean) / self.sigma

    # Bounds, each broadcast against arrays of shape (..., C) (channels moved last by the caller).
    def y(self, y: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        return self.u * np.abs(y) + np.abs(self.gamma) * self.rho * (1 + self.kappa) * (1 + np.abs(xhat))

    def dx(self, dx: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        n_axes = tuple(range(dy.ndim - 1))
        mean_abs_dy = np.abs(dy).mean(axis=n_axes) if dy.size else 0.0
        scale = np.abs(self.gamma) / self.sigma * self.rho * (1 + self.kappa)
        return self.u * np.abs(dx) + scale * (np.abs(dy) + mean_abs_dy) * (1 + np.abs(xhat))

    def dbeta(self, dbeta: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.u * np.abs(dbeta) + self.rho * np.abs(dy).sum(axis=tuple(range(dy.ndim - 1)))

    def dgamma(self, dgamma: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        total = (np.abs(dy) * (1 + np.abs(xhat))).sum(axis=tuple(range(dy.ndim - 1)))
        return self.u * np.abs(dgamma) + self.rho * (1 + self.kappa) * total

    def running_mean(self, run: np.ndarray, batch_std: np.ndarray) -> np.ndarray:
        return self.u * np.abs(run) + self.rho * (np.abs(self.mean) + batch_std)

    def running_var(self, run: np.ndarray) -> np.ndarray:
        return self.u * np.abs(run) + self.rho * (1 + self.kappa) * self.var


@dataclass(frozen=True)
class Comparison:
    """One quantity of one check, compared with the reference."""

    quantity: str
    passed: bool
    headroom: float  # worst error / bound; <= 1 passes (0 when identical, inf on a NaN mismatch)
    max_abs_error: float
    max_rel_error: float
    bound_at_worst: float
    nonfinite_mismatches: int
    note: str = ""  # observed behaviour where it is not a number (an exception, say)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.note:
            return f"{self.quantity}: {self.note}"
        if self.nonfinite_mismatches:
            return f"{self.quantity}: NaN/inf at {self.nonfinite_mismatches} places where the reference differs"
        return (
            f"{self.quantity}: max |error| {self.max_abs_error:.3g} (relative {self.max_rel_error:.3g}), "
            f"error/bound {self.headroom:.3g} at bound {self.bound_at_worst:.3g}"
        )


def compare(quantity: str, actual: np.ndarray | None, expected: np.ndarray | None, bound: np.ndarray) -> Comparison:
    """Compare elementwise against ``bound``; shapes must match and non-finite values must coincide."""
    if actual is None or expected is None:
        ok = actual is None and expected is None
        has = {True: "has none", False: "has values"}
        note = "" if ok else f"the implementation {has[actual is None]} where the reference {has[expected is None]}"
        return Comparison(quantity, ok, 0.0 if ok else np.inf, 0.0, 0.0, 0.0, 0 if ok else 1, note)
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{quantity}: shape {actual.shape} differs from the reference's {expected.shape}")
    bound = np.broadcast_to(bound, expected.shape)
    finite = np.isfinite(expected)
    same_nonfinite = (np.isnan(actual) & np.isnan(expected)) | (actual == expected)
    mismatches = int(np.count_nonzero(~finite & ~same_nonfinite) + np.count_nonzero(finite & ~np.isfinite(actual)))
    both = finite & np.isfinite(actual)
    with np.errstate(divide="ignore", invalid="ignore"):  # inf - inf and x / 0 are masked out or meant
        err = np.where(both, np.abs(actual - expected), 0.0)
        ratio = np.where(both, err / bound, 0.0)
        ratio = np.where(both & (err == 0), 0.0, ratio)
        rel = np.where(both & (expected != 0), err / np.abs(expected), 0.0)
    worst = int(np.argmax(ratio)) if ratio.size else 0
    headroom = float(ratio.flat[worst]) if ratio.size else 0.0
    if mismatches:
        headroom = np.inf
    return Comparison(
        quantity,
        passed=headroom <= 1.0,
        headroom=headroom,
        max_abs_error=float(err.max()) if err.size else 0.0,
        max_rel_error=float(rel.max()) if rel.size else 0.0,
        bound_at_worst=float(bound.flat[worst]) if bound.size else 0.0,
        nonfinite_mismatches=mismatches,
    )
