"""Purpose-built implementations for the harness's own tests (``tests/test_harness_*.py``).

Each one is wrong (or right) in one known way, so a meta-test can assert that the suite notices exactly
that. They live here, not in ``conformance/adapters/``, where built-in discovery would pick them up.
The suite loads them by locator (``--impl fake_adapters:CRASHING``); this module is importable as
``fake_adapters`` because pytest puts ``tests/`` on ``sys.path`` (the default ``prepend`` import mode
that also imports ``tests/conftest.py``), and a worker process inherits that path as ``PYTHONPATH``.
"""

from __future__ import annotations

import ctypes
import os
import resource

import numpy as np

from conformance.adapters.base import Capabilities, LayerSpec, State
from conformance.adapters.reference_impl import ReferenceImplementation, ReferenceLayer
from conformance.core.dtypes import dtype_of
from reference import Convention, get_convention


class ReferenceAs(ReferenceImplementation):
    """The reference running convention ``runs`` while declaring ``convention`` to the suite.

    ``runs == convention`` is an honest implementation; anything else is the classic porting bug of a
    layer built with one framework's momentum/Bessel rules and checked under another's.
    """

    def __init__(
        self, name: str, convention: str = "torch", *, runs: str | None = None, family: str | None = None,
        isolated: bool = False, requires: tuple[str, ...] = (),
    ) -> None:
        super().__init__(get_convention(runs or convention))  # capabilities of the rules it really runs
        self.runs = self.convention
        self.name, self.family = name, family or name.partition(".")[0]
        self.convention = get_convention(convention)
        self.isolated, self.requires = isolated, requires

    def build(self, spec: LayerSpec) -> ReferenceLayer:
        return ReferenceLayer(spec, self.runs)


# ---- crashing --------------------------------------------------------------------------------------

def _segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, as a buggy native kernel would


# How each crash ends the worker, and the exit code the harness must then report (negative: signal).
_CRASHES = {"exit": (lambda: os._exit(3), 3), "abort": (os.abort, -6), "segfault": (_segfault, -11)}
CRASH_EXIT_CODES = {mode: code for mode, (_, code) in _CRASHES.items()}


class _CrashingLayer(ReferenceLayer):
    """Builds, takes and gives state normally; dies in ``forward``, the first call that computes."""

    def __init__(self, spec: LayerSpec, mode: str) -> None:
        super().__init__(spec, get_convention("torch"))
        self.mode = mode

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test's directory
        _CRASHES[self.mode][0]()
        raise AssertionError("unreachable: the crash ends the process")

    def forward_backward(self, x, dy, training):
        return self.forward(x, training)


class _Crashing(ReferenceAs):
    def __init__(self, mode: str) -> None:
        # One family for all modes: they share one worker, which must be restarted after each crash.
        super().__init__(f"crash.{mode}", "torch", isolated=True)
        self.mode = mode

    def build(self, spec: LayerSpec) -> _CrashingLayer:
        return _CrashingLayer(spec, self.mode)


CRASHING = [_Crashing(mode) for mode in _CRASHES]
# The reference in a worker of its own family: it must keep working while a crashing family dies.
HEALTHY = ReferenceAs("healthy.torch", "torch", isolated=True)

# ---- conventions -----------------------------------------------------------------------------------

KERAS_DECLARED_TORCH = ReferenceAs("wrong.keras_as_torch", "torch", runs="keras")
KERAS_DECLARED_KERAS = ReferenceAs("honest.keras", "keras")

# ---- loading -------------------------------------------------------------------------------------

class _NoCrossTermLayer(ReferenceLayer):
    """A double backward that leaves out the direction's gamma part (``vgamma``): the mixed x-gamma terms of
    the Hessian, a term an autodiff rule for a fused kernel can drop."""

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        return super().double_backward(x, dy, vx, None if vgamma is None else np.zeros_like(vgamma), vbeta)


class _NoCrossTerm(ReferenceAs):
    def build(self, spec: LayerSpec) -> _NoCrossTermLayer:
        return _NoCrossTermLayer(spec, self.runs)


NO_CROSS_TERM = _NoCrossTerm("wrong.no_cross_term")


class _InPlaceLayer(ReferenceLayer):
    """Returns the right ``y`` but also leaves it in the caller's ``x`` (an in-place kernel's scratch)."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = super().forward(x, training)
        x[...] = y.astype(x.dtype)
        return y


class _InPlace(ReferenceAs):
    def build(self, spec: LayerSpec) -> ReferenceLayer:
        return _InPlaceLayer(spec, self.runs)


class _OffByOneLayer(ReferenceLayer):
    """``y + 1``, the caller's arrays left alone: a wrong output, not a modified input."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return super().forward(x, training) + 1

    def forward_backward(self, x, dy, training):
        y, *gradients = super().forward_backward(x, dy, training)
        return (y + 1, *gradients)


class _OffByOne(ReferenceAs):
    def build(self, spec: LayerSpec) -> ReferenceLayer:
        return _OffByOneLayer(spec, self.runs)


OFF_BY_ONE = _OffByOne("wrong.off_by_one")
IN_PLACE = _InPlace("wrong.in_place")
IN_PLACE_ISOLATED = _InPlace("wrong.in_place_isolated", isolated=True)

MISSING_MODULE = "bn_conformance_meta_no_such_module"
NEEDS_MISSING_MODULE = ReferenceAs("needs.missing", isolated=True, requires=("numpy", MISSING_MODULE))
NOT_IMPLEMENTATIONS = [HEALTHY, "reference.torch"]  # a name where an instance belongs
NOT_ITERABLE = 42
DUPLICATE_NAMES = [ReferenceAs("dup.torch"), ReferenceAs("dup.torch")]
SHADOWS_BUILTIN = ReferenceAs("reference.torch")


