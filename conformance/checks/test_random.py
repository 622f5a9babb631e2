"""Randomized cases on top of the fixed grid (Hypothesis; derandomized by the default profile): random
rank, sizes, channel position, dtype, eps, momentum and data offsets, checked on outputs, gradients
and running statistics over two training steps and one inference step. Only cases the implementation
supports and the deviation registry does not cover are drawn: the grid records the deviations. Where
the registry covers this check itself (an entry for ``random_case``), the whole check is expected to fail.
The report holds the example that decided the outcome (``Conformance.example``)."""

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conformance.cases import Case
from conformance.plugin import Conformance

pytestmark = pytest.mark.conformance


@pytest.fixture
def available(conformance: Conformance) -> Conformance:
    """``conformance`` (which skips a missing implementation), with any entry covering this whole check
    applied once, outside Hypothesis' examples."""
    conformance.expect_deviation({})
    return conformance


def draw_case(draw, impl) -> Case:
    """A case within the implementation's capabilities."""
    caps = impl.capabilities
    rank = draw(st.sampled_from(sorted(caps.ranks)))
    axis = draw(st.sampled_from(sorted(caps.channel_axes)))
    shape = [draw(st.integers(2, 6))] + [draw(st.integers(1, 4)) for _ in range(rank - 1)]
    shape[axis] = draw(st.integers(1, 5))
    return Case(
        tuple(shape), axis, draw(st.sampled_from(sorted(caps.dtypes & {"float32", "float64"}))),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])), new_batch_weight=draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
        steps=3,
    )


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_case(available: Conformance, data) -> None:
    impl = available.impl
    case = draw_case(data.draw, impl)
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
