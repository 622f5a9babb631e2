"""The processes a run starts stay bounded and never outlive it (``conformance/harness/processes.py``,
``isolation.py``): a spawned child dies with its parent, even one killed with SIGKILL, and takes its own
children along; at most ``BN_MAX_WORKERS`` implementation workers are alive per pytest process; a whole
check run stopped from outside leaves no process behind; the sampler measures a tree's PSS and processes.

Waits here are for an event (a process gone) with a generous bound, never a measurement of speed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conformance.harness import isolation
from conformance.harness.processes import TreeSampler, spawn, tree
from conformance.harness.registry import load

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")

# A program that adopts (dies with its parent), spawns one more generation if asked, says its pid and sleeps.
_CHAIN = textwrap.dedent("""
    import sys, time
    from conformance.harness.processes import adopt, spawn
    adopt()
    depth = int(sys.argv[1])
    if depth:
        child = spawn([sys.executable, __file__, str(depth - 1)], stdout=sys.stdout)
    print("ready", flush=True)
    time.sleep(600)
""")


def _gone(pids: list[int], within_s: float = 30.0) -> bool:
    """Whether every process of ``pids`` has exited (zombies of this process reaped) within the bound."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()
                 and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _wait_ready(process: subprocess.Popen, lines: int) -> None:
    for _ in range(lines):
        assert process.stdout.readline().strip() == b"ready"


def test_a_killed_parent_takes_its_children_and_theirs(tmp_path: Path) -> None:
    script = tmp_path / "chain.py"
    script.write_text(_CHAIN)
    parent = spawn([sys.executable, str(script), "2"], stdout=subprocess.PIPE)
    _wait_ready(parent, 3)
    descendants = [pid for pid in tree(parent.pid) if pid != parent.pid]
    assert len(descendants) == 2
    parent.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel must do it
    parent.wait()
    assert _gone(descendants)


def test_the_sampler_sees_the_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]);"
                              "import time; print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
    try:
        _wait_ready(child, 1)
        sampler = TreeSampler(interval_s=0.05)
        sampler.sample()
        measured = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert measured["peak_processes"] >= 2
    assert measured["peak_pss_bytes"] >= 200 << 20  # the child's touched buffer, whatever else is shared
    assert measured["samples"] >= 2


def test_workers_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "MAX_WORKERS", 1)
    first, second = (isolation.isolate(impl) for impl in load("fake_processes:sleepers"))
    try:
        first.environment()
        worker = isolation._worker_for(first)
        pid = worker.process.pid
        second.environment()  # a second worker: the first is stopped to make room
        assert not worker.alive and _gone([pid])
        assert sum(w.alive for w in isolation._WORKERS.values()) == 1
    finally:
        isolation.shutdown()


def test_a_worker_grown_past_its_bound_is_recycled() -> None:
    (impl,) = (isolation.isolate(i) for i in load("fake_processes:sleepers")[:1])
    try:
        impl.environment()
        worker = isolation._worker_for(impl)
        isolation.recycle(max_pss=1 << 40)  # far within the bound: kept
        assert worker.alive
        pid = worker.process.pid
        isolation.recycle(max_pss=1 << 20)  # any Python process is past a MiB
        assert not worker.alive and _gone([pid])
        impl.environment.cache_clear()
        impl.environment()  # the next call starts it afresh
        assert worker.alive and worker.process.pid != pid
    finally:
        isolation.shutdown()


def test_a_run_stopped_from_outside_leaves_nothing_behind(tmp_path: Path) -> None:
    """A check run whose implementation hangs in its worker, killed with SIGKILL as a CI time limit kills it:
    every process it started goes with it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "BN_SLEEPER_READY": str(tmp_path)}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--impl", "fake_processes:sleepers",
         "--pyargs", "conformance.checks.test_forward", "-k", "training_output"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob("ready-*")) and time.monotonic() < deadline:  # the worker is in forward
        assert run.poll() is None, "the run ended before its worker started"
        time.sleep(0.1)
    started = [pid for pid in tree(run.pid) if pid != run.pid]
    assert started, "the check run started no worker"
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert _gone(started)


def test_an_exclusive_group_runs_alone() -> None:
    """The run's lock: held shared by ordinary groups (several at once), exclusively by an exclusive one."""
    import fcntl

    from conformance.harness.groups import RunLock

    held = RunLock()
    try:
        with open(held.path) as other:
            held.enter("ordinary", exclusive=False)
            fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another ordinary group runs beside it
            fcntl.flock(other, fcntl.LOCK_UN)
            held.enter("world", exclusive=True)  # a new group: the lock is let go and taken again
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)  # nothing beside an exclusive group
            held.leave()
            fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        held.remove()
    assert not Path(held.path).exists()
