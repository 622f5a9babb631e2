"""Deliberately degraded implementations, for the regression gate's own tests (test_bench_gate.py). Each
keeps the name of the implementation it wraps, so that the gate pairs their results.

``SLOWED``: PyTorch's ``BatchNorm2d`` whose runner first makes extra passes over the input, each a full
read and write of it (a copy): as many as take at least ``SLOWDOWN - 1`` of the operation's own time,
counted when the runner is made, so the slowdown is at least ``SLOWDOWN`` on any machine (more where the
copies push the operation's input out of cache: the gate measured 1.34 to 1.68 here). Work, not a sleep:
it scales with the machine, as a real regression would.

``LESS_ACCURATE``: the reference whose outputs are rounded to float16.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from conformance.adapters import select
from conformance.adapters.base import Implementation, Layer, LayerSpec

SLOWDOWN = 1.3


def _median_seconds(run: Callable[[], object], samples: int = 15) -> float:
    run()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class SlowedLayer:
    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def __getattr__(self, name: str):
        return getattr(self.layer, name)  # the NumPy protocol, unchanged

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        run = self.layer.runner(operation, x, dy)
        scratch = np.empty_like(x)

        def extra_pass() -> None:
            np.copyto(scratch, x)

        passes = math.ceil((SLOWDOWN - 1) * _median_seconds(run) / _median_seconds(extra_pass))

        def slowed() -> object:
            for _ in range(passes):
                extra_pass()
            return run()

        return slowed


class LessAccurateLayer:
    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def __getattr__(self, name: str):
        return getattr(self.layer, name)

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


SLOWED = [Wrapped(impl, SlowedLayer) for impl in select(["torch.BatchNorm2d"])]
LESS_ACCURATE = [Wrapped(impl, LessAccurateLayer) for impl in select(["reference.torch"])]
