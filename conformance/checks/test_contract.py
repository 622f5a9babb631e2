"""The contract beyond the numbers, for every implementation.

- Bad input (a wrong channel count, rank 1, an integer or boolean dtype, a ``dy`` of another shape) gets an
  error, as the reference raises one, and leaves the state exactly as it was; the layer then still works.
- ``y`` has the input's shape and the dtype the implementation's documented policy states
  (:meth:`~conformance.adapters.base.Implementation.output_dtype`).
- The caller's arrays come back unmodified (every call of every check compares them bitwise; the worker
  process boundary writes modifications back, so it hides none); here with both modes and gradients.
Shapes at the boundary of what is accepted (a batch of one with spatial extent, one value per channel, an
empty batch) are edge cases (``test_edge_cases.py``); ``affine=False`` layers must hold no parameters and
return no gradients for them (checked wherever such a case runs)."""

import numpy as np
import pytest

from conformance.adapters.base import ALL_DTYPES
from conformance.cases import Case

pytestmark = pytest.mark.conformance

LAYOUTS = [Case((6, 3)), Case((4, 3, 2, 2)), Case((4, 2, 2, 3), channel_axis=-1)]


def _wrong_channels(case: Case, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.take(x, [0], axis=case.channel_axis)], axis=case.channel_axis)


BAD_INPUTS = {
    "wrong_channel_count": _wrong_channels,
    "rank_1": lambda case, x: np.moveaxis(x, case.channel_axis, 0)[:, 0, ...].reshape(-1)[: case.num_features],
    "integer_dtype": lambda case, x: np.rint(x).astype(np.int32),
    "boolean_dtype": lambda case, x: x > 0,
}
BAD = [(name, case, training) for name in BAD_INPUTS for case in LAYOUTS for training in (True, False)]


def _id(name: str, case: Case, training: bool) -> str:
    return f"{name}-{case.id}-{'training' if training else 'inference'}"


@pytest.mark.parametrize("name, case, training", BAD, ids=[_id(*p) for p in BAD])
def test_bad_input(conformance, name, case, training):
    mirror = conformance(case, bad_input=name, training=training)
    good, later = case.with_(steps=2).batches()
    mirror.forward(BAD_INPUTS[name](case, good), training=training, may_raise=True)
    mirror.compare_state(exact=True)  # nothing half-updated
    mirror.forward(later, training=training)
    mirror.compare_state()
    mirror.verify()


MISMATCHED_DY = [(case, training) for case in LAYOUTS for training in (True, False)]


@pytest.mark.parametrize("case, training", MISMATCHED_DY,
                         ids=[_id("mismatched_dy", c, t) for c, t in MISMATCHED_DY])
def test_mismatched_dy(impl, conformance, case, training):
    if reason := impl.capabilities.no_gradients:
        conformance.unsupported(f"gradients ({reason})")
    mirror = conformance(case, bad_input="mismatched_dy", training=training)
    x = case.batches()[0]
    dy = case.cotangent()[:-1]  # one sample fewer: no broadcasting can reconcile the shapes
    mirror.forward_backward(x, dy, training=training, may_raise=True)
    if not training:  # in training the forward may legitimately have updated the statistics before the error
        mirror.compare_state(exact=True)
    mirror.verify()


# The policy is the dtype's: every dtype, on the three layouts above.
POLICY = [(case.with_(dtype=dtype), training) for case in LAYOUTS for dtype in ALL_DTYPES for training in (True, False)]


@pytest.mark.parametrize("case, training", POLICY,
                         ids=[f"{c.id}-{'training' if t else 'inference'}" for c, t in POLICY])
def test_output_policy(conformance, case, training):
    mirror = conformance(case, training=training)
    mirror.output_policy(case.batches()[0], training=training)
    mirror.verify()


UNMODIFIED = [case.with_(dtype=dtype) for case in LAYOUTS for dtype in ("float32", "float16")]


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("case", UNMODIFIED, ids=[c.id for c in UNMODIFIED])
def test_caller_arrays_unmodified(impl, conformance, case, training):
    mirror = conformance(case, training=training)
    x, dy = case.batches()[0], case.cotangent()
    if impl.capabilities.no_gradients:
        mirror.forward(x, training=training)
    else:
        mirror.forward_backward(x, dy, training=training)
    mirror.verify()
