"""tf-keras (Keras 2) ``tf_keras.layers.BatchNormalization`` with ``fused=True`` and ``fused=False``.

The fused kernel stores the Bessel-corrected running variance (its own convention), supports only
4D/5D input and rejects float64; the non-fused path follows the Keras convention.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from reference import KERAS, TF_KERAS_FUSED

from .base import Capabilities, Implementation, LayerSpec, State, framework_input

# State's fields -> the layer's variables.
_VARIABLES = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class TfKerasLayer:
    # State's fields -> the layer's variables (a variant's layer adds its own).
    variables = _VARIABLES

    def __init__(self, spec: LayerSpec, fused: bool, **variant: object) -> None:
        """``variant``: further constructor arguments (a variant's: ``renorm``, ``virtual_batch_size``, ...; a
        mixed-precision policy as ``dtype``, ``transforms/mixed_precision.py``, inputs then still handed over in the
        spec's)."""
        import tensorflow as tf
        import tf_keras

        self.tf = tf
        self.dtype = spec.dtype
        self.layer = tf_keras.layers.BatchNormalization(
            axis=spec.channel_axis, momentum=spec.momentum, epsilon=spec.eps,
            center=spec.affine, scale=spec.affine, fused=fused, **{"dtype": spec.dtype, **variant},
        )
        shape = [None] * spec.rank
        shape[spec.channel_axis] = spec.num_features
        self.layer.build(tuple(shape))
        self.layer.trainable = spec.trainable

    def _tensor(self, x: np.ndarray):
        x, cast = framework_input(x)
        return self.tf.cast(self.tf.convert_to_tensor(x), self.dtype) if cast else self.tf.convert_to_tensor(x)

    def _numpy(self, t) -> np.ndarray | None:
        return None if t is None else self.tf.cast(t, self.tf.float64).numpy()

    def set_state(self, state: State) -> None:
        for name, var in self.variables.items():
            value, variable = getattr(state, name), getattr(self.layer, var)
            if value is not None and variable is not None:  # ghost batches keep (1, ..., C, ...)-shaped variables
                variable.assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype).reshape(variable.shape))

    def get_state(self) -> State:
        values = {name: self._numpy(getattr(self.layer, var)) for name, var in self.variables.items()}
        return State(**{name: None if v is None else v.reshape(-1) for name, v in values.items()},
                     eps=self.layer.epsilon, momentum=self.layer.momentum)

    def _output(self, y) -> np.ndarray:
        return y.numpy()  # y in its own dtype; bfloat16 is ml_dtypes

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._output(self.layer(self._tensor(x), training=training))

    def forward_backward(self, x, dy, training):
        y, dx, *dparams = self._forward_backward(self._tensor(x), self._tensor(dy), training)
        # per channel: ghost batches keep (1, ..., C, ...)-shaped parameters
        return self._output(y), self._numpy(dx), *(None if g is None else self._numpy(g).reshape(-1) for g in dparams)

    def _params(self) -> list:
        """The parameters the gradients are taken of: gamma and beta where the layer has them."""
        return [self.layer.gamma, self.layer.beta] if self.layer.center else []

    def _forward_backward(self, x, dy, training: bool) -> tuple:
        """The one backward, on tensors (the protocol's and the benchmarks' runner's): dy is the gradient of y."""
        tf = self.tf
        params = self._params()
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = self.layer(x, training=training)
        dx, *dparams = tape.gradient(y, [x, *params], output_gradients=dy)
        return y, dx, *(dparams or (None, None))

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        tf = self.tf
        x, dy, vx = self._tensor(x), self._tensor(dy), self._tensor(vx)
        params = self._params()
        vparams = [self._tensor(v) for v in (vgamma, vbeta)] if params else []
        with tf.GradientTape() as outer:  # nested tapes: the outer one differentiates the inner one's gradients
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = self.layer(x, training=True)
            grads = inner.gradient(y, [x, *params], output_gradients=dy)
        hx, *hparams = outer.gradient(grads, [x, *params], output_gradients=[vx, *vparams],
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return self._numpy(hx), *((self._numpy(h) for h in hparams) if hparams else (None, None))

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        x, dy = self._tensor(x), self._tensor(dy)
        if operation == "forward_backward":
            return lambda: self._forward_backward(x, dy, True)
        training = operation == "forward_training"
        return lambda: self.layer(x, training=training)  # eager CPU ops return when they are done


class TfKerasImplementation(Implementation):
    family = "tf_keras"
    framework = "tf_keras"
    requires = ("tensorflow", "tf_keras")

    def __init__(self, fused: bool) -> None:
        self.fused = fused
        self.name = f"tf_keras.{'fused' if fused else 'nonfused'}"
        self.convention = TF_KERAS_FUSED if fused else KERAS
        features = frozenset({"affine_false", "trainable_false"})
        self.capabilities = (
            Capabilities(dtypes=frozenset({"float32", "float16", "bfloat16"}), ranks=frozenset({4, 5}),
                         features=features, double_backward=True)
            if fused
            else Capabilities(features=features, double_backward=True)
        )

    def environment(self) -> dict[str, str]:
        import tensorflow as tf
        import tf_keras

        return {"version": tf_keras.__version__, "backend": "tensorflow", "backend_version": tf.__version__}

    def defaults(self) -> dict[str, float | int]:
        import tf_keras

        params = inspect.signature(tf_keras.layers.BatchNormalization).parameters
        return {"momentum": params["momentum"].default, "eps": params["epsilon"].default,
                "channel_axis": params["axis"].default}

    def build(self, spec: LayerSpec) -> TfKerasLayer:
        return TfKerasLayer(spec, self.fused)


IMPLEMENTATIONS = [TfKerasImplementation(fused=True), TfKerasImplementation(fused=False)]
