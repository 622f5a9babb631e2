"""BatchNorm variants with their own convention, as pure float64 functions beside :mod:`reference.batchnorm`.

- **A corrected normalization** (training only): ``y = gamma * (scale * xhat + shift) + beta`` with per-channel
  ``scale`` and ``shift`` that carry no gradient: batch renormalization's ``(r, d)`` (held constant, as its
  paper and every framework write it) and tf-keras' ``adjustment`` callable's ``(scale, bias)`` (constants
  of the input's shape). :func:`corrected_forward_training`, :func:`corrected_backward_training`: ``dx`` is
  the plain training ``dx`` with ``gamma * scale`` for ``gamma``, ``dgamma = scale * sum(dy * xhat) + shift *
  sum(dy)``.
- **Batch renormalization** (Ioffe 2017, https://arxiv.org/abs/1702.03275) as tf-keras and Keras 3 keep it:
  :func:`renorm_correction` (``r = sigma_B / s``, ``d = (mean_B - m) / s`` from the renorm averages ``m`` and
  ``s`` of ``sqrt(var + eps)``, ``s`` at least ``sqrt(eps)``, then clipped to ``[rmin, rmax]`` and
  ``[-dmax, dmax]``) and :func:`renorm_update`: the inference averages are the mean and ``moving_stddev``, an
  average of ``sqrt(var + eps)``, from which ``running_var = max(moving_stddev**2 - eps, 0)`` is derived, and
  the renorm averages move with a weight of their own. :func:`renorm_state_for` is the state whose averages
  all agree on a mean and variance (so the initial state, variance 1, has ``moving_stddev = sqrt(1 + eps)``).
- **Ghost batches** (``virtual_batch_size``, Hoffer et al. 2017): the batch split into ghost batches of
  ``virtual_batch_size`` samples, each normalized with its own statistics. tf-keras reshapes the batch axis
  ``N`` into ``(virtual_batch_size, N / virtual_batch_size)`` and reduces over the first, so ghost batch ``j``
  holds the samples ``j, j + G, j + 2G, ...`` (``G = N / virtual_batch_size`` ghost batches): interleaved,
  not consecutive (:func:`ghost_batches`). The running averages take in the ghost batches' mean mean and
  mean (biased) variance, one update per call (:func:`ghost_forward_training`).

Weights of running averages are new-batch weights ``w`` (``run = (1 - w) run + w batch``; Keras' momentum
is ``1 - w``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import batchnorm as bn
from .conventions import check_eps
from .validation import channel_axis_index, check_array, check_dy, per_channel

__all__ = [
    "corrected_backward_training",
    "corrected_forward_training",
    "ghost_backward_training",
    "ghost_batches",
    "ghost_forward_training",
    "renorm_correction",
    "renorm_state_for",
    "renorm_update",
]


def _channels(x: np.ndarray, channel_axis: int) -> int:
    return check_array(x).shape[channel_axis_index(np.ndim(x), channel_axis)]


def _composed(gamma: np.ndarray | None, beta: np.ndarray | None, scale: np.ndarray, shift: np.ndarray, c: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """``gamma * (scale * xhat + shift) + beta`` as an affine map of ``xhat``: ``(gamma * scale, gamma * shift +
    beta)``."""
    gamma, beta = per_channel(gamma, c, "gamma", 1.0), per_channel(beta, c, "beta", 0.0)
    scale, shift = per_channel(scale, c, "scale"), per_channel(shift, c, "shift")
    return gamma * scale, gamma * shift + beta


def corrected_forward_training(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float,
                               scale: np.ndarray, shift: np.ndarray, channel_axis: int = 1
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training forward with the normalized value corrected: ``gamma * (scale * xhat + shift) + beta``.
    Returns ``(y, mean, var)``, the batch statistics."""
    return bn.forward_training(x, *_composed(gamma, beta, scale, shift, _channels(x, channel_axis)), eps,
                               channel_axis)


