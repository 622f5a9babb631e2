"""The shard transform (``conformance/transforms/sharded.py``) through the one Mirror path, on worlds made of the
reference itself (no framework): a synchronized world passes every per-rank comparison and the collectives
facts; one whose ranks normalize alone fails on each rank's own quantity and on the missing communication;
cases are placed at each engine's channel axis and world size; counts are judged as facts."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from conformance.adapters.base import State
from conformance.core.comparison import ExpectedCount
from conformance.harness.mirror import Mirror
from conformance.transforms.sharded import Engine, Sharded
from conformance.transforms.world import WorldStep


class ReferenceWorld:
    """A world of ``world_size`` ranks, each holding a reference layer; ``synchronized``: training normalizes
    with the global batch's statistics (every rank's layer steps on the concatenated batch), else each rank
    alone on its shard. Parameter gradients are each rank's share."""

    def __init__(self, spec, world_size: int, synchronized: bool) -> None:
        self.synchronized = synchronized
        self.ranks = [reference.BatchNorm(spec.num_features, convention="torch", momentum=spec.momentum, eps=spec.eps,
                                          channel_axis=spec.channel_axis) for _ in range(world_size)]

    def set_state(self, state: State) -> None:
        for layer in self.ranks:
            for name, value in state.assigned().items():
                setattr(layer, name, value)

    def get_state(self) -> list[State]:
        return [State(**layer.state) for layer in self.ranks]

    def _ys(self, shards: list[np.ndarray], training: bool) -> list[np.ndarray]:
        if not (training and self.synchronized):
            return [layer.forward(x, training) for layer, x in zip(self.ranks, shards)]
        global_batch, sizes = np.concatenate(shards), np.cumsum([len(s) for s in shards])[:-1]
        return [np.split(layer.forward(global_batch, True), sizes)[r] for r, layer in enumerate(self.ranks)]

    def forward(self, shards: list[np.ndarray], training: bool) -> WorldStep:
        return WorldStep(self._ys(shards, training), int(training and self.synchronized))

    def forward_backward(self, shards: list[np.ndarray], cotangents: list[np.ndarray], training: bool) -> WorldStep:
        ys = self._ys(shards, training)
        if training and self.synchronized:  # the global backward, each rank keeping its slice and its share
            sizes = np.cumsum([len(s) for s in shards])[:-1]
            dxs = [np.split(layer.backward(np.concatenate(cotangents)), sizes)[r] for r, layer in enumerate(self.ranks)]
            ranks, _, _ = reference.synchronized_training(np.concatenate(shards), np.concatenate(cotangents),
                                                          [len(s) for s in shards], self.ranks[0].gamma,
                                                          self.ranks[0].beta, self.ranks[0].eps, 1)
            outputs = [(y, dx, r.dgamma, r.dbeta) for y, dx, r in zip(ys, dxs, ranks)]
        else:
            outputs = [(y, layer.backward(dy), layer.dgamma, layer.dbeta)
                       for y, layer, dy in zip(ys, self.ranks, cotangents)]
        return WorldStep(outputs, int(training and self.synchronized))

    def fit(self, batches: list[np.ndarray]) -> int:
        for x in batches:
            for layer in self.ranks:
                layer.forward(x, True)
        return 1


class ReferenceSharded(Sharded):
    """A sharded implementation whose engine is :class:`ReferenceWorld`, run in this process."""

    isolated = False

    def __init__(self, world_size: int, synchronized: bool = True) -> None:
        engine = Engine("reference.numpy", "numpy", "torch", "reference.torch", (), "none", "in-process", "local",
                        model_fit=True, channel_axes=frozenset({1}))
        super().__init__(engine, world_size)
        self.synchronized = synchronized

    def _world_layer(self, spec):
        return ReferenceWorld(spec, self.world_size, self.synchronized)


