"""Running statistics, checked against update rules written out by hand for each convention: the five built-in
records, and two that no built-in framework has, declared as a third party would (a Haiku-style layer whose
averages are debiased by a counter and which has no default momentum; one that averages the standard
deviation, as tf-keras' batch renormalization keeps ``moving_stddev``)."""

import numpy as np
import pytest
from records import HAIKU_LIKE, RECORDS

from reference import CONVENTIONS, REQUIRED, BatchNorm, Convention, debias_factor
from reference.running import saturated_count

# Three batches of different sizes (so the Bessel factor n / (n - 1) differs per batch), channels last.
BATCH_SHAPES = [(4, 2, 3), (2, 3, 3), (5, 1, 3)]
AXIS = -1
REDUCE = (0, 1)  # every axis but the channel axis

# The momenta each is checked with; "default" is its record's (Haiku has none, and momentum 1 gives a
# debiased average no new batch to debias: both are errors, tests/test_errors.py).
MOMENTA = {name: (0.0, 1.0, 0.3, "default") for name in CONVENTIONS} | {"haiku_like": (0.0, 0.3, 0.9),
                                                                        "std_average": (0.0, 1.0, 0.3, "default")}


def batches(rng):
    # Different location and spread per batch, so a wrong weighting cannot cancel out.
    return [rng.normal(loc, scale, shape) for (loc, scale), shape in zip([(1, 2), (-3, 0.5), (0.5, 4)], BATCH_SHAPES)]


def layer_for(name, **kwargs):
    """A layer of convention ``name`` with channels last; a momentum where the record has no default."""
    conv = RECORDS[name]
    if conv.default_momentum is REQUIRED:
        kwargs.setdefault("momentum", 0.9)
    return BatchNorm(3, convention=conv, channel_axis=AXIS, **kwargs)


def hand_initial(convention):
    """The running state a layer starts with, from the frameworks' docs."""
    if convention == "haiku_like":  # hidden averages start at zero
        return {"running_mean": np.zeros(3), "running_var": np.zeros(3), "counter": 0}
    if convention == "std_average":
        return {"running_mean": np.zeros(3), "running_std": np.ones(3)}
    counter = {"num_batches_tracked": 0} if convention == "torch" else {}
    return {"running_mean": np.zeros(3), "running_var": np.ones(3), **counter}


def hand_update(convention, m, state, x):
    """One training step of ``convention`` with momentum ``m``, written from the frameworks' docs."""
    n = x.size // x.shape[AXIS]
    mean, biased = x.mean(axis=REDUCE), x.var(axis=REDUCE)
    unbiased = biased * n / (n - 1)
    if convention == "torch":  # momentum weights the batch; stores the unbiased variance; counts
        return {"running_mean": (1 - m) * state["running_mean"] + m * mean,
                "running_var": (1 - m) * state["running_var"] + m * unbiased,
                "num_batches_tracked": state["num_batches_tracked"] + 1}
    if convention in ("keras", "onnx", "flax"):  # momentum weights the running value; biased
        return {"running_mean": m * state["running_mean"] + (1 - m) * mean,
                "running_var": m * state["running_var"] + (1 - m) * biased}
    if convention == "tf_keras_fused":  # Keras momentum, but the fused kernel stores the unbiased variance
        return {"running_mean": m * state["running_mean"] + (1 - m) * mean,
                "running_var": m * state["running_var"] + (1 - m) * unbiased}
    if convention == "haiku_like":  # hidden = decay * hidden + (1 - decay) * value; counter += 1
        return {"running_mean": m * state["running_mean"] + (1 - m) * mean,
                "running_var": m * state["running_var"] + (1 - m) * biased, "counter": state["counter"] + 1}
    if convention == "std_average":  # the average of the (unbiased) standard deviation
        return {"running_mean": m * state["running_mean"] + (1 - m) * mean,
                "running_std": m * state["running_std"] + (1 - m) * np.sqrt(unbiased)}
    raise AssertionError(f"no hand-written rule for convention {convention!r}: add one")


def hand_statistics(convention, m, state):
    """The mean and variance inference normalizes with, read from ``state``."""
    if convention == "haiku_like":  # debiased by 1 - decay**counter once there is a batch to debias
        factor = 1 - m ** state["counter"] if state["counter"] else 1.0
        return state["running_mean"] / factor, state["running_var"] / factor
    if convention == "std_average":
        return state["running_mean"], state["running_std"] ** 2
    return state["running_mean"], state["running_var"]


def assert_state(layer, expected, message=""):
    """Every running field as expected (counters exactly), and no other: a layer has its convention's fields."""
    held = {k: v for k, v in layer.state.items() if k not in ("gamma", "beta")}
    assert held.keys() == expected.keys(), message
    for name, value in expected.items():
        if isinstance(value, int):
            assert held[name] == value, f"{name} {message}"
        else:
            np.testing.assert_allclose(held[name], value, rtol=1e-13, atol=1e-14, err_msg=f"{name} {message}")


def inference(layer, state, m, x):
    mean, var = hand_statistics(layer.convention.name, m, state)
    return (x - mean) / np.sqrt(var + layer.eps)


@pytest.mark.parametrize("convention, momentum", [(name, m) for name in RECORDS for m in MOMENTA[name]])
def test_three_batches_follow_the_hand_written_rule(rng, convention, momentum):
    m = RECORDS[convention].default_momentum if momentum == "default" else momentum
    layer = layer_for(convention, momentum=m)
    state = hand_initial(convention)
    assert_state(layer, state, "as built")
    for k, x in enumerate(batches(rng), start=1):
        layer.forward(x, training=True)
        state = hand_update(convention, m, state, x)
        assert_state(layer, state, f"batch {k}")
        # ... and inference reads them as the convention says (debiased, the standard deviation squared).
        y = layer.forward(x, training=False)
        np.testing.assert_allclose(y, inference(layer, state, m, x), rtol=1e-12, atol=1e-12, err_msg=f"batch {k}")


