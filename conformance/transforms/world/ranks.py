"""A world of rank processes, started once and driven in lockstep over pipes.

:class:`World` starts ``world_size`` processes (``python -m conformance.transforms.world.ranks``, with
:func:`~conformance.harness.processes.spawn`), each building its rank object with ``factory(rank, world_size,
config)`` (``module:function``) and then serving calls: a call sends every rank its own arguments and waits
for every answer. A rank that raises, dies or does not answer within the timeout fails the call with
:class:`RankFailed`, naming the rank and carrying its traceback. A rank that dies or hangs stops the whole
world (a half-finished collective cannot be resumed) and the next call starts a fresh one.

Bounded: at most one world is alive per process; starting one stops the one alive before (:func:`live`).
No rank outlives the process that started it: ranks exit when their pipe closes, and each adopts itself
first thing (:func:`~conformance.harness.processes.adopt`), so that the kernel kills it when its coordinator
dies, even by SIGKILL and even while the rank is busy.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import socket
import subprocess
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from ...adapters.base import State
from ...harness.processes import adopt, spawn
from . import WorldStep

__all__ = ["LayerRank", "RankFailed", "RankWorldLayer", "World", "free_ports", "live"]

_LIVE: list[World] = []  # the world whose ranks are alive in this process: at most one


class RankFailed(RuntimeError):
    """A rank raised, died or hung; the message names it and holds its traceback."""


class World:
    def __init__(self, factory: str, world_size: int, config: dict | Callable[[], dict],
                 timeout_s: float = 300.0) -> None:
        """``config`` goes to every rank's factory; a callable makes a fresh one for every start (a new
        rendezvous, so that a restarted world never meets its predecessor's addresses), and its ``close()``,
        if it has one, is called when the world stops."""
        self.factory, self.world_size, self.config, self.timeout_s = factory, world_size, config, timeout_s
        self.processes: list[subprocess.Popen] = []
        self.conns: list[Connection] = []
        atexit.register(self.stop)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def _start(self) -> None:
        for other in list(_LIVE):  # one world at a time: its ranks go before these come
            other.stop()
        _LIVE.append(self)
        config = self.config() if callable(self.config) else self.config
        for rank in range(self.world_size):
            ours, theirs = socket.socketpair()
            self.processes.append(spawn(
                [sys.executable, "-m", __name__, self.factory, str(rank), str(self.world_size), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
            ))
            theirs.close()
            self.conns.append(Connection(ours.detach()))
            self.conns[-1].send(config)

    def call(self, op: str, per_rank_args: Sequence[tuple]) -> list[Any]:
        """``op`` on every rank, rank ``r`` with ``per_rank_args[r]``; every rank's result, in rank order."""
        if len(per_rank_args) != self.world_size:
            raise ValueError(f"{op}: {len(per_rank_args)} argument lists for {self.world_size} ranks")
        if not self.processes:
            self._start()
        try:
            for conn, args in zip(self.conns, per_rank_args):
                conn.send((op, tuple(args)))
            return self._answers(op)
        except (OSError, EOFError) as exc:
            failure = RankFailed(f"{op}: a rank's pipe broke ({exc!r}); exit codes {self._exit_codes()}")
        self.stop()
        raise failure

    def _answers(self, op: str) -> list[Any]:
        answers: dict[int, Any] = {}
        errors: dict[int, str] = {}
        pending = dict(enumerate(self.conns))
        while pending:
            ready = wait(list(pending.values()), timeout=self.timeout_s)
            if not ready:
                self.stop()
                raise RankFailed(f"{op}: rank(s) {sorted(pending)} gave no answer within {self.timeout_s:.0f} s")
            for rank in [r for r, c in pending.items() if c in ready]:
                try:
                    status, payload = pending.pop(rank).recv()
                except EOFError:
                    self.stop()
                    raise RankFailed(f"{op}: rank {rank} died (exit codes {self._exit_codes()})") from None
                (errors if status == "error" else answers)[rank] = payload
        if errors:  # every rank answered, so none waits in a collective: the world stays up
            rank = min(errors)
            raise RankFailed(f"{op}: rank {rank} raised {errors[rank]}" + (
                f"\n(ranks {sorted(errors)} raised)" if len(errors) > 1 else ""))
        return [answers[r] for r in range(self.world_size)]

    def _exit_codes(self) -> list[int | None]:
        return [p.poll() for p in self.processes]

    def stop(self) -> None:
        """Close the pipes (healthy ranks exit), then kill what is left; idempotent."""
        for conn in self.conns:
            conn.close()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes, self.conns = [], []
        if self in _LIVE:
            _LIVE.remove(self)
        if callable(close := getattr(self.config, "close", None)):  # a rendezvous the coordinator serves
            close()