def _case(impl, check: str, sharding: str, fit: bool = False):
    return next(case for _, case in impl.cases(check) if dict(case.options)["sharding"] == sharding
                and case.rank == 4 and ("training_loop" in dict(case.options)) == fit)


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("sharding", ["equal", "unequal", "single_sample_rank", "one_sample_per_rank"])
def test_a_synchronized_world_passes_every_rank_comparison(world_size, sharding):
    impl = ReferenceSharded(world_size)
    case = _case(impl, "synchronized_gradients", sharding)
    mirror = Mirror(impl, case)
    mirror.forward_backward(case.batches()[0], case.cotangent(), training=True)
    mirror.compare_state()
    mirror.forward(case.batches()[0], training=False)
    mirror.compare_state()
    assert mirror.failures() == []
    quantities = {c.quantity for c in mirror.comparisons}
    for rank in range(world_size):
        assert {f"rank{rank}.{q}" for q in ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var")} <= quantities
    facts = [c.note for c in mirror.comparisons if c.quantity == "collectives"]
    assert facts == ["1 cross-rank reductions; expected at least 1", "0 cross-rank reductions; expected none"]


def test_ranks_that_normalize_alone_fail_on_their_own_quantities_and_on_communication():
    impl = ReferenceSharded(2, synchronized=False)
    case = _case(impl, "synchronized_training", "unequal")
    mirror = Mirror(impl, case)
    mirror.forward(case.batches()[0], training=True)
    mirror.compare_state()
    failed = {c.quantity for c in mirror.failures()}
    assert {"rank0.y", "rank1.y", "rank0.running_mean", "rank1.running_var", "collectives"} <= failed
    with pytest.raises(AssertionError, match="collectives: 0 cross-rank reductions; expected at least 1"):
        mirror.verify()


def test_a_training_loop_step_is_judged_on_state_and_communication_only():
    impl = ReferenceSharded(2)
    case = _case(impl, "synchronized_training", "equal", fit=True)
    mirror = Mirror(impl, case)
    for x in case.batches():
        mirror.forward(x, training=True)
        mirror.compare_state()
    assert mirror.failures() == []
    assert not any(c.quantity.endswith(".y") for c in mirror.comparisons)


def test_cases_are_placed_at_the_engine_axis_and_world_size():
    torch_like, keras_like = ReferenceSharded(2), Sharded(Engine("k", "keras", "keras", "keras.tensorflow", (), "e",
                                                                 "t", "local"), 4)
    for impl, own in ((torch_like, 1), (keras_like, -1)):
        cases = [case for _, case in impl.cases("synchronized_training")]
        assert {dict(case.options)["world_size"] for case in cases} == {impl.world_size}
        # Rank 4 with equal shards is listed at both channel axes; everything else runs at the engine's own.
        plain = {"sharding": "equal", "world_size": impl.world_size}
        both = [c for c in cases if c.rank == 4 and dict(c.options) == plain]
        assert sorted(c.channel_axis for c in both) == [-1, 1]
        assert all(c.channel_axis == own for c in cases if c not in both)
    with pytest.raises(ValueError, match="world_size=4"):
        torch_like.build(next(c for _, c in keras_like.cases("synchronized_inference")).spec(torch_like.convention))


@pytest.mark.parametrize("count, expected, passed, note", [
    (3, ExpectedCount(1, unit="reductions"), True, "3 reductions; expected at least 1"),
    (0, ExpectedCount(1, unit="reductions"), False, "0 reductions; expected at least 1"),
    (2, ExpectedCount(0, 0, unit="reductions"), False, "2 reductions; expected none"),
    (2, ExpectedCount(1, 2, unit="reductions"), True, "2 reductions; expected 1 to 2"),
    (None, ExpectedCount(0, 0, unit="reductions"), False, "the implementation reports no count of reductions; "
                                                          "expected none"),
])
def test_a_count_is_judged_as_a_fact(count, expected, passed, note):
    comparison = expected.judge("collectives", count)
    assert (comparison.passed, comparison.note) == (passed, note)
    assert comparison.error_ratio == (0.0 if passed else np.inf)
