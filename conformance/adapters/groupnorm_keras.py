"""Keras GroupNormalization: Keras 3 on its tensorflow, jax and torch backends, and tf-keras.

Built as users build it (``groups``, ``axis`` the channel axis, ``epsilon``, ``scale`` and ``center`` for the
two parameters, the layer's ``dtype``); InstanceNorm is the same layer with one group per channel (Keras'
``groups=-1``, which ``build`` resolves to the channels: the spec's ``groups`` is passed as it is). Keras 3
computes in ``backend.result_type(x.dtype, "float32")`` with ``ops.moments``; tf-keras with
``tf.nn.weighted_moments`` and ``tf.nn.batch_normalization`` in the input's dtype. Gradients and second order
as for LayerNormalization (``layernorm_keras``).
"""

from __future__ import annotations

import inspect

from reference import GROUPNORM_CONVENTIONS

from ..operators.groupnorm import GROUPNORM, GroupNormSpec
from .base import Capabilities
from .keras3 import KerasImplementation
from .layernorm_keras import KerasLayerNormLayer
from .tf_keras import TfKerasImplementation

_CAPABILITIES = Capabilities(ranks=frozenset({2, 3, 4, 5}), double_backward=True,
                             features=frozenset({"grouped", "affine_false", "scale_false", "bias_false"}))


class KerasGroupNormLayer(KerasLayerNormLayer):
    """``keras`` is the package (``keras`` or ``tf_keras``), ``backend`` the one it computes on."""

    def __init__(self, spec: GroupNormSpec, keras, backend: str) -> None:
        self.spec, self.keras, self.backend = spec, keras, backend
        self.tf_keras = keras.__name__ == "tf_keras"
        self.layer = keras.layers.GroupNormalization(groups=spec.groups, axis=spec.channel_axis, epsilon=spec.eps,
                                                     center=spec.bias, scale=spec.affine, dtype=spec.dtype)
        shape = [None] * spec.rank
        shape[spec.channel_axis] = spec.num_channels
        self.layer.build(tuple(shape))
        self.variables = {"gamma": self.layer.gamma, "beta": self.layer.beta}
        self.params = [v for v in self.variables.values() if v is not None]


def _defaults(layer_class) -> dict[str, object]:
    params = inspect.signature(layer_class).parameters
    return {"eps": params["epsilon"].default, "groups": params["groups"].default, "affine": params["scale"].default,
            "bias": params["center"].default}


class KerasGroupNorm(KerasImplementation):
    """GroupNormalization on one Keras 3 backend (environment and process: the BatchNorm adapter's)."""

    operator = GROUPNORM
    convention = GROUPNORM_CONVENTIONS["keras_groupnorm"]
    capabilities = _CAPABILITIES

    def __init__(self, backend: str) -> None:
        super().__init__(backend, (backend,))
        self.name += ".GroupNormalization"

    def defaults(self) -> dict[str, object]:
        return _defaults(self._keras().layers.GroupNormalization)

    def build(self, spec: GroupNormSpec) -> KerasGroupNormLayer:
        return KerasGroupNormLayer(spec, self._keras(), self.backend)


class TfKerasGroupNorm(TfKerasImplementation):
    """GroupNormalization in tf-keras (Keras 2), on TensorFlow."""

    operator = GROUPNORM

    def __init__(self) -> None:
        super().__init__(fused=False)
        self.name, self.convention = "tf_keras.GroupNormalization", GROUPNORM_CONVENTIONS["keras_groupnorm"]
        self.capabilities = _CAPABILITIES

    def defaults(self) -> dict[str, object]:
        import tf_keras

        return _defaults(tf_keras.layers.GroupNormalization)

    def build(self, spec: GroupNormSpec) -> KerasGroupNormLayer:
        import tf_keras

        return KerasGroupNormLayer(spec, tf_keras, "tensorflow")


IMPLEMENTATIONS = [KerasGroupNorm("tensorflow"), KerasGroupNorm("jax"), KerasGroupNorm("torch"), TfKerasGroupNorm()]
