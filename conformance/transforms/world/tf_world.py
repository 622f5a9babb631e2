"""Keras 3 and tf-keras synchronized BatchNormalization under ``tf.distribute.MirroredStrategy``.

The worker process splits its CPU into four logical devices before TensorFlow initializes (it refuses
afterwards); a world of N ranks mirrors over the first N. Each rank gets its own shard through
``experimental_distribute_values_from_function`` (shards may differ in size) and the step runs eagerly
under ``strategy.run``, so every replica context's ``all_reduce`` call is counted as it happens. Gradients
come from a ``GradientTape`` inside each replica, as a custom training loop takes them: ``dx`` through the
all-reduce (whose gradient is an all-reduce), ``dgamma``/``dbeta`` each replica's own share, which the
optimizer sums across replicas when it applies them.
"""

from __future__ import annotations

import functools

import numpy as np

from ...adapters.base import LayerSpec, State
from . import WorldStep
from .ranks import LayerRank

LOGICAL_DEVICES = 4
_COUNT = {"all_reduce": 0}


@functools.cache
def tensorflow():
    """TensorFlow with ``LOGICAL_DEVICES`` logical CPUs (before anything initializes it)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * LOGICAL_DEVICES)
    return tf


@functools.cache
def counted(tf) -> None:
    """Count every replica context's ``all_reduce`` call (in :data:`_COUNT`)."""
    original = tf.distribute.ReplicaContext.all_reduce

    @functools.wraps(original)
    def counting(self, *args, **kwargs):
        _COUNT["all_reduce"] += 1
        return original(self, *args, **kwargs)

    tf.distribute.ReplicaContext.all_reduce = counting


@functools.cache
def strategy(world_size: int):
    """One strategy per process: TensorFlow's collectives keep their groups per device set, and a second
    world over other devices in the same process aborts them ("joining a group with size 4, but that group
    has size 2"), so each world size runs in a worker process of its own (``BN_WORLD_SIZE``)."""
    tf = tensorflow()
    return tf.distribute.MirroredStrategy([f"/cpu:{r}" for r in range(world_size)])


def _make_layer(kind: str, spec: LayerSpec):
    args = dict(axis=spec.channel_axis, momentum=spec.momentum, epsilon=spec.eps, center=spec.affine,
                scale=spec.affine)
    if kind == "keras":
        import keras

        return keras.layers.BatchNormalization(synchronized=True, dtype=spec.dtype, **args)
    import tf_keras

    if kind == "tf_keras":
        return tf_keras.layers.BatchNormalization(synchronized=True, dtype=spec.dtype, **args)
    return tf_keras.layers.experimental.SyncBatchNormalization(dtype=spec.dtype, **args)


