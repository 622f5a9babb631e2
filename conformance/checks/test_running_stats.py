"""Running statistics over several training steps, new-batch weights 0 / 0.1 / 0.5 / 1 and PyTorch's
cumulative average (``None``); train -> eval -> train switching; layers without running statistics; Keras'
``trainable=False``; ``affine=False``; framework options that change the numerics
(``cases.FRAMEWORK_OPTIONS``). Each case's ``new_batch_weight`` becomes each convention's momentum."""

import pytest

from conformance.cases import layout_cases, option_cases

pytestmark = pytest.mark.conformance

NEW_BATCH_WEIGHTS = (0.0, 0.1, 0.5, 1.0, None)
SEQUENCES = [c for w in NEW_BATCH_WEIGHTS for c in layout_cases(("float32", "float64"), new_batch_weight=w, steps=3)]


@pytest.mark.parametrize("case", SEQUENCES, ids=[c.id for c in SEQUENCES])
def test_running_statistics(conformance, case):
    mirror = conformance(case)
    for x in case.batches():
        mirror.forward(x, training=True)
        mirror.compare_state()  # after every step, num_batches_tracked included
    mirror.verify()


SWITCHING = layout_cases(("float32",), steps=4)


@pytest.mark.parametrize("case", SWITCHING, ids=[c.id for c in SWITCHING])
def test_train_eval_train(conformance, case):
    mirror = conformance(case)
    for x, training in zip(case.batches(), (True, False, False, True)):
        mirror.forward(x, training=training)
        mirror.compare_state()
    mirror.verify()


OPTIONS = [
    c
    for options in ({"track_running_stats": False}, {"trainable": False}, {"affine": False})
    for c in layout_cases(("float32",), steps=2, **options)
] + option_cases(steps=2)


@pytest.mark.parametrize("case", OPTIONS, ids=[c.id for c in OPTIONS])
def test_layer_options(conformance, case):
    mirror = conformance(case)
    for x, training in zip(case.batches(), (True, False)):
        mirror.forward(x, training=training)
        mirror.compare_state()
    mirror.verify()
