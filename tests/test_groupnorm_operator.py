"""GroupNorm's operator record: its tolerance model accepts a correct float32 or float16 computation and
rejects the bugs of the issue's list (a wrong eps, wrong groups, the wrong channel axis, scale and offset per
group where they are per channel, statistics accumulated in half precision); its cases and spec."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from conformance.core.comparison import compare
from conformance.core.state import State
from conformance.operators.builtin import OPERATORS
from conformance.operators.groupnorm import GROUPNORM, GroupNormCase
from conformance.operators.groupnorm.cases import LARGE, layout_cases

CONVENTION = reference.GROUPNORM_CONVENTIONS["torch_groupnorm"]


def _side(case: GroupNormCase, convention=CONVENTION):
    side = GROUPNORM.reference(case, convention, case.spec(convention))
    state = State(**case.initial_state(convention))
    side.assign(state)
    return side, state


def _in_dtype(x: np.ndarray, gamma, beta, eps: float, groups: int, channel_axis: int, dtype, acc=None):
    """GroupNorm computed in ``dtype`` throughout (statistics in ``acc``), as a framework would."""
    acc = acc or dtype
    xa = np.moveaxis(x, channel_axis, 1).astype(acc)
    grouped = xa.reshape(xa.shape[0], groups, -1)
    mu = grouped.mean(axis=2, keepdims=True, dtype=acc)
    var = ((grouped - mu) ** 2).mean(axis=2, keepdims=True, dtype=acc)
    xhat = ((grouped - mu) / np.sqrt(var + acc(eps))).reshape(xa.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = xhat * gamma.astype(acc).reshape(shape) + beta.astype(acc).reshape(shape)
    return np.moveaxis(y, 1, channel_axis).astype(dtype)


FLOAT32_CASES = layout_cases(("float32",))


def _y(case, **changes):
    """The reference's expected y and a float32 computation with ``changes`` to its settings."""
    side, state = _side(case)
    x = case.batches()[0]
    settings = {"eps": case.eps, "groups": case.groups, "channel_axis": case.channel_axis} | changes
    return side.forward(x, training=True)["y"], _in_dtype(x, state["gamma"], state["beta"], dtype=np.float32,
                                                           **settings)


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.id)
def test_a_float32_computation_passes(case):
    want, got = _y(case)
    assert want.judge("y", got).passed


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.id)
def test_a_wrong_eps_fails(case):
    want, got = _y(case, eps=10 * case.eps)
    assert not want.judge("y", got).passed


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.id)
def test_other_groups_fail(case):
    """InstanceNorm where GroupNorm was meant, or one group fewer or more: other statistics."""
    other = case.num_channels if case.groups != case.num_channels else 1
    want, got = _y(case, groups=other)
    assert not want.judge("y", got).passed


