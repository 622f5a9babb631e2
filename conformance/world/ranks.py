"""A world of rank processes, started once and driven in lockstep over pipes.

:class:`World` starts ``world_size`` processes (``python -m conformance.world.ranks``), each building its
rank object with ``factory(rank, world_size, config)`` (``module:function``) and then serving calls: a
call sends every rank its own arguments and waits for every answer. A rank that raises, dies or does not
answer within the timeout fails the call with :class:`RankFailed`, naming the rank and carrying its
traceback, and the whole world is stopped (a half-finished collective cannot be resumed); the next call
starts a fresh one. Ranks exit when their pipe closes, so no rank outlives the process that started it.
"""

from __future__ import annotations

import atexit
import importlib
import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["RankFailed", "World"]


class RankFailed(RuntimeError):
    """A rank raised, died or hung; the message names it and holds its traceback."""


class World:
    def __init__(self, factory: str, world_size: int, config: dict, timeout_s: float = 300.0) -> None:
        self.factory, self.world_size, self.config, self.timeout_s = factory, world_size, config, timeout_s
        self.processes: list[subprocess.Popen] = []
        self.conns: list[Connection] = []
        atexit.register(self.stop)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        for rank in range(self.world_size):
            ours, theirs = socket.socketpair()
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", __name__, self.factory, str(rank), str(self.world_size), str(theirs.fileno())],
                pass_fds=[theirs.fileno()], env=env,
            ))
            theirs.close()
            self.conns.append(Connection(ours.detach()))
            self.conns[-1].send(self.config)

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
                if status == "error":
                    self.stop()
                    raise RankFailed(f"{op}: rank {rank} raised {payload}")
                answers[rank] = payload
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
    _serve(Connection(int(sys.argv[4])), sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
