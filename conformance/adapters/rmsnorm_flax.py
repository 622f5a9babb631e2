"""Flax RMSNorm: ``flax.linen.RMSNorm`` and ``flax.nnx.RMSNorm`` (the ``flax_rmsnorm`` record), built and run
as the LayerNorm adapter builds and runs Flax's LayerNorm (``layernorm_flax``): a scale or none, no bias."""

from __future__ import annotations

import inspect

from reference import LAYERNORM_CONVENTIONS

from ..operators.layernorm import LayerNormSpec
from .base import Capabilities
from .layernorm_flax import _OPTIONS, FlaxLayerNorm, FlaxLayerNormLayer


class FlaxRMSNorm(FlaxLayerNorm):
    convention = LAYERNORM_CONVENTIONS["flax_rmsnorm"]

    def __init__(self, api: str) -> None:
        self.api = api
        self.name = f"flax.{api}.RMSNorm"
        self.capabilities = Capabilities(
            ranks=frozenset({1, 2, 3, 4, 5}), options=frozenset(_OPTIONS[api]), double_backward=True,
            features=frozenset({"affine_false", "bias_false", "multi_axis"}))

    def defaults(self) -> dict[str, object]:
        import flax.linen
        from flax import nnx

        target = flax.linen.RMSNorm if self.api == "linen" else nnx.RMSNorm.__init__
        params = inspect.signature(target).parameters
        return {"eps": params["epsilon"].default, "axes": params["reduction_axes"].default,
                "affine": params["use_scale"].default, "bias": False}

    def build(self, spec: LayerNormSpec) -> FlaxLayerNormLayer:
        return FlaxLayerNormLayer(spec, self.api, "RMSNorm")


IMPLEMENTATIONS = [FlaxRMSNorm("linen"), FlaxRMSNorm("nnx")]
