"""The reference at production size: 10**8 elements (a (100, 4, 500, 500) batch; 10**6 in the ``ci`` grid),
float16 and float32 input, training forward and forward+backward. Time, peak memory of the process, and the
memory the reference allocates beyond its float64 results (tracemalloc): the copy of ``x`` the layer keeps
for its backward plus a few blocks per thread, however large the input (``reference/engine.py``)."""

import tracemalloc

import numpy as np

import reference

from .common import GRID

SHAPE = {"full": (100, 4, 500, 500), "ci": (4, 4, 250, 250)}[GRID]


class ReferenceLarge:
    params = [["forward_training", "forward_backward"], ["float16", "float32"]]
    param_names = ["operation", "dtype"]
    timeout = 600

    def setup(self, operation: str, dtype: str) -> None:
        rng = np.random.default_rng(0)
        self.x = (rng.standard_normal(SHAPE, np.float32) * 300 + 2000).astype(dtype)
        self.dy = rng.standard_normal(SHAPE, np.float32).astype(dtype)
        self.operation = operation

    def _run(self) -> int:
        """One operation; the bytes of the float64 results it returns."""
        bn = reference.BatchNorm(SHAPE[1])
        y = bn.forward(self.x, True)
        if self.operation == "forward_training":
            return y.nbytes
        return y.nbytes + bn.backward(self.dy).nbytes

    def time_reference(self, *params) -> None:
        self._run()

    def peakmem_reference(self, *params) -> None:
        self._run()

    def track_scratch_mib(self, *params) -> float:
        tracemalloc.start()
        try:
            results = self._run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return (peak - results) / 2**20

    track_scratch_mib.unit = "MiB"
