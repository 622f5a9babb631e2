"""Implementations under test: discovery of the built-in ones and loading of third-party ones.

Every module of ``conformance/adapters`` except ``base`` (the protocol), and every module of
``conformance/transforms`` that has them, defines ``IMPLEMENTATIONS``, a list of
:class:`~conformance.adapters.base.Implementation` instances; adding an implementation means adding one
such module. A transform module may also define ``derive(selected)``: the implementations it makes from
those a run selected (porting makes pairs with the reference in every convention). A third-party
implementation is named as ``package.module:attribute``, where the attribute is an Implementation, a list of
them, or a callable returning either (``pytest --impl package.module:factory``, or ``BN_CONFORMANCE_IMPL``
for tox). Every implementation's convention is resolved to its operator's record here (a built-in's name is accepted).
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import pkgutil
from collections.abc import Iterable

from ..adapters.base import Implementation

__all__ = ["builtin", "conventions", "derived", "devices", "load", "process_groups", "select"]

# The packages holding built-in implementations, and the modules there that hold none.
_PACKAGES = ("conformance.adapters", "conformance.transforms")
_NOT_IMPLEMENTATIONS = {"base"}


def _checked(impls: Iterable[object], locator: str) -> list[Implementation]:
    """``impls``, each with its convention resolved to its record and its locator set (a derived one keeps
    its parties'); nothing is changed unless all of them are valid, so that a bad locator does not leave
    the objects it shares with a good one pointing at it."""
    impls = list(impls)
    records = []
    for impl in impls:
        if not isinstance(impl, Implementation):
            raise TypeError(f"{locator} must give Implementation instances, got {type(impl).__name__}")
        convention = impl.convention
        if isinstance(convention, str):  # a built-in convention of its operator, by name
            known = impl.operator.conventions
            if convention not in known:
                raise TypeError(f"{locator}: {impl.name}: unknown convention {convention!r}; the "
                                f"{impl.operator.name} operator's built-in ones: {', '.join(sorted(known))} "
                                "(declare another as a record)")
            convention = known[convention]
        if not isinstance(convention, impl.operator.convention):
            raise TypeError(f"{locator}: {impl.name}: convention must be a name or a "
                            f"{impl.operator.convention.__name__}, got {type(convention).__name__}")
        records.append(convention)
    for impl, record in zip(impls, records):
        impl.convention, impl.locator = record, impl.locator or locator
    return impls


def _from_module(module_name: str, attribute: str = "IMPLEMENTATIONS") -> list[Implementation]:
    obj = getattr(importlib.import_module(module_name), attribute)
    obj = obj() if callable(obj) and not isinstance(obj, Implementation) else obj
    # Anything but a list (or other collection) of them is checked as one, so that a number, a string or
    # a factory's forgotten return value gives the TypeError, naming the locator.
    impls = list(obj) if isinstance(obj, Iterable) and not isinstance(obj, str) else [obj]
    return _checked(impls, f"{module_name}:{attribute}")


def _modules() -> list[object]:
    found = []
    for package in _PACKAGES:
        path = importlib.import_module(package).__path__
        names = sorted(m.name for m in pkgutil.iter_modules(path) if m.name not in _NOT_IMPLEMENTATIONS)
        found += [importlib.import_module(f"{package}.{name}") for name in names]
    return found


def builtin() -> list[Implementation]:
    """Every built-in implementation (adapter modules, then transform modules), in a stable order."""
    return [impl for module in _modules() if hasattr(module, "IMPLEMENTATIONS")
            for impl in _from_module(module.__name__)]


def derived(selected: list[Implementation]) -> list[Implementation]:
    """What every transform module's ``derive`` makes from the ``selected`` implementations."""
    return [impl for module in _modules() if hasattr(module, "derive")
            for impl in _checked(module.derive(selected), f"{module.__name__}:derive")]


def load(locator: str) -> list[Implementation]:
    """Implementations from ``package.module:attribute`` (attribute defaults to ``IMPLEMENTATIONS``)."""
    module_name, _, attribute = locator.partition(":")
    return _from_module(module_name, attribute or "IMPLEMENTATIONS")


def devices() -> set[str]:
    """The devices this machine has, found without importing a framework: ``cpu``, and ``cuda`` where an
    NVIDIA driver is loaded (``/proc/driver/nvidia``)."""
    return {"cpu"} | ({"cuda"} if os.path.isdir("/proc/driver/nvidia") else set())


def process_groups(impls: Iterable[Implementation]) -> list[list[Implementation]]:
    """``impls`` grouped by :attr:`~Implementation.process_key` (those that share a process), in order of first
    appearance."""
    groups: dict[tuple, list[Implementation]] = {}
    for impl in impls:
        groups.setdefault(impl.process_key, []).append(impl)
    return list(groups.values())


def conventions(impls: Iterable[Implementation]) -> dict[str, object]:
    """The convention records of ``impls`` by name; two different records of one name are an error."""
    found: dict[str, object] = {}
    for impl in impls:
        held = found.setdefault(impl.convention.name, impl.convention)
        if held != impl.convention:
            raise ValueError(f"two different conventions are named {held.name!r}: {held} and {impl.convention}")
    return found


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
