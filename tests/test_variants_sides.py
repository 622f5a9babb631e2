"""The variants' reference sides (:mod:`conformance.operators.batchnorm.variants`): their tolerances accept the
variant computed in float32 and reject what an implementation that ignores the variant computes (plain BatchNorm,
consecutive ghost batches, renorm's correction left out or clipped at other bounds)."""

import numpy as np

import reference
from conformance.core.dtypes import round_to
from conformance.operators.batchnorm import BATCHNORM, BatchNormCase
from conformance.operators.batchnorm.variants import AdjustedReference, GhostReference, RenormReference
from reference import KERAS

CASE = BatchNormCase((16, 3), channel_axis=-1, dtype="float32")
CLIPPING = {"rmin": 0.8, "rmax": 1.25, "dmax": 0.5}


def _side():
    side = BATCHNORM.reference(CASE, KERAS, CASE.spec(KERAS))
    return side, CASE.initial_state(KERAS)


def _x() -> np.ndarray:
    return CASE.batches()[0]


def _passes(expected, value) -> bool:
    return expected.judge("y", value).passed


def _renorm(state: dict, clipping: dict) -> np.ndarray:
    x, eps = np.asarray(_x(), np.float64), CASE.eps
    mean, var = reference.batch_statistics(x, -1)
    averages = reference.renorm_state_for(state["running_mean"], state["running_var"], eps)
    r, d = reference.renorm_correction(mean, var, eps, averages["renorm_mean"], averages["renorm_stddev"], **clipping)
    return reference.corrected_forward_training(x, state["gamma"], state["beta"], eps, r, d, -1)[0]


def test_renorm_accepts_the_correction_and_rejects_plain_or_other_clipping():
    side, state = _side()
    ref = RenormReference(side, 0.3, CLIPPING)
    ref.assign(state)
    expected = ref.forward(_x(), training=True)["y"]
    assert _passes(expected, round_to(_renorm(state, CLIPPING), "float32"))
    plain = reference.forward_training(_x(), state["gamma"], state["beta"], CASE.eps, -1)[0]
    assert not _passes(expected, plain)
    assert not _passes(expected, _renorm(state, {}))  # the clipping binds on these batches


def test_ghost_batches_reject_whole_or_consecutive_batches():
    side, state = _side()
    ref = GhostReference(side, 2)
    ref.assign(state)
    expected = ref.forward(_x(), training=True)["y"]
    x = _x()
    ghost = reference.ghost_forward_training(x, state["gamma"], state["beta"], CASE.eps, 2, -1)[0]
    assert _passes(expected, round_to(ghost, "float32"))
    assert not _passes(expected, reference.forward_training(x, state["gamma"], state["beta"], CASE.eps, -1)[0])
    consecutive = np.concatenate([reference.forward_training(x[i:i + 2], state["gamma"], state["beta"], CASE.eps,
                                                             -1)[0] for i in range(0, 16, 2)])
    assert not _passes(expected, consecutive)


def test_adjustment_rejects_the_unadjusted_output_and_leaves_inference_plain():
    side, state = _side()
    scale, shift = np.array([0.75, 1.0, 1.3]), np.array([-0.45, 0.0, 0.35])
    ref = AdjustedReference(side, scale, shift)
    ref.assign(state)
    x = _x()
    expected = ref.forward(x, training=True)["y"]
    adjusted = reference.corrected_forward_training(x, state["gamma"], state["beta"], CASE.eps, scale, shift, -1)[0]
    assert _passes(expected, round_to(adjusted, "float32"))
    assert not _passes(expected, reference.forward_training(x, state["gamma"], state["beta"], CASE.eps, -1)[0])
    inference = ref.forward(x, training=False)["y"]
    assert not _passes(inference, adjusted)
