"""ONNX ``RMSNormalization`` (opset 23) graphs, run by ``onnx.reference.ReferenceEvaluator`` and by
onnxruntime's CPU provider: the ``onnx_rmsnorm`` record, one node per graph as ``layernorm_onnx`` builds
LayerNormalization's (``axis``, ``epsilon``, ``stash_type`` at its default; ``scale`` a required input, a
constant of ones for a layer without one; no bias input exists)."""

from __future__ import annotations

from reference import LAYERNORM_CONVENTIONS

from .base import Capabilities
from .layernorm_onnx import _NO_GRADIENTS, OnnxLayerNorm


class OnnxRMSNorm(OnnxLayerNorm):
    convention = LAYERNORM_CONVENTIONS["onnx_rmsnorm"]
    op = "RMSNormalization"

    def __init__(self, engine: str) -> None:
        super().__init__(engine)
        self.capabilities = Capabilities(ranks=frozenset({1, 2, 3, 4, 5}), no_gradients=_NO_GRADIENTS,
                                         features=frozenset({"affine_false", "bias_false", "multi_axis"}))

    def defaults(self) -> dict[str, object]:
        return {**super().defaults(), "bias": False}


IMPLEMENTATIONS = [OnnxRMSNorm("ReferenceEvaluator"), OnnxRMSNorm("onnxruntime")]
