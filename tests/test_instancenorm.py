"""The reference InstanceNorm with running statistics (reference/instancenorm.py) against its definition written
the other way round, as PyTorch computes it: BatchNorm over the input viewed as one sample of N x C channels,
with the running statistics repeated per sample and averaged back."""

import numpy as np
import pytest

import reference
from reference import INSTANCENORM_RUNNING

RNG = np.random.default_rng(7)


def _as_one_sample(layer: reference.InstanceNorm, n: int) -> reference.BatchNorm:
    """A BatchNorm of N x C channels holding ``layer``'s state repeated per sample."""
    wide = reference.BatchNorm(n * layer.num_features, convention=layer.convention, momentum=layer.momentum,
                               eps=layer.eps, channel_axis=1)
    for name in ("gamma", "beta", "running_mean", "running_var"):
        setattr(wide, name, np.tile(getattr(layer, name), n))
    return wide


@pytest.mark.parametrize("shape", [(3, 2, 5), (2, 4, 3, 3), (1, 3, 2, 2, 2)])
def test_training_is_batchnorm_of_one_sample_of_all_instances(shape):
    n, c = shape[:2]
    layer = reference.InstanceNorm(c, convention=INSTANCENORM_RUNNING, momentum=0.3, eps=1e-3)
    layer.gamma, layer.beta = RNG.uniform(0.5, 1.5, c), RNG.uniform(-1, 1, c)
    layer.running_mean, layer.running_var = RNG.normal(size=c), RNG.uniform(0.5, 2, c)
    x, dy = RNG.normal(2.0, 3.0, shape), RNG.normal(size=shape)
    wide = _as_one_sample(layer, n)
    y = layer.forward(x, training=True)
    y_wide = wide.forward(x.reshape(1, n * c, *shape[2:]), training=True).reshape(shape)
    np.testing.assert_allclose(y, y_wide, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean, wide.running_mean.reshape(n, c).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, wide.running_var.reshape(n, c).mean(axis=0), rtol=1e-12)
    dx_wide = wide.backward(dy.reshape(1, n * c, *shape[2:])).reshape(shape)
    np.testing.assert_allclose(layer.backward(dy), dx_wide, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dgamma, wide.dgamma.reshape(n, c).sum(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dbeta, wide.dbeta.reshape(n, c).sum(axis=0), rtol=1e-10, atol=1e-12)


def test_inference_is_batchnorm_inference():
    c = 3
    layer = reference.InstanceNorm(c, convention=INSTANCENORM_RUNNING, eps=1e-3)
    batchnorm = reference.BatchNorm(c, convention=INSTANCENORM_RUNNING, eps=1e-3)
    for target in (layer, batchnorm):
        target.running_mean, target.running_var = np.array([1.0, -2.0, 0.5]), np.array([0.5, 2.0, 1e-4])
    x, dy = RNG.normal(size=(4, c, 5)), RNG.normal(size=(4, c, 5))
    np.testing.assert_array_equal(layer.forward(x, training=False), batchnorm.forward(x, training=False))
    np.testing.assert_array_equal(layer.backward(dy), batchnorm.backward(dy))


def test_without_running_statistics_it_is_instance_normalization_in_both_modes():
    layer = reference.InstanceNorm(2, convention=INSTANCENORM_RUNNING, track_running_stats=False, eps=1e-5)
    x = RNG.normal(size=(3, 2, 4, 4))
    expected = reference.group_norm(x, np.ones(2), np.zeros(2), 1e-5, groups=2)
    for training in (True, False):
        np.testing.assert_allclose(layer.forward(x, training=training), expected, rtol=1e-13, atol=1e-13)


def test_one_value_per_instance_is_refused_before_any_state_changes():
    layer = reference.InstanceNorm(2, convention=INSTANCENORM_RUNNING)
    before = layer.state
    with pytest.raises(ValueError, match="more than 1 value per instance"):
        layer.forward(RNG.normal(size=(4, 2, 1)), training=True)
    for name, value in before.items():
        np.testing.assert_array_equal(layer.state[name], value)
