"""The tolerance model: every tolerance the suite holds an implementation to, derived in one place.

Vocabulary, end to end (this module, ``mirror.py``, the report's JSON and its tables): a comparison
holds each element to its **tolerance**; the **error ratio** is |error| / tolerance, and a comparison
passes when its worst error ratio is <= 1.

An implementation computing in a dtype with unit roundoff ``u`` (float64 2**-53, float32 2**-24,
float16 2**-11, bfloat16 2**-8) makes errors from three sources, which the tolerances add up per element:

1. Rounding of the stored result: ``u * |result|``.
2. Reductions over the ``n`` values of a channel (mean, variance, gradient sums): a recursive sum's
   rounding errors grow like a random walk, ``u * sqrt(n)`` relative to the summands' magnitude;
   pairwise or blocked sums do better, so this stays an upper bound. ``SAFETY`` = 4 covers the few
   roundings of the formula around each sum (subtraction, division, square root, products).
3. Conditioning: the mean's absolute error is relative to ``|mean| + std``, so once divided by the
   normalizing ``sigma = sqrt(var + eps)`` it grows with ``kappa = |mean| / sigma``. A two-pass
   variance does not amplify it further, so ``(1 + kappa)`` appears once; an implementation whose
   variance is ``E[x**2] - E[x]**2`` has error ~ ``u * kappa**2`` and fails on offset data, as it should.

Reductions run in the accumulation precision ``u_acc``: float32 for float16 and bfloat16 input (what every
framework documents; a case option can declare reductions in the input's precision, see
``cases.Case.accumulation_dtype``), the input's own otherwise. Only the per-element roundings happen in the
storage precision ``u``. So

    rho = SAFETY * (u + u_acc * (sqrt(n) - 1))

(``n = 1`` where no reduction happens, e.g. inference: ``rho = SAFETY * u``; where ``u_acc = u`` this is
``SAFETY * u * sqrt(n)``). Were ``u`` used for the reduction too, the bound would grow past every output at
production sizes (float16 at 2**18 values per channel: ``rho = 2``, so an all-zero output passed); with
``u_acc`` it stays below ``|y|`` at any practical ``n`` (``tests/test_harness_tolerances.py`` checks that
every bound rejects wrong answers up to 2**24 values per channel), and a layer that accumulates a
half-precision input in half precision fails. With ``P = 1 + |xhat|`` (``xhat`` and its own error
``rho (1 + kappa) P``):

    y        u|y| + |gamma| rho (1 + kappa) P
    dbeta    u|dbeta| + rho sum|dy|
    dgamma   u|dgamma| + rho (1 + kappa) sum(|dy| P)
    dx       u|dx| + |gamma| / sigma * rho (1 + kappa)(|dy| + mean|dy|) P
    running  per training step: u|run| + rho (|mean| + std) for the mean, u|run| + rho (1 + kappa) var
             + (rho |mean|)**2 for the variance (times n/(n-1), the most a Bessel correction amplifies it;
             the last term is the mean's rounding, squared in a two-pass variance), summed over the
             steps, plus u|run| for the value compared (:class:`RunningTolerance`).

Inference with running statistics the implementation accumulated itself: those may differ from the
reference's by their own tolerance ``Em`` (mean) and ``Ev`` (variance, :class:`RunningTolerance`), which the
normalization propagates: ``xhat`` is then allowed ``X = Em / sigma + |xhat| Ev / (2 sigma**2)`` more, so
``y`` gets ``|gamma| X``, ``dgamma`` gets ``sum(|dy| X)`` and ``dx = gamma dy / sigma`` gets
``|gamma| |dy| Ev / (2 sigma**3)`` (zero where the statistics were assigned, or are the batch's).

Second order (:func:`reference.hvp_training`: the derivative of ``(dx, dgamma, dbeta)`` along
``(vx, vgamma, vbeta)``, ``r = 1 / sigma``). The same argument applied to its formula: each term's error
is at most ``rho (1 + kappa)`` times the term evaluated with absolute values and ``P`` for ``|xhat|``,
doubled (``SECOND_ORDER`` = 2) because the terms nest two reductions (``mean(dy * t)`` of a ``t`` that
holds ``mean(xhat * vx)``). With the magnitudes ``G = |dy| + mean|dy| + P mean(|dy| P)`` of
``g = dx / (gamma r)``, ``T = r (|vx| + mean|vx| + P mean(P |vx|))`` of the tangent of ``xhat`` and
``R = r**2 mean(P |vx|)`` of the tangent of ``r``:

    hvp_x      u|hvp_x| + 2 rho (1 + kappa) (|vgamma| r G + |gamma| R G + |gamma| r (T mean(|dy| P) + P mean(|dy| T)))
    hvp_gamma  u|hvp_gamma| + 2 rho (1 + kappa) sum(|dy| T)
    hvp_beta   exactly 0 (nothing depends on beta)

Every comparison records its worst error ratio, the maximum absolute and relative errors, and the
tolerance at the worst element, so a report shows how close each check came. NaN and infinities must
sit exactly where the reference has them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import ml_dtypes
import numpy as np

from .adapters.base import ALL_DTYPES
from .cases import dtype_of

__all__ = ["SAFETY", "SECOND_ORDER", "UNIT_ROUNDOFF", "Comparison", "Conditioning", "RunningTolerance", "compare",
           "describe_nonfinite",
           "unit_roundoff"]

SAFETY = 4.0
SECOND_ORDER = 2.0
# Half the machine epsilon of each dtype of the vocabulary: float64 2**-53 ... bfloat16 2**-8.
UNIT_ROUNDOFF = {name: float(ml_dtypes.finfo(dtype_of(name)).eps) / 2 for name in ALL_DTYPES}


def unit_roundoff(dtype: str) -> float:
    return UNIT_ROUNDOFF[dtype]


def _channel_mean(a: np.ndarray) -> np.ndarray:
    """Per-channel mean of an array with channels last (0 for an empty batch)."""
    return a.mean(axis=tuple(range(a.ndim - 1))) if a.size else np.zeros(a.shape[-1])


def _channel_sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=tuple(range(a.ndim - 1)))


@dataclass(frozen=True)
class Conditioning:
    """What the tolerances depend on, per channel, from the reference's view of one forward call.

    ``mean``/``var`` are the statistics the layer normalized with (batch or running); ``n`` is the
    number of values each reduction ran over (1 when no reduction happened). Every method returns the
    tolerance of the quantity it is named after, broadcast against arrays of shape (..., C) (channels
    moved last by the caller).
    """

    dtype: str
    n: int
    mean: np.ndarray
    var: np.ndarray
    eps: float
    gamma: np.ndarray
    accumulation_dtype: str | None = None  # None: the input's dtype
    # The allowed error of ``mean``/``var`` themselves: running statistics the implementation accumulated.
    mean_error: np.ndarray | float = 0.0
    var_error: np.ndarray | float = 0.0

    @property
    def u(self) -> float:
        return unit_roundoff(self.dtype)

    @property
    def u_acc(self) -> float:
        return unit_roundoff(self.accumulation_dtype or self.dtype)

    @property
    def rho(self) -> float:
        return SAFETY * (self.u + self.u_acc * (np.sqrt(max(self.n, 1)) - 1))

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(self.var + self.eps)

    @property
    def kappa(self) -> np.ndarray:
        return np.abs(self.mean) / self.sigma

    def _statistics_error(self, xhat: np.ndarray) -> np.ndarray:
        """How far ``xhat`` may move with the statistics' own allowed errors."""
        return self.mean_error / self.sigma + np.abs(xhat) * self.var_error / (2 * self.sigma**2)

    def y(self, y: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        rounding = self.rho * (1 + self.kappa) * (1 + np.abs(xhat))
        return self.u * np.abs(y) + np.abs(self.gamma) * (rounding + self._statistics_error(xhat))

    def dx(self, dx: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        scale = np.abs(self.gamma) / self.sigma * self.rho * (1 + self.kappa)
        statistics = np.abs(self.gamma) * np.abs(dy) * self.var_error / (2 * self.sigma**3)
        return self.u * np.abs(dx) + scale * (np.abs(dy) + _channel_mean(np.abs(dy))) * (1 + np.abs(xhat)) + statistics

    def dbeta(self, dbeta: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.u * np.abs(dbeta) + self.rho * _channel_sum(np.abs(dy))

    def dgamma(self, dgamma: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        rounding = self.rho * (1 + self.kappa) * (1 + np.abs(xhat))
        return self.u * np.abs(dgamma) + _channel_sum(np.abs(dy) * (rounding + self._statistics_error(xhat)))

    def running_mean_step(self, run: np.ndarray, batch_std: np.ndarray) -> np.ndarray:
        """One training step's error in the running mean ``run`` it stored (the batch mean's, and the
        rounding of the stored value)."""
        return self.u * np.abs(run) + self.rho * (np.abs(self.mean) + batch_std)

    def running_var_step(self, run: np.ndarray) -> np.ndarray:
        """One training step's error in the running variance ``run`` it stored; the last term is the mean's
        own rounding, which a two-pass variance takes in squared (all there is of a constant channel's)."""
        return self.u * np.abs(run) + self.rho * (1 + self.kappa) * self.var + (self.rho * np.abs(self.mean)) ** 2

    def second_order(self, dy: np.ndarray, vx: np.ndarray, vgamma: np.ndarray, xhat: np.ndarray) -> dict:
        """Tolerances of ``hvp_x`` and ``hvp_gamma`` less their ``u|result|`` term (see the module
        docstring); ``hvp_beta`` is held to exactly zero."""
        r, p, ady = 1 / self.sigma, 1 + np.abs(xhat), np.abs(dy)
        g = ady + _channel_mean(ady) + p * _channel_mean(ady * p)
        t = r * (np.abs(vx) + _channel_mean(np.abs(vx)) + p * _channel_mean(p * np.abs(vx)))
        dr = r**2 * _channel_mean(p * np.abs(vx))
        scale = SECOND_ORDER * self.rho * (1 + self.kappa)
        gamma = np.abs(self.gamma)
        coupling = t * _channel_mean(ady * p) + p * _channel_mean(ady * t)
        hvp_x = np.abs(vgamma) * r * g + gamma * dr * g + gamma * r * coupling
        return {"hvp_x": scale * hvp_x, "hvp_gamma": scale * _channel_sum(ady * t), "hvp_beta": 0.0}


class RunningTolerance:
    """The running statistics' tolerances, accumulated over training steps: each step adds the batch
    statistics' error and the rounding of the stored values (the variance's weighted by ``n/(n-1)``, the
    most a Bessel correction amplifies it; a momentum weight < 1 only shrinks old errors, so the plain sum
    is an upper bound), and the final comparison adds the rounding ``u|run|`` of the value compared."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.accumulated = {"running_mean": 0.0, "running_var": 0.0}

    def add_step(self, cond: Conditioning, running_mean: np.ndarray, running_var: np.ndarray, count: int) -> None:
        """Account for one training step with ``cond``'s batch statistics over ``count`` values per
        channel, after which the reference holds ``running_mean`` and ``running_var``."""
        # n/(n-1) bounds the Bessel correction's amplification whether or not the convention applies it.
        correction = count / max(count - 1, 1)
        mean_step = cond.running_mean_step(running_mean, np.sqrt(cond.var))
        self.accumulated["running_mean"] = self.accumulated["running_mean"] + mean_step
        var_step = correction * cond.running_var_step(running_var)
        self.accumulated["running_var"] = self.accumulated["running_var"] + var_step

    def accumulated_error(self, name: str) -> np.ndarray | float:
        """The error the steps so far allow in ``running_mean`` or ``running_var`` (0 before any)."""
        return self.accumulated[name]

    def tolerance(self, name: str, expected: np.ndarray) -> np.ndarray:
        """Tolerance of ``running_mean`` or ``running_var`` against the reference's value ``expected``."""
        return unit_roundoff(self.dtype) * np.abs(expected) + self.accumulated[name]


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


def describe_nonfinite(quantity: str, count: int, actual: list[str], expected: list[str]) -> str:
    """``running_var: NaN at 3 places where the reference has finite values``."""
    return (f"{quantity}: {'/'.join(actual) or 'finite values'} at {count} places where the reference has "
            f"{'/'.join(expected) or 'finite values'}")


def _nonfinite_names(values: np.ndarray) -> list[str]:
    """Which of NaN, Inf and -Inf occur in ``values``."""
    found = (("NaN", np.isnan(values)), ("Inf", values == np.inf), ("-Inf", values == -np.inf))
    return [name for name, where in found if where.any()]


def compare(quantity: str, actual: np.ndarray | None, expected: np.ndarray | None, tolerance: np.ndarray) -> Comparison:
    """Compare elementwise against ``tolerance``; shapes must match and non-finite values must coincide."""
    if actual is None or expected is None:
        ok = actual is None and expected is None
        has = {True: "has none", False: "has values"}
        note = "" if ok else f"the implementation {has[actual is None]} where the reference {has[expected is None]}"
        return Comparison(quantity, ok, 0.0 if ok else np.inf, 0.0, 0.0, 0.0, 0 if ok else 1, note)
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{quantity}: shape {actual.shape} differs from the reference's {expected.shape}")
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
