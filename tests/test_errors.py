"""Bad input raises a clear error and leaves the layer exactly as it was."""

import numpy as np
import pytest

from reference import REQUIRED, BatchNorm, Convention, initial_running_state, update_running_state

C = 3


def good_data(layer):
    """A valid (x, dy) for ``layer``: 4 values per channel, channels last (axis 1 == -1 at rank 2); rank
    6 for a layer whose channel axis is 5."""
    rank = 6 if layer.channel_axis == 5 else 2
    shape = (4,) + (1,) * (rank - 2) + (C,)
    x = (np.arange(12.0) ** 1.5).reshape(shape)
    return x, np.linspace(-1.0, 2.0, 12).reshape(shape)


def used_layer(**kwargs):
    """A layer with non-default state: two training batches, a backward, non-trivial gamma/beta."""
    layer = BatchNorm(C, **kwargs)
    layer.gamma, layer.beta = [0.5, -2.0, 3.0], [1.0, 0.0, -1.0]
    x, dy = good_data(layer)
    layer.forward(x * 2.0 + 1.0, training=True)
    layer.forward(x, training=True)
    layer.backward(dy)
    return layer


def state(layer):
    return {
        **layer.state,  # every field of the convention's state: parameters, running averages, a counter
        "dgamma": layer.dgamma,
        "dbeta": layer.dbeta,
        # What backward differentiates: it must still be the last successful forward.
        "backward": layer.backward(good_data(layer)[1]),
    }


