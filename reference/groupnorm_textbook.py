"""GroupNorm as Wu & He write it (arXiv:1803.08494, figure 3), plain float64 NumPy: read this first;
:mod:`reference.groupnorm` computes the same in bounded memory, and adds the second derivative.

With the channels first, ``x`` of shape (N, C, *spatial) is viewed as (N, G, C/G, *spatial) and each
(sample, group) is normalized over its channels and positions:

    mu    = mean(x),  var = mean((x - mu)**2)      over the group's C/G channels and every position
    xhat  = (x - mu) / sqrt(var + eps)
    y     = gamma xhat + beta                      gamma, beta per channel

InstanceNorm (Ulyanov et al., arXiv:1607.08022) is ``G = C``. The backward, with ``g = gamma dy`` and
``sigma = sqrt(var + eps)``, is the familiar one per (sample, group):

    dx     = (g - mean(g) - xhat mean(g xhat)) / sigma
    dgamma = sum of dy xhat,  dbeta = sum of dy      over every axis but the channels
"""

from __future__ import annotations

import numpy as np

__all__ = ["backward", "forward"]


def _grouped(a: np.ndarray, groups: int, channel_axis: int) -> np.ndarray:
    """``a`` as float64 (N, G, C/G * positions), channels first."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), channel_axis, 1)
    return a.reshape(a.shape[0], groups, a[0:1].size // groups)  # not -1: no samples, size 0


def _ungrouped(a: np.ndarray, x: np.ndarray, channel_axis: int) -> np.ndarray:
    return np.moveaxis(a.reshape(np.moveaxis(x, channel_axis, 1).shape), 1, channel_axis)


def _per_channel(v: np.ndarray | None, x: np.ndarray, channel_axis: int, default: float) -> np.ndarray:
    if v is None:
        return np.full(x.shape[channel_axis], default)
    return np.asarray(v, dtype=np.float64)


def _normalized(x: np.ndarray, eps: float, groups: int, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``xhat`` and ``sigma`` in the grouped view."""
    xg = _grouped(x, groups, channel_axis)
    mu = xg.mean(axis=2, keepdims=True)
    sigma = np.sqrt(((xg - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    return (xg - mu) / sigma, sigma


def forward(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float, groups: int,
            channel_axis: int = 1) -> np.ndarray:
    xhat = _ungrouped(_normalized(x, eps, groups, channel_axis)[0], np.asarray(x), channel_axis)
    shape = [1] * np.ndim(x)
    shape[channel_axis] = np.shape(x)[channel_axis]
    gamma, beta = (_per_channel(v, np.asarray(x), channel_axis, default).reshape(shape)
                   for v, default in ((gamma, 1.0), (beta, 0.0)))
    return gamma * xhat + beta


def backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float, groups: int,
             channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of ``sum(y * dy)``, the parameters' gradients per channel."""
    x, dy = np.asarray(x), np.asarray(dy, dtype=np.float64)
    shape = [1] * x.ndim
    shape[channel_axis] = x.shape[channel_axis]
    g = _grouped(dy * _per_channel(gamma, x, channel_axis, 1.0).reshape(shape), groups, channel_axis)
    xhat, sigma = _normalized(x, eps, groups, channel_axis)
    dx = (g - g.mean(axis=2, keepdims=True) - xhat * (g * xhat).mean(axis=2, keepdims=True)) / sigma
    others = tuple(a for a in range(x.ndim) if a != channel_axis % x.ndim)
    dgamma = (dy * _ungrouped(xhat, x, channel_axis)).sum(axis=others)
    return _ungrouped(dx, x, channel_axis), dgamma, dy.sum(axis=others)
