"""The benchmarks time what the conformance suite checks: for every built-in BatchNorm and every benchmarked
implementation of the family (``benchmarks/bench_family.py``), operation, dtype, rank and layout, a layer's
runner returns exactly (bit for bit) what the NumPy protocol returns on a twin layer. Each group of
implementations that shares a process in the suite (``conformance.harness.registry.process_groups``: a new
adapter is in one without being listed here) runs in a fresh interpreter (this file as a script), as Keras fixes
its backend at import."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import typing

import numpy as np
import pytest

from conformance.adapters.base import Benchmarkable
from conformance.harness.registry import builtin, process_groups


def _timed_by_runner(impl) -> bool:
    """A BatchNorm (every one has a runner), or a benchmarked implementation of the family whose layer class
    (``build``'s return type) has one: the others are timed through the NumPy protocol itself."""
    if impl.operator.name == "batchnorm":
        return True
    layer = typing.get_type_hints(type(impl).build).get("return")
    return impl.benchmarked and isinstance(layer, type) and issubclass(layer, Benchmarkable)


# Implementations restricted to chosen check families (a world's ranks) are not benchmarked (benchmarks/common.py).
# Named by module and environment: one family's modules (eager and compiled) are groups of their own.
GROUPS = {
    "-".join([group[0].locator.partition(":")[0].rpartition(".")[2],
              *(f"{k}={v}" for k, v in group[0].process_env.items())]): ",".join(i.name for i in group)
    for group in process_groups(impl for impl in builtin() if impl.families is None and _timed_by_runner(impl))
}


def _to_numpy(t: object) -> np.ndarray | None:
    """A framework's array as float64 NumPy (PyTorch's bfloat16 through float32, which holds it exactly)."""
    if t is None:
        return None
    if hasattr(t, "detach"):  # torch.Tensor: NumPy cannot take its bfloat16
        t = t.detach().cpu().float()
    return np.asarray(t).astype(np.float64)


def _mismatches(pattern: str) -> tuple[int, list[str]]:
    """Run in the group's own interpreter: (combinations checked, descriptions of the mismatches)."""
    from conformance.adapters.base import OPERATIONS, State
    from conformance.harness.registry import select

    impls = [i for i in select(pattern.split(",")) if i.missing() is None]
    for impl in impls:
        os.environ.update(impl.process_env)
    checked, mismatches = 0, []
    for impl in impls:
        for case in (c for _, c in impl.operator.cases("training_output") if c.dtype in ("float32", "bfloat16")):
            spec = case.spec(impl.convention)
            if impl.unsupported(spec):
                continue
            x, dy = case.batches()[0], case.cotangent()
            operations = [op for op in OPERATIONS if op != "forward_backward" or not impl.capabilities.no_gradients]
            for operation in operations:
                protocol, timed = impl.build(spec), impl.build(spec)
                for layer in (protocol, timed):
                    layer.set_state(State(**case.initial_state(impl.convention)))
                checked += 1
                try:
                    if operation == "forward_backward":
                        expected = protocol.forward_backward(x, dy, True)
                    else:
                        expected = (protocol.forward(x, operation == "forward_training"),)
                except Exception as exc:  # an implementation that raises (a registered deviation) must raise alike
                    with contextlib.suppress(type(exc)):
                        timed.runner(operation, x, dy)()
                        mismatches.append(f"{impl.name} {operation} {case.id}: the protocol raised, the runner did not")
                    continue
                actual = timed.runner(operation, x, dy)()
                actual = actual if operation == "forward_backward" else (actual,)
                for name, e, a in zip(("y", "dx", "dgamma", "dbeta"), expected, map(_to_numpy, actual)):
                    if not (e is None and a is None or np.array_equal(e, a, equal_nan=True)):
                        mismatches.append(f"{impl.name} {operation} {case.id}: {name} differs")
    return checked, mismatches


@pytest.mark.parametrize("pattern", GROUPS.values(), ids=GROUPS.keys())
def test_runner_computes_what_the_protocol_computes(pattern: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # this process's conformance
    out = subprocess.run([sys.executable, __file__, pattern], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    checked, mismatches = json.loads(out.stdout.splitlines()[-1])
    if checked == 0:
        pytest.skip(f"no implementation matching {pattern} is installed")
    assert mismatches == []


if __name__ == "__main__":
    print(json.dumps(_mismatches(sys.argv[1])))
