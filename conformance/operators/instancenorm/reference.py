"""The reference side of InstanceNorm with running statistics: :class:`InstanceNormReference`.

BatchNorm's reference side driving :class:`reference.InstanceNorm`: calls that normalize with the running
statistics are BatchNorm's inference, answered and bounded as BatchNorm's; calls that normalize per instance
(training, or no running statistics) are GroupNorm's with a group per channel, bounded by GroupNorm's tolerance
model. A training step's error in the running averages is bounded as BatchNorm's step with the largest instance
mean and variance of each channel (every term of the step's bound grows with both, so the bound of the average
over the samples is at most that), rounded as a reduction over all the channel's values.
"""

from __future__ import annotations

import numpy as np

import reference

from ...core.comparison import Expected
from ...core.dtypes import framework_input
from ..batchnorm.reference import BatchNormReference, _values_per_channel
from ..batchnorm.tolerances import Conditioning
from ..groupnorm.tolerances import GroupNormTolerance

__all__ = ["InstanceNormReference"]


class InstanceNormReference(BatchNormReference):
    LAYER = reference.InstanceNorm

    def _per_instance(self, training: bool) -> bool:
        return self._training(training) or not self.case.track_running_stats

    def _args(self) -> tuple:
        return self.layer.eps, self.case.num_features, self.axis

    def _tolerance(self, x64: np.ndarray) -> GroupNormTolerance:
        layer = self.layer
        return GroupNormTolerance(x64, layer.gamma, *self._args(), self.case.dtype, self.case.accumulation_dtype,
                                  beta=layer.beta)

    def _instance_forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, np.ndarray, GroupNormTolerance]:
        """The reference's forward (raising where the input is an error), ``x`` in float64 and the tolerances."""
        previous = self.layer.state
        y = self.layer.forward(framework_input(x)[0], self._training(training))
        x64 = np.asarray(x, dtype=np.float64)
        if self._training(training) and self.case.track_running_stats:
            mean, var = reference.group_norm_statistics(x64, self.case.num_features, self.axis)
            step = Conditioning(self.case.dtype, _values_per_channel(x64, self.case.num_features),
                                np.abs(mean).max(axis=0), var.max(axis=0), self.layer.eps,
                                np.ones(self.case.num_features), self.case.accumulation_dtype)
            self.running_tolerance.add_step(step, self.layer.state, x64[0:1].size // self.case.num_features,
                                            previous)
        return y, x64, self._tolerance(x64)

    # -- the ReferenceSide protocol --------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        if not self._per_instance(training):
            return super().forward(x, training)
        y, _, tol = self._instance_forward(x, training)
        return {"y": Expected(y, tol.y(y))}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        if not self._per_instance(training):
            return super().forward_backward(x, dy, training)
        y, _, tol = self._instance_forward(x, training)
        dx, layer = self.layer.backward(framework_input(dy)[0]), self.layer
        dy64 = np.asarray(dy, dtype=np.float64)
        expected = {"y": Expected(y, tol.y(y)), "dx": Expected(dx, tol.dx(dx, dy64))}
        if not self.case.affine:
            return expected | {"dgamma": Expected(None), "dbeta": Expected(None)}
        return expected | {"dgamma": Expected(layer.dgamma, tol.dgamma(layer.dgamma, dy64)),
                           "dbeta": Expected(layer.dbeta, tol.dbeta(layer.dbeta, dy64))}

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]
                        ) -> dict[str, Expected]:
        x64, dy64 = np.asarray(x, dtype=np.float64), np.asarray(dy, dtype=np.float64)
        vx, vgamma = np.asarray(direction["vx"], dtype=np.float64), direction["vgamma"]
        eps, groups, axis = self._args()
        hx, hgamma, hbeta = reference.group_norm_hvp(dy64, x64, self.layer.gamma, eps, vx, vgamma, groups, axis)
        tx, tgamma = self._tolerance(x64).second_order(hx, hgamma, dy64, vx, vgamma)
        expected = {"hvp_x": Expected(hx, tx)}
        if not self.case.affine:
            return expected | {"hvp_gamma": Expected(None), "hvp_beta": Expected(None)}
        return expected | {"hvp_gamma": Expected(hgamma, tgamma), "hvp_beta": Expected(hbeta)}
