"""Shard: synchronized BatchNorm over a world of ranks, as a transform (``Derivation("shard", ...)``).

Each implementation is one layer on one engine at one world size, ``synchronized.<layer>.<engine>-ws<N>``
(``synchronized.keras.tensorflow.mirrored-ws4``), derived from the single-device implementation whose layer
(or its synchronized variant) every rank runs. It runs the checks of ``checks/test_synchronized.py`` on the
operator's ``synchronized_*`` grids (:meth:`Sharded.cases`): the whole single-device grid through a world
would cost minutes per implementation and test nothing those checks do not.

Its layer (:class:`ShardedLayer`) is an ordinary layer of the *global* batch: it splits every batch into the
case's shards (the options ``sharding`` and ``world_size``, sizes from
:data:`~conformance.operators.batchnorm.cases.SHARDINGS`), runs the call on every rank of its world
(``world/``) and returns the global results. What each rank gave (``rank1.y``, ``rank1.dx``, ``rank0.dgamma``)
and how many cross-rank reductions the call issued (``collectives``) it reports through ``observed()``; every
rank's state through ``get_state`` (``rank1.running_mean``, besides rank 0's as the layer's own). With the
option ``training_loop="model.fit"`` each training call is one step of the framework's own training loop,
which splits the global batch over the ranks itself and returns no output.

Its reference side (:class:`ShardedReference`) is the synchronized specification (:mod:`reference.sharding`)
held to the operator's tolerance model: the operator's reference on the global batch gives the state and the
tolerances; every rank's ``y`` and ``dx`` are its slices, its parameter gradients what the engine promises
(:attr:`Engine.parameter_gradients`: its own shard's share, or the global sum), its state the global batch's;
a training call issues at least one cross-rank reduction, an inference call none.

Worker processes (``harness/isolation.py``), by ``process_env``: one JAX process with four forced host
devices for every in-process Flax world, and coordinator of the ``jax.distributed`` worlds; one TensorFlow
process per world size (TensorFlow's collectives allow one device set per process), coordinator of the
MultiWorkerMirroredStrategy worlds; one PyTorch coordinator. Worlds of rank processes (``jax.distributed``,
MultiWorkerMirroredStrategy, gloo) are ``world/ranks.py``'s: at most one is alive per process. A worker runs
its checks implementation by implementation (``harness/plugin.py``), and the implementations come world size
by world size, so that each world starts once.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from reference import get_convention
from reference.sharding import split_batch, synchronized_training

from ..adapters.base import Capabilities, Derivation, Implementation, LayerSpec, State
from ..core.case import Case
from ..core.comparison import Expected, ExpectedCount
from ..operators.batchnorm.cases import SHARDINGS

__all__ = ["WORLD_SIZES", "Engine", "Sharded", "ShardedLayer", "ShardedReference"]

WORLD_SIZES = (2, 4)
_JAX_ENV = {"JAX_ENABLE_X64": "1", "KERAS_BACKEND": "jax",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(WORLD_SIZES)}"}
_OWN_OPTIONS = ("sharding", "world_size", "training_loop")  # the transform's options, never the engine's
_COLLECTIVES = "cross-rank reductions"


@dataclass(frozen=True)
class Engine:
    """A layer on a distributed engine, as a sharded implementation runs it.

    ``engine`` is the framework's distribution API (``jax.shard_map``, ``tf.distribute.MirroredStrategy``),
    ``transport`` what carries its collectives, ``single`` the single-device implementation whose layer (or
    its synchronized variant) every rank runs. ``parameter_gradients`` says what each rank's dgamma/dbeta
    hold after a backward: ``"local"``, its own shard's share (the framework sums them across replicas when
    it applies them), or ``"sum"``, already the global sum. ``model_fit``: also trained through the
    framework's own training loop (the world layer has ``fit``)."""

    name: str  # the name's middle: layer and engine, e.g. ``flax.linen.pmap``
    framework: str
    convention: str
    single: str
    requires: tuple[str, ...]
    engine: str
    transport: str
    parameter_gradients: str
    model_fit: bool = False
    channel_axes: frozenset[int] = frozenset({1, -1})
    ranks: frozenset[int] = frozenset({2, 3, 4, 5})


