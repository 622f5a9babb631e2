"""Drive an implementation and its reference side in lockstep and compare everything they produce.

The reference side is the implementation's (:meth:`Implementation.reference`: its operator's reference in
its convention record, or a transform's). By default both start from the case's non-trivial state, the
reference taking what the implementation actually holds of it afterwards (a float16 layer rounds it); with
``constructed=True`` neither is given anything: the state the implementation was built with is compared
with the convention's documented initial state, and the reference starts from the documented one, never
from what the implementation holds. Conventions are translated, never excused. Every call also checks that
the caller's arrays come back unmodified. Every comparison is recorded, named as the operator names its
outputs (``y``, ``dx``, ``d<parameter>``, ``hvp_x``, ``hvp_<parameter>``, the state's fields).

A transform's layer may produce more than a call's outputs (the shard transform: every rank's ``y`` and
gradients, ``rank1.dx``, and the cross-rank reductions the call issued, ``collectives``): where its reference
side expects quantities that a call's outputs do not name, the Mirror takes them from the layer's
``observed()`` (a dict by name, of the last call), and judges each with its expectation's ``judge``
(:class:`~conformance.core.comparison.Expected`, :class:`~conformance.core.comparison.ExpectedCount`). State
fields are whatever ``get_state`` names (``rank1.running_mean``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..adapters.base import Implementation, ImplementationCrashed
from ..core.case import Case
from ..core.comparison import Comparison, Expected, compare, fact
from ..core.dtypes import dtype_of
from ..core.state import State
from .aliasing import detaching

__all__ = ["Mirror"]


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except ImplementationCrashed:
        raise
    except Exception as exc:  # the outcome under test
        return exc


def _raised(outcome: object) -> str:
    """The exception's type name ("" for a result); one re-raised from another process names its original
    type (``type_name``, as ``conformance.harness.isolation`` sets it)."""
    if not isinstance(outcome, Exception):
        return ""
    return getattr(outcome, "type_name", type(outcome).__name__)


def _describe(outcome: object) -> str:
    if isinstance(outcome, Exception):
        message = getattr(outcome, "message", str(outcome))
        return f"raised {_raised(outcome)}: {message.splitlines()[0][:200] if message else ''}"
    return "returned"


class Mirror:
    def __init__(self, impl: Implementation, case: Case, on_compare: Callable[[Comparison], None] | None = None,
                 constructed: bool = False, aliasing: bool = False) -> None:
        """``aliasing=True``: the caller writes into every array it exchanged with the layer once a call
        returned (:mod:`.aliasing`), so that shared memory shows in later results."""
        self.impl, self.case, self.on_compare = impl, case, on_compare
        self.operator = impl.operator
        self.spec = case.spec(impl.convention)
        self.layer = impl.build(self.spec)
        if aliasing:
            self.layer = detaching(self.layer)
        self.ref = impl.reference(case, self.spec)
        self.comparisons: list[Comparison] = []
        if constructed:
            self.compare_state(exact=True)
            self.compare_hyperparameters()
            return
        self.assign(case.initial_state(impl.convention))

    def assign(self, given: dict[str, object]) -> None:
        """Give the layer the state fields ``given``, and the reference what the layer holds of them
        afterwards (a float16 layer rounds them)."""
        self.layer.set_state(State(**given))
        held = self.layer.get_state()
        self.ref.assign(State(**{name: held.get(name) for name in given}))

    # -- recording -------------------------------------------------------------------------------
    def _add(self, comparison: Comparison) -> None:
        self.comparisons.append(comparison)
        if self.on_compare is not None:
            self.on_compare(comparison)

    def _compare(self, observed: dict[str, object], expected: dict[str, Expected]) -> None:
        """Every quantity the reference side expects, against what the layer gave (``None``: nothing): the
        call's outputs, and where more is expected, what the layer observed in the call (``observed()``)."""
        if not expected.keys() <= observed.keys():
            observed = {**self.layer.observed(), **observed}
        for quantity, want in expected.items():
            self._add(want.judge(quantity, observed.get(quantity)))

    def _named(self, names: tuple[str, ...], outputs: object, call: str) -> dict[str, object] | None:
        """The layer's outputs by the operator's names; a wrong number of them is recorded as a failure."""
        outputs = tuple(outputs)
        if len(outputs) != len(names):
            self._add(fact(f"{call}_outputs", False, f"{call} returned {len(outputs)} values, the protocol has "
                                                     f"{len(names)}: {', '.join(names)}"))
            return None
        return dict(zip(names, outputs))

    def _call(self, method: Callable, *arrays: np.ndarray, training: bool) -> object:
        """``method(*arrays, training)``, recording a failure if it modified any of the caller's arrays (then
        restored, so that the reference and the tolerances see the intended input)."""
        pristine = [a.copy() for a in arrays]
        try:
            return method(*arrays, training)
        finally:
            for name, a, p in zip(("x", "dy"), arrays, pristine):
                if a.tobytes() != p.tobytes():
                    changed = int(np.count_nonzero(a.view(np.uint8) != p.view(np.uint8)))
                    self._add(fact(f"{name}_unmodified", False,
                                   f"the implementation wrote into the caller's {name} ({changed} bytes changed)"))
                    np.copyto(a, p)

    def _disagree(self, observed: object, expected: object) -> bool:
        """Record the outcome when either side raised; True when the step ends there."""
        if not (isinstance(observed, BaseException) or isinstance(expected, BaseException)):
            return False
        agree = isinstance(observed, BaseException) and isinstance(expected, BaseException)
        self._add(fact("outcome", agree, f"implementation {_describe(observed)}; reference {_describe(expected)}",
                       raised=_raised(observed), reference_raised=_raised(expected)))
        return True

    def _step(self, call: Callable[[], object], reference: Callable[[], dict[str, Expected]], may_raise: bool
              ) -> tuple[object, dict[str, Expected]] | None:
        """Both sides of one step; with ``may_raise`` an exception is an outcome to compare (both raising
        agrees, one raising is a failure, and the step ends there) instead of an error; a crashed worker
        still errors."""
        if not may_raise:
            return call(), reference()
        observed, expected = _outcome(call), _outcome(reference)
        return None if self._disagree(observed, expected) else (observed, expected)

    # -- steps -----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool, may_raise: bool = False) -> None:
        """One forward on both sides."""
        step = self._step(lambda: self._call(self.layer.forward, x, training=training),
                          lambda: self.ref.forward(x, training), may_raise)
        if step is not None:
            self._compare({"y": step[0]}, step[1])

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool, may_raise: bool = False) -> None:
        """One forward and backward on both sides."""
        step = self._step(lambda: self._call(self.layer.forward_backward, x, dy, training=training),
                          lambda: self.ref.forward_backward(x, dy, training), may_raise)
        if step is not None and (observed := self._named(self.operator.gradients, step[0], "forward_backward")):
            self._compare(observed, step[1])

    def leaves_inputs(self, x: np.ndarray, dy: np.ndarray, training: bool) -> None:
        """One call (forward and backward, or forward where the layer has no gradients) judged only on the
        caller's arrays: its outputs are the other checks' to judge, so that a wrong output never reads as
        a modified input."""
        before = len(self.comparisons)
        if self.impl.capabilities.no_gradients:
            arrays = {"x": x}
            self._call(self.layer.forward, x, training=training)
        else:
            arrays = {"x": x, "dy": dy}
            self._call(self.layer.forward_backward, x, dy, training=training)
        modified = {c.quantity for c in self.comparisons[before:]}
        for name in arrays:
            if f"{name}_unmodified" not in modified:
                self._add(fact(f"{name}_unmodified", True, f"the caller's {name} is bitwise as it was"))

    def training_step(self, x: np.ndarray, dy: np.ndarray) -> None:
        """A training forward with its backward, where the implementation defines gradients."""
        if self.impl.capabilities.no_gradients:
            self.forward(x, training=True)
        else:
            self.forward_backward(x, dy, training=True)

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]) -> None:
        """Second order in training mode: the layer's Hessian-vector product of ``sum(y * dy)`` along
        ``direction`` (``vx`` and ``v<parameter>``) against the reference's."""
        vparams = [direction[f"v{p}"] for p in self.operator.parameters]
        outputs = self.layer.double_backward(x, dy, direction["vx"], *vparams)
        if (observed := self._named(self.operator.second_order, outputs, "double_backward")) is not None:
            self._compare(observed, self.ref.double_backward(x, dy, direction))

    def compare_state(self, exact: bool = False) -> None:
        """Every field of the state the reference side keeps, within the tolerance its steps allow (``exact``:
        none). A field the implementation does not report is compared where the reference marks it optional
        (a batch counter) only if reported."""
        held = self.layer.get_state()
        for name, want in self.ref.state(exact).items():
            if not (want.optional and held.get(name) is None):
                self._add(want.judge(name, held.get(name)))

    def compare_hyperparameters(self) -> None:
        """What the layer holds of how it was built (``eps``, ``momentum``; an exported graph's node counts)
        against what its reference side states, where its adapter reports any of it."""
        held, expected = self.layer.get_state(), self.ref.hyperparameters()
        if all(held.get(name) is None for name in expected):
            return
        for name, want in expected.items():
            value = held.get(name)
            self._add(compare(name, None if value is None else np.float64(value), want.value, want.tolerance))

    def output_policy(self, x: np.ndarray, training: bool) -> None:
        """One forward: ``y`` has the input's shape and the dtype the implementation's policy states."""
        y = self._call(self.layer.forward, x, training=training)
        self.ref.forward(x, training)  # keep the states in step
        want = np.dtype(dtype_of(self.impl.output_dtype(self.spec)))
        for quantity, got, expected in (("y_shape", np.shape(y), x.shape), ("y_dtype", np.asarray(y).dtype, want)):
            same = got == expected
            self._add(fact(quantity, same, "" if same else f"the implementation returned {got} where {expected} "
                                                           "is expected"))

    # -- verdict ---------------------------------------------------------------------------------
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    def verify(self) -> None:
        """Raise AssertionError with a repro line if any comparison failed."""
        failed = self.failures()
        if failed:
            lines = "\n  ".join(c.describe() for c in failed)
            raise AssertionError(
                f"{self.impl.name} disagrees with the reference ({self.impl.convention.name} convention) on case "
                f"{self.case.id}:\n  {lines}\n  repro: {self.case!r}"
            )
