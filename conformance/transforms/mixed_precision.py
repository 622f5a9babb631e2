"""Mixed precision (issue 22): BatchNorm as mixed-precision training runs it, half-precision activations beside
float32 variables.

- Keras 3 on each backend and tf-keras (fused and not) with the layer's ``dtype`` a mixed policy,
  ``mixed_float16`` or ``mixed_bfloat16``: inputs and outputs in the policy's compute dtype (float16, bfloat16),
  gamma, beta and the moving statistics float32 (the policy's variable dtype), the statistics computed in
  float32 (Keras' ``BatchNormalization.call`` casts low-precision input up);
- PyTorch's eager modules and ``F.batch_norm`` under ``torch.autocast("cpu", dtype)`` for bfloat16 and float16:
  the module built in float32 and handed its input in the autocast dtype, as an autocast convolution before it
  returns it (autocast leaves batch_norm out of its casting lists; the module runs its mixed-type kernel).

What such a layer promises is the reference's BatchNorm on the half-precision input, with the tolerance model of
the half-precision output and float32 accumulation (the case's ``dtype`` is the compute dtype, its
``accumulation_dtype`` float32), and running statistics held to float32's tolerance
(``BatchNormReference(state_dtype=...)``): a layer that stored them in its compute dtype fails. Every state
comparison also checks that each variable is float32 (``<field>_dtype``). Each grid's float32 cases run in the
compute dtype (a mixed layer casts float32 input to it), so running statistics, options and edge cases are
checked in it too. The transforms' implementations form families of their own (``<family>.mixed_precision``),
which ``tox -e report`` runs and the framework environments do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..adapters import keras3, torch_nn
from ..adapters import tf_keras as tf_keras_adapter
from ..adapters.base import Derivation, Implementation, Layer, LayerSpec
from ..adapters.keras3 import KerasLayer
from ..adapters.tf_keras import TfKerasLayer
from ..adapters.torch_nn import TorchLayer
from ..core.case import Case
from ..core.comparison import Comparison, Expected, fact
from ..core.state import State
from ..operators import Delegating
from ..operators.batchnorm.reference import BatchNormReference

__all__ = ["POLICIES", "VARIABLE_DTYPE", "MixedPrecision", "MixedReference"]

# Keras' mixed policies -> their compute dtype; PyTorch's autocast takes the compute dtype itself.
POLICIES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
VARIABLE_DTYPE = "float32"
_FAMILIES = frozenset({"forward", "running_stats", "gradients", "construction", "contract", "edge_cases", "large",
                       "conventions"})
_SCALED_FAMILIES = frozenset({"gradients", "large"})  # where a backward runs
_INITIAL_SCALE = 2.0**16  # torch.amp.GradScaler's init_scale


class _Variables:
    """What a mixed layer adds to its adapter's layer (the class after this one in the bases): the dtype of
    each variable in its state, as ``<field>_dtype``."""

    def variable_dtypes(self) -> dict[str, str]:
        raise NotImplementedError

    def get_state(self) -> State:
        held = super().get_state()
        return held.replace(**{f"{name}_dtype": dtype for name, dtype in self.variable_dtypes().items()})


class MixedKerasLayer(_Variables, KerasLayer):
    def __init__(self, spec: LayerSpec, policy: str) -> None:
        import keras

        super().__init__(spec, dtype=keras.DTypePolicy(policy))

    def variable_dtypes(self) -> dict[str, str]:
        return {name: str(var.dtype) for name, var in self._variables().items() if var is not None}


class MixedTfKerasLayer(_Variables, TfKerasLayer):
    def __init__(self, spec: LayerSpec, fused: bool, policy: str) -> None:
        import tf_keras

        super().__init__(spec, fused, dtype=tf_keras.mixed_precision.Policy(policy))

    def variable_dtypes(self) -> dict[str, str]:
        variables = {name: getattr(self.layer, var) for name, var in self.variables.items()}
        return {name: var.dtype.name for name, var in variables.items() if var is not None}


class AutocastLayer(_Variables, TorchLayer):
    """The eager module (or functional form) built in float32, called under ``torch.autocast`` with its input
    in the autocast dtype."""

    def __init__(self, spec: LayerSpec, module: str | None, memory_format: str | None) -> None:
        super().__init__(replace(spec, dtype=VARIABLE_DTYPE), module, memory_format, "cpu")
        self.dtype = getattr(self.torch, spec.dtype)  # what its inputs are cast to; its variables are float32

    def _call(self, x, training: bool):
        with self.torch.autocast("cpu", dtype=self.dtype):
            return super()._call(x, training)

    def variable_dtypes(self) -> dict[str, str]:
        tensors = {**self.params, **self.buffers}
        return {name: str(t.dtype).removeprefix("torch.") for name, t in tensors.items() if t is not None}


class ScaledAutocastLayer(AutocastLayer):
    """The backward as a gradient scaler (``torch.amp.GradScaler``) runs it: ``dy`` scaled by ``S``, the
    gradients unscaled by ``1/S`` in float32. ``S`` starts at GradScaler's initial scale, 2**16, and is halved
    while any gradient overflows (down to 1), as GradScaler skips the step and halves it; the forward runs once."""

    def _forward_backward(self, xt, dyt, training: bool) -> tuple:
        inputs = [xt, *(p for p in self.params.values() if p is not None)]
        y = self._call(xt, training)
        scale = _INITIAL_SCALE
        while True:
            grads = self.torch.autograd.grad(y, inputs, dyt * scale, retain_graph=True)
            if scale <= 1 or all(bool(g.isfinite().all()) for g in grads):
                break
            scale /= 2
        dx, *dparams = (g.float() / scale for g in grads)
        return y, dx, *(dparams or (None, None))


@dataclass(frozen=True)
class ExpectedDtype:
    """A variable's dtype, judged as a fact (``Mirror.compare_state`` judges every state field it expects)."""

    dtype: str
    optional: bool = False

    def judge(self, quantity: str, actual: object) -> Comparison:
        same = actual == self.dtype
        return fact(quantity, same, f"held in {actual}" + ("" if same else f", where {self.dtype} is expected"))


