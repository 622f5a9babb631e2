"""Synchronized BatchNorm on distributed engines: every rank against the reference on the global batch.

Each distributed implementation (``adapters/synchronized.py``) shards a global batch over its ranks
(:data:`SHARDINGS`, sizes per world size): equal shards, unequal ones, a rank holding a single sample,
and one sample on every rank. Training: every rank's output and running statistics after each of three
steps equal the single-device results on the concatenated batch (:mod:`reference.sharding`), and the
step communicated; also through the framework's own training loop (``model.fit``, where the
implementation declares it), whose running statistics must be the global batches'. Gradients: every
rank's dx is its slice of the global dx, and dgamma/dbeta are what the engine promises (its shard's share,
or the global sum). Inference: every rank normalizes its own shard with the running statistics, and no
cross-rank reduction happens.
"""

from __future__ import annotations

import pytest

from conformance.operators.batchnorm.cases import BatchNormCase as Case
from conformance.transforms.world_mirror import WorldMirror

pytestmark = pytest.mark.conformance(transform="shard")

SHARDINGS = {
    "equal": {2: (3, 3), 4: (2, 2, 2, 2)},
    "unequal": {2: (5, 3), 4: (4, 3, 2, 3)},
    "single_sample_rank": {2: (1, 5), 4: (1, 3, 2, 2)},
    "one_sample_per_rank": {2: (1, 1), 4: (1, 1, 1, 1)},
}
_SPATIAL = {2: (), 4: (2, 3), 5: (2, 2, 2)}
# (rank, sharding, channel position: "default" is the engine's own, "other" the other one)
TRAINING = [(r, "equal", "default") for r in (2, 4, 5)] + [
    (4, s, "default") for s in ("unequal", "single_sample_rank", "one_sample_per_rank")] + [(4, "equal", "other")]
INFERENCE = [(r, "equal", "default") for r in (2, 4, 5)] + [(4, "unequal", "default")]


def _ids(cases: list[tuple]) -> list[str]:
    return [f"rank{r}-{s}-{axis}_channel_axis" for r, s, axis in cases]


@pytest.fixture
def synchronized(impl, conformance):
    """``synchronized(rank, sharding, channel_position, steps)`` -> :class:`WorldMirror`, with the
    implementation's skips and registered deviations applied."""

    def start(rank: int, sharding: str, position: str, steps: int = 1) -> WorldMirror:
        world = impl.world
        sizes = SHARDINGS[sharding][world.world_size]
        axes = impl.capabilities.channel_axes
        default = -1 if -1 in axes else 1
        axis = default if position == "default" else -default
        shape = (sum(sizes), 3, *_SPATIAL[rank]) if axis == 1 else (sum(sizes), *_SPATIAL[rank], 3)
        case = Case(shape, axis, "float32", eps=1e-3, steps=steps)
        conformance.require(case)
        conformance.expect_deviation(case.params() | {"sharding": sharding, "shard_sizes": list(sizes),
                                                      "world_size": world.world_size})
        return WorldMirror(impl, case, sizes, on_compare=conformance.record)

    return start


@pytest.mark.parametrize("rank, sharding, position", TRAINING, ids=_ids(TRAINING))
def test_synchronized_training(synchronized, rank, sharding, position):
    mirror = synchronized(rank, sharding, position, steps=3)
    for x in mirror.case.batches():
        mirror.train(x)
        mirror.compare_state()
    mirror.verify()


@pytest.mark.parametrize("rank, sharding, position", TRAINING, ids=_ids(TRAINING))
def test_synchronized_gradients(synchronized, rank, sharding, position):
    mirror = synchronized(rank, sharding, position)
    mirror.train(mirror.case.batches()[0], mirror.case.cotangent())
    mirror.compare_state()
    mirror.verify()


@pytest.mark.parametrize("rank, sharding, position", INFERENCE, ids=_ids(INFERENCE))
def test_synchronized_inference(synchronized, rank, sharding, position):
    mirror = synchronized(rank, sharding, position)
    mirror.infer(mirror.case.batches()[0])
    mirror.compare_state()  # inference never updates the statistics
    mirror.verify()


FIT = [(r, "equal", "default") for r in (2, 4)] + [(4, "unequal", "default")]


@pytest.mark.parametrize("rank, sharding, position", FIT, ids=_ids(FIT))
def test_synchronized_model_fit(impl, synchronized, rank, sharding, position):
    """``model.fit`` splits each global batch over the replicas itself (tf.data): here the sharding only
    sets the global batch size (the sum of its sizes: 6 to 12 samples)."""
    if not impl.world.model_fit:
        pytest.skip(f"{impl.name}: no framework training loop is driven (World.model_fit)")
    mirror = synchronized(rank, sharding, position, steps=3)
    mirror.fit(mirror.case.batches())
    mirror.compare_state()
    mirror.verify()
