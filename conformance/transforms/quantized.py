"""Quantized BatchNorm: PyTorch's ``torch.ao.nn.quantized.BatchNorm2d``/``3d`` (inference only, on quint8
tensors), as post-training quantization deploys a trained BatchNorm, checked by the generic checks.

The layer trains eagerly (``nn.BatchNorm2d``/``3d``), as users train before they quantize; every inference call
converts the module with its current state (``from_reference``: its parameters and running statistics, and an
output scale and zero point) and runs it on the input quantized to quint8, then dequantizes. What both sides
quantize with is fixed here, in float64, identically for the layer and its reference side:

- the input's scale and zero point from its range (zero included, as ``MinMaxObserver`` calibrates:
  ``scale = (high - low) / 255``, at least float32's eps; ``zero_point = round(-low / scale)``), and its codes
  ``clip(round(x / scale) + zero_point, 0, 255)``; the layer hands PyTorch the codes' values (``(q - zp) scale``
  in float32, which ``quantize_per_tensor`` maps back to exactly those codes), so both sides start from the same
  quantized input;
- the output's scale and zero point from the range BatchNorm maps the input's whole grid to with the running
  statistics the side holds (every output is representable, none saturates).

The reference side (:class:`QuantizedReference`) is BatchNorm's float64 reference in inference on the
dequantized input, requantized on the output grid, within :func:`quanta_tolerance`; the scale and zero point of
the quantized output the module returned are compared as its hyperparameters. Training calls are the
eager module's, as BatchNorm's reference answers them.

Which checks apply: the inference calls of the forward, running-statistics, construction, edge-case, contract,
random and production-size checks, float32 (quantize_per_tensor's input), channels first at the module's rank
(4 or 5). Not gradients (a quantized module has none), not inputs with NaN or infinity (a quantized tensor
holds neither: those edge cases are not generated), not ``affine=False`` or ``track_running_stats=False``
(the quantized module always has weight, bias and running statistics).
"""

from __future__ import annotations

import numpy as np

from reference import TORCH, running_statistics

from ..adapters import torch_nn
from ..adapters.base import Capabilities, Derivation, Layer
from ..core.case import Case
from ..core.comparison import Expected
from ..core.dtypes import unit_roundoff
from ..operators import Delegating, ReferenceSide
from ..operators.batchnorm.tolerances import SAFETY
from .exported import Exported
from .folded import InferencePath

__all__ = ["CODES", "Quantized", "QuantizedLayer", "QuantizedReference", "input_grid", "output_qparams", "qparams",
           "quanta_tolerance", "quantize"]

CODES = 255  # quint8: codes 0..255
_U32 = unit_roundoff("float32")
_MIN_SCALE = float(np.finfo(np.float32).eps)  # MinMaxObserver's floor for the scale
_FAMILIES = frozenset({"forward", "running_stats", "construction", "edge_cases", "contract", "random", "large"})
_FACTS = ("output_scale", "output_zero_point")


def qparams(low: float, high: float) -> tuple[float, int]:
    """The scale and zero point of the grid of 256 codes over ``[low, high]`` widened to hold zero."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / CODES, _MIN_SCALE)
    return scale, int(np.clip(np.round(-low / scale), 0, CODES))


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The codes of ``x`` (float64, as integers)."""
    return np.clip(np.round(np.asarray(x, np.float64) / scale) + zero_point, 0, CODES)


def input_grid(x: np.ndarray) -> tuple[float, int, np.ndarray]:
    """The input's scale, zero point and dequantized values (float64; see the module docstring)."""
    x = np.asarray(x, np.float64)
    scale, zero_point = qparams(float(x.min(initial=0.0)), float(x.max(initial=0.0)))
    return scale, zero_point, (quantize(x, scale, zero_point) - zero_point) * scale


def output_qparams(state, momentum: float | None, convention, scale: float, zero_point: int) -> tuple[float, int]:
    """The output's scale and zero point: the range BatchNorm maps the input grid ``[-zp, 255 - zp] scale``
    to with ``state``'s parameters and running statistics, per channel an affine map."""
    mean, var = running_statistics(state, momentum, convention)
    a = np.asarray(state["gamma"], np.float64) / np.sqrt(var + state["eps"])
    b = np.asarray(state["beta"], np.float64) - mean * a
    ends = np.array([-zero_point, CODES - zero_point]) * scale
    images = a[:, None] * ends + b[:, None]
    return qparams(float(images.min(initial=0.0)), float(images.max(initial=0.0)))


def quanta_tolerance(scale: float, y_tolerance: np.ndarray, scale_error: float) -> np.ndarray:
    """How far the layer's dequantized output may be from the reference's requantized one.

    Each side rounds its own output to the nearest code of its grid: ``|deq - y| <= scale / 2`` on each (no
    output saturates), so two outputs that differ by any amount, however small, across a rounding boundary
    differ by one quantum, and one quantum is the least tolerance. The layer's quantum is its module's
    scale, a float32 buffer: ``scale (1 + u32)``; where its running statistics differ from the reference's
    (they trained), its scale differs by ``scale_error`` more. The outputs before rounding differ by
    BatchNorm's float32 inference tolerance ``y_tolerance`` (the kernel computes ``alpha q + beta`` per
    channel in float32, folded as the tolerance model's ``x scale + shift``), and the kernel works in
    quanta: its few roundings of values up to 256 quanta (the codes, the zero point) add ``SAFETY u32 256``
    quanta."""
    return scale * (1 + _U32 + SAFETY * _U32 * (CODES + 1)) + scale_error + y_tolerance


