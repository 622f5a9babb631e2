"""The seeds' CNN in Flax NNX (``nnx.Conv``, ``nnx.BatchNorm``, ``nnx.relu``, ``nnx.max_pool``, ``nnx.Linear``),
channels last, jitted as Flax users run it (``nnx.jit``; gradients by ``nnx.value_and_grad`` over the
``nnx.Param`` state and the input). Parameters and statistics are kept in the case's dtype (``param_dtype``;
Flax's default float32 would round a float64 network's state). The weights cross in PyTorch's layout and are
ported on the way in and out (:mod:`conformance.operators.cnn.spec`), as for Keras.
"""

from __future__ import annotations

import functools

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
from .flax_nn import FlaxImplementation

# State fields -> (submodule, variable).
_VARIABLES = {"conv1": ("conv1", "kernel"), "conv2": ("conv2", "kernel"), "fc_weight": ("fc", "kernel"),
              "fc_bias": ("fc", "bias")}
_BATCHNORM = {"gamma": "scale", "beta": "bias", "running_mean": "mean", "running_var": "var"}


@functools.cache
def _functions():
    import jax.numpy as jnp
    from flax import nnx

    @nnx.jit(static_argnums=2)
    def forward(model, x, training: bool):
        return model(x, training)

    @nnx.jit(static_argnums=3)
    def forward_backward(model, x, dy, training: bool):
        def loss(model, x):
            y = model(x, training)
            return jnp.sum(y * dy), y  # the gradient of the sum w.r.t. y is exactly dy

        grad = nnx.value_and_grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1), has_aux=True)
        (_, y), (dparams, dx) = grad(model, x)
        return y, dx, dparams

    return forward, forward_backward


def _model(spec: NetworkSpec):
    import jax.numpy as jnp
    from flax import nnx

    dtype = getattr(jnp, spec.dtype)

    class Network(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            conv = lambda i, o: nnx.Conv(i, o, (3, 3), padding="SAME", use_bias=False, dtype=dtype,  # noqa: E731
                                         param_dtype=dtype, rngs=rngs)
            bn = lambda c: nnx.BatchNorm(c, momentum=spec.momentum, epsilon=spec.eps, dtype=dtype,  # noqa: E731
                                         param_dtype=dtype, rngs=rngs)
            self.conv1, self.bn1 = conv(IN_CHANNELS, BLOCKS[0]), bn(BLOCKS[0])
            self.conv2, self.bn2 = conv(BLOCKS[0], BLOCKS[1]), bn(BLOCKS[1])
            self.fc = nnx.Linear(spec.features, CLASSES, dtype=dtype, param_dtype=dtype, rngs=rngs)

        def __call__(self, x, training: bool):
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                x = nnx.max_pool(nnx.relu(bn(conv(x), use_running_average=not training)), (2, 2), (2, 2))
            return self.fc(x.reshape(x.shape[0], -1))

    return Network(nnx.Rngs(0))


class FlaxNetworkLayer:
    def __init__(self, spec: NetworkSpec) -> None:
        import jax.numpy as jnp

        self.spec, self.jnp, self.dtype = spec, jnp, getattr(jnp, spec.dtype)
        self.model = _model(spec)

    def _variable(self, name: str):
        if name in _VARIABLES:
            module, attribute = _VARIABLES[name]
        else:
            block, _, field = name.partition("_")
            module, attribute = block, _BATCHNORM[field]
        return getattr(getattr(self.model, module), attribute)

    def _names(self) -> list[str]:
        return [*PARAMETERS, *(bn_field(b, f) for b in (1, 2) for f in ("running_mean", "running_var"))]

    def _input(self, x: np.ndarray):
        x, cast = framework_input(x)
        return self.jnp.asarray(x, self.dtype if cast else None)

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            variable = self._variable(name)
            variable[...] = self.jnp.asarray(to_channels_last(name, value, self.spec), variable[...].dtype)

    def get_state(self) -> State:
        return State(**{name: from_channels_last(name, np.asarray(self._variable(name)[...], np.float64), self.spec)
                        for name in self._names()})

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return np.asarray(_functions()[0](self.model, self._input(x), training))

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        y, dx, dparams = _functions()[1](self.model, self._input(x), self._input(dy), training)
        grads = []
        for name in PARAMETERS:
            module, attribute = _VARIABLES.get(name) or (name.partition("_")[0], _BATCHNORM[name.partition("_")[2]])
            value = np.asarray(getattr(getattr(dparams, module), attribute)[...], np.float64)
            grads.append(from_channels_last(name, value, self.spec))
        return np.asarray(y), np.asarray(dx, np.float64), *grads


class FlaxNetwork(FlaxImplementation):
    """The CNN in Flax NNX: environment (x64 enabled in its worker) and constructor defaults are the BatchNorm
    adapter's."""

    operator = CNN
    benchmarked = False
    families = frozenset({"forward", "gradients", "running_stats", "contract", "conventions", "random"})

    def __init__(self) -> None:
        super().__init__("nnx")
        self.name = "flax.nnx.cnn"
        self.capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}), ranks=frozenset({4}),
                                         channel_axes=frozenset({-1}), features=frozenset())

    def output_dtype(self, spec: NetworkSpec) -> str:
        return spec.dtype  # parameters in the input's dtype: nothing promotes

    def build(self, spec: NetworkSpec) -> FlaxNetworkLayer:
        return FlaxNetworkLayer(spec)


IMPLEMENTATIONS = [FlaxNetwork()]
