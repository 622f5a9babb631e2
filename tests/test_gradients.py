"""Finite-difference checks of the layer's backward pass in float64.

Every case differentiates L = sum(y * dy) for a random dy with central differences over every entry
of x, gamma and beta (the shapes are small, so the full gradient is cheap) and compares with
``backward``'s dx, dgamma and dbeta.
"""

import numpy as np
import pytest

from reference import BatchNorm

SHAPES = [(4, 3), (3, 2, 5), (2, 3, 4, 3), (2, 2, 3, 2, 2)]
# mode: (track_running_stats, training)
MODES = {
    "training": (True, True),
    "inference": (True, False),
    "inference-batch-stats": (False, False),  # no running stats: inference differentiates batch stats
}
STEP = 1e-5  # central-difference truncation error ~STEP**2, rounding ~1e-16 / STEP: both far below 1e-6
MAX_RELATIVE_ERROR = 1e-6


def make_layer(rng, num_features, channel_axis, track_running_stats):
    layer = BatchNorm(num_features, eps=1e-3, channel_axis=channel_axis, track_running_stats=track_running_stats)
    # Non-trivial parameters and running statistics, so no term of the gradient vanishes.
    layer.gamma = rng.uniform(0.5, 2.0, num_features) * rng.choice([-1, 1], num_features)
    layer.beta = rng.normal(size=num_features)
    if track_running_stats:
        layer.running_mean = rng.normal(size=num_features)
        layer.running_var = rng.uniform(0.5, 2.0, num_features)
    return layer


def loss(layer, x, dy, training, gamma, beta):
    """L = sum(y * dy) at the given parameters; training forwards update running stats, which the
    training output does not depend on."""
    layer.gamma, layer.beta = gamma, beta
    return float(np.sum(layer.forward(x, training=training) * dy))


def numerical_gradient(f, arrays):
    """Central differences of f(*arrays) with respect to every entry of every array."""
    grads = []
    for i, a in enumerate(arrays):
        g = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            shifted = [b.copy() for b in arrays]
            shifted[i][idx] = a[idx] + STEP
            up = f(*shifted)
            shifted[i][idx] = a[idx] - STEP
            g[idx] = (up - f(*shifted)) / (2 * STEP)
        grads.append(g)
    return grads


def relative_error(numerical, analytical):
    return np.linalg.norm(numerical - analytical) / max(np.linalg.norm(numerical), np.linalg.norm(analytical))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
def test_backward_matches_finite_differences(rng, shape, channel_axis, mode):
    track_running_stats, training = MODES[mode]
    c = shape[channel_axis]
    layer = make_layer(rng, c, channel_axis, track_running_stats)
    x = rng.normal(1.0, 2.0, shape)
    dy = rng.normal(size=shape)
    gamma, beta = layer.gamma.copy(), layer.beta.copy()

    layer.forward(x, training=training)
    analytical = [layer.backward(dy), layer.dgamma, layer.dbeta]

    numerical = numerical_gradient(lambda x_, g_, b_: loss(layer, x_, dy, training, g_, b_), [x, gamma, beta])
    for name, num, ana in zip(["dx", "dgamma", "dbeta"], numerical, analytical):
        assert ana.shape == num.shape, name
        err = relative_error(num, ana)
        assert err < MAX_RELATIVE_ERROR, f"{name}: relative error {err:.2e}"


def test_training_dx_is_not_the_inference_dx(rng):
    # Guards the test above against a backward that ignores the batch-statistics terms: in training
    # mode dx must differ from dy * gamma / sqrt(var + eps), and sums to zero per channel.
    x, dy = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    layer = BatchNorm(3)
    layer.forward(x, training=True)
    dx = layer.backward(dy)
    naive = dy / np.sqrt(x.var(axis=0) + layer.eps)
    assert np.abs(dx - naive).max() > 1e-2
    np.testing.assert_allclose(dx.sum(axis=0), 0.0, atol=1e-12)


def test_backward_uses_the_gamma_of_its_forward(rng):
    # backward() is documented as the gradient of the last forward; replacing gamma afterwards (as an
    # optimizer step between forward and backward would) must not change that gradient, just as the
    # input x is copied for the same reason.
    x, dy = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    layer = BatchNorm(3)
    layer.gamma = [1.0, 2.0, 3.0]
    layer.forward(x, training=True)
    expected = layer.backward(dy)
    layer.forward(x, training=True)
    layer.gamma = [5.0, 5.0, 5.0]
    np.testing.assert_array_equal(layer.backward(dy), expected)
