"""ONNX ``InstanceNormalization`` (opset 22) and ``GroupNormalization`` (opsets 21 and 18) graphs, run by
``onnx.reference.ReferenceEvaluator`` and by onnxruntime's CPU provider.

One node per graph, as exporters write it: ``epsilon`` set, ``num_groups`` for GroupNormalization,
``stash_type`` (opset 21) at its default (1: the first stage in float32). Scale and bias are required inputs:
a layer without one is exported with a constant of ones (scale) or zeros (bias). Opset 18's scale and bias
are per group (``spec.per_group``), opset 21's per channel. The layer keeps its parameters and feeds them in.
Both operators are channels first. ONNX defines no gradients.
"""

from __future__ import annotations

import functools

import numpy as np

from reference import GROUPNORM_CONVENTIONS, INSTANCE, REQUIRED

from ..core.dtypes import dtype_of
from ..operators.groupnorm import GROUPNORM, GroupNormSpec
from .base import Capabilities, Implementation
from .layernorm_onnx import _NO_GRADIENTS, _TENSOR_TYPES, OnnxNormLayer
from .onnx_op import evaluate

# InstanceNormalization at its newest definition in onnx 1.23 (since_version 22: bfloat16 added);
# GroupNormalization at 21 (scale and bias per channel) and at 18 (per group, deprecated by 21).
OPSETS = {"InstanceNormalization": (22,), "GroupNormalization": (21, 18)}
# The dtypes onnxruntime's CPU provider runs, and why not the others (NOT_IMPLEMENTED). InstanceNormalization's
# kernel is float32 only (float16 runs through the casts the session inserts around float16 nodes); GroupNormalization
# has no CPU kernel and is expanded into its function body, whose Mul and ReduceMean lack bfloat16 kernels.
_ORT_DTYPES = {"InstanceNormalization": frozenset({"float32", "float16"}),
               "GroupNormalization": frozenset({"float32", "float16", "float64"})}
_ORT_MISSING = {"InstanceNormalization": "no kernel for InstanceNormalization(22)",
                "GroupNormalization": "no kernel for Mul(14) and ReduceMean(18) of GroupNormalization's function body"}


def _schema(op: str, opset: int):
    from onnx import defs

    return defs.get_schema(op, opset, "")


