"""Synchronized BatchNorm, specified: what every rank of a data-parallel world must compute.

A world of ranks each holds one shard of a global batch (split along axis 0, the batch axis). In training
mode a synchronized BatchNorm normalizes every shard with the statistics of the *global* batch, so each
rank's output and input gradient are exactly its slice of the single-device results on the concatenated
batch, and every rank's running statistics are the single-device ones. The parameter gradients are sums
over the global batch; each rank holds its own shard's share (:attr:`RankExpectation.dgamma`), which the
framework's cross-replica reduction sums (or averages) into the global one. Inference mode normalizes every
sample with the running statistics alone: no communication is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .batchnorm import backward_training, channel_axis_index, forward_training, normalize
from .validation import check_array

__all__ = ["RankExpectation", "split_batch", "synchronized_training"]


def split_batch(x: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """``x`` cut along the batch axis into consecutive shards of ``sizes`` samples (rank order)."""
    x = np.asarray(x)
    sizes = [int(s) for s in sizes]
    if not sizes or any(s < 0 for s in sizes):
        raise ValueError(f"shard sizes must be a non-empty list of sizes >= 0, got {sizes}")
    if x.ndim < 1 or sum(sizes) != x.shape[0]:
        raise ValueError(f"shard sizes {sizes} add up to {sum(sizes)}, the batch has {x.shape[:1]} samples")
    return np.split(x, np.cumsum(sizes)[:-1], axis=0)


@dataclass(frozen=True)
class RankExpectation:
    """One rank's expected training-mode results (float64): its slice of the output ``y`` and of the input
    gradient ``dx``, and its shard's share of the parameter gradients, ``sum(dy * xhat)`` and ``sum(dy)``
    over its own samples with ``xhat`` normalized by the global statistics (None without affine
    parameters)."""

    y: np.ndarray
    dx: np.ndarray
    dgamma: np.ndarray | None
    dbeta: np.ndarray | None


def synchronized_training(
    x: np.ndarray,
    dy: np.ndarray,
    sizes: Sequence[int],
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    eps: float,
    channel_axis: int = 1,
) -> tuple[list[RankExpectation], np.ndarray, np.ndarray]:
    """Every rank's expected results for a synchronized training step on the global batch ``x`` (with
    cotangent ``dy``) split into shards of ``sizes``; also the global batch ``(mean, var)`` that every
    rank's running statistics are updated with (:func:`reference.update_running_statistics`, with
    ``count`` the global number of values per channel)."""
    x = check_array(x)
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape}, x has {x.shape}")
    y, mean, var = forward_training(x, gamma, beta, eps, channel_axis)
    dx, _, _ = backward_training(dy, x, mean, var, gamma, eps, channel_axis)
    axis = channel_axis_index(x.ndim, channel_axis)
    reduce = tuple(a for a in range(x.ndim) if a != axis)
    xhat = normalize(x, mean, var, eps, channel_axis=channel_axis)
    ranks = []
    for y_r, dx_r, dy_r, xhat_r in zip(*(split_batch(a, sizes) for a in (y, dx, dy, xhat))):
        shares = (np.sum(dy_r * xhat_r, axis=reduce), np.sum(dy_r, axis=reduce)) if gamma is not None else (None, None)
        ranks.append(RankExpectation(y_r, dx_r, *shares))
    return ranks, mean, var