def corrected_backward_training(dy: np.ndarray, x: np.ndarray, mean: np.ndarray, var: np.ndarray,
                                gamma: np.ndarray | None, eps: float, scale: np.ndarray, shift: np.ndarray,
                                channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of ``sum(y * dy)`` for :func:`corrected_forward_training`, ``scale``
    and ``shift`` held constant: ``dx`` is :func:`reference.backward_training`'s with ``gamma * scale``;
    ``dgamma = sum(dy * (scale * xhat + shift))``; ``dbeta = sum(dy)``."""
    c = _channels(x, channel_axis)
    effective, _ = _composed(gamma, None, scale, shift, c)
    dx, dxhat_sum, dbeta = bn.backward_training(dy, x, mean, var, effective, eps, channel_axis)
    return dx, per_channel(scale, c, "scale") * dxhat_sum + per_channel(shift, c, "shift") * dbeta, dbeta


def renorm_correction(mean: np.ndarray, var: np.ndarray, eps: float, renorm_mean: np.ndarray,
                      renorm_stddev: np.ndarray, rmin: float | None = None, rmax: float | None = None,
                      dmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batch renormalization's ``(r, d)`` for a batch of statistics ``mean`` and biased ``var``: ``r = sqrt(var +
    eps) / s``, ``d = (mean - renorm_mean) / s`` with ``s = max(renorm_stddev, sqrt(eps))``, then ``r`` clipped to
    ``[rmin, rmax]`` and ``d`` to ``[-dmax, dmax]`` (``None``: no bound)."""
    eps = check_eps(eps)
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    c = mean.shape[0] if mean.ndim else 1
    s = np.maximum(per_channel(renorm_stddev, c, "renorm_stddev"), np.sqrt(eps))
    with np.errstate(divide="ignore", invalid="ignore"):  # eps = 0 and a zero average: as the division gives
        r = np.sqrt(var + eps) / s
        d = (mean - per_channel(renorm_mean, c, "renorm_mean")) / s
    r = np.clip(r, -np.inf if rmin is None else rmin, np.inf if rmax is None else rmax)
    return r, d if dmax is None else np.clip(d, -dmax, dmax)


def renorm_state_for(mean: np.ndarray, var: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """The renorm state whose averages all read ``mean`` and ``var``: ``running_mean`` and ``renorm_mean`` the
    mean, ``moving_stddev`` and ``renorm_stddev`` ``sqrt(var + eps)``, ``running_var`` the variance."""
    mean, var = np.array(mean, dtype=np.float64), np.array(var, dtype=np.float64)
    stddev = np.sqrt(var + check_eps(eps))
    return {"running_mean": mean, "running_var": var, "moving_stddev": stddev, "renorm_mean": mean.copy(),
            "renorm_stddev": stddev.copy()}


def renorm_update(state: Mapping[str, np.ndarray], mean: np.ndarray, var: np.ndarray, eps: float, weight: float,
                  renorm_weight: float) -> dict[str, np.ndarray]:
    """The renorm state after a training batch of statistics ``mean`` and biased ``var``: ``running_mean`` and
    ``moving_stddev`` (of ``sqrt(var + eps)``) with new-batch weight ``weight``, ``renorm_mean`` and
    ``renorm_stddev`` with ``renorm_weight``, and ``running_var = max(moving_stddev**2 - eps, 0)``; a new dict."""
    stddev = np.sqrt(np.asarray(var, dtype=np.float64) + check_eps(eps))

    def average(name: str, value: np.ndarray, w: float) -> np.ndarray:
        return (1.0 - w) * np.asarray(state[name], dtype=np.float64) + w * value

    moving_stddev = average("moving_stddev", stddev, weight)
    return {"running_mean": average("running_mean", mean, weight),
            "running_var": np.maximum(moving_stddev**2 - eps, 0.0), "moving_stddev": moving_stddev,
            "renorm_mean": average("renorm_mean", mean, renorm_weight),
            "renorm_stddev": average("renorm_stddev", stddev, renorm_weight)}


def ghost_batches(batch: int, virtual_batch_size: int) -> list[np.ndarray]:
    """The sample indices of each ghost batch of a batch of ``batch`` samples (tf-keras' grouping: ghost batch
    ``j`` holds ``j, j + G, ...``, ``G = batch / virtual_batch_size``); ``ValueError`` unless it divides."""
    if virtual_batch_size < 1 or batch % virtual_batch_size:
        raise ValueError(f"virtual_batch_size {virtual_batch_size} must be positive and divide the batch ({batch})")
    ghosts = batch // virtual_batch_size
    return [np.arange(j, batch, ghosts) for j in range(ghosts)]


def ghost_forward_training(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float,
                           virtual_batch_size: int, channel_axis: int = 1
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training forward over ghost batches (samples on axis 0, which must not be the channel axis): each ghost
    batch normalized with its own statistics. Returns ``(y, mean, var)``: the means of the ghost batches' means
    and biased variances, which the running averages take in."""
    x = check_array(x)
    if channel_axis_index(x.ndim, channel_axis) == 0:
        raise ValueError("ghost batches split axis 0, which cannot be the channel axis")
    y, means, variances = np.empty(x.shape), [], []
    for ghost in ghost_batches(x.shape[0], virtual_batch_size):
        y[ghost], mean, var = bn.forward_training(x[ghost], gamma, beta, eps, channel_axis)
        means.append(mean)
        variances.append(var)
    return y, np.mean(means, axis=0), np.mean(variances, axis=0)


def ghost_backward_training(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float,
                            virtual_batch_size: int, channel_axis: int = 1
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of ``sum(y * dy)`` for :func:`ghost_forward_training`: each ghost
    batch's training gradient through its own statistics, the parameters' summed over the ghost batches."""
    x = check_array(x)
    dy = check_dy(dy, x)
    dx, dgamma, dbeta = np.empty(x.shape), 0.0, 0.0
    for ghost in ghost_batches(x.shape[0], virtual_batch_size):
        mean, var = bn.batch_statistics(x[ghost], channel_axis)
        dx[ghost], dg, db = bn.backward_training(dy[ghost], x[ghost], mean, var, gamma, eps, channel_axis)
        dgamma, dbeta = dgamma + dg, dbeta + db
    return dx, dgamma, dbeta