@pytest.mark.parametrize("case", [c for c in FLOAT32_CASES if 1 < c.groups < c.num_channels], ids=lambda c: c.id)
def test_groups_of_strided_channels_fail(case):
    """Group g holding channels g, g + G, ... (a reshape to (C/G, G) instead of (G, C/G)) is another grouping."""
    side, state = _side(case)
    x = case.batches()[0]
    c, g = case.num_channels, case.groups
    order = np.arange(c).reshape(c // g, g).T.ravel()  # channels of each strided group, made consecutive
    undo = np.argsort(order)
    moved = np.take(x, order, axis=case.channel_axis)
    got = _in_dtype(moved, state["gamma"][order], state["beta"][order], case.eps, g, case.channel_axis, np.float32)
    assert not side.forward(x, training=True)["y"].judge("y", np.take(got, undo, axis=case.channel_axis)).passed


def test_the_wrong_channel_axis_fails():
    """Channels-last data normalized as if its channels were first."""
    case = GroupNormCase((2, 6, 3, 6), 3, -1)
    want, got = _y(case)
    _, wrong = _y(case, channel_axis=1)
    assert want.judge("y", got).passed and not want.judge("y", wrong).passed


@pytest.mark.parametrize(("shape", "groups", "channel_axis"), LARGE)
def test_half_precision_statistics_fail_at_production_size(shape, groups, channel_axis):
    """float16 statistics of production-scale data: the sum overflows or loses the mean; float32 ones pass."""
    case = GroupNormCase(shape, groups, channel_axis, "float16", data="large")
    side, state = _side(case)
    x = case.batches()[0]
    want = side.forward(x, training=True)["y"]
    args = (state["gamma"], state["beta"], case.eps, groups, channel_axis, np.float16)
    assert want.judge("y", _in_dtype(x, *args, acc=np.float32)).passed
    with np.errstate(over="ignore", invalid="ignore"):
        assert not want.judge("y", _in_dtype(x, *args)).passed


def test_gradient_bounds_accept_float32_and_reject_a_missing_term():
    """dx and dgamma computed in float32 pass; dropping dx's xhat * mean(g xhat) term fails, as does a dgamma
    summed per group instead of per channel."""
    case = GroupNormCase((2, 6, 3, 4), 3)
    side, state = _side(case)
    x, dy = case.batches()[0], case.cotangent()
    want = side.forward_backward(x, dy, training=True)
    x32 = x.astype(np.float32).reshape(2, 3, -1)
    g = (dy * state["gamma"].reshape(1, -1, 1, 1)).astype(np.float32).reshape(2, 3, -1)
    mu, var = x32.mean(-1, keepdims=True), x32.var(-1, keepdims=True)
    r = 1 / np.sqrt(var + np.float32(case.eps))
    xhat = (x32 - mu) * r
    good = r * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    assert want["dx"].judge("dx", good.reshape(x.shape)).passed
    assert not want["dx"].judge("dx", (r * (g - g.mean(-1, keepdims=True))).reshape(x.shape)).passed
    dgamma = (dy.astype(np.float32) * xhat.reshape(x.shape)).sum(axis=(0, 2, 3))
    assert want["dgamma"].judge("dgamma", dgamma).passed
    assert not want["dgamma"].judge("dgamma", np.repeat(dgamma.reshape(3, 2).sum(axis=1) / 2, 2)).passed


def test_second_order_bounds_accept_float32_inputs():
    case = GroupNormCase((2, 6, 5), 3, dtype="float32")
    side, state = _side(case)
    x, dy, direction = case.batches()[0], case.cotangent(), case.direction()
    expected = side.double_backward(x, dy, direction)
    got = reference.group_norm_hvp(dy.astype(np.float64), x.astype(np.float64), np.float32(state["gamma"]),
                                   np.float32(case.eps), direction["vx"], np.float32(direction["vgamma"]), 3)
    for name, value in zip(("hvp_x", "hvp_gamma"), got):
        assert expected[name].judge(name, value).passed
    perturbed = got[0] * (1 + 1e-3)
    assert not compare("hvp_x", perturbed, expected["hvp_x"].value, expected["hvp_x"].tolerance).passed


def test_parameters_per_group_repeat_over_their_channels():
    """ONNX opset 18's scale per group: the layer's two gammas act as six per-channel ones; its gradient is the
    per-channel one summed over each group."""
    convention = reference.GROUPNORM_CONVENTIONS["onnx_groupnorm_opset18"]
    case = GroupNormCase((2, 6, 5), 2, dtype="float64")
    side, state = _side(case, convention)
    assert state["gamma"].shape == (2,)
    x, dy = case.batches()[0], case.cotangent()
    want = side.forward_backward(x, dy, training=True)
    gamma, beta = np.repeat(state["gamma"], 3), np.repeat(state["beta"], 3)
    assert want["y"].judge("y", reference.group_norm(x, gamma, beta, case.eps, 2)).passed
    dgamma = reference.group_norm_backward(dy, x, gamma, case.eps, 2)[1]
    assert want["dgamma"].judge("dgamma", dgamma.reshape(2, 3).sum(axis=1)).passed


def test_the_record_is_built_in_and_ids_are_unique():
    assert OPERATORS["groupnorm"] is GROUPNORM
    for check in GROUPNORM.grids:
        ids = [i for i, _ in GROUPNORM.cases(check)]
        assert len(ids) == len(set(ids)), check


def test_spec_names_what_a_layer_may_lack():
    spec = GroupNormCase((2, 6, 5), 3, affine=False).spec(CONVENTION)
    labels = {value for capability, value, _ in spec.requirements() if capability == "features"}
    assert labels == {"grouped", "scale_false"} and not spec.instance
    assert GroupNormCase((2, 6, 5), 6).spec(CONVENTION).instance


@pytest.mark.parametrize("changes", [{"groups": 4}, {"channel_axis": 2}, {"shape": (6,)}])
def test_bad_cases_raise(changes):
    with pytest.raises(ValueError):
        GroupNormCase(**({"shape": (2, 6, 5), "groups": 3} | changes))
