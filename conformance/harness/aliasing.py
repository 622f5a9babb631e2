"""Aliasing, as a caller meets it: a caller owns what a layer returns and what it hands the layer, and may
write into those arrays afterwards. :func:`detaching` makes a layer's caller do exactly that: every array a
call returns (``y``, ``dx``, the gradients, the state's fields) is copied for the caller and the original is
then overwritten with NaN (:func:`detach`), and every array handed to ``set_state`` is overwritten once the
call returned. A layer whose internals share memory with any of them then gives different later results,
which the Mirror's comparisons see; arrays returned by one call that share memory with each other are seen
too (each is copied before the next is overwritten), and a returned array sharing memory with the caller's
input overwrites that input (the Mirror's check that the caller's arrays stay intact sees it).

An isolated implementation's arrays cross a process boundary as copies: there its worker does the same to
what the layer returned, before the reply's copies are made (``harness/isolation.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.state import State

__all__ = ["CallerWrites", "Detaching", "detach", "detaching", "poison"]


def poison(value: Any) -> None:
    """Overwrite every writable floating array in ``value`` (an array, a tuple or list, a State) with NaN."""
    if isinstance(value, np.ndarray):
        if value.flags.writeable and (value.dtype.kind == "f" or value.dtype.name == "bfloat16"):
            value[...] = np.nan
    elif isinstance(value, (tuple, list)):
        for item in value:
            poison(item)
    elif isinstance(value, State):
        for item in value.values():
            poison(item)


def detach(value: Any) -> Any:
    """The caller's copy of ``value`` (what a layer call returned), each array copied and its original then
    poisoned, one after another in the order returned."""
    if isinstance(value, np.ndarray):
        copy = value.copy()
        poison(value)
        return copy
    if isinstance(value, tuple):
        return tuple(detach(item) for item in value)
    if isinstance(value, list):
        return [detach(item) for item in value]
    if isinstance(value, State):
        return State(**{name: detach(item) for name, item in value.items()})
    return value


class CallerWrites:
    """The caller's writes around the calls of one layer (see the module): :meth:`call` runs one."""

    def __init__(self) -> None:
        self._given: tuple | None = None  # what the last set_state was handed, until the caller reuses it

    def call(self, method: str, target: Any, *args: Any) -> Any:
        if method != "get_state" and self._given is not None:
            poison(self._given)
            self._given = None
        result = detach(target(*args))
        if method == "set_state":
            self._given = args
        return result


class Detaching:
    """An in-process layer whose caller writes into every array it exchanged with it (see the module)."""

    def __init__(self, layer: Any) -> None:
        self._layer, self._writes = layer, CallerWrites()

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._layer, method)
        if not callable(target):
            return target
        return lambda *args: self._writes.call(method, target, *args)


def detaching(layer: Any) -> Any:
    """``layer``, with its caller writing into what it exchanges with it: a proxy's own ``detaching`` where
    it has one (an isolated layer: its worker does it), else :class:`Detaching`."""
    own = getattr(type(layer), "detaching", None)
    return own(layer) if own is not None else Detaching(layer)