@functools.cache
def _model(op: str, opset: int, rank: int, groups: int, parameters: int, dtype: str, eps: float, scale: bool,
           bias: bool):
    """The one-node model; without a scale a constant scale of ones, without a bias one of zeros."""
    from onnx import TensorProto, checker, helper, numpy_helper

    elem = getattr(TensorProto, _TENSOR_TYPES[dtype])
    attributes = {"epsilon": eps, **({"num_groups": groups} if op == "GroupNormalization" else {})}
    node = helper.make_node(op, ["X", "scale", "B"], ["Y"], **attributes)
    fed = ["X", *(["scale"] if scale else []), *(["B"] if bias else [])]
    initializers = [numpy_helper.from_array(np.full(parameters, value, dtype_of(dtype)), name)
                    for name, value, present in (("scale", 1, scale), ("B", 0, bias)) if not present]
    graph = helper.make_graph(
        [node], op,
        # X and Y of the layer's rank, as exporters write them (onnxruntime then checks the input's rank).
        [helper.make_tensor_value_info(n, elem, [None] * rank if n == "X" else [parameters]) for n in fed],
        [helper.make_tensor_value_info("Y", elem, [None] * rank)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    # The checker rejects GroupNormalization at opsets 18-20 ("Op registered for GroupNormalization is
    # deprecated in domain_version of 18"): that schema is marked deprecated; both engines still run it.
    if not _schema(op, opset).deprecated:
        checker.check_model(model, full_check=True)
    return model


@functools.cache
def _session(engine: str, *key):
    return evaluate(engine, _model(*key))


class OnnxGroupNormLayer(OnnxNormLayer):
    SCALE = "scale"

    def __init__(self, spec: GroupNormSpec, engine: str, op: str, opset: int) -> None:
        super().__init__(spec, engine, spec.parameter_shape)
        self.op, self.opset = op, opset

    def _key(self) -> tuple:
        spec = self.spec
        return (self.op, self.opset, spec.rank, spec.groups, spec.parameter_shape[0], spec.dtype, spec.eps, spec.affine,
                spec.bias)

    def model(self):
        return _model(*self._key())

    def session(self):
        return _session(self.engine, *self._key())


class OnnxGroupNorm(Implementation):
    family = "onnx"
    operator = GROUPNORM

    @property
    def benchmarked(self) -> bool:
        """onnxruntime's (the ReferenceEvaluator is NumPy written for clarity, not speed)."""
        return self.engine == "onnxruntime"

    def __init__(self, engine: str, op: str, opset: int) -> None:
        self.engine, self.op, self.opset = engine, op, opset
        instance = op == "InstanceNormalization"
        self.convention = GROUPNORM_CONVENTIONS[
            "onnx_instancenorm" if instance else "onnx_groupnorm" if opset >= 21 else "onnx_groupnorm_opset18"]
        self.name = f"onnx.{engine}.{op}" + ("" if opset == OPSETS[op][0] else f".opset{opset}")
        self.framework = "onnx" if engine == "ReferenceEvaluator" else "onnxruntime"
        self.requires = ("onnx",) if engine == "ReferenceEvaluator" else ("onnx", "onnxruntime")
        features = {"affine_false", "scale_false", "bias_false"} | (set() if instance else {"grouped"})
        # onnxruntime's InstanceNormalization kernel rejects rank 2 ("Invalid input data: number of dimensions
        # is less than 3"); the operator's (N x C x D1 ... Dn) and the ReferenceEvaluator take it.
        ranks = {3, 4, 5} if instance and engine == "onnxruntime" else {2, 3, 4, 5}
        self.capabilities = Capabilities(ranks=frozenset(ranks), channel_axes=frozenset({1}),
                                         no_gradients=_NO_GRADIENTS, features=frozenset(features))

    def unsupported(self, spec: GroupNormSpec) -> list[str]:
        if self.engine == "onnxruntime" and spec.dtype not in _ORT_DTYPES[self.op]:
            return [f"dtype {spec.dtype}: the CPU provider has {_ORT_MISSING[self.op]} (NOT_IMPLEMENTED)"]
        return super().unsupported(spec)

    def environment(self) -> dict[str, str]:
        import onnx

        env = {"version": onnx.__version__, "opset": str(self.opset), "engine": self.engine}
        if self.engine == "onnxruntime":
            import onnxruntime

            env |= {"version": onnxruntime.__version__, "onnx_version": onnx.__version__}
        return env

    def defaults(self) -> dict[str, object]:
        attributes = _schema(self.op, self.opset).attributes
        # The schema stores float32: the shortest decimal that is that float32 (1e-05).
        eps = float(np.format_float_positional(np.float32(attributes["epsilon"].default_value.f)))
        # InstanceNormalization's groups are its channels; GroupNormalization's num_groups has no default.
        groups = INSTANCE if self.op == "InstanceNormalization" else (
            REQUIRED if attributes["num_groups"].required else attributes["num_groups"].default_value.i)
        # scale and bias are required inputs: present unless a constant replaces them.
        return {"eps": eps, "groups": groups, "affine": True, "bias": True}

    def build(self, spec: GroupNormSpec) -> OnnxGroupNormLayer:
        return OnnxGroupNormLayer(spec, self.engine, self.op, self.opset)


IMPLEMENTATIONS = [OnnxGroupNorm(engine, op, opset) for op, opsets in OPSETS.items() for opset in opsets
                   for engine in ("ReferenceEvaluator", "onnxruntime")]
