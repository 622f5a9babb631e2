"""Second-order gradients in training mode: the Hessian-vector product of sum(y * dy) in the input and the
parameters along a seeded direction (``case.direction()``), through each framework's own autodiff (double
backward, as PyTorch's gradgradcheck checks its modules), against the reference's (BatchNorm:
:func:`reference.hvp_training`, every rank and channel position in float64 and float32, and without affine
parameters). Implementations without gradients, or that declare no ``double_backward``
(``Capabilities.double_backward``), skip with the reason."""

import pytest

pytestmark = pytest.mark.conformance


def test_hessian_vector_product(impl, conformance, case):
    if reason := impl.capabilities.no_gradients:
        conformance.unsupported(f"gradients ({reason})")
    if not impl.capabilities.double_backward:
        conformance.unsupported("double_backward")
    mirror = conformance(case)
    mirror.double_backward(case.batches()[0], case.cotangent(), case.direction())
    mirror.verify()
