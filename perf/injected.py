"""Deliberately degraded implementations, for the regression gate's tests and ``perf.study``. Each keeps
the name of the implementation it wraps, so that the gate pairs their results
(``BN_BENCH_IMPL=perf.injected:EXTRA_WORK``).

``EXTRA_WORK``: the reference and PyTorch's ``BatchNorm2d`` whose runners run the operation once more on
the leading twentieth of the batch (at least one sample): 5% more work of the same kind where the batch
is a multiple of 20, inside the benchmarked operation. Work, not a sleep: it scales with the machine and
shows in counts, as a real regression would.

``LESS_ACCURATE``: the reference whose outputs are rounded to float16.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from conformance.adapters.base import Implementation, Layer, LayerSpec
from conformance.harness.registry import select

__all__ = ["EXTRA_WORK", "LESS_ACCURATE", "EXTRA_FRACTION"]

EXTRA_FRACTION = 1 / 20


class _Wrapper:
    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def __getattr__(self, name: str):
        return getattr(self.layer, name)  # the rest of the protocol, unchanged


class ExtraWorkLayer(_Wrapper):
    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        from benchmarks.common import runner

        k = max(1, round(x.shape[0] * EXTRA_FRACTION))
        run, extra = runner(self.layer, operation, x, dy), runner(self.layer, operation, x[:k], dy[:k])

        def with_extra_work() -> object:
            extra()
            return run()

        return with_extra_work


class LessAccurateLayer(_Wrapper):
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.layer.forward(x, training).astype(np.float16).astype(np.float64)

    def forward_backward(self, x, dy, training):
        y, *grads = self.layer.forward_backward(x, dy, training)
        return y.astype(np.float16).astype(np.float64), *grads


class Wrapped(Implementation):
    """``inner`` under its own name, its layers wrapped in ``layer_type``."""

    def __init__(self, inner: Implementation, layer_type: type) -> None:
        self.inner, self.layer_type = inner, layer_type
        for attribute in ("name", "family", "framework", "convention", "requires", "process_env", "capabilities"):
            setattr(self, attribute, getattr(inner, attribute))

    def environment(self) -> dict[str, str]:
        return self.inner.environment()

    def defaults(self) -> dict[str, float | int]:
        return self.inner.defaults()

    def build(self, spec: LayerSpec) -> Layer:
        return self.layer_type(self.inner.build(spec))


EXTRA_WORK = [Wrapped(impl, ExtraWorkLayer) for impl in select(["reference.torch", "torch.BatchNorm2d"])]
LESS_ACCURATE = [Wrapped(impl, LessAccurateLayer) for impl in select(["reference.torch"])]