_ENGINES = [
    *(Engine(f"flax.{api}.{mapping}", "flax", "flax", f"flax.{api}", ("flax", "jax"), f"jax.{mapping}",
             "XLA host devices (in-process)", "sum" if mapping == "shard_map" else "local")
      for api in ("linen", "nnx") for mapping in ("shard_map", "pmap")),
    *(Engine(f"flax.{api}.shard_map.jax_distributed", "flax", "flax", f"flax.{api}", ("flax", "jax"),
             "jax.distributed + jax.shard_map", "gloo over TCP on 127.0.0.1 (one process per rank)", "sum")
      for api in ("linen", "nnx")),
    Engine("keras.jax.data_parallel", "keras", "keras", "keras.jax", ("keras", "jax"),
           "keras.distribution.DataParallel (jax.jit SPMD)", "XLA host devices (in-process)", "sum"),
    *(Engine(name, framework, "keras", single, (framework, "tensorflow"), "tf.distribute.MirroredStrategy",
             "TF collective ops over logical CPU devices (in-process)", "local", model_fit=True)
      for name, framework, single in (("keras.tensorflow.mirrored", "keras", "keras.tensorflow"),
                                      ("tf_keras.mirrored", "tf_keras", "tf_keras.nonfused"),
                                      ("tf_keras.SyncBatchNormalization.mirrored", "tf_keras", "tf_keras.nonfused"))),
    *(Engine(name, framework, "keras", single, (framework, "tensorflow"), "tf.distribute.MultiWorkerMirroredStrategy",
             "gRPC and TF collective ops on 127.0.0.1 (one process per worker)", "local")
      for name, framework, single in (("keras.tensorflow.multiworker", "keras", "keras.tensorflow"),
                                      ("tf_keras.multiworker", "tf_keras", "tf_keras.nonfused"))),
    Engine("torch.SyncBatchNorm.nccl", "torch", "torch", "torch.BatchNorm2d", ("torch",), "torch.distributed",
           "NCCL, one process and one CUDA device per rank", "local", channel_axes=frozenset({1})),
    Engine("torch.fairscale.gloo", "fairscale", "torch", "torch.BatchNorm2d", ("torch", "fairscale"),
           "torch.distributed", "gloo over TCP on 127.0.0.1 (one process per rank)", "local",
           channel_axes=frozenset({1})),
]


def _shard_sizes(options: tuple[tuple[str, object], ...]) -> tuple[int, ...]:
    settings = dict(options)
    return SHARDINGS[settings["sharding"]][settings["world_size"]]


def _fit(options: tuple[tuple[str, object], ...]) -> bool:
    return dict(options).get("training_loop") == "model.fit"


def _at_axis(case: Case, axis: int) -> Case:
    """``case`` with its channels at ``axis`` (1 or -1), the other dimensions in their order."""
    if case.channel_axis == axis:
        return case
    n, *rest = case.shape
    shape = (n, rest[-1], *rest[:-1]) if axis == 1 else (n, *rest[1:], rest[0])
    return case.with_(shape=shape, channel_axis=axis)


