"""The tolerance model: ``compare``'s edge cases, and bounds that are tight enough to catch the classic
numerical bugs yet loose enough for a correct implementation in every supported dtype."""

import numpy as np
import pytest
from fake_adapters import NumpyImplementation
from records import HAIKU_LIKE, STD_AVERAGE

import reference
from conformance.core.comparison import Comparison, compare
from conformance.core.dtypes import unit_roundoff
from conformance.harness.mirror import Mirror
from conformance.operators.batchnorm.cases import BatchNormCase, layout_cases
from conformance.operators.batchnorm.tolerances import Conditioning, RunningTolerance
from reference import KERAS, TORCH

NAN, INF = np.nan, np.inf

# (actual, expected, tolerance) -> (passed, error_ratio, nonfinite_mismatches)
COMPARE = {
    "identical": (([1.0, -2.0], [1.0, -2.0], 1e-6), (True, 0.0, 0)),
    "identical, zero bound": (([1.0, -2.0], [1.0, -2.0], 0.0), (True, 0.0, 0)),
    "error at the bound": (([1.5], [1.0], 0.5), (True, 1.0, 0)),
    "error just over the bound": (([np.nextafter(1.5, 2.0)], [1.0], 0.5), (False, 1.0 + 2.0**-51, 0)),
    "error with a zero bound": (([1.0 + 2.0**-52], [1.0], 0.0), (False, INF, 0)),
    "NaN where the reference has NaN": (([NAN, 1.0], [NAN, 1.0], 0.0), (True, 0.0, 0)),
    "NaN where the reference is finite": (([NAN, 1.0], [1.0, 1.0], 1.0), (False, INF, 1)),
    "finite where the reference has NaN": (([1.0, 1.0], [NAN, 1.0], 1.0), (False, INF, 1)),
    "inf where the reference has inf": (([INF, -INF], [INF, -INF], 0.0), (True, 0.0, 0)),
    "inf of the other sign": (([-INF, 1.0], [INF, 1.0], 1.0), (False, INF, 1)),
    "inf where the reference is finite": (([INF, 1.0], [1e300, 1.0], 1e300), (False, INF, 1)),
    "empty": ((np.empty((0, 3)), np.empty((0, 3)), np.ones(3)), (True, 0.0, 0)),
    "both absent": ((None, None, 0.0), (True, 0.0, 0)),
    "absent where the reference has values": ((None, [1.0], 1.0), (False, INF, 1)),
    "values where the reference has none": (([1.0], None, 1.0), (False, INF, 1)),
}


@pytest.mark.filterwarnings("error")  # non-finite values are data here, not a reason to warn
@pytest.mark.parametrize("arrays, verdict", COMPARE.values(), ids=COMPARE.keys())
def test_compare(arrays: tuple, verdict: tuple[bool, float, int]) -> None:
    actual, expected, bound = (None if a is None else np.asarray(a, np.float64) for a in arrays)
    result = compare("q", actual, expected, bound)
    assert (result.passed, result.error_ratio, result.nonfinite_mismatches) == verdict


def test_error_ratio_is_the_worst_ratio_and_records_its_tolerance() -> None:
    # The larger absolute error has the more generous bound: the verdict follows the ratio, not the error.
    result = compare("y", np.array([2.001, 1.0001]), np.array([2.0, 1.0]), np.array([1.0, 1e-5]))
    assert not result.passed
    assert result.error_ratio == pytest.approx(10.0)
    assert result.tolerance == 1e-5
    assert result.max_abs_error == pytest.approx(1e-3)
    assert result.max_rel_error == pytest.approx(5e-4)


def test_shape_mismatch_fails_naming_the_quantity() -> None:
    # A wrong shape is the implementation's failure, recorded like any other (not an error of the harness).
    result = compare("dx", np.zeros((2, 3)), np.zeros((3, 2)), 1.0)
    assert (result.passed, result.error_ratio) == (False, INF)
    assert result.describe() == "dx: the implementation has shape (2, 3) where the reference has (3, 2)"


DESCRIBE = {
    "numbers": (compare("y", np.array([1.5]), np.array([1.0]), 0.25),
                "y: max |error| 0.5 (relative 0.5), error/tolerance 2 at tolerance 0.25"),
    "non-finite": (compare("y", np.array([NAN, NAN]), np.array([1.0, 2.0]), 1.0),
                   "y: NaN at 2 places where the reference has finite values"),
    "absent": (compare("running_var", None, np.ones(3), 1.0),
               "running_var: the implementation has none where the reference has values"),
    "present": (compare("running_var", np.ones(3), None, 1.0),
                "running_var: the implementation has values where the reference has none"),
}


