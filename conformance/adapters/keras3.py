"""Keras 3 ``keras.layers.BatchNormalization`` on its tensorflow, jax and torch backends.

Keras fixes its backend at import, so each backend is its own implementation with ``KERAS_BACKEND`` in
its ``process_env``: the suite runs each in a worker process of its own.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from types import MappingProxyType

import numpy as np

from reference import KERAS

from .base import Capabilities, Implementation, LayerSpec, State, framework_input

# State's fields -> the layer's variables.
_VARIABLES = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class KerasLayer:
    # State's fields -> the layer's variables (a variant's layer adds its own).
    variables = _VARIABLES

    def __init__(self, spec: LayerSpec, **variant: object) -> None:
        """``variant``: further constructor arguments (a variant's: ``renorm``, ...; a mixed-precision policy as
        ``dtype``, ``transforms/mixed_precision.py``, inputs then still handed over in the spec's)."""
        import keras

        self.keras = keras
        self.backend = keras.backend.backend()
        self.dtype = spec.dtype
        self.layer = keras.layers.BatchNormalization(
            axis=spec.channel_axis, momentum=spec.momentum, epsilon=spec.eps,
            center=spec.affine, scale=spec.affine, **{"dtype": spec.dtype, **variant},
        )
        shape = [None] * spec.rank
        shape[spec.channel_axis] = spec.num_features
        self.layer.build(tuple(shape))
        self.layer.trainable = spec.trainable

    def _variables(self) -> dict[str, object]:
        return {state: getattr(self.layer, var) for state, var in self.variables.items()}

    def _tensor(self, x: np.ndarray):
        ops = self.keras.ops
        x, cast = framework_input(x)
        return ops.cast(ops.convert_to_tensor(x), self.dtype) if cast else ops.convert_to_tensor(x)

    def _output(self, t) -> np.ndarray:
        """``y`` in its own dtype (bfloat16 through float32 where the backend's NumPy conversion lacks it)."""
        ops = self.keras.ops
        if ops.dtype(t) != "bfloat16":
            return ops.convert_to_numpy(t)
        import ml_dtypes

        return ops.convert_to_numpy(ops.cast(t, "float32")).astype(ml_dtypes.bfloat16)

    def _numpy(self, t) -> np.ndarray | None:
        if t is None:
            return None
        ops = self.keras.ops
        return ops.convert_to_numpy(ops.cast(t, "float64" if self.dtype == "float64" else "float32")).astype(np.float64)

    def set_state(self, state: State) -> None:
        for name, var in self._variables().items():
            value = getattr(state, name)
            if value is not None:
                var.assign(self.keras.ops.cast(self.keras.ops.convert_to_tensor(np.asarray(value)), var.dtype))

    def get_state(self) -> State:
        return State(**{name: self._numpy(var) for name, var in self._variables().items()},
                     eps=self.layer.epsilon, momentum=self.layer.momentum)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._output(self.layer(self._tensor(x), training=training))

    def forward_backward(self, x, dy, training):
        x, dy = self._tensor(x), self._tensor(dy)
        y, dx, dgamma, dbeta = getattr(self, f"_grad_{self.backend}")(x, dy, training)
        return self._output(y), *(self._numpy(t) for t in (dx, dgamma, dbeta))

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        x, dy, vx = self._tensor(x), self._tensor(dy), self._tensor(vx)
        vparams = [self._tensor(v) for v in (vgamma, vbeta) if v is not None] if self.layer.center else []
        hx, *hparams = getattr(self, f"_hvp_{self.backend}")(x, dy, vx, vparams)
        return self._numpy(hx), *((self._numpy(h) for h in hparams) if hparams else (None, None))

    # Second order through each backend's autodiff: the gradients' derivative along (vx, vparams).
    def _hvp_tensorflow(self, x, dy, vx, vparams) -> list:
        # tf.Variables: zero gradients need a TensorFlow dtype
        return tape_hvp(self.layer, [v.value for v in self._params()], x, dy, vx, vparams)

    def _hvp_jax(self, x, dy, vx, vparams) -> list:
        import jax

        layer = self.layer
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def gradients(trainable, x):
            _, vjp = jax.vjp(lambda t, x: layer.stateless_call(t, non_trainable, x, training=True)[0], trainable, x)
            return vjp(dy)

        trainable = [v.value for v in layer.trainable_variables]
        _, (hparams, hx) = jax.jvp(gradients, (trainable, x), (vparams, vx))
        return [hx, *hparams]

    def _hvp_torch(self, x, dy, vx, vparams) -> list:
        import torch

        x = x.detach().requires_grad_(True)
        inputs = [x, *(v.value for v in self._params())]
        grads = torch.autograd.grad(self.layer(x, training=True), inputs, dy, create_graph=True)
        pairs = [(g, v) for g, v in zip(grads, [vx, *vparams]) if g.requires_grad]  # dbeta = sum(dy): no graph
        hvp = torch.autograd.grad([g for g, _ in pairs], inputs, [v for _, v in pairs], allow_unused=True)
        return [torch.zeros_like(t) if h is None else h for h, t in zip(hvp, inputs)]  # None: structurally zero

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        x, dy = self._tensor(x), self._tensor(dy)
        # JAX dispatches asynchronously; TensorFlow's and torch's eager CPU ops return when they are done.
        wait = __import__("jax").block_until_ready if self.backend == "jax" else (lambda outputs: outputs)
        if operation == "forward_backward":
            backward = getattr(self, f"_grad_{self.backend}")
            return lambda: wait(backward(x, dy, True))
        training = operation == "forward_training"
        return lambda: wait(self.layer(x, training=training))

    def _params(self) -> list:
        return [self.layer.gamma, self.layer.beta] if self.layer.center else []

    # The one backward per backend (the protocol's and the benchmarks' runner's): dy is the gradient of y.
    def _grad_tensorflow(self, x, dy, training):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = self.layer(x, training=training)
        dx, *dparams = tape.gradient(y, [x, *self._params()], output_gradients=dy)
        return y, dx, *(dparams or (None, None))

    def _grad_jax(self, x, dy, training):
        layer = self.layer
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        y, dx, dparams, new_non_trainable = self._jax_gradients(trainable, non_trainable, x, dy, training)
        for var, value in zip(layer.non_trainable_variables, new_non_trainable):
            var.assign(value)  # stateless_call returns the updated statistics instead of assigning them
        return y, dx, *(dparams if self.layer.center and layer.trainable else (None, None))

    def _jax_gradients(self, trainable, non_trainable, x, dy, training: bool) -> tuple:
        """A pure function of the variables' values: ``(y, dx, dparams, new non-trainable values)``."""
        import jax

        layer = self.layer
        y, vjp, new_non_trainable = jax.vjp(
            lambda trainable, x: layer.stateless_call(trainable, non_trainable, x, training=training),
            trainable, x, has_aux=True,
        )
        dparams, dx = vjp(dy)  # dy is the gradient of y
        return y, dx, dparams, new_non_trainable

    def _grad_torch(self, x, dy, training):
        import torch

        x = x.detach().requires_grad_(True)
        y = self.layer(x, training=training)
        dx, *dparams = torch.autograd.grad(y, [x, *(v.value for v in self._params())], dy, allow_unused=True)
        return y, dx, *(dparams or (None, None))


def tape_hvp(layer, params: list, x, dy, vx, vparams: list) -> list:
    """Second order on TensorFlow: nested tapes, the outer one differentiating the inner one's gradients of
    ``layer(x, training=True)`` (in ``x`` and ``params``) along ``(vx, vparams)``."""
    import tensorflow as tf

    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = layer(x, training=True)
        grads = inner.gradient(y, [x, *params], output_gradients=dy)
    return outer.gradient(grads, [x, *params], output_gradients=[vx, *vparams],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)


class KerasImplementation(Implementation):
    family = "keras"
    framework = "keras"
    convention = KERAS
    capabilities = Capabilities(features=frozenset({"affine_false", "trainable_false"}), double_backward=True)

    def __init__(self, backend: str, requires: tuple[str, ...]) -> None:
        self.backend = backend
        self.name = f"keras.{backend}"
        self.requires = ("keras", *requires)
        self.process_env = MappingProxyType({"KERAS_BACKEND": backend})

    def _keras(self):
        import keras

        if keras.backend.backend() != self.backend:  # the worker sets KERAS_BACKEND before importing keras
            raise RuntimeError(f"{self.name} needs KERAS_BACKEND={self.backend}, this process has "
                               f"{os.environ.get('KERAS_BACKEND')!r}")
        return keras

    def environment(self) -> dict[str, str]:
        keras = self._keras()
        backend = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[self.backend])
        return {"version": keras.__version__, "backend": self.backend, "backend_version": backend.__version__}

    def defaults(self) -> dict[str, float | int]:
        params = inspect.signature(self._keras().layers.BatchNormalization).parameters
        return {"momentum": params["momentum"].default, "eps": params["epsilon"].default,
                "channel_axis": params["axis"].default}

    def build(self, spec: LayerSpec) -> KerasLayer:
        self._keras()
        return KerasLayer(spec)


IMPLEMENTATIONS = [
    KerasImplementation("tensorflow", ("tensorflow",)),
    KerasImplementation("jax", ("jax",)),
    KerasImplementation("torch", ("torch",)),
]
