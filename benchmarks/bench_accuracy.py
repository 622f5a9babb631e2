"""Accuracy next to speed: the worst error / tolerance of the operation's outputs against the float64
reference, exactly as the conformance suite measures it (``conformance.harness.mirror``, bounds from the
operator's tolerance model, ``conformance.operators.batchnorm.tolerances``). <= 1 is within tolerance; the
unit is comparable across dtypes and shapes, which a plain maximum error is not."""

from conformance.harness.mirror import Mirror

from .common import BatchNormCase


class BatchNorm(BatchNormCase):
    version = "1"

    def setup(self, *params) -> None:
        super().setup(*params)
        self.make_runner()  # skips, as the timings do, an operation the implementation cannot run

    def track_error_ratio(self, *params) -> float:
        mirror = Mirror(self.impl, self.case)
        x = self.case.batches()[0]
        if self.operation == "forward_backward":
            mirror.forward_backward(x, self.case.cotangent(), True)
        else:
            mirror.forward(x, self.operation == "forward_training")
        return max(c.error_ratio for c in mirror.comparisons)

    track_error_ratio.unit = "error / tolerance"
