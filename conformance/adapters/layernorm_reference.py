"""LayerNorm's reference behind the adapter protocol, once per built-in LayerNorm convention: the harness's
self-check for the LayerNorm operator, run in-process without any framework."""

from __future__ import annotations

import numpy as np

import reference
from reference import LAYERNORM_CONVENTIONS, LayerNormConvention

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities, Implementation, State, as_numpy_float, framework_input

FEATURES = frozenset({"affine_false", "scale_false", "bias_false", "multi_axis"})


class ReferenceParameters:
    """A stateless normalization's layer state: gamma and beta of ``shape`` where the spec has them, held and
    handed out as copies (the caller may write into its arrays afterwards: ``harness/aliasing.py``)."""

    def __init__(self, spec, shape: tuple[int, ...]) -> None:
        self.spec = spec
        self.gamma = np.ones(shape) if spec.affine else None
        self.beta = np.zeros(shape) if spec.bias else None

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            setattr(self, name, np.array(value, dtype=np.float64))

    def get_state(self) -> State:
        return State(**{name: None if value is None else value.copy()
                        for name, value in (("gamma", self.gamma), ("beta", self.beta))}, eps=self.spec.eps)


class ReferenceLayerNormLayer(ReferenceParameters):
    def __init__(self, spec: LayerNormSpec, convention: LayerNormConvention) -> None:
        super().__init__(spec, spec.normalized_shape)
        self.placement, self.centered = convention.eps_placement, convention.centered

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = framework_input(x)[0]
        shape = self.spec.normalized_shape
        if tuple(x.shape[max(x.ndim - len(shape), 0):]) != shape or x.ndim < len(shape):
            raise ValueError(f"expected trailing axes {shape}, got {x.shape}")
        return x

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return reference.layer_norm(self._checked(x), self.gamma, self.beta, self.spec.eps, self.spec.begin_axis,
                                    self.placement, self.centered)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        y = self.forward(x, training)
        dx, dgamma, dbeta = reference.layer_norm_backward(framework_input(dy)[0], self._checked(x), self.gamma,
                                                          self.spec.eps, self.spec.begin_axis, self.placement,
                                                          self.centered)
        return y, dx, dgamma if self.spec.affine else None, dbeta if self.spec.bias else None

    def double_backward(self, x, dy, vx, vgamma, vbeta) -> tuple:
        hx, hgamma, hbeta = reference.layer_norm_hvp(as_numpy_float(dy), self._checked(x), self.gamma, self.spec.eps,
                                                     as_numpy_float(vx), vgamma, self.spec.begin_axis, self.placement,
                                                     self.centered)
        return hx, hgamma if self.spec.affine else None, hbeta if self.spec.bias else None


class ReferenceLayerNorm(Implementation):
    family = "reference"
    framework = "numpy"
    operator = LAYERNORM
    isolated = False
    benchmarked = False

    def __init__(self, convention: LayerNormConvention) -> None:
        self.name = f"reference.{convention.name}"
        self.convention = convention
        self.capabilities = Capabilities(ranks=frozenset({1, 2, 3, 4, 5}), features=FEATURES, double_backward=True)

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()

    def output_dtype(self, spec: LayerNormSpec) -> str:
        return "float64"

    def build(self, spec: LayerNormSpec) -> ReferenceLayerNormLayer:
        return ReferenceLayerNormLayer(spec, self.convention)


IMPLEMENTATIONS = [ReferenceLayerNorm(convention) for convention in LAYERNORM_CONVENTIONS.values()]
