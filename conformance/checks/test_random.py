"""Randomized cases on top of the fixed grids (Hypothesis; derandomized by the default profile), drawn by
the operator within the implementation's capabilities (BatchNorm: random rank, sizes, channel position,
dtype, eps, momentum and data offsets), checked on outputs, gradients and running statistics over two
training steps and one inference step. Only cases the implementation supports and the deviation registry
does not cover are drawn: the grids record the deviations. Where the registry covers this check itself (an
entry for ``random_case``), the whole check is expected to fail. The report holds the example that decided
the outcome (``Conformance.example``)."""

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conformance.harness.conformance import Conformance

pytestmark = pytest.mark.conformance


@pytest.fixture
def available(conformance: Conformance) -> Conformance:
    """``conformance`` (which skips a missing implementation), with any entry covering this whole check
    applied once, outside Hypothesis' examples."""
    conformance.expect_deviation({})
    return conformance


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_case(available: Conformance, data) -> None:
    impl = available.impl
    case = impl.operator.draw_case(data.draw, impl.capabilities)
    assume(not impl.unsupported(case.spec(impl.convention)))
    for check in ("gradients", "running_statistics", "inference_after_training"):
        assume(available.deviation(case.params() | {"training": True}, check=check) is None)
    mirror = available.example(case)
    first, second, evaluate = case.batches()
    mirror.training_step(first, case.cotangent())
    mirror.forward(second, training=True)
    mirror.forward(evaluate, training=False)
    mirror.compare_state()
    mirror.verify()
