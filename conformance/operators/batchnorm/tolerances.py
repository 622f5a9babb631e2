"""BatchNorm's tolerance model: every tolerance the suite holds a BatchNorm to, derived in one place
(:func:`conformance.core.comparison.compare` applies them; ``tests/test_harness_tolerances.py`` shows every
bound rejects wrong answers).

An implementation computing in a dtype with unit roundoff ``u`` (float64 2**-53, float32 2**-24,
float16 2**-11, bfloat16 2**-8) makes errors from three sources, which the tolerances add up per element:

1. Rounding of the stored result: ``u * |result|``.
2. Reductions over the ``n`` values of a channel (mean, variance, gradient sums): ``u * sqrt(n)``
   relative to the summands' magnitude, a random walk's growth, which pairwise, blocked and Welford sums
   stay below. A recursive sum (one value after another) meets it on zero-mean data but not on a channel
   far from zero, whose summands share a sign and whose roundings do not cancel: 2**20 float32 values 100
   spreads from zero lose 0.5 spreads of their mean that way (pairwise: 1e-5), a real loss the bound
   reports. ``SAFETY`` = 4 covers the few roundings of the formula around each sum (subtraction,
   division, square root, products).
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
half-precision input in half precision fails. Below the dtype's normal range a rounding is absolute, half
the smallest subnormal ``eta``, and each of the few elementwise operations that make a result rounds so
there: every ``u|result|`` below stands for ``u|result| + SAFETY eta`` (a float16 gradient scaled by a tiny
gamma is subnormal, and so are the products on its way). With ``P = 1 + |xhat|`` (``xhat`` and its own error
``rho (1 + kappa) P``; with the statistics given, in inference, ``rho (1 + kappa + |xhat|)``: there the
subtraction and division, or a folded ``x scale + shift``, round by ``u (|x| + |mean|) / sigma`` at most, and
no computed variance multiplies the mean's error by ``|xhat|``; the product would loosen the bound by
``kappa``, 3e5 for a channel whose running mean is 1e3 beside a variance at eps):

    y        u|y| + u|beta| + |gamma| rho (1 + kappa) P
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

Running state under other conventions (:mod:`reference.running`): an average of the standard deviation
``s = sqrt(v)`` gets ``min(Ev / sqrt(v), sqrt(Ev))`` per step from the variance's ``Ev`` (both bound
``|sqrt(a) - sqrt(b)|``), and inference's variance ``s**2`` then ``2 s Es + Es**2``; a debiased convention's
hidden averages accumulate like plain ones, and what inference reads of them carries their error divided by
the debiasing factor. Counters are exact.

A corrected normalization (:mod:`reference.variants`: ``gamma (scale xhat + shift) + beta``, batch
renormalization's ``(r, d)`` or an adjustment's constants; :class:`Correction`) is the batch's conditioning with
``gamma scale`` for ``gamma`` and ``gamma shift + beta`` for ``beta``, plus what the layer's own ``scale`` and
``shift`` may be off: a relative ``Er`` and an absolute ``Ed`` (renorm: ``sigma_B``'s relative error
``rho (1 + kappa)`` and its averages' accumulated ``Em``, ``Es``, over ``s = max(renorm_stddev, sqrt(eps))``:
``Er = rho (1 + kappa) + Es / s + 2u``, ``Ed = (rho (|mean| + std) + Em) / s + |d| (Es / s + 2u)``; clipping
only shrinks them). So ``y`` gets ``|gamma| (Er |scale xhat| + Ed)`` more, ``dx`` ``Er |dx|`` and ``dgamma``
``sum(|dy| (|scale| (a + b |xhat|) + Er |scale xhat| + Ed))`` in place of its ``sum(|dy| (a + b |xhat|))``.
Renorm's averages (:class:`AveragesTolerance`) accumulate per step like the running mean (a mean's) or like
an averaged standard deviation (one of ``sqrt(var + eps)``: ``min(Ev / sigma, sqrt(Ev)) + u sigma``), and
``running_var = max(s**2 - eps, 0)`` derived from the averaged ``s`` gets ``2 s Es + Es**2 + u (s**2 + eps)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from reference import Convention, debias_factor

from ...core.dtypes import underflow, unit_roundoff

__all__ = ["SAFETY", "SECOND_ORDER", "AveragesTolerance", "Conditioning", "Correction", "RunningTolerance"]

SAFETY = 4.0
SECOND_ORDER = 2.0


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
    # The shift: a layer holding or computing it in its dtype rounds it, which shows where |gamma xhat| is
    # small beside it (a tiny or zero gamma).
    beta: np.ndarray | float = 0.0

    @property
    def u(self) -> float:
        return unit_roundoff(self.dtype)

    def stored(self, value: np.ndarray) -> np.ndarray:
        """The rounding of a stored result: ``u|value|``, or below the normal range half the smallest
        subnormal for each of the few operations that make it (a float16 gradient scaled by a tiny gamma
        is subnormal, and so are the products on its way)."""
        return self.u * np.abs(value) + SAFETY * underflow(self.dtype)

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

    def xhat_error(self) -> tuple[np.ndarray, np.ndarray]:
        """How far ``xhat`` may be off, as ``a + b|xhat|`` (a and b broadcast like the statistics): the
        rounding around the reductions, ``rho (1 + kappa)(1 + |xhat|)`` (without reductions
        ``rho (1 + kappa + |xhat|)``), and how far the statistics' own
        allowed errors move it, ``mean_error / sigma + |xhat| var_error / (2 sigma^2)``. So a production-size
        tolerance costs a few passes over its arrays, not one per term."""
        rounding = self.rho * (1 + self.kappa)
        slope = rounding if self.n > 1 else self.rho  # statistics given: the module docstring
        return rounding + self.mean_error / self.sigma, slope + self.var_error / (2 * self.sigma**2)

    def y(self, y: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        a, b = self.xhat_error()
        gamma = np.abs(self.gamma)
        bound = np.abs(xhat) * (gamma * b)
        bound += self.u * np.abs(self.beta) + gamma * a  # beta's rounding; the error not scaling with xhat
        bound += self.stored(y)
        # A fused scale gamma / sigma below the normal range rounds absolutely, and |x - mean| and |mean| carry
        # that into y (a gamma of 2e-308 in float64: y 30 units off in its last place).
        bound += SAFETY * underflow(self.dtype) * (np.abs(xhat) * self.sigma + 2 * np.abs(self.mean))
        return bound

    def dx(self, dx: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        # The scale gamma / sigma rounds relatively, or absolutely where it is below the normal range (as in y).
        scale = np.abs(self.gamma) / self.sigma * self.rho * (1 + self.kappa) + SAFETY * underflow(self.dtype)
        statistics = np.abs(self.gamma) * np.abs(dy) * self.var_error / (2 * self.sigma**3)
        return self.stored(dx) + scale * (np.abs(dy) + _channel_mean(np.abs(dy))) * (1 + np.abs(xhat)) + statistics

    def dbeta(self, dbeta: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.stored(dbeta) + self.rho * _channel_sum(np.abs(dy))

    def dgamma(self, dgamma: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        a, b = self.xhat_error()
        return self.stored(dgamma) + _channel_sum(np.abs(dy) * (a + b * np.abs(xhat)))

    def running_mean_step(self, run: np.ndarray, batch_std: np.ndarray) -> np.ndarray:
        """One training step's error in the running mean ``run`` it stored (the batch mean's, and the
        rounding of the stored value, also where it is subnormal)."""
        return self.stored(run) + self.rho * (np.abs(self.mean) + batch_std)

    def running_var_step(self, run: np.ndarray) -> np.ndarray:
        """One training step's error in the running variance ``run`` it stored; the last term is the mean's
        own rounding, which a two-pass variance takes in squared (all there is of a constant channel's)."""
        return self.stored(run) + self.rho * (1 + self.kappa) * self.var + (self.rho * np.abs(self.mean)) ** 2

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
    """The running state's tolerances, accumulated over training steps: each step adds the batch
    statistics' error and the rounding of the stored values (the variance's weighted by ``n/(n-1)``, the
    most a Bessel correction amplifies it; a momentum weight < 1 only shrinks old errors, so the plain sum
    is an upper bound), and the final comparison adds the rounding ``u|run|`` of the value compared. Fields
    are the convention's (:attr:`Convention.running_fields`); its counter is exact."""

    def __init__(self, dtype: str, convention: Convention, momentum: float | None) -> None:
        self.dtype, self.convention, self.momentum = dtype, convention, momentum
        self.accumulated = {"running_mean": 0.0, convention.spread_field: 0.0}

    def add_step(self, cond: Conditioning, state: dict, count: int, previous: dict | None = None) -> None:
        """Account for one training step with ``cond``'s batch statistics over ``count`` values per
        channel, after which the reference holds ``state`` (before it: ``previous``)."""
        # n/(n-1) bounds the Bessel correction's amplification whether or not the convention applies it.
        correction = count / max(count - 1, 1)
        u = unit_roundoff(self.dtype)
        # The update written as old - w (old - batch) (tf-keras' assign_sub) rounds relative to the old value.
        old = {name: u * np.abs(np.asarray(previous[name], dtype=np.float64)) if previous and previous.get(name)
               is not None else 0.0 for name in self.accumulated}
        self.accumulated["running_mean"] = self.accumulated["running_mean"] + cond.running_mean_step(
            state["running_mean"], np.sqrt(cond.var)) + old["running_mean"]
        spread = self.convention.spread_field
        if spread == "running_std":
            var_error = correction * cond.running_var_step(state[spread] ** 2)
            exact = np.sqrt(cond.var * correction)  # what the stored root should take in, at its smallest
            with np.errstate(divide="ignore", invalid="ignore"):
                root_error = np.where(exact > 0, var_error / exact, np.inf)
            step = unit_roundoff(self.dtype) * np.abs(state[spread]) + np.minimum(root_error, np.sqrt(var_error))
        else:
            step = correction * cond.running_var_step(state[spread])
        self.accumulated[spread] = self.accumulated[spread] + step + old[spread]

    def carry(self, mean_error: np.ndarray | float, var_error: np.ndarray | float, state: dict) -> None:
        """Start from statistics already allowed ``mean_error`` and ``var_error`` (a state ported in from
        another convention), held in this convention's fields as ``state``."""
        conv = self.convention
        factor = debias_factor(int(state.get(conv.counter) or 0) if conv.counter else 0, self.momentum, conv)
        spread_error = var_error
        if conv.averaged_spread == "std":
            root = np.abs(np.asarray(state["running_std"], dtype=np.float64)) / factor
            with np.errstate(divide="ignore", invalid="ignore"):
                spread_error = np.minimum(np.where(root > 0, var_error / root, np.inf), np.sqrt(var_error))
        self.accumulated = {"running_mean": mean_error * factor, conv.spread_field: spread_error * factor}

    def tolerance(self, name: str, expected: np.ndarray) -> np.ndarray:
        """Tolerance of a running field against the reference's value ``expected``."""
        return unit_roundoff(self.dtype) * np.abs(expected) + self.accumulated[name]

    def statistics_error(self, state: dict) -> tuple[np.ndarray | float, np.ndarray | float]:
        """The errors the steps so far allow in the mean and variance inference reads (0 before any)."""
        conv = self.convention
        factor = debias_factor(int(state.get(conv.counter) or 0) if conv.counter else 0, self.momentum, conv)
        mean_error = self.accumulated["running_mean"] / factor
        spread_error = self.accumulated[conv.spread_field] / factor
        if conv.averaged_spread == "std":
            root = np.abs(np.asarray(state["running_std"], dtype=np.float64)) / factor
            return mean_error, 2 * root * spread_error + spread_error**2
        return mean_error, spread_error


@dataclass(frozen=True)
class Correction:
    """The tolerances of a training call whose normalized value is corrected, ``gamma (scale xhat + shift) +
    beta`` (module docstring): ``cond`` is the batch's conditioning, ``scale_error`` the relative error the
    layer's ``scale`` may have, ``shift_error`` the absolute error of its ``shift`` (0 for given constants)."""

    cond: Conditioning
    scale: np.ndarray
    shift: np.ndarray
    scale_error: np.ndarray | float = 0.0
    shift_error: np.ndarray | float = 0.0

    @property
    def effective(self) -> Conditioning:
        """The plain model for ``gamma scale xhat + (gamma shift + beta)``."""
        cond = self.cond
        return replace(cond, gamma=cond.gamma * self.scale, beta=cond.gamma * self.shift + cond.beta)

    def _own(self, xhat: np.ndarray) -> np.ndarray:
        """How far the layer's own scale and shift move ``scale xhat + shift``."""
        return self.scale_error * np.abs(self.scale * xhat) + self.shift_error

    def y(self, y: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        return self.effective.y(y, xhat) + np.abs(self.cond.gamma) * self._own(xhat)

    def dx(self, dx: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        return self.effective.dx(dx, dy, xhat) + self.scale_error * np.abs(dx)

    def dgamma(self, dgamma: np.ndarray, dy: np.ndarray, xhat: np.ndarray) -> np.ndarray:
        a, b = self.cond.xhat_error()
        return self.cond.stored(dgamma) + _channel_sum(np.abs(dy) * (np.abs(self.scale) * (a + b * np.abs(xhat))
                                                                     + self._own(xhat)))

    def dbeta(self, dbeta: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.cond.dbeta(dbeta, dy)

    @classmethod
    def renorm(cls, cond: Conditioning, r: np.ndarray, d: np.ndarray, averages: AveragesTolerance,
               renorm_stddev: np.ndarray) -> Correction:
        """Batch renormalization's ``(r, d)``, computed by the layer from the batch's statistics and its renorm
        averages (whose accumulated errors ``averages`` holds)."""
        s = np.maximum(renorm_stddev, np.sqrt(cond.eps))
        mean_error, stddev_error = averages.accumulated["renorm_mean"], averages.accumulated["renorm_stddev"]
        scale_error = cond.rho * (1 + cond.kappa) + stddev_error / s + 2 * cond.u
        shift_error = (cond.rho * (np.abs(cond.mean) + np.sqrt(cond.var)) + mean_error) / s + np.abs(d) * (
            stddev_error / s + 2 * cond.u)
        return cls(cond, r, d, scale_error, shift_error)


class AveragesTolerance:
    """Running averages of a mean or of ``sqrt(var + eps)`` (batch renormalization's, module docstring), each
    accumulated over the training steps."""

    def __init__(self, dtype: str, means: tuple[str, ...], stddevs: tuple[str, ...]) -> None:
        self.u, self.means, self.stddevs = unit_roundoff(dtype), means, stddevs
        self.accumulated = {name: 0.0 for name in means + stddevs}

    def add_step(self, cond: Conditioning, state: dict, previous: dict) -> None:
        """One training step with ``cond``'s batch statistics, from ``previous`` to ``state``."""
        var_error = cond.running_var_step(0.0)
        sigma = cond.sigma
        with np.errstate(divide="ignore", invalid="ignore"):
            root_error = np.minimum(np.where(sigma > 0, var_error / sigma, np.inf), np.sqrt(var_error))
        for name in self.means + self.stddevs:
            step = (cond.running_mean_step(state[name], np.sqrt(cond.var)) if name in self.means
                    else self.u * (np.abs(state[name]) + sigma) + root_error)
            self.accumulated[name] = self.accumulated[name] + step + self.u * np.abs(previous[name])

    def tolerance(self, name: str, expected: np.ndarray) -> np.ndarray:
        return self.u * np.abs(expected) + self.accumulated[name]

    def derived_variance(self, stddev: str, expected: np.ndarray, eps: float) -> np.ndarray:
        """The accumulated error of ``max(s**2 - eps, 0)`` derived from the average ``stddev`` (at ``expected``)."""
        error = self.accumulated[stddev]
        return 2 * np.abs(expected) * error + error**2 + self.u * (expected**2 + eps)
