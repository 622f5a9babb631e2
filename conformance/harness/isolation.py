"""Process isolation, the harness's part that runs an implementation in a worker process of its own.

Frameworks fix process-wide state at import (Keras' backend) and can crash the interpreter; each
isolated implementation family therefore lives in a spawned worker with its ``process_env``. The pytest
process talks to it over a pipe: :func:`isolate` wraps an Implementation so that ``build`` returns a
proxy Layer whose calls run remotely. A worker that dies fails the call in flight with
:class:`WorkerCrashed` and is started afresh on the next call. The boundary is transparent to in-place
writes: an argument array the implementation modified is written back into the caller's array, so that
the suite sees the modification it would see in-process (a pickled copy would hide it).

Workers are bounded: at most :data:`MAX_WORKERS` are alive per pytest process (``BN_MAX_WORKERS``, default
1: the plugin runs each implementation group's checks together, so one suffices), the least recently used
one stopped to start another, and :func:`recycle` (after every check) stops a worker whose proportional set
size passed ``BN_WORKER_MAX_PSS`` (bytes, default 1.25 GiB), so that no framework's caches grow without bound.
Every worker dies with the process that started it (:mod:`.processes`).
"""

from __future__ import annotations

import builtins
import functools
import itertools
import os
import socket
import subprocess
import sys
import traceback
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..adapters.base import Implementation, ImplementationCrashed, LayerSpec
from .aliasing import CallerWrites
from .processes import adopt, pss, spawn

__all__ = ["MAX_WORKERS", "RemoteError", "WorkerCrashed", "isolate", "recycle", "shutdown", "started"]

_TIMEOUT_S = 600.0  # one call; generous for a first framework import on a slow machine
MAX_WORKERS = max(1, int(os.environ.get("BN_MAX_WORKERS", "1")))
# Fresh workers take 0.05-0.9 GB (TensorFlow's the most); their caches (compiled functions per shape and
# dtype) grow past 2 GB over a family's checks. Two of them, two xdist workers and the controller: 4 GiB.
_MAX_PSS = int(os.environ.get("BN_WORKER_MAX_PSS", str(5 << 28)))


class RemoteError(Exception):
    """An exception raised inside the worker; ``type_name`` is its class, the message its text."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}\n--- in the worker process ---\n{remote_traceback}")
        self.type_name = type_name
        self.message = message


class WorkerCrashed(ImplementationCrashed):
    """The worker process died (segfault, abort, out of memory) while handling a call."""


@functools.cache
def _remote_error_type(type_name: str) -> type[RemoteError]:
    """``RemoteError`` that is also the builtin exception of that name, so ``pytest.raises(ValueError)``
    works across the process boundary."""
    base = getattr(builtins, type_name, None)
    if isinstance(base, type) and issubclass(base, Exception):
        return type(f"Remote{type_name}", (RemoteError, base), {})
    return RemoteError


# ---- worker side -------------------------------------------------------------------------------


def _serve(conn: Any, locator: str) -> None:
    from .registry import load

    impls = {i.name: i for i in load(locator)}
    layers: dict[int, Any] = {}
    writes: dict[int, CallerWrites] = {}  # per layer, where the caller writes into what it exchanged
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        op, args, dropped, detaching = message
        for layer_id in dropped:
            layers.pop(layer_id, None)
            writes.pop(layer_id, None)
        pristine = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
        try:
            if op == "build":
                layer_id, name, spec = args
                layers[layer_id] = impls[name].build(spec)
                result: Any = layer_id
            elif op in ("environment", "defaults"):
                (name,) = args
                result = getattr(impls[name], op)()
            else:
                layer_id, *rest = args
                if layer_id not in layers:
                    raise KeyError(f"layer {layer_id} is not in this worker: an earlier worker built it and was "
                                   "stopped (it died, or BN_MAX_WORKERS workers were alive already)")
                method = getattr(layers[layer_id], op)
                if detaching:  # the caller writes into what it exchanged with the layer (harness/aliasing.py)
                    result = writes.setdefault(layer_id, CallerWrites()).call(op, method, *rest)
                else:
                    result = method(*rest)
            reply: tuple = ("ok", result)
        except Exception as exc:  # every failure goes back to the caller, with its type and traceback
            reply = ("error", (type(exc).__name__, str(exc), traceback.format_exc()))
        # Bitwise, so that NaN payloads and signed zeros count too.
        modified = {i: a for i, (a, p) in enumerate(zip(args, pristine))
                    if p is not None and a.tobytes() != p.tobytes()}
        conn.send((*reply, modified))


# ---- pytest side -------------------------------------------------------------------------------


class _Worker:
    def __init__(self, impl: Implementation) -> None:
        self.impl = impl  # any member of the group: gives locator, family and process_env
        self.process: subprocess.Popen | None = None
        self.pending_drops: list[int] = []
        # Layer ids are chosen here and never reused, also across restarts: a layer of a worker that died
        # can then neither reach nor (when its proxy is collected) drop a layer of the restarted one.
        self.layer_ids = itertools.count()

    def _start(self) -> None:
        _make_room(self)
        ours, theirs = socket.socketpair()
        self.process = spawn([sys.executable, "-m", __name__, self.impl.locator, str(theirs.fileno())],
                             {**os.environ, **self.impl.process_env}, pass_fds=[theirs.fileno()])
        theirs.close()
        self.conn = Connection(ours.detach())
        _STARTS[self.impl.process_key] = _STARTS.get(self.impl.process_key, 0) + 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def call(self, op: str, *args: Any, detaching: bool = False) -> Any:
        _WORKERS.move_to_end(self.impl.process_key)  # the most recently used
        if not self.alive:
            self._start()
        dropped, self.pending_drops = self.pending_drops, []
        try:
            self.conn.send((op, args, dropped, detaching))
            if not self.conn.poll(_TIMEOUT_S):
                raise TimeoutError(f"{self.impl.family} worker gave no answer to {op!r} within {_TIMEOUT_S:.0f} s")
            status, payload, modified = self.conn.recv()
        except (EOFError, OSError, TimeoutError) as exc:
            code = self.stop()
            raise WorkerCrashed(
                f"{self.impl.family}: the worker process died during {op!r} (exit code {code}): {exc!r}"
            ) from None
        for i, value in modified.items():
            np.copyto(args[i], value)
        if status == "error":
            type_name, message, tb = payload
            raise _remote_error_type(type_name)(type_name, message, tb)
        return payload

    def stop(self) -> int | None:
        """Stop the worker; return its exit code (negative: killed by that signal)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            self.conn.close()  # a healthy worker exits when its pipe closes
            try:
                return process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()


