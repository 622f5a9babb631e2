"""The fast engine (:mod:`reference.batchnorm`) against the textbook (:mod:`reference.textbook`) on random
shapes, channel positions, conventions, eps and values (Hypothesis).

Both compute in float64, so each lies within the suite's float64 tolerance of the exact result
(``conformance/tolerances.py``: rounding, ``sqrt(n)`` reductions, conditioning); they must therefore agree
within twice that tolerance, element by element. The statistics, updated running statistics and
inference paths are held to the same model.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
from conformance.tolerances import Conditioning, RunningTolerance, compare
from reference import CONVENTIONS, textbook

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
    per_channel = {name: draw(hnp.arrays(np.float64, c, elements=st.floats(-10, 10, allow_subnormal=False)))
                   for name in ("gamma", "beta", "running_mean", "vgamma")}
    per_channel["running_var"] = draw(hnp.arrays(np.float64, c, elements=st.floats(0.0, 10.0)))
    return {"axis": axis, "eps": draw(st.sampled_from([1e-5, 1e-3, 1.0])),
            "convention": draw(st.sampled_from(sorted(CONVENTIONS))), "momentum": draw(st.floats(0.0, 1.0)),
            **arrays, **per_channel}


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

    count, step = x.size // x.shape[axis], 3
    momentum = None if p["convention"] == "torch" and p["momentum"] < 0.1 else p["momentum"]
    args = (p["running_mean"], p["running_var"], mean_t, var_t, count, momentum, p["convention"])
    fast = reference.update_running_statistics(*args, num_batches_tracked=step)
    expected = textbook.update_running_statistics(*args, step=step)
    running = RunningTolerance("float64")
    running.add_step(cond, *expected, count)
    for name, a, b in zip(("running_mean", "running_var"), fast, expected):
        check(name, a, b, running.tolerance(name, b))


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
