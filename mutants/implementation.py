"""The baseline layers and each mutant of them behind the adapter protocol, as a third party plugs one in."""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, Layer, LayerSpec, SeededBug
from conformance.operators.groupnorm import GROUPNORM, GroupNormSpec
from conformance.operators.layernorm import LAYERNORM, LayerNormSpec
from reference import GROUPNORM_CONVENTIONS, LAYERNORM_CONVENTIONS, Convention, get_convention

from .baseline import BatchNorm

__all__ = ["GroupNormImplementation", "LayerImplementation", "LayerNormImplementation"]


class _SelfTestImplementation(Implementation):
    """What the self-test's wrappers share: a NumPy layer class, in one convention, named as a baseline
    (``baseline.<convention>``, without ``name``) or a mutant (``mutant.<name>``, whose class declares its bug as
    ``bug``, ``origin`` and ``link``: :class:`SeededBug`)."""

    framework = "numpy"
    isolated = False  # plain NumPy: nothing to isolate, and the self-test stays fast

    def _named(self, layer: type, convention, name: str | None) -> None:
        self.layer, self.convention = layer, convention
        if name is None:
            self.family, self.name = "baseline", f"baseline.{convention.name}"
        else:
            self.family, self.name = "mutant", f"mutant.{name}"
            self.seeded_bug = SeededBug(layer.bug, layer.origin, layer.link)

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return self.convention.defaults()  # a layer of this convention's own


class LayerImplementation(_SelfTestImplementation):
    """``layer`` (the baseline :class:`~mutants.baseline.BatchNorm` or a subclass) in ``convention``; the
    baseline class is the baseline, any subclass a mutant named ``name``."""

    def __init__(self, layer: type[BatchNorm], convention: str | Convention, name: str | None = None) -> None:
        conv = get_convention(convention)
        features = {"affine_false", "no_running_stats"}
        features |= {"momentum_none"} if conv.cumulative_momentum else {"trainable_false"}
        self.capabilities = Capabilities(features=frozenset(features), double_backward=True)
        self._named(layer, conv, None if layer is BatchNorm else name)

    def build(self, spec: LayerSpec) -> BatchNorm:
        return self.layer(spec, self.convention)


class GroupNormImplementation(_SelfTestImplementation):
    """``layer`` (the baseline :class:`~mutants.groupnorm.GroupNorm` or a subclass) in the GroupNorm or
    InstanceNorm ``convention`` (a :data:`reference.GROUPNORM_CONVENTIONS` name), a mutant with a ``name``. Every
    layout, rank and parameter combination is built, as the reference's; an InstanceNorm convention runs only
    one group per channel (no ``grouped``)."""

    operator = GROUPNORM
    benchmarked = False

    def __init__(self, layer: type[Layer], convention: str, name: str | None = None) -> None:
        conv = GROUPNORM_CONVENTIONS[convention]
        features = {"affine_false", "scale_false", "bias_false"} | (set() if conv.instance else {"grouped"})
        self.capabilities = Capabilities(ranks=frozenset({2, 3, 4, 5}), features=frozenset(features),
                                         double_backward=True)
        self._named(layer, conv, name)

    def build(self, spec: GroupNormSpec) -> Layer:
        return self.layer(spec)


class LayerNormImplementation(_SelfTestImplementation):
    """``layer`` (the baseline :class:`~mutants.layernorm.LayerNorm` or a subclass) in the LayerNorm or RMSNorm
    ``convention`` (a :data:`reference.LAYERNORM_CONVENTIONS` name), a mutant with a ``name``. Every rank, number
    of normalized axes and parameter combination is built, as the reference's."""

    operator = LAYERNORM
    benchmarked = False

    def __init__(self, layer: type[Layer], convention: str, name: str | None = None) -> None:
        self.capabilities = Capabilities(
            ranks=frozenset({1, 2, 3, 4, 5}), double_backward=True,
            features=frozenset({"affine_false", "scale_false", "bias_false", "multi_axis"}))
        self._named(layer, LAYERNORM_CONVENTIONS[convention], name)

    def build(self, spec: LayerNormSpec) -> Layer:
        return self.layer(spec, self.convention)
