"""reference.port on the reference itself: every setting carried, the running variance's Bessel rescaling
within its stated bound, clear errors, and between any two records (the built-ins, a debiased one, one that
averages the standard deviation) a port that keeps what inference reads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from records import HAIKU_LIKE, RECORDS, momenta, records

import reference
from conformance.core.state import State
from reference import (
    KERAS,
    REQUIRED,
    TORCH,
    Convention,
    Settings,
    debias_factor,
    move_channels,
    port,
    running_state_for,
    running_statistics,
)
from reference.porting import rescale_error_bound, variance_factor
from reference.running import saturated_count

RNG = np.random.default_rng(15)
STATE = State(gamma=RNG.uniform(0.5, 1.5, 3), beta=RNG.uniform(-0.5, 0.5, 3), running_mean=RNG.uniform(-1, 1, 3),
              running_var=RNG.uniform(0.5, 2, 3), num_batches_tracked=7)
PER_CHANNEL = ("gamma", "beta", "running_mean", "running_var")


def test_settings_are_translated_and_arrays_copied():
    state, settings = port(STATE, Settings("torch", 0.1, 2e-3, 1), "keras")
    assert (settings.convention, settings.eps, settings.channel_axis) == (KERAS, 2e-3, -1)
    assert settings.momentum == pytest.approx(0.9)
    assert "num_batches_tracked" not in state  # no cumulative average in the keras convention
    for name in PER_CHANNEL:
        np.testing.assert_array_equal(state[name], STATE[name])
        assert state[name] is not STATE[name]
    back, _ = port(state, settings, "torch", channel_axis=1)
    assert "num_batches_tracked" not in back  # nothing to carry: the target keeps the counter it was built with


def test_cumulative_average_needs_an_explicit_momentum():
    with pytest.raises(ValueError, match="no fixed-momentum equivalent"):
        port(STATE, Settings("torch", None, 1e-5, 1), "flax")
    state, settings = port(STATE, Settings("torch", None, 1e-5, 1), "flax", momentum=0.95)
    assert settings.momentum == 0.95
    assert port(STATE, Settings("torch", None, 1e-5, 1), "torch")[0]["num_batches_tracked"] == 7


@pytest.mark.parametrize("bad", [{"batch_size": 1}, {"momentum": 1.5}])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        port(STATE, Settings("torch", 0.1, 1e-5, 1), "keras", **bad)
    with pytest.raises(ValueError, match="channel_axis"):
        Settings("keras", 0.9, 1e-3, 2)


def test_a_target_without_a_default_axis_needs_one():
    no_axis = Convention("no_axis", "old", 0.9, 1e-5, REQUIRED)
    with pytest.raises(ValueError, match="the 'no_axis' convention has no default channel axis: pass channel_axis="):
        port(STATE, Settings("torch", 0.1, 1e-5, 1), no_axis)
    assert port(STATE, Settings("torch", 0.1, 1e-5, 1), no_axis, channel_axis=1)[1].channel_axis == 1


def test_only_a_debiased_state_needs_its_counter():
    # A plain record reads its averages as they are (an adapter need not report its counter); a debiased one
    # cannot say what inference reads without it.
    plain = {name: STATE[name] for name in PER_CHANNEL}
    assert "num_batches_tracked" not in port(plain, Settings("torch", 0.1, 1e-5, 1), "torch")[0]
    with pytest.raises(ValueError, match="the 'haiku_like' convention debiases by its counter 'counter', which the "
                                         "state lacks"):
        port(plain, Settings(HAIKU_LIKE, 0.9, 1e-5, -1), "torch")


def test_settings_take_a_record_or_a_built_in_name():
    assert Settings("torch", 0.1, 1e-5, 1) == Settings(TORCH, 0.1, 1e-5, 1)
    with pytest.raises(ValueError, match="momentum 1.0 gives the new batch no weight"):
        Settings(HAIKU_LIKE, 1.0, 1e-5, -1)


def test_copied_state_keeps_the_inference_output():
    x = RNG.standard_normal((5, 3))
    state, settings = port(STATE, Settings("tf_keras_fused", 0.9, 1e-3, -1), "torch")
    fields = ("running_mean", "running_var", "gamma", "beta")
    ys = [reference.forward_inference(move_channels(x, -1, axis), *(s[name] for name in fields), 1e-3, axis)
          for s, axis in ((STATE, -1), (state, settings.channel_axis))]
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
    error = np.abs(state["running_var"] - layers[target].running_var)
    bound = rescale_error_bound(factor, 1.0, w, steps)
    assert np.all(error <= bound * (1 + 1e-12) + 1e-15)
    np.testing.assert_allclose(error, bound, rtol=1e-9)  # the bound is the whole error: it is tight
    assert np.all(bound <= rescale_error_bound(factor, 1.0, w))


# ---- between any two records ---------------------------------------------------------------------

W = 0.3  # the new-batch weight both sides train with, in each one's own momentum


def trained(convention: Convention, steps: int) -> reference.BatchNorm:
    layer = reference.BatchNorm(3, convention=convention, momentum=convention.momentum_for(W), eps=2e-3,
                                channel_axis=-1)
    layer.gamma, layer.beta = STATE["gamma"], STATE["beta"]
    for k in range(steps):
        layer.forward(2 + k + RNG.standard_normal((8, 3)), training=True)
    return layer


def built(state: dict, settings: Settings) -> reference.BatchNorm:
    """A layer built with the settings a port gives, holding the ported state."""
    layer = reference.BatchNorm(3, convention=settings.convention, momentum=settings.momentum, eps=settings.eps,
                                channel_axis=settings.channel_axis)
    for name, value in state.items():
        setattr(layer, name, value)
    return layer


@pytest.mark.parametrize("steps", [0, 3], ids=["as-built", "trained"])
@pytest.mark.parametrize("target", sorted(RECORDS))
@pytest.mark.parametrize("source", sorted(RECORDS))
def test_port_keeps_what_inference_reads(source, target, steps):
    src, dst = RECORDS[source], RECORDS[target]
    layer = trained(src, steps)
    state, settings = port(layer.state, Settings(src, layer.momentum, layer.eps, -1), dst)
    assert (settings.convention, settings.eps, settings.channel_axis) == (dst, layer.eps, dst.channel_axis)
    assert dst.new_batch_weight(settings.momentum, 1) == pytest.approx(W, rel=1e-15)
    carried = dst.counter is not None and (src.counter is not None or dst.debiased)
    assert set(state) == {"gamma", "beta", "running_mean", dst.spread_field, *([dst.counter] if carried else [])}
    # The counter: carried where both keep one; a debiased target without one counts until its factor is 1.
    if src.counter and dst.counter:
        assert state[dst.counter] == layer.state[src.counter] == steps
    elif dst.debiased:
        assert state[dst.counter] == saturated_count(settings.momentum, dst)
        assert debias_factor(state[dst.counter], settings.momentum, dst) == 1.0
    # What inference reads: the same mean and variance, and so the same output.
    read = running_statistics(state, settings.momentum, dst)
    for a, b in zip(read, running_statistics(layer.state, layer.momentum, src)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    ported = built(state, settings)
    x = RNG.standard_normal((5, 2, 3))  # channels last, as the source takes them
    axis = settings.channel_axis
    y = move_channels(ported.forward(move_channels(x, -1, axis), training=False), axis, -1)
    np.testing.assert_allclose(y, layer.forward(x, training=False), rtol=1e-13, atol=1e-14)


def test_a_saturated_debiased_target_trains_on_as_its_plain_source():
    # Keras (biased, no counter) into the Haiku-like record: the counter saturates the debiasing, so the hidden
    # averages are the plain ones and one more batch moves both alike.
    layer = trained(KERAS, 3)
    state, settings = port(layer.state, Settings(KERAS, layer.momentum, layer.eps, -1), HAIKU_LIKE)
    ported = built(state, settings)
    x = 5 + RNG.standard_normal((8, 3))
    for bn in (layer, ported):
        bn.forward(x, training=True)
    for a, b in zip(running_statistics(ported.state, ported.momentum, HAIKU_LIKE),
                    running_statistics(layer.state, layer.momentum, KERAS)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@given(records(), st.data())
def test_running_state_for_inverts_running_statistics(convention, data):
    """What :func:`port` builds a target's state with: the state whose inference reads a given mean and
    variance, at a given counter (a debiased record's factor is then that counter's) or, without one, where a
    debiased record's factor is 1."""
    momentum = data.draw(momenta(convention))
    # Hidden averages are the statistics times the factor, which must not underflow (nor in a framework).
    assume(not convention.debiased or convention.new_batch_weight(momentum, 1) > 2.0**-600)
    values = st.floats(-1e3, 1e3).filter(lambda v: v == 0 or abs(v) > 1e-100)
    mean, var = (data.draw(hnp.arrays(np.float64, 3, elements=values)) for _ in range(2))
    counter = data.draw(st.one_of(st.none(), st.integers(0, 50))) if convention.counter else None
    state = running_state_for(mean, np.abs(var), momentum, convention, counter)
    counted = convention.counter is not None and (counter is not None or convention.debiased)
    assert set(state) == {"running_mean", convention.spread_field, *([convention.counter] if counted else [])}
    as_built = {convention.counter: 0} if convention.counter else {}  # a counter not given stays as built
    for read, given_ in zip(running_statistics(as_built | state, momentum, convention), (mean, np.abs(var))):
        np.testing.assert_allclose(read, given_, rtol=2.0**-49, atol=0)
