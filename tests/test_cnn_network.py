"""The CNN operator's float64 reference network (``conformance/operators/cnn/``): its analytic gradients by
finite differences in random directions (JAX's ``check_grads`` idea), its stages against direct loops, its
running state against the BatchNorm reference, the porting of its weights to a channels-last layout, and
the tolerance model's bounds: they cover float32's rounding of the network and reject a wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from conformance.core.dtypes import round_to
from conformance.operators.cnn import CNN
from conformance.operators.cnn.cases import NetworkCase
from conformance.operators.cnn.network import Network, convolve, input_gradient, kernel_gradient, patches, pool
from conformance.operators.cnn.spec import PARAMETERS, from_channels_last, to_channels_last
from conformance.operators.cnn.tolerances import NetworkTolerance
from conformance.transforms import conv_kinds
from reference import CONVENTIONS, TORCH

SMALL = NetworkCase((3, 3, 8, 12), dtype="float64")


def _network(case: NetworkCase, convention=TORCH) -> Network:
    net = Network(case.spec(convention), convention)
    for name, value in case.initial_state(convention).items():
        net.set(name, value)
    return net


def _loss(net: Network, x: np.ndarray, dy: np.ndarray, training: bool) -> float:
    return float(np.sum(net.forward(x, training) * dy))


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("convention", ["torch", "keras"])
def test_gradients_match_finite_differences(training: bool, convention: str, rng) -> None:
    """``<gradient, v>`` against the central difference of ``sum(logits * dy)`` along a random ``v``, for
    the input and each parameter (h = 1e-6: truncation ~h**2, rounding ~1e-16 / h, far below 1e-6)."""
    conv = CONVENTIONS[convention]
    net, x, dy = _network(SMALL, conv), SMALL.batches()[0].astype(np.float64), SMALL.cotangent()
    net.forward(x, training)
    dx, grads = net.backward(dy)
    h = 1e-6
    for name in ("x", *PARAMETERS):
        value = x if name == "x" else net.get(name)
        v = rng.standard_normal(np.shape(value))
        analytic = float(np.sum((dx if name == "x" else grads[name]) * v))
        sides = []
        for sign in (1, -1):
            moved = _network(SMALL, conv)
            if name == "x":
                sides.append(_loss(moved, x + sign * h * v, dy, training))
            else:
                moved.set(name, value + sign * h * v)
                sides.append(_loss(moved, x, dy, training))
        numeric = (sides[0] - sides[1]) / (2 * h)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (name, numeric, analytic)


def test_stages_match_direct_loops(rng) -> None:
    a, kernel = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((4, 3, 3, 3))
    padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    direct = np.zeros((2, 4, 5, 4))
    for i in range(5):
        for j in range(4):
            direct[:, :, i, j] = np.einsum("ncij,ocij->no", padded[:, :, i:i + 3, j:j + 3], kernel)
    assert np.allclose(convolve(patches(a), kernel), direct, rtol=1e-13, atol=1e-13)
    dz = rng.standard_normal(direct.shape)
    # The backward products are the convolution's adjoints: <conv(a), dz> = <a, conv^T(dz)> = <W, dW>.
    inner = np.sum(direct * dz)
    assert np.isclose(np.sum(a * input_gradient(dz, kernel)), inner, rtol=1e-12)
    assert np.isclose(np.sum(kernel.reshape(4, -1) * kernel_gradient(dz, patches(a))), inner, rtol=1e-12)
    b = rng.standard_normal((2, 3, 4, 6))
    pooled = np.array([[[[b[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max() for j in range(3)] for i in range(2)]
                        for c in range(3)] for n in range(2)])
    assert np.array_equal(pool(b)[0], pooled)


@pytest.mark.parametrize("convention", ["torch", "keras"])
def test_running_state_follows_the_convention(convention: str) -> None:
    """A training step updates each block's running state as the BatchNorm reference's convention says,
    from that block's convolution output."""
    conv = CONVENTIONS[convention]
    case = SMALL.with_(steps=1)
    net = _network(case, conv)
    start = {f: net.get(f) for f in ("bn1_running_mean", "bn1_running_var")}
    net.forward(case.batches()[0], training=True)
    z = net.trace[0].z
    mean, var = reference.batch_statistics(z, 1)
    n = z.size // z.shape[1]
    w = case.new_batch_weight
    stored = var * n / (n - conv.running_var_ddof)  # PyTorch's unbiased, Keras' biased
    assert np.allclose(net.get("bn1_running_mean"), (1 - w) * start["bn1_running_mean"] + w * mean, rtol=1e-14)
    assert np.allclose(net.get("bn1_running_var"), (1 - w) * start["bn1_running_var"] + w * stored, rtol=1e-14)