def live() -> World | None:
    """The world whose ranks are alive in this process, if any."""
    return _LIVE[0] if _LIVE else None


class RankWorldLayer:
    """A :class:`~conformance.transforms.world.WorldLayer` whose ranks are the processes of ``world``. Every rank
    object serves ``build(layer_id, *build_args)``, ``drop``, ``set_state``, ``get_state`` (its own
    :class:`State`), ``forward(layer_id, x, training)`` and ``forward_backward(layer_id, x, dy, training)``,
    the last two returning its output and the number of cross-rank reductions it issued."""

    _ids = itertools.count()

    def __init__(self, world: World, *build_args: Any, every_shard: bool = False) -> None:
        """``every_shard``: each rank is given every shard, not only its own (SPMD engines that build the
        global array in every process, like ``jax.distributed``)."""
        self.world, self.id, self.every_shard = world, next(self._ids), every_shard
        self._all("build", *build_args)

    def _shards(self, shards: list) -> list:
        return [shards] * len(shards) if self.every_shard else shards

    def __del__(self) -> None:
        if self.world.processes:
            self._all("drop")

    def _all(self, op: str, *args: Any) -> list:
        return self.world.call(op, [(self.id, *args)] * self.world.world_size)

    def set_state(self, state: State) -> None:
        self._all("set_state", state)

    def get_state(self) -> list[State]:
        return self._all("get_state")

    def forward(self, shards: list[np.ndarray], training: bool) -> WorldStep:
        answers = self.world.call("forward", [(self.id, x, training) for x in self._shards(shards)])
        return WorldStep([y for y, _ in answers], sum(n for _, n in answers))

    def forward_backward(self, shards: list[np.ndarray], cotangents: list[np.ndarray], training: bool) -> WorldStep:
        answers = self.world.call("forward_backward",
                                  [(self.id, x, dy, training)
                                   for x, dy in zip(self._shards(shards), self._shards(cotangents))])
        return WorldStep([out for out, _ in answers], sum(n for _, n in answers))


class LayerRank(ABC):
    """A rank process of an engine whose layer is itself a :class:`~conformance.transforms.world.WorldLayer` (one
    whose local part is this rank): it serves :class:`RankWorldLayer` by keeping one such layer per id.
    Subclasses say how to build it (``make``) and how the shard(s) a call brings become its shard list."""

    def __init__(self) -> None:
        self.layers: dict[int, Any] = {}

    @abstractmethod
    def make(self, *build_args: Any) -> Any:
        """A new world layer (of which this process holds a part) from :class:`RankWorldLayer`'s arguments."""

    def shards(self, given: Any) -> list:
        return given

    def build(self, layer_id: int, *build_args: Any) -> None:
        self.layers[layer_id] = self.make(*build_args)

    def drop(self, layer_id: int) -> None:
        self.layers.pop(layer_id, None)

    def set_state(self, layer_id: int, state: State) -> None:
        self.layers[layer_id].set_state(state)

    def get_state(self, layer_id: int) -> State:
        return self.layers[layer_id].get_state()[0]  # this process's own copy

    def forward(self, layer_id: int, x: Any, training: bool) -> tuple:
        step = self.layers[layer_id].forward(self.shards(x), training)
        return step.outputs[0], step.collectives

    def forward_backward(self, layer_id: int, x: Any, dy: Any, training: bool) -> tuple:
        step = self.layers[layer_id].forward_backward(self.shards(x), self.shards(dy), training)
        return step.outputs[0], step.collectives


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, for engines that must be told their ports up front
    (TensorFlow's ``TF_CONFIG``, JAX's coordinator): bound together, so they differ, then released."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _serve(conn: Connection, factory: str, rank: int, world_size: int) -> None:
    module, _, name = factory.partition(":")
    handler = getattr(importlib.import_module(module), name)(rank, world_size, conn.recv())
    while True:
        try:
            op, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", getattr(handler, op)(*args)))
        except Exception as exc:  # the coordinator reports it, naming this rank
            conn.send(("error", f"{type(exc).__name__}: {exc}\n--- in rank {rank} ---\n{traceback.format_exc()}"))


if __name__ == "__main__":
    adopt()
    _serve(Connection(int(sys.argv[4])), sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