class ShardedLayer:
    """The layer protocol over a world (:class:`~conformance.transforms.world.WorldLayer`): one global batch
    per call, split into ``sizes`` shards in rank order. ``names`` name a ``forward_backward``'s outputs
    (the operator's)."""

    def __init__(self, world, sizes: tuple[int, ...], names: tuple[str, ...], parameter_gradients: str,
                 fit: bool) -> None:
        self.world, self.sizes, self.names = world, sizes, names
        self.parameter_gradients, self.fit = parameter_gradients, fit
        self._observed: dict[str, object] = {}

    def observed(self) -> dict[str, object]:
        """What the last call gave on every rank (``rank<r>.<output>``) and the cross-rank reductions it
        issued (``collectives``)."""
        return self._observed

    def _observe(self, step, names: tuple[str, ...]) -> list[tuple]:
        per_rank = [out if isinstance(out, tuple) else (out,) for out in step.outputs]
        self._observed = {"collectives": step.collectives} | {
            f"rank{r}.{name}": value for r, values in enumerate(per_rank) for name, value in zip(names, values)}
        return per_rank

    def set_state(self, state: State) -> None:
        self.world.set_state(state)

    def get_state(self) -> State:
        """Rank 0's state as the layer's own, and every rank's as ``rank<r>.<field>``."""
        states = self.world.get_state()
        return State(**states[0], **{f"rank{r}.{k}": v for r, state in enumerate(states) for k, v in state.items()})

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray | None:
        """``y`` of the global batch (every rank's, in rank order); None from a step of the framework's own
        training loop, which returns none."""
        if training and self.fit:
            self._observed = {"collectives": self.world.fit([x])}
            return None
        per_rank = self._observe(self.world.forward(split_batch(x, self.sizes), training), self.names[:1])
        return np.concatenate([values[0] for values in per_rank])

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        """``y`` and ``dx`` of the global batch, and the parameter gradients the world applies: the ranks'
        shares summed, or the global sum every rank holds (rank 0's)."""
        if training and self.fit:
            raise ValueError("a step of the framework's training loop (training_loop=model.fit) takes no cotangent")
        step = self.world.forward_backward(split_batch(x, self.sizes), split_batch(dy, self.sizes), training)
        per_rank = self._observe(step, self.names)
        y, dx, *parameters = ([values[i] for values in per_rank] for i in range(len(self.names)))
        applied = [None if g[0] is None else sum(g) if self.parameter_gradients == "local" else g[0]
                   for g in parameters]
        return (np.concatenate(y), np.concatenate(dx), *applied)


