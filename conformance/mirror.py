"""Drive an implementation and the reference in lockstep and compare everything they produce.

The reference layer is built in the implementation's declared convention from the same case. By default
both are given the case's non-trivial state, the reference taking what the implementation actually holds
afterwards (a float16 layer rounds it); with ``constructed=True`` neither is given anything: the state the
implementation was built with is compared with the convention's documented initial state, and the
reference starts from the documented one, never from what the implementation holds. Conventions are
translated, never excused. Every call also checks that the caller's arrays come back unmodified. Every
comparison is recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import reference

from .adapters.base import PER_CHANNEL, Implementation, ImplementationCrashed, State, framework_input
from .cases import Case, dtype_of
from .tolerances import Comparison, Conditioning, RunningTolerance, compare

__all__ = ["Mirror"]

# eps and momentum as held may be stored in float32 (ONNX attributes are): that rounding is allowed.
_HYPERPARAMETER_RTOL = 2.0**-24


def _outcome(call: Callable[[], np.ndarray]) -> np.ndarray | Exception:
    try:
        return call()
    except ImplementationCrashed:
        raise
    except Exception as exc:  # the outcome under test
        return exc


def _as_reference_input(a: np.ndarray) -> np.ndarray:
    """What the reference gets: the caller's array in its own dtype (bfloat16 as float32, exactly), so that
    the reference's own checks answer for integer or boolean input."""
    return framework_input(a)[0]


def _raised(outcome: np.ndarray | Exception) -> str:
    """The exception's type name ("" for a result); one re-raised from another process names its original
    type (``type_name``, as ``conformance.isolation`` sets it)."""
    if not isinstance(outcome, Exception):
        return ""
    return getattr(outcome, "type_name", type(outcome).__name__)


def _describe(outcome: np.ndarray | Exception) -> str:
    if isinstance(outcome, Exception):
        message = getattr(outcome, "message", str(outcome))
        return f"raised {_raised(outcome)}: {message.splitlines()[0][:200] if message else ''}"
    return f"returned an array of shape {np.shape(outcome)}"


