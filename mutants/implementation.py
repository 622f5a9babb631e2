"""The baseline layer and each mutant of it behind the adapter protocol, as a third party plugs one in."""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, LayerSpec, SeededBug
from reference import Convention, get_convention

from .baseline import BatchNorm

__all__ = ["LayerImplementation"]


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
