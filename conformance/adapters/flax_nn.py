"""Flax ``flax.linen.BatchNorm`` and ``flax.nnx.BatchNorm``, jitted as Flax users run them.

Training is ``use_running_average=False`` with the ``batch_stats`` collection mutable (linen) or the
module's ``BatchStat`` state (nnx); gradients come from ``jax.value_and_grad`` (linen) and
``nnx.value_and_grad`` (nnx). The worker enables 64-bit types (``JAX_ENABLE_X64``), without which JAX
silently computes float64 layers in float32.

Case options (``cases.FRAMEWORK_OPTIONS``) map onto constructor arguments: ``use_fast_variance``,
``force_float32_reductions`` (linen only), ``param_dtype`` and ``compute_dtype`` (Flax's ``dtype``); the
value ``"input"`` is the input's dtype.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import MappingProxyType

import numpy as np

from reference import FLAX

from .base import Capabilities, Implementation, LayerSpec, State, framework_input

_PARAMS = {"gamma": "scale", "beta": "bias"}
_STATS = {"running_mean": "mean", "running_var": "var"}
_OPTIONS = {"linen": {"use_fast_variance", "force_float32_reductions", "param_dtype", "compute_dtype"},
            "nnx": {"use_fast_variance", "param_dtype", "compute_dtype"}}


def _constructor_args(spec: LayerSpec) -> dict:
    """Keyword arguments shared by both APIs: the spec's settings and its options."""
    import jax.numpy as jnp

    options = dict(spec.options)
    args = dict(axis=spec.channel_axis, momentum=spec.momentum, epsilon=spec.eps, use_bias=spec.affine,
                use_scale=spec.affine)
    if options.get("param_dtype") == "input":
        args["param_dtype"] = getattr(jnp, spec.dtype)
    if options.get("compute_dtype") == "input":
        args["dtype"] = getattr(jnp, spec.dtype)
    for name in ("use_fast_variance", "force_float32_reductions"):
        if name in options:
            args[name] = options[name]
    return args


def _input(x: np.ndarray, dtype):
    """A JAX array of ``x``: floating input in the layer's dtype, integer or boolean input as it is."""
    import jax.numpy as jnp

    x, cast = framework_input(x)
    return jnp.asarray(x, dtype if cast else None)


def _outputs(y, *gradients) -> tuple:
    """``y`` as NumPy in its own dtype, the gradients as float64."""
    return np.asarray(y), *map(_numpy, gradients)


def _numpy(t) -> np.ndarray | None:
    """float64 NumPy copy of a JAX array (bfloat16 through float32, which holds it exactly)."""
    if t is None:
        return None
    return np.asarray(t).astype(np.float32 if t.dtype.itemsize < 4 else t.dtype).astype(np.float64)


# ---- linen: pure functions of the variables, jitted once per module configuration and input ----

@functools.cache
def _linen_functions() -> tuple[Callable, Callable, Callable]:
    import jax
    import jax.numpy as jnp

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def forward(module, variables: dict, x, training: bool):
        if not training:
            return module.apply(variables, x, use_running_average=True), variables["batch_stats"]
        y, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        return y, updates["batch_stats"]

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def forward_backward(module, variables: dict, x, dy, training: bool):
        def loss(params, x):
            y, stats = forward(module, {**variables, "params": params}, x, training)
            return jnp.sum(y * dy), (y, stats)  # the gradient of the sum w.r.t. y is exactly dy

        (_, (y, stats)), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            variables.get("params", {}), x
        )
        return y, dx, dparams, stats

    @functools.partial(jax.jit, static_argnums=(0,))
    def double_backward(module, variables: dict, x, dy, vx, vparams: dict):
        def gradients(params, x):
            return jax.grad(lambda p, x: jnp.sum(forward(module, {**variables, "params": p}, x, True)[0] * dy),
                            argnums=(0, 1))(params, x)

        _, (hparams, hx) = jax.jvp(gradients, (variables.get("params", {}), x), (vparams, vx))
        return hx, hparams

    return forward, forward_backward, double_backward


