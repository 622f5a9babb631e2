"""BatchNorm as pure NumPy functions: the specification every implementation is checked against.

Everything is computed in float64 whatever the input dtype. An input of shape ``(..., C, ...)`` with
the channel at ``channel_axis`` is viewed as ``(A, C, B)`` (A = product of the axes before the channel,
B = product of the axes after it), so any rank >= 2 and either channel position share one code path.

Statistics use the two-pass algorithm: the mean first, then ``var = sum((x - mean)**2) / n``. The
rounding error ``delta`` of the mean enters the variance only as ``delta**2``, a relative error of about
``(u * |mean| / std)**2`` (u = 2**-53), so the variance stays exact to float64 precision for input whose
mean exceeds its spread by up to ~1e7 and keeps most digits far beyond that, where the one-pass
``E[x**2] - E[x]**2`` loses everything.

Speed: every full-size pass is evaluated block by block over cache-sized pieces, so the several
elementwise steps of a formula read the input from memory once and allocate no full-size temporaries,
and the blocks are shared among threads (NumPy releases the GIL in its loops). Reductions are summed per
block and combined in block order, so results are bitwise identical whatever the thread count.
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .conventions import Convention, check_eps, check_momentum, get_convention

__all__ = [
    "channel_axis_index",
    "batch_statistics",
    "normalize",
    "forward_training",
    "forward_inference",
    "update_running_statistics",
    "backward_training",
    "backward_inference",
]

# Elements per block: 2**18 float64 values (2 MiB), measured fastest here (fewer Python steps, still cached).
_BLOCK = 1 << 18


def channel_axis_index(ndim: int, channel_axis: int) -> int:
    """Normalize ``channel_axis`` (negative allowed) for an input of rank ``ndim``."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(f"channel_axis must be an integer, got {type(channel_axis).__name__}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for an input of rank {ndim}")
    return int(channel_axis) % ndim


def check_array(x: object, name: str = "x", *, min_rank: int = 2) -> np.ndarray:
    """Return ``x`` as an ndarray of a real floating dtype, or raise a clear error."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    if x.ndim < min_rank:
        raise ValueError(f"{name} must have rank >= {min_rank} (batch, channels, ...), got shape {x.shape}")
    return x


def _view3(x: np.ndarray, axis: int) -> np.ndarray:
    """View ``x`` as (A, C, B); a copy only when ``x`` is not C-contiguous."""
    shape = x.shape
    return x.reshape(int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1 :])))


def _blocks(a: int, c: int, b: int) -> Iterator[tuple[slice, slice]]:
    """Cover the (A, C) grid with blocks of about ``_BLOCK`` elements (each block spans all of B)."""
    if c * b >= _BLOCK:  # channel-first with large spatial extent: one row, a run of channels
        step = max(1, _BLOCK // max(b, 1))
        for i in range(a):
            for j in range(0, c, step):
                yield slice(i, i + 1), slice(j, j + step)
    else:  # channels-last or small rows: several rows, all channels
        step = max(1, _BLOCK // max(c * b, 1))
        for i in range(0, a, step):
            yield slice(i, i + step), slice(None)


def num_threads() -> int:
    """Threads the reference uses: ``REFERENCE_NUM_THREADS`` if set, else the CPUs this process may use."""
    env = os.environ.get("REFERENCE_NUM_THREADS")
    if env:
        return max(1, int(env))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="reference")


def _map_blocks(fn: Callable[[slice, slice, np.ndarray], object], x3: np.ndarray) -> list:
    """``fn(rows, channels, scratch)`` for every block of ``x3``, results in block order.

    Each thread takes a contiguous run of blocks and its own flat float64 scratch buffer.
    """
    blocks = list(_blocks(*x3.shape))
    threads = min(num_threads(), len(blocks))

    def run(part: list[tuple[slice, slice]]) -> list:
        scratch = np.empty(min(x3.size, max(_BLOCK, x3.shape[2])))
        return [fn(sa, sc, scratch) for sa, sc in part]

    if threads <= 1:
        return run(blocks)
    parts = [blocks[i * len(blocks) // threads : (i + 1) * len(blocks) // threads] for i in range(threads)]
    return [r for results in _pool(threads).map(run, parts) for r in results]


def _block_of(scratch: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The leading part of ``scratch`` shaped as ``like``."""
    return scratch[: like.size].reshape(like.shape)