def returns_none() -> None:
    """A factory that forgot its ``return``."""


# ---- numerics ------------------------------------------------------------------------------------

_ARRAYS = ("gamma", "beta", "running_mean", "running_var")


class NumpyBatchNorm:
    """BatchNorm for channels-last-viewed NumPy arrays, computed in ``compute`` (a dtype name, or
    ``None`` for the input's own dtype), with a two-pass or a one-pass (``E[x**2] - E[x]**2``) variance.
    Parameters and statistics are held in the compute dtype, as a framework holds its variables; the
    running state follows ``convention`` (a plain record: averages of the mean and the variance, and a
    counter where it keeps one)."""

    def __init__(self, spec: LayerSpec, convention: Convention, one_pass: bool, compute: str | None) -> None:
        self.spec, self.conv, self.one_pass = spec, convention, one_pass
        self.dtype = np.dtype(compute) if compute else dtype_of(spec.dtype)
        c = spec.num_features
        self.gamma, self.beta = np.ones(c, self.dtype), np.zeros(c, self.dtype)
        self.running_mean, self.running_var = np.zeros(c, self.dtype), np.ones(c, self.dtype)
        self.counter = 0

    def set_state(self, state: State) -> None:
        for name in _ARRAYS:
            if state.get(name) is not None:
                setattr(self, name, np.asarray(state[name]).astype(self.dtype))
        if self.conv.counter and state.get(self.conv.counter) is not None:
            self.counter = int(state[self.conv.counter])

    def get_state(self) -> State:
        counter = {self.conv.counter: self.counter} if self.conv.counter else {}
        return State(**{name: np.asarray(getattr(self, name), np.float64) for name in _ARRAYS}, **counter)

    def _statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes, dtype=self.dtype)
        if self.one_pass:
            return mean, (x * x).mean(axis=axes, dtype=self.dtype) - mean * mean
        return mean, ((x - mean) ** 2).mean(axis=axes, dtype=self.dtype)

    def _normalize(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, np.ndarray]:
        """``xhat`` (channels last, in the compute dtype) and ``1 / sigma``; updates the statistics."""
        x = np.moveaxis(x.astype(self.dtype), self.spec.channel_axis, -1)
        if training:
            mean, var = self._statistics(x)
            n = x.size // self.spec.num_features
            self.counter += 1
            w = self.dtype.type(self.conv.new_batch_weight(self.spec.momentum, self.counter))
            stored_var = var * self.dtype.type(n / (n - self.conv.running_var_ddof))
            self.running_mean = (1 - w) * self.running_mean + w * mean
            self.running_var = (1 - w) * self.running_var + w * stored_var
        else:
            mean, var = self.running_mean, self.running_var
        inv_sigma = 1 / np.sqrt(var + self.dtype.type(self.spec.eps))
        return (x - mean) * inv_sigma, inv_sigma

    # A one-pass variance may come out negative (NaN output): that is the behaviour under test, and a
    # framework would not warn about it either.
    @np.errstate(all="ignore")
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        xhat, _ = self._normalize(x, training)
        return np.moveaxis(xhat * self.gamma + self.beta, -1, self.spec.channel_axis).astype(x.dtype)

    @np.errstate(all="ignore")
    def forward_backward(self, x, dy, training):
        xhat, inv_sigma = self._normalize(x, training)
        dy = np.moveaxis(dy.astype(self.dtype), self.spec.channel_axis, -1)
        axes = tuple(range(dy.ndim - 1))
        dgamma, dbeta = (dy * xhat).sum(axis=axes, dtype=self.dtype), dy.sum(axis=axes, dtype=self.dtype)
        dxhat = dy * self.gamma
        if training:
            dx = (dxhat - dxhat.mean(axis=axes) - xhat * (dxhat * xhat).mean(axis=axes)) * inv_sigma
        else:
            dx = dxhat * inv_sigma
        y = xhat * self.gamma + self.beta
        back = [np.moveaxis(a, -1, self.spec.channel_axis).astype(x.dtype) for a in (y, dx)]
        return (*back, np.asarray(dgamma, np.float64), np.asarray(dbeta, np.float64))


class NumpyImplementation(ReferenceAs):
    """:class:`NumpyBatchNorm` behind the protocol, under the torch convention."""

    def __init__(self, name: str, *, one_pass: bool = False, compute: str | None = None) -> None:
        super().__init__(name, "torch")
        self.one_pass, self.compute = one_pass, compute
        self.capabilities = Capabilities(features=frozenset())

    def build(self, spec: LayerSpec) -> NumpyBatchNorm:
        return NumpyBatchNorm(spec, self.convention, self.one_pass, self.compute)


# ---- conventions, declared ---------------------------------------------------------------------------

CONVENTION_BY_NAME = ReferenceAs("named.keras", "keras")
CONVENTION_BY_NAME.convention = "keras"  # a built-in's name where its record belongs: the loader resolves it
UNKNOWN_CONVENTION = ReferenceAs("bad.caffe")
UNKNOWN_CONVENTION.convention = "caffe"
CONVENTION_NOT_A_RECORD = ReferenceAs("bad.number")
CONVENTION_NOT_A_RECORD.convention = 3
# Keras' rules under Keras' name, but another record (a Bessel-corrected variance): the name is taken.
IMPOSTOR_KERAS = ReferenceAs("impostor.keras", Convention("keras", "old", 0.99, 1e-3, -1, running_var_ddof=1))
