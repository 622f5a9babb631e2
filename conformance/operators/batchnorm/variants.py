"""Reference sides of BatchNorm variants with their own convention (:mod:`reference.variants`), each over
BatchNorm's own (:class:`BatchNormReference`, in the implementation's convention), which answers every call the
variant does not change (inference, the parameters, the state it shares) and supplies the batch's conditioning:

- :class:`AdjustedReference`: training normalizes to ``gamma (scale xhat + shift) + beta`` with given constants
  (tf-keras' ``adjustment``); the running statistics are BatchNorm's;
- :class:`RenormReference`: batch renormalization: the correction ``(r, d)`` from the renorm averages, which
  the state holds beside the inference averages (``moving_stddev``, ``renorm_mean``, ``renorm_stddev``);
- :class:`GhostReference`: ghost batches (``virtual_batch_size``), each normalized with its own statistics.

Tolerances are BatchNorm's model (:mod:`.tolerances`: :class:`Correction`, :class:`AveragesTolerance`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import reference

from ...core.comparison import Expected
from ...core.state import State
from .. import Delegating
from .reference import BatchNormReference
from .tolerances import AveragesTolerance, Conditioning, Correction

__all__ = ["AdjustedReference", "GhostReference", "RenormReference"]

_RENORM_MEANS, _RENORM_STDDEVS = ("running_mean", "renorm_mean"), ("moving_stddev", "renorm_stddev")


class _Corrected(Delegating):
    """Training calls normalize to ``gamma (scale xhat + shift) + beta``; the rest is BatchNorm's (``side``)."""

    def __init__(self, side: BatchNormReference) -> None:
        self.side = side

    def _trains(self, training: bool) -> bool:
        return training and self.side.case.trainable  # Keras: a non-trainable layer runs in inference mode

    def correction(self, x: np.ndarray, cond: Conditioning) -> Correction:
        """The training call's correction on ``x`` (whose batch conditioning is ``cond``), its side effects done."""
        raise NotImplementedError

    def _training(self, x: np.ndarray, dy: np.ndarray | None) -> dict[str, Expected]:
        side, layer = self.side, self.side.layer
        x64 = np.asarray(x, dtype=np.float64)
        cond, xhat = side.conditioning(x, True)
        corr = self.correction(x64, cond)
        axis = side.case.channel_axis
        y, mean, var = reference.corrected_forward_training(x64, layer.gamma, layer.beta, layer.eps, corr.scale,
                                                            corr.shift, axis)
        expected = {"y": Expected(y, side._back(corr.y(side._last(y), xhat)))}
        if dy is None:
            return expected
        dx, dgamma, dbeta = reference.corrected_backward_training(np.asarray(dy, dtype=np.float64), x64, mean, var,
                                                                  layer.gamma, layer.eps, corr.scale, corr.shift, axis)
        dy_last = side._last(dy)
        expected["dx"] = Expected(dx, side._back(corr.dx(side._last(dx), dy_last, xhat)))
        if not side.case.affine:
            return expected | {"dgamma": Expected(None), "dbeta": Expected(None)}
        return expected | {"dgamma": Expected(dgamma, corr.dgamma(dgamma, dy_last, xhat)),
                           "dbeta": Expected(dbeta, corr.dbeta(dbeta, dy_last))}

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return self._training(x, None) if self._trains(training) else self.side.forward(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        return self._training(x, dy) if self._trains(training) else self.side.forward_backward(x, dy, training)


class AdjustedReference(_Corrected):
    """tf-keras' ``adjustment``: the constants ``(scale, shift)`` it returns, in training only."""

    def __init__(self, side: BatchNormReference, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__(side)
        self.scale, self.shift = scale, shift

    def correction(self, x: np.ndarray, cond: Conditioning) -> Correction:
        self.side.forward(x, True)  # the running statistics are BatchNorm's
        return Correction(cond, self.scale, self.shift)


class RenormReference(_Corrected):
    """Batch renormalization with the renorm averages' new-batch weight ``renorm_weight`` and ``clipping``
    (``rmin``, ``rmax``, ``dmax``). The state is :func:`reference.renorm_state_for`'s fields; a state assigning
    the running mean and variance without the renorm fields means all averages agree on them (the adapters'
    rule too)."""

    def __init__(self, side: BatchNormReference, renorm_weight: float, clipping: dict[str, float]) -> None:
        super().__init__(side)
        self.renorm_weight, self.clipping = renorm_weight, clipping
        self.running = reference.renorm_state_for(np.zeros(side.case.num_features), np.ones(side.case.num_features),
                                                  side.layer.eps)
        self.averages = AveragesTolerance(side.case.dtype, _RENORM_MEANS, _RENORM_STDDEVS)

    def assign(self, held: State) -> None:
        self.side.assign(held)
        if held.get("running_mean") is not None and held.get("running_var") is not None:
            self.running = reference.renorm_state_for(held["running_mean"], held["running_var"], self.side.layer.eps)
            self.averages = AveragesTolerance(self.side.case.dtype, _RENORM_MEANS, _RENORM_STDDEVS)
            # The layer derived its standard deviations from the variance before its rounding, and rounded them.
            self.averages.accumulated |= {name: 2 * self.averages.u * self.running[name] for name in _RENORM_STDDEVS}
        self.running |= {name: np.asarray(held[name], dtype=np.float64) for name in (*_RENORM_MEANS, *_RENORM_STDDEVS)
                         if held.get(name) is not None}
        self._share()

    def _share(self) -> None:
        """BatchNorm's side holds the inference averages and their errors: inference is BatchNorm's."""
        layer, running, eps = self.side.layer, self.running, self.side.layer.eps
        layer.running_mean, layer.running_var = running["running_mean"], running["running_var"]
        self.side.running_tolerance.accumulated = {
            "running_mean": self.averages.accumulated["running_mean"],
            "running_var": self.averages.derived_variance("moving_stddev", running["moving_stddev"], eps)}

    def correction(self, x: np.ndarray, cond: Conditioning) -> Correction:
        previous, eps = self.running, self.side.layer.eps
        r, d = reference.renorm_correction(cond.mean, cond.var, eps, previous["renorm_mean"],
                                           previous["renorm_stddev"], **self.clipping)
        correction = Correction.renorm(cond, r, d, self.averages, previous["renorm_stddev"])
        w = self.side.layer.convention.new_batch_weight(self.side.layer.momentum, 1)
        self.running = reference.renorm_update(previous, cond.mean, cond.var, eps, w, self.renorm_weight)
        self.averages.add_step(cond, self.running, previous)
        self._share()
        return correction

    def state(self, exact: bool = False) -> dict[str, Expected]:
        own = {name: Expected(self.running[name], 0.0 if exact else self.averages.tolerance(name, self.running[name]))
               for name in ("moving_stddev", "renorm_mean", "renorm_stddev")}
        return self.side.state(exact) | own


class GhostReference(Delegating):
    """Ghost batches of ``virtual_batch_size`` samples (:func:`reference.ghost_batches`) in training; the running
    averages take in the ghost batches' mean statistics, one update per call; inference is BatchNorm's."""

    def __init__(self, side: BatchNormReference, virtual_batch_size: int) -> None:
        self.side, self.size = side, virtual_batch_size

    def _training(self, x: np.ndarray, dy: np.ndarray | None) -> dict[str, Expected]:
        side, layer, case = self.side, self.side.layer, self.side.case
        x64, axis = np.asarray(x, dtype=np.float64), case.channel_axis
        y, mean, var = reference.ghost_forward_training(x64, layer.gamma, layer.beta, layer.eps, self.size, axis)
        ghosts = reference.ghost_batches(x.shape[0], self.size)
        conditioned = [side.conditioning(x64[g], True) for g in ghosts]  # the batch axis stays first, channels last
        y_tol = np.empty(side._last(y).shape)
        for g, (cond, xhat) in zip(ghosts, conditioned):
            y_tol[g] = cond.y(side._last(y[g]), xhat)
        self._update(mean, var, [cond for cond, _ in conditioned], x.size // case.num_features // len(ghosts))
        expected = {"y": Expected(y, side._back(y_tol))}
        if dy is None:
            return expected
        dy64 = np.asarray(dy, dtype=np.float64)
        dx, dgamma, dbeta = reference.ghost_backward_training(dy64, x64, layer.gamma, layer.eps, self.size, axis)
        dx_tol, dgamma_tol, dbeta_tol = np.empty(y_tol.shape), 0.0, 0.0
        for g, (cond, xhat) in zip(ghosts, conditioned):
            dy_last = side._last(dy64[g])
            dx_tol[g] = cond.dx(side._last(dx[g]), dy_last, xhat)
            dgamma_tol = dgamma_tol + cond.dgamma(dgamma, dy_last, xhat)
            dbeta_tol = dbeta_tol + cond.dbeta(dbeta, dy_last)
        expected["dx"] = Expected(dx, side._back(dx_tol))
        if not case.affine:
            return expected | {"dgamma": Expected(None), "dbeta": Expected(None)}
        return expected | {"dgamma": Expected(dgamma, dgamma_tol), "dbeta": Expected(dbeta, dbeta_tol)}

    def _update(self, mean: np.ndarray, var: np.ndarray, conds: list[Conditioning], count: int) -> None:
        """The running update with the ghost batches' mean statistics, allowed the largest error any ghost
        batch's statistics have (the largest mean and variance bound each one's)."""
        layer, previous = self.side.layer, self.side.layer.state
        new = reference.update_running_state({k: previous[k] for k in layer.convention.running_fields}, mean, var,
                                             count, layer.momentum, layer.convention)
        for name, value in new.items():
            setattr(layer, name, value)
        bound = replace(conds[0], mean=np.max([np.abs(c.mean) for c in conds], axis=0),
                        var=np.max([c.var for c in conds], axis=0))
        self.side.running_tolerance.add_step(bound, layer.state, count, previous)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        if training and self.side.case.trainable:
            return self._training(x, None)
        return self.side.forward(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        if training and self.side.case.trainable:
            return self._training(x, dy)
        return self.side.forward_backward(x, dy, training)
