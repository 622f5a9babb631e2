"""Porting: a layer trained in one convention, carried into another and used there (:class:`Ported`).

A ported layer trains as its source until its first inference call; there the source's state and the
settings it holds (eps, momentum as held) are carried into a new target layer with :func:`reference.port`,
the recipe the report's cheat-sheet tells users, and the target answers every call from then on, inference
and further training alike. Its reference side does the same in float64 (:class:`PortedReference`): the
reference in the source's convention, then the reference in the target's, built from the case itself (the
case's new-batch weight and eps, never the ported ones) and holding what makes its inference read what the
source's did. So a lost eps or momentum, a variance carried in the wrong correction, or a target that
normalizes differently from an assigned state fails, on its own quantity.

``derive`` pairs every selected implementation that keeps running statistics with the reference in every
built-in convention and in its own, both ways: a framework's trained state ported out to each convention,
and each convention's state ported into the framework. Between two frameworks a port is those two halves,
meeting in a float64 state; the reference makes each half's failure that implementation's own, and a
third party's implementation gets the same pairs without any other framework installed. Pairs run the
operator's ``porting`` grid at one layout, the first the framework supports (rank 4, its convention's
channel axis first), in float64 and float32.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from reference import CONVENTIONS, Convention, Settings, port, running_state_for, running_statistics

from ..adapters.base import Capabilities, Derivation, Implementation, Layer, LayerSpec, State
from ..adapters.reference_impl import ReferenceImplementation
from ..core.case import Case
from ..core.comparison import Expected
from ..core.dtypes import unit_roundoff
from ..operators import Delegating, ReferenceSide
from ..operators.batchnorm import BATCHNORM

__all__ = ["Ported", "PortedLayer", "PortedReference", "derive"]

_RANKS = (4, 2, 3, 5)  # the layout a pair runs at: the first its framework takes
_DTYPES = frozenset({"float64", "float32"})


def _target_spec(spec: LayerSpec, settings: Settings) -> LayerSpec:
    """``spec`` built with the settings the port gives the target."""
    return replace(spec, momentum=settings.momentum, eps=settings.eps, channel_axis=settings.channel_axis)


def _settings(spec: LayerSpec, convention: Convention) -> Settings:
    return Settings(convention, spec.momentum, spec.eps, spec.channel_axis)


class PortedLayer:
    """The source layer until the first inference call, then the target layer the port built."""

    def __init__(self, source: Layer, spec: LayerSpec, ported: Ported) -> None:
        self.layer, self.spec, self.ported, self.target = source, spec, ported, False

    def _port(self) -> None:
        held = self.layer.get_state()
        eps, momentum = (self.spec.eps, self.spec.momentum) if held.eps is None else (held.eps, held.momentum)
        source = Settings(self.ported.source.convention, momentum, eps, self.spec.channel_axis)
        state, settings = port(held, source, self.ported.target.convention, channel_axis=self.spec.channel_axis)
        self.layer = self.ported.target.build(_target_spec(self.spec, settings))
        self.layer.set_state(State(**state))
        self.target = True

    def set_state(self, state: State) -> None:
        self.layer.set_state(state)

    def get_state(self) -> State:
        return self.layer.get_state()

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not (training or self.target):
            self._port()
        return self.layer.forward(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        if not (training or self.target):
            self._port()
        return self.layer.forward_backward(x, dy, training)


class PortedReference(Delegating):
    """The reference side of a ported layer: the source convention's until the first inference call, then
    the target convention's, built from the case, holding the source's parameters and what makes its
    inference read what the source's read (:func:`reference.running_state_for`; a counter carried where
    both conventions keep one)."""

    def __init__(self, ported: Ported, case: Case, spec: LayerSpec) -> None:
        self.ported, self.case = ported, case
        self.side: ReferenceSide = ported.operator.reference(case, ported.source.convention, spec)
        self.target = False

    def _port(self) -> None:
        src, dst = self.ported.source.convention, self.ported.target.convention
        held = self.side.layer.state
        target = self.ported.operator.reference(self.case, dst, self.case.spec(dst))
        kept = {name: held[name] for name in ("gamma", "beta") if held.get(name) is not None}
        if held.get("running_mean") is not None:
            mean, var = running_statistics(held, self.side.layer.momentum, src)
            counter = held[src.counter] if src.counter and dst.counter else None
            kept |= running_state_for(mean, var, target.layer.momentum, dst, counter)
        target.assign(State(**kept))
        if held.get("running_mean") is not None:  # the statistics carry the errors the source's steps were allowed
            target.running_tolerance.carry(*self.side.running_tolerance.statistics_error(held), kept)
        target.parameter_tolerance = unit_roundoff(self.case.dtype)  # the target layer holds them in its dtype
        self.side, self.target = target, True

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        if not (training or self.target):
            self._port()
        return super().forward(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        if not (training or self.target):
            self._port()
        return super().forward_backward(x, dy, training)


class Ported(Implementation):
    """``source``'s layer, ported into ``target``'s convention at its first inference call. One of the two
    is a framework implementation, the other the reference (``derive``); the report shows the pair in the
    framework's row."""

    families = frozenset({"porting"})

    def __init__(self, source: Implementation, target: Implementation) -> None:
        self.source, self.target = source, target
        self.framework_side = target if source.family == "reference" else source
        self.name = f"ported.{source.name}-to-{target.name}"
        self.family, self.framework = self.framework_side.family, self.framework_side.framework
        self.operator, self.convention = source.operator, source.convention
        self.requires, self.device = self.framework_side.requires, self.framework_side.device
        self.isolated, self.locator = self.framework_side.isolated, self.framework_side.locator
        self.process_env, self.benchmarked = self.framework_side.process_env, False
        self.derivation = Derivation("port", (source.name, target.name), row=self.framework_side.name)
        caps = self.framework_side.capabilities
        self.capabilities = Capabilities(dtypes=caps.dtypes & _DTYPES, ranks=caps.ranks, channel_axes=caps.channel_axes,
                                         devices=caps.devices, features=caps.features, options=caps.options,
                                         no_gradients="a ported layer is checked on its state and outputs")

    @property
    def process_key(self) -> tuple:
        return self.framework_side.process_key

    @property
    def group(self) -> str:
        return self.framework_side.group

    def missing(self) -> str | None:
        return self.framework_side.missing()

    def unsupported(self, spec: LayerSpec) -> list[str]:
        missing = self.source.unsupported(spec) + self.capabilities.unsupported(spec)
        try:
            settings = port({}, _settings(spec, self.source.convention), self.target.convention,
                            channel_axis=spec.channel_axis)[1]
        except ValueError as exc:
            return [*missing, f"porting ({exc})"]
        return list(dict.fromkeys(missing + self.target.unsupported(_target_spec(spec, settings))))

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The operator's grid at one layout: the first rank of ``_RANKS`` the framework takes, its
        convention's channel axis first."""
        grid = self.operator.cases(check)
        axis = self.framework_side.convention.channel_axis
        layouts = sorted({(case.rank, case.channel_axis) for _, case in grid},
                         key=lambda layout: (_RANKS.index(layout[0]), layout[1] != axis))
        supported = [layout for layout in layouts if any(
            not self.unsupported(case.spec(self.convention))
            for _, case in grid if (case.rank, case.channel_axis) == layout)]
        return [(name, case) for name, case in grid if supported and (case.rank, case.channel_axis) == supported[0]]

    def reference(self, case: Case, spec: LayerSpec) -> PortedReference:
        return PortedReference(self, case, spec)

    def conventions(self) -> tuple[Convention, ...]:
        return (self.source.convention, self.target.convention)

    def parameters(self) -> dict[str, object]:
        return {"source": self.source.name, "target": self.target.name}

    def deviation_names(self) -> tuple[str, ...]:
        """The pair's own name, then its framework implementation's: a deviation of the framework explains
        the pair's."""
        return (self.name, self.framework_side.name)

    def environment(self) -> dict[str, str]:
        return self.framework_side.environment()

    def defaults(self) -> dict[str, object]:
        return self.framework_side.defaults()

    def build(self, spec: LayerSpec) -> PortedLayer:
        return PortedLayer(self.source.build(spec), spec, self)


def derive(selected: list[Implementation]) -> list[Ported]:
    """Every selected BatchNorm implementation (no reference, no transform's, no distributed one), paired both
    ways with the reference in each built-in convention and its own."""
    frameworks = [i for i in selected if i.operator is BATCHNORM and i.family != "reference" and i.derivation is None
                  and i.families is None]
    pairs = []
    for impl in frameworks:
        conventions = {**CONVENTIONS, impl.convention.name: impl.convention}
        for convention in conventions.values():
            ref = ReferenceImplementation(convention)
            pairs += [Ported(impl, ref), Ported(ref, impl)]
    return pairs
