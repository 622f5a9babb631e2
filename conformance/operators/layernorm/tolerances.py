"""LayerNorm's tolerance model: BatchNorm's (:mod:`conformance.operators.batchnorm.tolerances`, whose
docstring derives each bound) applied to rows instead of channels.

LayerNorm normalizes each row (the ``H`` values of the normalized axes at one index of the leading axes)
with its own mean and variance; BatchNorm normalizes each channel over the batch. The rounding argument is
the same per statistic: with ``u`` the unit roundoff of the result's dtype, ``u_acc`` that of the precision
the reductions run in, and ``rho_n = SAFETY (u + u_acc (sqrt(n) - 1))`` the error of a normalized value
computed from an ``n``-term reduction (probabilistic growth of a sum's error with ``sqrt(n)``), a row whose
conditioning is ``kappa = |mean| / sigma`` has ``xhat`` within ``rho_H (1 + kappa) (1 + |xhat|)``. What
changes is which axis each reduction runs over, and that gamma varies inside a row:

    y        u|y| + u|beta| + |gamma| rho_H (1 + kappa) P                             P = 1 + |xhat|
    dx       u|dx| + rho_H (1 + kappa) ((|g| + mean_row|g|) P + |xhat| mean_row(|g| P)) / sigma
             (BatchNorm's bound with ``|gamma| |dy|`` replaced by ``|g|``, its mean over the row: the
             backward's two row means are of ``g`` and ``g xhat``; the last term is the xhat errors inside
             the mean of ``g xhat``, each weighted by its own ``|g|``: gamma varies inside a row)    g = gamma dy
    dgamma   u|dgamma| + sum_rows |dy| rho_H (1 + kappa) P + rho_R sum_rows |dy xhat|  (the second term:
             the sum over the R rows, a reduction of its own)
    dbeta    u|dbeta| + rho_R sum_rows |dy|

Second order (:func:`reference.layer_norm_hvp`): BatchNorm's bound for ``hvp_x`` with gamma = 1 and ``g`` for
``dy`` (the terms through the tangent of ``r`` and of ``xhat``), plus the same bound's first term for the
tangent of ``g``, ``vgamma dy``, whose row means enter as ``g``'s do; ``hvp_gamma`` is a sum over rows of
``dy`` times the tangent of ``xhat``, whose magnitude is ``T = r (|vx| + mean_row|vx| + P mean_row(P |vx|))``:
``u|hvp_gamma| + (2 rho_H (1 + kappa) + rho_R) sum_rows |dy| T``; ``hvp_beta`` is exactly 0.

Eps added to the standard deviation (``eps_placement="std"``) enters through ``sigma = sqrt(var) + eps``,
which is ``sqrt(var + eps')`` with ``eps' = 2 eps sqrt(var) + eps**2``: the same bounds with ``eps'``. The
second-order bound is derived for eps inside the root (every built-in convention); eps outside it changes
the derivatives of ``r`` by the factor ``sigma / sqrt(var)``, which the bound does not cover near a
constant row. Each bound rejects a wrong eps, a wrong axis and half-precision accumulation on the grids'
data (``tests/test_layernorm_operator.py``).
"""

from __future__ import annotations

import numpy as np

from ..batchnorm.tolerances import SECOND_ORDER, Conditioning

__all__ = ["LayerNormTolerance"]


