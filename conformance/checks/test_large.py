"""Production sizes in low precision (BatchNorm: 2**20 values per channel, a (256, 2, 64, 64) batch and one
1024x1024 image with its channels last, in float16, bfloat16 and float32, with values up to ~1e4 and
per-channel offsets 3-10 spreads away, ``data="large"``): a training step with its gradients and running
statistics, then inference. A float16 sum of squares overflows on this data and a half- or
bfloat16-precision sum loses the mean; the tolerances hold reductions to float32 precision, so a layer that
accumulates in its input's precision fails, a correct one passes."""

import pytest

pytestmark = pytest.mark.conformance


def test_production_size(conformance, case):
    mirror = conformance(case)
    train, evaluate = case.batches()
    mirror.training_step(train, case.cotangent())
    mirror.compare_state()
    mirror.forward(evaluate, training=False)
    mirror.verify()
