"""The caller's writes of ``harness/aliasing.py``: what a layer returned or was given is overwritten once the
caller has its copy, so that memory a layer shares with either shows in later results."""

import numpy as np

from conformance.core.state import State
from conformance.harness.aliasing import Detaching, detach


class _Sharing:
    """A layer that keeps what it was given and returns what it keeps: every kind of shared memory."""

    def __init__(self) -> None:
        self.gamma = np.ones(2)

    def set_state(self, state: State) -> None:
        self.gamma = state.gamma

    def get_state(self) -> State:
        return State(gamma=self.gamma)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x  # the caller's own input

    def forward_backward(self, x, dy, training):
        y = x * self.gamma
        return y, y, None, None  # dx shares y's memory


def test_detach_copies_then_poisons_in_order():
    a = np.ones(3)
    both = (a, a[:])  # two results sharing memory
    first, second = detach(both)
    assert np.array_equal(first, np.ones(3)) and np.isnan(second).all() and np.isnan(a).all()
    assert detach((np.arange(3), None, 2))[1:] == (None, 2)  # integers and None pass as they are


def test_state_read_back_is_the_callers():
    layer = Detaching(_Sharing())
    held = layer.get_state()
    assert np.array_equal(held.gamma, np.ones(2))
    assert np.isnan(layer.get_state().gamma).all()  # the layer's own array was the one returned


def test_assigned_arrays_are_reused_after_the_state_is_read_back():
    layer = Detaching(_Sharing())
    given = State(gamma=np.full(2, 3.0))
    layer.set_state(given)
    assert np.array_equal(layer.get_state().gamma, np.full(2, 3.0))  # read back before the caller reuses it
    y, dx, _, _ = layer.forward_backward(np.ones((1, 2)), np.ones((1, 2)), True)
    assert np.isnan(y).all()  # the layer kept the caller's array, which the caller then overwrote
    assert np.isnan(dx).all()


def test_a_returned_input_overwrites_the_callers_input():
    x = np.ones((2, 2))
    Detaching(_Sharing()).forward(x, True)
    assert np.isnan(x).all()
