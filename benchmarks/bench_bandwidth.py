"""Achieved memory bandwidth over the traffic floor (``common.PASSES``), absolute and as a fraction of the
machine's copy bandwidth measured in the same process: the fraction stays comparable while the machine's
speed drifts (README "Benchmarks" gives the dispersion of both). Medians over ``SAMPLES`` samples."""

import numpy as np

from .common import SAMPLES, BatchNormCase, CopyProbe, calls_per_sample, seconds_per_call


class BatchNorm(BatchNormCase):
    version = "1"

    def setup(self, *params) -> None:
        super().setup(*params)
        self.run = self.make_runner()
        self.number = calls_per_sample(self.run)

    def track_gbps(self, *params) -> float:
        seconds = np.median([seconds_per_call(self.run, self.number) for _ in range(SAMPLES)])
        return self.traffic / seconds / 1e9

    track_gbps.unit = "GB/s"

    def track_copy_fraction(self, *params) -> float:
        """Achieved bandwidth / copy bandwidth, from samples of the operation and of the copy taken
        alternately, so that each pair sees the same machine. Above 1 where the tensor fits in cache
        (the 256 MiB probe never does)."""
        probe = CopyProbe()
        fractions = [
            self.traffic / seconds_per_call(self.run, self.number) / probe.bandwidth(seconds_per_call(probe.copy, 1))
            for _ in range(SAMPLES)
        ]
        return float(np.median(fractions))

    track_copy_fraction.unit = "of copy bandwidth"
