"""ONNX ``LayerNormalization`` (opset 17) graphs, run by ``onnx.reference.ReferenceEvaluator`` and by
onnxruntime's CPU provider.

One node per graph, as exporters write it: ``axis`` the first normalized axis (counted from the end),
``epsilon`` set, ``stash_type`` at its default (1: statistics in float32). ``Scale`` is a required input: a
layer without one is exported with a constant ``Scale`` of ones (as ``torch.onnx`` writes
``elementwise_affine=False``); ``B`` is optional and left out without a bias. The layer keeps its
parameters and feeds them in. ONNX defines no gradients.
"""

from __future__ import annotations

import functools

import numpy as np

from reference import LAYERNORM_CONVENTIONS

from ..core.dtypes import dtype_of
from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities, Implementation, State
from .onnx_op import evaluate

OPSETS = {"LayerNormalization": 17, "RMSNormalization": 23}  # where each operator first appears
_TENSOR_TYPES = {"float32": "FLOAT", "float16": "FLOAT16", "float64": "DOUBLE", "bfloat16": "BFLOAT16"}
# onnxruntime's CPU provider registers LayerNormalization for these (bfloat16: NOT_IMPLEMENTED).
_ORT_DTYPES = frozenset({"float32", "float16", "float64"})
_NO_GRADIENTS = "ONNX defines no gradients for its normalizations"


def _schema(op: str):
    from onnx import defs

    return defs.get_schema(op, OPSETS[op], "")


@functools.cache
def _model(op: str, rank: int, shape: tuple[int, ...], dtype: str, eps: float, scale: bool, bias: bool):
    """The one-node model of ``op``; without a scale, a constant Scale of ones."""
    from onnx import TensorProto, checker, helper, numpy_helper

    elem = getattr(TensorProto, _TENSOR_TYPES[dtype])
    inputs = ["X", "Scale", *(["B"] if bias else [])]
    node = helper.make_node(op, inputs, ["Y"], axis=-len(shape), epsilon=eps)
    fed = ["X", *(["Scale"] if scale else []), *(["B"] if bias else [])]
    initializers = [] if scale else [numpy_helper.from_array(np.ones(shape, dtype_of(dtype)), "Scale")]
    graph = helper.make_graph(
        [node], "layernorm",
        # X and Y of the layer's rank, as exporters write them (onnxruntime then checks the input's rank).
        [helper.make_tensor_value_info(n, elem, [None] * rank if n == "X" else list(shape)) for n in fed],
        [helper.make_tensor_value_info("Y", elem, [None] * rank)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSETS[op])])
    model.ir_version = 8 if OPSETS[op] < 21 else 10
    checker.check_model(model, full_check=True)
    return model


@functools.cache
def _session(engine: str, *key):
    return evaluate(engine, _model(*key))


class OnnxNormLayer:
    """A one-node normalization graph behind the layer protocol: the layer keeps gamma and beta (of ``shape``)
    and feeds them as the node's inputs ``SCALE`` and ``B``; a subclass names its graph (``model``, ``session``)."""

    SCALE = "Scale"

    def __init__(self, spec, engine: str, shape: tuple[int, ...]) -> None:
        self.spec, self.engine, self.dtype = spec, engine, dtype_of(spec.dtype)
        self.values = {**({self.SCALE: np.ones(shape, self.dtype)} if spec.affine else {}),
                       **({"B": np.zeros(shape, self.dtype)} if spec.bias else {})}

    def model(self):
        raise NotImplementedError

    def session(self):
        raise NotImplementedError

    def set_state(self, state: State) -> None:
        for field, name in (("gamma", self.SCALE), ("beta", "B")):
            if state.get(field) is not None and name in self.values:
                self.values[name] = np.asarray(state[field]).astype(self.dtype)

    def get_state(self) -> State:
        from onnx import helper

        node = self.model().graph.node[0]
        eps = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon")  # as stored
        values = {field: np.array(self.values[name], np.float64) if name in self.values else None  # copies
                  for field, name in (("gamma", self.SCALE), ("beta", "B"))}
        return State(**values, eps=eps)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = np.asarray(x)  # integer or boolean input goes to the engine as it is, for its own type check
        feeds = {"X": x.astype(self.dtype) if x.dtype.kind not in "biu" else x, **self.values}
        return np.asarray(self.session()(feeds)[0])

    def forward_backward(self, x, dy, training):
        raise NotImplementedError(_NO_GRADIENTS)


class OnnxLayerNormLayer(OnnxNormLayer):
    def __init__(self, spec: LayerNormSpec, engine: str, op: str = "LayerNormalization") -> None:
        super().__init__(spec, engine, spec.normalized_shape)
        self.op = op

    def _key(self) -> tuple:
        spec = self.spec
        return self.op, spec.rank, spec.normalized_shape, spec.dtype, spec.eps, spec.affine, spec.bias

    def model(self):
        return _model(*self._key())

    def session(self):
        return _session(self.engine, *self._key())


class OnnxLayerNorm(Implementation):
    family = "onnx"
    operator = LAYERNORM
    convention = LAYERNORM_CONVENTIONS["onnx_layernorm"]
    op = "LayerNormalization"

    @property
    def benchmarked(self) -> bool:
        """onnxruntime's (the ReferenceEvaluator is NumPy written for clarity, not speed)."""
        return self.engine == "onnxruntime"

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.name = f"onnx.{engine}.{self.op}"
        self.framework = "onnx" if engine == "ReferenceEvaluator" else "onnxruntime"
        self.requires = ("onnx",) if engine == "ReferenceEvaluator" else ("onnx", "onnxruntime")
        self.capabilities = Capabilities(
            ranks=frozenset({1, 2, 3, 4, 5}), no_gradients=_NO_GRADIENTS,
            features=frozenset({"affine_false", "scale_false", "bias_false", "multi_axis"}))

    def unsupported(self, spec: LayerNormSpec) -> list[str]:
        if self.engine == "onnxruntime" and spec.dtype not in _ORT_DTYPES:
            return [f"dtype {spec.dtype}: the CPU provider has no kernel for {self.op} (NOT_IMPLEMENTED)"]
        return super().unsupported(spec)

    def environment(self) -> dict[str, str]:
        import onnx

        env = {"version": onnx.__version__, "opset": str(OPSETS[self.op]), "engine": self.engine}
        if self.engine == "onnxruntime":
            import onnxruntime

            env |= {"version": onnxruntime.__version__, "onnx_version": onnx.__version__}
        return env

    def defaults(self) -> dict[str, object]:
        attributes = _schema(self.op).attributes
        # The schema stores float32: the shortest decimal that is that float32 (1e-05).
        eps = float(np.format_float_positional(np.float32(attributes["epsilon"].default_value.f)))
        # Scale is a required input, B an optional one: present unless left out.
        return {"eps": eps, "axes": attributes["axis"].default_value.i, "affine": True, "bias": True}

    def build(self, spec: LayerNormSpec) -> OnnxLayerNormLayer:
        return OnnxLayerNormLayer(spec, self.engine, self.op)


IMPLEMENTATIONS = [OnnxLayerNorm("ReferenceEvaluator"), OnnxLayerNorm("onnxruntime")]
