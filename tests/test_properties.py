"""Properties of the reference over generated shapes, channel positions, conventions and values."""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference import CONVENTIONS, BatchNorm, batch_statistics, convert_momentum, engine


@st.composite
def batch_inputs(draw):
    """(x, channel_axis, convention) with rank 2-5, small sides, at least 2 values per channel and a
    per-channel spread that is not degenerate relative to the values' magnitude."""
    shape = list(draw(hnp.array_shapes(min_dims=2, max_dims=5, min_side=1, max_side=4)))
    channel_axis = draw(st.integers(-len(shape), len(shape) - 1))
    if np.prod(shape) // shape[channel_axis] < 2:  # all other sides are 1: widen one of them
        shape[(channel_axis + 1) % len(shape)] = 2
    shape = tuple(shape)
    values = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    x = draw(hnp.arrays(np.float64, shape, elements=values, unique=True))
    moved = np.moveaxis(x, channel_axis, -1).reshape(-1, shape[channel_axis])
    # std >= 1e-3 * max|x| per channel bounds the conditioning |mean| / std by 1e3.
    assume(np.all(moved.std(axis=0) >= 1e-3 * np.abs(moved).max(axis=0)))
    return x, channel_axis, draw(st.sampled_from(sorted(CONVENTIONS)))


def per_channel(y, channel_axis):
    return np.moveaxis(y, channel_axis, -1).reshape(-1, y.shape[channel_axis])


@given(batch_inputs())
def test_training_output_is_standardized(case):
    # Exact identity (gamma = 1, beta = 0): per channel, mean(y) = 0 and the biased variance of y is
    # var / (var + eps), with var the biased batch variance of x. With eps tiny relative to var that is ~1.
    x, channel_axis, convention = case
    layer = BatchNorm(x.shape[channel_axis], convention=convention, channel_axis=channel_axis)
    y = per_channel(layer.forward(x, training=True), channel_axis)
    var = per_channel(x, channel_axis).var(axis=0)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(y.var(axis=0), var / (var + layer.eps), rtol=1e-9)


@given(batch_inputs(), st.data())
def test_inference_with_batch_statistics_reproduces_training(case, data):
    x, channel_axis, convention = case
    c = x.shape[channel_axis]
    layer = BatchNorm(c, convention=convention, channel_axis=channel_axis)
    params = hnp.arrays(np.float64, c, elements=st.floats(-10, 10, allow_nan=False))
    layer.gamma, layer.beta = data.draw(params), data.draw(params)
    y_train = layer.forward(x, training=True)
    layer.running_mean, layer.running_var = batch_statistics(x, channel_axis)
    np.testing.assert_allclose(layer.forward(x, training=False), y_train, rtol=1e-12, atol=1e-12)


PAIRS = list(itertools.product(sorted(CONVENTIONS), repeat=2))
BATCH = np.array([[0.5, -2.0], [1.5, 4.0], [-1.0, 0.0]])  # 3 values for each of 2 channels


@pytest.mark.parametrize("source, target", PAIRS)
@given(momentum=st.floats(0.0, 1.0, allow_nan=False))
def test_convert_momentum_round_trips(source, target, momentum):
    there = convert_momentum(momentum, source, target)
    assert 0.0 <= there <= 1.0
    # 1 - m rounds once (at most 2**-54 absolutely); 1 - (1 - m) is then exact (Sterbenz).
    assert abs(convert_momentum(there, target, source) - momentum) <= 2.0**-54
    # The point of converting: the same running mean (which Bessel does not touch) in either convention.
    layers = [BatchNorm(2, convention=name, momentum=m) for name, m in [(source, momentum), (target, there)]]
    for layer in layers:
        layer.running_mean = [3.0, -7.0]
        layer.forward(BATCH, training=True)
    np.testing.assert_allclose(layers[0].running_mean, layers[1].running_mean, rtol=1e-14, atol=1e-14)


def test_momentum_none_converts_only_to_a_cumulative_convention():
    assert convert_momentum(None, "torch", "torch") is None
    for target in sorted(set(CONVENTIONS) - {"torch"}):
        with pytest.raises(ValueError, match="momentum=None"):
            convert_momentum(None, "torch", target)


@pytest.mark.parametrize("shape, channel_axis", [((256, 4), 1), ((8, 5, 16), -1), ((4, 3, 5, 6), 1)])
def test_batch_statistics_exact_for_large_offset(rng, shape, channel_axis):
    x = 1e6 + 1e-2 * rng.normal(size=shape)
    # x - 1e6 is exact in float64 (Sterbenz), so these are exactly the deviations x holds, and the
    # variance is shift invariant: var(x) == var(d) in exact arithmetic.
    d = per_channel(x - 1e6, channel_axis)
    exact = d.var(axis=0)
    _, var = batch_statistics(x, channel_axis)
    np.testing.assert_allclose(var, exact, rtol=1e-9)
    # The test has power: the one-pass formula loses every digit on the same data.
    xc = per_channel(x, channel_axis)
    naive = (xc**2).mean(axis=0) - xc.mean(axis=0) ** 2
    assert np.max(np.abs(naive / exact - 1)) > 1e-2


# Larger than one 2**18-element block, for both ways of cutting blocks: runs of channels within one
# row (channel-first, large spatial extent) and groups of whole rows (channels last).
MANY_BLOCKS = [((64, 16, 2048), 1), ((4, 8, 2**16), 1), ((4096, 4, 64), -1)]


@pytest.mark.parametrize("shape, channel_axis", MANY_BLOCKS, ids=["row-groups", "channel-runs", "channels-last"])
def test_bitwise_identical_across_thread_counts(rng, monkeypatch, shape, channel_axis):
    c = shape[channel_axis]
    assert len(list(engine.blocks(*engine.view3(np.empty(shape), channel_axis % len(shape)).shape))) > 3
    x, dy = rng.normal(2.0, 3.0, shape), rng.normal(size=shape)
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    results = []
    for threads in ("1", "2", "3"):  # the pool is cached per thread count, so the env var takes effect
        monkeypatch.setenv("REFERENCE_NUM_THREADS", threads)
        assert engine.num_threads() == int(threads)
        layer = BatchNorm(c, channel_axis=channel_axis)
        layer.gamma, layer.beta = gamma, beta
        y = layer.forward(x, training=True)
        dx = layer.backward(dy)
        results.append([y, dx, layer.dgamma, layer.dbeta, layer.running_mean, layer.running_var])
    for other in results[1:]:
        for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "running_mean", "running_var"], results[0], other):
            assert np.array_equal(a, b), name
