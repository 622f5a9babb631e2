"""The machine the other benchmarks ran on, as they saw it: copy bandwidth and thread count."""

import numpy as np

from . import THREADS
from .common import CopyProbe, seconds_per_call


class Machine:
    version = "1"

    def track_copy_bandwidth(self) -> float:
        probe = CopyProbe()
        return probe.bandwidth(np.median([seconds_per_call(probe.copy, 1) for _ in range(9)])) / 1e9

    track_copy_bandwidth.unit = "GB/s"

    def track_threads(self) -> int:
        """Threads every framework and the reference were given (``BN_BENCH_THREADS``)."""
        return THREADS

    track_threads.unit = "threads"
