"""Production sizes in low precision (BatchNorm: 2**20 values per channel at every rank and channel position,
in float16, bfloat16 and float32, with values up to ~3e4: per-channel offsets 3-10 spreads away and one
channel 100 spreads away, ``data="large"``): a training step with its gradients and running statistics,
then inference. A float16 sum of squares overflows on this data, a half- or bfloat16-precision sum loses the
mean, and so does a float32 sum that adds 2**20 values one after another on the channel 100 spreads away;
the tolerances hold reductions to what a blocked float32 sum achieves, so such a layer fails, a correct
one passes."""

import pytest

pytestmark = pytest.mark.conformance


def test_production_size(conformance, case):
    mirror = conformance(case)
    train, evaluate = case.batches()
    mirror.training_step(train, case.cotangent())
    mirror.compare_state()
    mirror.forward(evaluate, training=False)
    mirror.verify()
