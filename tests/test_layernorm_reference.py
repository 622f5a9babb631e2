"""LayerNorm's reference: the fast functions against the textbook ones (Hypothesis-drawn shapes, axes, eps
placements and values), the first derivative by central differences of the forward, the second by central
differences of the first, and the convention records' validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference import REQUIRED, LayerNormConvention, layernorm_textbook
from reference.engine import BLOCK

PLACEMENTS = ("variance", "std")


def _data(shape, begin_axis, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0) + rng.uniform(-2, 2)
    normalized = shape[begin_axis % len(shape):]
    return x, rng.uniform(0.5, 1.5, normalized), rng.uniform(-0.5, 0.5, normalized), rng.standard_normal(shape)


@settings(max_examples=40, deadline=None)
@given(rank=st.integers(1, 4), depth=st.integers(1, 3), placement=st.sampled_from(PLACEMENTS),
       eps=st.sampled_from([1e-6, 1e-3, 0.5]), seed=st.integers(0, 2**16), affine=st.booleans(),
       centered=st.booleans())
def test_fast_matches_textbook(rank, depth, placement, eps, seed, affine, centered):
    depth = min(depth, rank)
    shape = tuple(np.random.default_rng(seed).integers(1, 5, rank))
    x, gamma, beta, dy = _data(shape, -depth, seed)
    gamma, beta = (gamma, beta) if affine else (None, None)
    want = layernorm_textbook.forward(x, gamma, beta, eps, -depth, placement, centered)
    got = reference.layer_norm(x, gamma, beta, eps, -depth, placement, centered)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(reference.layer_norm_backward(dy, x, gamma, eps, -depth, placement, centered),
                    layernorm_textbook.backward(dy, x, gamma, eps, -depth, placement, centered)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


def test_blocks_do_not_change_results():
    """More rows than one block holds: the blocked evaluation equals the textbook's whole-array one."""
    x, gamma, beta, dy = _data((BLOCK // 64 + 3, 64), -1)
    want = layernorm_textbook.forward(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(reference.layer_norm(x, gamma, beta, 1e-5), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.layer_norm_backward(dy, x, gamma)[1],
                               layernorm_textbook.backward(dy, x, gamma, 1e-5)[1], rtol=1e-10)


def _numeric_gradient(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        step = np.zeros_like(a)
        step[i] = h
        out[i] = (f(a + step) - f(a - step)) / (2 * h)
    return out


@pytest.mark.parametrize("centered", [True, False], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(("shape", "begin_axis"), [((3, 5), -1), ((2, 3, 4), -2), ((2, 2, 3), -1)])
def test_backward_by_finite_differences(shape, begin_axis, placement, centered):
    x, gamma, beta, dy = _data(shape, begin_axis, 1)
    loss = lambda x_, g_, b_: float(  # noqa: E731
        (reference.layer_norm(x_, g_, b_, 1e-3, begin_axis, placement, centered) * dy).sum())
    dx, dgamma, dbeta = reference.layer_norm_backward(dy, x, gamma, 1e-3, begin_axis, placement, centered)
    np.testing.assert_allclose(dx, _numeric_gradient(lambda a: loss(a, gamma, beta), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, _numeric_gradient(lambda a: loss(x, a, beta), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, _numeric_gradient(lambda a: loss(x, gamma, a), beta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("centered", [True, False], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(("shape", "begin_axis"), [((3, 5), -1), ((2, 3, 4), -2)])
def test_hvp_by_finite_differences(shape, begin_axis, placement, centered):
    """The directional derivative of the backward along (vx, vgamma), by central differences in t."""
    x, gamma, _, dy = _data(shape, begin_axis, 2)
    rng = np.random.default_rng(3)
    vx, vgamma = rng.standard_normal(x.shape), rng.standard_normal(gamma.shape)
    h = 1e-5
    args = (begin_axis, placement, centered)
    plus = reference.layer_norm_backward(dy, x + h * vx, gamma + h * vgamma, 1e-3, *args)
    minus = reference.layer_norm_backward(dy, x - h * vx, gamma - h * vgamma, 1e-3, *args)
    got = reference.layer_norm_hvp(dy, x, gamma, 1e-3, vx, vgamma, *args)
    for g, p, m in zip(got, plus, minus):
        np.testing.assert_allclose(g, (p - m) / (2 * h), rtol=1e-5, atol=1e-7)


def test_hessian_is_symmetric():
    """<w, H v> = <v, H w> over (x, gamma): a wrong cross term between x and gamma breaks it."""
    x, gamma, _, dy = _data((3, 4), -1, 4)
    rng = np.random.default_rng(5)
    v, w = [(rng.standard_normal(x.shape), rng.standard_normal(gamma.shape)) for _ in range(2)]
    hv = reference.layer_norm_hvp(dy, x, gamma, 1e-3, *v)
    hw = reference.layer_norm_hvp(dy, x, gamma, 1e-3, *w)
    assert np.isclose((w[0] * hv[0]).sum() + (w[1] * hv[1]).sum(), (v[0] * hw[0]).sum() + (v[1] * hw[1]).sum())


def test_closed_form():
    """Two values per row: xhat = -+1 * sqrt(var / (var + eps)) for either placement's sigma."""
    x = np.array([[1.0, 3.0], [-2.0, 2.0]])
    y = reference.layer_norm(x, eps=1.0)
    np.testing.assert_allclose(y, [[-1 / np.sqrt(2), 1 / np.sqrt(2)], [-2 / np.sqrt(5), 2 / np.sqrt(5)]])
    np.testing.assert_allclose(reference.layer_norm(x, eps=1.0, eps_placement="std"), [[-0.5, 0.5], [-2 / 3, 2 / 3]])


def test_rmsnorm_closed_form():
    """Not centered: each row divided by its root mean square; an offset is kept, not removed."""
    x = np.array([[3.0, 4.0], [1.0, 1.0]])
    rms = np.sqrt([[12.5], [1.0]])
    np.testing.assert_allclose(reference.layer_norm(x, eps=0.0, centered=False), x / rms)
    np.testing.assert_allclose(reference.layer_norm_statistics(x, centered=False), ([0.0, 0.0], [12.5, 1.0]))


@pytest.mark.parametrize(("call", "error"), [
    (lambda: reference.layer_norm(np.ones((2, 3), np.int32)), TypeError),
    (lambda: reference.layer_norm(np.ones((2, 3)), np.ones(4)), ValueError),
    (lambda: reference.layer_norm(np.ones(3), begin_axis=-2), ValueError),
    (lambda: reference.layer_norm(np.ones((2, 3)), begin_axis=1), ValueError),
    (lambda: reference.layer_norm_backward(np.ones((1, 3)), np.ones((2, 3))), ValueError),
])
def test_bad_arguments_raise(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.parametrize("changes", [{"name": "not an id"}, {"default_eps": 0.0}, {"default_eps": "machine"},
                                     {"eps_placement": "outside"}, {"default_axes": 1}, {"default_affine": 1},
                                     {"centered": 0}])
def test_convention_validation(changes):
    fields = {"name": "mine", "default_eps": 1e-5} | changes
    with pytest.raises((ValueError, TypeError)):
        LayerNormConvention(**fields)


def test_rmsnorm_conventions_do_not_center_and_have_no_offset():
    rms = [c for c in reference.LAYERNORM_CONVENTIONS.values() if not c.centered]
    assert {c.name for c in rms} == {"torch_rmsnorm", "keras_rmsnorm", "flax_rmsnorm", "onnx_rmsnorm"}
    assert not any(c.default_bias for c in rms)
    assert reference.LAYERNORM_CONVENTIONS["torch_rmsnorm"].default_eps == reference.DTYPE_EPSILON


def test_required_defaults_read_as_required():
    conv = reference.LAYERNORM_CONVENTIONS["torch_layernorm"]
    assert conv.defaults()["axes"] is REQUIRED and conv.as_dict()["default_axes"] == "required"
