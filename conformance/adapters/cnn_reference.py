"""The CNN's reference network behind the adapter protocol, in PyTorch's convention: the harness's self-check
for the CNN operator (conversions, state, comparisons and tolerances on a second operator), run in-process
without any framework."""

from __future__ import annotations

import numpy as np

from reference import TORCH

from ..operators.cnn import CNN, NetworkSpec
from ..operators.cnn.network import Network
from .base import Capabilities, Implementation, State, framework_input


class ReferenceNetworkLayer:
    def __init__(self, spec: NetworkSpec, convention) -> None:
        self.network, self.axis = Network(spec, convention), spec.channel_axis

    def _canonical(self, x: np.ndarray) -> np.ndarray:
        x = framework_input(x)[0]
        return np.moveaxis(x, -1, 1) if self.axis == -1 and x.ndim == 4 else x

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            self.network.set(name, value)

    def get_state(self) -> State:
        return State(**self.network.state)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.network.forward(self._canonical(x), training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        y = self.forward(x, training)
        dx, grads = self.network.backward(dy)
        return y, np.moveaxis(dx, 1, -1) if self.axis == -1 else dx, *grads.values()


class ReferenceNetwork(Implementation):
    name = "reference.cnn"
    family = "reference"
    framework = "numpy"
    operator = CNN
    convention = TORCH
    isolated = False
    benchmarked = False
    capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}), ranks=frozenset({4}))

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()

    def output_dtype(self, spec: NetworkSpec) -> str:
        return "float64"

    def build(self, spec: NetworkSpec) -> ReferenceNetworkLayer:
        return ReferenceNetworkLayer(spec, self.convention)


IMPLEMENTATIONS = [ReferenceNetwork()]
