"""Keras 3 on JAX under ``keras.distribution.DataParallel``: a plain ``BatchNormalization``, the batch
sharded over the devices, one jitted step that XLA partitions (SPMD), inserting the cross-device
reductions itself. Keras on JAX rejects ``synchronized=True`` ("only supported with the TensorFlow
backend"); under data parallelism the compiled step sees the whole sharded batch, so its statistics are the
global batch's by construction, and this checks that they are.

The step is Keras' stateless API (``layer.stateless_call``) under ``jax.jit`` and ``jax.value_and_grad``,
as a Keras-on-JAX custom training step is written; the replicated parameters' gradients come back summed
over the devices. Unequal shards are padded to equal blocks (DataParallel splits the batch evenly) and
masked with Keras' ``mask`` argument. Collectives are counted in the compiled program (``all-reduce``).
"""

from __future__ import annotations

import functools

import numpy as np

from ...adapters.base import LayerSpec, State
from . import WorldStep

_FIELDS = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class KerasDataParallelLayer:
    def __init__(self, world_size: int, spec: LayerSpec) -> None:
        import jax
        import keras

        if keras.backend.backend() != "jax":
            raise RuntimeError(f"Keras DataParallel on JAX needs KERAS_BACKEND=jax, got {keras.backend.backend()}")
        self.jax, self.spec = jax, spec
        self.devices = jax.devices()[:world_size]
        self.distribution = keras.distribution.DataParallel(devices=self.devices)
        with self.distribution.scope():
            self.layer = keras.layers.BatchNormalization(axis=spec.channel_axis, momentum=spec.momentum,
                                                         epsilon=spec.eps, center=spec.affine, scale=spec.affine,
                                                         dtype=spec.dtype)
            shape = [1] * spec.rank
            shape[spec.channel_axis] = spec.num_features
            self.layer.build(tuple(shape))
        self.steps: dict[tuple, object] = {}

    def _copies(self, array) -> list[np.ndarray]:
        """Each device's own copy (or block) of ``array``, in rank order."""
        blocks = {shard.device: shard.data for shard in array.addressable_shards}
        return [np.asarray(blocks[d], np.float64) for d in self.devices]

    def set_state(self, state: State) -> None:
        for field, name in _FIELDS.items():
            var, value = getattr(self.layer, name, None), getattr(state, field)
            if var is not None and value is not None:
                var.assign(np.asarray(value, var.dtype))

    def get_state(self) -> list[State]:
        copies = {f: [None] * len(self.devices) if getattr(self.layer, n, None) is None else
                  self._copies(getattr(self.layer, n).value) for f, n in _FIELDS.items()}
        return [State(**{f: v[r] for f, v in copies.items()}) for r in range(len(self.devices))]

    def _place(self, a: np.ndarray):
        return self.jax.device_put(a, self.distribution.get_data_layout(a.shape).backend_layout)

    def _blocks(self, shards: list[np.ndarray]):
        """The shards padded to equal blocks and concatenated, and the mask of real samples (one dimension
        fewer than the input, as Keras takes it), or None when the shards are equal."""
        size = max(len(s) for s in shards)
        padded = np.concatenate([np.concatenate([s, np.zeros((size - len(s), *s.shape[1:]), s.dtype)])
                                 for s in shards])
        if all(len(s) == size for s in shards):
            return self._place(padded.astype(self.spec.dtype)), None
        if self.spec.channel_axis not in (-1, self.spec.rank - 1):
            raise ValueError("Keras' mask (unequal shards) weights samples of channels-last input only")
        real = np.concatenate([np.arange(size) < len(s) for s in shards])
        mask = np.broadcast_to(real.reshape(-1, *[1] * (self.spec.rank - 2)), padded.shape[:-1])
        return self._place(padded.astype(self.spec.dtype)), self._place(np.ascontiguousarray(mask))

    def _step(self, training: bool, gradients: bool):
        key = (training, gradients)
        if key not in self.steps:
            self.steps[key] = self.jax.jit(functools.partial(_step, self.layer, training, gradients))
        return self.steps[key]

    def _run(self, shards: list[np.ndarray], cotangents: list[np.ndarray] | None, training: bool):
        x, mask = self._blocks(shards)
        dy = x * 0 if cotangents is None else self._blocks(cotangents)[0]
        trainable = [v.value for v in self.layer.trainable_variables]
        stats = [v.value for v in self.layer.non_trainable_variables]
        step = self._step(training, cotangents is not None)
        args = (trainable, stats, x, mask, dy)
        collectives = step.lower(*args).compile().as_text().count("all-reduce(")
        out = step(*args)
        for var, value in zip(self.layer.non_trainable_variables, out[-1]):
            var.assign(value)
        sizes = [len(s) for s in shards]
        unblock = [b[:n] for b, n in zip(self._copies(out[0]), sizes)]
        return out, unblock, sizes, collectives

    def forward(self, shards: list[np.ndarray], training: bool) -> WorldStep:
        _, ys, _, collectives = self._run(shards, None, training)
        return WorldStep(ys, collectives)

    def forward_backward(self, shards: list[np.ndarray], cotangents: list[np.ndarray], training: bool) -> WorldStep:
        (_, dx, dtrainable, _), ys, sizes, collectives = self._run(shards, cotangents, training)
        dxs = [b[:n] for b, n in zip(self._copies(dx), sizes)]
        grads = [self._copies(g) for g in dtrainable] if dtrainable else [[None] * len(sizes)] * 2
        return WorldStep(list(zip(ys, dxs, *grads)), collectives)


def _step(layer, training: bool, gradients: bool, trainable, stats, x, mask, dy):
    """``(y, stats)``, or with ``gradients`` ``(y, dx, dtrainable, stats)`` of ``sum(y * dy)``."""
    import jax
    import jax.numpy as jnp

    def loss(trainable, x):
        y, new_stats = layer.stateless_call(trainable, stats, x, training=training, mask=mask)
        return jnp.sum(y * dy), (y, new_stats)

    if not gradients:
        y, new_stats = layer.stateless_call(trainable, stats, x, training=training, mask=mask)
        return y, new_stats
    (_, (y, new_stats)), (dtrainable, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(trainable, x)
    return y, dx, dtrainable, new_stats
