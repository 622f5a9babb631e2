"""Flax ``BatchNorm(axis_name=...)`` under ``jax.shard_map`` and ``jax.pmap``, one device per rank.

The worker process is started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (JAX reads it
once, at import): a world of N ranks is the first N host devices. Both mappings require equal blocks, so
unequal shards are padded to the largest and masked (Flax's ``mask`` argument), as users feed ragged
batches. Gradients are taken as users take them with each mapping: around ``shard_map`` (the replicated
parameters' gradients come back summed over the devices), inside ``pmap`` (per device, each its shard's
share). Every rank's results are read from its own device's buffers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ...adapters.base import LayerSpec, State
from . import WorldStep
from .ranks import LayerRank

_AXIS = "ranks"
_COLLECTIVES = ("psum", "pmean", "pmax", "pmin", "all_gather", "all_to_all", "ppermute", "reduce_scatter")


def count_collectives(jaxpr) -> int:
    """Cross-device reductions in a (closed) jaxpr, nested jaxprs (jit, shard_map, pmap bodies) included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    count = 0
    for eqn in jaxpr.eqns:
        count += any(eqn.primitive.name.startswith(name) for name in _COLLECTIVES)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    count += count_collectives(sub)
    return count


def _numpy(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def _pure_apply(api: str, spec: LayerSpec):
    """``(apply, params, stats)``: ``apply(params, stats, x, mask, training) -> (y, stats)``, the layer as a
    pure function of its variables, and its initial variables."""
    import jax
    import jax.numpy as jnp

    from ...adapters.flax_nn import _constructor_args

    args = {**_constructor_args(spec), "axis_name": _AXIS}
    if api == "linen":
        import flax.linen as nn

        module = nn.BatchNorm(**args)
        shape = [1] * spec.rank
        shape[spec.channel_axis] = spec.num_features
        variables = module.init(jax.random.key(0), jnp.zeros(shape, spec.dtype), use_running_average=True)

        def apply(params, stats, x, mask, training):
            y, updates = module.apply({"params": params, "batch_stats": stats}, x, use_running_average=not training,
                                      mask=mask, mutable=["batch_stats"])
            return y, updates["batch_stats"]

        return apply, dict(variables.get("params", {})), dict(variables["batch_stats"])
    from flax import nnx

    graphdef, params, stats = nnx.split(nnx.BatchNorm(spec.num_features, rngs=nnx.Rngs(0), **args),
                                        nnx.Param, nnx.BatchStat)

    def apply(params, stats, x, mask, training):
        module = nnx.merge(graphdef, params, stats, copy=True)  # variables of this trace, so it may update them
        y = module(x, use_running_average=not training, mask=mask)
        return y, nnx.split(module, nnx.Param, nnx.BatchStat)[2]

    return apply, params, stats


def _loss(apply: Callable, training: bool):
    import jax.numpy as jnp

    def loss(params, x, stats, mask, dy):
        y, new_stats = apply(params, stats, x, mask, training)
        return jnp.sum(y * dy), (y, new_stats)

    return loss


class JaxWorldLayer:
    """The layer on ``world_size`` devices, under ``mapping`` (``shard_map`` or ``pmap``)."""

    def __init__(self, api: str, mapping: str, world_size: int, spec: LayerSpec) -> None:
        import jax

        self.api, self.mapping, self.spec = api, mapping, spec
        self.devices = jax.devices()[:world_size]
        if len(self.devices) < world_size:
            raise RuntimeError(f"{world_size} ranks need {world_size} devices, JAX has {len(jax.devices())}")
        # The ranks whose devices this process holds: all of them, except across processes (jax.distributed).
        self.local_ranks = [r for r, d in enumerate(self.devices) if d.process_index == jax.process_index()]
        self.apply, params, stats = _pure_apply(api, spec)
        self.params, self.stats = self._replicate(params), self._replicate(stats)
        self._steps: dict[tuple, Callable] = {}
        self.names = {"gamma": "scale", "beta": "bias"}, {"running_mean": "mean", "running_var": "var"}

    # -- state: one copy per device --------------------------------------------------------------
    def _replicate(self, tree):
        import jax

        if self.mapping == "pmap":  # one row per device; pmap places row r on device r
            return jax.tree_util.tree_map(lambda a: np.stack([np.asarray(a)] * len(self.devices)), tree)
        return jax.device_put(tree, self._sharding(replicated=True))

    def _sharding(self, replicated: bool):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        spec = PartitionSpec() if replicated else PartitionSpec(_AXIS)
        return NamedSharding(Mesh(np.array(self.devices), (_AXIS,)), spec)

    def _per_rank(self, array) -> list[np.ndarray]:
        """Each device's own copy (or block) of ``array``, in rank order."""
        if self.mapping == "pmap":
            return [_numpy(array[r]) for r in range(len(self.devices))]
        blocks = {shard.device: shard.data for shard in array.addressable_shards}
        return [_numpy(blocks[self.devices[r]]) for r in self.local_ranks]

    def _leaf(self, tree, name: str):
        import jax

        leaves = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
        return next((leaf for path, leaf in leaves.items() if f"'{name}'" in path), None)

    def set_state(self, state: State) -> None:
        import jax

        def assign(tree, names):
            def value(path, leaf):
                field = next((f for f, n in names.items() if f"'{n}'" in jax.tree_util.keystr(path)), None)
                given = None if field is None else getattr(state, field)
                held = np.asarray(leaf[0] if self.mapping == "pmap" else leaf)
                return held if given is None else np.asarray(given, held.dtype)

            return self._replicate(jax.tree_util.tree_map_with_path(value, tree))

        self.params, self.stats = assign(self.params, self.names[0]), assign(self.stats, self.names[1])

    def get_state(self) -> list[State]:
        fields = {}
        for tree, names in ((self.params, self.names[0]), (self.stats, self.names[1])):
            for field, name in names.items():
                leaf = self._leaf(tree, name)
                fields[field] = [None] * len(self.local_ranks) if leaf is None else self._per_rank(leaf)
        return [State(**{f: v[k] for f, v in fields.items()}) for k in range(len(self.local_ranks))]

    # -- steps -----------------------------------------------------------------------------------
    def _blocks(self, shards: list[np.ndarray]):
        """The shards padded to equal blocks and stacked (pmap) or concatenated (shard_map), with the mask
        of real samples, or None when the shards are equal."""
        import jax
        import jax.numpy as jnp

        size = max(len(s) for s in shards)
        padded = [np.concatenate([s, np.zeros((size - len(s), *s.shape[1:]), s.dtype)]) for s in shards]
        equal = all(len(s) == size for s in shards)
        masks = [(np.arange(size) < len(s)).reshape(size, *[1] * (s.ndim - 1)) for s in shards]
        join = np.stack if self.mapping == "pmap" else np.concatenate
        if self.mapping == "pmap":
            return jnp.asarray(join(padded), self.spec.dtype), None if equal else jnp.asarray(join(masks))
        # Placed by the sharding: across processes, each takes its own devices' blocks of the same array.
        place = functools.partial(jax.device_put, device=self._sharding(replicated=False))
        return place(join(padded).astype(self.spec.dtype)), None if equal else place(join(masks))

    def _unblock(self, array, sizes: list[int]) -> list[np.ndarray]:
        return [block[:sizes[r]] for block, r in zip(self._per_rank(array), self.local_ranks)]

    def forward(self, shards: list[np.ndarray], training: bool) -> WorldStep:
        x, mask = self._blocks(shards)
        step, args = self._step(training, mask is not None, gradients=False), (self.params, x, self.stats, mask)
        y, self.stats = step(*args)
        return WorldStep(self._unblock(y, [len(s) for s in shards]), self._collectives(step, args))

    def forward_backward(self, shards: list[np.ndarray], cotangents: list[np.ndarray], training: bool) -> WorldStep:
        x, mask = self._blocks(shards)
        dy, _ = self._blocks(cotangents)
        step, args = self._step(training, mask is not None, gradients=True), (self.params, x, self.stats, mask, dy)
        y, dx, dparams, self.stats = step(*args)
        sizes = [len(s) for s in shards]
        per_param = [self._leaf(dparams, n) for n in ("scale", "bias")]
        grads = [[None] * len(self.local_ranks) if g is None else self._per_rank(g) for g in per_param]
        outputs = list(zip(self._unblock(y, sizes), self._unblock(dx, sizes), *grads))
        return WorldStep(outputs, self._collectives(step, args))

    @staticmethod
    def _collectives(step: Callable, args: tuple) -> int:
        import jax

        return count_collectives(jax.make_jaxpr(step)(*args))

    def _step(self, training: bool, masked: bool, gradients: bool) -> Callable:
        """Jitted: ``step(params, x, stats, mask, dy) -> (y, dx, dparams, stats)`` with ``gradients``, else
        ``step(params, x, stats, mask) -> (y, stats)``."""
        key = (training, masked, gradients)
        if key not in self._steps:
            self._steps[key] = self._make_step(training, masked, gradients)
        return self._steps[key]

    def _make_step(self, training: bool, masked: bool, gradients: bool) -> Callable:
        import jax
        from jax.sharding import PartitionSpec as P

        loss = _loss(self.apply, training)
        forward = functools.partial(_forward_of, self.apply, training)
        if self.mapping == "pmap" and not gradients:
            return jax.pmap(forward, axis_name=_AXIS, devices=self.devices)
        if self.mapping == "pmap":
            def local(params, x, stats, mask, dy):
                (_, (y, new)), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
                    params, x, stats, mask, dy)
                return y, dx, dparams, new

            return jax.pmap(local, axis_name=_AXIS, devices=self.devices)
        mesh = self._sharding(replicated=True).mesh
        mapped = jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(_AXIS), P(), P(_AXIS) if masked else P()),
                               out_specs=(P(_AXIS), P()))
        if not gradients:
            return jax.jit(mapped)

        def whole(params, x, stats, mask, dy):
            import jax.numpy as jnp

            y, new = mapped(params, x, stats, mask)
            return jnp.sum(y * dy), (y, new)

        def step(params, x, stats, mask, dy):
            (_, (y, new)), (dparams, dx) = jax.value_and_grad(whole, argnums=(0, 1), has_aux=True)(
                params, x, stats, mask, dy)
            return y, dx, dparams, new

        return jax.jit(step)


def _forward_of(apply: Callable, training: bool, params, x, stats, mask):
    return apply(params, stats, x, mask, training)


class JaxDistributedRank(LayerRank):
    """One process of a ``jax.distributed`` world (``world/ranks.py``), one CPU device each,
    collectives over gloo. Every process runs the same ``shard_map`` program on the same global arrays and
    holds its own device's block; it is given every shard (each takes its own from the global array)."""

    def __init__(self, rank: int, world_size: int, config: dict) -> None:
        import os

        super().__init__()
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # not the coordinator's four
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(config["coordinator"], num_processes=world_size, process_id=rank,
                                   initialization_timeout=120)
        self.world_size = world_size

    def make(self, api: str, spec: LayerSpec) -> JaxWorldLayer:
        return JaxWorldLayer(api, "shard_map", self.world_size, spec)


@functools.cache
def distributed_world(world_size: int):
    """The coordinator's world of ``world_size`` ``jax.distributed`` processes."""
    from .ranks import World, free_ports

    return World(f"{__name__}:JaxDistributedRank", world_size,
                 lambda: {"coordinator": f"127.0.0.1:{free_ports(1)[0]}"})
