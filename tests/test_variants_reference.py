"""The variants' reference (:mod:`reference.variants`): their gradients by finite differences in float64, and
their forwards and running updates against closed forms and the plain BatchNorm they reduce to."""

import numpy as np
import pytest
from test_gradients import MAX_RELATIVE_ERROR, SHAPES, numerical_gradient, relative_error

import reference
from reference import backward_training, batch_statistics, forward_training
from reference import variants as v

EPS = 1e-3
LAYOUTS = [(shape, axis) for shape in SHAPES for axis in (1, -1)]


def _data(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[axis]
    x = rng.normal(size=shape) * rng.uniform(0.5, 2.0, c).reshape([-1 if a % len(shape) == axis % len(shape)
                                                                    else 1 for a in range(len(shape))])
    return rng, c, x, rng.normal(size=shape)


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
def test_corrected_gradients_by_finite_differences(shape, axis):
    """scale and shift (renorm's r and d, an adjustment's) are constants: the analytic gradients are the
    derivatives of sum(y * dy) with them held fixed."""
    rng, c, x, dy = _data(shape, axis)
    gamma, beta = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c), rng.normal(size=c)
    scale, shift = rng.uniform(0.5, 2.0, c), rng.normal(size=c)

    def loss(x, gamma, beta):
        return float(np.sum(v.corrected_forward_training(x, gamma, beta, EPS, scale, shift, axis)[0] * dy))

    _, mean, var = v.corrected_forward_training(x, gamma, beta, EPS, scale, shift, axis)
    analytic = v.corrected_backward_training(dy, x, mean, var, gamma, EPS, scale, shift, axis)
    for got, want in zip(analytic, numerical_gradient(loss, [x, gamma, beta])):
        assert relative_error(want, got) < MAX_RELATIVE_ERROR


def test_corrected_is_plain_batchnorm_scaled():
    """y = gamma (scale xhat + shift) + beta; dx is the plain dx times scale (renorm: dx scaled by r)."""
    rng, c, x, dy = _data((6, 3, 4), 1)
    gamma, beta = rng.uniform(0.5, 2.0, c), rng.normal(size=c)
    scale, shift = rng.uniform(0.5, 2.0, c), rng.normal(size=c)
    y, mean, var = v.corrected_forward_training(x, gamma, beta, EPS, scale, shift)
    xhat = forward_training(x, None, None, EPS)[0]
    np.testing.assert_allclose(y, gamma[:, None] * (scale[:, None] * xhat + shift[:, None]) + beta[:, None],
                               rtol=1e-13, atol=1e-13)
    dx = v.corrected_backward_training(dy, x, mean, var, gamma, EPS, scale, shift)[0]
    np.testing.assert_allclose(dx, scale[:, None] * backward_training(dy, x, mean, var, gamma, EPS)[0], rtol=1e-12)


def test_renorm_correction_closed_form_and_clipping():
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0])
    state = v.renorm_state_for(np.zeros(3), np.ones(3), EPS)
    r, d = v.renorm_correction(mean, var, EPS, state["renorm_mean"], state["renorm_stddev"])
    s = np.sqrt(1 + EPS)
    np.testing.assert_allclose(r, np.sqrt(var + EPS) / s, rtol=1e-15)
    np.testing.assert_allclose(d, mean / s, rtol=1e-15)
    r, d = v.renorm_correction(mean, var, EPS, state["renorm_mean"], state["renorm_stddev"],
                               rmin=0.8, rmax=1.2, dmax=0.5)
    np.testing.assert_array_equal(r, [1.2, 0.8, np.sqrt(1 + EPS) / s])
    np.testing.assert_array_equal(d, [0.5, -0.5, 0.5 / s])
    # renorm_stddev below sqrt(eps) divides by sqrt(eps)
    r, _ = v.renorm_correction(mean, var, EPS, np.zeros(3), np.zeros(3))
    np.testing.assert_allclose(r, np.sqrt(var + EPS) / np.sqrt(EPS), rtol=1e-15)