class LinenLayer:
    def __init__(self, spec: LayerSpec) -> None:
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        self.jnp, self.dtype = jnp, getattr(jnp, spec.dtype)
        self.module = nn.BatchNorm(**_constructor_args(spec))
        shape = [1] * spec.rank
        shape[spec.channel_axis] = spec.num_features
        # Initialisation creates the parameters and statistics without updating the statistics.
        x = jnp.zeros(shape, self.dtype)
        self.variables = dict(self.module.init(jax.random.key(0), x, use_running_average=True))

    def _get(self, collection: str, name: str):
        return self.variables.get(collection, {}).get(name)

    def set_state(self, state: State) -> None:
        for collection, names in (("params", _PARAMS), ("batch_stats", _STATS)):
            for field, name in names.items():
                value, held = getattr(state, field), self._get(collection, name)
                if value is not None and held is not None:
                    self.variables = {**self.variables, collection: {
                        **self.variables[collection], name: self.jnp.asarray(np.asarray(value), held.dtype)}}

    def get_state(self) -> State:
        return State(**{field: _numpy(self._get("params", name)) for field, name in _PARAMS.items()},
                     **{field: _numpy(self._get("batch_stats", name)) for field, name in _STATS.items()},
                     eps=self.module.epsilon, momentum=self.module.momentum)

    def _input(self, x: np.ndarray):
        return _input(x, self.dtype)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return np.asarray(self._run_forward(self._input(x), training))

    def _run_forward(self, x, training: bool):
        y, stats = _linen_functions()[0](self.module, self.variables, x, training)
        self.variables = {**self.variables, "batch_stats": stats}
        return y

    def forward_backward(self, x, dy, training):
        return _outputs(*self._run_forward_backward(self._input(x), self._input(dy), training))

    def _run_forward_backward(self, x, dy, training: bool) -> tuple:
        y, dx, dparams, stats = _linen_functions()[1](self.module, self.variables, x, dy, training)
        self.variables = {**self.variables, "batch_stats": stats}
        return y, dx, dparams.get("scale"), dparams.get("bias")

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        params = self.variables.get("params", {})
        vparams = {name: self.jnp.asarray(v, params[name].dtype) for name, v in (("scale", vgamma), ("bias", vbeta))
                   if name in params}
        hx, hparams = _linen_functions()[2](self.module, self.variables, self._input(x), self._input(dy),
                                            self._input(vx), vparams)
        return _numpy(hx), _numpy(hparams.get("scale")), _numpy(hparams.get("bias"))

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        return _runner(self, operation, x, dy)


def _runner(layer, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    """The layer's own jitted calls on JAX arrays, waiting for JAX's asynchronous dispatch."""
    import jax

    x, dy = layer._input(x), layer._input(dy)
    if operation == "forward_backward":
        return lambda: jax.block_until_ready(layer._run_forward_backward(x, dy, True))
    training = operation == "forward_training"
    return lambda: jax.block_until_ready(layer._run_forward(x, training))


# ---- nnx: the module holds its state; nnx.jit and nnx.value_and_grad carry it through ----

@functools.cache
def _nnx_functions() -> tuple[Callable, Callable, Callable]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    @nnx.jit(static_argnums=2)
    def forward(bn, x, training: bool):
        return bn(x, use_running_average=not training)

    @nnx.jit(static_argnums=3)
    def forward_backward(bn, x, dy, training: bool):
        def loss(bn, x):
            y = bn(x, use_running_average=not training)
            return jnp.sum(y * dy), y

        grad = nnx.value_and_grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1), has_aux=True)
        (_, y), (dparams, dx) = grad(bn, x)
        return y, dx, dparams

    @nnx.jit
    def double_backward(bn, x, dy, vx, vparams: dict):
        graphdef, params, rest = nnx.split(bn, nnx.Param, ...)

        def loss(params, x):
            # copy: the statistics, which a training call updates, become the merged module's own.
            return jnp.sum(nnx.merge(graphdef, params, rest, copy=True)(x, use_running_average=False) * dy)

        def gradients(params, x):
            return jax.grad(loss, argnums=(0, 1))(params, x)

        # The direction as a State like ``params``: each leaf by its parameter's name (scale, bias).
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        tangent = jax.tree_util.tree_unflatten(treedef, [vparams[_param_name(path)] for path, _ in leaves])
        _, (hparams, hx) = jax.jvp(gradients, (params, x), (tangent, vx))
        found = jax.tree_util.tree_flatten_with_path(hparams)[0]
        return hx, {_param_name(path): leaf for path, leaf in found}

    return forward, forward_backward, double_backward


def _param_name(path: tuple) -> str:
    """``scale`` or ``bias`` from a pytree path into an nnx State."""
    import jax

    return next(name for name in ("scale", "bias") if name in jax.tree_util.keystr(path))


