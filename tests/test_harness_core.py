"""The operator-neutral core: a layer's state as named fields (:class:`State`), and what the BatchNorm operator
record tells the Mirror and the plugin (the names of the outputs it compares, its cases, its reference)."""

import pickle

import numpy as np
import pytest
from records import STD_AVERAGE

from conformance.core.state import HYPERPARAMETERS, State
from conformance.operators.batchnorm import BATCHNORM, BatchNormCase
from reference import KERAS, TORCH


def test_state_is_an_immutable_mapping_of_its_fields():
    state = State(gamma=np.ones(2), running_mean=None, num_batches_tracked=3, eps=1e-5)
    assert dict(state) == {"gamma": state.gamma, "running_mean": None, "num_batches_tracked": 3, "eps": 1e-5}
    assert len(state) == 4 and state["num_batches_tracked"] == 3 and state.get("counter") is None
    assert state.running_var is None  # a field the layer does not have reads as None ...
    with pytest.raises(KeyError):
        state["running_var"]  # ... but is no key of it
    with pytest.raises(AttributeError, match=r"State is immutable: use state.replace\(gamma=...\)"):
        state.gamma = np.zeros(2)
    with pytest.raises(AttributeError):
        state._fields_of_another  # noqa: B018 (private names stay away from the fields: copy, pickle)


def test_state_replace_and_assigned():
    state = State(gamma=np.ones(2), beta=None, counter=0, eps=1e-3, momentum=0.9)
    changed = state.replace(counter=4, beta=np.zeros(2))
    assert (state.counter, state.beta) == (0, None) and changed.counter == 4 and changed.beta is not None
    # What set_state assigns: fields with a value, the hyperparameters (reported, never assigned) aside.
    assert set(HYPERPARAMETERS) == {"eps", "momentum"}
    assert set(state.assigned()) == {"gamma", "counter"} and set(changed.assigned()) == {"gamma", "beta", "counter"}


def test_state_survives_pickling():
    # It crosses to worker processes and back.
    state = State(gamma=np.arange(3.0), num_batches_tracked=2)
    back = pickle.loads(pickle.dumps(state))
    assert back.keys() == state.keys() and back.num_batches_tracked == 2
    np.testing.assert_array_equal(back.gamma, state.gamma)


def test_the_operator_names_what_the_mirror_compares():
    assert BATCHNORM.parameters == ("gamma", "beta")
    assert BATCHNORM.gradients == ("y", "dx", "dgamma", "dbeta")
    assert BATCHNORM.second_order == ("hvp_x", "hvp_gamma", "hvp_beta")
    assert BATCHNORM.case is BatchNormCase


@pytest.mark.parametrize("convention", [TORCH, KERAS], ids=lambda c: c.name)
def test_a_case_speaks_each_records_momentum_and_fields(convention):
    case = BatchNormCase((4, 3), new_batch_weight=0.1)
    spec = case.spec(convention)
    assert spec.momentum == pytest.approx(0.1 if convention.momentum_weights == "new" else 0.9)
    assert set(case.initial_state(convention)) == {"gamma", "beta", "running_mean", convention.spread_field}
    side = BATCHNORM.reference(case, convention, spec)  # the reference side of a Mirror, in that record
    assert set(side.state()) == {"gamma", "beta", *convention.running_fields}
    assert side.state()["running_var"].value.tolist() == [1.0, 1.0, 1.0]  # as built, before any assignment


def test_a_case_gives_every_record_the_same_statistics():
    # A record averaging the standard deviation holds the root of the variance the others hold.
    case = BatchNormCase((4, 3))
    plain, rooted = case.initial_state(TORCH), case.initial_state(STD_AVERAGE)
    np.testing.assert_allclose(rooted["running_std"] ** 2, plain["running_var"], rtol=2.0**-51)
    np.testing.assert_array_equal(rooted["running_mean"], plain["running_mean"])
