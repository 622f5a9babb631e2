"""Counted metrics of the benchmark grid: one callgrind process measures many parameter combinations
(``bench_counted`` reads them; ``perf.study`` uses the same).

    python -m benchmarks.counted COMBINATIONS_JSON REPEATS WARMUP   (run under callgrind by measure_combinations())

The measured process imports the benchmarks' own machinery (``benchmarks.common``): the same seeded
inputs and the same warmed-up runners that the timings use, one thread for every framework
(``ONE_THREAD``), so that no thread pool's spinning enters the counts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import callgrind

__all__ = ["ONE_THREAD", "measure_combinations"]

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose benchmarks these are

# benchmarks/__init__.py pins OpenMP, MKL, OpenBLAS, TensorFlow and the reference to BN_BENCH_THREADS;
# XLA (JAX) has its own flags, and JAX's asynchronous dispatch would leave the work to another thread.
ONE_THREAD = {
    "BN_BENCH_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_CPU_ENABLE_ASYNC_DISPATCH": "false",
    "PYTHONHASHSEED": "0",
}


def measure_combinations(combinations: Sequence[tuple], repeats: int = 3, env: dict[str, str] | None = None,
                         warmup: int = 3) -> dict[tuple, list[callgrind.Counts] | None]:
    """Counts of ``repeats`` calls for each ``(implementation, operation, shape, channel_axis, dtype)``
    combination (None where it is not supported), each after ``warmup`` uncounted calls, all in one
    callgrind process: the implementations must be able to share a process
    (``benchmarks.common.process_groups``). The measured process sees this one's import path, then this
    checkout's ``benchmarks`` (last: a gate's side may put another ``reference/`` first)."""
    path = os.pathsep.join([*(p for p in sys.path if p), str(ROOT)])
    argv = ["-m", "benchmarks.counted", json.dumps([list(c) for c in combinations]), str(repeats), str(warmup)]
    found = callgrind.measure(argv, env={**(env or {}), **ONE_THREAD, "PYTHONPATH": path})
    return {tuple(c): found.get(f"c{i}") for i, c in enumerate(combinations)}


def _driver(combinations: list[list], repeats: int, warmup: int) -> None:
    from .common import BatchNormCase

    for i, (implementation, operation, shape, channel_axis, dtype) in enumerate(combinations):
        case = BatchNormCase()
        try:
            case.setup(implementation, operation, tuple(shape), channel_axis, dtype)
            run = case.make_runner()
        except NotImplementedError:  # unsupported, or raises (a registered deviation), as the timings skip it
            continue  # no dumps under this name: None in measure_combinations
        callgrind.count(f"c{i}", run, repeats, warmup)


if __name__ == "__main__":
    _driver(json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
