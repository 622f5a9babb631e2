"""Export: a PyTorch layer exported to ONNX and run in onnxruntime or ``onnx.reference`` (:class:`Exported`),
checked by the generic checks against the reference like any implementation.

Every combination of exporter (:data:`EXPORTERS`: ``torch.onnx.export(dynamo=False)``, the TorchScript
exporter, and ``dynamo=True``, the default, which translates ``torch.export``'s program with ``onnxscript``),
mode and engine (:data:`ENGINES`: onnxruntime's CPU provider, ``onnx.reference.ReferenceEvaluator``; both
through ``onnx_op.evaluate``, in the same worker process as torch). In inference mode (``torch.onnx.*``) the
layer trains eagerly in PyTorch, as users train before they export, and every inference call exports the
module in eval mode with its current state and runs the graph. In training mode (``*.training``) every
training call goes through a graph too: the module exported in training mode (TorchScript:
``training=TrainingMode.TRAINING``, constant folding off as that exporter asks; dynamo: the module in train
mode, its ``training`` argument being deprecated), whose output is ``y``; and its state afterwards is what the
graph computed: where it has a BatchNormalization node with ``training_mode=1``, that node's updated running
mean and variance (BatchNormalization-15's outputs 2 and 3, which the exporters leave out of the graph's
outputs and the layer adds), written into the module's buffers; the batch counter no graph output carries.
The graph is held to the module's convention (PyTorch's): an exported graph must compute what the module it
was exported from computes. So inference after training, after assigned state, on edge input and for every
layer option is what the exported graph computes.

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
construction, edge cases, the contract, random cases and production sizes, all through the graph. Not
gradients or second order: the graph defines none (an eval-mode variant's training half is the eager module,
which the ``torch.*`` implementations check), nor the constructor defaults (the eager module's). Dtypes:
those onnxruntime's CPU provider runs for the graph (BatchNormalization: float64/32/16, no bfloat16; Conv:
float32 only), for both engines. ``ort_optimized`` runs the graphs at each of onnxruntime's optimization levels
through :func:`export_and_run`'s ``level``.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings

import numpy as np

from reference import ONNX, convert_momentum

from ..adapters import cnn_torch, onnx_op, torch_nn
from ..adapters.base import Capabilities, Derivation, Implementation, Layer, State, framework_input
from ..core.case import Case
from ..core.comparison import Expected
from ..operators import Delegating, ReferenceSide

__all__ = ["ENGINES", "EXPORTERS", "Exported", "ExportedLayer", "ExportedReference"]

# What onnxruntime's CPU provider runs, per operator (its BatchNormalization and Conv kernels' types).
_RUNTIME_DTYPES = {"batchnorm": frozenset({"float64", "float32", "float16"}), "cnn": frozenset({"float32"})}
_FAMILIES = frozenset({"forward", "running_stats", "construction", "edge_cases", "contract", "random", "large"})
_GRAPH_FACTS = ("batchnorm_nodes", "conv_nodes", "optimized_batchnorm_nodes", "optimized_conv_nodes")


# The exporters (``torch.onnx.export``'s ``dynamo`` argument) and the engines that run their graphs
# (``onnx_op.evaluate``), by the names the implementations carry.
EXPORTERS = {"torchscript": "torch.onnx.export(dynamo=False)", "dynamo": "torch.onnx.export(dynamo=True)"}
ENGINES = ("onnxruntime", "ReferenceEvaluator")


def export(module, t, exporter: str, training: bool, constant_folding: bool = True):
    """``module`` exported for input ``t`` (a tensor) in its mode ``training``: the ONNX ``ModelProto``.
    ``constant_folding=False`` keeps the TorchScript exporter's BatchNormalization nodes after convolutions,
    which it otherwise folds in eval mode."""
    import onnx
    import torch

    module.train(training)
    with warnings.catch_warnings():  # the exporters' deprecation and training-mode notices, once per export
        warnings.simplefilter("ignore")
        if exporter == "dynamo":  # its ``training`` argument is deprecated: it exports the module's own mode
            return torch.onnx.export(module, (t,), dynamo=True, input_names=["x"], verbose=False).model_proto
        buffer = io.BytesIO()
        # Constant folding off in training, as the exporter asks (folding may change trainable values).
        mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(module, (t,), buffer, dynamo=False, input_names=["x"], training=mode,
                          do_constant_folding=constant_folding and not training)
    return onnx.load_from_string(buffer.getvalue())


def _running_outputs(model) -> list[str]:
    """The updated running mean and variance a training-mode BatchNormalization node computes (its outputs 2
    and 3 under ``training_mode=1``), made outputs of the graph, which the exporters leave them out of; none
    where the graph has no such node."""
    from onnx import helper

    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and attributes.get("training_mode") == 1 and len(node.output) >= 3:
            names = list(node.output[1:3])
            elem = model.graph.input[0].type.tensor_type.elem_type
            model.graph.output.extend(helper.make_tensor_value_info(name, elem, None) for name in names)
            return names
    return []


def _counts(nodes) -> dict[str, int]:
    """How many BatchNormalization nodes and convolutions (``Conv`` in any domain: onnxruntime's optimizer
    writes ``FusedConv`` and NCHWc ``Conv``) ``nodes`` hold."""
    ops = [node.op_type for node in nodes]
    return {"batchnorm_nodes": ops.count("BatchNormalization"), "conv_nodes": sum(op.endswith("Conv") for op in ops)}


def _held(graph) -> dict[str, object]:
    """What the graph holds: its node counts and its (first) BatchNormalization node's eps and momentum."""
    from onnx import helper

    held: dict[str, object] = dict(_counts(graph.node))
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            return held | {"eps": attributes.get("epsilon"), "momentum": attributes.get("momentum")}
    return held


