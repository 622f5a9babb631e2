"""Time and peak memory of one operation (asv's own timing statistics; the regression gate reads these)."""

from .common import BatchNormCase


class BatchNorm(BatchNormCase):
    version = "1"

    def setup(self, *params) -> None:
        super().setup(*params)
        self.run = self.make_runner()

    def time_batchnorm(self, *params) -> None:
        self.run()

    def peakmem_batchnorm(self, *params) -> None:
        """Peak resident memory of the whole benchmark process: framework, inputs and the operation."""
        self.run()
