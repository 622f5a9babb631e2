"""GroupNorm's tolerance model: LayerNorm's (:mod:`conformance.operators.layernorm.tolerances`) on its rows.

Each (sample, group) is a row of ``H = C/G x positions`` values normalized with its own mean and variance, as a
LayerNorm row is, so the bounds of ``y``, ``dx`` and ``hvp_x`` are LayerNorm's on the (N x G, H) view with gamma
per element of that view (the scale is per channel, so it varies inside a row). What differs are the
parameters' gradients: a channel's ``dgamma`` and ``dbeta`` (and ``hvp_gamma``) sum over the ``N x positions``
values of that channel, across rows, so their per-element terms (``|dy|`` times the error of ``xhat`` or of its
tangent) are LayerNorm's, summed per channel, and the final sum is a reduction of ``N x positions`` terms of its
own (``rho`` of that count times the sum of the magnitudes). Parameters per group (ONNX opset 18) sum their
channels' terms, and their final reduction runs over ``C/G`` times as many values.
"""

from __future__ import annotations

import numpy as np

from ..batchnorm.tolerances import Conditioning
from ..layernorm.tolerances import LayerNormTolerance

__all__ = ["GroupNormTolerance"]


class GroupNormTolerance:
    """The bounds of one call on ``x`` (float64, the input's layout); every method takes and returns arrays in
    that layout, the parameters' per channel."""

    def __init__(self, x: np.ndarray, gamma: np.ndarray | None, eps: float, groups: int, channel_axis: int,
                 dtype: str, accumulation_dtype: str, per_group: bool = False, beta: np.ndarray | None = None) -> None:
        """``gamma`` and ``beta`` per channel (a per-group layer's, repeated over its channels), None where absent."""
        self.shape, self.groups, self.channel_axis, self.per_group = x.shape, groups, channel_axis, per_group
        gamma_rows, beta_rows = (None if v is None else self.rows(np.broadcast_to(self._per_channel(v), x.shape))
                                 for v in (gamma, beta))
        self.rows_tolerance = LayerNormTolerance(self.rows(x), gamma_rows, eps, "variance", dtype, accumulation_dtype,
                                                 beta=beta_rows)
        parameters = groups if per_group else x.shape[channel_axis]
        self.per_parameter = Conditioning(dtype, x.size // max(parameters, 1), np.zeros(1), np.ones(1), 0.0,
                                          np.ones(1), accumulation_dtype)

    def _per_channel(self, v: np.ndarray) -> np.ndarray:
        shape = [1] * len(self.shape)
        shape[self.channel_axis] = self.shape[self.channel_axis]
        return np.asarray(v, dtype=np.float64).reshape(shape)

    def rows(self, a: np.ndarray) -> np.ndarray:
        """``a`` (the input's layout) as the (N x G, H) rows."""
        a = np.moveaxis(np.asarray(a, dtype=np.float64), self.channel_axis, 1)
        return a.reshape(a.shape[0] * self.groups, a[0:1].size // self.groups)  # not -1: no samples, size 0

    def unrows(self, a: np.ndarray) -> np.ndarray:
        moved = np.moveaxis(np.empty(self.shape, dtype=bool), self.channel_axis, 1).shape
        return np.moveaxis(a.reshape(moved), 1, self.channel_axis)

    def parameter_sum(self, a: np.ndarray) -> np.ndarray:
        """The sum of ``a`` per parameter: per channel, or per group of consecutive channels."""
        a = np.moveaxis(a, self.channel_axis, 0)
        return a.reshape(self.groups if self.per_group else a.shape[0], -1).sum(axis=1)

    def y(self, y: np.ndarray) -> np.ndarray:
        return self.unrows(self.rows_tolerance.y(self.rows(y)))

    def dx(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.unrows(self.rows_tolerance.dx(self.rows(dx), self.rows(dy)))

    def dgamma(self, dgamma: np.ndarray, dy: np.ndarray) -> np.ndarray:
        terms = self.unrows(np.abs(self.rows(dy)) * self.rows_tolerance.xhat_error())
        xhat = self.unrows(self.rows_tolerance.xhat)
        return (self.per_parameter.stored(dgamma) + self.parameter_sum(terms)
                + self.per_parameter.rho * self.parameter_sum(np.abs(dy * xhat)))

    def dbeta(self, dbeta: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.per_parameter.stored(dbeta) + self.per_parameter.rho * self.parameter_sum(np.abs(dy))

    def second_order(self, hx: np.ndarray, hgamma: np.ndarray, dy: np.ndarray, vx: np.ndarray,
                     vgamma: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The bounds of ``hvp_x`` and ``hvp_gamma`` (``vgamma`` per channel)."""
        rows = self.rows_tolerance
        vgamma_rows = None if vgamma is None else self.rows(np.broadcast_to(self._per_channel(vgamma), self.shape))
        bound_x, _ = rows.second_order(self.rows(hx), np.zeros(1), self.rows(dy), self.rows(vx), vgamma_rows)
        terms = self.unrows(rows.hvp_gamma_terms(self.rows(dy), self.rows(vx), self.per_parameter.rho))
        return self.unrows(bound_x), self.per_parameter.u * np.abs(hgamma) + self.parameter_sum(terms)
