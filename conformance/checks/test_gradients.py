"""Gradients of sum(y * dy) with respect to x, gamma and beta, through the batch statistics in training
mode and with constant running statistics in inference mode, on every rank, channel position and dtype,
and with each framework option. Implementations that define no gradients skip these with their reason."""

import pytest

from conformance.cases import layout_cases, option_cases

pytestmark = pytest.mark.conformance

CASES = (
    layout_cases() + layout_cases(("float32",), track_running_stats=False) + layout_cases(("float32",), affine=False)
    + option_cases()
)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradients(impl, conformance, case, training):
    if reason := impl.capabilities.no_gradients:
        conformance.unsupported(f"gradients ({reason})")
    mirror = conformance(case, training=training)
    mirror.forward_backward(case.batches()[0], case.cotangent(), training=training)
    mirror.compare_state()
    mirror.verify()
