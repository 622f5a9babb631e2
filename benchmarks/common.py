"""What the benchmark modules share: the parameter grid, the implementations, seeded inputs, the traffic
model and the copy-bandwidth probe.

Environment, read once per process (asv gives every process of one run the same):
    BN_BENCH_IMPL    comma-separated implementations, as the conformance suite's ``--impl`` takes them:
                     built-in names, families or globs (these give the ones marked ``benchmarked``), or a
                     third-party ``package.module:attribute`` (default: every built-in implementation
                     marked ``benchmarked``, on BN_BENCH_DEVICE)
    BN_BENCH_GRID    ``full`` (default) or ``ci``: small shapes, float32, channels first, one sample per
                     measurement and a smaller copy probe, to check that every benchmark runs
    BN_BENCH_DEVICE  ``cpu`` (default) or ``cuda``
    BN_BENCH_THREADS see ``benchmarks/__init__.py``
    BN_BENCH_SELECT  set by ``perf.run``: the regex of the benchmarks asv runs (``bench_counted`` measures only
                     what it selects; unset: everything)

Implementations are built in the benchmark process itself (never through the conformance suite's worker
processes) and timed through their layer's :class:`~conformance.adapters.base.Benchmarkable` runner, or
through the NumPy protocol where the layer has none.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conformance.adapters.base import OPERATIONS, Benchmarkable, Implementation, Layer
from conformance.core.dtypes import dtype_of
from conformance.harness.registry import builtin, select
from conformance.harness.registry import process_groups as shared_processes
from conformance.operators.batchnorm import cases

from . import THREADS

__all__ = [
    "CHANNEL_AXES", "DTYPES", "FAMILY_IMPLEMENTATIONS", "GRID", "GRIDS", "IMPLEMENTATIONS", "PASSES", "SAMPLES",
    "SHAPES", "BatchNormCase", "CopyProbe", "calls_per_sample", "process_groups", "seconds_per_call", "unsupported",
    "warm_runner",
]

GRID = os.environ.get("BN_BENCH_GRID", "full")
DEVICE = os.environ.get("BN_BENCH_DEVICE", "cpu")

# Shapes with the channel axis second, as PyTorch orders them; channel_axis=-1 moves it last. The ci
# grid has one small shape per rank an implementation may be limited to (PyTorch's BatchNorm1d/2d/3d) and
# one layout and dtype, so that CI runs every benchmark for every implementation in a few minutes; the
# runners' other layouts and dtypes are tested directly (tests/test_bench_runners.py). Each grid: shapes,
# channel axes, dtypes (perf.baseline reads the ci grid's, whichever grid this process runs).
GRIDS = {
    "full": ([(3136, 256), (128, 8192), (32, 64, 56, 56), (8, 256, 14, 14), (2, 32, 16, 56, 56)], [1, -1],
             ["float32", "bfloat16"]),
    "ci": ([(64, 16), (4, 8, 6, 6), (2, 4, 3, 4, 4)], [1], ["float32"]),
}
SHAPES, CHANNEL_AXES, DTYPES = GRIDS[GRID]
SAMPLES = {"full": 9, "ci": 1}[GRID]  # per measurement of the track_* benchmarks

# Full passes over the tensor that no implementation can avoid (the memory-traffic floor): inference
# reads x and writes y; a training forward reads x once more for the statistics; the backward reads dy
# and x for its two channel sums, then both again to write dx, so forward+backward is 3 + 5.
PASSES = {"forward_inference": 2, "forward_training": 3, "forward_backward": 8}


def _selected(operators: frozenset[str]) -> dict[str, Implementation]:
    """The implementations of ``operators`` that BN_BENCH_IMPL selects (see the module docstring)."""
    specs = [s for s in os.environ.get("BN_BENCH_IMPL", "").split(",") if s]
    # A family or glob gives the benchmarked implementations it matches; a name gives that one whatever it is.
    chosen = [impl for impl in select(specs) if impl.benchmarked or impl.name in specs] if specs else [
        impl for impl in builtin() if impl.benchmarked]
    # Implementation.missing itself (not an adapter's override, which may import its framework to ask for
    # a device) only looks for the modules: no framework is imported here, in asv's parent processes. An
    # implementation that runs only chosen check families (``families``: a transform's own, as a world's
    # ranks each taking one shard) is not checked as one plain layer, so it is not timed as one.
    return {
        impl.name: impl
        for impl in chosen
        if DEVICE in impl.capabilities.devices and Implementation.missing(impl) is None and impl.families is None
        and impl.operator.name in operators
    }


IMPLEMENTATIONS = _selected(frozenset({"batchnorm"}))
# The normalization family's (benchmarks/bench_family.py).
FAMILY_IMPLEMENTATIONS = _selected(frozenset({"layernorm", "groupnorm"}))


def process_groups() -> list[dict]:
    """The selected implementations grouped by family and by the environment their frameworks read at import
    (Keras' backend), each with the modules they import: the conformance suite's isolation groups
    (``conformance.harness.registry.process_groups``) of one framework merged, whichever adapter module holds
    them. ``perf.run`` runs asv once per group and has its forkserver import those modules once
    (``BN_BENCH_PREIMPORT``); each run costs seconds of its own. Families never share a process: with torch
    loaded first, TensorFlow's first calls in a process take 0.5 s instead of 0.1 s, for one."""
    merged: dict[tuple, list[Implementation]] = {}
    for impls in shared_processes([*IMPLEMENTATIONS.values(), *FAMILY_IMPLEMENTATIONS.values()]):
        merged.setdefault((impls[0].family, tuple(sorted(impls[0].process_env.items()))), []).extend(impls)
    groups = []
    for impls in merged.values():
        preimport = list(dict.fromkeys(m for impl in impls for m in impl.requires))
        groups.append({"env": dict(impls[0].process_env), "preimport": preimport, "names": [i.name for i in impls]})
    return groups


def calls_per_sample(run: Callable[[], object], min_sample_s: float = 0.01) -> int:
    """How many calls of ``run`` make a sample long enough to time precisely (asv's own rule)."""
    start = time.perf_counter()
    run()
    return max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-9)))