def _optimized(model, level: str) -> tuple[object, dict[str, int]]:
    """An onnxruntime session of ``model`` on the CPU provider at graph optimization ``level`` (a
    ``GraphOptimizationLevel`` name), and the node counts of the graph it optimized to (``optimized_*``)."""
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
    options.log_severity_level = 3  # the NCHWc layout's notice that the optimized file is machine-specific
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath).graph.node
    return session, {f"optimized_{name}": n for name, n in _counts(optimized).items()}


def export_and_run(module, x, dtype, exporter: str = "torchscript", engine: str = "onnxruntime",
                   training: bool = False, constant_folding: bool = True, level: str | None = None
                   ) -> tuple[np.ndarray, dict[str, object], list[np.ndarray]]:
    """``module`` exported in mode ``training`` for input ``x`` (NumPy) and run by ``engine``: ``y``, what the
    graph holds (:func:`_held`) and the running mean and variance it computed (none in inference, or where
    its graph computes none). ``level``: onnxruntime at that graph optimization level (:func:`_optimized`), what
    the optimized graph holds reported too."""
    import torch

    x, cast = framework_input(x)
    t = torch.from_numpy(x)
    t = t.to(dtype) if cast else t
    model = export(module, t, exporter, training, constant_folding)
    running = _running_outputs(model) if training else []
    held = _held(model.graph)
    if level is None:
        outputs = onnx_op.evaluate(engine, model)({"x": t.numpy()})
    else:
        session, optimized = _optimized(model, level)
        outputs, held = session.run(None, {"x": t.numpy()}), held | optimized
    y, *statistics = outputs[: 1 + len(running)]
    return np.asarray(y), held, statistics


