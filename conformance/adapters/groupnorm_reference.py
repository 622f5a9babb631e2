"""GroupNorm's reference behind the adapter protocol, once per built-in GroupNorm and InstanceNorm convention:
the harness's self-check for the GroupNorm operator, run in-process without any framework."""

from __future__ import annotations

import numpy as np

import reference
from reference import GROUPNORM_CONVENTIONS, GroupNormConvention

from ..operators.groupnorm import GROUPNORM, GroupNormSpec
from .base import Capabilities, Implementation, as_numpy_float, framework_input
from .layernorm_reference import ReferenceParameters


class ReferenceGroupNormLayer(ReferenceParameters):
    def __init__(self, spec: GroupNormSpec) -> None:
        super().__init__(spec, spec.parameter_shape)

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = framework_input(x)[0]
        spec = self.spec
        if x.ndim != spec.rank or x.shape[spec.channel_axis] != spec.num_channels:
            raise ValueError(f"expected rank {spec.rank} with {spec.num_channels} channels, got {x.shape}")
        return x

    def _per_channel(self, value: np.ndarray | None) -> np.ndarray | None:
        return reference.per_channel(value, self.spec.num_channels) if self.spec.per_group else value

    def _per_parameter(self, gradient: np.ndarray) -> np.ndarray:
        return reference.per_group(gradient, self.spec.groups) if self.spec.per_group else gradient

    def _args(self) -> tuple:
        return self.spec.eps, self.spec.groups, self.spec.channel_axis

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return reference.group_norm(self._checked(x), self._per_channel(self.gamma), self._per_channel(self.beta),
                                    *self._args())

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        y = self.forward(x, training)
        dx, dgamma, dbeta = reference.group_norm_backward(framework_input(dy)[0], self._checked(x),
                                                          self._per_channel(self.gamma), *self._args())
        return (y, dx, self._per_parameter(dgamma) if self.spec.affine else None,
                self._per_parameter(dbeta) if self.spec.bias else None)

    def double_backward(self, x, dy, vx, vgamma, vbeta) -> tuple:
        hx, hgamma, hbeta = reference.group_norm_hvp(as_numpy_float(dy), self._checked(x), self.gamma, self.spec.eps,
                                                     as_numpy_float(vx), vgamma, self.spec.groups,
                                                     self.spec.channel_axis)
        return hx, hgamma if self.spec.affine else None, hbeta if self.spec.bias else None


class ReferenceGroupNorm(Implementation):
    family = "reference"
    framework = "numpy"
    operator = GROUPNORM
    isolated = False
    benchmarked = False

    def __init__(self, convention: GroupNormConvention) -> None:
        self.name = f"reference.{convention.name}"
        self.convention = convention
        features = {"affine_false", "scale_false", "bias_false"} | (set() if convention.instance else {"grouped"})
        # A layer's parameters per group take a direction per group, which the case (per channel) does not give.
        self.capabilities = Capabilities(ranks=frozenset({2, 3, 4, 5}), features=frozenset(features),
                                         double_backward=convention.parameter_shape == "channel")

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()

    def output_dtype(self, spec: GroupNormSpec) -> str:
        return "float64"

    def build(self, spec: GroupNormSpec) -> ReferenceGroupNormLayer:
        return ReferenceGroupNormLayer(spec)


IMPLEMENTATIONS = [ReferenceGroupNorm(convention) for convention in GROUPNORM_CONVENTIONS.values()]
