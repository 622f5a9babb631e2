"""The normalization family at production sizes: LayerNorm and RMSNorm (the ``layernorm`` operator), GroupNorm
and InstanceNorm (``groupnorm``), each implementation the benchmarks time by default
(``common.FAMILY_IMPLEMENTATIONS``): time per call (asv's statistics) and achieved bandwidth over the
operation's memory-traffic floor (:data:`PASSES`; ``bench_bandwidth``'s measurements).

Each case is a tensor larger than this machine's last-level cache (32 MiB), as activations of real models are:
transformer tokens of hidden size 1024 and 4096, and convolutional feature maps of 256 channels in 32 groups and
as instances, in both channel positions. A stateless layer computes the same in training and inference, so the
operations are the inference forward and the forward with backward.
"""

from __future__ import annotations

import os

import numpy as np

from conformance.core.dtypes import dtype_of
from conformance.operators.groupnorm import GroupNormCase
from conformance.operators.layernorm import LayerNormCase

from .bench_bandwidth import _Bandwidth
from .common import DTYPES, FAMILY_IMPLEMENTATIONS, GRID, calls_per_sample, unsupported, warm_runner

# The memory-traffic floor in full passes over the tensor: each row (a token's features; a sample's group)
# fits in cache, so one read of x gives its statistics and the normalized row: forward reads x and writes y
# (2); the backward reads dy and x for the row means of gamma dy and gamma dy xhat and writes dx (3 more; the
# parameters' gradients accumulate on the way).
PASSES = {"forward_inference": 2, "forward_backward": 5}

# label -> (operator, the case in a dtype); the ci grid: one small case per operator, to check that it runs.
_FULL = {
    "tokens-16384x1024": ("layernorm", lambda dtype: LayerNormCase((16384, 1024), 1, dtype)),
    "tokens-4096x4096": ("layernorm", lambda dtype: LayerNormCase((4096, 4096), 1, dtype)),
    "groups-64x256x28x28-g32": ("groupnorm", lambda dtype: GroupNormCase((64, 256, 28, 28), 32, 1, dtype)),
    "groups-64x28x28x256-g32": ("groupnorm", lambda dtype: GroupNormCase((64, 28, 28, 256), 32, -1, dtype)),
    "instances-64x256x28x28": ("groupnorm", lambda dtype: GroupNormCase((64, 256, 28, 28), 256, 1, dtype)),
    "instances-64x28x28x256": ("groupnorm", lambda dtype: GroupNormCase((64, 28, 28, 256), 256, -1, dtype)),
}
_CI = {
    "tokens-64x32": ("layernorm", lambda dtype: LayerNormCase((64, 32), 1, dtype)),
    "groups-2x8x6x6-g4": ("groupnorm", lambda dtype: GroupNormCase((2, 8, 6, 6), 4, 1, dtype)),
    "instances-2x8x6x6": ("groupnorm", lambda dtype: GroupNormCase((2, 8, 6, 6), 8, 1, dtype)),
}
CASES = {"full": _FULL, "ci": _CI}[GRID]


class Family(_Bandwidth):
    version = "1"
    param_names = ["implementation", "operation", "case", "dtype"]
    params = [list(FAMILY_IMPLEMENTATIONS), list(PASSES), list(CASES), DTYPES]
    timeout = 300  # a first call through JAX's per-operation compilation takes seconds

    def setup(self, implementation: str, operation: str, case: str, dtype: str) -> None:
        impl = FAMILY_IMPLEMENTATIONS[implementation]
        operator, make = CASES[case]
        if impl.operator.name != operator:
            raise NotImplementedError(f"{case} is a {operator} case; {implementation} is {impl.operator.name}")
        self.case, self.operation = make(dtype), operation
        reason = impl.missing() or unsupported(impl, operation, self.case)
        if reason:
            raise NotImplementedError(reason)  # asv records the combination as skipped
        os.environ.update(impl.process_env)  # before the framework's first import in this process
        self.run = warm_runner(implementation, operation, self.case)
        self.number = calls_per_sample(self.run)

    @property
    def traffic(self) -> int:
        """Bytes of the memory-traffic floor of one operation."""
        return PASSES[self.operation] * int(np.prod(self.case.shape)) * dtype_of(self.case.dtype).itemsize

    def time_family(self, *params) -> None:
        self.run()
