"""The rank processes behind the distributed implementations (``conformance/world/ranks.py``): calls reach
every rank; a rank that raises, dies or hangs fails the call naming it, with its traceback; no rank
process outlives its world."""

from __future__ import annotations

import os
import socket

import pytest

from conformance.world.ranks import RankFailed, World


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def world():
    running = World("tests.world_toy_rank:ToyRank", 3, {"seed": 1}, timeout_s=20)
    yield running
    pids = running.pids
    running.stop()
    assert not any(_alive(pid) for pid in pids)


def test_every_rank_answers_with_its_own_arguments(world):
    assert world.call("echo", [("a",), ("b",), ("c",)]) == [(0, 3, "a"), (1, 3, "b"), (2, 3, "c")]


def test_a_rank_that_raises_fails_the_call_with_its_traceback_and_the_world_stays_up(world):
    world.call("echo", [(0,)] * 3)
    pids = world.pids
    with pytest.raises(RankFailed, match=r"rank 1 raised ValueError: rank 1 was asked to fail") as failure:
        world.call("fail", [(1,)] * 3)
    assert "--- in rank 1 ---" in str(failure.value) and "Traceback" in str(failure.value)
    assert world.call("echo", [(0,)] * 3)[2] == (2, 3, 0) and world.pids == pids  # every rank had answered


def test_a_world_restarted_after_a_death_gets_a_fresh_config(world):
    starts = iter(range(100))
    world.config = lambda: {"start": next(starts)}
    assert world.call("config", [()] * 3) == [{"start": 0}] * 3
    pids = world.pids
    with pytest.raises(RankFailed, match="rank 2 died"):
        world.call("die", [(2,)] * 3)
    assert not any(_alive(pid) for pid in pids)  # the rest of the world was stopped with it
    assert world.call("config", [()] * 3) == [{"start": 1}] * 3


def test_a_rank_that_hangs_fails_the_call_after_the_timeout(world):
    world.timeout_s = 2
    with pytest.raises(RankFailed, match=r"rank\(s\) \[0\] gave no answer within 2 s"):
        world.call("hang", [(0,)] * 3)


def test_a_gloo_world_leaves_no_process_and_no_port_behind():
    pytest.importorskip("torch")
    pytest.importorskip("fairscale")
    import numpy as np

    from conformance.adapters.base import LayerSpec
    from conformance.world.torch_world import _Rendezvous

    rendezvous = _Rendezvous(2, "gloo")
    running = World("conformance.world.torch_world:TorchRank", 2, rendezvous, timeout_s=300)
    spec = LayerSpec(num_features=3, rank=2, channel_axis=1, eps=1e-5, momentum=0.1)
    running.call("build", [(0, spec)] * 2)
    outputs = running.call("forward", [(0, np.ones((2, 3), np.float32), True)] * 2)
    assert [collectives for _, collectives in outputs] == [2, 2]  # fairscale's two all-reduces, on each rank
    pids, port = running.pids, rendezvous.store.port
    running.stop()
    assert not any(_alive(pid) for pid in pids)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more