_FIELDS = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class TfWorldLayer:
    """``kind`` (``keras``, ``tf_keras``, ``tf_keras_sync``: ``SyncBatchNormalization``) on ``world_size``
    mirrored logical CPUs."""

    def __init__(self, kind: str, world_size: int, spec: LayerSpec, distribution=None) -> None:
        import tensorflow as tf

        self.tf, self.spec, self.kind = tf, spec, kind
        self.strategy = distribution or strategy(world_size)
        self._fitted = None  # (the model fit trains, the reductions of its traced step), once fit ran
        with self.strategy.scope():
            self.layer = _make_layer(kind, spec)
            shape = [1] * spec.rank
            shape[spec.channel_axis] = spec.num_features
            self.layer.build(tuple(shape))

    def _variable(self, field: str):
        var = getattr(self.layer, _FIELDS[field], None)
        if var is None:
            return None
        keras3 = type(var).__module__.startswith("keras.")  # a Keras 3 Variable wraps the tf.Variable
        return var.value if keras3 else var

    def set_state(self, state: State) -> None:
        for field in _FIELDS:
            var, value = self._variable(field), getattr(state, field)
            if var is not None and value is not None:
                var.assign(np.asarray(value, var.dtype.as_numpy_dtype))

    def get_state(self) -> list[State]:
        local = len(self.strategy.extended.worker_devices)  # this process's replicas
        copies = {}
        for field in _FIELDS:
            var = self._variable(field)
            copies[field] = [None] * local if var is None else [
                np.asarray(v.numpy(), np.float64) for v in self.strategy.experimental_local_results(var)]
        return [State(**{f: v[r] for f, v in copies.items()}) for r in range(local)]

    def _distribute(self, shards: list[np.ndarray]):
        dtype = self.spec.dtype
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: self.tf.constant(shards[context.replica_id_in_sync_group], dtype))

    def _run(self, fn, *args) -> WorldStep:
        counted(self.tf)
        before = _COUNT["all_reduce"]
        result = self.strategy.run(fn, args=args)
        per_rank = self.strategy.experimental_local_results(result)
        convert = self.tf.nest.map_structure
        outputs = [convert(lambda t: None if t is None else np.asarray(t.numpy(), np.float64), r) for r in per_rank]
        return WorldStep(outputs, _COUNT["all_reduce"] - before)

    def forward(self, shards: list[np.ndarray], training: bool) -> WorldStep:
        return self._run(lambda x: self.layer(x, training=training), self._distribute(shards))

    def forward_backward(self, shards: list[np.ndarray], cotangents: list[np.ndarray], training: bool) -> WorldStep:
        tf, layer = self.tf, self.layer

        def step(x, dy):
            params = [self._variable(f) for f in ("gamma", "beta")]
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=training)
                loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.cast(dy, tf.float64))
            dx, dgamma, dbeta = tape.gradient(loss, [x, *params]) if params[0] is not None else (
                tape.gradient(loss, x), None, None)
            return y, dx, dgamma, dbeta

        step_result = self._run(step, self._distribute(shards), self._distribute(cotangents))
        step_result.outputs = [tuple(r) for r in step_result.outputs]
        return step_result


    def fit(self, batches: list[np.ndarray]) -> int:
        """``model.fit`` of a model holding only this layer (built and compiled at the first call), one step
        per global batch, on a loss whose gradient leaves the parameters alone (SGD at learning rate 0): the
        training loop users run, which distributes each batch over the replicas itself. Returns the
        cross-rank reductions of its training step, counted while TensorFlow traced it (every run of the
        traced step issues them; a later call reuses it)."""
        counted(self.tf)
        if self._fitted is None:
            framework = __import__("keras" if self.kind == "keras" else "tf_keras")
            with self.strategy.scope():
                model = framework.Sequential([framework.Input(batches[0].shape[1:], dtype=self.spec.dtype),
                                              self.layer])
                model.compile(optimizer=framework.optimizers.SGD(learning_rate=0.0), loss="mse")
            self._fitted = (model, 0)
        model, traced = self._fitted
        before = _COUNT["all_reduce"]
        for x in batches:
            model.fit(x, np.zeros_like(x), batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        self._fitted = (model, _COUNT["all_reduce"] - before or traced)  # a step traced again counts afresh
        return self._fitted[1]


class MultiWorkerRank(LayerRank):
    """One worker of a ``tf.distribute.MultiWorkerMirroredStrategy`` (``world/ranks.py``): its
    ``TF_CONFIG`` names every worker's address on 127.0.0.1, ports chosen free by the coordinator. The
    strategy is created first thing, as TensorFlow requires in eager mode."""

    def __init__(self, rank: int, world_size: int, config: dict) -> None:
        import json
        import os

        super().__init__()
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": config["workers"]},
                                              "task": {"type": "worker", "index": rank}})
        import tensorflow as tf

        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        self.rank, self.world_size = rank, world_size

    def make(self, kind: str, spec: LayerSpec) -> TfWorldLayer:
        return TfWorldLayer(kind, self.world_size, spec, self.strategy)

    def shards(self, given: np.ndarray) -> list:
        """A list of shards in which only this worker's (the one its replica takes) is given."""
        shards = [None] * self.world_size
        shards[self.rank] = given
        return shards


@functools.cache
def multiworker(world_size: int):
    """The coordinator's world of ``world_size`` MultiWorkerMirroredStrategy workers."""
    from .ranks import World, free_ports

    def config() -> dict:  # fresh ports for every start
        return {"workers": [f"127.0.0.1:{port}" for port in free_ports(world_size)]}

    return World(f"{__name__}:MultiWorkerRank", world_size, config)