def _centered(xb: np.ndarray, mean: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``xb - mean`` in float64 into ``out`` (a cast copy, then an in-place subtraction: faster than a
    mixed-dtype ufunc)."""
    np.copyto(out, xb)
    out -= mean
    return out


def _channel_sums(parts: list[tuple[slice, np.ndarray]], c: int) -> np.ndarray:
    """Per-channel totals of per-block partial sums (channels on the last axis), added in block order."""
    total = np.zeros(parts[0][1].shape[:-1] + (c,))
    for sc, partial in parts:
        total[..., sc] += partial
    return total


def _per_channel(v: np.ndarray | None, c: int, name: str, default: float | None = None) -> np.ndarray:
    """A per-channel array as float64 of shape (C,); ``None`` means the constant ``default``."""
    if v is None:
        if default is None:
            raise ValueError(f"{name} is required")
        return np.full(c, default)
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    return v


def _prepare(x: object, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``x``; return it and its (A, C, B) view."""
    x = check_array(x)
    return x, _view3(x, channel_axis_index(x.ndim, channel_axis))


def _statistics(x3: np.ndarray, centered: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass mean and biased variance of an (A, C, B) view; ``x - mean`` is left in ``centered``
    when given (the training forward reuses it instead of recomputing it)."""
    a, c, b = x3.shape
    n = a * b
    if n == 0:
        raise ValueError(f"cannot compute batch statistics of an empty batch ({a * b} values per channel)")
    sums = _map_blocks(lambda sa, sc, _: (sc, np.einsum("acb->c", x3[sa, sc], dtype=np.float64)), x3)
    mean = _channel_sums(sums, c) / n

    def squares(sa: slice, sc: slice, scratch: np.ndarray) -> tuple[slice, np.ndarray]:
        xb = x3[sa, sc]
        d = _centered(xb, mean[sc, None], _block_of(scratch, xb) if centered is None else centered[sa, sc])
        return sc, np.einsum("acb,acb->c", d, d)

    return mean, _channel_sums(_map_blocks(squares, x3), c) / n


def _scale_and_shift(var: np.ndarray, eps: float, gamma: np.ndarray | None, beta: np.ndarray | None, c: int):
    """Per-channel ``gamma / sqrt(var + eps)`` and ``beta``."""
    var = _per_channel(var, c, "var")
    gamma = _per_channel(gamma, c, "gamma", 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # eps = 0 on a constant channel gives NaN, as it should
        return gamma / np.sqrt(var + check_eps(eps)), _per_channel(beta, c, "beta", 0.0)


def _affine_inplace(y3: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
    """``y3 = y3 * scale + shift`` per channel, in place."""

    def apply(sa: slice, sc: slice, _: np.ndarray) -> None:
        yb = y3[sa, sc]
        with np.errstate(invalid="ignore"):
            yb *= scale[sc, None]
        yb += shift[sc, None]

    _map_blocks(apply, y3)


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
    mean = _per_channel(mean, c, "mean")
    scale, shift = _scale_and_shift(var, eps, gamma, beta, c)
    y = np.empty(x3.shape)
    _map_blocks(lambda sa, sc, _: _centered(x3[sa, sc], mean[sc, None], y[sa, sc]), x3)
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


def update_running_statistics(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    count: int,
    momentum: float | None,
    convention: str | Convention,
    num_batches_tracked: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """New running mean and variance after one training batch, under ``convention``.

    ``mean`` and ``var`` are the batch statistics (biased variance) over ``count`` values per channel;
    ``num_batches_tracked`` counts this batch, and matters only for ``momentum=None``.
    """
    conv = get_convention(convention)
    momentum = check_momentum(momentum, conv)
    if conv.bessel and count < 2:
        raise ValueError(
            f"the {conv.name!r} convention stores the Bessel-corrected variance, which needs more than "
            f"1 value per channel when training, got {count}"
        )
    if momentum is None and num_batches_tracked < 1:
        raise ValueError(f"num_batches_tracked must count the current batch (>= 1), got {num_batches_tracked}")
    w = conv.new_value_weight(momentum, num_batches_tracked)
    stored_var = var * (count / (count - 1)) if conv.bessel else var
    new_mean = (1.0 - w) * np.asarray(running_mean, dtype=np.float64) + w * mean
    new_var = (1.0 - w) * np.asarray(running_var, dtype=np.float64) + w * stored_var
    return new_mean, new_var


def _check_dy(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    dy = check_array(dy, "dy", min_rank=0)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of the forward input {x.shape}, got {dy.shape}")
    return dy


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
    dy = _check_dy(dy, x)
    axis = channel_axis_index(x.ndim, channel_axis)
    x3, dy3 = _view3(x, axis), _view3(dy, axis)
    a, c, b = x3.shape
    n = a * b
    if n == 0:
        raise ValueError(f"cannot differentiate batch statistics of an empty batch (input shape {x.shape})")
    mean, var = _per_channel(mean, c, "mean"), _per_channel(var, c, "var")
    gamma = _per_channel(gamma, c, "gamma", 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_std = 1.0 / np.sqrt(var + check_eps(eps))
    dx = np.empty(x3.shape)

    def sums(sa: slice, sc: slice, scratch: np.ndarray) -> tuple[slice, np.ndarray]:
        d = _centered(x3[sa, sc], mean[sc, None], dx[sa, sc])  # dx holds x - mean until the next pass
        dyb = _block_of(scratch, d)
        np.copyto(dyb, dy3[sa, sc])
        return sc, np.stack([np.einsum("acb->c", dyb), np.einsum("acb,acb->c", dyb, d)])

    sum_dy, sum_dy_d = _channel_sums(_map_blocks(sums, x3), c)
    k = gamma * inv_std
    with np.errstate(invalid="ignore"):
        k_d = -k * inv_std * inv_std * sum_dy_d / n
    k_0 = -k * sum_dy / n

    def combine(sa: slice, sc: slice, scratch: np.ndarray) -> None:
        dxb, dyb = dx[sa, sc], dy3[sa, sc]
        with np.errstate(invalid="ignore"):
            dxb *= k_d[sc, None]
        dyk = _block_of(scratch, dyb)
        np.copyto(dyk, dyb)
        dyk *= k[sc, None]
        dxb += dyk
        dxb += k_0[sc, None]

    _map_blocks(combine, x3)
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
    dy = _check_dy(dy, x)
    axis = channel_axis_index(x.ndim, channel_axis)
    c = x.shape[axis]
    gamma = _per_channel(gamma, c, "gamma", 1.0)
    xhat = normalize(x, running_mean, running_var, eps, None, None, axis)
    dx = normalize(dy, np.zeros(c), running_var, eps, gamma, None, axis)
    x3, dy3 = _view3(xhat, axis), _view3(dy, axis)
    dgamma = np.einsum("acb,acb->c", dy3, x3, dtype=np.float64)
    return dx, dgamma, dy3.sum(axis=(0, 2), dtype=np.float64)
