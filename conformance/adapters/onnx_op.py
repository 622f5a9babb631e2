"""ONNX ``BatchNormalization`` graphs (``onnx.helper``) for opsets 9, 14 and 15, run by
``onnx.reference.ReferenceEvaluator`` and by onnxruntime's CPU provider.

One node per graph, as exporters write it (``epsilon`` and ``momentum`` always set). Training mode is
what the opset defines: opset 9 has no attribute for it and signals it with five outputs (``Y``, running
mean and variance, saved mean and variance); opsets 14 and 15 set ``training_mode=1`` and return the
running statistics as outputs. The layer keeps parameters and statistics itself and feeds them in;
training replaces its statistics with the outputs. The dtypes are those the opset's schema allows
(``onnx.defs``). ONNX defines no gradients.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np

from reference import ONNX

from ..core.dtypes import dtype_of
from .base import Capabilities, Implementation, LayerSpec, State

OPSETS = (9, 14, 15)
# The dtypes of X each opset's schema allows (type constraint T in onnx.defs; tests/test_onnx_schema.py
# checks this table against the installed onnx, which is never imported outside the worker).
SCHEMA_DTYPES = {9: frozenset({"float64", "float32", "float16"}),
                 14: frozenset({"float64", "float32", "float16", "bfloat16"}),
                 15: frozenset({"float64", "float32", "float16", "bfloat16"})}
_INPUTS = ("X", "scale", "B", "input_mean", "input_var")
_STATE_INPUTS = {"gamma": "scale", "beta": "B", "running_mean": "input_mean", "running_var": "input_var"}
_TENSOR_TYPES = {"float32": "FLOAT", "float16": "FLOAT16", "float64": "DOUBLE", "bfloat16": "BFLOAT16"}
# onnxruntime's CPU provider registers BatchNormalization for these only (bfloat16: NOT_IMPLEMENTED).
_ORT_DTYPES = frozenset({"float32", "float16", "float64"})


def _schema(opset: int):
    from onnx import defs

    return defs.get_schema("BatchNormalization", opset, "")


@functools.cache
def _model(opset: int, rank: int, dtype: str, training: bool, eps: float, momentum: float):
    """The one-node model: inputs and outputs all of the input's dtype (allowed by every opset)."""
    from onnx import TensorProto, checker, helper

    elem = getattr(TensorProto, _TENSOR_TYPES[dtype])
    outputs = ["Y"]
    attributes: dict = {"epsilon": eps, "momentum": momentum}
    if opset >= 14:
        attributes["training_mode"] = int(training)
        outputs += ["running_mean", "running_var"] if training else []
    elif training:
        outputs += ["running_mean", "running_var", "saved_mean", "saved_var"]
    node = helper.make_node("BatchNormalization", list(_INPUTS), outputs, **attributes)
    shapes = {"X": [None] * rank, "Y": [None] * rank}
    graph = helper.make_graph(
        [node], "batchnorm",
        [helper.make_tensor_value_info(n, elem, shapes.get(n, [None])) for n in _INPUTS],
        [helper.make_tensor_value_info(n, elem, shapes.get(n, [None])) for n in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # readable by every onnxruntime release that runs these opsets
    checker.check_model(model, full_check=True)
    return model


@functools.cache
def _session(engine: str, opset: int, rank: int, dtype: str, training: bool, eps: float, momentum: float):
    """A callable ``feeds -> outputs`` for one model; made once per configuration."""
    return evaluate(engine, _model(opset, rank, dtype, training, eps, momentum))


def evaluate(engine: str, model) -> Callable[[dict], list]:
    """``model`` run by ``engine`` (``ReferenceEvaluator`` or ``onnxruntime``'s CPU provider): a callable
    ``feeds -> outputs``."""
    if engine == "ReferenceEvaluator":
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        return lambda feeds: evaluator.run(None, feeds)
    import onnxruntime

    # onnxruntime sizes its pool from the machine's cores, not from the CPUs this process may use: pinned to
    # one CPU (the benchmarks' BN_BENCH_THREADS=1, the counted ones), it still started a second thread.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


class OnnxLayer:
    def __init__(self, spec: LayerSpec, engine: str, opset: int) -> None:
        self.dtype = dtype_of(spec.dtype)
        self.spec, self.engine, self.opset = spec, engine, opset
        c = spec.num_features
        self.values = {"scale": np.ones(c), "B": np.zeros(c), "input_mean": np.zeros(c), "input_var": np.ones(c)}
        self.values = {k: v.astype(self.dtype) for k, v in self.values.items()}

    def set_state(self, state: State) -> None:
        for field, name in _STATE_INPUTS.items():
            if getattr(state, field) is not None:
                self.values[name] = np.asarray(getattr(state, field)).astype(self.dtype)

    def get_state(self) -> State:
        from onnx import helper

        values = {field: np.asarray(self.values[name]).astype(np.float64) for field, name in _STATE_INPUTS.items()}
        spec = self.spec
        node = _model(self.opset, spec.rank, spec.dtype, False, spec.eps, spec.momentum).graph.node[0]
        held = {a.name: helper.get_attribute_value(a) for a in node.attribute}  # as the model stores them
        return State(**values, eps=held["epsilon"], momentum=held["momentum"])

    def _run(self, x: np.ndarray, training: bool) -> list:
        spec = self.spec
        run = _session(self.engine, self.opset, spec.rank, spec.dtype, training, spec.eps, spec.momentum)
        x = np.asarray(x)  # integer or boolean input goes to the engine as it is, for its own type check
        return run({"X": x.astype(self.dtype) if x.dtype.kind not in "biu" else x, **self.values})

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return np.asarray(self._step(x, training))

    def _step(self, x: np.ndarray, training: bool):
        outputs = self._run(x, training)
        if training:
            self.values["input_mean"], self.values["input_var"] = outputs[1], outputs[2]
        return outputs[0]

    def forward_backward(self, x, dy, training):
        raise NotImplementedError("ONNX defines no gradients for BatchNormalization")

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        if operation == "forward_backward":
            raise NotImplementedError("ONNX defines no gradients for BatchNormalization")
        x = np.asarray(x).astype(self.dtype)  # converted once; both engines take and return NumPy
        training = operation == "forward_training"
        return lambda: self._step(x, training)


class OnnxImplementation(Implementation):
    family = "onnx"
    convention = ONNX

    def __init__(self, engine: str, opset: int) -> None:
        self.engine, self.opset = engine, opset
        self.name = f"onnx.{engine}.opset{opset}"
        self.framework = "onnx" if engine == "ReferenceEvaluator" else "onnxruntime"
        self.requires = ("onnx",) if engine == "ReferenceEvaluator" else ("onnx", "onnxruntime")
        dtypes = SCHEMA_DTYPES[opset] & (_ORT_DTYPES if engine == "onnxruntime" else SCHEMA_DTYPES[opset])
        self.capabilities = Capabilities(dtypes=dtypes, channel_axes=frozenset({1}), features=frozenset(),
                                         no_gradients="ONNX defines no gradients for BatchNormalization")

    def unsupported(self, spec: LayerSpec) -> list[str]:
        if self.engine == "onnxruntime" and spec.dtype in SCHEMA_DTYPES[self.opset] - _ORT_DTYPES:
            return [f"dtype {spec.dtype}: the CPU provider has no kernel for BatchNormalization (NOT_IMPLEMENTED)"]
        return super().unsupported(spec)

    def environment(self) -> dict[str, str]:
        import onnx

        env = {"version": onnx.__version__, "opset": str(self.opset), "engine": self.engine}
        if self.engine == "onnxruntime":
            import onnxruntime

            env |= {"version": onnxruntime.__version__, "onnx_version": onnx.__version__,
                    "providers": "CPUExecutionProvider"}
        return env

    def defaults(self) -> dict[str, float | int]:
        attributes = _schema(self.opset).attributes
        # The schema stores float32: the shortest decimal that is that float32 (0.9, not 0.8999999761581421).
        def default(name: str) -> float:
            return float(np.format_float_positional(np.float32(attributes[name].default_value.f)))

        # The channel axis is fixed by the operator: X is (N x C x D1 x ... x Dn).
        return {"momentum": default("momentum"), "eps": default("epsilon"), "channel_axis": 1}

    def build(self, spec: LayerSpec) -> OnnxLayer:
        return OnnxLayer(spec, self.engine, self.opset)


IMPLEMENTATIONS = [OnnxImplementation(engine, opset) for engine in ("ReferenceEvaluator", "onnxruntime")
                   for opset in OPSETS]
