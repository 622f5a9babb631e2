"""Achieved memory bandwidth over the traffic floor (``common.PASSES``), absolute and as a fraction of the
machine's copy bandwidth measured in the same process, meant to stay comparable while the machine's speed
drifts (README "Benchmarks" gives the measured dispersion of both). Best of ``SAMPLES`` samples, as
bandwidth benchmarks (STREAM) report it: interference only ever slows a sample down."""

from .common import SAMPLES, BatchNormCase, CopyProbe, calls_per_sample, seconds_per_call


class _Bandwidth:
    """The measurements, for a case with ``run`` (the warm operation), ``number`` (its calls per sample) and
    ``traffic`` (bytes of its floor); private, so that asv discovers only the classes that take parameters."""

    def track_gbps(self, *params) -> float:
        seconds = min(seconds_per_call(self.run, self.number) for _ in range(SAMPLES))
        return self.traffic / seconds / 1e9

    track_gbps.unit = "GB/s"

    def track_copy_fraction(self, *params) -> float:
        """Achieved bandwidth / copy bandwidth, from samples of the operation and of the copy taken
        alternately, so that both see the same machine. Above 1 where the tensor fits in cache (the
        256 MiB probe never does)."""
        probe = CopyProbe()
        operation, copy = [], []
        for _ in range(SAMPLES):
            operation.append(seconds_per_call(self.run, self.number))
            copy.append(seconds_per_call(probe.copy, 1))
        return self.traffic / min(operation) / probe.bandwidth(min(copy))

    track_copy_fraction.unit = "of copy bandwidth"


class BatchNorm(_Bandwidth, BatchNormCase):
    version = "2"  # 1: medians

    def setup(self, *params) -> None:
        super().setup(*params)
        self.run = self.make_runner()
        self.number = calls_per_sample(self.run)
