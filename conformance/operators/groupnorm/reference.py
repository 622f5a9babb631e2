"""GroupNorm's reference side of a Mirror: :class:`GroupNormReference`.

It computes :func:`reference.group_norm` and its derivatives in float64 with the layer's spec (groups, channel
axis, eps, which parameters exist) and answers each call with the expected values and their tolerances
(:mod:`.tolerances`). GroupNorm keeps no running state and behaves the same in training and inference: its
state is gamma and beta, which no call may change. Parameters per group (a convention's ``parameter_shape``)
are the per-channel ones repeated over each group's channels, and their gradients the per-channel ones summed
over it.
"""

from __future__ import annotations

import numpy as np

import reference
from reference import GroupNormConvention

from ...core.comparison import Expected
from ...core.dtypes import framework_input
from ...core.state import State
from .cases import GroupNormCase
from .spec import GroupNormSpec
from .tolerances import GroupNormTolerance

__all__ = ["GroupNormReference"]

# eps as held may be stored in float32 (ONNX attributes are): that rounding is allowed.
_HYPERPARAMETER_RTOL = 2.0**-24


class GroupNormReference:
    def __init__(self, case: GroupNormCase, convention: GroupNormConvention, spec: GroupNormSpec) -> None:
        self.case, self.convention, self.spec = case, convention, spec
        shape = spec.parameter_shape
        self.params = {"gamma": np.ones(shape) if spec.affine else None, "beta": np.zeros(shape) if spec.bias else None}

    def _input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the reference takes it, raising where the layer should: a rank or channel count other than
        the layer was built for."""
        x = framework_input(x)[0]
        spec = self.spec
        if x.ndim != spec.rank or x.shape[spec.channel_axis] != spec.num_channels:
            raise ValueError(f"expected a rank {spec.rank} input with {spec.num_channels} channels at axis "
                             f"{spec.channel_axis}, got {x.shape}")
        return x

    def _per_channel(self, name: str) -> np.ndarray | None:
        value = self.params[name]
        return reference.per_channel(value, self.spec.num_channels) if self.spec.per_group else value

    def _per_parameter(self, gradient: np.ndarray) -> np.ndarray:
        """A gradient per channel as the layer's parameters hold it (summed per group where they are per group)."""
        return reference.per_group(gradient, self.spec.groups) if self.spec.per_group else gradient

    def _args(self) -> tuple:
        return self.spec.eps, self.spec.groups, self.spec.channel_axis

    def _tolerance(self, x: np.ndarray) -> GroupNormTolerance:
        return GroupNormTolerance(np.asarray(x, dtype=np.float64), self._per_channel("gamma"), *self._args(),
                                  self.case.dtype, self.case.accumulation_dtype, self.spec.per_group,
                                  beta=self._per_channel("beta"))

    def _y(self, x: np.ndarray) -> tuple[np.ndarray, GroupNormTolerance, Expected]:
        x = self._input(x)
        y = reference.group_norm(x, self._per_channel("gamma"), self._per_channel("beta"), *self._args())
        tol = self._tolerance(x)
        return x, tol, Expected(y, tol.y(y))

    # -- the ReferenceSide protocol --------------------------------------------------------------------
    def assign(self, held: State) -> None:
        for name in self.params:
            if held.get(name) is not None and self.params[name] is not None:
                self.params[name] = np.asarray(held[name], dtype=np.float64)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return {"y": self._y(x)[2]}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        x, tol, y = self._y(x)
        dy = np.asarray(framework_input(dy)[0], dtype=np.float64)
        dx, dgamma, dbeta = reference.group_norm_backward(dy, x, self._per_channel("gamma"), *self._args())
        dgamma, dbeta = self._per_parameter(dgamma), self._per_parameter(dbeta)
        return {"y": y, "dx": Expected(dx, tol.dx(dx, dy)),
                "dgamma": Expected(dgamma, tol.dgamma(dgamma, dy)) if self.spec.affine else Expected(None),
                "dbeta": Expected(dbeta, tol.dbeta(dbeta, dy)) if self.spec.bias else Expected(None)}

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]
                        ) -> dict[str, Expected]:
        if self.spec.per_group:
            # The case's direction is per channel; a per-group layer's parameters are not (its implementations
            # declare no double backward).
            raise NotImplementedError("second order of a layer with parameters per group")
        x = self._input(x)
        dy, vx, vgamma = np.asarray(dy, np.float64), np.asarray(direction["vx"], np.float64), direction["vgamma"]
        hx, hgamma, hbeta = reference.group_norm_hvp(dy, x, self.params["gamma"], self.spec.eps, vx, vgamma,
                                                     self.spec.groups, self.spec.channel_axis)
        tx, tgamma = self._tolerance(x).second_order(hx, hgamma, dy, vx, vgamma)
        return {"hvp_x": Expected(hx, tx),
                "hvp_gamma": Expected(hgamma, tgamma) if self.spec.affine else Expected(None),
                "hvp_beta": Expected(hbeta) if self.spec.bias else Expected(None)}

    def state(self, exact: bool = False) -> dict[str, Expected]:
        """gamma and beta, exactly: no call changes them."""
        return {name: Expected(value) for name, value in self.params.items()}

    def hyperparameters(self) -> dict[str, Expected]:
        return {"eps": Expected(self.spec.eps, _HYPERPARAMETER_RTOL * self.spec.eps)}