def test_classifier_port_gives_the_same_logits(rng) -> None:
    """The porting recipe: features flattened channels last, multiplied by the ported classifier, are the
    logits of the features flattened channels first by the original; the layouts round-trip."""
    case = NetworkCase((2, 3, 16, 24))
    spec = case.spec(TORCH)
    weight = rng.standard_normal((10, spec.features))
    features = rng.standard_normal((2, 32, 4, 6))
    ported = to_channels_last("fc_weight", weight, spec)
    assert np.allclose(features.transpose(0, 2, 3, 1).reshape(2, -1) @ ported, features.reshape(2, -1) @ weight.T)
    for name in PARAMETERS:
        value = rng.standard_normal(np.shape(case.initial_state(TORCH)[name]))
        assert np.array_equal(from_channels_last(name, to_channels_last(name, value, spec), spec), value)
    # Transposing instead of permuting the classifier's inputs (the classic bug) changes the logits.
    wrong = weight.T
    assert not np.allclose(features.transpose(0, 2, 3, 1).reshape(2, -1) @ wrong, features.reshape(2, -1) @ weight.T)


def _float32_network(net: Network, x: np.ndarray, training: bool) -> np.ndarray:
    """The same network with every stage's result rounded to float32 (a float32 framework, coarsely)."""
    f32 = lambda a: np.asarray(a, np.float32).astype(np.float64)  # noqa: E731
    a = f32(x)
    for index, bn in enumerate(net.bn):
        z = f32(convolve(patches(a), f32(net.weights[f"conv{index + 1}"])))
        a = pool(np.maximum(f32(bn.forward(z, training)), 0))[0]
    return f32(f32(a.reshape(a.shape[0], -1)) @ f32(net.weights["fc_weight"]).T + f32(net.weights["fc_bias"]))


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_tolerances_cover_float32_and_reject_a_wrong_network(training: bool) -> None:
    case = CNN.cases("training_output")[0][1]
    assert case.dtype == "float32"
    x = case.batches()[0]
    exact = _network(case)
    y = exact.forward(x, training)
    tolerance = NetworkTolerance(exact, "float32").forward(training)
    emulated = _float32_network(_network(case), x, training)
    assert np.max(np.abs(emulated - y) / tolerance) < 1
    assert np.all(tolerance < 1e-3 * np.max(np.abs(y)))  # not vacuous
    # A classifier with its inputs transposed instead of permuted is far outside.
    wrong = _network(case)
    wrong.set("fc_weight", exact.get("fc_weight").reshape(10, 32, 8, 8).transpose(0, 1, 3, 2).reshape(10, -1))
    assert np.max(np.abs(wrong.forward(x, training) - y) / tolerance) > 100


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_tolerances_cover_float32_sums_and_reject_a_wrong_fold(dtype: str) -> None:
    """A network in half precision whose sums run in float32 (each stage's result rounded to the dtype) is
    within its bounds, which are not vacuous: a running variance 30% off, folded, is outside them."""
    half = lambda a: round_to(np.asarray(a, np.float64), dtype).astype(np.float64)  # noqa: E731
    case = CNN.cases("inference_output")[0][1]
    exact, x = _network(case), half(case.batches()[0])
    for name, value in exact.state.items():  # the state as a half-precision layer holds it (counters aside)
        exact.set(name, value if np.ndim(value) == 0 else half(value))
    y = exact.forward(x, False)
    tolerance = NetworkTolerance(exact, dtype).forward(False)
    a = x
    for index, bn in enumerate(exact.bn):
        a = pool(np.maximum(half(bn.forward(half(convolve(patches(a), exact.get(f"conv{index + 1}"))), False)), 0))[0]
    emulated = half(a.reshape(a.shape[0], -1) @ exact.get("fc_weight").T + exact.get("fc_bias"))
    assert np.max(np.abs(emulated - y) / tolerance) < 1
    wrong = _network(case)
    for name, value in exact.state.items():
        wrong.set(name, value * 1.3 if name.endswith("running_var") else value)
    assert np.max(np.abs(wrong.forward(x, False) - y) / tolerance) > 1


@pytest.mark.parametrize("kind", list(conv_kinds.KINDS))
def test_each_convolution_kind_is_a_dense_one(kind: str, rng) -> None:
    """A grouped or depthwise kernel is the dense one zero outside its blocks, and a transposed convolution
    (stride 1, padding 1, by its definition: every input spreads its kernel over the output) the dense one
    with the kernel transposed and flipped: the reference network computes each with its dense kernel."""
    dense = rng.standard_normal((32, 16, 3, 3))
    weight = conv_kinds.to_kind(dense, kind)
    held = conv_kinds.to_dense(weight, kind)
    assert np.array_equal(conv_kinds.to_kind(held, kind), weight)
    x = rng.standard_normal((2, 16, 5, 6))
    groups, transposed = conv_kinds.KINDS[kind]
    y = np.zeros((2, 32, 5 + 2, 6 + 2))  # padded by one on each side, cut below
    for a in range(3):
        for b in range(3):
            if transposed:  # y[p + a - 1] += x[p] W[:, :, a, b]
                y[:, :, a:a + 5, b:b + 6] += np.einsum("nihw,io->nohw", x, weight[:, :, a, b])
                continue
            ins, outs = 16 // groups, 32 // groups  # y[p] += x[p + a - 1] W[:, :, a, b] within each group
            for g in range(groups):
                y[:, g * outs:(g + 1) * outs, 2 - a:7 - a, 2 - b:8 - b] += np.einsum(
                    "nihw,oi->nohw", x[:, g * ins:(g + 1) * ins], weight[g * outs:(g + 1) * outs, :, a, b])
    assert np.allclose(convolve(patches(x), held), y[:, :, 1:-1, 1:-1])