_WORKERS: OrderedDict[tuple, _Worker] = OrderedDict()  # least recently used first
_STARTS: dict[tuple, int] = {}


def _worker_for(impl: Implementation) -> _Worker:
    """One worker per :attr:`~Implementation.process_key`: PyTorch's variants share one."""
    if impl.process_key not in _WORKERS:
        _WORKERS[impl.process_key] = _Worker(impl)
    return _WORKERS[impl.process_key]


def _make_room(starting: _Worker) -> None:
    """Stop the least recently used workers until ``starting`` keeps the count within :data:`MAX_WORKERS`."""
    alive = [w for w in _WORKERS.values() if w.alive and w is not starting]
    for worker in alive[: max(0, len(alive) + 1 - MAX_WORKERS)]:
        worker.stop()


def recycle(max_pss: int = _MAX_PSS) -> None:
    """Stop every worker that has grown past ``max_pss`` bytes (the next call starts it afresh). The worker's
    own size: the ranks of a world it coordinates are the world's, bounded apart (one world per process)."""
    for worker in _WORKERS.values():
        if worker.alive and pss(worker.process.pid) > max_pss:
            worker.stop()


def started() -> dict[tuple, int]:
    """How many times each worker was started in this process (process key -> starts)."""
    return dict(_STARTS)


def shutdown() -> None:
    """Stop every worker (end of the test session)."""
    for worker in _WORKERS.values():
        worker.stop()
    _WORKERS.clear()


class _RemoteLayer:
    """A layer in the worker: every public method call (``forward``, ``get_state``, a transform's own) runs
    there, with the layer's id."""

    def __init__(self, worker: _Worker, layer_id: int, detaching: bool = False) -> None:
        self._worker, self._id, self._detaching = worker, layer_id, detaching
        self._owner: _RemoteLayer | None = None

    def __del__(self) -> None:  # the worker forgets the layer with the next message it gets
        if self._owner is None:
            self._worker.pending_drops.append(self._id)

    def detaching(self) -> _RemoteLayer:
        """The same layer, its worker writing into what each call exchanges (``harness/aliasing.py``)."""
        proxy = _RemoteLayer(self._worker, self._id, detaching=True)
        proxy._owner = self  # keeps the layer alive in the worker while this proxy is in use
        return proxy

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        # Bound to the proxy, not only its worker: a proxy nobody else holds (``impl.build(spec).forward(x)``)
        # must live until its call is answered, or its drop would reach the worker with the call.
        return functools.partial(self._call, method)

    def _call(self, method: str, *args: Any) -> Any:
        return self._worker.call(method, self._id, *args, detaching=self._detaching)


class _Isolated(Implementation):
    """``impl`` with environment, defaults and build running in its worker process."""

    def __init__(self, impl: Implementation) -> None:
        self.__dict__.update(
            {k: getattr(impl, k) for k in ("name", "family", "framework", "convention", "operator", "requires",
                                          "process_env", "capabilities", "locator", "device", "benchmarked",
                                          "derivation", "families", "seeded_bug", "exclusive")}
        )
        self.isolated = True
        self._impl = impl

    def missing(self) -> str | None:
        return self._impl.missing()

    def cases(self, check: str) -> list:
        return self._impl.cases(check)  # a transform's narrowed or adapted grids

    def unsupported(self, spec: LayerSpec) -> list[str]:
        return self._impl.unsupported(spec)

    def output_dtype(self, spec: LayerSpec) -> str:
        return self._impl.output_dtype(spec)  # a stated policy: no framework needed

    def reference(self, case, spec):
        return self._impl.reference(case, spec)  # the reference runs here, in this process

    def deviation_names(self) -> tuple[str, ...]:
        return self._impl.deviation_names()

    def parameters(self) -> dict[str, object]:
        return self._impl.parameters()

    @functools.cache
    def environment(self) -> dict[str, str]:
        return _worker_for(self._impl).call("environment", self.name)

    @functools.cache
    def defaults(self) -> dict[str, float | int]:
        return _worker_for(self._impl).call("defaults", self.name)

    def build(self, spec: LayerSpec) -> _RemoteLayer:
        worker = _worker_for(self._impl)
        return _RemoteLayer(worker, worker.call("build", next(worker.layer_ids), self.name, spec))


def isolate(impl: Implementation) -> Implementation:
    """``impl`` itself if it runs in-process, else a proxy that runs it in its worker."""
    return _Isolated(impl) if impl.isolated else impl


if __name__ == "__main__":
    adopt()
    _serve(Connection(int(sys.argv[2])), sys.argv[1])