def seconds_per_call(run: Callable[[], object], number: int) -> float:
    """One sample: the mean time of ``number`` consecutive calls."""
    start = time.perf_counter()
    for _ in range(number):
        run()
    return (time.perf_counter() - start) / number


class CopyProbe:
    """The machine's copy bandwidth, measured in the benchmark's own process: ``THREADS`` threads copy
    one 256 MiB array (8 times this machine's last-level cache; 32 MiB in the ``ci`` grid, which only
    checks that everything runs) into another. Bytes read plus bytes written, per second: the unit the
    traffic model counts in."""

    NBYTES = {"full": 1 << 28, "ci": 1 << 25}[GRID]

    def __init__(self) -> None:
        self.src = np.ones(self.NBYTES // 8)
        self.dst = np.zeros_like(self.src)  # both written once: page faults stay out of the timing
        self.pool = ThreadPoolExecutor(THREADS)  # NumPy's copy releases the GIL
        self.parts = list(zip(np.array_split(self.dst, THREADS), np.array_split(self.src, THREADS)))

    def copy(self) -> None:
        list(self.pool.map(lambda part: np.copyto(*part), self.parts))

    def bandwidth(self, seconds: float) -> float:
        """Bytes per second, given the time of one ``copy``."""
        return 2 * self.NBYTES / seconds


def runner(layer: Layer, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    """The layer's own runner, or the same operation through the NumPy protocol (conversions timed too)."""
    if isinstance(layer, Benchmarkable):
        return layer.runner(operation, x, dy)
    if operation == "forward_backward":
        return lambda: layer.forward_backward(x, dy, True)
    training = operation == "forward_training"
    return lambda: layer.forward(x, training)


def unsupported(impl: Implementation, operation: str, case: cases.BatchNormCase) -> str | None:
    """Why ``impl`` cannot run ``operation`` on ``case`` by what it declares (None: it can); imports no
    framework and sets nothing, so ``perf.baseline`` asks it in its own process."""
    if operation == "forward_backward" and impl.capabilities.no_gradients:
        return f"{impl.name}: {impl.capabilities.no_gradients}"
    missing = impl.unsupported(case.spec(impl.convention))
    return f"{impl.name} does not support {', '.join(missing)}" if missing else None


class BatchNormCase:
    """One implementation, one operation, one input. Subclasses add the measurements."""

    param_names = ["implementation", "operation", "shape", "channel_axis", "dtype"]
    params = [list(IMPLEMENTATIONS), list(OPERATIONS), SHAPES, CHANNEL_AXES, DTYPES]
    timeout = 300  # a first call through JAX's per-operation compilation takes seconds

    def setup(self, implementation: str, operation: str, shape: tuple[int, ...], channel_axis: int, dtype: str) -> None:
        if len(shape) == 2 and channel_axis == -1:
            raise NotImplementedError("2D input has one channel position: channel_axis=1 covers it")
        self.impl = IMPLEMENTATIONS[implementation]
        self.operation = operation
        shape = shape if channel_axis == 1 else (shape[0], *shape[2:], shape[1])
        self.case = cases.BatchNormCase(shape, channel_axis, dtype)
        reason = self.impl.missing() or unsupported(self.impl, operation, self.case)
        if reason:
            raise NotImplementedError(reason)  # asv records the combination as skipped
        os.environ.update(self.impl.process_env)  # before the framework's first import in this process

    @property
    def traffic(self) -> int:
        """Bytes of the memory-traffic floor of one operation."""
        return PASSES[self.operation] * int(np.prod(self.case.shape)) * dtype_of(self.case.dtype).itemsize

    def make_runner(self) -> Callable[[], object]:
        return warm_runner(self.impl.name, self.operation, self.case)


@functools.cache
def warm_runner(implementation: str, operation: str, case) -> Callable[[], object]:
    """A fresh layer's runner on the case's seeded input, called once so that first-call work (kernel
    selection, compilation, allocation) stays out of the measurements. Made once per process: asv runs
    setup again before every timing sample, and each sample should time the same warm layer (a new one
    per sample made the samples bimodal, and the setup cost more than the timing)."""
    impl = IMPLEMENTATIONS.get(implementation) or FAMILY_IMPLEMENTATIONS[implementation]
    layer = impl.build(case.spec(impl.convention))
    run = runner(layer, operation, case.batches()[0], case.cotangent())
    try:
        run()
    except Exception as exc:  # an operation the implementation cannot run (a registered deviation): nothing to time
        raise NotImplementedError(f"{implementation} raises on {operation}: {type(exc).__name__}: {exc}") from exc
    return run
