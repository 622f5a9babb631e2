"""The contract beyond the numbers, for every implementation.

- Bad input (one feature too many along the parameters' axis, rank 1, an integer or boolean dtype, a ``dy``
  of another shape) gets an error, as the reference raises one, and leaves the state exactly as it was; the
  layer then still works.
- ``y`` has the input's shape and the dtype the implementation's documented policy states
  (:meth:`~conformance.adapters.base.Implementation.output_dtype`).
- The caller's arrays come back unmodified (every call of every check compares them bitwise; the worker
  process boundary writes modifications back, so it hides none); here with both modes and gradients, and
  nothing else judged: a wrong output is the output checks' failure, never this one's.
Shapes at the boundary of what is accepted are edge cases (``test_edge_cases.py``); layers without
parameters must return no gradients for them (checked wherever such a case runs)."""

import numpy as np
import pytest

pytestmark = pytest.mark.conformance


def _wrong_size(case, x: np.ndarray) -> np.ndarray:
    axis = case.parameter_axis
    return np.concatenate([x, np.take(x, [0], axis=axis)], axis=axis)


def _rank_1(case, x: np.ndarray) -> np.ndarray:
    axis = case.parameter_axis
    return np.moveaxis(x, axis, 0)[:, 0, ...].reshape(-1)[: x.shape[axis]]


BAD_INPUTS = {
    "wrong_channel_count": _wrong_size,
    "rank_1": _rank_1,
    "integer_dtype": lambda case, x: np.rint(x).astype(np.int32),
    "boolean_dtype": lambda case, x: x > 0,
}
MODES = pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])


@MODES
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input(impl, conformance, case, name, training):
    if reason := impl.capabilities.no_bad_input:
        conformance.unsupported(f"bad input ({reason})")
    mirror = conformance(case, bad_input=name, training=training)
    good, later = case.with_(steps=2).batches()
    mirror.forward(BAD_INPUTS[name](case, good), training=training, may_raise=True)
    mirror.compare_state(exact=True)  # nothing half-updated
    mirror.forward(later, training=training)
    mirror.compare_state()
    mirror.verify()


@MODES
def test_mismatched_dy(impl, conformance, case, training):
    if reason := impl.capabilities.no_gradients or impl.capabilities.no_bad_input:
        conformance.unsupported(f"mismatched dy ({reason})")
    mirror = conformance(case, bad_input="mismatched_dy", training=training)
    x = case.batches()[0]
    dy = case.cotangent()[:-1]  # one sample fewer: no broadcasting can reconcile the shapes
    mirror.forward_backward(x, dy, training=training, may_raise=True)
    if not training:  # in training the forward may legitimately have updated the statistics before the error
        mirror.compare_state(exact=True)
    mirror.verify()


@MODES
def test_output_policy(conformance, case, training):
    mirror = conformance(case, training=training)
    mirror.output_policy(case.batches()[0], training=training)
    mirror.verify()


@MODES
def test_caller_arrays_unmodified(conformance, case, training):
    mirror = conformance(case, training=training)
    mirror.leaves_inputs(case.batches()[0], case.cotangent(), training=training)
    mirror.verify()
