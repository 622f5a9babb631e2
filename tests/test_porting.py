"""conformance.porting.port on the reference itself: every setting carried, the running variance's Bessel
rescaling within its stated bound, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from conformance.adapters.base import State
from conformance.porting import Settings, move_channels, port, rescale_error_bound, variance_factor

RNG = np.random.default_rng(15)
STATE = State(gamma=RNG.uniform(0.5, 1.5, 3), beta=RNG.uniform(-0.5, 0.5, 3), running_mean=RNG.uniform(-1, 1, 3),
              running_var=RNG.uniform(0.5, 2, 3), num_batches_tracked=7)


def test_settings_are_translated_and_arrays_copied():
    state, settings = port(STATE, Settings("torch", 0.1, 2e-3, 1), "keras")
    assert settings == Settings("keras", pytest.approx(0.9), 2e-3, -1)
    assert state.num_batches_tracked is None  # no cumulative average in the keras convention
    for name in ("gamma", "beta", "running_mean", "running_var"):
        np.testing.assert_array_equal(getattr(state, name), getattr(STATE, name))
        assert getattr(state, name) is not getattr(STATE, name)
    back, _ = port(state, settings, "torch", channel_axis=1)
    assert back.num_batches_tracked is None


def test_cumulative_average_needs_an_explicit_momentum():
    with pytest.raises(ValueError, match="no fixed-momentum equivalent"):
        port(STATE, Settings("torch", None, 1e-5, 1), "flax")
    state, settings = port(STATE, Settings("torch", None, 1e-5, 1), "flax", momentum=0.95)
    assert settings.momentum == 0.95
    assert port(STATE, Settings("torch", None, 1e-5, 1), "torch")[0].num_batches_tracked == 7


@pytest.mark.parametrize("bad", [{"batch_size": 1}, {"momentum": 1.5}])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        port(STATE, Settings("torch", 0.1, 1e-5, 1), "keras", **bad)
    with pytest.raises(ValueError, match="channel_axis"):
        Settings("keras", 0.9, 1e-3, 2)


def test_copied_state_keeps_the_inference_output():
    x = RNG.standard_normal((5, 3))
    state, settings = port(STATE, Settings("tf_keras_fused", 0.9, 1e-3, -1), "torch")
    ys = [reference.forward_inference(move_channels(x, -1, axis), s.running_mean, s.running_var, s.gamma, s.beta,
                                      1e-3, axis) for s, axis in ((STATE, -1), (state, settings.channel_axis))]
    np.testing.assert_array_equal(ys[0], move_channels(ys[1], 1, -1))


@pytest.mark.parametrize(("source", "target"), [("torch", "keras"), ("flax", "tf_keras_fused")])
@pytest.mark.parametrize("steps", [1, 3, 20])
def test_rescaled_variance_is_within_its_bound(source, target, steps):
    """Train a source and a target on the same batches; the source's rescaled running variance differs
    from the target's only by the rescaled initial share, which the bound covers (and nearly reaches)."""
    n, w = 8, 0.3
    layers = {c: reference.BatchNorm(3, convention=c, momentum=reference.convert_momentum(w, "torch", c),
                                     channel_axis=-1) for c in (source, target)}
    for _ in range(steps):
        x = 2 + RNG.standard_normal((n, 3))
        for layer in layers.values():
            layer.forward(x, training=True)
    src = layers[source]
    state, _ = port(State(running_mean=src.running_mean, running_var=src.running_var),
                    Settings(source, src.momentum, src.eps, -1), target, batch_size=n)
    factor = variance_factor(source, target, n)
    error = np.abs(state.running_var - layers[target].running_var)
    bound = rescale_error_bound(factor, 1.0, w, steps)
    assert np.all(error <= bound * (1 + 1e-12) + 1e-15)
    np.testing.assert_allclose(error, bound, rtol=1e-9)  # the bound is the whole error: it is tight
    assert np.all(bound <= rescale_error_bound(factor, 1.0, w))
