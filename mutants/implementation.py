"""The baseline layers and each mutant of them behind the adapter protocol, as a third party plugs one in."""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, Layer, LayerSpec, SeededBug
from conformance.operators.groupnorm import GROUPNORM, GroupNormSpec
from reference import GROUPNORM_CONVENTIONS, Convention, get_convention

from .baseline import BatchNorm

__all__ = ["GroupNormImplementation", "LayerImplementation"]


class LayerImplementation(Implementation):
    """``layer`` (the baseline :class:`~mutants.baseline.BatchNorm` or a subclass) in ``convention``.

    The baseline is ``baseline.<convention>``; a subclass is the mutant ``mutant.<name>`` and declares the
    bug it carries as the class attributes ``bug``, ``origin`` and ``link`` (:class:`SeededBug`)."""

    framework = "numpy"
    isolated = False  # plain NumPy: nothing to isolate, and the self-test stays fast

    def __init__(self, layer: type[BatchNorm], convention: str | Convention, name: str | None = None) -> None:
        self.layer = layer
        self.convention = conv = get_convention(convention)
        features = {"affine_false", "no_running_stats"}
        features |= {"momentum_none"} if conv.cumulative_momentum else {"trainable_false"}
        self.capabilities = Capabilities(features=frozenset(features), double_backward=True)
        if layer is BatchNorm:
            self.family, self.name = "baseline", f"baseline.{conv.name}"
        else:
            self.family, self.name = "mutant", f"mutant.{name}"
            self.seeded_bug = SeededBug(layer.bug, layer.origin, layer.link)

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()  # a layer of this convention's own

    def build(self, spec: LayerSpec) -> BatchNorm:
        return self.layer(spec, self.convention)


class GroupNormImplementation(Implementation):
    """``layer`` (the baseline :class:`~mutants.groupnorm.GroupNorm` or a subclass) in the GroupNorm or
    InstanceNorm ``convention`` (a :data:`reference.GROUPNORM_CONVENTIONS` name).

    Without ``name`` it is the baseline ``baseline.<convention>``; with one, the mutant ``mutant.<name>``, whose
    class declares its bug as ``bug``, ``origin`` and ``link`` (:class:`SeededBug`). Every layout, rank and
    parameter combination is built, as the reference's; an InstanceNorm convention runs only one group per
    channel (no ``grouped``)."""

    framework = "numpy"
    operator = GROUPNORM
    isolated = False  # plain NumPy: nothing to isolate, and the self-test stays fast
    benchmarked = False

    def __init__(self, layer: type[Layer], convention: str, name: str | None = None) -> None:
        self.layer = layer
        self.convention = conv = GROUPNORM_CONVENTIONS[convention]
        features = {"affine_false", "scale_false", "bias_false"} | (set() if conv.instance else {"grouped"})
        self.capabilities = Capabilities(ranks=frozenset({2, 3, 4, 5}), features=frozenset(features),
                                         double_backward=True)
        if name is None:
            self.family, self.name = "baseline", f"baseline.{conv.name}"
        else:
            self.family, self.name = "mutant", f"mutant.{name}"
            self.seeded_bug = SeededBug(layer.bug, layer.origin, layer.link)

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()  # a layer of this convention's own

    def build(self, spec: GroupNormSpec) -> Layer:
        return self.layer(spec)
