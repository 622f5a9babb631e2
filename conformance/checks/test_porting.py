"""Porting a trained BatchNorm between every ordered pair of implementations (:func:`conformance.porting.port`).

For each pair and dtype: the source, built in its own convention, channel axis and rank, trains a few
steps; its state is ported (momentum converted, eps carried, channel axis changed) and set on the
target, built from the ported settings. Then (1) the target's inference output on the same values equals
the source's, within twice the inference tolerance (each side's own, against the float64 reference
computed from the source's state), and (2) one further training step in each updates the running
statistics as each one's convention says (against the reference in that convention, started from the
state each holds).

Every pair sees the same values per channel whatever the ranks and layouts: a (M, C) matrix laid out as
each side's input (:func:`_layout`), so a BatchNorm1d ports to a channels-last Keras layer. The source's
training is done once per source and dtype (this module's cache), so a pair costs the target's few calls.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest

import reference
from conformance.adapters.base import Implementation, LayerSpec, State
from conformance.cases import round_to
from conformance.deviations import match
from conformance.plugin import IMPLEMENTATIONS, REGISTRIES
from conformance.porting import Settings, port
from conformance.tolerances import Comparison, Conditioning, RunningTolerance, compare
from reference import CONVENTIONS, convert_momentum

DTYPES = ("float64", "float32")
NEW_BATCH_WEIGHT = 0.3  # every convention's momentum differs from its default, so a lost momentum shows
EPS = 2e-3  # no convention's default, so a lost eps shows
TRAIN_STEPS = 3
N, S, C = 4, 6, 3  # batch, spatial size, channels: M = N * S values per channel
SPATIAL = {3: (S,), 4: (2, 3), 5: (1, 2, 3)}
RANK_PREFERENCE = (4, 3, 5, 2)
pytestmark = pytest.mark.conformance(per_implementation=False)  # pairs of implementations


def ported_implementations(impls: list[Implementation]) -> list[Implementation]:
    """Not the reference (it defines the conventions; the frameworks are what users port between), nor a
    compiled layer (it holds the same variables as its eager implementation), nor a distributed one."""
    return [i for i in impls if i.family != "reference" and not i.compiled_from and i.capabilities.world is None
            and i.capabilities.devices & {"cpu"}]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "source" in metafunc.fixturenames:
        impls = ported_implementations(metafunc.config.stash[IMPLEMENTATIONS])
        pairs = [(a, b) for a in impls for b in impls if a is not b]
        metafunc.parametrize(("source", "target"), pairs, ids=[f"{a.name}-to-{b.name}" for a, b in pairs])


def _values(dtype: str, salt: str) -> np.ndarray:
    """(M, C) values, channel offsets in [-2, 2] and spreads in [0.5, 2] as the suite's normal cases."""
    rng = np.random.default_rng(zlib.adler32(f"porting/{dtype}/{salt}".encode()))
    offset, spread = rng.uniform(-2, 2, C), rng.uniform(0.5, 2, C)
    return round_to(offset + spread * rng.standard_normal((N * S, C)), dtype)


def _layout(values: np.ndarray, rank: int, channel_axis: int) -> np.ndarray:
    """(M, C) values as an input of ``rank`` with channels at ``channel_axis``."""
    if rank == 2:
        return values
    x = np.moveaxis(values.reshape(N, S, C), -1, 1).reshape(N, C, *SPATIAL[rank])
    return x if channel_axis == 1 else np.moveaxis(x, 1, -1)


def _values_of(y: np.ndarray, rank: int, channel_axis: int) -> np.ndarray:
    """The inverse of :func:`_layout`: an output back as (M, C), float64."""
    y = np.asarray(y, dtype=np.float64)
    if rank == 2:
        return y
    y = y if channel_axis == 1 else np.moveaxis(y, -1, 1)
    return np.moveaxis(y.reshape(N, C, S), 1, -1).reshape(N * S, C)


@dataclass(frozen=True)
class Side:
    """How one implementation is built for porting: its convention's channel axis where supported, and
    the first rank it supports of ``RANK_PREFERENCE``."""

    impl: Implementation
    rank: int
    channel_axis: int

    @classmethod
    def of(cls, impl: Implementation) -> Side:
        axes = impl.capabilities.channel_axes
        axis = CONVENTIONS[impl.convention].channel_axis
        return cls(impl, next(r for r in RANK_PREFERENCE if r in impl.capabilities.ranks),
                   axis if axis in axes else next(iter(axes)))

    def spec(self, settings: Settings, dtype: str) -> LayerSpec:
        return LayerSpec(num_features=C, rank=self.rank, channel_axis=self.channel_axis, eps=settings.eps,
                         momentum=settings.momentum, dtype=dtype)

    def forward(self, layer, values: np.ndarray, training: bool) -> np.ndarray:
        return _values_of(layer.forward(_layout(values, self.rank, self.channel_axis), training), self.rank,
                          self.channel_axis)


@dataclass(frozen=True)
class Run:
    """One side's part: its settings, state after training (``trained``, what is ported), inference
    output on the evaluation values, and state after the further training step."""

    settings: Settings
    trained: State
    y: np.ndarray
    after: State


