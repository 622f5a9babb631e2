"""Drive a world of ranks and the reference's synchronized specification in lockstep.

Like :class:`~conformance.mirror.Mirror` for one layer: the reference runs on the concatenated global
batch (:mod:`reference.sharding`) in the implementation's convention, and every rank's output, gradients
and running statistics are compared with what that rank must hold. Tolerances are those of the global
batch (:mod:`conformance.tolerances`); every comparison is recorded, its quantity prefixed by the rank
(``rank1.dx``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import reference
from reference.sharding import split_batch, synchronized_training

from ..adapters.base import Implementation, State
from ..core.comparison import Comparison, compare
from ..operators.batchnorm.cases import BatchNormCase as Case
from ..operators.batchnorm.tolerances import Conditioning, RunningTolerance

__all__ = ["WorldMirror"]


class WorldMirror:
    def __init__(self, impl: Implementation, case: Case, sizes: tuple[int, ...],
                 on_compare: Callable[[Comparison], None]) -> None:
        self.impl, self.case, self.sizes, self.on_compare = impl, case, sizes, on_compare
        self.world = impl.world
        self.spec = case.spec(impl.convention)
        self.layer = impl.build(self.spec)
        state = case.initial_state(impl.convention)
        self.layer.set_state(State(**state))
        self.gamma, self.beta = state.get("gamma"), state.get("beta")
        self.running = {k: state[k].copy() for k in ("running_mean", "running_var")}
        self.steps = 0
        self.running_tolerance = RunningTolerance(case.dtype, impl.convention, self.spec.momentum)
        self.comparisons: list[Comparison] = []

    def _last(self, a: np.ndarray) -> np.ndarray:
        return np.moveaxis(np.asarray(a, dtype=np.float64), self.case.channel_axis, -1)

    def _record(self, comparison: Comparison) -> None:
        self.comparisons.append(comparison)
        self.on_compare(comparison)

    def _per_rank(self, quantity: str, actual: list, expected: list, tolerances: list) -> None:
        for rank, (a, e, t) in enumerate(zip(actual, expected, tolerances)):
            self._record(compare(f"rank{rank}.{quantity}", a, e, t))

    def _collectives(self, observed: int, expect_some: bool) -> None:
        """Training must communicate (else the statistics cannot be global); inference must not."""
        passed = observed > 0 if expect_some else observed == 0
        want = "at least one" if expect_some else "none"
        self._record(Comparison("collectives", passed, 0.0 if passed else np.inf, float(observed), 0.0, 0.0, 0,
                                f"{observed} cross-rank reductions; expected {want}"))

    def _conditioning(self, x64: np.ndarray) -> tuple[Conditioning, np.ndarray, np.ndarray, np.ndarray]:
        mean, var = reference.batch_statistics(x64, self.case.channel_axis)
        gamma = self.gamma if self.gamma is not None else np.ones(self.case.num_features)
        cond = Conditioning(self.case.dtype, self.case.values_per_channel, mean, var, self.spec.eps, gamma)
        return cond, (self._last(x64) - mean) / cond.sigma, mean, var

    def _update_running(self, cond: Conditioning, mean: np.ndarray, var: np.ndarray) -> None:
        self.steps += 1
        state = {**self.running, **({self.impl.convention.counter: self.steps - 1} if self.impl.convention.counter else {})}
        new = reference.update_running_state(state, mean, var, self.case.values_per_channel, self.spec.momentum,
                                             self.impl.convention)
        self.running = {k: new[k] for k in ("running_mean", "running_var")}
        self.running_tolerance.add_step(cond, new, self.case.values_per_channel)

    def train(self, x: np.ndarray, dy: np.ndarray | None = None) -> None:
        """One training step on every rank (with gradients when ``dy`` is given)."""
        x64 = np.asarray(x, np.float64)
        dy64 = np.zeros_like(x64) if dy is None else np.asarray(dy, np.float64)
        ranks, mean, var = synchronized_training(x64, dy64, self.sizes, self.gamma, self.beta, self.spec.eps,
                                                 self.case.channel_axis)
        cond, xhat, _, _ = self._conditioning(x64)
        y_tol = split_batch(cond.y(self._last(np.concatenate([r.y for r in ranks])), xhat), self.sizes)
        if dy is None:
            step = self.layer.forward(split_batch(x, self.sizes), True)
            outputs = step.outputs
        else:
            step = self.layer.forward_backward(split_batch(x, self.sizes), split_batch(dy, self.sizes), True)
            outputs = [o[0] for o in step.outputs]
            self._gradients(step.outputs, ranks, cond, xhat, self._last(dy64))
        self._per_rank("y", [self._last(y) for y in outputs], [self._last(r.y) for r in ranks], y_tol)
        self._collectives(step.collectives, expect_some=True)
        self._update_running(cond, mean, var)

    def _gradients(self, outputs: list, ranks: list, cond: Conditioning, xhat: np.ndarray, dy: np.ndarray) -> None:
        dx_all = self._last(np.concatenate([r.dx for r in ranks]))
        self._per_rank("dx", [self._last(o[1]) for o in outputs], [self._last(r.dx) for r in ranks],
                       split_batch(cond.dx(dx_all, dy, xhat), self.sizes))
        if self.gamma is None:
            return
        dy_r, xhat_r = split_batch(dy, self.sizes), split_batch(xhat, self.sizes)
        if self.world.parameter_gradients == "sum":  # every rank holds the global sums
            dgamma, dbeta = sum(r.dgamma for r in ranks), sum(r.dbeta for r in ranks)
            n = len(ranks)
            expected = ([dgamma] * n, [dbeta] * n)
            tolerances = ([cond.dgamma(dgamma, dy, xhat)] * n, [cond.dbeta(dbeta, dy)] * n)
        else:  # each rank holds its own shard's share
            expected = ([r.dgamma for r in ranks], [r.dbeta for r in ranks])
            tolerances = ([cond.dgamma(r.dgamma, d, h) for r, d, h in zip(ranks, dy_r, xhat_r)],
                          [cond.dbeta(r.dbeta, d) for r, d in zip(ranks, dy_r)])
        self._per_rank("dgamma", [o[2] for o in outputs], expected[0], tolerances[0])
        self._per_rank("dbeta", [o[3] for o in outputs], expected[1], tolerances[1])

    def infer(self, x: np.ndarray) -> None:
        """Inference on every rank: each normalizes its own shard with the running statistics, alone."""
        x64 = np.asarray(x, np.float64)
        rm, rv = self.running["running_mean"], self.running["running_var"]
        y = reference.forward_inference(x64, rm, rv, self.gamma, self.beta, self.spec.eps, self.case.channel_axis)
        gamma = self.gamma if self.gamma is not None else np.ones(self.case.num_features)
        cond = Conditioning(self.case.dtype, 1, rm, rv, self.spec.eps, gamma)
        xhat = (self._last(x64) - rm) / cond.sigma
        step = self.layer.forward(split_batch(x, self.sizes), False)
        self._per_rank("y", [self._last(o) for o in step.outputs], split_batch(self._last(y), self.sizes),
                       split_batch(cond.y(self._last(y), xhat), self.sizes))
        self._collectives(step.collectives, expect_some=False)

    def fit(self, batches: list[np.ndarray]) -> None:
        """One ``model.fit`` step per global batch (the framework shards it): every rank's running
        statistics follow the global batches'."""
        collectives = self.layer.fit(batches)
        for x in batches:
            cond, _, mean, var = self._conditioning(np.asarray(x, np.float64))
            self._update_running(cond, mean, var)
        self._collectives(collectives, expect_some=True)

    def compare_state(self) -> None:
        """Every rank's running statistics against the global batch's."""
        states = self.layer.get_state()
        for name, expected in self.running.items():
            tolerance = self.running_tolerance.tolerance(name, expected)
            self._per_rank(name, [getattr(s, name) for s in states], [expected] * len(states),
                           [tolerance] * len(states))

    def verify(self) -> None:
        failed = [c for c in self.comparisons if not c.passed]
        if failed:
            lines = "\n  ".join(c.describe() for c in failed)
            raise AssertionError(f"{self.impl.name} (shards {list(self.sizes)}) disagrees with the synchronized "
                                 f"reference on case {self.case.id}:\n  {lines}\n  repro: {self.case!r}")
