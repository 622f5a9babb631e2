"""BatchNorm as the papers write it: plain float64 NumPy, one line per equation, no validation, no speed.

Read it against Ioffe & Szegedy 2015 (arXiv:1502.03167), Algorithm 1 and the backpropagation equations
of its section 3. Channels are moved to the last axis; every statistic is per channel, over the ``n``
values of all other axes. The fast engine (:mod:`reference.batchnorm`) computes the same functions and
is property-tested against this module (``tests/test_textbook.py``); the public second derivative
:func:`reference.hvp_training` is this module's, checked by finite differences (``tests/test_gradients.py``).
"""

from __future__ import annotations

import numpy as np

from .conventions import Convention, get_convention


def _last(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)


def _sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=tuple(range(a.ndim - 1)))


def _mean(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=tuple(range(a.ndim - 1)))


def _parts(x: np.ndarray, gamma: np.ndarray | None, eps: float, axis: int) -> tuple[np.ndarray, ...]:
    """``x`` (channels last), its mean, biased variance, ``1 / sqrt(var + eps)``, ``xhat`` and gamma."""
    x = _last(x, axis)
    mean = _mean(x)
    var = _mean((x - mean) ** 2)
    r = 1.0 / np.sqrt(var + eps)
    return x, mean, var, r, (x - mean) * r, np.ones(x.shape[-1]) if gamma is None else gamma


def forward_training(
    x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float, channel_axis: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Algorithm 1: ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with the batch's biased variance."""
    _, mean, var, _, xhat, gamma = _parts(x, gamma, eps, channel_axis)
    y = gamma * xhat + (0.0 if beta is None else beta)
    return np.moveaxis(y, -1, channel_axis), mean, var


def forward_inference(
    x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray, gamma: np.ndarray | None,
    beta: np.ndarray | None, eps: float, channel_axis: int = 1,
) -> np.ndarray:
    """Inference (Algorithm 2, step 11): the same formula with the running statistics."""
    y = (_last(x, channel_axis) - running_mean) / np.sqrt(running_var + eps)
    y = y * (1.0 if gamma is None else gamma) + (0.0 if beta is None else beta)
    return np.moveaxis(y, -1, channel_axis)


def update_running_state(
    state: dict, mean: np.ndarray, var: np.ndarray, count: int, momentum: float | None, convention: str | Convention,
) -> dict:
    """``run = (1 - w) run + w batch`` for the mean and for ``var * n / (n - ddof)`` (its square root where
    the convention averages the standard deviation); ``w`` is the new batch's weight in ``convention``
    (``1 / t`` for ``momentum=None``, ``t`` counting this batch, which the counter then holds)."""
    conv = get_convention(convention)
    t = state[conv.counter] + 1 if conv.counter else 1
    w = 1.0 / t if momentum is None else momentum if conv.momentum_weights == "new" else 1.0 - momentum
    spread = var * count / (count - conv.running_var_ddof)
    spread = np.sqrt(spread) if conv.averaged_spread == "std" else spread
    new = {"running_mean": (1 - w) * state["running_mean"] + w * mean,
           conv.spread_field: (1 - w) * state[conv.spread_field] + w * spread}
    return new | ({conv.counter: t} if conv.counter else {})


def running_statistics(state: dict, momentum: float | None, convention: str | Convention) -> tuple[np.ndarray, ...]:
    """What inference normalizes with: the averages, divided by ``1 - (1 - w)**t`` after ``t >= 1`` batches
    where the convention debiases, the standard deviation's squared where it averages that."""
    conv = get_convention(convention)
    t = state[conv.counter] if conv.counter else 0
    w = momentum if conv.momentum_weights == "new" else 1.0 - momentum if momentum is not None else None
    # 1 - (1 - w)**t, written with expm1 and log1p so that a small w keeps its digits.
    d = -np.expm1(t * np.log1p(-w)) if conv.debiased and t > 0 and w < 1 else 1.0
    mean, spread = state["running_mean"] / d, state[conv.spread_field] / d
    return mean, spread**2 if conv.averaged_spread == "std" else spread


def backward_training(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float, channel_axis: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``L = sum(y * dy)`` (section 3):
    ``dbeta = sum(dy)``, ``dgamma = sum(dy * xhat)``,
    ``dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))``."""
    _, _, _, r, xhat, gamma = _parts(x, gamma, eps, channel_axis)
    dy = _last(dy, channel_axis)
    dx = gamma * r * (dy - _mean(dy) - xhat * _mean(dy * xhat))
    return np.moveaxis(dx, -1, channel_axis), _sum(dy * xhat), _sum(dy)


def backward_inference(
    dy: np.ndarray, x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray, gamma: np.ndarray | None,
    eps: float, channel_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant statistics: ``dx = dy * gamma / sqrt(running_var + eps)``, ``dgamma = sum(dy * xhat)``."""
    r = 1.0 / np.sqrt(running_var + eps)
    xhat, dy = (_last(x, channel_axis) - running_mean) * r, _last(dy, channel_axis)
    dx = dy * (1.0 if gamma is None else gamma) * r
    return np.moveaxis(dx, -1, channel_axis), _sum(dy * xhat), _sum(dy)


def hvp_training(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float, vx: np.ndarray, vgamma: np.ndarray | None,
    channel_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second order: the derivative of the training-mode gradients ``(dx, dgamma, dbeta)`` of
    ``L = sum(y * dy)`` along the direction ``(vx, vgamma, vbeta)``, i.e. the Hessian of ``L`` in
    ``(x, gamma, beta)`` times that direction (``dy`` fixed). ``y`` is linear in beta and ``dx`` does
    not depend on it, so ``vbeta`` drops out and the beta component is zero.

    With ``r = 1 / sqrt(var + eps)``, ``g = dy - mean(dy) - xhat * mean(dy * xhat)`` (so ``dx = gamma r g``)
    and the tangents of ``xhat`` and ``r`` along ``vx``,
    ``t = r * (vx - mean(vx) - xhat * mean(xhat * vx))`` and ``r' = -r**2 * mean(xhat * vx)``:

        hx      = vgamma r g + gamma r' g - gamma r (t mean(dy * xhat) + xhat mean(dy * t))
        hgamma  = sum(dy * t)
        hbeta   = 0
    """
    _, _, _, r, xhat, gamma = _parts(x, gamma, eps, channel_axis)
    dy, vx = _last(dy, channel_axis), _last(vx, channel_axis)
    g = dy - _mean(dy) - xhat * _mean(dy * xhat)
    t = r * (vx - _mean(vx) - xhat * _mean(xhat * vx))
    dr = -(r**2) * _mean(xhat * vx)
    vgamma = 0.0 if vgamma is None else vgamma
    hx = vgamma * r * g + gamma * dr * g - gamma * r * (t * _mean(dy * xhat) + xhat * _mean(dy * t))
    return np.moveaxis(hx, -1, channel_axis), _sum(dy * t), np.zeros(r.size)