class ShardedReference:
    """The reference side of a :class:`ShardedLayer`: the operator's reference on the global batch (``inner``:
    the state and the tolerances), every rank's results as the synchronized specification has them."""

    def __init__(self, impl: Sharded, case: Case, spec: LayerSpec) -> None:
        self.inner = impl.operator.reference(case, impl.convention, spec)
        self.case, self.sizes, self.fit = case, _shard_sizes(case.options), _fit(case.options)
        self.parameter_gradients = impl.engine.parameter_gradients

    def _per_rank(self, name: str, values: list, want: Expected) -> dict[str, Expected]:
        """Each rank's ``values`` within its slice of the global batch's tolerance of ``want``."""
        tolerances = split_batch(np.broadcast_to(want.tolerance, np.shape(want.value)), self.sizes)
        return {f"rank{r}.{name}": Expected(v, t) for r, (v, t) in enumerate(zip(values, tolerances))}

    @staticmethod
    def _collectives(training: bool) -> dict[str, ExpectedCount]:
        """Training must communicate (else the statistics cannot be global); inference must not."""
        return {"collectives": ExpectedCount(1, unit=_COLLECTIVES) if training else
                ExpectedCount(0, 0, unit=_COLLECTIVES)}

    def assign(self, held: State) -> None:
        self.inner.assign(held)

    def forward(self, x: np.ndarray, training: bool) -> dict:
        want = self.inner.forward(x, training)["y"]
        if training and self.fit:  # a step of the framework's training loop gives no output
            return self._collectives(training)
        return self._per_rank("y", split_batch(want.value, self.sizes), want) | self._collectives(training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict:
        if not training:
            raise NotImplementedError("the synchronized specification (reference.sharding) gives training gradients")
        want = self.inner.forward_backward(x, dy, training)
        layer = self.inner.layer
        ranks, _, _ = synchronized_training(np.asarray(x, np.float64), np.asarray(dy, np.float64), self.sizes,
                                            layer.gamma, layer.beta, layer.eps, self.case.channel_axis)
        return (self._per_rank("y", [r.y for r in ranks], want["y"])
                | self._per_rank("dx", [r.dx for r in ranks], want["dx"])
                | self._parameter_gradients(x, dy, ranks, want) | self._collectives(training))

    def _parameter_gradients(self, x: np.ndarray, dy: np.ndarray, ranks: list, want: dict) -> dict[str, Expected]:
        """Every rank's dgamma and dbeta: its shard's share, or the global sum (:attr:`Engine.parameter_gradients`);
        none without affine parameters."""
        names = [f"rank{r}.{p}" for r in range(len(ranks)) for p in ("dgamma", "dbeta")]
        if ranks[0].dgamma is None or self.parameter_gradients == "sum":
            return {name: want[name.partition(".")[2]] for name in names}
        cond, xhat = self.inner.conditioning(x, training=True)
        dy_last = np.moveaxis(np.asarray(dy, np.float64), self.case.channel_axis, -1)
        shares = {}
        for r, (rank, d, h) in enumerate(zip(ranks, split_batch(dy_last, self.sizes), split_batch(xhat, self.sizes))):
            shares |= {f"rank{r}.dgamma": Expected(rank.dgamma, cond.dgamma(rank.dgamma, d, h)),
                       f"rank{r}.dbeta": Expected(rank.dbeta, cond.dbeta(rank.dbeta, d))}
        return shares

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict) -> dict:
        raise NotImplementedError("a sharded layer declares no second order (Capabilities.double_backward)")

    def state(self, exact: bool = False) -> dict[str, Expected]:
        """Every rank's state is the single-device layer's on the global batch (``reference/sharding.py``):
        parameters, running averages and, where the convention keeps one, the batch counter."""
        state = self.inner.state(exact)
        return {f"rank{r}.{name}": want for r in range(len(self.sizes)) for name, want in state.items()}

    def hyperparameters(self) -> dict[str, Expected]:
        return self.inner.hyperparameters()


