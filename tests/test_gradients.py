"""Finite-difference checks of the layer's backward pass and of the second derivative, in float64.

First order: every case differentiates L = sum(y * dy) for a random dy with central differences over
every entry of x, gamma and beta (the shapes are small, so the full gradient is cheap) and compares with
``backward``'s dx, dgamma and dbeta. Second order: central differences of that analytic backward along a
random direction against ``hvp_training``.
"""

import numpy as np
import pytest

from reference import BatchNorm, backward_training, batch_statistics, hvp_training

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


def fast_gradients(x, gamma, dy, eps, channel_axis):
    """(dx, dgamma, dbeta) of sum(y * dy) from the fast engine's analytic backward."""
    mean, var = batch_statistics(x, channel_axis)
    return backward_training(dy, x, mean, var, gamma, eps, channel_axis)


@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
def test_hessian_vector_product_matches_finite_differences(rng, shape, channel_axis):
    # Central differences of the analytic first-order gradients along the direction (vx, vgamma, vbeta):
    # (grad(theta + h v) - grad(theta - h v)) / 2h. vbeta moves beta, which no gradient depends on.
    c = shape[channel_axis]
    x, dy, vx = rng.normal(1.0, 2.0, shape), rng.normal(size=shape), rng.normal(size=shape)
    gamma = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    vgamma = rng.normal(size=c)
    up = fast_gradients(x + STEP * vx, gamma + STEP * vgamma, dy, 1e-3, channel_axis)
    down = fast_gradients(x - STEP * vx, gamma - STEP * vgamma, dy, 1e-3, channel_axis)
    numerical = [(a - b) / (2 * STEP) for a, b in zip(up, down)]
    analytical = hvp_training(dy, x, gamma, 1e-3, vx, vgamma, channel_axis)
    for name, num, ana in zip(["hvp_x", "hvp_gamma"], numerical, analytical):
        assert ana.shape == num.shape, name
        err = relative_error(num, ana)
        assert err < MAX_RELATIVE_ERROR, f"{name}: relative error {err:.2e}"
    assert np.array_equal(analytical[2], np.zeros(c)) and np.array_equal(numerical[2], np.zeros(c))


def test_hessian_vector_product_has_every_term(rng):
    # Guards the test above: dropping the terms along vx (the tangents of xhat and 1/sqrt(var + eps)) or
    # along vgamma changes hvp_x by far more than the finite-difference tolerance.
    x, dy, vx = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    gamma, vgamma = np.ones(3), rng.normal(size=3)
    full = hvp_training(dy, x, gamma, 1e-3, vx, vgamma, 1)[0]
    assert relative_error(full, hvp_training(dy, x, gamma, 1e-3, vx, None, 1)[0]) > 1e-2
    assert relative_error(full, hvp_training(dy, x, gamma, 1e-3, np.zeros_like(vx), vgamma, 1)[0]) > 1e-2
