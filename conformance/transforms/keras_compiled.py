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

The normalization family's Keras layers (LayerNormalization, GroupNormalization, RMSNormalization on TensorFlow
and JAX, tf-keras' LayerNormalization and GroupNormalization) compiled the same way, without second order: a
family of their own, ``keras.compile`` (and ``tf_keras.compile``), which ``tox -e report`` runs (as
``torch.compile``'s family variants).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..adapters.base import Derivation, Implementation, LayerSpec
from ..adapters.groupnorm_keras import KerasGroupNorm, TfKerasGroupNorm
from ..adapters.keras3 import KerasImplementation, KerasLayer
from ..adapters.layernorm_keras import KerasLayerNorm, KerasLayerNormLayer, TfKerasLayerNorm
from ..adapters.rmsnorm_keras import KerasRMSNorm
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


def _compile_tensorflow(layer: KerasLayerNormLayer) -> None:
    """The layer's call and its gradient tape under XLA; the tape differentiates ``sum(y * dy)`` (not
    ``output_gradients``: :meth:`XlaTfKerasLayer._tape` says why)."""
    import tensorflow as tf

    call = _xla(lambda x, training: layer.layer(x, training=training))

    def tape(x, dy) -> list:
        if x.shape != dy.shape:  # what output_gradients refuses eagerly (traced: the shapes are static)
            raise ValueError(f"dy must have the shape of the output {x.shape}, got {dy.shape}")
        with tf.GradientTape() as g:
            g.watch(x)
            y = layer.layer(x, training=True)
            loss = tf.reduce_sum(y * dy)
        return [y, *g.gradient(loss, [x, *layer.params])]

    layer.forward = lambda x, training: layer._output(call(layer._tensor(x), training))
    layer._grad_tensorflow = _xla(tape)


def _compile_jax(layer: KerasLayerNormLayer) -> None:
    """``stateless_call`` and its ``vjp`` under ``jax.jit``, the trainable variables' values passed in (a closure
    would freeze them at the first trace; these layers keep no other variables)."""
    import jax

    def apply(trainable, x):
        return layer.layer.stateless_call(trainable, [], x)[0]

    def gradients(trainable, x, dy) -> tuple:
        y, vjp = jax.vjp(apply, trainable, x)
        return y, *vjp(dy)

    call, grads = jax.jit(apply), jax.jit(gradients)

    def grad_jax(x, dy) -> list:
        trainable, index = layer._jax_trainable()
        y, dparams, dx = grads(trainable, x, dy)
        return [y, dx, *(dparams[i] for i in index)]

    layer.forward = lambda x, training: layer._output(call(layer._jax_trainable()[0], layer._tensor(x)))
    layer._grad_jax = grad_jax


class _CompiledFamily:
    """A family layer's eager adapter with its call and gradient compiled (XLA on TensorFlow, ``jax.jit`` on
    JAX). A family of its own, ``keras.compile`` or ``tf_keras.compile`` (``keras.compile.jax.LayerNormalization``):
    the ``keras`` and ``tfkeras`` environments do not run it."""

    benchmarked = False

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.derivation = Derivation("compile", (self.name,))
        self.jax = getattr(self, "backend", "tensorflow") == "jax"
        eager = self.family
        self.family = f"{eager}.compile"
        self.name = self.family + self.name.removeprefix(eager)
        caps = self.capabilities
        self.capabilities = replace(caps, dtypes=caps.dtypes & COMPILED_DTYPES,
                                    ranks=caps.ranks & COMPILED_RANKS or caps.ranks, double_backward=False)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "compiled": "jax.jit" if self.jax else "tf.function(jit_compile=True)"}

    def build(self, spec) -> KerasLayerNormLayer:
        layer = super().build(spec)
        (_compile_jax if self.jax else _compile_tensorflow)(layer)
        return layer


def _compiled_family(eager: type[Implementation]) -> type[Implementation]:
    return type(f"Compiled{eager.__name__}", (_CompiledFamily, eager), {})


IMPLEMENTATIONS = [
    *(_compiled_family(cls)(backend) for cls in (KerasLayerNorm, KerasGroupNorm, KerasRMSNorm)
      for backend in ("tensorflow", "jax")),
    *(_compiled_family(cls)() for cls in (TfKerasLayerNorm, TfKerasGroupNorm)),
    CompiledKerasImplementation("tensorflow", ("tensorflow",)),
    CompiledKerasImplementation("jax", ("jax",)),
    CompiledTfKerasImplementation(fused=True),
    CompiledTfKerasImplementation(fused=False),
]
