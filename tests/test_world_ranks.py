"""The rank processes behind the sharded implementations (``conformance/transforms/world/ranks.py``): calls
reach every rank; a rank that raises, dies or hangs fails the call naming it, with its traceback; no rank
process outlives its world; at most one world is alive per process; ranks die with their coordinator, even
when it is killed by SIGKILL while they are busy."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys

import pytest

from conformance.transforms.world.ranks import RankFailed, World, live


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


def test_starting_a_world_stops_the_one_alive_before(world):
    world.call("echo", [(0,)] * 3)
    first = world.pids
    other = World("tests.world_toy_rank:ToyRank", 2, {}, timeout_s=20)
    try:
        assert other.call("echo", [("x",)] * 2) == [(0, 2, "x"), (1, 2, "x")]
        assert live() is other and world.pids == [] and not any(_alive(pid) for pid in first)
        world.call("echo", [(0,)] * 3)  # and back: starting the first again stops the other
        assert live() is world and other.pids == []
    finally:
        other.stop()


# The coordinator: it starts a world, makes every rank busy (blocked in a call, not reading its pipe) and
# waits to be killed; it prints the ranks' process ids.
COORDINATOR = """
import signal
from conformance.transforms.world.ranks import World

world = World("tests.world_toy_rank:ToyRank", 2, {}, timeout_s=600)
world.call("echo", [(0,), (1,)])
for conn in world.conns:
    conn.send(("pause", ()))
print(*world.pids, flush=True)
signal.pause()
"""


def test_a_world_dies_with_its_coordinator_even_by_sigkill():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR], stdout=subprocess.PIPE, text=True, env=env)
    ranks = [int(pid) for pid in coordinator.stdout.readline().split()]
    assert len(ranks) == 2, f"the coordinator printed no ranks (exit code {coordinator.poll()})"
    exits = [os.pidfd_open(pid) for pid in ranks]  # readable once that process has exited
    try:
        os.kill(coordinator.pid, signal.SIGKILL)
        coordinator.wait()
        # A busy rank never reads its pipe's end: only the kernel (adopt's parent-death signal) ends it. The
        # bound only keeps a broken run from hanging; the kernel kills them at once.
        assert all(select.select([fd], [], [], 120)[0] for fd in exits), "a rank outlived its coordinator"
    finally:
        for fd in exits:
            os.close(fd)
        coordinator.stdout.close()


def test_a_rank_that_hangs_fails_the_call_after_the_timeout(world):
    world.timeout_s = 2
    with pytest.raises(RankFailed, match=r"rank\(s\) \[0\] gave no answer within 2 s"):
        world.call("hang", [(0,)] * 3)


def test_a_gloo_world_leaves_no_process_and_no_port_behind():
    pytest.importorskip("torch")
    pytest.importorskip("fairscale")
    import numpy as np

    from conformance.adapters.base import LayerSpec
    from conformance.transforms.world.torch_world import _Rendezvous

    rendezvous = _Rendezvous(2, "gloo")
    running = World("conformance.transforms.world.torch_world:TorchRank", 2, rendezvous, timeout_s=300)
    spec = LayerSpec(num_features=3, rank=2, channel_axis=1, eps=1e-5, momentum=0.1)
    running.call("build", [(0, spec)] * 2)
    outputs = running.call("forward", [(0, np.ones((2, 3), np.float32), True)] * 2)
    assert [collectives for _, collectives in outputs] == [2, 2]  # fairscale's two all-reduces, on each rank
    pids, port = running.pids, rendezvous.store.port
    running.stop()
    assert not any(_alive(pid) for pid in pids)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more
