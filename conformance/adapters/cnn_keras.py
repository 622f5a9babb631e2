"""The seeds' CNN in Keras 3 (on its tensorflow, jax and torch backends) and in tf-keras: ``Conv2D``,
``BatchNormalization``, ``ReLU``, ``MaxPooling2D``, ``Flatten``, ``Dense``, channels last (TensorFlow's CPU
convolution has no channels-first kernel).

The weights cross in PyTorch's layout and are ported on the way in and out (:mod:`conformance.operators.cnn.spec`):
kernels ``(out, in, kh, kw) <-> (kh, kw, in, out)``, the classifier's inputs ``(C, H, W) <-> (H, W, C)``, each
BatchNorm's variables as they are (the case's state is already in the convention's fields), built with the
case's eps (Keras' default is 1e-3) and momentum in Keras' meaning. Gradients come from each backend's
autodiff of the model's call (``training=True`` updates the moving statistics as ``fit`` does) and cross in
PyTorch's layout too. Each Keras backend is an implementation with ``KERAS_BACKEND`` in its ``process_env``,
so it runs in a worker process of its own; tf-keras fuses 4D BatchNorm by default (its own convention).
"""

from __future__ import annotations

import numpy as np

from ..operators.cnn import CNN, NetworkSpec
from ..operators.cnn.spec import (
    BLOCKS,
    CLASSES,
    IN_CHANNELS,
    PARAMETERS,
    bn_field,
    from_channels_last,
    to_channels_last,
)
from .base import Capabilities, State, framework_input
from .keras3 import KerasImplementation
from .tf_keras import TfKerasImplementation

# State fields -> (layer index, variable attribute); BatchNorm's fields on layers 1 and 5.
_WEIGHTS = {"conv1": (0, "kernel"), "conv2": (4, "kernel"), "fc_weight": (9, "kernel"), "fc_bias": (9, "bias")}
_BATCHNORM = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class KerasNetworkLayer:
    """``keras`` is the package (``keras`` or ``tf_keras``), ``backend`` the one it computes on."""

    def __init__(self, spec: NetworkSpec, keras, backend: str) -> None:
        self.spec, self.keras, self.backend = spec, keras, backend
        layers = keras.layers
        bn = lambda: layers.BatchNormalization(momentum=spec.momentum, epsilon=spec.eps, dtype=spec.dtype)  # noqa: E731
        conv = lambda c: layers.Conv2D(c, 3, padding="same", use_bias=False, dtype=spec.dtype)  # noqa: E731
        pool = lambda: layers.MaxPooling2D(2, dtype=spec.dtype)  # noqa: E731
        self.layers = [conv(BLOCKS[0]), bn(), layers.ReLU(dtype=spec.dtype), pool(),
                       conv(BLOCKS[1]), bn(), layers.ReLU(dtype=spec.dtype), pool(),
                       layers.Flatten(dtype=spec.dtype), layers.Dense(CLASSES, dtype=spec.dtype)]
        self.model = keras.Sequential(self.layers)
        self.model.build((None, spec.height, spec.width, IN_CHANNELS))
        self.variables = {name: getattr(self.layers[i], attr) for name, (i, attr) in _WEIGHTS.items()}
        for block, index in ((1, 1), (2, 5)):
            self.variables |= {bn_field(block, f): getattr(self.layers[index], a) for f, a in _BATCHNORM.items()}
        # The trainable variables in the order of the operator's parameters.
        self.params = [self.variables[name] for name in PARAMETERS]

    def _tensor(self, x: np.ndarray):
        x, cast = framework_input(x)
        if self.keras.__name__ == "tf_keras":
            import tensorflow as tf

            return tf.cast(tf.convert_to_tensor(x), self.spec.dtype) if cast else tf.convert_to_tensor(x)
        ops = self.keras.ops
        return ops.cast(ops.convert_to_tensor(x), self.spec.dtype) if cast else ops.convert_to_tensor(x)

    def _numpy(self, t) -> np.ndarray:
        if self.keras.__name__ == "tf_keras":
            return np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.float64)
        return np.asarray(self.keras.ops.convert_to_numpy(t), dtype=np.float64)

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            variable = self.variables[name]
            variable.assign(to_channels_last(name, value, self.spec).astype(self.spec.dtype))

    def get_state(self) -> State:
        return State(**{name: from_channels_last(name, self._numpy(variable), self.spec)
                        for name, variable in self.variables.items()})

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._numpy(self.model(self._tensor(x), training=training))

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        y, dx, *grads = getattr(self, f"_grad_{self.backend}")(self._tensor(x), self._tensor(dy), training)
        return (self._numpy(y), self._numpy(dx),
                *(from_channels_last(name, self._numpy(g), self.spec) for name, g in zip(PARAMETERS, grads)))

    # The model's gradients per backend: dy is the gradient of y.
    def _grad_tensorflow(self, x, dy, training: bool) -> list:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = self.model(x, training=training)
        return [y, *tape.gradient(y, [x, *self.params], output_gradients=dy)]

    def _grad_jax(self, x, dy, training: bool) -> list:
        import jax

        model = self.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        y, vjp, updated = jax.vjp(lambda t, x: model.stateless_call(t, non_trainable, x, training=training),
                                  trainable, x, has_aux=True)
        dparams, dx = vjp(dy)
        for variable, value in zip(model.non_trainable_variables, updated):
            variable.assign(value)  # stateless_call returns the new moving statistics instead of assigning them
        order = [id(v) for v in model.trainable_variables]
        return [y, dx, *(dparams[order.index(id(p))] for p in self.params)]

    def _grad_torch(self, x, dy, training: bool) -> list:
        import torch

        x = x.detach().requires_grad_(True)
        y = self.model(x, training=training)
        return [y, *torch.autograd.grad(y, [x, *(p.value for p in self.params)], dy)]


_FAMILIES = frozenset({"forward", "gradients", "running_stats", "contract", "conventions", "random"})


class KerasNetwork(KerasImplementation):
    """The CNN on one Keras 3 backend: environment and constructor defaults are the BatchNorm adapter's."""

    operator = CNN
    benchmarked = False
    families = _FAMILIES
    capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}), ranks=frozenset({4}),
                                channel_axes=frozenset({-1}), features=frozenset())

    def __init__(self, backend: str) -> None:
        super().__init__(backend, (backend,))
        self.name += ".cnn"

    def build(self, spec: NetworkSpec) -> KerasNetworkLayer:
        return KerasNetworkLayer(spec, self._keras(), self.backend)


class TfKerasNetwork(TfKerasImplementation):
    """The CNN in tf-keras, BatchNormalization as users build it (``fused=None``: fused for 4D float32 input,
    its own convention; float64 would take the non-fused path, Keras' convention, so only float32 is declared)."""

    operator = CNN
    benchmarked = False
    families = _FAMILIES

    def __init__(self) -> None:
        super().__init__(fused=True)
        self.name = "tf_keras.cnn"
        self.capabilities = Capabilities(dtypes=frozenset({"float32"}), ranks=frozenset({4}),
                                         channel_axes=frozenset({-1}), features=frozenset())

    def build(self, spec: NetworkSpec) -> KerasNetworkLayer:
        import tf_keras

        return KerasNetworkLayer(spec, tf_keras, "tensorflow")


IMPLEMENTATIONS = [KerasNetwork("tensorflow"), KerasNetwork("jax"), KerasNetwork("torch"), TfKerasNetwork()]
