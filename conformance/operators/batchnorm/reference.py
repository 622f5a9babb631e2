"""BatchNorm's reference side of a Mirror: :class:`BatchNormReference`.

It drives :class:`reference.BatchNorm` in the implementation's convention record with the implementation's
own spec, and answers every call with the expected values and their tolerances from the tolerance model
(:mod:`.tolerances`): per element for outputs and gradients, accumulated over the training steps for the
running state. Expected arrays keep the layer's layout; tolerances are computed with the channels last
(so per-channel bounds broadcast) and moved back.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import reference
from reference import Convention

from ...core.comparison import Expected
from ...core.dtypes import framework_input
from ...core.state import State
from .cases import BatchNormCase
from .spec import LayerSpec
from .tolerances import Conditioning, RunningTolerance

__all__ = ["BatchNormReference"]

# eps and momentum as held may be stored in float32 (ONNX attributes are): that rounding is allowed.
_HYPERPARAMETER_RTOL = 2.0**-24


def _values_per_channel(x: np.ndarray, channels: int) -> int:
    """Of the call's own batch, not the case's shape: a stateful exploration varies the batch from call to call."""
    return x.size // max(channels, 1)


class BatchNormReference:
    LAYER: type[reference.BatchNorm] = reference.BatchNorm  # the stateful reference layer it drives

    def __init__(self, case: BatchNormCase, convention: Convention, spec: LayerSpec, state_dtype: str | None = None
                 ) -> None:
        """``state_dtype``: the dtype the layer keeps its running statistics in, the case's unless given (a
        mixed-precision layer's float32 variables beside half-precision input: its running statistics are then
        held to that dtype's tolerance, ``transforms/mixed_precision.py``)."""
        self.case, self.convention, self.spec = case, convention, spec
        self.state_dtype = state_dtype or case.dtype
        self.layer = self.LAYER(
            case.num_features, convention=convention, momentum=spec.momentum, eps=spec.eps, affine=case.affine,
            track_running_stats=case.track_running_stats, channel_axis=case.channel_axis,
        )
        self.running_tolerance = RunningTolerance(self.state_dtype, convention, spec.momentum)
        self.axis = case.channel_axis
        # The parameters' tolerance: none, as no call may change them; where they were carried in from
        # elsewhere (a port), the rounding to the case's dtype.
        self.parameter_tolerance = 0.0

    # -- helpers ---------------------------------------------------------------------------------
    def _last(self, a: np.ndarray) -> np.ndarray:
        return np.moveaxis(np.asarray(a, dtype=np.float64), self.axis, -1)

    def _back(self, tolerance: np.ndarray) -> np.ndarray:
        """A tolerance computed with the channels last, in the layer's layout."""
        return np.moveaxis(tolerance, -1, self.axis)

    def _training(self, training: bool) -> bool:
        return training and self.case.trainable  # Keras: a non-trainable layer runs in inference mode

    def _conditioning(self, x64: np.ndarray, batch: bool) -> tuple[Conditioning, np.ndarray]:
        """What the tolerances depend on for a call normalizing with the batch's statistics or the running
        ones (with the error the layer's own training steps were allowed in them), and ``xhat``."""
        layer, case = self.layer, self.case
        errors = {}
        if batch:
            mean, var = reference.batch_statistics(x64, case.channel_axis)
            n = _values_per_channel(x64, case.num_features)
        else:
            state = layer.state
            mean, var = reference.running_statistics(state, layer.momentum, self.convention)
            n = 1
            errors = dict(zip(("mean_error", "var_error"), self.running_tolerance.statistics_error(state)))
        gamma = layer.gamma if layer.gamma is not None else np.ones(case.num_features)
        beta = layer.beta if layer.beta is not None else 0.0
        cond = Conditioning(case.dtype, n, mean, var, layer.eps, gamma, case.accumulation_dtype, beta=beta, **errors)
        return cond, (self._last(x64) - mean) / cond.sigma

    def conditioning(self, x: np.ndarray, training: bool) -> tuple[Conditioning, np.ndarray]:
        """What the tolerances of a call on ``x`` depend on, and ``xhat``, both with the channels last: for a
        transform's reference side that expects more of the call than this one does (the shard transform's
        per-rank parameter gradients)."""
        batch = self._training(training) or not self.case.track_running_stats
        return self._conditioning(np.asarray(x, dtype=np.float64), batch)

    def _forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, Conditioning, np.ndarray]:
        """The reference's forward (raising where the input is an error), its conditioning and ``xhat``."""
        training = self._training(training)
        previous = self.layer.state
        y = self.layer.forward(framework_input(x)[0], training)
        cond, xhat = self._conditioning(np.asarray(x, dtype=np.float64), training or not self.case.track_running_stats)
        if training and self.case.track_running_stats and x.size:
            # The batch statistics as the running state takes them in: computed and stored in its dtype.
            stored = cond if self.state_dtype == cond.dtype else replace(cond, dtype=self.state_dtype)
            self.running_tolerance.add_step(stored, self.layer.state, _values_per_channel(x, self.case.num_features),
                                            previous)
        return y, cond, xhat

    # -- the ReferenceSide protocol --------------------------------------------------------------------
    def assign(self, held: State) -> None:
        """Start from ``held``: assigned running statistics carry no error of earlier steps (a port carries
        its source's in afterwards, :meth:`RunningTolerance.carry`)."""
        for name in self.layer.state_fields:
            if held.get(name) is not None and getattr(self.layer, name) is not None:
                setattr(self.layer, name, held[name])
        if any(held.get(name) is not None for name in self.running_tolerance.accumulated):
            self.running_tolerance = RunningTolerance(self.state_dtype, self.convention, self.spec.momentum)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        y, cond, xhat = self._forward(x, training)
        return {"y": Expected(y, self._back(cond.y(self._last(y), xhat)))}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        y, cond, xhat = self._forward(x, training)
        dx = self.layer.backward(framework_input(dy)[0])
        dy_last = self._last(dy)
        expected = {"y": Expected(y, self._back(cond.y(self._last(y), xhat))),
                    "dx": Expected(dx, self._back(cond.dx(self._last(dx), dy_last, xhat)))}
        layer = self.layer
        if not self.case.affine:  # no parameters: no gradients for them either
            return expected | {"dgamma": Expected(None), "dbeta": Expected(None)}
        return expected | {"dgamma": Expected(layer.dgamma, cond.dgamma(layer.dgamma, dy_last, xhat)),
                           "dbeta": Expected(layer.dbeta, cond.dbeta(layer.dbeta, dy_last))}

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]
                        ) -> dict[str, Expected]:
        x64 = np.asarray(x, dtype=np.float64)
        cond, xhat = self._conditioning(x64, batch=True)
        vx, vgamma, layer = direction["vx"], direction["vgamma"], self.layer
        hx, hgamma, hbeta = reference.hvp_training(np.asarray(dy, np.float64), x64, layer.gamma, layer.eps,
                                                   np.asarray(vx, np.float64), vgamma, self.axis)
        vgamma64 = np.zeros(self.case.num_features) if vgamma is None else np.asarray(vgamma, np.float64)
        bounds = cond.second_order(self._last(dy), self._last(vx), vgamma64, xhat)
        expected = {"hvp_x": Expected(hx, self._back(cond.u * np.abs(self._last(hx)) + bounds["hvp_x"]))}
        if not self.case.affine:
            return expected | {"hvp_gamma": Expected(None), "hvp_beta": Expected(None)}
        return expected | {"hvp_gamma": Expected(hgamma, cond.u * np.abs(hgamma) + bounds["hvp_gamma"]),
                           "hvp_beta": Expected(hbeta, bounds["hvp_beta"])}

    def state(self, exact: bool = False) -> dict[str, Expected]:
        """Parameters (which no forward call may change: exactly), the running averages (within their
        accumulated tolerance, or exactly with ``exact``) and the counter (exactly, where reported)."""
        state, averages = self.layer.state, ("running_mean", self.convention.spread_field)

        def tolerance(name: str, value: object) -> object:
            if value is None or exact or name == self.convention.counter:
                return 0.0
            if name in averages:
                return self.running_tolerance.tolerance(name, value)
            return self.parameter_tolerance * np.abs(value)

        return {name: Expected(value, tolerance(name, value), optional=name == self.convention.counter)
                for name, value in state.items()}

    def hyperparameters(self) -> dict[str, Expected]:
        """The ``eps`` and ``momentum`` the layer was built with, within float32 rounding."""
        return {name: Expected(built, 0.0 if built is None else _HYPERPARAMETER_RTOL * abs(built))
                for name, built in (("eps", self.spec.eps), ("momentum", self.spec.momentum))}

