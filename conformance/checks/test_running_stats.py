"""Running statistics over several training steps (BatchNorm: new-batch weights 0 / 0.1 / 0.5 / 1 and
PyTorch's cumulative average, each case's ``new_batch_weight`` becoming each convention's momentum);
train -> eval -> train switching; layer options (no running statistics, Keras' ``trainable=False``,
``affine=False``, framework options that change the numerics)."""

import pytest

pytestmark = pytest.mark.conformance


def test_running_statistics(conformance, case):
    mirror = conformance(case)
    for x in case.batches():
        mirror.forward(x, training=True)
        mirror.compare_state()  # after every step, the counter included
    mirror.verify()


def test_train_eval_train(conformance, case):
    mirror = conformance(case)
    for x, training in zip(case.batches(), (True, False, False, True)):
        mirror.forward(x, training=training)
        mirror.compare_state()
    mirror.verify()


def test_layer_options(conformance, case):
    mirror = conformance(case)
    for x, training in zip(case.batches(), (True, False)):
        mirror.forward(x, training=training)
        mirror.compare_state()
    mirror.verify()