def test_renorm_with_matching_averages_is_plain_batchnorm():
    """Averages equal to the batch's statistics give r = 1, d = 0: the plain training output."""
    rng, c, x, _ = _data((8, 3), 1)
    mean, var = batch_statistics(x)
    state = v.renorm_state_for(mean, var, EPS)
    r, d = v.renorm_correction(mean, var, EPS, state["renorm_mean"], state["renorm_stddev"])
    np.testing.assert_allclose(r, 1.0, rtol=1e-15)
    np.testing.assert_allclose(d, 0.0, atol=1e-15)
    np.testing.assert_allclose(v.corrected_forward_training(x, None, None, EPS, r, d)[0],
                               forward_training(x, None, None, EPS)[0], rtol=1e-13, atol=1e-14)


def test_renorm_update_closed_form():
    state = v.renorm_state_for(np.array([0.5, -1.0]), np.array([2.0, 0.5]), EPS)
    mean, var, w, rw = np.array([1.0, 3.0]), np.array([0.25, 4.0]), 0.1, 0.3
    new = v.renorm_update(state, mean, var, EPS, w, rw)
    stddev = np.sqrt(var + EPS)
    moving = 0.9 * np.sqrt(state["running_var"] + EPS) + 0.1 * stddev
    np.testing.assert_allclose(new["running_mean"], 0.9 * state["running_mean"] + 0.1 * mean, rtol=1e-15)
    np.testing.assert_allclose(new["moving_stddev"], moving, rtol=1e-15)
    np.testing.assert_allclose(new["running_var"], moving**2 - EPS, rtol=1e-14)
    np.testing.assert_allclose(new["renorm_mean"], 0.7 * state["renorm_mean"] + 0.3 * mean, rtol=1e-15)
    np.testing.assert_allclose(new["renorm_stddev"], 0.7 * state["renorm_stddev"] + 0.3 * stddev, rtol=1e-15)
    # a batch whose statistics the averages already read changes nothing
    same = v.renorm_update(state, state["running_mean"], state["running_var"], EPS, w, rw)
    for name, value in state.items():
        np.testing.assert_allclose(same[name], value, rtol=1e-14)


def test_ghost_batches_interleave():
    """tf-keras' reshape (N,) -> (virtual_batch_size, N / virtual_batch_size): ghost batch j holds j, j + G, ..."""
    assert [g.tolist() for g in v.ghost_batches(8, 2)] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [g.tolist() for g in v.ghost_batches(6, 6)] == [[0, 1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="divide"):
        v.ghost_batches(6, 4)


@pytest.mark.parametrize(("shape", "axis"), [(s, a) for s, a in LAYOUTS if s[0] % 2 == 0])
def test_ghost_gradients_by_finite_differences(shape, axis):
    rng, c, x, dy = _data(shape, axis, seed=1)
    gamma, beta = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c), rng.normal(size=c)

    def loss(x, gamma, beta):
        return float(np.sum(v.ghost_forward_training(x, gamma, beta, EPS, 2, axis)[0] * dy))

    analytic = v.ghost_backward_training(dy, x, gamma, EPS, 2, axis)
    for got, want in zip(analytic, numerical_gradient(loss, [x, gamma, beta])):
        assert relative_error(want, got) < MAX_RELATIVE_ERROR


def test_ghost_batches_normalize_separately():
    """Each ghost batch is a plain training forward of its own; one ghost batch of the whole batch is plain
    BatchNorm; the running averages take in the mean of the ghost means (the batch mean) and of their
    variances (less than the batch variance by the spread of the ghost means)."""
    rng, c, x, _ = _data((8, 3, 2), 1, seed=2)
    y, mean, var = v.ghost_forward_training(x, None, None, EPS, 2)
    for ghost in v.ghost_batches(8, 2):
        np.testing.assert_allclose(y[ghost], forward_training(x[ghost], None, None, EPS)[0], rtol=1e-13)
    batch_mean, batch_var = batch_statistics(x)
    np.testing.assert_allclose(mean, batch_mean, rtol=1e-13)
    means = np.array([batch_statistics(x[g])[0] for g in v.ghost_batches(8, 2)])
    np.testing.assert_allclose(var, batch_var - means.var(axis=0), rtol=1e-12)
    whole = v.ghost_forward_training(x, None, None, EPS, 8)
    for got, want in zip(whole, forward_training(x, None, None, EPS)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_exported():
    assert reference.renorm_update is v.renorm_update and "ghost_batches" in reference.__all__
