"""Implementations under test: discovery of the built-in adapters and loading of third-party ones.

Every module in this package except ``base`` (the protocol) is an adapter module that defines
``IMPLEMENTATIONS``, a list of :class:`~conformance.adapters.base.Implementation` instances; adding an
implementation means adding one such module. A third-party implementation is named as
``package.module:attribute``, where the attribute is an Implementation, a list of them, or a callable
returning either (``pytest --impl package.module:factory``, or ``BN_CONFORMANCE_IMPL`` for tox).
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import pkgutil
from collections.abc import Iterable

from .base import Implementation

__all__ = ["builtin", "devices", "load", "process_groups", "select"]

_PROTOCOL = "base"


def _from_module(module_name: str, attribute: str = "IMPLEMENTATIONS") -> list[Implementation]:
    obj = getattr(importlib.import_module(module_name), attribute)
    obj = obj() if callable(obj) and not isinstance(obj, Implementation) else obj
    # Anything but a list (or other collection) of them is checked as one, so that a number, a string or
    # a factory's forgotten return value gives the TypeError below, naming the locator.
    impls = list(obj) if isinstance(obj, Iterable) and not isinstance(obj, str) else [obj]
    for impl in impls:
        if not isinstance(impl, Implementation):
            raise TypeError(f"{module_name}:{attribute} must give Implementation instances, got {type(impl).__name__}")
        impl.locator = f"{module_name}:{attribute}"
    return impls


def builtin() -> list[Implementation]:
    """Every implementation of the adapter modules of this package, in a stable order."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != _PROTOCOL)
    return [impl for name in names for impl in _from_module(f"{__name__}.{name}")]


def load(locator: str) -> list[Implementation]:
    """Implementations from ``package.module:attribute`` (attribute defaults to ``IMPLEMENTATIONS``)."""
    module_name, _, attribute = locator.partition(":")
    return _from_module(module_name, attribute or "IMPLEMENTATIONS")


def devices() -> set[str]:
    """The devices this machine has, found without importing a framework: ``cpu``, and ``cuda`` where an
    NVIDIA driver is loaded (``/proc/driver/nvidia``)."""
    return {"cpu"} | ({"cuda"} if os.path.isdir("/proc/driver/nvidia") else set())


def process_groups(impls: Iterable[Implementation]) -> list[list[Implementation]]:
    """``impls`` grouped by :attr:`~base.Implementation.process_key` (those that share a process), in
    order of first appearance."""
    groups: dict[tuple, list[Implementation]] = {}
    for impl in impls:
        groups.setdefault(impl.process_key, []).append(impl)
    return list(groups.values())


def select(specs: list[str]) -> list[Implementation]:
    """Implementations named by ``specs``: ``module:attribute`` locators, or globs over built-in names
    and families (``torch*``, ``keras.jax``, ``tf_keras``). No specs: every built-in one. A built-in
    implementation on a device this machine lacks (:func:`devices`) is selected only by a spec that names
    its device (``torch.*cuda*``), so that a CPU-only run collects none of its checks."""
    available = builtin()
    present = devices()
    if not specs:
        return [i for i in available if i.device in present]
    chosen: dict[str, Implementation] = {}
    for spec in specs:
        if ":" in spec:
            found = load(spec)
        else:
            found = [i for i in available if (spec in (i.name, i.family) or fnmatch.fnmatchcase(i.name, spec))
                     and (i.device in present or i.device in spec)]
            if not found:
                known = ", ".join(sorted({i.family for i in available} | {i.name for i in available}))
                raise ValueError(f"no implementation matches {spec!r}; known: {known}")
        for impl in found:
            if impl.name in chosen and chosen[impl.name] is not impl:
                raise ValueError(f"two implementations are named {impl.name!r}")
            chosen[impl.name] = impl
    return list(chosen.values())
