"""The adapter protocol: how the suite drives any BatchNorm implementation.

An implementation is an :class:`Implementation` (metadata, capabilities, ``build``); ``build`` turns a
framework-neutral :class:`LayerSpec` into a :class:`Layer`, which takes and returns NumPy arrays. The
suite never imports a framework itself: adapters import theirs inside ``build``/``environment``, so a
missing framework becomes a skip naming the package, never an import error.

Arrays cross the protocol as NumPy: inputs in the case's dtype (``bfloat16`` as ``ml_dtypes.bfloat16``),
per-channel parameters and statistics as float64 of shape (C,), ``y`` in the dtype the framework returns
(:meth:`Implementation.output_dtype` states its policy), gradients in any floating dtype. The contract checks
also hand inputs of other dtypes (integer, boolean): an adapter passes those to its framework as they are,
so that the framework's own response is what is checked (:func:`framework_input`).

A layer may also be :class:`Benchmarkable` (optional): the benchmarks (``benchmarks/``) then time its
operations on framework-native arrays instead of through the NumPy conversions.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "ALL_DTYPES", "OPERATIONS", "PER_CHANNEL", "Benchmarkable", "Capabilities", "DoubleBackward", "Implementation",
    "ImplementationCrashed", "Layer", "LayerSpec", "SeededBug", "State", "World", "as_numpy_float",
    "framework_input",
]

# The dtype vocabulary of cases, capabilities and tolerances (``cases.dtype_of`` maps each to NumPy).
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

# What the benchmarks time: a training-mode forward, an inference-mode forward, and a training-mode
# forward followed by the backward (dx, dgamma, dbeta).
OPERATIONS = ("forward_training", "forward_inference", "forward_backward")

# Optional behaviours an implementation may declare in Capabilities.features.
FEATURES = frozenset({"affine_false", "no_running_stats", "momentum_none", "trainable_false"})


def as_numpy_float(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype every framework's from-NumPy conversion accepts: ``bfloat16`` (an ml_dtypes
    type NumPy does not know natively) becomes float32, which holds its values exactly."""
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def framework_input(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(array, cast)``: what an adapter hands its framework's from-NumPy conversion, and whether to cast
    it to the layer's dtype afterwards. Floating input (bfloat16 through float32, exactly) is cast; integer
    and boolean input reaches the framework in its own dtype, so that its own checks answer for it."""
    if x.dtype.kind in "biu":
        return x, False
    return as_numpy_float(x), True


@dataclass(frozen=True)
class LayerSpec:
    """What to build, in framework-neutral terms.

    ``momentum`` is the framework's own constructor argument, in its implementation's convention (the
    suite converts a case's ``new_batch_weight`` with :func:`reference.convert_momentum`: the same number
    for PyTorch, ``1 - w`` for Keras, ONNX and Flax); ``None`` is PyTorch's cumulative average.
    ``channel_axis`` is 1 (channels first) or -1 (channels last). ``options`` are framework options
    that change the numerics, as sorted ``(name, value)`` pairs (e.g. ``("use_fast_variance", False)``);
    only implementations declaring an option in :attr:`Capabilities.options` are built with it. The
    value ``"input"`` of a dtype option stands for the input's dtype (``dtype``).
    """

    num_features: int
    rank: int
    channel_axis: int
    eps: float
    momentum: float | None
    affine: bool = True
    track_running_stats: bool = True
    trainable: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    options: tuple[tuple[str, object], ...] = ()


def _per_channel() -> np.ndarray | None:
    return field(default=None, metadata={"per_channel": True})


@dataclass
class State:
    """Parameters and running statistics as float64 arrays of shape (C,), ``None`` where absent; and the
    ``eps`` and ``momentum`` the layer holds, read-only facts (``set_state`` ignores them). ``eps=None``: the
    adapter does not report either; otherwise ``momentum`` is the layer's own (``None``: PyTorch's
    cumulative average)."""

    gamma: np.ndarray | None = _per_channel()
    beta: np.ndarray | None = _per_channel()
    running_mean: np.ndarray | None = _per_channel()
    running_var: np.ndarray | None = _per_channel()
    num_batches_tracked: int | None = None
    eps: float | None = None
    momentum: float | None = None


# The per-channel arrays of State (parameters, then running statistics), derived from its fields.
PER_CHANNEL = tuple(f.name for f in fields(State) if f.metadata.get("per_channel"))


class ImplementationCrashed(RuntimeError):
    """The process running an implementation died: never an outcome a check compares, always a crash."""


@runtime_checkable
class Layer(Protocol):
    """One built layer. Every method takes and returns NumPy arrays."""

    def set_state(self, state: State) -> None:
        """Assign every field of ``state`` that is not None."""

    def get_state(self) -> State:
        """Current parameters, running statistics and (if kept) ``num_batches_tracked``."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """One forward call, with the framework's usual side effects (running-stat updates)."""

    def forward_backward(
        self, x: np.ndarray, dy: np.ndarray, training: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """One forward call and the gradients of ``sum(y * dy)``: ``(y, dx, dgamma, dbeta)``."""


@runtime_checkable
class DoubleBackward(Protocol):
    """Optional for a :class:`Layer` whose implementation declares :attr:`Capabilities.double_backward`."""

    def double_backward(
        self, x: np.ndarray, dy: np.ndarray, vx: np.ndarray, vgamma: np.ndarray | None, vbeta: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Second order in training mode, through the framework's own autodiff (as PyTorch's gradgradcheck
        differentiates its modules): the gradients ``(dx, dgamma, dbeta)`` of ``sum(y * dy)``
        differentiated along ``(vx, vgamma, vbeta)``, i.e. the Hessian-vector product ``(hvp_x, hvp_gamma,
        hvp_beta)`` (:func:`reference.hvp_training`); None for absent parameters. Reverse over reverse
        (``v`` as the cotangent of the gradients) gives the same, the Hessian being symmetric."""


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
        ``y``, or ``(y, dx, dgamma, dbeta)`` (None for absent parameters).
        """


@dataclass(frozen=True)
class World:
    """A data-parallel world a distributed implementation runs on (``conformance/world/``).

    ``engine`` is the framework's distribution API (``jax.shard_map``, ``tf.distribute.MirroredStrategy``),
    ``transport`` what carries its collectives, ``world_size`` the number of ranks. ``parameter_gradients``
    says what each rank's dgamma/dbeta hold after a backward: ``"local"``, its own shard's share (the
    framework sums them across replicas when it applies them), or ``"sum"``, already the global sum.
    """

    engine: str
    transport: str
    world_size: int
    parameter_gradients: str
    # Also trained through the framework's own training loop (``model.fit``): the layer has ``fit``.
    model_fit: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What an implementation supports; anything else is skipped with a reason naming it."""

    dtypes: frozenset[str] = frozenset(ALL_DTYPES)
    ranks: frozenset[int] = frozenset({2, 3, 4, 5})
    channel_axes: frozenset[int] = frozenset({1, -1})
    devices: frozenset[str] = frozenset({"cpu"})
    features: frozenset[str] = FEATURES
    # Names of the LayerSpec.options the implementation takes (each a constructor argument of its own).
    options: frozenset[str] = frozenset()
    # Why ``forward_backward`` cannot run (e.g. ONNX defines no gradients); empty when it can.
    no_gradients: str = ""
    # Why a bad input's outcome cannot be judged (it depends on the process's history); empty when it can.
    no_bad_input: str = ""
    # The layer has ``double_backward`` (:class:`DoubleBackward`); without it second-order checks skip.
    double_backward: bool = False
    # Runs on a world of ranks (synchronized BatchNorm): only the checks of ``checks/test_synchronized.py``.
    world: World | None = None

    def unsupported(self, spec: LayerSpec) -> list[str]:
        """What of ``spec`` is not supported (``dtype float16``, ``affine=False``, ...); empty when none."""
        checks = (
            (spec.dtype in self.dtypes, f"dtype {spec.dtype}"),
            (spec.rank in self.ranks, f"rank {spec.rank} input"),
            (spec.channel_axis in self.channel_axes, f"channel_axis={spec.channel_axis}"),
            (spec.device in self.devices, f"device {spec.device}"),
            (spec.affine or "affine_false" in self.features, "affine=False"),
            (spec.track_running_stats or "no_running_stats" in self.features, "track_running_stats=False"),
            (spec.momentum is not None or "momentum_none" in self.features, "momentum=None"),
            (spec.trainable or "trainable_false" in self.features, "trainable=False"),
            *((name in self.options, f"option {name}") for name, _ in spec.options),
        )
        return [what for ok, what in checks if not ok]


@dataclass(frozen=True)
class SeededBug:
    """A bug an implementation carries on purpose, for the suite's mutation self-test (``mutants/``): the
    bug class, where a real implementation had it, and the upstream report."""

    bug: str
    origin: str
    link: str


class Implementation(ABC):
    """One implementation under test. Subclass it in one adapter module (see ``adapters/__init__``).

    Class attributes:
        name: unique id, ``family.variant`` (e.g. ``torch.BatchNorm2d``).
        family: group run together (a tox environment): ``reference``, ``torch``, ``keras``, ...
        framework: the Python distribution whose version is reported (e.g. ``torch``).
        convention: the :data:`reference.CONVENTIONS` name its running statistics follow.
        requires: modules that must be importable, checked before anything runs.
        process_env: environment variables the framework reads at import (Keras' backend).
        isolated: run in a worker process of its own (one per :attr:`process_key`), so a crash
            fails only its tests and frameworks never share a process. The built-in reference is
            the only implementation that runs in the pytest process.
        device: where the layers run (``cpu``, ``cuda``); an implementation on a device this machine
            lacks is selected only when asked for by name (``conformance.adapters.select``).
        benchmarked: timed by the benchmarks by default (``benchmarks/common.py``); False for a variant
            that runs the same kernels as another (PyTorch's functional form, the reference per convention).
        compiled_from: the eager implementation whose layer this one runs through a compiler
            (``torch.compile``, XLA, ``jax.jit``); empty for the rest. It holds the same variables, so
            porting pairs leave it out (``checks/test_porting.py``).
        capabilities: see :class:`Capabilities`.
        locator: ``module`` or ``module:attribute`` it was loaded from (set by the loader), so a
            worker process can load the same implementation.
        seeded_bug: the bug it carries on purpose (a mutant of the suite's self-test), None for a real
            implementation; the report's kill matrix lists the implementations that have one.
    """

    name: str
    family: str
    framework: str
    convention: str
    requires: tuple[str, ...] = ()
    process_env: Mapping[str, str] = MappingProxyType({})
    isolated: bool = True
    capabilities: Capabilities = Capabilities()
    locator: str = ""
    seeded_bug: SeededBug | None = None
    device: str = "cpu"
    benchmarked: bool = True
    compiled_from: str = ""

    @property
    def process_key(self) -> tuple:
        """Implementations with equal keys share a process (the suite's workers, the benchmarks' groups):
        one adapter locator, family and import-time environment (a Keras backend)."""
        return (self.locator, self.family, tuple(sorted(self.process_env.items())))

    def missing(self) -> str | None:
        """A skip reason naming the first missing module, or None when everything imports."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{self.name}: {module} is not installed"
        return None

    def unsupported(self, spec: LayerSpec) -> list[str]:
        """What of ``spec`` it does not support, each named (capabilities by default; override for finer
        rules); empty when ``spec`` can be built. The report counts skips per name."""
        return self.capabilities.unsupported(spec)

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """Versions and settings for the report: at least ``version``; ``backend`` where relevant."""

    @abstractmethod
    def defaults(self) -> dict[str, float | int]:
        """The framework's own constructor defaults: ``momentum``, ``eps``, ``channel_axis``."""

    def output_dtype(self, spec: LayerSpec) -> str:
        """The dtype of ``y`` the framework documents for an input of ``spec.dtype``: that dtype, unless the
        framework promotes (Flax infers it from the input's and the parameters' dtypes)."""
        return spec.dtype

    @abstractmethod
    def build(self, spec: LayerSpec) -> Layer:
        """The layer as the framework constructs it with ``spec``'s arguments (the suite checks its initial
        state against the convention: gamma 1, beta 0, running mean 0, running variance 1)."""
