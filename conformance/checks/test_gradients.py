"""Gradients of sum(y * dy) with respect to the input and the parameters, through the batch statistics in
training mode and with constant running statistics in inference mode (BatchNorm's grid: every rank,
channel position and dtype, and each framework option). Implementations that define no gradients skip
these with their reason."""

import pytest

pytestmark = pytest.mark.conformance


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_gradients(impl, conformance, case, training):
    if reason := impl.capabilities.no_gradients:
        conformance.unsupported(f"gradients ({reason})")
    mirror = conformance(case, training=training)
    mirror.forward_backward(case.batches()[0], case.cotangent(), training=training)
    mirror.compare_state()
    mirror.verify()