class MixedReference(Delegating):
    """The reference with its running statistics held in float32, and every variable's dtype expected float32."""

    def __init__(self, side: BatchNormReference) -> None:
        self.side = side

    def state(self, exact: bool = False) -> dict[str, Expected | ExpectedDtype]:
        expected = self.side.state(exact)
        counter = self.side.convention.counter
        dtypes = {f"{name}_dtype": ExpectedDtype(VARIABLE_DTYPE) for name, want in expected.items()
                  if want.value is not None and name != counter}
        return {**expected, **dtypes}


class MixedPrecision(Implementation):
    """``eager``'s layer built by ``build`` (spec -> layer) on the mixed-precision ``path`` (Keras' and tf-keras'
    ``mixed_precision`` policies, PyTorch's ``autocast``) in ``variant`` (see the module docstring): named
    ``<family>.<path>.<the rest of eager's name>.<variant>``, of the family ``<family>.<path>``."""

    benchmarked = False

    def __init__(self, eager: Implementation, path: str, variant: str, compute_dtype: str,
                 build: Callable[[LayerSpec], Layer], families: frozenset[str] = _FAMILIES) -> None:
        self.eager, self.compute_dtype, self._build, self.families = eager, compute_dtype, build, families
        self.family = f"{eager.family}.{path}"
        self.name = f"{self.family}{eager.name.removeprefix(eager.family)}.{variant}"
        self.precision = f"{path} {variant}"
        self.framework, self.operator, self.convention = eager.framework, eager.operator, eager.convention
        self.requires, self.process_env = eager.requires, eager.process_env
        self.derivation = Derivation(path, (eager.name,))
        self.capabilities = replace(eager.capabilities, dtypes=frozenset({compute_dtype}), double_backward=False)

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The operator's grid in the compute dtype: its cases in that dtype, and its float32 cases cast to it
        (what the layer does to float32 input), each case once."""
        cases: dict[str, Case] = {}
        for name, case in self.operator.cases(check):
            if case.dtype == VARIABLE_DTYPE:
                computed = case.with_(dtype=self.compute_dtype)
                name, case = (computed.id if name == case.id else name), computed
            if case.dtype == self.compute_dtype:
                cases.setdefault(name, case)
        return list(cases.items())

    def reference(self, case: Case, spec: LayerSpec) -> MixedReference:
        return MixedReference(BatchNormReference(case, self.convention, spec, state_dtype=VARIABLE_DTYPE))

    def deviation_names(self) -> tuple[str, ...]:
        """Its own name, then the eager implementation's, whose kernels it runs."""
        return (self.name, self.eager.name)

    def environment(self) -> dict[str, str]:
        return {**self.eager.environment(), "precision": self.precision}

    def defaults(self) -> dict[str, object]:
        return self.eager.defaults()

    def build(self, spec: LayerSpec) -> Layer:
        return self._build(spec)


def _keras(eager: keras3.KerasImplementation, policy: str) -> MixedPrecision:
    def build(spec: LayerSpec) -> MixedKerasLayer:
        eager._keras()  # the worker's backend is the implementation's
        return MixedKerasLayer(spec, policy)

    return MixedPrecision(eager, "mixed_precision", policy, POLICIES[policy], build)


def _tf_keras(eager: tf_keras_adapter.TfKerasImplementation, policy: str) -> MixedPrecision:
    return MixedPrecision(eager, "mixed_precision", policy, POLICIES[policy],
                          lambda spec: MixedTfKerasLayer(spec, eager.fused, policy))


def _autocast(eager: torch_nn.TorchImplementation, dtype: str, scaled: bool = False) -> MixedPrecision:
    layer = ScaledAutocastLayer if scaled else AutocastLayer
    return MixedPrecision(eager, "autocast", dtype + (".scaled" if scaled else ""), dtype,
                          lambda spec: layer(spec, eager.module, eager.memory_format),
                          _SCALED_FAMILIES if scaled else _FAMILIES)


_TORCH_CPU = [eager for eager in torch_nn.IMPLEMENTATIONS if eager.device == "cpu"]
# Keras' policies on every backend and both tf-keras paths; autocast around every eager PyTorch form, with and
# without the scaled backward.
IMPLEMENTATIONS = [
    *(_keras(eager, policy) for eager in keras3.IMPLEMENTATIONS for policy in POLICIES),
    *(_tf_keras(eager, policy) for eager in tf_keras_adapter.IMPLEMENTATIONS for policy in POLICIES),
    *(_autocast(eager, dtype) for eager in _TORCH_CPU for dtype in POLICIES.values()),
    *(_autocast(eager, dtype, scaled=True) for eager in _TORCH_CPU for dtype in POLICIES.values()),
]
