"""GroupNorm's reference: the fast functions against the textbook ones (Hypothesis-drawn shapes, groups,
channel positions and values), the first derivative by central differences of the forward, the second by
central differences of the first, InstanceNorm and one group as their closed forms, and the records."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference import INSTANCE, REQUIRED, GroupNormConvention, groupnorm_textbook


def _data(shape, channel_axis, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0) + rng.uniform(-2, 2)
    c = shape[channel_axis]
    return x, rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c), rng.standard_normal(shape)


@settings(max_examples=40, deadline=None)
@given(rank=st.integers(2, 5), groups=st.sampled_from([1, 2, 3, 6]), channel_axis=st.sampled_from([1, -1]),
       eps=st.sampled_from([1e-6, 1e-3, 0.5]), seed=st.integers(0, 2**16), affine=st.booleans())
def test_fast_matches_textbook(rank, groups, channel_axis, eps, seed, affine):
    shape = list(np.random.default_rng(seed).integers(1, 4, rank))
    shape[channel_axis] = 6
    x, gamma, beta, dy = _data(tuple(shape), channel_axis, seed)
    gamma, beta = (gamma, beta) if affine else (None, None)
    args = (eps, groups, channel_axis)
    np.testing.assert_allclose(reference.group_norm(x, gamma, beta, *args),
                               groupnorm_textbook.forward(x, gamma, beta, *args), rtol=1e-12, atol=1e-12)
    for got, want in zip(reference.group_norm_backward(dy, x, gamma, *args),
                         groupnorm_textbook.backward(dy, x, gamma, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _numeric_gradient(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        step = np.zeros_like(a)
        step[i] = h
        out[i] = (f(a + step) - f(a - step)) / (2 * h)
    return out


LAYOUTS = [((2, 4, 3), 2, 1), ((2, 3, 4), 4, -1), ((2, 4, 2, 2), 1, 1)]


@pytest.mark.parametrize(("shape", "groups", "channel_axis"), LAYOUTS)
def test_backward_by_finite_differences(shape, groups, channel_axis):
    x, gamma, beta, dy = _data(shape, channel_axis, 1)
    loss = lambda x_, g_, b_: float(  # noqa: E731
        (reference.group_norm(x_, g_, b_, 1e-3, groups, channel_axis) * dy).sum())
    dx, dgamma, dbeta = reference.group_norm_backward(dy, x, gamma, 1e-3, groups, channel_axis)
    np.testing.assert_allclose(dx, _numeric_gradient(lambda a: loss(a, gamma, beta), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, _numeric_gradient(lambda a: loss(x, a, beta), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, _numeric_gradient(lambda a: loss(x, gamma, a), beta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("shape", "groups", "channel_axis"), LAYOUTS)
def test_hvp_by_finite_differences(shape, groups, channel_axis):
    """The directional derivative of the backward along (vx, vgamma), by central differences in t."""
    x, gamma, _, dy = _data(shape, channel_axis, 2)
    rng = np.random.default_rng(3)
    vx, vgamma = rng.standard_normal(x.shape), rng.standard_normal(gamma.shape)
    h, args = 1e-5, (groups, channel_axis)
    plus = reference.group_norm_backward(dy, x + h * vx, gamma + h * vgamma, 1e-3, *args)
    minus = reference.group_norm_backward(dy, x - h * vx, gamma - h * vgamma, 1e-3, *args)
    for got, p, m in zip(reference.group_norm_hvp(dy, x, gamma, 1e-3, vx, vgamma, *args), plus, minus):
        np.testing.assert_allclose(got, (p - m) / (2 * h), rtol=1e-5, atol=1e-7)


def test_instance_and_one_group_closed_forms():
    """Groups = channels normalizes each (sample, channel) alone; one group normalizes each sample whole."""
    x = np.random.default_rng(4).standard_normal((3, 4, 5))
    per_channel = (x - x.mean(axis=2, keepdims=True)) / np.sqrt(x.var(axis=2, keepdims=True) + 0.1)
    np.testing.assert_allclose(reference.group_norm(x, eps=0.1, groups=4), per_channel, rtol=1e-12)
    whole = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 0.1)
    np.testing.assert_allclose(reference.group_norm(x, eps=0.1, groups=1), whole, rtol=1e-12)
    np.testing.assert_allclose(reference.group_norm_statistics(x, 2)[1],
                               x.reshape(3, 2, 10).var(axis=2), rtol=1e-12)


def test_channels_last_is_channels_first_transposed():
    x, gamma, beta, _ = _data((2, 6, 3, 2), 1, 5)
    last = np.moveaxis(x, 1, -1)
    np.testing.assert_allclose(reference.group_norm(last, gamma, beta, 1e-3, 3, -1),
                               np.moveaxis(reference.group_norm(x, gamma, beta, 1e-3, 3, 1), 1, -1), rtol=1e-12)


@pytest.mark.parametrize(("call", "error"), [
    (lambda: reference.group_norm(np.ones((2, 4, 3), np.int32), groups=2), TypeError),
    (lambda: reference.group_norm(np.ones((2, 4, 3)), groups=3), ValueError),
    (lambda: reference.group_norm(np.ones((2, 4, 3)), groups=0), ValueError),
    (lambda: reference.group_norm(np.ones(4), groups=1), ValueError),
    (lambda: reference.group_norm(np.ones((2, 4, 3)), np.ones(3), groups=2), ValueError),
    (lambda: reference.group_norm(np.ones((2, 4, 3)), groups=2, channel_axis=2), ValueError),
    (lambda: reference.group_norm_backward(np.ones((1, 4, 3)), np.ones((2, 4, 3)), groups=2), ValueError),
])
def test_bad_arguments_raise(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.parametrize("changes", [{"name": "not an id"}, {"default_eps": 0.0}, {"default_groups": 0},
                                     {"default_groups": "all"}, {"channel_axis": 2}, {"default_affine": 1},
                                     {"parameter_shape": "element"}])
def test_convention_validation(changes):
    fields = {"name": "mine", "default_eps": 1e-5, "default_groups": 2} | changes
    with pytest.raises((ValueError, TypeError)):
        GroupNormConvention(**fields)


def test_instance_conventions():
    instance = {c.name for c in reference.GROUPNORM_CONVENTIONS.values() if c.instance}
    assert instance == {"torch_instancenorm", "flax_instancenorm", "onnx_instancenorm"}
    conv = reference.GROUPNORM_CONVENTIONS["torch_groupnorm"]
    assert conv.defaults()["groups"] is REQUIRED and conv.as_dict()["default_groups"] == "required"
    assert reference.GROUPNORM_CONVENTIONS["torch_instancenorm"].default_groups == INSTANCE


def test_an_input_without_samples_gives_empty_outputs_and_zero_gradients():
    x = np.zeros((0, 6, 5))
    assert reference.group_norm(x, np.ones(6), np.zeros(6), 1e-5, 3).shape == (0, 6, 5)
    dx, dgamma, dbeta = reference.group_norm_backward(x, x, np.ones(6), 1e-5, 3)
    assert dx.shape == (0, 6, 5) and not dgamma.any() and not dbeta.any() and dgamma.shape == (6,)
    assert groupnorm_textbook.forward(x, None, None, 1e-5, 3).shape == (0, 6, 5)
