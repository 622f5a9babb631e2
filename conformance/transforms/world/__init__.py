"""Synchronized BatchNorm on the frameworks' own distributed engines: worlds of ranks.

A sharded implementation (``conformance/transforms/sharded.py``) builds a :class:`WorldLayer`, the same layer
on every rank of a world driven with one shard per rank, and wraps it into the layer protocol. The engine
modules here build them:

- ``jax_world``: Flax linen and nnx under ``jax.shard_map`` and ``jax.pmap`` over forced host devices
  (the world is the worker process's devices).
- ``tf_world``: Keras 3 and tf-keras under ``tf.distribute.MirroredStrategy`` over logical CPU devices.
- ``torch_world``: ``fairscale.experimental.nn.SyncBatchNorm`` over ``torch.distributed`` with gloo, one
  process per rank (``ranks`` launches and supervises them, at most one world of processes at a time).

A world layer speaks the :class:`~conformance.adapters.base.Layer` method names with one value per rank, so
the suite's worker processes carry it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ...adapters.base import State

__all__ = ["FittedWorldLayer", "WorldLayer", "WorldStep"]


@dataclass
class WorldStep:
    """What one step returned on every rank, in rank order, and how many cross-rank reductions (all-reduce,
    psum) the engine issued for it, counted where the engine issues them."""

    outputs: list
    collectives: int


class WorldLayer(Protocol):
    """One layer per rank; every method acts on all ranks at once."""

    def set_state(self, state: State) -> None:
        """Give every rank's layer the same parameters and running statistics."""

    def get_state(self) -> list[State]:
        """Every rank's parameters and running statistics, as each rank holds them."""

    def forward(self, shards: list[np.ndarray], training: bool) -> WorldStep:
        """One step, rank ``r`` on ``shards[r]``; outputs: each rank's ``y``."""

    def forward_backward(self, shards: list[np.ndarray], cotangents: list[np.ndarray], training: bool) -> WorldStep:
        """One step and the gradients of ``sum(y * dy)`` summed over all ranks; outputs: each rank's
        ``(y, dx, dgamma, dbeta)``, the parameter gradients as the rank holds them (its shard's share, or
        already reduced over the world: :attr:`~conformance.transforms.sharded.Engine.parameter_gradients`)."""


class FittedWorldLayer(WorldLayer, Protocol):
    """A world layer that also trains through its framework's own loop
    (:attr:`~conformance.transforms.sharded.Engine.model_fit`)."""

    def fit(self, batches: list[np.ndarray]) -> int:
        """One ``model.fit`` step per global batch, the framework splitting each over the ranks, with the
        parameters left as they are (learning rate 0); the cross-rank reductions issued."""
