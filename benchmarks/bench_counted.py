"""Counted metrics beside the times: instructions, simulated cache misses and their combined cost per call,
under callgrind (``callgrind.py`` says what they capture and what not). They do not depend on the
machine's load, so the regression gate can use them on a busy CI runner (``perf.gate --metric counted``).

One callgrind process per group of implementations that share a process measures the group's combinations
that the run selects, the first time one of them is asked for in an asv run, into the directory asv gives
this class for the run (``setup_cache``); the other combinations read them from there. Each value is the
median of ``REPEATS`` measured calls.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

from conformance.adapters.base import Implementation

from . import callgrind
from .common import CHANNEL_AXES, DTYPES, GRID, IMPLEMENTATIONS, BatchNormCase
from .common import SHAPES as TIMED_SHAPES
from .counted import measure_combinations

# The ci grid only checks that everything runs: one measurement of one combination per implementation
# (callgrind makes a framework's first call, tracing and compiling included, minutes long).
REPEATS = {"full": 3, "ci": 1}[GRID]
# Smaller than the timing grid: callgrind runs an operation about 50 times slower. The caches start cold
# in every measurement, so a tensor need not exceed the simulated last-level cache to count its traffic.
SHAPES = {"full": [(256, 256), (20, 64, 28, 28), (2, 16, 8, 28, 28)], "ci": TIMED_SHAPES}[GRID]
METRICS = ("instructions", "l1_misses", "ll_misses", "cost")


def _selected(params: tuple) -> bool:
    """Whether asv runs any of this class's benchmarks for ``params`` in this run, as ``perf.run`` tells
    through ``BN_BENCH_SELECT`` (its ``-b`` regex; asv matches it against these names)."""
    names = [f"{__name__.rsplit('.', 1)[-1]}.BatchNorm.track_{m}({', '.join(map(repr, params))})" for m in METRICS]
    return any(re.search(os.environ.get("BN_BENCH_SELECT", ""), name) for name in names)


def _measure(impl: Implementation, directory: Path) -> None:
    """Measure, in one callgrind process, the selected combinations of every implementation that shares a
    process with ``impl`` (as ``perf.run`` groups them), into one file per implementation."""
    group = [i.name for i in IMPLEMENTATIONS.values() if (i.family, i.process_env) == (impl.family, impl.process_env)]
    combinations = [c for c in itertools.product(group, BatchNorm.params[1], SHAPES, CHANNEL_AXES, DTYPES)
                    if _selected(c) and _supported(c)]
    if GRID == "ci":
        combinations = list({c[0]: c for c in reversed(combinations)}.values())  # each implementation's first
    counts = measure_combinations(combinations, REPEATS, env=dict(impl.process_env))
    for name in group:
        measured = [[list(c[1:]), v and [{m: getattr(x, m) for m in METRICS} for x in v]]
                    for c, v in counts.items() if c[0] == name]
        (directory / f"{name}.json").write_text(json.dumps(measured))


def _supported(params: tuple) -> bool:
    try:
        BatchNormCase().setup(*params)
    except NotImplementedError:
        return False
    return True


class BatchNorm(BatchNormCase):
    version = "1"
    params = [list(IMPLEMENTATIONS), *BatchNormCase.params[1:2], SHAPES, *BatchNormCase.params[3:]]
    timeout = 1800  # the first combination of an implementation measures all of them

    def setup_cache(self) -> str:
        reason = callgrind.unavailable()
        if reason:
            raise NotImplementedError(f"counted metrics: {reason}")
        return os.getcwd()  # asv runs this class's benchmarks of the run in this directory, kept until the end

    def setup(self, directory: str, *params) -> None:
        super().setup(*params)
        path = Path(directory) / f"{self.impl.name}.json"
        if not path.exists():
            _measure(self.impl, Path(directory))
        key = json.loads(json.dumps(params[1:]))  # as the file holds it: tuples as lists
        found = [v for c, v in json.loads(path.read_text()) if c == key]
        if not found:
            raise NotImplementedError("the ci grid measures one combination per implementation")
        if not found[0]:
            raise NotImplementedError(f"{self.impl.name} cannot run {self.operation} here (the timings say why)")
        measured = found[0]
        self.counts = {m: sorted(x[m] for x in measured)[len(measured) // 2] for m in METRICS}

    def track_instructions(self, *params) -> int:
        return self.counts["instructions"]

    def track_l1_misses(self, *params) -> int:
        return self.counts["l1_misses"]

    def track_ll_misses(self, *params) -> int:
        return self.counts["ll_misses"]

    def track_cost(self, *params) -> int:
        """Estimated cycles, ``Ir + 10 * L1 misses + 100 * LL misses``: the gate's counted metric."""
        return self.counts["cost"]

    track_instructions.unit = "instructions"
    track_l1_misses.unit = track_ll_misses.unit = "misses"
    track_cost.unit = "estimated cycles"
