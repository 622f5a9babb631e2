"""Synchronized BatchNorm on distributed engines (the shard transform, ``transforms/sharded.py``): every rank
against the reference on the global batch.

A sharded layer splits each global batch over its world's ranks as the case says (the operator's
``synchronized_*`` grids: equal shards, unequal ones, a rank holding a single sample, one sample on every
rank). Training: every rank's output and running state after each of three steps equal the single-device
results on the global batch (``reference/sharding.py``), and the step communicated; also through the
framework's own training loop (``model.fit``, where the engine has one), whose running state must follow the
global batches'. Gradients: every rank's dx is its slice of the global dx, and dgamma/dbeta are what the
engine promises (its shard's share, or the global sum). Inference: every rank normalizes its own shard with
the running statistics, and no cross-rank reduction happens.
"""

import pytest

pytestmark = pytest.mark.conformance(transform="shard")


def test_synchronized_training(conformance, case):
    mirror = conformance(case)
    for x in case.batches():
        mirror.forward(x, training=True)
        mirror.compare_state()
    mirror.verify()


def test_synchronized_gradients(conformance, case):
    mirror = conformance(case)
    mirror.forward_backward(case.batches()[0], case.cotangent(), training=True)
    mirror.compare_state()
    mirror.verify()


def test_synchronized_inference(conformance, case):
    mirror = conformance(case)
    mirror.forward(case.batches()[0], training=False)
    mirror.compare_state()  # inference never updates the state
    mirror.verify()
