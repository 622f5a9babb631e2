"""LayerNorm as Ba, Kiros & Hinton write it (arXiv:1607.06450, section 3.1), plain float64 NumPy: read
this first; :mod:`reference.layernorm` computes the same fast, in bounded memory, and adds the second
derivative.

The statistics are per row: over the trailing ``normalized`` axes of ``x`` (from ``begin_axis`` on), one
mean and one biased variance for each index of the leading axes (a token, an image), never across the batch:

    mu    = mean(x)                       over the normalized axes
    var   = mean((x - mu)**2)             biased (divided by their size H)
    sigma = sqrt(var + eps)               eps inside the square root (every framework here), or
          = sqrt(var) + eps               eps added to the standard deviation (``eps_placement="std"``)
    xhat  = (x - mu) / sigma
    y     = gamma * xhat + beta           gamma, beta of the normalized axes' shape (elementwise affine)

The backward, by the chain rule through ``sigma(var)``, with ``g = gamma * dy`` and ``d = x - mu``:

    dx     = (g - mean(g)) / sigma - mean(g * d) / sigma**2 * sigma'(var) * 2 d
    dgamma = sum over rows of dy * xhat,   dbeta = sum over rows of dy

(for ``sigma = sqrt(var + eps)``, ``sigma' = 1 / (2 sigma)`` and this is the familiar
``(g - mean(g) - xhat * mean(g * xhat)) / sigma``).

RMSNorm (Zhang & Sennrich, arXiv:1910.07467) is the same without re-centering (``centered=False``): ``mu``
is taken as 0, so ``var`` is the mean square ``mean(x**2)`` and ``sigma`` the root mean square, and the
backward's ``g - mean(g)`` is ``g``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["backward", "forward", "statistics"]


def _rows(x: np.ndarray, begin_axis: int) -> np.ndarray:
    """``x`` as float64 (rows, H): the leading axes flattened into rows, the normalized ones into H."""
    x = np.asarray(x, dtype=np.float64)
    begin = begin_axis % x.ndim
    return x.reshape(int(np.prod(x.shape[:begin])), int(np.prod(x.shape[begin:])))


def _sigma(var: np.ndarray, eps: float, eps_placement: str) -> tuple[np.ndarray, np.ndarray]:
    """``sigma`` and its derivative in ``var``."""
    if eps_placement == "variance":
        sigma = np.sqrt(var + eps)
        return sigma, 1 / (2 * sigma)
    root = np.sqrt(var)
    with np.errstate(divide="ignore"):
        return root + eps, 1 / (2 * root)


def statistics(x: np.ndarray, begin_axis: int = -1, centered: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean (0 when not ``centered``) and biased variance about it, shape (rows,)."""
    rows = _rows(x, begin_axis)
    mu = rows.mean(axis=1) if centered else np.zeros(rows.shape[0])
    return mu, ((rows - mu[:, None]) ** 2).mean(axis=1)


def forward(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float, begin_axis: int = -1,
            eps_placement: str = "variance", centered: bool = True) -> np.ndarray:
    rows = _rows(x, begin_axis)
    mu, var = statistics(x, begin_axis, centered)
    sigma = _sigma(var, eps, eps_placement)[0]
    xhat = (rows - mu[:, None]) / sigma[:, None]
    y = xhat * (1.0 if gamma is None else np.ravel(gamma)) + (0.0 if beta is None else np.ravel(beta))
    return y.reshape(np.shape(x))


def backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float, begin_axis: int = -1,
             eps_placement: str = "variance", centered: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of ``sum(y * dy)``; the parameters' gradients of the normalized shape."""
    rows, dyr = _rows(x, begin_axis), _rows(dy, begin_axis)
    mu, var = statistics(x, begin_axis, centered)
    sigma, dsigma = (a[:, None] for a in _sigma(var, eps, eps_placement))
    d = rows - mu[:, None]
    g = dyr * (1.0 if gamma is None else np.ravel(gamma))
    centred_g = g - g.mean(axis=1, keepdims=True) if centered else g
    dx = centred_g / sigma - (g * d).mean(axis=1, keepdims=True) / sigma**2 * dsigma * 2 * d
    shape = np.shape(x)[begin_axis % np.ndim(x):]
    return dx.reshape(np.shape(x)), (dyr * d / sigma).sum(axis=0).reshape(shape), dyr.sum(axis=0).reshape(shape)
