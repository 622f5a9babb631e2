"""The reference itself behind the adapter protocol, once per built-in convention: a self-check that the
harness (conversions, state handling, comparisons) is honest."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import reference
from reference import CONVENTIONS, Convention

from .base import Capabilities, Implementation, LayerSpec, State, as_numpy_float, framework_input


class ReferenceLayer:
    def __init__(self, spec: LayerSpec, convention: Convention) -> None:
        self.bn = reference.BatchNorm(
            spec.num_features,
            convention=convention,
            momentum=spec.momentum,
            eps=spec.eps,
            affine=spec.affine,
            track_running_stats=spec.track_running_stats,
            channel_axis=spec.channel_axis,
        )
        self.trainable = spec.trainable

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():  # copies: the caller may reuse its arrays
            setattr(self.bn, name, np.array(value) if isinstance(value, np.ndarray) else value)

    def get_state(self) -> State:
        return State(**self.bn.state, eps=self.bn.eps, momentum=self.bn.momentum)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        # Keras semantics: a non-trainable layer runs in inference mode whatever ``training`` says.
        return self.bn.forward(framework_input(x)[0], training and self.trainable)

    def forward_backward(self, x, dy, training):
        y = self.forward(x, training)
        return y, self.bn.backward(framework_input(dy)[0]), self.bn.dgamma, self.bn.dbeta

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        bn = self.bn
        dy, x, vx = as_numpy_float(dy), framework_input(x)[0], as_numpy_float(vx)
        hvp = reference.hvp_training(dy, x, bn.gamma, bn.eps, vx, vgamma, bn.channel_axis)
        return hvp if bn.affine else (hvp[0], None, None)

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        # The reference takes NumPy itself: converting once only keeps bfloat16's cast out of the timing.
        x, dy = framework_input(x)[0], as_numpy_float(dy)
        if operation == "forward_backward":
            return lambda: self.forward_backward(x, dy, True)
        training = operation == "forward_training"
        return lambda: self.forward(x, training)


class ReferenceImplementation(Implementation):
    family = "reference"
    framework = "numpy"
    isolated = False

    def __init__(self, convention: Convention) -> None:
        self.name = f"reference.{convention.name}"
        self.convention = convention
        self.benchmarked = convention.name == "torch"  # the conventions differ only in the running statistics
        features = {"affine_false", "no_running_stats", "trainable_false"}
        features |= {"momentum_none"} if convention.cumulative_momentum else set()
        self.capabilities = Capabilities(features=frozenset(features), double_backward=True)

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()

    def output_dtype(self, spec: LayerSpec) -> str:
        return "float64"  # the specification computes and returns float64 whatever the input

    def build(self, spec: LayerSpec) -> ReferenceLayer:
        return ReferenceLayer(spec, self.convention)


IMPLEMENTATIONS = [ReferenceImplementation(convention) for convention in CONVENTIONS.values()]