def test_every_convention_has_a_hand_written_rule():
    # hand_update raises for a convention it does not know, so a new convention cannot go untested.
    x = np.ones((2, 1, 3))
    for name in RECORDS:
        hand_update(name, 0.5, hand_initial(name), x)
    assert set(CONVENTIONS) < set(RECORDS) == set(MOMENTA)


def test_debiasing_recovers_the_batch_statistics_after_one_step(rng):
    # The point of debiasing: after one batch the hidden average is (1 - decay) * batch, and inference reads
    # the batch's own statistics, whatever the decay; a plain average would read 10% of them at decay 0.9.
    x = batches(rng)[0]
    layer = layer_for("haiku_like", momentum=0.9)
    layer.forward(x, training=True)
    y = layer.forward(x, training=False)
    np.testing.assert_allclose(y, (x - x.mean(axis=REDUCE)) / np.sqrt(x.var(axis=REDUCE) + layer.eps), rtol=1e-12)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=REDUCE), rtol=1e-13)  # the hidden value


# Debiasing where momentum weights the new batch (Sonnet's and Adam's style), so that any small weight is exact.
NEW_DEBIASED = Convention("new_debiased", "new", REQUIRED, 1e-5, -1, counter="steps", debiased=True)


@pytest.mark.parametrize("w", [1e-20, 2.0**-40, 1e-8])
def test_a_small_new_batch_weight_keeps_its_digits(rng, w):
    # 1 - (1 - w)**t = t w - t(t-1)/2 w**2 + ...: the plain formula cancels all of it (0 below w = 2**-54,
    # and an infinite inference statistic), the reference keeps it to rounding.
    assert debias_factor(3, w, NEW_DEBIASED) == pytest.approx(3 * w - 3 * w**2 + w**3, rel=4 * 2.0**-52)
    x = batches(rng)[0]
    layer = BatchNorm(3, convention=NEW_DEBIASED, momentum=w, channel_axis=AXIS)
    layer.forward(x, training=True)  # one batch: inference reads its own statistics
    np.testing.assert_allclose(layer.forward(x, training=False),
                               (x - x.mean(axis=REDUCE)) / np.sqrt(x.var(axis=REDUCE) + layer.eps), rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_a_saturated_count_makes_the_factor_one(momentum):
    count = saturated_count(momentum, HAIKU_LIKE)
    assert debias_factor(count, momentum, HAIKU_LIKE) == 1.0
    assert count == 1 or debias_factor(count - 1, momentum, HAIKU_LIKE) < 1.0  # the fewest such
    assert saturated_count(momentum, "keras") == 1  # nothing to saturate in a plain record


def test_torch_momentum_none_is_the_plain_average(rng):
    # Cumulative average with factor 1 / num_batches_tracked: after k batches the running stats are the
    # plain mean of the k batch means and of the k unbiased batch variances (the initial 0 / 1 drop out).
    layer = BatchNorm(3, convention="torch", momentum=None, channel_axis=AXIS)
    means, unbiased_vars = [], []
    for k, x in enumerate(batches(rng), start=1):
        layer.forward(x, training=True)
        means.append(x.mean(axis=REDUCE))
        unbiased_vars.append(x.var(axis=REDUCE, ddof=1))
        np.testing.assert_allclose(layer.running_mean, np.mean(means, axis=0), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(layer.running_var, np.mean(unbiased_vars, axis=0), rtol=1e-13, atol=1e-14)
        assert layer.num_batches_tracked == k


@pytest.mark.parametrize("convention", sorted(RECORDS))
def test_inference_neither_updates_nor_counts(rng, convention):
    layer = layer_for(convention)
    first, second, _ = batches(rng)
    layer.forward(first, training=True)
    held = layer.state
    state = {k: v for k, v in held.items() if k not in ("gamma", "beta")}
    for _ in range(2):
        y = layer.forward(second, training=False)
        assert_state(layer, state)  # nothing moved, the counter (where there is one) included
        for name, value in state.items():
            assert np.array_equal(layer.state[name], value), name  # bitwise
    # ... and it normalized with those running statistics.
    np.testing.assert_allclose(y, inference(layer, state, layer.momentum, second), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("convention", sorted(RECORDS))
def test_without_tracking_inference_uses_batch_statistics(rng, convention):
    layer = layer_for(convention, track_running_stats=False)
    running = RECORDS[convention].running_fields
    assert all(layer.state[name] is None for name in running)
    for x in batches(rng):
        expected = (x - x.mean(axis=REDUCE)) / np.sqrt(x.var(axis=REDUCE) + layer.eps)
        for training in (True, False):
            np.testing.assert_allclose(layer.forward(x, training=training), expected, rtol=1e-12, atol=1e-12)
            assert all(layer.state[name] is None for name in running)


@pytest.mark.parametrize("convention", sorted(RECORDS))
def test_train_eval_train_switching(rng, convention):
    # An evaluation step between two training steps must be invisible to the running statistics.
    m = 0.3
    first, middle, last = batches(rng)
    layer = layer_for(convention, momentum=m)
    layer.forward(first, training=True)
    state = hand_update(convention, m, hand_initial(convention), first)
    y = layer.forward(middle, training=False)
    np.testing.assert_allclose(y, inference(layer, state, m, middle), rtol=1e-12, atol=1e-12)
    layer.forward(last, training=True)
    state = hand_update(convention, m, state, last)
    assert_state(layer, state)  # the counter, where the convention keeps one, counts 2
    assert state.get(RECORDS[convention].counter, 2) == 2
