"""Porting (``conformance/transforms/porting.py``): a layer trains three steps in its own convention; at the
first inference call its state and the settings it holds are carried into another convention with
:func:`reference.port` (momentum converted, eps carried, the running variance as inference reads it), and
the target answers from there. Its inference output, the eps and momentum it holds, its state and one
further training step must be the reference's: in the source's convention before the port, in the
target's after it, built from the case (never from the ported settings). Every framework implementation is
paired both ways with the reference in every built-in convention and its own."""

import pytest

pytestmark = pytest.mark.conformance(transform="port")


def test_porting(conformance, case):
    mirror = conformance(case)
    *train, evaluate, further = case.batches()
    for x in train:
        mirror.forward(x, training=True)
    mirror.compare_state()
    mirror.forward(evaluate, training=False)  # the port: the target answers from here on
    mirror.compare_hyperparameters()
    mirror.compare_state()
    mirror.forward(further, training=True)
    mirror.compare_state()
    mirror.verify()
