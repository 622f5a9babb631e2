"""The reference at production size: exact statistics, in bounded memory.

Exact: the blocked two-pass statistics of a 2**20-values-per-channel float16 batch with large offsets
(``data="large"``) agree with correctly rounded sums (``math.fsum``) within the float64 reduction bound the
suite itself uses (``SAFETY * u * sqrt(n)``, ~5e-13 here): far below what any implementation under test is
held to (float32's is ~2e-4 at this size).
Bounded: the memory the reference allocates beyond its float64 results (tracemalloc; NumPy reports its
buffers to it) is the copy of ``x`` the layer keeps for its backward plus a few blocks per thread
(``reference.engine.BLOCK``), whatever the batch size."""

import math
import tracemalloc

import numpy as np
import pytest

import reference
from conformance.operators.batchnorm.cases import BatchNormCase
from conformance.operators.batchnorm.tolerances import SAFETY
from reference import engine


def test_statistics_are_exact_at_production_size() -> None:
    x = BatchNormCase((256, 2, 64, 64), dtype="float16", data="large").batches()[0]
    mean, var = reference.batch_statistics(x, 1)
    for c in range(2):
        values = x[:, c].astype(np.float64).ravel()
        exact_mean = math.fsum(values) / values.size
        exact_var = math.fsum((values - exact_mean) ** 2) / values.size  # x - mean is exact here (Sterbenz)
        bound = SAFETY * 2.0**-53 * math.sqrt(values.size)
        np.testing.assert_allclose(mean[c], exact_mean, rtol=bound)
        np.testing.assert_allclose(var[c], exact_var, rtol=bound)


def _scratch_bytes(x: np.ndarray, dy: np.ndarray) -> int:
    """Peak bytes allocated by a training forward and backward beyond their float64 results."""
    tracemalloc.start()
    try:
        bn = reference.BatchNorm(x.shape[1])
        y = bn.forward(x, True)
        dx = bn.backward(dy)
        return tracemalloc.get_traced_memory()[1] - y.nbytes - dx.nbytes
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("batch", [64, 256])
def test_scratch_memory_is_bounded(batch: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 2, 64, 64), np.float32).astype(np.float16)
    dy = rng.standard_normal(x.shape, np.float32).astype(np.float16)
    per_block = engine.BLOCK * 8  # one float64 block
    assert _scratch_bytes(x, dy) <= x.nbytes + 4 * engine.num_threads() * per_block + 2**20
