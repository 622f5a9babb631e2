"""A third-party adapter written for speed: a BatchNorm in plain JAX, compiled once per input signature and
reused across cases (docs/third-party.md, "Speed").

    pytest --pyargs conformance.checks --impl jax_adapter:IMPLEMENTATIONS -n 2

Eager JAX dispatches every operation on its own, which is what made an eager adapter take seconds per check.
Here each computation is one ``jax.jit`` function at module level: its static arguments (channel axis,
mode) and the arrays' shapes and dtypes are the cache key, and everything that changes between cases
(eps, momentum, parameters, running statistics) is a traced argument, so that a new case with a signature
seen before costs no compilation. The backward is the same function under ``jax.vjp``, compiled together
with the forward. The layer follows Flax's convention (``reference.FLAX``): momentum weights the old value,
biased running variance, eps 1e-5, channels last by default.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from conformance.adapters.base import Capabilities, Implementation, LayerSpec, State
from reference import FLAX

jax.config.update("jax_enable_x64", True)  # float64 cases run in float64

FIELDS = ("gamma", "beta", "running_mean", "running_var")
_FLOATS = ("float64", "float32", "float16", "bfloat16")


def _normalize(x, gamma, beta, mean, var, eps, momentum, axis: int, training: bool):
    """``y`` and the new running statistics; half-precision input is computed in float32."""
    compute = jnp.promote_types(x.dtype, jnp.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    xc = x.astype(compute)
    if training:
        axes = tuple(a for a in range(x.ndim) if a != axis)
        batch_mean = xc.mean(axis=axes)
        batch_var = jnp.square(xc - batch_mean.reshape(shape)).mean(axis=axes)  # two-pass: no cancellation
        mean_used, var_used = batch_mean, batch_var
        mean = momentum * mean + (1 - momentum) * batch_mean.astype(mean.dtype)
        var = momentum * var + (1 - momentum) * batch_var.astype(var.dtype)
    else:
        mean_used, var_used = mean.astype(compute), var.astype(compute)
    scale = jax.lax.rsqrt(var_used + eps) * gamma.astype(compute)
    y = (xc - mean_used.reshape(shape)) * scale.reshape(shape) + beta.astype(compute).reshape(shape)
    return y.astype(x.dtype), (mean, var)


forward = jax.jit(_normalize, static_argnames=("axis", "training"))


@partial(jax.jit, static_argnames=("axis", "training"))
def forward_backward(x, dy, gamma, beta, mean, var, eps, momentum, axis: int, training: bool):
    def y_of(x, gamma, beta):
        return _normalize(x, gamma, beta, mean, var, eps, momentum, axis, training)

    y, vjp, statistics = jax.vjp(y_of, x, gamma, beta, has_aux=True)
    return (y, *vjp(dy.astype(y.dtype))), statistics


class JaxLayer:
    def __init__(self, spec: LayerSpec) -> None:
        self.spec = spec
        # Parameters and statistics in float32 for half-precision layers, as frameworks keep them.
        self.dtype = np.float64 if spec.dtype == "float64" else np.float32
        c = spec.num_features
        self.state = {"gamma": np.ones(c, self.dtype), "beta": np.zeros(c, self.dtype),
                      "running_mean": np.zeros(c, self.dtype), "running_var": np.ones(c, self.dtype)}

    def set_state(self, state: State) -> None:
        # Copies: the caller may write into its arrays afterwards.
        self.state |= {name: np.array(state[name], self.dtype) for name in FIELDS if state.get(name) is not None}

    def get_state(self) -> State:
        return State(**{name: np.array(value) for name, value in self.state.items()})

    def _checked(self, x: np.ndarray, training: bool) -> tuple[jax.Array, int]:
        """The input as JAX takes it, refused as a framework refuses it: what is not a floating array with
        one feature per parameter along the channel axis, or (training) with no values per channel."""
        x = np.asarray(x)
        if x.dtype.name not in _FLOATS:
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"x must have at least 2 dimensions, got shape {x.shape}")
        axis = self.spec.channel_axis % x.ndim
        if x.shape[axis] != self.spec.num_features:
            raise ValueError(f"x has {x.shape[axis]} features at axis {axis}, the layer {self.spec.num_features}")
        if training and x.size == 0:
            raise ValueError(f"cannot compute batch statistics of an empty batch, shape {x.shape}")
        return jnp.asarray(x), axis

    def _arguments(self) -> tuple:
        s = self.state
        return (s["gamma"], s["beta"], s["running_mean"], s["running_var"], self.spec.eps, self.spec.momentum)

    def _update(self, training: bool, statistics: tuple) -> None:
        if training:  # the new statistics replace the old only once the call has succeeded
            self.state |= dict(zip(("running_mean", "running_var"), map(np.array, statistics)))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x, axis = self._checked(x, training)
        y, statistics = forward(x, *self._arguments(), axis=axis, training=training)
        self._update(training, statistics)
        return np.array(y)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool):
        x, axis = self._checked(x, training)
        if np.shape(dy) != x.shape:
            raise ValueError(f"dy has shape {np.shape(dy)}, y has {x.shape}")
        outputs, statistics = forward_backward(x, jnp.asarray(dy), *self._arguments(), axis=axis, training=training)
        self._update(training, statistics)
        return tuple(np.array(a) for a in outputs)


class JaxImplementation(Implementation):
    name = "example.jax"
    family = "example"
    framework = "jax"
    convention = FLAX
    requires = ("jax",)
    capabilities = Capabilities(features=frozenset())

    def environment(self) -> dict[str, str]:
        return {"version": jax.__version__, "x64": str(jax.config.jax_enable_x64)}

    def defaults(self) -> dict[str, object]:
        return {"momentum": 0.99, "eps": 1e-5, "channel_axis": -1}

    def build(self, spec: LayerSpec) -> JaxLayer:
        return JaxLayer(spec)


IMPLEMENTATIONS = [JaxImplementation()]
