"""The fast engine (:mod:`reference.batchnorm`) and the running-state rules (:mod:`reference.running`) against
the textbook (:mod:`reference.textbook`) on random shapes, channel positions, convention records (the
built-ins and any valid record: counters, debiasing, a Bessel-corrected variance, an averaged standard
deviation), eps and values (Hypothesis).

Both compute in float64, so each lies within the suite's float64 tolerance of the exact result
(``conformance/operators/batchnorm/tolerances.py``: rounding, ``sqrt(n)`` reductions, conditioning); they must
therefore agree within twice that tolerance, element by element. The statistics, the updated running state,
what inference reads of it and the inference paths are held to the same model.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from records import RECORDS, momenta, records

import reference
from conformance.core.comparison import compare
from conformance.operators.batchnorm.tolerances import Conditioning, RunningTolerance
from reference import textbook

AGREEMENT = 2.0  # each side within one float64 tolerance of the exact value


@st.composite
def problems(draw) -> dict:
    shape = list(draw(hnp.array_shapes(min_dims=2, max_dims=5, min_side=1, max_side=5)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    if np.prod(shape) // shape[axis] < 2:  # every convention can train: at least 2 values per channel
        shape[(axis + 1) % len(shape)] = 2
    c = shape[axis]
    values = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
    arrays = {name: draw(hnp.arrays(np.float64, shape, elements=values)) for name in ("x", "dy", "vx")}
    # Values within 1e-300 of zero are left out (zero stays in): the engine's products of gamma with 1 / sigma and
    # beyond then go below float64's normal range, whose absolute rounding later factors amplify past a tolerance
    # model of relative roundings (measured: a gamma of 2.2e-308 puts dx 46 subnormal units off).
    elements = st.floats(-10, 10, allow_subnormal=False).filter(lambda v: v == 0 or abs(v) >= 1e-300)
    per_channel = {name: draw(hnp.arrays(np.float64, c, elements=elements))
                   for name in ("gamma", "beta", "running_mean", "vgamma")}
    per_channel["running_var"] = draw(hnp.arrays(np.float64, c, elements=st.floats(0.0, 10.0)))
    convention = draw(st.one_of(st.sampled_from(list(RECORDS.values())), records()))
    return {"axis": axis, "eps": draw(st.sampled_from([1e-5, 1e-3, 1.0])), "convention": convention,
            "momentum": draw(momenta(convention)), "counter": draw(st.integers(0, 5)), **arrays, **per_channel}


def running_state(p: dict) -> dict:
    """The problem's running state in its convention's fields (the drawn variance as the averaged spread)."""
    conv = p["convention"]
    counter = {conv.counter: p["counter"]} if conv.counter else {}
    return {"running_mean": p["running_mean"], conv.spread_field: p["running_var"], **counter}


def last(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(a, axis, -1)


def check(name: str, fast: np.ndarray, textbook_value: np.ndarray, tolerance: np.ndarray) -> None:
    comparison = compare(name, fast, textbook_value, AGREEMENT * tolerance)
    assert comparison.passed, comparison.describe()


@given(problems())
def test_training_forward_backward_and_running_statistics_agree(p: dict) -> None:
    x, axis, eps, gamma = p["x"], p["axis"], p["eps"], p["gamma"]
    y, mean, var = reference.forward_training(x, gamma, p["beta"], eps, axis)
    y_t, mean_t, var_t = textbook.forward_training(x, gamma, p["beta"], eps, axis)
    cond = Conditioning("float64", x.size // x.shape[axis], mean_t, var_t, eps, gamma)
    xhat = (last(x, axis) - mean_t) / cond.sigma
    check("y", last(y, axis), last(y_t, axis), cond.y(last(y_t, axis), xhat))
    check("mean", mean, mean_t, cond.running_mean_step(0.0, np.sqrt(var_t)))
    check("var", var, var_t, cond.running_var_step(0.0))

    dx, dgamma, dbeta = reference.backward_training(p["dy"], x, mean, var, gamma, eps, axis)
    dx_t, dgamma_t, dbeta_t = textbook.backward_training(p["dy"], x, gamma, eps, axis)
    dy = last(p["dy"], axis)
    check("dx", last(dx, axis), last(dx_t, axis), cond.dx(last(dx_t, axis), dy, xhat))
    check("dgamma", dgamma, dgamma_t, cond.dgamma(dgamma_t, dy, xhat))
    check("dbeta", dbeta, dbeta_t, cond.dbeta(dbeta_t, dy))

    count, conv, momentum = x.size // x.shape[axis], p["convention"], p["momentum"]
    state = running_state(p)
    fast = reference.update_running_state(state, mean_t, var_t, count, momentum, conv)
    expected = textbook.update_running_state(state, mean_t, var_t, count, momentum, conv)
    assert fast.keys() == expected.keys() == state.keys()
    if conv.counter:
        assert fast[conv.counter] == expected[conv.counter] == p["counter"] + 1
    running = RunningTolerance("float64", conv, momentum)
    running.add_step(cond, expected, count)
    for name in ("running_mean", conv.spread_field):
        check(name, fast[name], expected[name], running.tolerance(name, expected[name]))
    # What inference reads of it: debiased, squared, within the errors the step allows in those statistics.
    read = reference.running_statistics(fast, momentum, conv)
    read_t = textbook.running_statistics(expected, momentum, conv)
    fresh = RunningTolerance("float64", conv, momentum)  # the rounding of the value compared
    for name, a, b, error in zip(("mean", "var"), read, read_t, running.statistics_error(expected)):
        check(name, a, b, fresh.tolerance("running_mean", b) + error)


@given(problems())
def test_inference_agrees(p: dict) -> None:
    x, axis, eps, gamma = p["x"], p["axis"], p["eps"], p["gamma"]
    stats = (p["running_mean"], p["running_var"])
    cond = Conditioning("float64", 1, *stats, eps, gamma)
    xhat = (last(x, axis) - stats[0]) / cond.sigma
    y = reference.forward_inference(x, *stats, gamma, p["beta"], eps, axis)
    y_t = textbook.forward_inference(x, *stats, gamma, p["beta"], eps, axis)
    check("y", last(y, axis), last(y_t, axis), cond.y(last(y_t, axis), xhat))
    dx, dgamma, dbeta = reference.backward_inference(p["dy"], x, *stats, gamma, eps, axis)
    dx_t, dgamma_t, dbeta_t = textbook.backward_inference(p["dy"], x, *stats, gamma, eps, axis)
    dy = last(p["dy"], axis)
    check("dx", last(dx, axis), last(dx_t, axis), cond.dx(last(dx_t, axis), dy, xhat))
    # Over all values of a channel: the reduction's n, not inference's 1.
    sums = Conditioning("float64", x.size // x.shape[axis], *stats, eps, gamma)
    check("dgamma", dgamma, dgamma_t, sums.dgamma(dgamma_t, dy, xhat))
    check("dbeta", dbeta, dbeta_t, sums.dbeta(dbeta_t, dy))


def test_the_agreement_has_power(rng) -> None:
    # A textbook that forgot the batch-statistics term of dx (mean(dy * xhat)) is caught.
    x, dy = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    _, mean, var = textbook.forward_training(x, None, None, 1e-3, 1)
    dx = reference.backward_training(dy, x, mean, var, None, 1e-3, 1)[0]
    naive = dy / np.sqrt(var + 1e-3) - dy.mean(axis=0) / np.sqrt(var + 1e-3)
    cond = Conditioning("float64", 6, mean, var, 1e-3, np.ones(3))
    xhat = (x - mean) / cond.sigma
    assert not compare("dx", dx, naive, AGREEMENT * cond.dx(naive, dy, xhat)).passed