class NnxLayer:
    def __init__(self, spec: LayerSpec) -> None:
        import jax.numpy as jnp
        from flax import nnx

        self.jnp, self.dtype = jnp, getattr(jnp, spec.dtype)
        self.bn = nnx.BatchNorm(spec.num_features, rngs=nnx.Rngs(0), **_constructor_args(spec))

    def _variables(self) -> dict:
        return {"gamma": self.bn.scale, "beta": self.bn.bias, "running_mean": self.bn.mean, "running_var": self.bn.var}

    def set_state(self, state: State) -> None:
        for field, var in self._variables().items():
            value = getattr(state, field)
            if value is not None and var is not None:
                var[...] = self.jnp.asarray(np.asarray(value), var[...].dtype)

    def get_state(self) -> State:
        return State(**{field: None if var is None else _numpy(var[...]) for field, var in self._variables().items()},
                     eps=self.bn.epsilon, momentum=self.bn.momentum)

    def _input(self, x: np.ndarray):
        return _input(x, self.dtype)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return np.asarray(self._run_forward(self._input(x), training))

    def _run_forward(self, x, training: bool):
        return _nnx_functions()[0](self.bn, x, training)

    def forward_backward(self, x, dy, training):
        return _outputs(*self._run_forward_backward(self._input(x), self._input(dy), training))

    def _run_forward_backward(self, x, dy, training: bool) -> tuple:
        y, dx, dparams = _nnx_functions()[1](self.bn, x, dy, training)
        params = {name: getattr(dparams, name, None) for name in ("scale", "bias")} if self.bn.use_scale else {}
        return y, dx, *(None if params.get(n) is None else params[n][...] for n in ("scale", "bias"))

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        bn = self.bn
        vparams = {"scale": self.jnp.asarray(vgamma, bn.scale[...].dtype),
                   "bias": self.jnp.asarray(vbeta, bn.bias[...].dtype)} if bn.use_scale else {}
        hx, hparams = _nnx_functions()[2](bn, self._input(x), self._input(dy), self._input(vx), vparams)
        return _numpy(hx), _numpy(hparams.get("scale")), _numpy(hparams.get("bias"))

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        return _runner(self, operation, x, dy)


class FlaxImplementation(Implementation):
    family = "flax"
    framework = "flax"
    convention = FLAX
    requires = ("flax", "jax")
    # Without it JAX computes float64 layers in float32; set before JAX is imported in the worker.
    process_env = MappingProxyType({"JAX_ENABLE_X64": "1"})

    def __init__(self, api: str) -> None:
        self.api = api
        self.name = f"flax.{api}"
        self.capabilities = Capabilities(features=frozenset({"affine_false"}), options=frozenset(_OPTIONS[api]),
                                         double_backward=True)

    def environment(self) -> dict[str, str]:
        import flax
        import jax

        return {"version": flax.__version__, "backend": "jax", "backend_version": jax.__version__,
                "x64": str(jax.config.jax_enable_x64), "compiled": "jax.jit" if self.api == "linen" else "nnx.jit"}

    def _constructor(self):
        import flax.linen
        from flax import nnx

        return flax.linen.BatchNorm if self.api == "linen" else nnx.BatchNorm

    def defaults(self) -> dict[str, float | int]:
        constructor = self._constructor()
        # nnx modules are built through a metaclass whose signature hides __init__'s arguments.
        params = inspect.signature(constructor if self.api == "linen" else constructor.__init__).parameters
        return {"momentum": params["momentum"].default, "eps": params["epsilon"].default,
                "channel_axis": params["axis"].default}

    def output_dtype(self, spec: LayerSpec) -> str:
        """Flax's ``_normalize``: its ``dtype`` argument, else ``jnp.result_type`` of the input and the
        parameters (``param_dtype``, float32 by default), so a half-precision input gives float32."""
        options = dict(spec.options)
        if options.get("compute_dtype") == "input" or options.get("param_dtype") == "input" or not spec.affine:
            return spec.dtype
        return "float64" if spec.dtype == "float64" else "float32"

    def build(self, spec: LayerSpec) -> LinenLayer | NnxLayer:
        return LinenLayer(spec) if self.api == "linen" else NnxLayer(spec)


IMPLEMENTATIONS = [FlaxImplementation("linen"), FlaxImplementation("nnx")]
