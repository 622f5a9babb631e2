"""Keras LayerNormalization: Keras 3 on its tensorflow, jax and torch backends, and tf-keras.

Built as users build it (``axis`` the normalized axes, ``epsilon``, ``scale`` and ``center`` for the two
parameters, the layer's ``dtype``); gradients from each backend's autodiff of the layer's call, second order
by differentiating those again (nested tapes, ``jvp`` of a ``vjp``, double backward). Keras 3 computes
half-precision input in float32 (``ops.layer_normalization``) and, on the torch backend, calls
``F.layer_norm`` for contiguous axes; the deprecated ``rms_scaling=True`` (Keras 3.15 still accepts it, with
a warning) divides by the root of the *variance*, not of the mean square: ``rmsnorm_keras`` checks it against its
documentation.
"""

from __future__ import annotations

import inspect

import numpy as np

from reference import LAYERNORM_CONVENTIONS

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities, State, framework_input
from .keras3 import KerasImplementation, tape_hvp
from .tf_keras import TfKerasImplementation

_CAPABILITIES = Capabilities(ranks=frozenset({1, 2, 3, 4, 5}), double_backward=True,
                             features=frozenset({"affine_false", "scale_false", "bias_false", "multi_axis"}))


class KerasLayerNormLayer:
    """``keras`` is the package (``keras`` or ``tf_keras``), ``backend`` the one it computes on."""

    def __init__(self, spec: LayerNormSpec, keras, backend: str) -> None:
        self.spec, self.keras, self.backend = spec, keras, backend
        self.tf_keras = keras.__name__ == "tf_keras"
        axes = list(range(spec.begin_axis, 0))  # counted from the end, as Keras' default axis=-1 is
        self.layer = keras.layers.LayerNormalization(axis=axes if len(axes) > 1 else axes[0], epsilon=spec.eps,
                                                     center=spec.bias, scale=spec.affine, dtype=spec.dtype)
        self.layer.build((None,) * (spec.rank - len(axes)) + spec.normalized_shape)
        self.variables = {"gamma": self.layer.gamma, "beta": self.layer.beta}
        self.params = [v for v in self.variables.values() if v is not None]

    def _tensor(self, x: np.ndarray):
        x, cast = framework_input(x)
        if self.tf_keras:
            import tensorflow as tf

            return tf.cast(tf.convert_to_tensor(x), self.spec.dtype) if cast else tf.convert_to_tensor(x)
        ops = self.keras.ops
        return ops.cast(ops.convert_to_tensor(x), self.spec.dtype) if cast else ops.convert_to_tensor(x)

    def _numpy(self, t) -> np.ndarray | None:
        if t is None:
            return None
        if self.tf_keras:
            import tensorflow as tf

            return tf.cast(t, tf.float64).numpy()
        ops = self.keras.ops
        return ops.convert_to_numpy(ops.cast(t, "float64" if self.spec.dtype == "float64" else "float32")).astype(
            np.float64)

    def _output(self, t) -> np.ndarray:
        """``y`` in its own dtype (bfloat16 through float32 where a backend's NumPy conversion lacks it)."""
        if self.tf_keras:
            return t.numpy()
        ops = self.keras.ops
        if ops.dtype(t) != "bfloat16":
            return ops.convert_to_numpy(t)
        import ml_dtypes

        return ops.convert_to_numpy(ops.cast(t, "float32")).astype(ml_dtypes.bfloat16)

    def _by_name(self, grads: list) -> tuple:
        """The parameters' gradients in the protocol's order, None where the layer lacks one."""
        grads = iter(grads)
        return tuple(None if v is None else self._numpy(next(grads)) for v in self.variables.values())

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            variable = self.variables[name]
            variable.assign(np.asarray(value).astype(self.spec.dtype if self.spec.dtype != "bfloat16" else np.float32))

    def get_state(self) -> State:
        return State(**{name: self._numpy(v) for name, v in self.variables.items()}, eps=self.layer.epsilon)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._output(self.layer(self._tensor(x), training=training))

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        backend = "tensorflow" if self.tf_keras else self.backend
        y, dx, *grads = getattr(self, f"_grad_{backend}")(self._tensor(x), self._tensor(dy))
        return self._output(y), self._numpy(dx), *self._by_name(grads)

    def double_backward(self, x, dy, vx, vgamma, vbeta) -> tuple:
        given = {"gamma": vgamma, "beta": vbeta}
        vparams = [self._tensor(given[name]) for name, v in self.variables.items() if v is not None]
        backend = "tensorflow" if self.tf_keras else self.backend
        hx, *hparams = getattr(self, f"_hvp_{backend}")(self._tensor(x), self._tensor(dy), self._tensor(vx), vparams)
        return self._numpy(hx), *self._by_name(hparams)

    # The layer's gradients per backend: dy is the gradient of y.
    def _grad_tensorflow(self, x, dy) -> list:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = self.layer(x, training=True)
        return [y, *tape.gradient(y, [x, *self.params], output_gradients=dy)]

    def _jax_trainable(self) -> tuple[list, list[int]]:
        layer = self.layer
        order = [id(v) for v in layer.trainable_variables]
        return [v.value for v in layer.trainable_variables], [order.index(id(p)) for p in self.params]

    def _grad_jax(self, x, dy) -> list:
        import jax

        trainable, index = self._jax_trainable()
        y, vjp = jax.vjp(lambda t, x: self.layer.stateless_call(t, [], x)[0], trainable, x)
        dparams, dx = vjp(dy)
        return [y, dx, *(dparams[i] for i in index)]

    def _grad_torch(self, x, dy) -> list:
        import torch

        x = x.detach().requires_grad_(True)
        y = self.layer(x, training=True)
        return [y, *torch.autograd.grad(y, [x, *(p.value for p in self.params)], dy)]

    # Second order: the gradients' derivative along (vx, vparams).
    def _hvp_tensorflow(self, x, dy, vx, vparams) -> list:
        return tape_hvp(self.layer, [p if self.tf_keras else p.value for p in self.params], x, dy, vx, vparams)

    def _hvp_jax(self, x, dy, vx, vparams) -> list:
        import jax

        trainable, index = self._jax_trainable()
        tangents = [None] * len(trainable)
        for i, v in zip(index, vparams):
            tangents[i] = v

        def gradients(trainable, x):
            _, vjp = jax.vjp(lambda t, x: self.layer.stateless_call(t, [], x)[0], trainable, x)
            return vjp(dy)

        _, (hparams, hx) = jax.jvp(gradients, (trainable, x), (tangents, vx))
        return [hx, *(hparams[i] for i in index)]

    def _hvp_torch(self, x, dy, vx, vparams) -> list:
        import torch

        x = x.detach().requires_grad_(True)
        inputs = [x, *(p.value for p in self.params)]
        grads = torch.autograd.grad(self.layer(x, training=True), inputs, dy, create_graph=True)
        pairs = [(g, v) for g, v in zip(grads, [vx, *vparams]) if g.requires_grad]  # dbeta = sum(dy): no graph
        hvp = torch.autograd.grad([g for g, _ in pairs], inputs, [v for _, v in pairs], allow_unused=True)
        return [torch.zeros_like(t) if h is None else h for h, t in zip(hvp, inputs)]  # None: structurally zero


