"""The machine the other benchmarks ran on, as they saw it: copy bandwidth and thread count."""

from . import THREADS
from .common import SAMPLES, CopyProbe, seconds_per_call


class Machine:
    version = "2"  # 1: the median of 9 copies

    def track_copy_bandwidth(self) -> float:
        """Best of ``SAMPLES`` copies, as ``bench_bandwidth`` measures it."""
        probe = CopyProbe()
        return probe.bandwidth(min(seconds_per_call(probe.copy, 1) for _ in range(SAMPLES))) / 1e9

    track_copy_bandwidth.unit = "GB/s"

    def track_threads(self) -> int:
        """Threads every framework and the reference were given (``BN_BENCH_THREADS``)."""
        return THREADS

    track_threads.unit = "threads"