@pytest.mark.parametrize("comparison, text", DESCRIBE.values(), ids=DESCRIBE.keys())
def test_failure_description_says_what_differs(comparison: Comparison, text: str) -> None:
    assert comparison.describe() == text


# ---- against purpose-built implementations ----------------------------------------------------------


def drive(impl: NumpyImplementation, case) -> Mirror:
    """What the checks do, in one sequence: train with gradients, train, infer, infer with gradients."""
    mirror = Mirror(impl, case)
    first, second, third = case.batches()
    mirror.forward_backward(first, case.cotangent(), training=True)
    mirror.forward(second, training=True)
    mirror.forward(third, training=False)
    mirror.forward_backward(third, case.cotangent(), training=False)
    mirror.compare_state()
    return mirror


TWO_PASS = NumpyImplementation("numpy.two_pass")  # computes in the case's dtype
TWO_PASS_FLOAT32 = NumpyImplementation("numpy.two_pass_float32", compute="float32")
ONE_PASS = NumpyImplementation("numpy.one_pass", one_pass=True)

# (implementation, dtypes, data): correct implementations, to pass on every rank and channel position.
CORRECT = {
    "two-pass, own dtype": (TWO_PASS, ("float64", "float32", "float16", "bfloat16"), "normal"),
    "two-pass, own dtype, offset data": (TWO_PASS, ("float64", "float32"), "offset"),
    # How frameworks run half precision: float32 arithmetic on float16/bfloat16 tensors.
    "two-pass in float32, half dtypes": (TWO_PASS_FLOAT32, ("float16", "bfloat16"), "normal"),
    "two-pass in float32, half dtypes, offset data": (TWO_PASS_FLOAT32, ("float16", "bfloat16"), "offset"),
    # A one-pass variance is harmless on well-centred data: a failure on offset data is conditioning.
    "one-pass, own dtype": (ONE_PASS, ("float64", "float32"), "normal"),
}
# (implementation, dtypes, data, quantities that must fail): the bugs the model must catch, on every case.
BUGGY = {
    "one-pass variance on offset data": (
        ONE_PASS, ("float64", "float32"), "offset", {"y", "dx", "dgamma", "running_var"}
    ),
    "float64 computed in float32": (
        TWO_PASS_FLOAT32, ("float64",), "normal", {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var"}
    ),
}


@pytest.mark.parametrize("impl, dtypes, data", CORRECT.values(), ids=CORRECT.keys())
def test_correct_implementation_passes(impl: NumpyImplementation, dtypes: tuple[str, ...], data: str) -> None:
    for case in layout_cases(dtypes, data=data, steps=3):
        drive(impl, case).verify()


@pytest.mark.parametrize("impl, dtypes, data, quantities", BUGGY.values(), ids=BUGGY.keys())
def test_numerical_bug_is_caught(
    impl: NumpyImplementation, dtypes: tuple[str, ...], data: str, quantities: set[str]
) -> None:
    for case in layout_cases(dtypes, data=data, steps=3):
        failed = {c.quantity for c in drive(impl, case).failures()}
        assert quantities <= failed, f"{case.id}: only {sorted(failed)} failed"


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_output_tolerance_is_within_20x_of_a_correct_implementations_error(dtype: str) -> None:
    # Passing is not enough: a tolerance orders of magnitude above the rounding a correct implementation in
    # the same precision makes would let real bugs of that size through.
    comparisons = [c for case in layout_cases((dtype,), steps=3) for c in drive(TWO_PASS, case).comparisons]
    worst = max(c.error_ratio for c in comparisons if c.quantity == "y")
    assert 0.05 <= worst <= 1.0


# -- every bound must be able to fail: wrong answers are rejected at every size and dtype -------------------

def _large_conditioning(dtype: str, n: int, offset: float = 10.0) -> tuple:
    """Conditioning of a production-size channel (|mean| / std = ``offset``: ``data="large"`` draws 3 to 10,
    and 100 in its first channel), with the normalized values of a typical sample (|xhat| up to 3)."""
    mean, var = np.array([offset]), np.array([1.0])
    accumulation = BatchNormCase((1, 1), dtype=dtype).accumulation_dtype
    cond = Conditioning(dtype, n, mean, var, 1e-5, np.array([1.0]), accumulation)
    xhat = np.linspace(-3, 3, 61)[:, None]
    return cond, xhat


# bfloat16 at 100 spreads is left out: its bound allows elementwise work in bfloat16, whose rounding of the
# mean (100 * 2**-9 spreads) exceeds a normalized output; ``data="large"`` keeps its other channels at <= 10.
@pytest.mark.parametrize("dtype, offset", [(d, 10.0) for d in ("float64", "float32", "float16", "bfloat16")]
                         + [(d, 100.0) for d in ("float64", "float32", "float16")])
@pytest.mark.parametrize("log2_n", [0, 10, 18, 20, 24])
def test_bounds_reject_wrong_answers(dtype: str, offset: float, log2_n: int) -> None:
    """An all-zero output, the output with the mean left in and one with the wrong sign all fail the output
    bound; zero gradients fail theirs; the running variance left at its initial 1 fails (the reference's is
    4). The old model (storage precision for the reductions) accepted an all-zero float16 output from 2**18
    values per channel on."""
    cond, xhat = _large_conditioning(dtype, 2**log2_n, offset)
    y = xhat + 0.5
    for wrong in (np.zeros_like(y), y + offset, -y):
        assert not compare("y", wrong, y, cond.y(y, xhat)).passed
    dy = np.ones_like(xhat)
    dx = dy - dy.mean() - xhat * (dy * xhat).mean()
    assert not compare("dx", np.zeros_like(dx), dx + 1.0, cond.dx(dx + 1.0, dy, xhat)).passed
    assert not compare("dbeta", np.zeros(1), dy.sum(0), cond.dbeta(dy.sum(0), dy)).passed
    assert not compare("running_var", np.ones(1), np.full(1, 4.0), cond.running_var_step(np.full(1, 4.0))).passed


def test_inference_with_given_statistics_holds_a_far_channel_to_its_dtype() -> None:
    """A running mean 1e6 from the batch beside a zero running variance (kappa = 3e8): in float64 both the
    textbook ``(x - mean) / sigma`` and the folded ``x scale + shift`` pass, a float64 layer computing in
    float32 fails. The training bound's ``(1 + kappa)(1 + |xhat|)`` would have let the float32 one pass."""
    mean, var, eps, gamma, beta = np.array([1e6]), np.array([0.0]), 1e-5, np.array([-1.5]), np.array([0.5])
    x = np.random.default_rng(0).standard_normal((256, 1))
    sigma = np.sqrt(var + eps)
    xhat = (x - mean) / sigma
    y = gamma * xhat + beta
    scale = gamma / sigma
    in_float32 = [np.asarray(a, np.float32) for a in (x, mean, var, gamma, beta)]
    x32, mean32, var32, gamma32, beta32 = in_float32
    computed = {"textbook": y, "folded": x * scale + (beta - mean * scale),
                "float32": (gamma32 * (x32 - mean32) / np.sqrt(var32 + np.float32(eps)) + beta32).astype(np.float64)}
    cond = Conditioning("float64", 1, mean, var, eps, gamma, beta=beta)
    verdicts = {name: compare("y", got, y, cond.y(y, xhat)).passed for name, got in computed.items()}
    assert verdicts == {"textbook": True, "folded": True, "float32": False}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("convention", [TORCH, KERAS, STD_AVERAGE, HAIKU_LIKE], ids=lambda c: c.name)
def test_running_bounds_reject_a_state_that_did_not_move(dtype: str, convention) -> None:
    """After one production-size step (2**20 values per channel, |mean| / std = 5, new-batch weight 0.5), a
    running state left as it was built fails its bound, field by field, in every record's fields (a variance
    or its square root, plain or debiased), and so does what inference reads of it."""
    n, momentum = 2**20, convention.momentum_for(0.5)
    mean, var = np.array([10.0]), np.array([4.0])
    accumulation = BatchNormCase((1, 1), dtype=dtype).accumulation_dtype
    cond = Conditioning(dtype, n, mean, var, 1e-5, np.array([1.0]), accumulation)
    built = reference.initial_running_state(1, convention)
    trained = reference.update_running_state(built, mean, var, n, momentum, convention)
    running = RunningTolerance(dtype, convention, momentum)
    running.add_step(cond, trained, n)
    for name in ("running_mean", convention.spread_field):
        assert compare(name, trained[name], trained[name], running.tolerance(name, trained[name])).passed
        assert not compare(name, built[name], trained[name], running.tolerance(name, trained[name])).passed, name
    read = reference.running_statistics(trained, momentum, convention)
    stale = reference.running_statistics(built | {k: v for k, v in trained.items() if k == convention.counter},
                                         momentum, convention)
    for name, right, wrong, error in zip(("mean", "var"), read, stale, running.statistics_error(trained)):
        assert not compare(name, wrong, right, unit_roundoff(dtype) * np.abs(right) + error).passed, name


def test_half_precision_accumulation_is_not_excused() -> None:
    """With reductions declared in the input's precision (Flax's force_float32_reductions=False) the bound
    widens as such a sum's error does; by default they are held to float32."""
    default = BatchNormCase((4, 3), dtype="float16")
    declared = default.with_(options=(("force_float32_reductions", False),))
    assert (default.accumulation_dtype, declared.accumulation_dtype) == ("float32", "float16")
    assert BatchNormCase((4, 3), dtype="float64").accumulation_dtype == "float64"