class Mirror:
    def __init__(self, impl: Implementation, case: Case, on_compare: Callable[[Comparison], None] | None = None,
                 constructed: bool = False) -> None:
        self.impl, self.case, self.on_compare = impl, case, on_compare
        self.spec = spec = case.spec(impl.convention)
        self.layer = impl.build(spec)
        self.ref = reference.BatchNorm(
            case.num_features, convention=impl.convention, momentum=spec.momentum, eps=spec.eps,
            affine=case.affine, track_running_stats=case.track_running_stats, channel_axis=case.channel_axis,
        )
        self.comparisons: list[Comparison] = []
        self.running_tolerance = RunningTolerance(case.dtype)
        if constructed:
            self.compare_state(exact=True)
            self.compare_hyperparameters()
            return
        self.layer.set_state(State(**case.initial_state()))
        held = self.layer.get_state()
        for name in PER_CHANNEL:
            if getattr(held, name) is not None and getattr(self.ref, name) is not None:
                setattr(self.ref, name, getattr(held, name))

    # -- helpers ---------------------------------------------------------------------------------
    def _last(self, a: np.ndarray) -> np.ndarray:
        """Channels moved to the last axis, so per-channel bounds broadcast."""
        return np.moveaxis(np.asarray(a, dtype=np.float64), self.case.channel_axis, -1)

    def _conditioning(self, x: np.ndarray, training: bool) -> tuple[Conditioning, np.ndarray]:
        ref = self.ref
        x64 = np.asarray(x, dtype=np.float64)
        errors = {}
        if (training and self.case.trainable) or not self.case.track_running_stats:
            mean, var = reference.batch_statistics(x64, self.case.channel_axis)
            n = self.case.values_per_channel
        else:  # the running statistics, with the error the layer's own training steps were allowed in them
            mean, var, n = ref.running_mean.copy(), ref.running_var.copy(), 1
            allowed = self.running_tolerance.accumulated_error
            errors = {"mean_error": allowed("running_mean"), "var_error": allowed("running_var")}
        gamma = ref.gamma if ref.gamma is not None else np.ones(self.case.num_features)
        cond = Conditioning(self.case.dtype, n, mean, var, ref.eps, gamma, self.case.accumulation_dtype, **errors)
        xhat = (self._last(x64) - mean) / cond.sigma
        return cond, xhat

    def _record(self, quantity: str, actual, expected, tolerance) -> None:
        self._add(compare(quantity, actual, expected, tolerance))

    def _add(self, comparison: Comparison) -> None:
        self.comparisons.append(comparison)
        if self.on_compare is not None:
            self.on_compare(comparison)

    def _call(self, method: Callable, *arrays: np.ndarray, training: bool):
        """``method(*arrays, training)``, recording a failure if it modified any of the caller's arrays (then
        restored, so that the reference and the tolerances see the intended input)."""
        pristine = [a.copy() for a in arrays]
        try:
            return method(*arrays, training)
        finally:
            for name, a, p in zip(("x", "dy"), arrays, pristine):
                if a.tobytes() != p.tobytes():
                    changed = int(np.count_nonzero(a.view(np.uint8) != p.view(np.uint8)))
                    note = f"the implementation wrote into the caller's {name} ({changed} bytes changed)"
                    self._add(Comparison(f"{name}_unmodified", False, np.inf, 0.0, 0.0, 0.0, 0, note))
                    np.copyto(a, p)

    def _reference_training(self, training: bool) -> bool:
        return training and self.case.trainable  # Keras: a non-trainable layer runs in inference mode

    def _track_running_tolerance(self, x: np.ndarray, training: bool) -> None:
        if not (self._reference_training(training) and self.case.track_running_stats) or x.size == 0:
            return
        cond, _ = self._conditioning(x, True)
        self.running_tolerance.add_step(cond, self.ref.running_mean, self.ref.running_var, self.case.values_per_channel)

    # -- steps -----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool, may_raise: bool = False) -> None:
        """One forward on both sides. With ``may_raise``, an exception is an outcome to compare (both
        raising agrees, one raising is a failure) instead of an error; a crashed worker still errors."""
        if may_raise:
            observed = _outcome(lambda: self._call(self.layer.forward, x, training=training))
            expected = _outcome(lambda: self.ref.forward(_as_reference_input(x), self._reference_training(training)))
            if self._disagree(observed, expected):
                return
            y, y_ref = observed, expected
        else:
            y = self._call(self.layer.forward, x, training=training)
            y_ref = self.ref.forward(np.asarray(x, np.float64), self._reference_training(training))
        cond, xhat = self._conditioning(x, training)  # inference statistics are unchanged by the call
        self._track_running_tolerance(x, training)
        self._record("y", self._last(y), self._last(y_ref), cond.y(self._last(y_ref), xhat))

    def _disagree(self, observed: object, expected: object) -> bool:
        """Record the outcome when either side raised; True when the step ends there."""
        if not (isinstance(observed, BaseException) or isinstance(expected, BaseException)):
            return False
        agree = isinstance(observed, BaseException) and isinstance(expected, BaseException)
        note = f"implementation {_describe(observed)}; reference {_describe(expected)}"
        self._add(Comparison("outcome", agree, 0.0 if agree else np.inf, 0.0, 0.0, 0.0, 0, note,
                             raised=_raised(observed), reference_raised=_raised(expected)))
        return True

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool, may_raise: bool = False) -> None:
        """One forward and backward on both sides; ``may_raise`` as in :meth:`forward`."""
        if may_raise:
            observed = _outcome(lambda: self._call(self.layer.forward_backward, x, dy, training=training))

            def reference_step() -> tuple:
                y = self.ref.forward(_as_reference_input(x), self._reference_training(training))
                return y, self.ref.backward(_as_reference_input(dy))

            expected = _outcome(reference_step)
            if self._disagree(observed, expected):
                return
            (y, dx, dgamma, dbeta), (y_ref, dx_ref) = observed, expected
        else:
            y, dx, dgamma, dbeta = self._call(self.layer.forward_backward, x, dy, training=training)
            y_ref = self.ref.forward(np.asarray(x, np.float64), self._reference_training(training))
            dx_ref = self.ref.backward(np.asarray(dy, np.float64))
        cond, xhat = self._conditioning(x, training)  # inference statistics are unchanged by the call
        self._track_running_tolerance(x, training)
        dy_last = self._last(dy)
        self._record("y", self._last(y), self._last(y_ref), cond.y(self._last(y_ref), xhat))
        self._record("dx", self._last(dx), self._last(dx_ref), cond.dx(self._last(dx_ref), dy_last, xhat))
        if self.case.affine:
            self._record("dgamma", dgamma, self.ref.dgamma, cond.dgamma(self.ref.dgamma, dy_last, xhat))
            self._record("dbeta", dbeta, self.ref.dbeta, cond.dbeta(self.ref.dbeta, dy_last))
        else:  # no parameters: no gradients for them either
            self._record("dgamma", dgamma, None, 0.0)
            self._record("dbeta", dbeta, None, 0.0)

    def training_step(self, x: np.ndarray, dy: np.ndarray) -> None:
        """A training forward with its backward, where the implementation defines gradients."""
        if self.impl.capabilities.no_gradients:
            self.forward(x, training=True)
        else:
            self.forward_backward(x, dy, training=True)

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]) -> None:
        """Second order in training mode: the layer's Hessian-vector product of ``sum(y * dy)`` along
        ``direction`` (``vx``, ``vgamma``, ``vbeta``) against :func:`reference.hvp_training`."""
        cond, xhat = self._conditioning(x, True)
        vx, vgamma = direction["vx"], direction["vgamma"]
        hvp = self.layer.double_backward(x, dy, vx, vgamma, direction["vbeta"])
        ref = self.ref
        axis = self.case.channel_axis
        expected = reference.hvp_training(np.asarray(dy, np.float64), np.asarray(x, np.float64), ref.gamma, ref.eps,
                                          np.asarray(vx, np.float64), vgamma, axis)
        expected = (self._last(expected[0]), *expected[1:])
        vgamma64 = np.zeros(self.case.num_features) if vgamma is None else np.asarray(vgamma, np.float64)
        tolerances = cond.second_order(self._last(dy), self._last(vx), vgamma64, xhat)
        names = ("hvp_x", "hvp_gamma", "hvp_beta") if self.case.affine else ("hvp_x",)
        for name, actual, want in zip(names, (self._last(hvp[0]), *hvp[1:]), expected):
            self._record(name, actual, want, cond.u * np.abs(want) + tolerances[name])

    def compare_state(self, exact: bool = False) -> None:
        """Parameters (which no forward call may change: exactly), running statistics (within their
        accumulated tolerance, or exactly with ``exact``) and ``num_batches_tracked`` where kept."""
        state = self.layer.get_state()
        for name in PER_CHANNEL:
            expected = getattr(self.ref, name)
            if expected is None or exact or name in ("gamma", "beta"):
                self._record(name, getattr(state, name), expected, 0.0)
                continue
            self._record(name, getattr(state, name), expected, self.running_tolerance.tolerance(name, expected))
        if state.num_batches_tracked is not None:
            same = state.num_batches_tracked == self.ref.num_batches_tracked
            self._add(
                Comparison("num_batches_tracked", same, 0.0 if same else np.inf,
                           float(abs(state.num_batches_tracked - self.ref.num_batches_tracked)), 0.0, 0.0, 0)
            )

    def compare_hyperparameters(self) -> None:
        """The ``eps`` and ``momentum`` the layer holds (where its adapter reports them) against those it was
        built with, within float32 rounding."""
        state = self.layer.get_state()
        if state.eps is None:
            return
        for name, held, built in (("eps", state.eps, self.spec.eps), ("momentum", state.momentum, self.spec.momentum)):
            if held is None or built is None:
                self._record(name, held, built, 0.0)
            else:
                self._record(name, np.float64(held), np.float64(built), _HYPERPARAMETER_RTOL * abs(built))

    def output_policy(self, x: np.ndarray, training: bool) -> None:
        """One forward: ``y`` has the input's shape and the dtype the implementation's policy states."""
        y = self._call(self.layer.forward, x, training=training)
        self.ref.forward(np.asarray(x, np.float64), self._reference_training(training))  # keep the states in step
        want = np.dtype(dtype_of(self.impl.output_dtype(self.spec)))
        for quantity, got, expected in (("y_shape", np.shape(y), x.shape), ("y_dtype", np.asarray(y).dtype, want)):
            same = got == expected
            note = "" if same else f"the implementation returned {got} where {expected} is expected"
            self._add(Comparison(quantity, same, 0.0 if same else np.inf, 0.0, 0.0, 0.0, 0, note))

    # -- verdict ---------------------------------------------------------------------------------
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    def verify(self) -> None:
        """Raise AssertionError with a repro line if any comparison failed."""
        failed = self.failures()
        if failed:
            lines = "\n  ".join(c.describe() for c in failed)
            raise AssertionError(
                f"{self.impl.name} disagrees with the reference ({self.impl.convention} convention) on case "
                f"{self.case.id}:\n  {lines}\n  repro: {self.case!r}"
            )
