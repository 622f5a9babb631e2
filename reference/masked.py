"""BatchNorm with a mask (Keras' ``mask=``): the training statistics of each channel taken over the positions the
mask marks, every position normalized with them.

A mask marks positions: one boolean per index of the input's axes but the channel axis. Training normalizes
every value, marked or not, with the mean and biased variance of its channel's marked values (``W`` of them) and
moves the running averages towards those statistics as a batch of ``W`` values per channel would; inference
ignores the mask. So the output is BatchNorm's normalization with given statistics, and only the gradient
differs from both of BatchNorm's: with ``w`` the mask, ``xhat`` the normalized input and ``r = 1 / sqrt(var +
eps)``, per channel

    dx = gamma r (dy - (w / W) sum(dy) - (w / W) xhat sum(dy xhat)),   dgamma = sum(dy xhat),   dbeta = sum(dy),

the sums over every position (unmarked outputs depend on the statistics too); an unmarked value's ``dx`` is
``gamma r dy``, as in inference. All of ``w = 1`` is BatchNorm's training gradient.
"""

from __future__ import annotations

import numpy as np

from .batchnorm import batch_statistics
from .validation import channel_axis_index, check_array, check_dy, per_channel

__all__ = ["masked_backward", "masked_statistics", "position_weights"]


def position_weights(mask: np.ndarray, x_shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """The mask as float64 weights of ``x_shape``, broadcast over the channel axis; ``ValueError`` unless ``mask``
    has the shape of ``x`` without its channel axis."""
    axis = channel_axis_index(len(x_shape), channel_axis)
    positions = tuple(n for i, n in enumerate(x_shape) if i != axis)
    mask = np.asarray(mask)
    if mask.shape != positions:
        raise ValueError(f"the mask must mark the positions of x {x_shape} (shape {positions}), got {mask.shape}")
    return np.broadcast_to(np.expand_dims(mask.astype(np.float64), axis), x_shape)


def masked_statistics(x: np.ndarray, mask: np.ndarray, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Per channel, the mean and biased variance of the marked values, and how many positions are marked;
    ``ValueError`` if none is."""
    x = check_array(x)
    w = position_weights(mask, x.shape, channel_axis)
    count = int(np.count_nonzero(mask))
    if count == 0:
        raise ValueError("the mask marks no position: no statistics to normalize with")
    axis = channel_axis_index(x.ndim, channel_axis)
    marked = np.moveaxis(x, axis, -1)[np.moveaxis(w, axis, -1)[..., 0] > 0]  # (count, C)
    mean, var = batch_statistics(marked, channel_axis=-1)
    return mean, var, count


def masked_backward(dy: np.ndarray, x: np.ndarray, mask: np.ndarray, gamma: np.ndarray | None, eps: float,
                    channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of ``sum(y * dy)`` for a training call with ``mask`` (module docstring)."""
    x = check_array(x)
    dy = check_dy(dy, x)
    axis = channel_axis_index(x.ndim, channel_axis)
    mean, var, count = masked_statistics(x, mask, channel_axis)
    w = np.moveaxis(position_weights(mask, x.shape, channel_axis), axis, -1)
    xl, dyl = np.moveaxis(np.asarray(x, np.float64), axis, -1), np.moveaxis(np.asarray(dy, np.float64), axis, -1)
    r = 1.0 / np.sqrt(var + eps)
    xhat = (xl - mean) * r
    flat = (-1, xl.shape[-1])
    dbeta, dgamma = dyl.reshape(flat).sum(axis=0), (dyl * xhat).reshape(flat).sum(axis=0)
    g = per_channel(gamma, xl.shape[-1], "gamma", 1.0)
    dx = g * r * (dyl - w / count * (dbeta + xhat * dgamma))
    return np.moveaxis(dx, -1, axis), dgamma, dbeta
