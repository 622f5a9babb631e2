"""The adapter protocol: how the suite drives any implementation of an operator.

An implementation is an :class:`Implementation` (metadata, its convention record, capabilities, ``build``);
``build`` turns its operator's framework-neutral spec (BatchNorm: :class:`LayerSpec`) into a :class:`Layer`,
which takes and returns NumPy arrays. The suite never imports a framework itself: adapters import theirs
inside ``build``/``environment``, so a missing framework becomes a skip naming the package, never an
import error.

Arrays cross the protocol as NumPy: inputs in the case's dtype (``bfloat16`` as ``ml_dtypes.bfloat16``),
the state as named fields (:class:`State`: BatchNorm's parameters and running averages float64 of shape
(C,), counters ints), ``y`` in the dtype the framework returns (:meth:`Implementation.output_dtype` states
its policy), gradients in any floating dtype. The contract checks also hand inputs of other dtypes
(integer, boolean): an adapter passes those to its framework as they are, so that the framework's own
response is what is checked (:func:`framework_input`).

A layer may also be :class:`Benchmarkable` (optional): the benchmarks (``benchmarks/``) then time its
operations on framework-native arrays instead of through the NumPy conversions.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np

from reference import Convention

from ..core.case import Case
from ..core.dtypes import ALL_DTYPES, as_numpy_float, framework_input
from ..core.state import State
from ..operators import Operator, ReferenceSide
from ..operators.batchnorm import BATCHNORM, LayerSpec

__all__ = [
    "ALL_DTYPES", "OPERATIONS", "Benchmarkable", "Capabilities", "Derivation", "DoubleBackward", "Implementation",
    "ImplementationCrashed", "Layer", "LayerSpec", "SeededBug", "State", "as_numpy_float", "framework_input",
]

# What the benchmarks time: a training-mode forward, an inference-mode forward, and a training-mode
# forward followed by the backward (dx and the parameters' gradients).
OPERATIONS = ("forward_training", "forward_inference", "forward_backward")

# Optional behaviours an implementation may declare in Capabilities.features.
FEATURES = frozenset({"affine_false", "no_running_stats", "momentum_none", "trainable_false"})


class ImplementationCrashed(RuntimeError):
    """The process running an implementation died: never an outcome a check compares, always a crash."""


@runtime_checkable
class Layer(Protocol):
    """One built layer. Every method takes and returns NumPy arrays."""

    def set_state(self, state: State) -> None:
        """Assign every field of ``state`` that has a value (the hyperparameters aside), as copies: the caller
        may write into its arrays afterwards."""

    def get_state(self) -> State:
        """Every field of the state it keeps (BatchNorm: parameters, the convention's running fields) and,
        where the adapter reports them, the ``eps`` and ``momentum`` it holds; arrays the caller owns (no
        memory shared with the layer, ``harness/aliasing.py``)."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """One forward call, with the framework's usual side effects (running-stat updates)."""

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        """One forward call and the gradients of ``sum(y * dy)``: ``(y, dx, *parameter gradients)`` in the
        order of the operator's parameters (BatchNorm: ``(y, dx, dgamma, dbeta)``), None for absent ones."""


@runtime_checkable
class DoubleBackward(Protocol):
    """Optional for a :class:`Layer` whose implementation declares :attr:`Capabilities.double_backward`."""

    def double_backward(self, x: np.ndarray, dy: np.ndarray, vx: np.ndarray, *vparams: np.ndarray | None) -> tuple:
        """Second order in training mode, through the framework's own autodiff (as PyTorch's gradgradcheck
        differentiates its modules): the gradients of ``sum(y * dy)`` differentiated along ``(vx, *vparams)``
        (BatchNorm: ``vgamma, vbeta``), i.e. the Hessian-vector product ``(hvp_x, *hvp_parameters)``
        (:func:`reference.hvp_training`); None for absent parameters. Reverse over reverse (``v`` as the
        cotangent of the gradients) gives the same, the Hessian being symmetric."""


@runtime_checkable
class Benchmarkable(Protocol):
    """Optional for a :class:`Layer`: run one operation on framework-native arrays, for timing.

    Timing ``forward``/``forward_backward`` would mostly measure the conversions from and to NumPy;
    a layer with this method is timed without them. A layer without it is timed through the NumPy
    protocol, conversions included.
    """

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        """Convert ``x`` and ``dy`` (NumPy, as ``forward`` takes them) to the framework's arrays once, and
        return a zero-argument callable that runs ``operation`` (one of :data:`OPERATIONS`) on them and
        returns only when the work is done (it waits for asynchronous runtimes and devices).

        The callable computes what ``forward(x, training)`` and ``forward_backward(x, dy, True)``
        compute, in the same way (same calls, same kernels), with the backward given ``dy`` as the
        gradient of ``y`` directly, and returns the same outputs as the framework's arrays, unconverted:
        ``y``, or ``(y, dx, *parameter gradients)`` (None for absent parameters).
        """


@dataclass(frozen=True)
class Capabilities:
    """What an implementation supports; a case needing anything else is not generated, counted per what it
    lacks (:meth:`unsupported`)."""

    dtypes: frozenset[str] = frozenset(ALL_DTYPES)
    ranks: frozenset[int] = frozenset({2, 3, 4, 5})
    channel_axes: frozenset[int] = frozenset({1, -1})
    devices: frozenset[str] = frozenset({"cpu"})
    features: frozenset[str] = FEATURES
    # Names of the spec's options the implementation takes (each a constructor argument of its own).
    options: frozenset[str] = frozenset()
    # Why ``forward_backward`` cannot run (e.g. ONNX defines no gradients); empty when it can.
    no_gradients: str = ""
    # Why a bad input's outcome cannot be judged (it depends on the process's history); empty when it can.
    no_bad_input: str = ""
    # The layer has ``double_backward`` (:class:`DoubleBackward`); without it second-order checks skip.
    double_backward: bool = False

    def unsupported(self, spec: LayerSpec) -> list[str]:
        """What of ``spec`` is not supported (``dtype float16``, ``affine=False``, ...); empty when none. The
        spec says what it needs (``requirements``), each against the capability set of that name."""
        return [label for capability, value, label in spec.requirements() if value not in getattr(self, capability)]


@dataclass(frozen=True)
class SeededBug:
    """A bug an implementation carries on purpose, for the suite's mutation self-test (``mutants/``): the
    bug class, where a real implementation had it, and the upstream report."""

    bug: str
    origin: str
    link: str


@dataclass(frozen=True)
class Derivation:
    """How a transform (``conformance/transforms/``) made an implementation out of others: the transform's
    name (``compile``, ``export``, ``fold``, ``port``, ``shard``, ``mixed_precision``, ``autocast``), the
    implementations it wraps, in its own order (porting: source, then target), and the implementation whose row
    of the report shows its results (``row``; empty: a row of its own, as a compiled variant has; a ported pair
    counts in its framework implementation's ``porting`` column)."""

    transform: str
    bases: tuple[str, ...]
    row: str = ""


class Implementation(ABC):
    """One implementation under test. Subclass it in one adapter module (see ``adapters/__init__``).

    Class attributes:
        name: unique id, ``family.variant`` (e.g. ``torch.BatchNorm2d``).
        family: group run together (a tox environment): ``reference``, ``torch``, ``keras``, ...
        framework: the Python distribution whose version is reported (e.g. ``torch``).
        operator: the operator it implements (:mod:`conformance.operators`; BatchNorm by default).
        convention: its operator's convention record (BatchNorm: the :class:`reference.Convention` its running
            statistics follow): a built-in one (:attr:`Operator.conventions`; its name is accepted too) or one
            the adapter module declares.
        requires: modules that must be importable, checked before anything runs.
        process_env: environment variables the framework reads at import (Keras' backend).
        isolated: run in a worker process of its own (one per :attr:`process_key`), so a crash
            fails only its tests and frameworks never share a process. The built-in reference is
            the only implementation that runs in the pytest process.
        device: where the layers run (``cpu``, ``cuda``); an implementation on a device this machine
            lacks is selected only when asked for by name (``conformance.harness.registry.select``).
        benchmarked: timed by the benchmarks by default (``benchmarks/common.py``); False for a variant
            that runs the same kernels as another (PyTorch's functional form, the reference per convention).
        derivation: how a transform made it from other implementations (:class:`Derivation`), or None.
        families: the check families (``conformance/checks/test_<family>.py``) it runs; None: every family
            that is not a transform's own (:data:`conformance.harness.plugin` routes the rest by this).
        exclusive: its checks start many processes of their own (a world of rank processes): a run spread
            over several processes runs them with no other group's processes alive (``harness/groups.py``).
        capabilities: see :class:`Capabilities`.
        locator: ``module`` or ``module:attribute`` it was loaded from (set by the loader), so a
            worker process can load the same implementation.
        seeded_bug: the bug it carries on purpose (a mutant of the suite's self-test), None for a real
            implementation; the report's kill matrix lists the implementations that have one.
    """

    name: str
    family: str
    framework: str
    convention: Convention
    operator: Operator = BATCHNORM
    requires: tuple[str, ...] = ()
    process_env: Mapping[str, str] = MappingProxyType({})
    isolated: bool = True
    capabilities: Capabilities = Capabilities()
    locator: str = ""
    seeded_bug: SeededBug | None = None
    device: str = "cpu"
    benchmarked: bool = True
    derivation: Derivation | None = None
    families: frozenset[str] | None = None
    exclusive: bool = False

    @property
    def process_key(self) -> tuple:
        """Implementations with equal keys share a process (the suite's workers, the benchmarks' groups):
        one adapter locator, family and import-time environment (a Keras backend)."""
        return (self.locator, self.family, tuple(sorted(self.process_env.items())))

    @property
    def group(self) -> str:
        """The checks a run keeps together (in one process, one after another): those needing the same
        worker process; an in-process implementation's checks are a group of their own."""
        if not self.isolated:
            return self.name
        locator, family, env = self.process_key
        return "|".join([locator, family, *(f"{k}={v}" for k, v in env)])

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """``(id, case)`` for every case ``check`` runs on this implementation: its operator's grid for it
        (:meth:`Operator.cases`); a transform may narrow or adapt it."""
        return self.operator.cases(check)

    def missing(self) -> str | None:
        """A skip reason naming the first missing module, or None when everything imports."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{self.name}: {module} is not installed"
        return None

    def unsupported(self, spec: LayerSpec) -> list[str]:
        """What of ``spec`` it does not support, each named (its capabilities, and what its convention record
        cannot express: :attr:`Operator.unexpressible`; override for finer rules); empty when ``spec`` can be
        built. The report counts skips per name."""
        return self.capabilities.unsupported(spec) + self.operator.unexpressible(spec, self.convention)

    def reference(self, case: Case, spec: LayerSpec) -> ReferenceSide:
        """What a Mirror holds this implementation's layer for ``case``, built with ``spec``, to: its
        operator's reference in its convention. A transform whose layer does more than one layer's calls
        (porting, sharding) returns the reference side of what it does."""
        return self.operator.reference(case, self.convention, spec)

    def conventions(self) -> tuple[Convention, ...]:
        """Every convention record its checks involve (the report lists them): its own (a ported pair: its
        source's and its target's)."""
        return (self.convention,)

    def deviation_names(self) -> tuple[str, ...]:
        """The names whose deviation registry entries apply to this implementation: its own (a ported pair
        adds its framework implementation's)."""
        return (self.name,)

    def parameters(self) -> dict[str, object]:
        """Facts about this implementation that every result records beside the case's parameters, and that
        registry entries may match (``when``): none for a plain implementation (a ported pair: its ``source``
        and ``target``)."""
        return {}

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """Versions and settings for the report: at least ``version``; ``backend`` where relevant."""

    @abstractmethod
    def defaults(self) -> dict[str, object]:
        """The framework's own constructor defaults: ``momentum``, ``eps``, ``channel_axis``
        (:data:`reference.REQUIRED` for an argument the constructor requires)."""

    def output_dtype(self, spec: LayerSpec) -> str:
        """The dtype of ``y`` the framework documents for an input of ``spec.dtype``: that dtype, unless the
        framework promotes (Flax infers it from the input's and the parameters' dtypes)."""
        return spec.dtype

    @abstractmethod
    def build(self, spec: LayerSpec) -> Layer:
        """The layer as the framework constructs it with ``spec``'s arguments (the suite checks its initial
        state against the convention: gamma 1, beta 0, the convention's initial running state)."""
