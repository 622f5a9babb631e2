"""BatchNorm as pure NumPy functions, fast: the specification every implementation is checked against.

These compute what :mod:`reference.textbook` writes down (and are property-tested against it), in
float64 whatever the input dtype, on the blocked, threaded engine of :mod:`reference.engine`: each
formula's elementwise steps run per cache-sized block, reductions are combined in block order, so
results are bitwise identical whatever the thread count. Arguments are checked first
(:mod:`reference.validation`).

Statistics use the two-pass algorithm: the mean first, then ``var = sum((x - mean)**2) / n``. The
rounding error ``delta`` of the mean enters the variance only as ``delta**2``, a relative error of about
``(u * |mean| / std)**2`` (u = 2**-53), so the variance stays exact to float64 precision for input whose
mean exceeds its spread by up to ~1e7 and keeps most digits far beyond that, where the one-pass
``E[x**2] - E[x]**2`` loses everything.
"""

from __future__ import annotations

import numpy as np

from . import engine, textbook
from .conventions import check_eps
from .validation import channel_axis_index, check_array, check_dy, per_channel

__all__ = [
    "channel_axis_index",
    "batch_statistics",
    "normalize",
    "forward_training",
    "forward_inference",
    "backward_training",
    "backward_inference",
    "hvp_training",
]


