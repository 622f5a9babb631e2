"""Keras 3 RMSNormalization on its tensorflow, jax and torch backends (tf-keras has none): the LayerNorm
operator's uncentered ``keras_rmsnorm`` record.

Built as users build it (``axis`` the normalized axes, ``epsilon``, the layer's ``dtype``); the layer always
has its scale and never a bias. Gradients and second order as for LayerNormalization (``layernorm_keras``)."""

from __future__ import annotations

import inspect

from reference import LAYERNORM_CONVENTIONS

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities
from .keras3 import KerasImplementation
from .layernorm_keras import KerasLayerNormLayer


class KerasRMSNormLayer(KerasLayerNormLayer):
    def __init__(self, spec: LayerNormSpec, keras, backend: str) -> None:
        self.spec, self.keras, self.backend, self.tf_keras = spec, keras, backend, False
        axes = list(range(spec.begin_axis, 0))
        self.layer = keras.layers.RMSNormalization(axis=axes if len(axes) > 1 else axes[0], epsilon=spec.eps,
                                                   dtype=spec.dtype)
        self.layer.build((None,) * (spec.rank - len(axes)) + spec.normalized_shape)
        self.variables = {"gamma": self.layer.scale, "beta": None}
        self.params = [self.layer.scale]


class KerasRMSNorm(KerasImplementation):
    """RMSNormalization on one Keras 3 backend (environment and process: the BatchNorm adapter's)."""

    operator = LAYERNORM
    convention = LAYERNORM_CONVENTIONS["keras_rmsnorm"]
    # Always a scale, never a bias.
    capabilities = Capabilities(ranks=frozenset({1, 2, 3, 4, 5}), double_backward=True,
                                features=frozenset({"bias_false", "multi_axis"}))

    def __init__(self, backend: str) -> None:
        super().__init__(backend, (backend,))
        self.name += ".RMSNormalization"

    def defaults(self) -> dict[str, object]:
        params = inspect.signature(self._keras().layers.RMSNormalization).parameters
        return {"eps": params["epsilon"].default, "axes": params["axis"].default, "affine": True, "bias": False}

    def build(self, spec: LayerNormSpec) -> KerasRMSNormLayer:
        return KerasRMSNormLayer(spec, self._keras(), self.backend)


IMPLEMENTATIONS = [KerasRMSNorm("tensorflow"), KerasRMSNorm("jax"), KerasRMSNorm("torch")]
