"""State from construction: every layer as the framework builds it, without any state assigned.

Its state (BatchNorm: gamma, beta and the convention's running state, e.g. running mean 0, variance 1,
``num_batches_tracked`` 0) and the eps and momentum it holds are compared with the convention's documented
initial state and the arguments it was built with; then a first training step with its gradients, a later
training step and an inference step run from that state, against the reference started from the documented
state (never from what the layer holds), in every dtype, rank and channel position."""

import pytest

pytestmark = pytest.mark.conformance


def test_state_from_construction(conformance, case):
    mirror = conformance(case, constructed=True)
    first, later, evaluate = case.batches()
    mirror.training_step(first, case.cotangent())
    mirror.compare_state()
    mirror.forward(later, training=True)
    mirror.compare_state()
    mirror.forward(evaluate, training=False)
    mirror.verify()