def assert_same_state(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if before[key] is None or after[key] is None:
            assert before[key] is after[key] is None, key  # None must stay None
        else:
            assert np.array_equal(before[key], after[key]), key  # bitwise-equal values


def forward(x, training=True):
    return lambda layer: layer.forward(x, training=training)


def forward_as(dtype):
    return lambda layer: layer.forward(good_data(layer)[0].astype(dtype))


def assign(name, value):
    return lambda layer: setattr(layer, name, value)


# Each case: the layer's constructor arguments, the one bad action, and the error it must raise.
LAYER_ERRORS = [
    pytest.param({}, forward(np.ones(C)), ValueError, r"rank >= 2", id="rank-1"),
    pytest.param({}, forward(np.float64(1.0)), ValueError, r"rank >= 2", id="rank-0"),
    pytest.param({}, forward(np.ones((4, C + 1))), ValueError, r"expected 3 channels", id="channel-mismatch"),
    pytest.param({}, forward_as(np.int64), TypeError, r"real floating dtype, got int64", id="int-dtype"),
    pytest.param({}, forward_as(bool), TypeError, r"real floating dtype, got bool", id="bool-dtype"),
    pytest.param({}, forward_as(complex), TypeError, r"real floating dtype, got complex", id="complex-dtype"),
    pytest.param({}, forward_as(object), TypeError, r"real floating dtype, got object", id="object-dtype"),
    pytest.param({}, forward_as(str), TypeError, r"real floating dtype, got <U", id="string-dtype"),
    pytest.param({}, forward(np.ones((0, C))), ValueError, r"empty batch", id="empty-batch"),
    # Bessel conventions store var * n / (n - 1): undefined for n = 1 (PyTorch raises too).
    pytest.param({"convention": "torch"}, forward(np.ones((1, C))), ValueError, r"more than 1 value per channel",
                 id="one-value-torch"),
    pytest.param({"convention": "tf_keras_fused"}, forward(np.ones((1, C))), ValueError,
                 r"more than 1 value per channel", id="one-value-tf_keras_fused"),
    # Without running stats, inference normalizes with batch stats, so PyTorch's check applies there too.
    pytest.param({"track_running_stats": False}, forward(np.ones((1, C)), training=False), ValueError,
                 r"more than 1 value per channel", id="one-value-torch-untracked-inference"),
    pytest.param({"channel_axis": 5}, forward(np.ones((4, C))), ValueError, r"channel_axis 5 is out of range",
                 id="channel-axis-out-of-range"),
    pytest.param({}, lambda bn: bn.backward(np.ones((5, C))), ValueError, r"dy must have the shape", id="dy-shape"),
    pytest.param({}, lambda bn: bn.backward(np.ones((4, C), int)), TypeError, r"dy must have a real floating dtype",
                 id="dy-integer"),
    pytest.param({}, assign("gamma", np.ones(4)), ValueError, r"gamma must have shape \(3,\)", id="gamma-shape"),
    pytest.param({}, assign("beta", np.ones((1, C))), ValueError, r"beta must have shape \(3,\)", id="beta-shape"),
    pytest.param({}, assign("running_var", [1.0]), ValueError, r"running_var must have shape \(3,\)",
                 id="running-var-shape"),
    pytest.param({}, assign("gamma", None), ValueError, r"gamma must be a value when affine=True", id="gamma-none"),
    pytest.param({}, assign("running_var", None), ValueError, r"running_var must be a value when track_running",
                 id="running-var-none"),
    pytest.param({}, assign("num_batches_tracked", None), ValueError,
                 r"num_batches_tracked must be a value when track_running_stats=True", id="counter-none"),
    pytest.param({}, assign("num_batches_tracked", -1), ValueError,
                 r"num_batches_tracked must be a non-negative integer, got -1", id="counter-negative"),
    pytest.param({}, assign("num_batches_tracked", 2.0), ValueError,
                 r"num_batches_tracked must be a non-negative integer, got 2.0", id="counter-float"),
    pytest.param({}, assign("num_batches_tracked", True), ValueError,
                 r"num_batches_tracked must be a non-negative integer, got True", id="counter-bool"),
    pytest.param({}, assign("running_var", ["a", "b", "c"]), TypeError, r"running_var must be real numbers",
                 id="running-var-strings"),
    # The state is the convention's fields: a misspelt or foreign field is an error, never a new attribute.
    pytest.param({}, assign("running_std", np.ones(C)), AttributeError,
                 r"running_std is not a field of the state \('gamma', 'beta', 'running_mean', 'running_var', "
                 r"'num_batches_tracked'\)", id="field-of-another-convention"),
    pytest.param({}, assign("eps", 1.0), AttributeError, r"eps is not a field of the state", id="hyperparameter"),
    pytest.param({"convention": "keras"}, assign("num_batches_tracked", 3), AttributeError,
                 r"num_batches_tracked is not a field of the state \('gamma', 'beta', 'running_mean', 'running_var'\)",
                 id="counter-of-another-convention"),
    pytest.param({"track_running_stats": False}, assign("running_mean", np.zeros(C)), ValueError,
                 r"running_mean must be None when track_running_stats=False", id="running-mean-when-untracked"),
]


@pytest.mark.parametrize("kwargs, action, exception, match", LAYER_ERRORS)
def test_bad_input_raises_and_leaves_state(kwargs, action, exception, match):
    layer = used_layer(**kwargs)
    before = state(layer)
    with pytest.raises(exception, match=match):
        action(layer)
    assert_same_state(before, state(layer))


def test_backward_before_forward():
    layer = BatchNorm(C)
    with pytest.raises(ValueError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.ones((4, C)))
    assert layer.dgamma is None and layer.dbeta is None


def test_keras_one_value_per_channel_gives_beta():
    # Keras stores the biased variance, so n = 1 is allowed: x - mean = 0 and the output is beta.
    layer = used_layer(convention="keras")
    y = layer.forward(np.array([[1.0, -5.0, 7.0]]), training=True)
    np.testing.assert_array_equal(y, layer.beta[None, :])


CONSTRUCTOR_ERRORS = [
    pytest.param({"eps": -1e-5}, ValueError, r"eps must be finite and non-negative", id="eps-negative"),
    pytest.param({"eps": float("nan")}, ValueError, r"eps must be finite and non-negative", id="eps-nan"),
    pytest.param({"eps": float("inf")}, ValueError, r"eps must be finite and non-negative", id="eps-inf"),
    pytest.param({"eps": "1e-5"}, TypeError, r"eps must be a real number", id="eps-string"),
    pytest.param({"momentum": -0.1}, ValueError, r"momentum must lie in \[0, 1\]", id="momentum-negative"),
    pytest.param({"momentum": 1.5}, ValueError, r"momentum must lie in \[0, 1\]", id="momentum-above-1"),
    pytest.param({"momentum": float("nan")}, ValueError, r"momentum must lie in \[0, 1\]", id="momentum-nan"),
    pytest.param({"momentum": "0.1"}, TypeError, r"momentum must be a real number", id="momentum-string"),
    pytest.param({"momentum": True}, TypeError, r"momentum must be a real number", id="momentum-bool"),
    *[
        pytest.param({"convention": name, "momentum": None}, ValueError,
                     rf"momentum=None .* not part of the '{name}' convention", id=f"momentum-none-{name}")
        for name in ["keras", "tf_keras_fused", "onnx", "flax"]
    ],
    pytest.param({"convention": "caffe"}, ValueError, r"unknown convention 'caffe'; built-in conventions: flax",
                 id="unknown-convention"),
    pytest.param({"convention": Convention("mine", "old", REQUIRED, 1e-5, 1)}, TypeError,
                 r"the 'mine' convention has no default for momentum: pass it", id="momentum-required"),
    pytest.param({"convention": Convention("mine", "old", 0.9, 1e-5, 1, counter="t", debiased=True), "momentum": 1.0},
                 ValueError, r"momentum 1.0 gives the new batch no weight, which the 'mine' convention cannot debias",
                 id="momentum-debiased-no-weight"),
    pytest.param({"convention": 3}, TypeError, r"convention must be a name or a Convention", id="convention-int"),
    pytest.param({"num_features": 0}, ValueError, r"num_features must be positive, got 0", id="num-features-0"),
    pytest.param({"num_features": -2}, ValueError, r"num_features must be positive, got -2", id="num-features-neg"),
    pytest.param({"num_features": 3.0}, TypeError, r"num_features must be an integer, got float",
                 id="num-features-float"),
    pytest.param({"num_features": True}, TypeError, r"num_features must be an integer, got bool",
                 id="num-features-bool"),
    pytest.param({"channel_axis": 1.0}, TypeError, r"channel_axis must be an integer, got float",
                 id="channel-axis-float"),
    pytest.param({"channel_axis": "1"}, TypeError, r"channel_axis must be an integer, got str",
                 id="channel-axis-string"),
]


@pytest.mark.parametrize("kwargs, exception, match", CONSTRUCTOR_ERRORS)
def test_bad_constructor_arguments(kwargs, exception, match):
    kwargs = {"num_features": C, **kwargs}
    with pytest.raises(exception, match=match):
        BatchNorm(**kwargs)


@pytest.mark.parametrize("convention", ["torch", "tf_keras_fused"])
def test_update_running_state_rejects_one_value_under_bessel(convention):
    # The pure function guards the n / (n - 1) factor itself, not only the layer.
    with pytest.raises(ValueError, match=r"needs more than 1 value per channel"):
        update_running_state(initial_running_state(C, convention), np.zeros(C), np.zeros(C), 1, 0.5, convention)


def test_reading_a_field_the_convention_lacks_is_an_attribute_error():
    # A layer has exactly its convention's fields: PyTorch's counter is no Keras layer's.
    layer = BatchNorm(C, convention="keras")
    with pytest.raises(AttributeError, match="BatchNorm has no attribute 'num_batches_tracked'"):
        layer.num_batches_tracked  # noqa: B018
    assert "num_batches_tracked" not in layer.state
