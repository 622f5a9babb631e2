"""Worker isolation: an implementation that kills its process fails its own tests, names its family and
exit code, leaves every other worker running, comes back on the next call, and never turns into a skip
or stops the run; and no more workers are alive than ``BN_MAX_WORKERS`` allows, the least recently used
stopped to start another."""

import gc
import weakref
from collections.abc import Iterator

import fake_adapters
import numpy as np
import pytest

from conformance.adapters.base import Implementation, State
from conformance.harness import isolation
from conformance.harness.isolation import RemoteError, WorkerCrashed, isolate, shutdown, started
from conformance.harness.registry import load
from conformance.operators.batchnorm.cases import BatchNormCase
from reference import TORCH

pytest_plugins = ["pytester"]

CASE = BatchNormCase((4, 3))
INITIAL = CASE.initial_state(TORCH)


@pytest.fixture
def workers() -> Iterator[None]:
    """Stop the workers a test started, so none outlives it (they are keyed per adapter module)."""
    yield
    shutdown()


def isolated(locator: str) -> dict[str, Implementation]:
    # Loading by locator is what gives an implementation the address its worker imports it from.
    return {impl.name: isolate(impl) for impl in load(locator)}


def test_crash_fails_the_call_and_only_its_own_worker(workers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # A segfault, as a native kernel's bug would cause; the run below covers every crash mode's exit code.
    monkeypatch.setattr(isolation, "MAX_WORKERS", 2)  # room for both families' workers at once
    healthy = isolated("fake_adapters:HEALTHY")["healthy.torch"]
    crashing = isolated("fake_adapters:CRASHING")["crash.segfault"]
    spec = CASE.spec(TORCH)
    survivor = healthy.build(spec)
    survivor.set_state(State(running_mean=INITIAL["running_mean"]))
    doomed = crashing.build(spec)  # the crashing worker runs and answers until forward

    with pytest.raises(WorkerCrashed, match=r"^crash: the worker process died during 'forward' \(exit code -11\)"):
        doomed.forward(CASE.batches()[0], True)  # a remote layer's calls take positional arguments

    # The other family's worker is the same process as before: it still knows the layer built before the
    # crash and the state set on it (a restarted worker would know neither).
    y = survivor.forward(CASE.batches()[0], False)
    assert y.shape == CASE.shape
    assert (survivor.get_state().running_mean == INITIAL["running_mean"]).all()
    # The crashed family comes back: a fresh worker builds and computes what does not crash...
    reborn = crashing.build(spec)
    reborn.set_state(State(running_var=INITIAL["running_var"]))
    # ...and a proxy left over from the worker that died reaches nothing in the new one: neither by a
    # call, nor by the drop its collection sends (layer ids are never reused across restarts).
    with pytest.raises(RemoteError, match="an earlier worker built it and was stopped"):
        doomed.get_state()
    collected = weakref.ref(doomed)
    del doomed
    gc.collect()
    assert collected() is None  # so its drop went out with the next call
    assert (reborn.get_state().running_var == INITIAL["running_var"]).all()


def test_no_more_workers_than_allowed_are_alive(workers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # One worker (BN_MAX_WORKERS=1, the default): starting another family's stops the least recently used,
    # whose layers are then gone, and its family's next call starts it afresh.
    monkeypatch.setattr(isolation, "MAX_WORKERS", 1)
    healthy = isolated("fake_adapters:HEALTHY")["healthy.torch"]
    other = isolated("fake_adapters:IN_PLACE_ISOLATED")["wrong.in_place_isolated"]
    spec, x = CASE.spec(TORCH), CASE.batches()[0]
    first = healthy.build(spec)
    starts = started()[healthy.process_key]
    other.build(spec).forward(x.copy(), True)
    assert [w.alive for w in isolation._WORKERS.values()].count(True) == 1
    with pytest.raises(RemoteError, match="an earlier worker built it and was stopped"):
        first.get_state()
    assert healthy.build(spec).forward(x, False).shape == CASE.shape  # the family comes back ...
    assert started()[healthy.process_key] == starts + 1  # ... in a fresh worker
    assert [w.alive for w in isolation._WORKERS.values()].count(True) == 1


def test_crash_is_a_failure_of_each_test_and_the_run_completes(run_checks) -> None:
    # All three crash modes (one shared worker, restarted before each test) and a healthy isolated
    # implementation, on one forward check of one case: each failure is the crash of its own test.
    run_checks(
        "test_forward.py", "-k", "test_training_output and 16x3-cfirst-float32",
        "--impl", "fake_adapters:CRASHING", "--impl", "fake_adapters:HEALTHY",
        outcomes={"failed": 3, "passed": 1},
        lines=[f"E *WorkerCrashed: crash: the worker process died during 'forward' (exit code {code})*"
               for code in fake_adapters.CRASH_EXIT_CODES.values()],
    )


@pytest.mark.parametrize("locator", ["fake_adapters:IN_PLACE", "fake_adapters:IN_PLACE_ISOLATED"])
def test_writes_into_the_callers_array_are_seen_across_the_worker(workers: None, locator: str) -> None:
    # The worker gets a pickled copy of x; it writes the modification back, so the check sees what it
    # would see in-process: the same failure in both, and nothing else (the mirror restores x for the
    # reference).
    from conformance.harness.mirror import Mirror

    (impl,) = isolated(locator).values()
    mirror = Mirror(impl, CASE)
    x = CASE.batches()[0]
    mirror.forward(x, training=True)
    assert [c.quantity for c in mirror.failures()] == ["x_unmodified"]
    np.testing.assert_array_equal(x, CASE.batches()[0])
