"""Keras 3 and tf-keras BatchNormalization compiled as users compile them, checked against the reference:
``tf.function(jit_compile=True)`` (XLA) for Keras 3 on TensorFlow and for tf-keras (fused and not), and
``jax.jit`` for Keras 3 on JAX. (Flax's adapters, ``flax_nn.py``, are jitted already.)

The layers are the eager adapters' (``keras3.KerasLayer``, ``tf_keras.TfKerasLayer``); only their calls
run compiled. TensorFlow: the layer call, the gradient tape and the nested tapes of second order each
become one XLA-compiled ``tf.function`` per layer (it reads and updates the layer's variables, so set
state is never stale). JAX: the pure ``stateless_call`` and its gradient are jitted with the variables'
values as arguments, and the new statistics are assigned afterwards; second order is not declared there
(the eager adapter's ``jax.jvp`` reads the variables as constants, which a jitted trace would freeze),
nor for tf-keras (its eager adapter's nested tapes are not wrapped). Dtypes: float32 only
and ranks 2 and 4 (``torch_compiled.COMPILED_DTYPES``, ``COMPILED_RANKS``: compilation per shape and dtype is
what costs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..adapters.base import Derivation, LayerSpec
from ..adapters.keras3 import KerasImplementation, KerasLayer
from ..adapters.tf_keras import TfKerasImplementation, TfKerasLayer
from .torch_compiled import COMPILED_DTYPES, COMPILED_RANKS


def _xla(fn: Callable) -> Callable:
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


class _XlaCalls:
    """For a TensorFlow layer whose call (``_forward(x, training)``) and gradient step (``_step(x, dy,
    training)``, returning ``(y, dx, dgamma, dbeta)``) are XLA-compiled: the protocol's forward and the
    benchmarks' runner through them."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._output(self._forward(self._tensor(x), training))

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        x, dy = self._tensor(x), self._tensor(dy)
        if operation == "forward_backward":
            return lambda: self._step(x, dy, True)
        return lambda: self._forward(x, operation == "forward_training")


class XlaKerasLayer(_XlaCalls, KerasLayer):
    """Keras 3 on TensorFlow: forward, gradients and second order under ``tf.function(jit_compile=True)``."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self._forward = _xla(lambda x, training: self.layer(x, training=training))
        self._step = _xla(lambda x, dy, training: KerasLayer._grad_tensorflow(self, x, dy, training))
        self._hvp = _xla(lambda x, dy, vx, vparams: KerasLayer._hvp_tensorflow(self, x, dy, vx, vparams))

    def _grad_tensorflow(self, x, dy, training):
        return self._step(x, dy, training)

    def _hvp_tensorflow(self, x, dy, vx, vparams) -> list:
        return self._hvp(x, dy, vx, vparams)


class JitKerasLayer(KerasLayer):
    """Keras 3 on JAX: ``stateless_call`` and its gradient under ``jax.jit``, the variables' values passed in."""

    def __init__(self, spec: LayerSpec) -> None:
        import jax

        super().__init__(spec)
        call = self.layer.stateless_call
        self._call = jax.jit(lambda t, n, x, training: call(t, n, x, training=training), static_argnums=3)
        self._gradients = jax.jit(functools.partial(KerasLayer._jax_gradients, self), static_argnums=4)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        layer = self.layer
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        y, new_non_trainable = self._call(trainable, non_trainable, self._tensor(x), training)
        for var, value in zip(layer.non_trainable_variables, new_non_trainable):
            var.assign(value)  # stateless_call returns the updated statistics instead of assigning them
        return self._output(y)

    def _jax_gradients(self, trainable, non_trainable, x, dy, training: bool) -> tuple:
        return self._gradients(trainable, non_trainable, x, dy, training)

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        import jax

        layer = self.layer
        x, dy = self._tensor(x), self._tensor(dy)
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        if operation == "forward_backward":
            def forward_backward() -> tuple:
                y, dx, dparams, _ = jax.block_until_ready(self._gradients(trainable, non_trainable, x, dy, True))
                return y, dx, *(dparams or (None, None))

            return forward_backward
        training = operation == "forward_training"
        return lambda: jax.block_until_ready(self._call(trainable, non_trainable, x, training)[0])


class XlaTfKerasLayer(_XlaCalls, TfKerasLayer):
    """tf-keras: the layer call and its gradient tape under ``tf.function(jit_compile=True)``."""

    def __init__(self, spec: LayerSpec, fused: bool) -> None:
        super().__init__(spec, fused)
        self._forward = _xla(lambda x, training: self.layer(x, training=training))
        self._step = _xla(self._tape)

    def _tape(self, x, dy, training: bool) -> tuple:
        """The backward with dy as a product, not as ``output_gradients``: given a dy of the wrong shape, XLA's
        gradient with ``output_gradients`` aborts the process (SIGABRT) instead of raising."""
        tf = self.tf
        params = [self.layer.gamma, self.layer.beta] if self.layer.center else []
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = self.layer(x, training=training)
            loss = tf.reduce_sum(y * dy)
        dx, *dparams = tape.gradient(loss, [x, *params])
        return y, dx, *(dparams or (None, None))

    def forward_backward(self, x, dy, training):
        y, *gradients = self._step(self._tensor(x), self._tensor(dy), training)
        return self._output(y), *map(self._numpy, gradients)


class CompiledKerasImplementation(KerasImplementation):
    benchmarked = False  # compiled per shape: the eager variant is the one the benchmarks time

    def __init__(self, backend: str, requires: tuple[str, ...]) -> None:
        super().__init__(backend, requires)
        self.derivation = Derivation("compile", (self.name,))
        self.name = f"keras.{backend}.{'xla' if backend == 'tensorflow' else 'jit'}"
        self.capabilities = replace(self.capabilities, dtypes=COMPILED_DTYPES, ranks=COMPILED_RANKS,
                                    double_backward=backend == "tensorflow")

    def environment(self) -> dict[str, str]:
        how = "tf.function(jit_compile=True)" if self.backend == "tensorflow" else "jax.jit"
        return {**super().environment(), "compiled": how}

    def build(self, spec: LayerSpec) -> KerasLayer:
        self._keras()
        return XlaKerasLayer(spec) if self.backend == "tensorflow" else JitKerasLayer(spec)


class CompiledTfKerasImplementation(TfKerasImplementation):
    benchmarked = False  # compiled per shape: the eager variant is the one the benchmarks time

    def __init__(self, fused: bool) -> None:
        super().__init__(fused)
        self.derivation = Derivation("compile", (self.name,))
        self.name += ".xla"
        caps = self.capabilities
        self.capabilities = replace(caps, dtypes=caps.dtypes & COMPILED_DTYPES,
                                    ranks=caps.ranks & COMPILED_RANKS or caps.ranks, double_backward=False)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "compiled": "tf.function(jit_compile=True)"}

    def build(self, spec: LayerSpec) -> XlaTfKerasLayer:
        return XlaTfKerasLayer(spec, self.fused)


IMPLEMENTATIONS = [
    CompiledKerasImplementation("tensorflow", ("tensorflow",)),
    CompiledKerasImplementation("jax", ("jax",)),
    CompiledTfKerasImplementation(fused=True),
    CompiledTfKerasImplementation(fused=False),
]
