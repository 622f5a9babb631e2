"""Running statistics, checked against update rules written out by hand for each convention."""

import numpy as np
import pytest

from reference import CONVENTIONS, BatchNorm

# Three batches of different sizes (so the Bessel factor n / (n - 1) differs per batch), channels last.
BATCH_SHAPES = [(4, 2, 3), (2, 3, 3), (5, 1, 3)]
AXIS = -1
REDUCE = (0, 1)  # every axis but the channel axis


def batches(rng):
    # Different location and spread per batch, so a wrong weighting cannot cancel out.
    return [rng.normal(loc, scale, shape) for (loc, scale), shape in zip([(1, 2), (-3, 0.5), (0.5, 4)], BATCH_SHAPES)]


def hand_update(convention, m, run_mean, run_var, x):
    """One training step of ``convention`` with momentum ``m``, written from the frameworks' docs."""
    n = x.size // x.shape[AXIS]
    mean, biased = x.mean(axis=REDUCE), x.var(axis=REDUCE)
    unbiased = biased * n / (n - 1)
    if convention == "torch":  # momentum weights the batch; stores the unbiased variance
        return (1 - m) * run_mean + m * mean, (1 - m) * run_var + m * unbiased
    if convention in ("keras", "onnx", "flax"):  # momentum weights the running value; biased
        return m * run_mean + (1 - m) * mean, m * run_var + (1 - m) * biased
    if convention == "tf_keras_fused":  # Keras momentum, but the fused kernel stores the unbiased variance
        return m * run_mean + (1 - m) * mean, m * run_var + (1 - m) * unbiased
    raise AssertionError(f"no hand-written rule for convention {convention!r}: add one")


@pytest.mark.parametrize("momentum", [0.0, 1.0, 0.3, "default"])
@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_three_batches_follow_the_hand_written_rule(rng, convention, momentum):
    m = CONVENTIONS[convention].default_momentum if momentum == "default" else momentum
    layer = BatchNorm(3, convention=convention, momentum=m, channel_axis=AXIS)
    run_mean, run_var = np.zeros(3), np.ones(3)
    for k, x in enumerate(batches(rng), start=1):
        layer.forward(x, training=True)
        run_mean, run_var = hand_update(convention, m, run_mean, run_var, x)
        np.testing.assert_allclose(layer.running_mean, run_mean, rtol=1e-13, atol=1e-14, err_msg=f"batch {k}")
        np.testing.assert_allclose(layer.running_var, run_var, rtol=1e-13, atol=1e-14, err_msg=f"batch {k}")
        assert layer.num_batches_tracked == k


def test_every_convention_has_a_hand_written_rule():
    # hand_update raises for a convention it does not know, so a new convention cannot go untested.
    x = np.ones((2, 1, 3))
    for name in CONVENTIONS:
        hand_update(name, 0.5, np.zeros(3), np.ones(3), x)


def test_torch_momentum_none_is_the_plain_average(rng):
    # Cumulative average with factor 1 / num_batches_tracked: after k batches the running stats are the
    # plain mean of the k batch means and of the k unbiased batch variances (the initial 0 / 1 drop out).
    layer = BatchNorm(3, convention="torch", momentum=None, channel_axis=AXIS)
    means, unbiased_vars = [], []
    for k, x in enumerate(batches(rng), start=1):
        layer.forward(x, training=True)
        means.append(x.mean(axis=REDUCE))
        unbiased_vars.append(x.var(axis=REDUCE, ddof=1))
        np.testing.assert_allclose(layer.running_mean, np.mean(means, axis=0), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(layer.running_var, np.mean(unbiased_vars, axis=0), rtol=1e-13, atol=1e-14)
        assert layer.num_batches_tracked == k


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_inference_neither_updates_nor_counts(rng, convention):
    layer = BatchNorm(3, convention=convention, channel_axis=AXIS)
    first, second, _ = batches(rng)
    layer.forward(first, training=True)
    mean, var = layer.running_mean.copy(), layer.running_var.copy()
    for _ in range(2):
        y = layer.forward(second, training=False)
        np.testing.assert_array_equal(layer.running_mean, mean)
        np.testing.assert_array_equal(layer.running_var, var)
        assert layer.num_batches_tracked == 1
    # ... and it normalized with those running statistics.
    np.testing.assert_allclose(y, (second - mean) / np.sqrt(var + layer.eps), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_without_tracking_inference_uses_batch_statistics(rng, convention):
    layer = BatchNorm(3, convention=convention, channel_axis=AXIS, track_running_stats=False)
    assert layer.running_mean is None and layer.running_var is None
    for x in batches(rng):
        expected = (x - x.mean(axis=REDUCE)) / np.sqrt(x.var(axis=REDUCE) + layer.eps)
        for training in (True, False):
            np.testing.assert_allclose(layer.forward(x, training=training), expected, rtol=1e-12, atol=1e-12)
            assert layer.running_mean is None and layer.running_var is None


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_train_eval_train_switching(rng, convention):
    # An evaluation step between two training steps must be invisible to the running statistics.
    m = 0.3
    first, middle, last = batches(rng)
    layer = BatchNorm(3, convention=convention, momentum=m, channel_axis=AXIS)
    layer.forward(first, training=True)
    run_mean, run_var = hand_update(convention, m, np.zeros(3), np.ones(3), first)
    y = layer.forward(middle, training=False)
    np.testing.assert_allclose(y, (middle - run_mean) / np.sqrt(run_var + layer.eps), rtol=1e-12, atol=1e-12)
    layer.forward(last, training=True)
    run_mean, run_var = hand_update(convention, m, run_mean, run_var, last)
    np.testing.assert_allclose(layer.running_mean, run_mean, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.running_var, run_var, rtol=1e-13, atol=1e-14)
    assert layer.num_batches_tracked == 2
