"""Forward outputs against the reference: training, inference with given statistics, and inference with
the statistics that three training steps produced, on every rank, channel position and dtype."""

import pytest

from conformance.cases import layout_cases

pytestmark = pytest.mark.conformance

CASES = layout_cases()
ids = [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_training_output(conformance, case):
    mirror = conformance(case)
    mirror.forward(case.batches()[0], training=True)
    mirror.compare_state()
    mirror.verify()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_inference_output(conformance, case):
    mirror = conformance(case)
    mirror.forward(case.batches()[0], training=False)
    mirror.compare_state()  # inference never updates the statistics
    mirror.verify()


AFTER_TRAINING = [c.with_(steps=4) for c in CASES]


@pytest.mark.parametrize("case", AFTER_TRAINING, ids=[c.id for c in AFTER_TRAINING])
def test_inference_after_training(conformance, case):
    mirror = conformance(case)
    *train, evaluate = case.batches()
    for x in train:
        mirror.forward(x, training=True)
    mirror.forward(evaluate, training=False)
    mirror.compare_state()
    mirror.verify()
