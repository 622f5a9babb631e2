"""Keras BatchNormalization called with ``mask=`` (issue 22), as a masked sequence reaches it (a ``Masking`` or
``Embedding(mask_zero=True)`` layer before it propagates one): ``keras.<backend>.masked`` and
``tf_keras.<fused|nonfused>.masked``.

Keras documents the mask as the positions whose values the training statistics are taken over; every value is
normalized with them, the running averages move towards them, and inference ignores the mask
(:mod:`reference.masked` is the specification). The layer is the eager adapter's, its Keras layer called with the
mask of each input's positions (:func:`mask_for`: all but every third, so every batch of two or more positions
has unmarked ones); the reference side (:class:`MaskedReference`) answers training calls with the masked
statistics and BatchNorm's tolerance model over the marked values. Both Keras take a mask of the input's rank
less one, broadcast along the last axis: the channel axis of a channels-last layer, the only one checked here
(a channels-first layer's positions are not the input's shape without its last axis). Checked: outputs,
running statistics and gradients in float32 and float64 at ranks 3 (sequences) and 4.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import reference

from ..adapters.base import Derivation, LayerSpec
from ..adapters.keras3 import KerasImplementation, KerasLayer
from ..adapters.tf_keras import TfKerasImplementation, TfKerasLayer
from ..core.case import Case
from ..core.comparison import Expected
from ..core.dtypes import framework_input
from ..operators.batchnorm.reference import BatchNormReference
from ..operators.batchnorm.tolerances import Conditioning

__all__ = ["MaskedReference", "mask_for"]


def mask_for(shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """The mask of an input of ``shape``: every position but every third in C order (flat indices 1, 4, 7, ...)."""
    axis = channel_axis % len(shape)
    positions = tuple(n for i, n in enumerate(shape) if i != axis)
    return np.arange(int(np.prod(positions))).reshape(positions) % 3 != 1


class MaskedReference(BatchNormReference):
    """BatchNorm's reference side with training calls normalized by the statistics of the marked positions."""

    def _masked(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Conditioning, np.ndarray, float]:
        """A training call: ``y``, the mask, the conditioning and ``xhat`` (channels last), and how many times
        more positions than marked ones the gradient's sums run over."""
        layer, case, axis = self.layer, self.case, self.axis
        x64 = np.asarray(framework_input(x)[0], dtype=np.float64)
        mask = mask_for(x64.shape, axis)
        mean, var, count = reference.masked_statistics(x64, mask, axis)
        previous = layer.state
        y = reference.forward_inference(x64, mean, var, layer.gamma, layer.beta, layer.eps, axis)
        gamma = layer.gamma if layer.gamma is not None else np.ones(case.num_features)
        cond = Conditioning(case.dtype, count, mean, var, layer.eps, gamma, case.accumulation_dtype,
                            beta=layer.beta if layer.beta is not None else 0.0)
        if case.track_running_stats:
            for name, value in reference.update_running_state(previous, mean, var, count, layer.momentum,
                                                              self.convention).items():
                setattr(layer, name, value)
            self.running_tolerance.add_step(cond, layer.state, count, previous)
        return y, mask, cond, (self._last(x64) - mean) / cond.sigma, mask.size / count

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        if not self._training(training):
            return super().forward(x, training)
        y, _, cond, xhat, _ = self._masked(x)
        return {"y": Expected(y, self._back(cond.y(self._last(y), xhat)))}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        if not self._training(training):
            return super().forward_backward(x, dy, training)
        y, mask, cond, xhat, spread = self._masked(x)
        layer = self.layer
        dx, dgamma, dbeta = reference.masked_backward(framework_input(dy)[0], framework_input(x)[0], mask,
                                                      layer.gamma, layer.eps, self.axis)
        dy_last = self._last(dy)
        # BatchNorm's dx bound divides the sums' errors by every position; here by the marked ones only.
        expected = {"y": Expected(y, self._back(cond.y(self._last(y), xhat))),
                    "dx": Expected(dx, self._back(spread * cond.dx(self._last(dx), dy_last, xhat)))}
        if not self.case.affine:
            return expected | {"dgamma": Expected(None), "dbeta": Expected(None)}
        return expected | {"dgamma": Expected(dgamma, cond.dgamma(dgamma, dy_last, xhat)),
                           "dbeta": Expected(dbeta, cond.dbeta(dbeta, dy_last))}


class _MaskedCall:
    """A Keras layer called with the mask of each input's positions (its other attributes the layer's)."""

    def __init__(self, layer, channel_axis: int) -> None:
        self._layer, self._axis = layer, channel_axis

    def __getattr__(self, name: str) -> object:
        return getattr(self._layer, name)

    def _mask(self, x) -> np.ndarray:
        return mask_for(tuple(x.shape), self._axis)

    def __call__(self, x, **kwargs):
        return self._layer(x, mask=self._mask(x), **kwargs)

    def stateless_call(self, trainable, non_trainable, x, **kwargs):
        return self._layer.stateless_call(trainable, non_trainable, x, mask=self._mask(x), **kwargs)


class MaskedKerasLayer(KerasLayer):
    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.layer = _MaskedCall(self.layer, spec.channel_axis)


class MaskedTfKerasLayer(TfKerasLayer):
    def __init__(self, spec: LayerSpec, fused: bool) -> None:
        super().__init__(spec, fused)
        self.layer = _MaskedCall(self.layer, spec.channel_axis)


class _Masked:
    """What both Keras' masked implementations share (the eager implementation's class follows in the bases)."""

    families = frozenset({"forward", "running_stats", "gradients"})
    benchmarked = False

    def _mask(self) -> None:
        self.derivation = Derivation("mask", (self.name,))
        self.name += ".masked"
        ranks = self.capabilities.ranks & {3, 4} or self.capabilities.ranks
        self.capabilities = replace(self.capabilities, dtypes=self.capabilities.dtypes & {"float32", "float64"},
                                    ranks=frozenset(ranks), channel_axes=frozenset({-1}), double_backward=False)

    def reference(self, case: Case, spec: LayerSpec) -> MaskedReference:
        return MaskedReference(case, self.convention, spec)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "mask": "every position but every third"}


class MaskedKeras(_Masked, KerasImplementation):
    def __init__(self, backend: str, requires: tuple[str, ...]) -> None:
        super().__init__(backend, requires)
        self._mask()

    def build(self, spec: LayerSpec) -> MaskedKerasLayer:
        self._keras()
        return MaskedKerasLayer(spec)


class MaskedTfKeras(_Masked, TfKerasImplementation):
    def __init__(self, fused: bool) -> None:
        super().__init__(fused)
        self._mask()

    def build(self, spec: LayerSpec) -> MaskedTfKerasLayer:
        return MaskedTfKerasLayer(spec, self.fused)


IMPLEMENTATIONS = [
    *(MaskedKeras(backend, (backend,)) for backend in ("tensorflow", "jax", "torch")),
    *(MaskedTfKeras(fused) for fused in (True, False)),
]