def _initial_state() -> State:
    rng = np.random.default_rng(zlib.adler32(b"porting/state"))
    return State(gamma=rng.uniform(0.5, 1.5, C), beta=rng.uniform(-0.5, 0.5, C), running_mean=np.zeros(C),
                 running_var=np.ones(C))


def _finish(side: Side, layer, settings: Settings, trained: State, dtype: str) -> Run:
    y = side.forward(layer, _values(dtype, "eval"), training=False)
    side.forward(layer, _values(dtype, "next"), training=True)
    return Run(settings, trained, y, layer.get_state())


_SOURCES: dict[tuple[str, str], Run] = {}


def _source_run(side: Side, dtype: str) -> Run:
    key = (side.impl.name, dtype)
    if key not in _SOURCES:
        conv = side.impl.convention
        settings = Settings(conv, convert_momentum(NEW_BATCH_WEIGHT, "torch", conv), EPS, side.channel_axis)
        layer = side.impl.build(side.spec(settings, dtype))
        layer.set_state(_initial_state())
        for step in range(TRAIN_STEPS):
            side.forward(layer, _values(dtype, f"train{step}"), training=True)
        _SOURCES[key] = _finish(side, layer, settings, layer.get_state(), dtype)
    return _SOURCES[key]


def _inference_tolerance(state: State, dtype: str) -> np.ndarray:
    """The tolerance of one implementation's inference output on the evaluation values against the
    reference's from ``state`` (``Conditioning.y`` with no reduction)."""
    x = _values(dtype, "eval").astype(np.float64)
    y = reference.forward_inference(x, state.running_mean, state.running_var, state.gamma, state.beta, EPS,
                                    channel_axis=-1)
    cond = Conditioning(dtype, 1, state.running_mean, state.running_var, EPS, state.gamma)
    return cond.y(y, (x - state.running_mean) / cond.sigma)


def _further_step(run: Run, dtype: str, side: str) -> list[Comparison]:
    """The running statistics after the further step against the reference in ``run``'s convention,
    started from the state that side held before it."""
    start = run.trained
    ref = reference.BatchNorm(C, convention=run.settings.convention, momentum=run.settings.momentum, eps=EPS,
                              channel_axis=-1)
    for name in ("gamma", "beta", "running_mean", "running_var"):
        setattr(ref, name, getattr(start, name))
    x = _values(dtype, "next").astype(np.float64)
    mean, var = reference.batch_statistics(x, -1)
    ref.forward(x, training=True)
    tolerance = RunningTolerance(dtype)
    cond = Conditioning(dtype, N * S, mean, var, EPS, start.gamma)
    tolerance.add_step(cond, ref.running_mean, ref.running_var, N * S)
    return [compare(f"{name}_{side}", getattr(run.after, name), getattr(ref, name),
                    tolerance.tolerance(name, getattr(ref, name))) for name in ("running_mean", "running_var")]


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
def test_porting(request: pytest.FixtureRequest, record_comparison, source, target, dtype: str) -> None:
    properties = request.node.user_properties
    sides = Side.of(source), Side.of(target)
    params = {"source": source.name, "target": target.name, "source_convention": source.convention,
              "target_convention": target.convention, "dtype": dtype, "new_batch_weight": NEW_BATCH_WEIGHT,
              "source_layout": [sides[0].rank, sides[0].channel_axis],
              "target_layout": [sides[1].rank, sides[1].channel_axis]}
    properties += [("implementation", source.name), ("params", params)]
    if source.missing() is None:
        properties.append(("environment", {k: str(v) for k, v in source.environment().items()}))
    for impl, side in zip((source, target), sides):
        settings = Settings(impl.convention, 0.5, EPS, side.channel_axis)
        if reason := impl.missing() or ", ".join(impl.unsupported(side.spec(settings, dtype))):
            pytest.skip(reason)
    for impl in (target, source):  # a deviation of either side explains the pair's
        version = impl.environment().get("version")
        if entry := match(request.config.stash[REGISTRIES], impl.name, "porting", params, version):
            properties.append(("deviation", entry.as_dict()))
            request.applymarker(pytest.mark.xfail(reason=f"{entry.observed} ({entry.link})", strict=True))
            break

    source_run = _source_run(sides[0], dtype)
    state, settings = port(source_run.trained, source_run.settings, target.convention,
                           channel_axis=sides[1].channel_axis)
    layer = target.build(sides[1].spec(settings, dtype))
    layer.set_state(state)
    target_run = _finish(sides[1], layer, settings, state, dtype)

    tolerance = _inference_tolerance(source_run.trained, dtype)
    comparisons = [compare("y_ported", target_run.y, source_run.y, 2 * tolerance),
                   *_further_step(source_run, dtype, "source"), *_further_step(target_run, dtype, "target")]
    for c in comparisons:
        record_comparison(c)
    failed = [c.describe() for c in comparisons if not c.passed]
    what = f"porting {source.name} -> {target.name} ({dtype}, target settings {settings})"
    assert not failed, what + ":\n  " + "\n  ".join(failed)
