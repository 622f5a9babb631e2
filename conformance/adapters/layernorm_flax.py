"""Flax LayerNorm: ``flax.linen.LayerNorm`` and ``flax.nnx.LayerNorm``, jitted as Flax users run them.

Built with ``reduction_axes`` and ``feature_axes`` both the normalized axes (elementwise affine over them,
as PyTorch's; Flax's default ``feature_axes=-1`` scales the last axis only), ``epsilon``, ``use_scale`` and
``use_bias``; nnx keeps its parameters flat (``num_features`` of them), reshaped here to the normalized
shape. Both run as pure functions of their parameters (linen ``apply``, nnx ``split``/``merge``), so the
gradients are ``jax.vjp`` and the second order ``jax.jvp`` of it. The worker enables 64-bit types.
Options: ``use_fast_variance`` (both; the default computes E[x^2] - E[x]^2) and, linen only,
``force_float32_reductions``.
"""

from __future__ import annotations

import inspect
import math
from types import MappingProxyType

import numpy as np

from reference import LAYERNORM_CONVENTIONS

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities, Implementation, State
from .flax_nn import _input, _numpy, _param_name

_NAMES = {"gamma": "scale", "beta": "bias"}
_OPTIONS = {"linen": {"use_fast_variance", "force_float32_reductions"}, "nnx": {"use_fast_variance"}}


class FlaxLayerNormLayer:
    """``kind``: the module, ``LayerNorm`` or ``RMSNorm`` (which has no bias argument); another module of the
    same parameters (GroupNorm's) overrides :meth:`_arguments` and :meth:`_shapes`."""

    def __init__(self, spec: LayerNormSpec, api: str, kind: str = "LayerNorm") -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.spec, self.dtype = jax, jnp, spec, getattr(jnp, spec.dtype)
        args = self._arguments(spec, kind)
        example_shape, self.parameter_shape = self._shapes(spec)
        if api == "linen":
            import flax.linen as nn

            module = getattr(nn, kind)(**args)
            x = jnp.zeros(example_shape, self.dtype)
            self.params = dict(module.init(jax.random.key(0), x).get("params", {}))
            self.eps = module.epsilon
            apply = lambda params, x: module.apply({"params": params}, x)  # noqa: E731
        else:
            from flax import nnx

            layer = getattr(nnx, kind)(math.prod(self.parameter_shape), rngs=nnx.Rngs(0), **args)
            graphdef, state, rest = nnx.split(layer, nnx.Param, ...)
            leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
            names = [_param_name(path) for path, _ in leaves]
            self.params, self.eps = dict(zip(names, (leaf for _, leaf in leaves))), layer.epsilon

            def apply(params, x):  # the parameters as a State again, in the order nnx flattens it
                state = jax.tree_util.tree_unflatten(treedef, [params[name] for name in names])
                return nnx.merge(graphdef, state, rest, copy=True)(x)

        self.forward_fn = jax.jit(apply)
        def vjp(params, x, dy):
            y, backward = jax.vjp(apply, params, x)
            return y, *backward(dy.astype(y.dtype))  # y is promoted with the float32 parameters: dy with it

        def hvp(params, x, dy, vparams, vx):
            def gradients(p, x):
                y, backward = jax.vjp(apply, p, x)
                return backward(dy.astype(y.dtype))

            return jax.jvp(gradients, (params, x), (vparams, vx))[1]

        self.vjp = jax.jit(vjp)

        self.hvp = jax.jit(hvp)

    def _arguments(self, spec: LayerNormSpec, kind: str) -> dict:
        """The constructor's arguments: the normalized axes both reduced and scaled."""
        axes = tuple(range(spec.begin_axis, 0))
        return dict(epsilon=spec.eps, use_scale=spec.affine, reduction_axes=axes, feature_axes=axes,
                    **dict(spec.options), **({"use_bias": spec.bias} if kind == "LayerNorm" else {}))

    def _shapes(self, spec: LayerNormSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """An input's shape to initialise linen's parameters with, and the parameters' shape as ours."""
        return (1,) * (spec.rank + spec.begin_axis) + spec.normalized_shape, spec.normalized_shape

    def _ours(self, tree: dict, name: str) -> np.ndarray | None:
        flax_name = _NAMES[name]
        return None if flax_name not in tree else _numpy(tree[flax_name]).reshape(self.parameter_shape)

    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            held = self.params[_NAMES[name]]
            self.params = {**self.params, _NAMES[name]: self.jnp.asarray(np.reshape(value, held.shape), held.dtype)}

    def get_state(self) -> State:
        return State(**{name: self._ours(self.params, name) for name in _NAMES}, eps=self.eps)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return np.asarray(self.forward_fn(self.params, _input(x, self.dtype)))

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        y, dparams, dx = self.vjp(self.params, _input(x, self.dtype), _input(dy, self.dtype))
        return np.asarray(y), _numpy(dx), *(self._ours(dparams, name) for name in _NAMES)

    def double_backward(self, x, dy, vx, vgamma, vbeta) -> tuple:
        given = {"scale": vgamma, "bias": vbeta}
        vparams = {k: self.jnp.asarray(np.reshape(given[k], v.shape), v.dtype) for k, v in self.params.items()}
        hparams, hx = self.hvp(self.params, _input(x, self.dtype), _input(dy, self.dtype), vparams,
                               _input(vx, self.dtype))
        return _numpy(hx), *(self._ours(hparams, name) for name in _NAMES)


class FlaxLayerNorm(Implementation):
    family = "flax"
    framework = "flax"
    operator = LAYERNORM
    convention = LAYERNORM_CONVENTIONS["flax_layernorm"]
    requires = ("flax", "jax")
    # Without it JAX computes float64 layers in float32; set before JAX is imported in the worker.
    process_env = MappingProxyType({"JAX_ENABLE_X64": "1"})

    @property
    def benchmarked(self) -> bool:
        """linen's (nnx jits the same computation)."""
        return self.api == "linen"

    def __init__(self, api: str) -> None:
        self.api = api
        self.name = f"flax.{api}.LayerNorm"
        self.capabilities = Capabilities(
            ranks=frozenset({1, 2, 3, 4, 5}), options=frozenset(_OPTIONS[api]), double_backward=True,
            features=frozenset({"affine_false", "scale_false", "bias_false", "multi_axis"}))

    def environment(self) -> dict[str, str]:
        import flax
        import jax

        return {"version": flax.__version__, "backend": "jax", "backend_version": jax.__version__,
                "x64": str(jax.config.jax_enable_x64)}

    def defaults(self) -> dict[str, object]:
        import flax.linen
        from flax import nnx

        # nnx modules are built through a metaclass whose signature hides __init__'s arguments.
        target = flax.linen.LayerNorm if self.api == "linen" else nnx.LayerNorm.__init__
        params = inspect.signature(target).parameters
        return {"eps": params["epsilon"].default, "axes": params["reduction_axes"].default,
                "affine": params["use_scale"].default, "bias": params["use_bias"].default}

    def output_dtype(self, spec: LayerNormSpec) -> str:
        """Flax's ``_normalize`` computes in ``jnp.result_type`` of the input and the float32 parameters: a
        half-precision input with a scale or a bias gives float32."""
        if not (spec.affine or spec.bias):
            return spec.dtype
        return "float64" if spec.dtype == "float64" else "float32"

    def build(self, spec: LayerNormSpec) -> FlaxLayerNormLayer:
        return FlaxLayerNormLayer(spec, self.api)


IMPLEMENTATIONS = [FlaxLayerNorm("linen"), FlaxLayerNorm("nnx")]