def _rows_of(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``v`` against the (rows, H) view ``x``: as it is where it has the view's shape, else (the normalized
    shape) flattened into one row."""
    return v if v.shape == x.shape else v.reshape(1, x.shape[1])


class LayerNormTolerance:
    """The bounds of one call on ``x``, all in the ``(rows, H)`` view (the caller reshapes)."""

    def __init__(self, x: np.ndarray, gamma: np.ndarray | None, eps: float, eps_placement: str, dtype: str,
                 accumulation_dtype: str, centered: bool = True, beta: np.ndarray | None = None) -> None:
        """``gamma`` and ``beta`` of the normalized shape or per element of the view; None where absent."""
        self.x = x
        r, h = x.shape
        # Not centered (RMSNorm): no mean is subtracted, so none is lost to cancellation (kappa = 0).
        mean = x.mean(axis=1) if h and centered else np.zeros(r)
        var = ((x - mean[:, None]) ** 2).mean(axis=1) if h else np.zeros(r)
        eps = np.full(r, eps, dtype=np.float64)
        if eps_placement == "std":
            eps = 2 * eps * np.sqrt(var) + eps**2
        # gamma of the normalized shape, or per element of the (rows, H) view (GroupNorm's scale per channel).
        self.gamma = np.ones((1, h)) if gamma is None else _rows_of(np.abs(np.asarray(gamma, dtype=np.float64)), x)
        # Rows as the "channels" of BatchNorm's Conditioning: per element with rows first, or transposed so
        # that its channel means run over a row.
        # beta as the layer holds it in its dtype: its rounding shows beside a small |gamma xhat|.
        beta = 0.0 if beta is None else _rows_of(np.abs(np.asarray(beta, dtype=np.float64)), x)
        self.per_element = Conditioning(dtype, h, mean[:, None], var[:, None], eps[:, None], self.gamma,
                                        accumulation_dtype, beta=beta)
        self.transposed = Conditioning(dtype, h, mean, var, eps, np.ones(1), accumulation_dtype)
        self.over_rows = Conditioning(dtype, r, np.zeros(1), np.ones(1), 0.0, np.ones(1), accumulation_dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.xhat = (x - mean[:, None]) / self.per_element.sigma

    @property
    def u(self) -> float:
        return self.per_element.u

    def y(self, y: np.ndarray) -> np.ndarray:
        return self.per_element.y(y, self.xhat)

    def dx(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        g = dy * self.gamma
        t = self.transposed
        # The row mean of g xhat carries each element's xhat error weighted by that element's |g|: where gamma
        # varies inside a row that is mean_row(|g| P), which BatchNorm's mean_row|g| P (gamma constant over the
        # reduction) underestimates (float64 rows of gammas 1e3 and -1 reached 0.95 of that bound).
        weighted = (t.rho * (1 + t.kappa) / t.sigma)[:, None] * np.abs(self.xhat) * (
            np.abs(g) * (1 + np.abs(self.xhat))).mean(axis=1, keepdims=True)
        return t.dx(dx.T, g.T, self.xhat.T).T + weighted

    def xhat_error(self) -> np.ndarray:
        """How far each ``xhat`` may be off (the per-element terms of the scale's gradient)."""
        a, b = self.per_element.xhat_error()
        return a + b * np.abs(self.xhat)

    def dgamma(self, dgamma: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return (self.per_element.stored(dgamma) + (np.abs(dy) * self.xhat_error()).sum(axis=0)
                + self.over_rows.rho * np.abs(dy * self.xhat).sum(axis=0))

    def dbeta(self, dbeta: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.over_rows.dbeta(dbeta, dy)

    def second_order(self, hx: np.ndarray, hgamma: np.ndarray, dy: np.ndarray, vx: np.ndarray,
                     vgamma: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The bounds of ``hvp_x`` and ``hvp_gamma`` (see the module docstring)."""
        t, xhat = self.transposed, self.xhat.T
        g = (dy * self.gamma).T
        tg = (dy * (0.0 if vgamma is None else _rows_of(np.asarray(vgamma, dtype=np.float64), dy))).T
        through_x = t.second_order(g, vx.T, np.zeros(1), xhat)["hvp_x"]
        through_gamma = t.second_order(tg, np.zeros_like(xhat), np.ones(1), xhat)["hvp_x"]
        return (self.u * np.abs(hx) + (through_x + through_gamma).T,
                self.u * np.abs(hgamma) + self.hvp_gamma_terms(dy, vx).sum(axis=0))

    def hvp_gamma_terms(self, dy: np.ndarray, vx: np.ndarray, reduction: float | None = None) -> np.ndarray:
        """The per-element terms of the bound of ``hvp_gamma``, before its sum over rows: ``dy`` times the
        error of the tangent of ``xhat`` (see the module docstring); ``reduction``: the rounding of the sum
        that follows, when it is not over the rows (GroupNorm's, per channel)."""
        p, avx = 1 + np.abs(self.xhat), np.abs(vx)
        spread = avx + avx.mean(axis=1, keepdims=True) + p * (p * avx).mean(axis=1, keepdims=True)
        tangent = spread / self.per_element.sigma
        scale = SECOND_ORDER * self.per_element.rho * (1 + self.per_element.kappa) + (
            self.over_rows.rho if reduction is None else reduction)
        return scale * np.abs(dy) * tangent

