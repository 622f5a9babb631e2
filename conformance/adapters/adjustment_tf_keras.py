"""tf-keras' ``BatchNormalization(adjustment=..., fused=False)``: a callable of the input's shape returning
``(scale, bias)``, applied to the normalized value before gamma and beta in training only, against
:func:`reference.corrected_forward_training` (:class:`~conformance.operators.batchnorm.variants.AdjustedReference`).

The adapter's adjustment returns fixed per-channel constants (:func:`adjustment_constants`; the documentation's
example draws them at random, which no reference can follow), shaped to broadcast against the input whatever the
channel axis. A family of its own (``--impl tf_keras.variants``), which ``tox -e report`` runs: the checks the
variant changes (:data:`~conformance.adapters.renorm_keras.VARIANT_FAMILIES`).
"""

from __future__ import annotations

import numpy as np

from ..core.case import Case
from ..operators.batchnorm import LayerSpec
from ..operators.batchnorm.variants import AdjustedReference
from .base import Capabilities
from .renorm_keras import VARIANT_FAMILIES
from .tf_keras import TfKerasImplementation, TfKerasLayer


def adjustment_constants(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(scale, bias)`` per channel: distinct for every channel, none 1 or 0."""
    return np.linspace(0.75, 1.3, channels), np.linspace(-0.45, 0.35, channels)


class TfKerasAdjusted(TfKerasImplementation):
    families = VARIANT_FAMILIES
    benchmarked = False

    def __init__(self) -> None:
        super().__init__(fused=False)  # tf-keras rejects fused=True with an adjustment
        self.family = "tf_keras.variants"
        self.name = f"{self.family}.adjustment"
        self.capabilities = Capabilities(dtypes=self.capabilities.dtypes, features=frozenset({"trainable_false"}))

    def reference(self, case: Case, spec: LayerSpec) -> AdjustedReference:
        return AdjustedReference(self.operator.reference(case, self.convention, spec),
                                 *adjustment_constants(spec.num_features))

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "adjustment": "scale linspace(0.75, 1.3, C), bias linspace(-0.45, 0.35, C)"}

    def build(self, spec: LayerSpec) -> TfKerasLayer:
        import tensorflow as tf

        shape = [1] * spec.rank
        shape[spec.channel_axis] = spec.num_features
        dtype = tf.float64 if spec.dtype == "float64" else tf.float32  # the layer's parameters' dtype
        scale, bias = (tf.constant(v.reshape(shape), dtype) for v in adjustment_constants(spec.num_features))
        return TfKerasLayer(spec, False, adjustment=lambda _shape: (scale, bias))


IMPLEMENTATIONS = [TfKerasAdjusted()]