class QuantizedLayer(InferencePath):
    """The eager module (``torch_nn.TorchLayer``) for training and state; every inference call through the
    quantized module converted from it, whose output's scale and zero point join the state."""

    FACTS = _FACTS
    what = "a quantized module"

    def __init__(self, eager: Layer, module: str) -> None:
        super().__init__(eager)
        self.module = module

    def infer(self, x: np.ndarray) -> np.ndarray:
        from torch.ao.nn import quantized as nnq

        torch = self.eager.torch
        t = self.eager._input(x)
        scale, zero_point = 1.0, 0
        if t.is_floating_point():  # anything else goes to quantize_per_tensor as it is, which refuses it
            scale, zero_point, values = input_grid(x)
            t = torch.from_numpy(values.astype(np.float32))
        qx = torch.quantize_per_tensor(t, scale, zero_point, torch.quint8)
        state = self.eager.get_state()
        out_scale, out_zero_point = output_qparams(state, state.momentum, TORCH, scale, zero_point)
        quantized = getattr(nnq, self.module).from_reference(
            self.eager.module, torch.tensor(out_scale), torch.tensor(out_zero_point))
        qy = quantized(qx)
        self.held = {"output_scale": qy.q_scale(), "output_zero_point": qy.q_zero_point()}
        return torch_nn._output(qy.dequantize())


class QuantizedReference(Delegating):
    """BatchNorm's reference side; inference on the dequantized input, requantized (module docstring)."""

    def __init__(self, side: ReferenceSide) -> None:
        self.side, self.output = side, {}

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        if training or not np.issubdtype(np.asarray(x).dtype, np.floating):
            return self.side.forward(x, training)  # an input the layer's framework refuses: the reference too
        scale, zero_point, values = input_grid(x)
        state = self.side.layer.state | {"eps": self.side.layer.eps}
        momentum, convention = self.side.layer.momentum, self.side.convention
        out_scale, out_zero_point = output_qparams(state, momentum, convention, scale, zero_point)
        y = self.side.forward(values, False)["y"]
        codes = quantize(y.value, out_scale, out_zero_point)
        scale_error = self._scale_error(state, scale, zero_point)
        # The output's quantization as the module holds it: its scale a float32 buffer; where the running
        # statistics trained, both within what their difference moves (the zero point by one code at most).
        self.output = {"output_scale": Expected(out_scale, _U32 * out_scale + scale_error),
                       "output_zero_point": Expected(float(out_zero_point), float(scale_error > 0))}
        tolerance = quanta_tolerance(out_scale, y.tolerance, scale_error)
        return {"y": Expected((codes - out_zero_point) * out_scale, tolerance)}

    def hyperparameters(self) -> dict[str, Expected]:
        """BatchNorm's (eps, momentum), and the last quantized output's scale and zero point."""
        return self.side.hyperparameters() | self.output

    def _scale_error(self, state: dict, scale: float, zero_point: int) -> float:
        """How much the layer's output scale may differ from this side's: its grid's ends move by the running
        statistics' own tolerance ``Em``, ``Ev`` (zero where they were assigned), propagated as BatchNorm's
        tolerance model does (``|gamma| (Em / sigma + |xhat| Ev / (2 sigma**2))``), over 255 codes."""
        mean, var = running_statistics(state, self.side.layer.momentum, self.side.convention)
        mean_error, var_error = self.side.running_tolerance.statistics_error(self.side.layer.state)
        sigma, gamma = np.sqrt(var + state["eps"]), np.abs(np.asarray(state["gamma"], np.float64))
        ends = np.array([-zero_point, CODES - zero_point]) * scale
        xhat = np.abs(ends[:, None] - mean) / sigma
        moved = gamma * (mean_error / sigma + xhat * var_error / (2 * sigma**2))
        return float(2 * moved.max(initial=0.0)) / CODES


class Quantized(Exported):
    """``eager``'s BatchNorm, inference through ``torch.ao.nn.quantized`` (see the module docstring)."""

    families = _FAMILIES

    def __init__(self, eager) -> None:
        super().__init__(eager)
        self.name = eager.name.replace("torch.", "torch.quantized.", 1)
        self.requires = eager.requires
        self.derivation = Derivation("quantize", (eager.name,))
        caps = eager.capabilities
        self.capabilities = Capabilities(
            dtypes=frozenset({"float32"}), ranks=caps.ranks, channel_axes=caps.channel_axes, devices=caps.devices,
            features=frozenset({"momentum_none"}), options=caps.options,
            no_gradients="a quantized module is inference-only (its training is the eager module's)")

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The operator's grids, without inputs holding NaN or infinity (no quantized tensor holds them)."""
        return [(name, case) for name, case in self.operator.cases(check) if case.data not in ("nan", "inf")]

    def reference(self, case: Case, spec) -> QuantizedReference:
        return QuantizedReference(self.operator.reference(case, self.convention, spec))

    def environment(self) -> dict[str, str]:
        import torch

        return {**self.eager.environment(), "quantized": f"torch.ao.nn.quantized.{self.eager.module} (quint8), "
                                                         f"engine {torch.backends.quantized.engine}"}

    def build(self, spec) -> QuantizedLayer:
        return QuantizedLayer(self.eager.build(spec), self.eager.module)


IMPLEMENTATIONS = [Quantized(impl) for impl in torch_nn.IMPLEMENTATIONS
                   if impl.device == "cpu" and impl.module in ("BatchNorm2d", "BatchNorm3d")
                   and impl.memory_format is None]
