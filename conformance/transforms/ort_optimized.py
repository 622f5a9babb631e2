"""onnxruntime's own graph optimizations: the seeds' CNN exported with its BatchNormalization nodes kept, run
at each of onnxruntime's graph optimization levels (``SessionOptions.graph_optimization_level``), checked by
the generic checks against the reference like any implementation.

The TorchScript exporter folds each BatchNorm into the convolution before it while it folds constants
(``transforms/exported.py``); with ``do_constant_folding=False`` the graph keeps Conv, BatchNormalization,
Relu, so what folds them is onnxruntime: its Conv-BatchNormalization fusion (a basic optimization), then
Conv-Relu fusion into ``com.microsoft.FusedConv`` (extended) and the NCHWc layout transformation (all). The
optimized graph must compute what the reference computes, within the CNN's tolerance model, at every level,
as the unoptimized graph (``ORT_DISABLE_ALL``) must.

What the exporter and the optimizer wrote is compared as the layer's hyperparameters: the exported graph
holds two BatchNormalization nodes with the BatchNorms' eps and momentum (ONNX's old-value convention, as
float32 attributes) and two Conv nodes; the graph onnxruntime optimized to (``optimized_model_filepath``)
holds two convolutions in any domain and the BatchNormalization nodes only where nothing is optimized, so a
level that silently stops fusing, or fuses one pair only, shows though its values are right.

Which checks apply: the exported CNN's (forward, running statistics: train, export, train; the contract and
random cases), float32 only (onnxruntime's CPU Conv). Family ``torch.onnx.cnn.ort`` (about a minute on two shared
cores): ``tox -e report`` runs it, ``tox -e torch`` does not (alone: ``--impl torch.onnx.cnn.ort``).
"""

from __future__ import annotations

from ..adapters import cnn_torch
from ..adapters.base import Derivation
from ..core.case import Case
from ..core.comparison import Expected
from .exported import Exported, ExportedLayer, ExportedReference

__all__ = ["LEVELS", "Optimized"]

# The implementation's suffix -> onnxruntime's GraphOptimizationLevel.
LEVELS = {"disable_all": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


class Optimized(Exported):
    """``eager``'s network exported with its BatchNormalization nodes, run at onnxruntime's ``level``."""

    def __init__(self, eager, level: str) -> None:
        super().__init__(eager)
        self.level = level
        self.name = f"torch.onnx.cnn.ort.{level}"
        self.family = "torch.onnx.cnn.ort"  # a family of its own: tox -e report runs it, tox -e torch does not
        self.derivation = Derivation("export", (eager.name,))

    def reference(self, case: Case, spec) -> ExportedReference:
        side = self.operator.reference(case, self.convention, spec)
        kept = 0.0 if self.level != "disable_all" else 2.0
        held = {"batchnorm_nodes": Expected(2.0), "conv_nodes": Expected(2.0), **self.node_attributes(spec),
                "optimized_batchnorm_nodes": Expected(kept), "optimized_conv_nodes": Expected(2.0)}
        return ExportedReference(side, held)

    def deviation_names(self) -> tuple[str, ...]:
        """Its own name, the exported network's, then the eager one's."""
        return (self.name, "torch.onnx.cnn", self.eager.name)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "exporter": "torch.onnx.export(dynamo=False, do_constant_folding=False)",
                "graph_optimization_level": LEVELS[self.level]}

    def build(self, spec) -> ExportedLayer:
        return ExportedLayer(self.eager.build(spec), constant_folding=False, level=LEVELS[self.level])


IMPLEMENTATIONS = [Optimized(impl, level) for impl in cnn_torch.IMPLEMENTATIONS for level in LEVELS]