class ExportedLayer:
    """The eager layer (a PyTorch adapter's: it has ``module`` and ``dtype``) for state, and for training
    unless ``training``; every other call through its exported graph."""

    def __init__(self, eager: Layer, exporter: str = "torchscript", engine: str = "onnxruntime",
                 training: bool = False, **options: object) -> None:
        """``options``: :func:`export_and_run`'s ``constant_folding`` and ``level``."""
        self.eager, self.held, self.options = eager, {}, options
        self.exporter, self.engine, self.training = exporter, engine, training

    def set_state(self, state: State) -> None:
        self.eager.set_state(State(**{k: v for k, v in state.items() if k not in _GRAPH_FACTS}))

    def get_state(self) -> State:
        """The eager module's state; what the last exported graph holds (nothing before the first)."""
        return self.eager.get_state().replace(**({"eps": None, "momentum": None} | self.held))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training and not self.training:
            return self.eager.forward(x, True)
        module = self.eager.module
        y, self.held, statistics = export_and_run(module, x, self.eager.dtype, self.exporter, self.engine, training,
                                                  **self.options)
        # A training graph's state is what it computed: the running statistics it outputs (nothing else, not
        # the batch counter, which no graph output carries).
        with self.eager.torch.no_grad():
            buffers = () if getattr(module, "running_mean", None) is None else (module.running_mean, module.running_var)
            for buffer, value in zip(buffers, statistics):
                buffer.copy_(self.eager.torch.from_numpy(np.asarray(value)))
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
    """``eager``'s layer exported to ONNX by ``exporter`` and run by ``engine``: its inference, and with
    ``training`` its training calls too (see the module docstring)."""

    families = _FAMILIES

    def __init__(self, eager: Implementation, exporter: str = "torchscript", engine: str = "onnxruntime",
                 training: bool = False) -> None:
        self.eager, self.exporter, self.engine, self.training = eager, exporter, engine, training
        suffix = "".join(f".{part}" for part, on in ((exporter, exporter != "torchscript"), ("training", training),
                                                     (engine, engine != "onnxruntime")) if on)
        self.name = eager.name.replace("torch.", "torch.onnx.", 1) + suffix
        # The TorchScript exporter in eval mode into onnxruntime, the most used path, runs with the eager
        # modules (tox -e torch); every other combination is a family of its own.
        self.family = eager.family if not suffix else "torch.onnx"
        self.framework, self.operator = eager.framework, eager.operator
        self.convention, self.device, self.benchmarked = eager.convention, eager.device, False
        self.requires = (*eager.requires, "onnx", *(("onnxruntime",) if engine == "onnxruntime" else ()),
                         *(("onnxscript",) if exporter == "dynamo" else ()))
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
        """Its own name, then the eager implementation's, whose deviations it inherits where the eager module
        runs its training steps: in inference-only variants, and where the exporter traces the module by running
        its forward (TorchScript); the dynamo exporter's ``torch.export`` runs it on fake tensors, leaving the
        module's state alone, so its training graphs inherit nothing."""
        return (self.name,) if self.training and self.exporter == "dynamo" else (self.name, self.eager.name)

    def environment(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        runtime = (f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider" if self.engine == "onnxruntime"
                   else f"onnx.reference.ReferenceEvaluator {onnx.__version__}")
        mode = "training and inference" if self.training else "inference"
        return {**self.eager.environment(), "exporter": EXPORTERS[self.exporter], "exported": mode,
                "runtime": runtime, "onnx": onnx.__version__}

    def defaults(self) -> dict[str, object]:
        return self.eager.defaults()

    def output_dtype(self, spec) -> str:
        return self.eager.output_dtype(spec)

    def build(self, spec) -> ExportedLayer:
        return ExportedLayer(self.eager.build(spec), self.exporter, self.engine, self.training)


# PyTorch's BatchNorm modules (the functional form holds no module to export) and the seeds' CNN.
_EAGER = [impl for impl in torch_nn.IMPLEMENTATIONS
          if impl.device == "cpu" and impl.module is not None and impl.memory_format is None]
_BATCHNORM2D = next(impl for impl in _EAGER if impl.name == "torch.BatchNorm2d")
# Every exporter, mode and engine on BatchNorm2d (BatchNorm1d and 3d export to the same node); the CNN in
# inference (a training graph has no folded form) by each exporter.
IMPLEMENTATIONS = [
    *(Exported(impl) for impl in _EAGER + cnn_torch.IMPLEMENTATIONS),
    *(Exported(_BATCHNORM2D, exporter, engine, training) for exporter in EXPORTERS for engine in ENGINES
      for training in (False, True) if (exporter, engine, training) != ("torchscript", "onnxruntime", False)),
    *(Exported(impl, "dynamo") for impl in cnn_torch.IMPLEMENTATIONS),
]
