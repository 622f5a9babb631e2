"""LayerNorm's operator record: its tolerance model accepts a correct float32 or float16 computation and
rejects the bugs of the issue's list (a wrong eps, a wrong set of normalized axes, eps outside the root,
statistics accumulated in half precision); its cases and spec."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from conformance.core.comparison import compare
from conformance.core.state import State
from conformance.operators.builtin import OPERATORS
from conformance.operators.layernorm import LAYERNORM, LayerNormCase
from conformance.operators.layernorm.cases import LARGE, layout_cases

CONVENTION = reference.LAYERNORM_CONVENTIONS["torch_layernorm"]


def _side(case: LayerNormCase):
    side = LAYERNORM.reference(case, CONVENTION, case.spec(CONVENTION))
    state = State(**case.initial_state(CONVENTION))
    side.assign(state)
    return side, state


def _in_dtype(x: np.ndarray, gamma, beta, eps: float, k: int, dtype, acc=None, eps_placement="variance"):
    """LayerNorm computed in ``dtype`` throughout (statistics in ``acc``), as a framework would."""
    acc = acc or dtype
    axes = tuple(range(x.ndim - k, x.ndim))
    xa = x.astype(acc)
    mu = xa.mean(axis=axes, keepdims=True, dtype=acc)
    var = ((xa - mu) ** 2).mean(axis=axes, keepdims=True, dtype=acc)
    sigma = np.sqrt(var + acc(eps)) if eps_placement == "variance" else np.sqrt(var) + acc(eps)
    return ((xa - mu) / sigma * gamma.astype(acc) + beta.astype(acc)).astype(dtype)


FLOAT32_CASES = layout_cases(("float32",))


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.id)
def test_a_float32_computation_passes(case):
    side, state = _side(case)
    x = case.batches()[0]
    want = side.forward(x, training=True)["y"]
    got = _in_dtype(x, state["gamma"], state["beta"], case.eps, case.normalized_axes, np.float32)
    assert want.judge("y", got).passed


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.id)
def test_a_wrong_eps_fails(case):
    side, state = _side(case)
    x = case.batches()[0]
    got = _in_dtype(x, state["gamma"], state["beta"], 10 * case.eps, case.normalized_axes, np.float32)
    assert not side.forward(x, training=True)["y"].judge("y", got).passed


@pytest.mark.parametrize("case", [c for c in FLOAT32_CASES if c.normalized_axes > 1], ids=lambda c: c.id)
def test_normalizing_fewer_axes_fails(case):
    """Keras' axis=-1 where the model meant the last two: statistics per sub-row."""
    side, state = _side(case)
    x = case.batches()[0]
    got = _in_dtype(x, state["gamma"], state["beta"], case.eps, 1, np.float32)
    assert not side.forward(x, training=True)["y"].judge("y", got).passed


def test_eps_outside_the_root_fails_where_eps_matters():
    case = LayerNormCase((6, 8), eps=0.1)
    side, state = _side(case)
    x = case.batches()[0]
    got = _in_dtype(x, state["gamma"], state["beta"], case.eps, 1, np.float32, eps_placement="std")
    assert not side.forward(x, training=True)["y"].judge("y", got).passed


@pytest.mark.parametrize(("shape", "k"), LARGE)
def test_half_precision_statistics_fail_at_production_size(shape, k):
    """float16 statistics of production-scale data: the sum overflows or loses the mean; float32 ones pass."""
    case = LayerNormCase(shape, k, "float16", data="large")
    side, state = _side(case)
    x = case.batches()[0]
    want = side.forward(x, training=True)["y"]
    good = _in_dtype(x, state["gamma"], state["beta"], case.eps, k, np.float16, acc=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = _in_dtype(x, state["gamma"], state["beta"], case.eps, k, np.float16)
    assert want.judge("y", good).passed
    assert not want.judge("y", bad).passed


def test_gradient_bounds_accept_float32_and_reject_a_missing_term():
    """dx computed in float32 passes; dropping the xhat * mean(g xhat) term (a classic hand-written-backward
    bug) fails."""
    case = LayerNormCase((2, 3, 8))
    side, state = _side(case)
    x, dy = case.batches()[0], case.cotangent()
    want = side.forward_backward(x, dy, training=True)["dx"]
    x32, g = x.astype(np.float32), (dy * state["gamma"]).astype(np.float32)
    mu, var = x32.mean(-1, keepdims=True), x32.var(-1, keepdims=True)
    r = 1 / np.sqrt(var + np.float32(case.eps))
    xhat = (x32 - mu) * r
    good = r * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    assert want.judge("dx", good).passed
    assert not want.judge("dx", r * (g - g.mean(-1, keepdims=True))).passed


def test_second_order_bounds_accept_float32_inputs():
    case = LayerNormCase((2, 3, 8), dtype="float32")
    side, state = _side(case)
    x, dy, direction = case.batches()[0], case.cotangent(), case.direction()
    expected = side.double_backward(x, dy, direction)
    got = reference.layer_norm_hvp(dy.astype(np.float32).astype(np.float64), x.astype(np.float64),
                                   np.float32(state["gamma"]), np.float32(case.eps), direction["vx"],
                                   np.float32(direction["vgamma"]))
    for name, value in zip(("hvp_x", "hvp_gamma"), got):
        assert expected[name].judge(name, value).passed
    perturbed = got[0] * (1 + 1e-3)
    assert not compare("hvp_x", perturbed, expected["hvp_x"].value, expected["hvp_x"].tolerance).passed


def test_the_record_is_built_in_and_ids_are_unique():
    assert OPERATORS["layernorm"] is LAYERNORM
    for check in LAYERNORM.grids:
        ids = [i for i, _ in LAYERNORM.cases(check)]
        assert len(ids) == len(set(ids)), check


def test_spec_names_what_a_layer_may_lack():
    spec = LayerNormCase((2, 3, 4, 5), 2, affine=False, bias=True).spec(CONVENTION)
    labels = {value for capability, value, _ in spec.requirements() if capability == "features"}
    assert labels == {"scale_false", "multi_axis"} and spec.axes == (2, 3) and spec.normalized_shape == (4, 5)