class Sharded(Implementation):
    family = "synchronized"
    families = frozenset({"synchronized"})
    benchmarked = False  # a world's layer takes one shard per rank: not timed by the benchmarks

    def __init__(self, engine: Engine, world_size: int) -> None:
        self.engine, self.world_size = engine, world_size
        self.name = f"synchronized.{engine.name}-ws{world_size}"  # the family is the name's prefix
        self.framework, self.requires = engine.framework, engine.requires
        self.convention = get_convention(engine.convention)
        self.derivation = Derivation("shard", (engine.single,))
        options = frozenset({"sharding", "world_size", *(("training_loop",) if engine.model_fit else ())})
        self.capabilities = Capabilities(dtypes=frozenset({"float32"}), ranks=engine.ranks,
                                         channel_axes=engine.channel_axes, features=frozenset({"affine_false"}),
                                         options=options)
        if "jax" in engine.engine:
            env = _JAX_ENV
        elif engine.framework in ("keras", "tf_keras"):  # TensorFlow's collectives: one device set per process
            env = {"KERAS_BACKEND": "tensorflow", "BN_WORLD_SIZE": str(world_size)}
        else:
            env = {}
        self.process_env = MappingProxyType(env)
        # A TensorFlow worker group hosts a MultiWorkerMirroredStrategy world: a TensorFlow (or tf-keras) import
        # of 0.4-0.8 GB in every rank besides the worker's own. Under xdist it runs with no other group alive
        # (harness/groups.py); a world of JAX or PyTorch ranks (0.2-0.3 GB each) shares the machine.
        self.exclusive = "BN_WORLD_SIZE" in env

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The operator's grid for ``check`` at this world size, each case at the engine's own channel axis
        (its convention's) unless the grid lists it at both axes: then at both."""
        grid = [case for _, case in self.operator.cases(check)
                if dict(case.options).get("world_size") == self.world_size]
        axes: dict[Case, set[int]] = defaultdict(set)
        for case in grid:
            axes[_at_axis(case, 1)].add(case.channel_axis)
        own = self.convention.channel_axis
        placed = [case if len(axes[_at_axis(case, 1)]) > 1 else _at_axis(case, own) for case in grid]
        return [(case.id, case) for case in placed]

    def unsupported(self, spec: LayerSpec) -> list[str]:
        missing = super().unsupported(spec)
        if (size := dict(spec.options).get("world_size")) != self.world_size:
            missing.append(f"world_size={size}")
        return missing

    def missing(self) -> str | None:
        if reason := super().missing():
            return reason
        if self.engine.transport.startswith("NCCL"):
            from .world.torch_world import cuda_devices

            if (found := cuda_devices()) < self.world_size:
                return (f"{self.name}: needs {self.world_size} CUDA devices, found {found} (nn.SyncBatchNorm has no "
                        "CPU kernel; torch.fairscale.gloo is the CPU check)")
        return None

    def reference(self, case: Case, spec: LayerSpec) -> ShardedReference:
        return ShardedReference(self, case, spec)

    def environment(self) -> dict[str, str]:
        import importlib.metadata as metadata

        engine = self.engine
        backend = "jax" if "jax" in engine.engine else "torch" if engine.convention == "torch" else "tensorflow"
        return {"version": metadata.version(engine.framework), "backend": backend,
                "backend_version": metadata.version(backend if backend != "tensorflow" else _tensorflow_dist()),
                "engine": engine.engine, "world_size": str(self.world_size), "transport": engine.transport,
                "parameter_gradients": engine.parameter_gradients}

    def defaults(self) -> dict[str, float | int]:
        from ..harness.registry import select

        return select([self.engine.single])[0].defaults()

    def build(self, spec: LayerSpec) -> ShardedLayer:
        if missing := self.unsupported(spec):
            raise ValueError(f"{self.name} cannot build {spec}: {', '.join(missing)}")
        engine_spec = replace(spec, options=tuple((k, v) for k, v in spec.options if k not in _OWN_OPTIONS))
        return ShardedLayer(self._world_layer(engine_spec), _shard_sizes(spec.options), self.operator.gradients,
                            self.engine.parameter_gradients, _fit(spec.options))

    def _world_layer(self, spec: LayerSpec):
        """The engine's layer on a world of this size (:class:`~conformance.transforms.world.WorldLayer`)."""
        from .world.ranks import RankWorldLayer

        name, framework = self.engine.name, self.engine.framework
        if framework == "flax":
            from .world import jax_world

            _, api, mapping, *processes = name.split(".")
            if processes:
                return RankWorldLayer(jax_world.distributed_world(self.world_size), api, spec, every_shard=True)
            return jax_world.JaxWorldLayer(api, mapping, self.world_size, spec)
        if framework in ("fairscale", "torch"):
            from .world.torch_world import world

            return RankWorldLayer(world(self.world_size, "gloo" if framework == "fairscale" else "nccl"), spec)
        if name == "keras.jax.data_parallel":
            from .world.keras_jax_world import KerasDataParallelLayer

            return KerasDataParallelLayer(self.world_size, spec)
        from .world import tf_world

        kind = "tf_keras_sync" if "SyncBatchNormalization" in name else name.split(".")[0]
        if "multiworker" in name:
            return RankWorldLayer(tf_world.multiworker(self.world_size), kind, spec)
        if os.environ.get("BN_WORLD_SIZE") != str(self.world_size):
            raise RuntimeError(f"{self.name} runs in a process with BN_WORLD_SIZE={self.world_size}")
        return tf_world.TfWorldLayer(kind, self.world_size, spec)


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


IMPLEMENTATIONS = [Sharded(engine, n) for n in WORLD_SIZES for engine in _ENGINES]  # a world size's together
