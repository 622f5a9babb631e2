"""The masked BatchNorm of reference/masked.py: all marked is BatchNorm's training, the gradient is the derivative
of its forward (finite differences), and a mask of the wrong shape or marking nothing is refused."""

import numpy as np
import pytest

import reference

RNG = np.random.default_rng(11)


def _forward(x: np.ndarray, mask: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, axis: int) -> np.ndarray:
    mean, var, _ = reference.masked_statistics(x, mask, axis)
    return reference.forward_inference(x, mean, var, gamma, beta, eps, axis)


@pytest.mark.parametrize("shape, axis", [((4, 3), -1), ((2, 5, 3), -1), ((2, 3, 4, 2), 1)])
def test_all_marked_is_batchnorm_training(shape, axis):
    x, dy = RNG.normal(1.0, 2.0, shape), RNG.normal(size=shape)
    gamma, beta = RNG.uniform(0.5, 1.5, shape[axis]), RNG.normal(size=shape[axis])
    mask = np.ones(tuple(n for i, n in enumerate(shape) if i != axis % len(shape)), dtype=bool)
    y, mean, var = reference.forward_training(x, gamma, beta, 1e-3, axis)
    np.testing.assert_allclose(_forward(x, mask, gamma, beta, 1e-3, axis), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.masked_statistics(x, mask, axis)[:2], (mean, var), rtol=1e-12, atol=1e-15)
    expected = reference.backward_training(dy, x, mean, var, gamma, 1e-3, axis)
    for got, want in zip(reference.masked_backward(dy, x, mask, gamma, 1e-3, axis), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape, axis", [((5, 2), -1), ((2, 4, 3), -1), ((3, 2, 2, 3), 1)])
def test_gradient_is_the_derivative_of_the_forward(shape, axis):
    x, dy = RNG.normal(size=shape), RNG.normal(size=shape)
    gamma, beta = RNG.uniform(0.5, 1.5, shape[axis]), RNG.normal(size=shape[axis])
    positions = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    mask = RNG.random(positions) < 0.6
    mask.flat[0] = mask.flat[-1] = True
    dx, dgamma, dbeta = reference.masked_backward(dy, x, mask, gamma, 1e-2, axis)
    loss = lambda x, g, b: np.sum(_forward(x, mask, g, b, 1e-2, axis) * dy)  # noqa: E731
    h = 1e-6
    for index in np.ndindex(shape):
        e = np.zeros(shape)
        e[index] = h
        assert dx[index] == pytest.approx((loss(x + e, gamma, beta) - loss(x - e, gamma, beta)) / (2 * h), abs=1e-6)
    for c in range(shape[axis]):
        e = np.zeros(shape[axis])
        e[c] = h
        assert dgamma[c] == pytest.approx((loss(x, gamma + e, beta) - loss(x, gamma - e, beta)) / (2 * h), abs=1e-6)
        assert dbeta[c] == pytest.approx((loss(x, gamma, beta + e) - loss(x, gamma, beta - e)) / (2 * h), abs=1e-6)


def test_a_mask_of_the_wrong_shape_or_marking_nothing_is_refused():
    x = RNG.normal(size=(2, 3, 4))
    with pytest.raises(ValueError, match="must mark the positions"):
        reference.masked_statistics(x, np.ones((3, 4), dtype=bool), channel_axis=-1)
    with pytest.raises(ValueError, match="marks no position"):
        reference.masked_statistics(x, np.zeros((2, 3), dtype=bool), channel_axis=-1)
