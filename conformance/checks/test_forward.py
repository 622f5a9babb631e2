"""Forward outputs against the reference: training, inference with given statistics, and inference with
the statistics that three training steps produced, and the hyperparameters the layer then holds (the
operator's grids: BatchNorm's every rank, channel position and dtype)."""

import pytest

pytestmark = pytest.mark.conformance


def test_training_output(conformance, case):
    mirror = conformance(case)
    mirror.forward(case.batches()[0], training=True)
    mirror.compare_state()
    mirror.verify()


def test_inference_output(conformance, case):
    mirror = conformance(case)
    mirror.forward(case.batches()[0], training=False)
    mirror.compare_state()  # inference never updates the statistics
    mirror.verify()


def test_inference_after_training(conformance, case):
    mirror = conformance(case)
    *train, evaluate = case.batches()
    for x in train:
        mirror.forward(x, training=True)
    mirror.forward(evaluate, training=False)
    mirror.compare_state()
    mirror.compare_hyperparameters()  # what the layer holds after all that (an exported graph: the one that ran)
    mirror.verify()
