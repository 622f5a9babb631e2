"""Synchronized BatchNorm on distributed engines, at world sizes 2 and 4 (``conformance/world/``).

Each implementation is one layer on one engine at one world size, named ``<layer>.<engine>-ws<N>``
(``keras.tensorflow.mirrored-ws4``). It runs only the checks of ``checks/test_synchronized.py``
(:attr:`Capabilities.world`): driving the whole single-device grid through a world would cost minutes per
implementation and test nothing those checks do not. Worker processes (``conformance/isolation.py``), by
``process_env``: one JAX process with four forced host devices for every in-process Flax world, and coordinator of the
``jax.distributed`` worlds; one TensorFlow process per world size (TensorFlow's collectives allow one
device set per process), coordinator of the MultiWorkerMirroredStrategy worlds; one PyTorch coordinator.
Worlds of processes (``jax.distributed``, MultiWorkerMirroredStrategy, gloo) are ``world/ranks.py``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType

from reference import get_convention

from ..adapters.base import Capabilities, Implementation, LayerSpec

WORLD_SIZES = (2, 4)
_JAX_ENV = {"JAX_ENABLE_X64": "1", "KERAS_BACKEND": "jax",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(WORLD_SIZES)}"}


@dataclass(frozen=True)
class World:
    """A data-parallel world a distributed implementation runs on (``world/``).

    ``engine`` is the framework's distribution API (``jax.shard_map``, ``tf.distribute.MirroredStrategy``),
    ``transport`` what carries its collectives, ``world_size`` the number of ranks. ``parameter_gradients``
    says what each rank's dgamma/dbeta hold after a backward: ``"local"``, its own shard's share (the
    framework sums them across replicas when it applies them), or ``"sum"``, already the global sum.
    """

    engine: str
    transport: str
    world_size: int
    parameter_gradients: str
    # Also trained through the framework's own training loop (``model.fit``): the layer has ``fit``.
    model_fit: bool = False


@dataclass(frozen=True)
class _Layer:
    """A layer as a distributed implementation wraps it."""

    name: str  # the name prefix: layer and engine, e.g. ``flax.linen.pmap``
    framework: str
    convention: str
    requires: tuple[str, ...]
    engine: str
    transport: str
    parameter_gradients: str
    model_fit: bool = False
    channel_axes: frozenset[int] = frozenset({1, -1})
    ranks: frozenset[int] = frozenset({2, 3, 4, 5})


_LAYERS = {
    **{f"flax.{api}.{mapping}": _Layer(
        f"flax.{api}.{mapping}", "flax", "flax", ("flax", "jax"), f"jax.{mapping}", "XLA host devices (in-process)",
        "sum" if mapping == "shard_map" else "local") for api in ("linen", "nnx") for mapping in ("shard_map", "pmap")},
    **{f"flax.{api}.shard_map.jax_distributed": _Layer(
        f"flax.{api}.shard_map.jax_distributed", "flax", "flax", ("flax", "jax"), "jax.distributed + jax.shard_map",
        "gloo over TCP on 127.0.0.1 (one process per rank)", "sum") for api in ("linen", "nnx")},
    "keras.jax.data_parallel": _Layer(
        "keras.jax.data_parallel", "keras", "keras", ("keras", "jax"), "keras.distribution.DataParallel (jax.jit SPMD)",
        "XLA host devices (in-process)", "sum"),
    **{name: _Layer(name, framework, "keras", (framework, "tensorflow"), "tf.distribute.MirroredStrategy",
                    "TF collective ops over logical CPU devices (in-process)", "local", model_fit=True)
       for name, framework in (("keras.tensorflow.mirrored", "keras"), ("tf_keras.mirrored", "tf_keras"),
                               ("tf_keras.SyncBatchNormalization.mirrored", "tf_keras"))},
    **{name: _Layer(name, framework, "keras", (framework, "tensorflow"), "tf.distribute.MultiWorkerMirroredStrategy",
                    "gRPC and TF collective ops on 127.0.0.1 (one process per worker)", "local")
       for name, framework in (("keras.tensorflow.multiworker", "keras"), ("tf_keras.multiworker", "tf_keras"))},
    "torch.SyncBatchNorm.nccl": _Layer(
        "torch.SyncBatchNorm.nccl", "torch", "torch", ("torch",), "torch.distributed",
        "NCCL, one process and one CUDA device per rank", "local", channel_axes=frozenset({1})),
    "torch.fairscale.gloo": _Layer(
        "torch.fairscale.gloo", "fairscale", "torch", ("torch", "fairscale"), "torch.distributed",
        "gloo over TCP on 127.0.0.1 (one process per rank)", "local", channel_axes=frozenset({1})),
}


class SynchronizedImplementation(Implementation):
    family = "synchronized"

    def __init__(self, layer: _Layer, world_size: int) -> None:
        self.layer, self.world_size = layer, world_size
        self.name = f"synchronized.{layer.name}-ws{world_size}"  # the family is the name's prefix
        self.framework, self.requires = layer.framework, layer.requires
        self.convention = get_convention(layer.convention)
        self.world = World(layer.engine, layer.transport, world_size, layer.parameter_gradients, layer.model_fit)
        self.families = frozenset({"synchronized"})
        features = frozenset({"affine_false"})
        self.capabilities = Capabilities(dtypes=frozenset({"float32"}), ranks=layer.ranks,
                                         channel_axes=layer.channel_axes, features=features)
        if "jax" in layer.engine:
            env = _JAX_ENV
        elif layer.framework in ("keras", "tf_keras"):
            env = {"KERAS_BACKEND": "tensorflow", "BN_WORLD_SIZE": str(world_size)}
        else:
            env = {}
        self.process_env = MappingProxyType(env)

    def missing(self) -> str | None:
        if reason := super().missing():
            return reason
        if self.layer.transport.startswith("NCCL"):
            from .world.torch_world import cuda_devices

            if (found := cuda_devices()) < self.world_size:
                return (f"{self.name}: needs {self.world_size} CUDA devices, found {found} (nn.SyncBatchNorm has no "
                        "CPU kernel; torch.fairscale.gloo is the CPU check)")
        return None

    def environment(self) -> dict[str, str]:
        import importlib.metadata as metadata

        layer = self.layer
        backend = "jax" if "jax" in layer.engine else {"fairscale": "torch", "torch": "torch"}.get(
            layer.framework, "tensorflow")
        return {"version": metadata.version(layer.framework), "backend": backend,
                "backend_version": metadata.version(backend if backend != "tensorflow" else _tensorflow_dist()),
                "engine": layer.engine, "world_size": str(self.world_size), "transport": layer.transport,
                "parameter_gradients": layer.parameter_gradients}

    def defaults(self) -> dict[str, float | int]:
        from ..harness.registry import select

        keras = "keras.jax" if "jax" in self.layer.engine else "keras.tensorflow"
        single = {"flax": f"flax.{self.layer.name.split('.')[1]}", "keras": keras,
                  "tf_keras": "tf_keras.nonfused", "fairscale": "torch.BatchNorm2d",
                  "torch": "torch.BatchNorm2d"}[self.layer.framework]
        return select([single])[0].defaults()

    def build(self, spec: LayerSpec):
        kind = self.layer.name
        from .world.ranks import RankWorldLayer

        if self.layer.framework == "flax":
            from .world import jax_world

            _, api, mapping, *processes = kind.split(".")
            if processes:
                return RankWorldLayer(jax_world.distributed_world(self.world_size), api, spec, every_shard=True)
            return jax_world.JaxWorldLayer(api, mapping, self.world_size, spec)

        if self.layer.framework in ("fairscale", "torch"):
            from .world.torch_world import world

            return RankWorldLayer(world(self.world_size, "gloo" if self.layer.framework == "fairscale" else "nccl"),
                                  spec)
        if kind == "keras.jax.data_parallel":
            from .world.keras_jax_world import KerasDataParallelLayer

            return KerasDataParallelLayer(self.world_size, spec)
        from .world import tf_world

        tf_kind = {"keras": "keras", "tf_keras": "tf_keras"}[kind.split(".")[0]]
        tf_kind = "tf_keras_sync" if "SyncBatchNormalization" in kind else tf_kind
        if "multiworker" in kind:
            return RankWorldLayer(tf_world.multiworker(self.world_size), tf_kind, spec)
        if os.environ.get("BN_WORLD_SIZE") != str(self.world_size):
            raise RuntimeError(f"{self.name} runs in a process with BN_WORLD_SIZE={self.world_size}")
        return tf_world.TfWorldLayer(tf_kind, self.world_size, spec)


def _tensorflow_dist() -> str:
    """The installed TensorFlow distribution (``tensorflow-cpu`` or ``tensorflow``)."""
    import importlib.metadata as metadata

    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return "tensorflow"


IMPLEMENTATIONS = [SynchronizedImplementation(layer, n) for layer in _LAYERS.values() for n in WORLD_SIZES]
