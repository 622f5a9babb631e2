"""Keras 3 RMSNormalization on its tensorflow, jax and torch backends (tf-keras has none): the LayerNorm
operator's uncentered ``keras_rmsnorm`` record.

Built as users build it (``axis`` the normalized axes, ``epsilon``, the layer's ``dtype``); the layer always
has its scale and never a bias. Gradients and second order as for LayerNormalization (``layernorm_keras``).

Also LayerNormalization's deprecated ``rms_scaling=True`` option, checked against what its documentation says it
computes (RMS normalization: its own record, ``keras_layernorm_rms_scaling``)."""

from __future__ import annotations

import inspect
import warnings

from reference import LAYERNORM_CONVENTIONS, LayerNormConvention

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities
from .keras3 import KerasImplementation
from .layernorm_keras import KerasLayerNormLayer


class KerasRMSNormLayer(KerasLayerNormLayer):
    SCALE = "scale"  # the layer's attribute holding its scale variable

    def __init__(self, spec: LayerNormSpec, keras, backend: str) -> None:
        self.spec, self.keras, self.backend, self.tf_keras = spec, keras, backend, False
        axes = list(range(spec.begin_axis, 0))
        self.layer = self._new_layer(keras, axes if len(axes) > 1 else axes[0], spec)
        self.layer.build((None,) * (spec.rank - len(axes)) + spec.normalized_shape)
        scale = getattr(self.layer, self.SCALE)
        self.variables = {"gamma": scale, "beta": None}
        self.params = [scale]

    def _new_layer(self, keras, axis, spec: LayerNormSpec):
        return keras.layers.RMSNormalization(axis=axis, epsilon=spec.eps, dtype=spec.dtype)


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


# What LayerNormalization(rms_scaling=True) is documented to compute: RMS normalization ("the inputs are scaled by
# gamma and the inverse square root of the square of all inputs"), its own epsilon default, a scale and no bias.
KERAS_RMS_SCALING = LayerNormConvention(
    "keras_layernorm_rms_scaling", 1e-3, default_bias=False, centered=False,
    frameworks="Keras 3 LayerNormalization(rms_scaling=True) as documented (deprecated since 3.10)")


class KerasRMSScalingLayer(KerasRMSNormLayer):
    SCALE = "gamma"

    def _new_layer(self, keras, axis, spec: LayerNormSpec):
        with warnings.catch_warnings():  # its deprecation warning, raised at every construction
            warnings.simplefilter("ignore", UserWarning)
            return keras.layers.LayerNormalization(axis=axis, epsilon=spec.eps, rms_scaling=True, dtype=spec.dtype)


class KerasRMSScaling(KerasRMSNorm):
    """LayerNormalization's RMS scaling option on one Keras 3 backend, checked as what its documentation says."""

    convention = KERAS_RMS_SCALING

    def __init__(self, backend: str) -> None:
        KerasImplementation.__init__(self, backend, (backend,))
        self.name += ".LayerNormalization.rms_scaling"
        self.benchmarked = False  # LayerNormalization's call

    def defaults(self) -> dict[str, object]:
        params = inspect.signature(self._keras().layers.LayerNormalization).parameters
        return {"eps": params["epsilon"].default, "axes": params["axis"].default, "affine": True, "bias": False}

    def build(self, spec: LayerNormSpec) -> KerasRMSScalingLayer:
        return KerasRMSScalingLayer(spec, self._keras(), self.backend)


IMPLEMENTATIONS = [*(KerasRMSNorm(b) for b in ("tensorflow", "jax", "torch")),
                   *(KerasRMSScaling(b) for b in ("tensorflow", "jax", "torch"))]