def _defaults(layer_class) -> dict[str, object]:
    params = inspect.signature(layer_class).parameters
    return {"eps": params["epsilon"].default, "axes": params["axis"].default, "affine": params["scale"].default,
            "bias": params["center"].default}


class KerasLayerNorm(KerasImplementation):
    """LayerNormalization on one Keras 3 backend (environment and process: the BatchNorm adapter's)."""

    operator = LAYERNORM
    convention = LAYERNORM_CONVENTIONS["keras_layernorm"]
    capabilities = _CAPABILITIES

    def __init__(self, backend: str) -> None:
        super().__init__(backend, (backend,))
        self.name += ".LayerNormalization"

    def defaults(self) -> dict[str, object]:
        return _defaults(self._keras().layers.LayerNormalization)

    def build(self, spec: LayerNormSpec) -> KerasLayerNormLayer:
        return KerasLayerNormLayer(spec, self._keras(), self.backend)


class TfKerasLayerNorm(TfKerasImplementation):
    """LayerNormalization in tf-keras (Keras 2), on TensorFlow."""

    operator = LAYERNORM

    def __init__(self) -> None:
        super().__init__(fused=False)
        self.name, self.convention = "tf_keras.LayerNormalization", LAYERNORM_CONVENTIONS["keras_layernorm"]
        self.capabilities = _CAPABILITIES

    def defaults(self) -> dict[str, object]:
        import tf_keras

        return _defaults(tf_keras.layers.LayerNormalization)

    def build(self, spec: LayerNormSpec) -> KerasLayerNormLayer:
        import tf_keras

        return KerasLayerNormLayer(spec, tf_keras, "tensorflow")


IMPLEMENTATIONS = [KerasLayerNorm("tensorflow"), KerasLayerNorm("jax"), KerasLayerNorm("torch"), TfKerasLayerNorm()]
