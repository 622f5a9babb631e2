"""Export: a PyTorch layer exported to ONNX and run in onnxruntime (:class:`Exported`), checked by the generic
checks against the reference like any implementation.

The layer trains eagerly in PyTorch, as users train before they export; every inference call exports the
module with its current state (``torch.onnx.export(dynamo=False)``, the TorchScript exporter: the default
``dynamo=True`` needs ``onnxscript``, which is not installed) and runs the graph in onnxruntime's CPU
provider, in the same worker process (torch and onnxruntime both imported there). So inference after
training, after assigned state, on edge input and for every layer option is what the exported graph
computes, and the state is the eager module's, which no export may change.

What the exporter wrote is checked through the Mirror's hyperparameter comparison: the layer reports, from
the last graph it ran, the ``eps`` and ``momentum`` of its BatchNormalization node (ONNX attributes are
float32) and how many BatchNormalization and Conv nodes it has; the reference side (:class:`ExportedReference`,
the operator's reference with :meth:`hyperparameters` replaced) states what the graph must hold. BatchNorm:
one BatchNormalization node whose ``epsilon`` is eps and whose ``momentum`` is the module's momentum in
ONNX's convention (old-value: ``1 - m``; :func:`reference.convert_momentum` between the records), both rounded
to float32 exactly (a cumulative average, ``momentum=None``, has no ONNX momentum: not judged). The seeds' CNN:
no BatchNormalization node (each is folded into the convolution before it) and its two Conv nodes.

Which checks apply (``families``): forward, running statistics (train -> export -> train: the export leaves
the module's state and mode alone; layer options: no running statistics, no affine parameters), state from
construction, edge cases, the contract, random cases and production sizes, all in inference through the
graph. Not gradients or second order: the graph is inference-only (its training half is the eager module,
which the ``torch.*`` implementations check), nor the constructor defaults (the eager module's). Dtypes:
those onnxruntime's CPU provider runs for the graph (BatchNormalization: float64/32/16, no bfloat16; Conv:
float32 only).
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings

import numpy as np

from reference import ONNX, convert_momentum

from ..adapters import cnn_torch, torch_nn
from ..adapters.base import Capabilities, Derivation, Implementation, Layer, State, framework_input
from ..core.case import Case
from ..core.comparison import Expected
from ..operators import Delegating, ReferenceSide

__all__ = ["Exported", "ExportedLayer", "ExportedReference"]

# What onnxruntime's CPU provider runs, per operator (its BatchNormalization and Conv kernels' types).
_RUNTIME_DTYPES = {"batchnorm": frozenset({"float64", "float32", "float16"}), "cnn": frozenset({"float32"})}
_FAMILIES = frozenset({"forward", "running_stats", "construction", "edge_cases", "contract", "random", "large"})
_GRAPH_FACTS = ("batchnorm_nodes", "conv_nodes", "optimized_batchnorm_nodes", "optimized_conv_nodes")


def _counts(nodes) -> dict[str, int]:
    """How many BatchNormalization nodes and convolutions (``Conv`` in any domain: onnxruntime's optimizer
    writes ``FusedConv`` and NCHWc ``Conv``) ``nodes`` hold."""
    ops = [node.op_type for node in nodes]
    return {"batchnorm_nodes": ops.count("BatchNormalization"), "conv_nodes": sum(op.endswith("Conv") for op in ops)}


def _session(model: bytes, level: str | None) -> tuple[object, dict[str, int]]:
    """An onnxruntime session of ``model`` on the CPU provider, at graph optimization ``level`` (a
    ``GraphOptimizationLevel`` name; None: onnxruntime's default, and nothing reported) and the node counts
    of the graph it optimized to (``optimized_*``)."""
    import onnx
    import onnxruntime

    if level is None:
        return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]), {}
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
    options.log_severity_level = 3  # the NCHWc layout's notice that the optimized file is machine-specific
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath).graph.node
    return session, {f"optimized_{name}": n for name, n in _counts(optimized).items()}


def export_and_run(module, x, dtype, constant_folding: bool = True, level: str | None = None
                   ) -> tuple[np.ndarray, dict[str, object]]:
    """``module`` exported for input ``x`` (NumPy) and run in onnxruntime: ``y`` and what the graph holds
    (its BatchNormalization node's ``eps`` and ``momentum`` where it has one, the node counts).
    ``constant_folding=False`` keeps the BatchNormalization nodes after convolutions, which the exporter
    otherwise folds; ``level``: onnxruntime's graph optimization level (:func:`_session`)."""
    import onnx
    import torch

    x, cast = framework_input(x)
    t = torch.from_numpy(x)
    t = t.to(dtype) if cast else t
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, once per export
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (t,), buffer, dynamo=False, input_names=["x"], do_constant_folding=constant_folding)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    held: dict[str, object] = dict(_counts(graph.node))
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            held |= {"eps": attributes.get("epsilon"), "momentum": attributes.get("momentum")}
            break
    session, optimized = _session(buffer.getvalue(), level)
    (y,) = session.run(None, {"x": t.numpy()})
    return y, held | optimized


class ExportedLayer:
    """The eager layer (a PyTorch adapter's: it has ``module`` and ``dtype``) for training and state; every
    inference call through its exported graph."""

    def __init__(self, eager: Layer, **options: object) -> None:
        self.eager, self.held, self.options = eager, {}, options  # options: export_and_run's

    def set_state(self, state: State) -> None:
        self.eager.set_state(State(**{k: v for k, v in state.items() if k not in _GRAPH_FACTS}))

    def get_state(self) -> State:
        """The eager module's state; what the last exported graph holds (nothing before the first)."""
        return self.eager.get_state().replace(**({"eps": None, "momentum": None} | self.held))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            return self.eager.forward(x, True)
        y, self.held = export_and_run(self.eager.module, x, self.eager.dtype, **self.options)
        return y

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        raise NotImplementedError("an exported graph defines no gradients")


class ExportedReference(Delegating):
    """The operator's reference side, with what the graph must hold as its hyperparameters."""

    def __init__(self, side: ReferenceSide, held: dict[str, Expected]) -> None:
        self.side, self.held = side, held

    def hyperparameters(self) -> dict[str, Expected]:
        return self.held


def _float32(value: float) -> Expected:
    """An ONNX attribute: ``value`` rounded to float32, exactly."""
    return Expected(float(np.float32(value)))


class Exported(Implementation):
    """``eager``'s layer, inference exported to ONNX and run in onnxruntime (see the module docstring)."""

    families = _FAMILIES

    def __init__(self, eager: Implementation) -> None:
        self.eager = eager
        self.name = eager.name.replace("torch.", "torch.onnx.", 1)
        self.family, self.framework, self.operator = eager.family, eager.framework, eager.operator
        self.convention, self.device, self.benchmarked = eager.convention, eager.device, False
        self.requires = (*eager.requires, "onnx", "onnxruntime")
        self.derivation = Derivation("export", (eager.name,))
        caps = eager.capabilities
        self.capabilities = Capabilities(
            dtypes=caps.dtypes & _RUNTIME_DTYPES[eager.operator.name], ranks=caps.ranks,
            channel_axes=caps.channel_axes, devices=caps.devices, features=caps.features, options=caps.options,
            no_gradients="an exported graph is inference-only (its training is the eager module's)")

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The operator's grids; BatchNorm's inference after training (where what the graph holds is compared)
        with a new-batch weight and an eps no convention has by default, as the porting grid has them, so that a
        momentum or eps the exporter lost or wrote as the default shows."""
        grid = self.operator.cases(check)
        if check != "inference_after_training" or self.operator.name != "batchnorm":
            return grid
        return [(case.id, case) for case in (case.with_(new_batch_weight=0.3, eps=2e-3) for _, case in grid)]

    def reference(self, case: Case, spec) -> ExportedReference:
        side = self.operator.reference(case, self.convention, spec)
        if self.operator.name == "cnn":  # each BatchNorm folded into the convolution before it
            return ExportedReference(side, {"batchnorm_nodes": Expected(0.0), "conv_nodes": Expected(2.0)})
        return ExportedReference(side, {"batchnorm_nodes": Expected(1.0), **self.node_attributes(spec)})

    def node_attributes(self, spec) -> dict[str, Expected]:
        """What a BatchNormalization node of a layer built with ``spec`` must hold: ``epsilon`` and, unless a
        cumulative average, ``momentum`` in ONNX's convention, as float32 attributes."""
        held = {"eps": _float32(spec.eps)}
        if spec.momentum is not None:
            held["momentum"] = _float32(convert_momentum(spec.momentum, self.convention, ONNX))
        return held

    def deviation_names(self) -> tuple[str, ...]:
        """Its own name, then the eager implementation's, whose deviations in training it inherits."""
        return (self.name, self.eager.name)

    def environment(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        return {**self.eager.environment(), "exporter": "torch.onnx.export(dynamo=False)",
                "runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider", "onnx": onnx.__version__}

    def defaults(self) -> dict[str, object]:
        return self.eager.defaults()

    def output_dtype(self, spec) -> str:
        return self.eager.output_dtype(spec)

    def build(self, spec) -> ExportedLayer:
        return ExportedLayer(self.eager.build(spec))


# PyTorch's BatchNorm modules (the functional form holds no module to export) and the seeds' CNN.
_EAGER = [impl for impl in torch_nn.IMPLEMENTATIONS
          if impl.device == "cpu" and impl.module is not None and impl.memory_format is None]
IMPLEMENTATIONS = [Exported(impl) for impl in _EAGER + cnn_torch.IMPLEMENTATIONS]