def _prepare(x: object, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``x``; return it and its (A, C, B) view."""
    x = check_array(x)
    return x, engine.view3(x, channel_axis_index(x.ndim, channel_axis))


def _statistics(x3: np.ndarray, centered: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass mean and biased variance of an (A, C, B) view; ``x - mean`` is left in ``centered``
    when given (the training forward reuses it instead of recomputing it)."""
    a, c, b = x3.shape
    n = a * b
    if n == 0:
        raise ValueError(f"cannot compute batch statistics of an empty batch ({a * b} values per channel)")
    sums = engine.map_blocks(lambda sa, sc, _: (sc, np.einsum("acb->c", x3[sa, sc], dtype=np.float64)), x3)
    mean = engine.channel_sums(sums, c) / n

    def squares(sa: slice, sc: slice, scratch: np.ndarray) -> tuple[slice, np.ndarray]:
        xb = x3[sa, sc]
        d = engine.centered(xb, mean[sc, None], engine.block_of(scratch, xb) if centered is None else centered[sa, sc])
        return sc, np.einsum("acb,acb->c", d, d)

    return mean, engine.channel_sums(engine.map_blocks(squares, x3), c) / n


def _scale_and_shift(var: np.ndarray, eps: float, gamma: np.ndarray | None, beta: np.ndarray | None, c: int):
    """Per-channel ``gamma / sqrt(var + eps)`` and ``beta``."""
    var = per_channel(var, c, "var")
    gamma = per_channel(gamma, c, "gamma", 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # eps = 0 on a constant channel gives NaN, as it should
        return gamma / np.sqrt(var + check_eps(eps)), per_channel(beta, c, "beta", 0.0)


def _affine_inplace(y3: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
    """``y3 = y3 * scale + shift`` per channel, in place."""

    def apply(sa: slice, sc: slice, _: np.ndarray) -> None:
        yb = y3[sa, sc]
        with np.errstate(invalid="ignore"):
            yb *= scale[sc, None]
        yb += shift[sc, None]

    engine.map_blocks(apply, y3)


def batch_statistics(x: np.ndarray, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of ``x``, in float64 (two-pass algorithm)."""
    return _statistics(_prepare(x, channel_axis)[1])


def normalize(
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    channel_axis: int = 1,
) -> np.ndarray:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel, as a new float64 array."""
    x, x3 = _prepare(x, channel_axis)
    c = x3.shape[1]
    mean = per_channel(mean, c, "mean")
    scale, shift = _scale_and_shift(var, eps, gamma, beta, c)
    y = np.empty(x3.shape)
    engine.map_blocks(lambda sa, sc, _: engine.centered(x3[sa, sc], mean[sc, None], y[sa, sc]), x3)
    _affine_inplace(y, scale, shift)
    return y.reshape(x.shape)


def forward_training(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    eps: float,
    channel_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode forward: normalize with the batch statistics. Returns ``(y, mean, var)``."""
    x, x3 = _prepare(x, channel_axis)
    y = np.empty(x3.shape)
    mean, var = _statistics(x3, centered=y)
    _affine_inplace(y, *_scale_and_shift(var, eps, gamma, beta, x3.shape[1]))
    return y.reshape(x.shape), mean, var


def forward_inference(
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    eps: float,
    channel_axis: int = 1,
) -> np.ndarray:
    """Inference-mode forward: normalize with the running statistics."""
    return normalize(x, running_mean, running_var, eps, gamma, beta, channel_axis)


def backward_training(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray | None,
    eps: float,
    channel_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of ``sum(y * dy)`` for the training-mode forward.

    The batch mean and variance depend on ``x``, so with ``d = x - mean``, ``k = gamma / sqrt(var + eps)``
    and ``n`` values per channel:
    ``dx = k * (dy - sum(dy) / n - d * sum(dy * d) / (n * (var + eps)))``.
    """
    x = check_array(x)
    dy = check_dy(dy, x)
    axis = channel_axis_index(x.ndim, channel_axis)
    x3, dy3 = engine.view3(x, axis), engine.view3(dy, axis)
    a, c, b = x3.shape
    n = a * b
    if n == 0:
        raise ValueError(f"cannot differentiate batch statistics of an empty batch (input shape {x.shape})")
    mean, var = per_channel(mean, c, "mean"), per_channel(var, c, "var")
    gamma = per_channel(gamma, c, "gamma", 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_std = 1.0 / np.sqrt(var + check_eps(eps))
    dx = np.empty(x3.shape)

    def sums(sa: slice, sc: slice, scratch: np.ndarray) -> tuple[slice, np.ndarray]:
        d = engine.centered(x3[sa, sc], mean[sc, None], dx[sa, sc])  # dx holds x - mean until the next pass
        dyb = engine.block_of(scratch, d)
        np.copyto(dyb, dy3[sa, sc])
        return sc, np.stack([np.einsum("acb->c", dyb), np.einsum("acb,acb->c", dyb, d)])

    sum_dy, sum_dy_d = engine.channel_sums(engine.map_blocks(sums, x3), c)
    k = gamma * inv_std
    with np.errstate(invalid="ignore"):
        k_d = -k * inv_std * inv_std * sum_dy_d / n
    k_0 = -k * sum_dy / n

    def combine(sa: slice, sc: slice, scratch: np.ndarray) -> None:
        dxb, dyb = dx[sa, sc], dy3[sa, sc]
        with np.errstate(invalid="ignore"):
            dxb *= k_d[sc, None]
        dyk = engine.block_of(scratch, dyb)
        np.copyto(dyk, dyb)
        dyk *= k[sc, None]
        dxb += dyk
        dxb += k_0[sc, None]

    engine.map_blocks(combine, x3)
    return dx.reshape(x.shape), sum_dy_d * inv_std, sum_dy


def backward_inference(
    dy: np.ndarray,
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    gamma: np.ndarray | None,
    eps: float,
    channel_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of ``sum(y * dy)`` for the inference-mode forward.

    The running statistics are constants, so ``dx = dy * gamma / sqrt(running_var + eps)``.
    """
    x = check_array(x)
    dy = check_dy(dy, x)
    axis = channel_axis_index(x.ndim, channel_axis)
    c = x.shape[axis]
    gamma = per_channel(gamma, c, "gamma", 1.0)
    xhat = normalize(x, running_mean, running_var, eps, None, None, axis)
    dx = normalize(dy, np.zeros(c), running_var, eps, gamma, None, axis)
    x3, dy3 = engine.view3(xhat, axis), engine.view3(dy, axis)
    dgamma = np.einsum("acb,acb->c", dy3, x3, dtype=np.float64)
    return dx, dgamma, dy3.sum(axis=(0, 2), dtype=np.float64)


def hvp_training(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    eps: float,
    vx: np.ndarray,
    vgamma: np.ndarray | None = None,
    channel_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second order: the Hessian of ``sum(y * dy)`` in ``(x, gamma, beta)`` (training mode) times the
    direction ``(vx, vgamma, vbeta)``, returned as ``(hx, hgamma, hbeta)``; the formula and its derivation
    are :func:`reference.textbook.hvp_training`. ``vbeta`` does not enter (``y`` is linear in beta) and
    ``hbeta`` is zero. Not performance-critical, so the textbook formula is the implementation."""
    x = check_array(x)
    dy, vx = check_dy(dy, x), check_dy(vx, x, "vx")
    axis = channel_axis_index(x.ndim, channel_axis)
    c = x.shape[axis]
    if x.size == 0:
        raise ValueError(f"cannot differentiate batch statistics of an empty batch (input shape {x.shape})")
    gamma = per_channel(gamma, c, "gamma", 1.0)
    vgamma = per_channel(vgamma, c, "vgamma", 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # eps = 0 on a constant channel gives NaN, as it should
        return textbook.hvp_training(dy, x, gamma, check_eps(eps), vx, vgamma, axis)
