"""State from construction: every layer as the framework builds it, without any state assigned.

Its gamma, beta, running mean and variance, ``num_batches_tracked``, eps and momentum are compared with
the convention's documented initial state (1, 0, 0, 1, 0, and the eps and momentum it was built with);
then a first training step with its gradients, a later training step and an inference step run from that
state, against the reference started from the documented state (never from what the layer holds), in
every dtype, rank and channel position."""

import pytest

from conformance.cases import layout_cases

pytestmark = pytest.mark.conformance

CASES = layout_cases(steps=3) + layout_cases(("float32",), new_batch_weight=None, steps=3)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_state_from_construction(conformance, case):
    mirror = conformance(case, constructed=True)
    first, later, evaluate = case.batches()
    mirror.training_step(first, case.cotangent())
    mirror.compare_state()
    mirror.forward(later, training=True)
    mirror.compare_state()
    mirror.forward(evaluate, training=False)
    mirror.verify()
