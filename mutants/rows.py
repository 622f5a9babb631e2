"""What the LayerNorm and GroupNorm baselines of the mutation self-test share: a normalization whose statistics
are per row of a view of the input (LayerNorm's rows, GroupNorm's (sample, group) rows), written as a framework
would write one, every step a method a mutant overrides.

It follows the reference's contract as PyTorch's layers do: float16/bfloat16 inputs are computed with float32
arithmetic and returned in the input's dtype, float32 in float32, float64 in float64; the scale and offset are
held in float64 (what crosses the adapter protocol); statistics are two-pass; bad input raises before anything
changes; the caller's arrays are never written.
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import State

__all__ = ["RowNormalization"]


class RowNormalization:
    """A normalization layer behind the adapter protocol (:class:`conformance.adapters.base.Layer`) whose
    statistics are per row of :meth:`rows`: the operator's layer says how its input becomes rows and how its
    parameters lie along them.

    Hooks, in the order a call meets them: construction (:meth:`initial_state`); input checks (:meth:`validate`,
    :meth:`validate_dy`); the dtype policy (:meth:`compute_dtype`, :meth:`output_dtype`); the view (:meth:`rows`,
    :meth:`unrows`); :meth:`statistics` (means by :meth:`row_mean` over :attr:`statistic_axes`, re-centered or
    not: :attr:`centered`), :meth:`normalize`; the parameters (:meth:`per_parameter`, laid along the rows by
    :meth:`along_rows`) and their gradients (:meth:`parameter_gradient`); gradients (:meth:`backward`, with
    :meth:`centre`) and second order (:meth:`hessian_vector_product` with :meth:`tangents`).
    """

    # Axes of the rows view the statistics reduce over: each row on its own.
    statistic_axes: tuple[int, ...] = (-1,)
    # Whether the normalization subtracts the mean (RMSNorm does not).
    centered = True

    def __init__(self, spec) -> None:
        self.spec = spec
        state = self.initial_state(spec)
        self.gamma, self.beta = state.gamma, state.beta

    # -- what the operator's layer says ----------------------------------------------------------
    def initial_state(self, spec) -> State:
        raise NotImplementedError

    def validate(self, x: np.ndarray) -> np.ndarray:
        """``x`` itself, or an error naming what is wrong with it."""
        raise NotImplementedError

    def rows(self, a: np.ndarray) -> np.ndarray:
        """``a`` (of the input's shape) as the view whose rows hold the statistics."""
        raise NotImplementedError

    def unrows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of :meth:`rows`, back to an input of ``shape``."""
        raise NotImplementedError

    def ones(self) -> np.ndarray:
        """The scale of a layer without one."""
        raise NotImplementedError

    def along_rows(self, values: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Per-parameter ``values`` laid along the rows of an input of ``shape``, to broadcast against them."""
        raise NotImplementedError

    def parameter_gradient(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``a`` (rows of an input of ``shape``) summed to one value per held parameter, in float64."""
        raise NotImplementedError

    # -- the adapter protocol --------------------------------------------------------------------
    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            setattr(self, name, np.array(value, dtype=np.float64))

    def get_state(self) -> State:
        return State(gamma=None if self.gamma is None else self.gamma.copy(),
                     beta=None if self.beta is None else self.beta.copy(), eps=self.spec.eps)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._forward(self.validate(x))[0]

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        self.validate_dy(dy, self.validate(x))
        y, xhat, r = self._forward(x)
        dyc = self.rows(self._compute(dy, xhat.dtype))
        dx = self.unrows(self.backward(dyc * self.along_rows(self.scale(), x.shape, xhat.dtype), xhat, r), x.shape)
        dgamma = None if self.gamma is None else self.parameter_gradient(dyc * xhat, x.shape)
        dbeta = None if self.beta is None else self.parameter_gradient(dyc, x.shape)
        return y, dx.astype(self.output_dtype(x.dtype)), dgamma, dbeta

    def double_backward(self, x: np.ndarray, dy: np.ndarray, vx: np.ndarray, vgamma, vbeta) -> tuple:
        x = self.validate(x)
        dtype = self.compute_dtype(x.dtype)
        xc, dyc, vxc = (self.rows(self._compute(a, dtype))
                        for a in (x, self.validate_dy(dy, x), self.validate_dy(vx, x)))
        xhat, r = self.normalize(xc, *self.statistics(xc))
        g = dyc * self.along_rows(self.scale(), x.shape, dtype)
        dg = dyc * self.along_rows(np.zeros_like(self.scale()) if vgamma is None else vgamma, x.shape, dtype)
        hx, t = self.hessian_vector_product(g, dg, xhat, r, vxc)
        hgamma = None if self.gamma is None else self.parameter_gradient(dyc * t, x.shape)
        hbeta = None if self.beta is None else np.zeros_like(self.beta)
        return self.unrows(hx, x.shape).astype(self.output_dtype(x.dtype)), hgamma, hbeta

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y, xhat, r)``: the output in the output dtype, ``xhat`` as rows in the compute dtype, and
        ``r = 1 / sqrt(var + eps)`` per row."""
        rows = self.rows(self._compute(x, self.compute_dtype(x.dtype)))
        xhat, r = self.normalize(rows, *self.statistics(rows))
        y = xhat * self.along_rows(self.scale(), x.shape, rows.dtype)
        if self.beta is not None:
            y = y + self.along_rows(self.per_parameter(self.beta), x.shape, rows.dtype)
        return self.unrows(y, x.shape).astype(self.output_dtype(x.dtype)), xhat, r

    # -- input checks ----------------------------------------------------------------------------
    def validate_dy(self, dy: np.ndarray, x: np.ndarray) -> np.ndarray:
        """A cotangent (or tangent) of the input ``x``: floating, of its shape."""
        if not (dy.dtype.kind == "f" or dy.dtype.name == "bfloat16"):
            raise TypeError(f"dy must have a floating dtype, got {dy.dtype}")
        if dy.shape != x.shape:
            raise ValueError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
        return dy

    # -- numerics --------------------------------------------------------------------------------
    def compute_dtype(self, dtype: np.dtype) -> np.dtype:
        """float64 stays float64; float32 and narrower compute in float32."""
        return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def row_mean(self, a: np.ndarray) -> np.ndarray:
        """The mean of ``a`` over :attr:`statistic_axes`, kept as axes of one."""
        return a.mean(axis=self.statistic_axes, keepdims=True)

    def statistics(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and biased variance of each row, two-pass; not :attr:`centered`: a zero mean and the mean square."""
        mean = self.row_mean(rows)
        mean = mean if self.centered else np.zeros_like(mean)
        return mean, self.row_mean((rows - mean) ** 2)

    def normalize(self, rows: np.ndarray, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``xhat`` and ``r = 1 / sqrt(var + eps)``."""
        r = 1 / np.sqrt(var + rows.dtype.type(self.spec.eps))
        return (rows - mean) * r, r

    def centre(self, a: np.ndarray) -> np.ndarray:
        """``a`` less its row means where the layer re-centers (the derivative of ``x - mean(x)``)."""
        return a - self.row_mean(a) if self.centered else a

    def per_parameter(self, parameter: np.ndarray) -> np.ndarray:
        """A held parameter as the values it multiplies or adds with (itself)."""
        return parameter

    def scale(self) -> np.ndarray:
        """The scale as applied (ones without one)."""
        return self.ones() if self.gamma is None else self.per_parameter(self.gamma)

    def backward(self, g: np.ndarray, xhat: np.ndarray, r: np.ndarray) -> np.ndarray:
        """dx from ``g`` (the gradient of ``xhat``: dy times the scale), in rows."""
        return r * (self.centre(g) - xhat * self.row_mean(g * xhat))

    def hessian_vector_product(self, g: np.ndarray, dg: np.ndarray, xhat: np.ndarray, r: np.ndarray,
                               vx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The derivative of :meth:`backward` along ``vx`` (through ``xhat`` and ``r``) and along the scale
        (``dg``: dy times its direction), in rows, and the tangent of ``xhat`` (hgamma's)."""
        mean, centre = self.row_mean, self.centre
        t, dr = self.tangents(r, xhat, vx)
        hx = (dr * (centre(g) - xhat * mean(g * xhat))
              + r * (centre(dg) - xhat * mean(dg * xhat) - t * mean(g * xhat) - xhat * mean(g * t)))
        return hx, t

    def tangents(self, r: np.ndarray, xhat: np.ndarray, vx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The derivatives of ``xhat`` and of ``r`` along ``vx``, through the statistics."""
        xhat_vx = self.row_mean(xhat * vx)
        return r * (self.centre(vx) - xhat * xhat_vx), -(r**2) * xhat_vx

    @staticmethod
    def _compute(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """A copy in the compute dtype (the caller's array is never written)."""
        return a.astype(dtype, order="C")
