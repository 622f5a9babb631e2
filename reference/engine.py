"""The blocked, threaded evaluation engine under :mod:`reference.batchnorm`: no BatchNorm math here.

An input of shape ``(..., C, ...)`` with the channel at ``axis`` is viewed as ``(A, C, B)`` (A = product
of the axes before the channel, B = product of the axes after it), so any rank >= 2 and either channel
position share one code path. Every full-size pass is evaluated block by block over cache-sized pieces,
so the several elementwise steps of a formula read the input from memory once and allocate no full-size
temporaries, and the blocks are shared among threads (NumPy releases the GIL in its loops). Reductions
are summed per block and combined in block order, so results are bitwise identical whatever the thread
count.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["BLOCK", "block_of", "blocks", "centered", "channel_sums", "map_blocks", "num_threads", "view3"]

# Elements per block: 2**18 float64 values (2 MiB), measured fastest here (fewer Python steps, still cached).
BLOCK = 1 << 18


def view3(x: np.ndarray, axis: int) -> np.ndarray:
    """View ``x`` as (A, C, B); a copy only when ``x`` is not C-contiguous."""
    shape = x.shape
    return x.reshape(int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1 :])))


def blocks(a: int, c: int, b: int) -> Iterator[tuple[slice, slice]]:
    """Cover the (A, C) grid with blocks of about ``BLOCK`` elements (each block spans all of B)."""
    if c * b >= BLOCK:  # channel-first with large spatial extent: one row, a run of channels
        step = max(1, BLOCK // max(b, 1))
        for i in range(a):
            for j in range(0, c, step):
                yield slice(i, i + 1), slice(j, j + step)
    else:  # channels-last or small rows: several rows, all channels
        step = max(1, BLOCK // max(c * b, 1))
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


def map_blocks(fn: Callable[[slice, slice, np.ndarray], object], x3: np.ndarray) -> list:
    """``fn(rows, channels, scratch)`` for every block of ``x3``, results in block order.

    Each thread takes a contiguous run of blocks and its own flat float64 scratch buffer.
    """
    found = list(blocks(*x3.shape))
    threads = min(num_threads(), len(found))

    def run(part: list[tuple[slice, slice]]) -> list:
        scratch = np.empty(min(x3.size, max(BLOCK, x3.shape[2])))
        return [fn(sa, sc, scratch) for sa, sc in part]

    if threads <= 1:
        return run(found)
    parts = [found[i * len(found) // threads : (i + 1) * len(found) // threads] for i in range(threads)]
    return [r for results in _pool(threads).map(run, parts) for r in results]


def block_of(scratch: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The leading part of ``scratch`` shaped as ``like``."""
    return scratch[: like.size].reshape(like.shape)


def centered(xb: np.ndarray, mean: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``xb - mean`` in float64 into ``out`` (a cast copy, then an in-place subtraction: faster than a
    mixed-dtype ufunc)."""
    np.copyto(out, xb)
    out -= mean
    return out


def channel_sums(parts: list[tuple[slice, np.ndarray]], c: int) -> np.ndarray:
    """Per-channel totals of per-block partial sums (channels on the last axis), added in block order."""
    total = np.zeros(parts[0][1].shape[:-1] + (c,))
    for sc, partial in parts:
        total[..., sc] += partial
    return total
