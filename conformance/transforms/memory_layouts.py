"""PyTorch's BatchNorm modules with ``x`` and the upstream gradient ``dy`` in different memory layouts, as a
network hands them over (issue 22): a channels-last convolution before the layer and a contiguous one after it
(or the reverse), a strided view, and BatchNorm1d fed a transposed sequence, as sequence models call it on
``(N, L, C)`` activations transposed to ``(N, C, L)``.

The layer is the eager adapter's (``torch_nn.TorchLayer``); only the tensors it is given differ: ``x`` in one
layout and ``dy`` in another, each the same values. PyTorch picks a kernel by the input's memory format and
makes ``dy`` follow it (or not) inside the backward, which is where kernels have gone wrong, so the checks are
the outputs and the gradients (``families``), in every dtype and rank the module takes. Layouts
(:func:`laid_out`): ``contiguous``; ``channels_last`` (channels innermost in memory: ``torch.channels_last`` at
rank 4, ``channels_last_3d`` at 5, and a transposed sequence at rank 3, the transposed matrix at 2); ``strided``
(every other element of a buffer twice as wide along the last axis: neither format).
"""

from __future__ import annotations

import numpy as np

from ..adapters import torch_nn
from ..adapters.base import Derivation, LayerSpec
from ..adapters.torch_nn import TorchImplementation, TorchLayer, _output, _to_numpy

LAYOUTS = ("contiguous", "channels_last", "strided")


def laid_out(t, layout: str):
    """``t`` (contiguous) with the same values in ``layout``."""
    if layout == "channels_last":  # channels innermost: the transpose of a contiguous channels-last tensor
        return t.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":
        wide = t.new_zeros((*t.shape[:-1], 2 * t.shape[-1]))
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


class LaidOutLayer(TorchLayer):
    def __init__(self, spec: LayerSpec, module: str, x_layout: str, dy_layout: str) -> None:
        super().__init__(spec, module, None, "cpu")
        self.x_layout, self.dy_layout = x_layout, dy_layout

    def _input(self, x: np.ndarray, requires_grad: bool = False):
        """Every array in ``x``'s layout (second order's directions too); a leaf, so gradients reach it."""
        return laid_out(super()._input(x), self.x_layout).detach().requires_grad_(requires_grad)

    def forward_backward(self, x, dy, training):
        dyt = laid_out(super()._input(dy), self.dy_layout)
        y, *gradients = self._forward_backward(self._input(x, requires_grad=True), dyt, training)
        return _output(y), *map(_to_numpy, gradients)


class LaidOut(TorchImplementation):
    families = frozenset({"forward", "gradients"})
    benchmarked = False

    def __init__(self, module: str, x_layout: str, dy_layout: str) -> None:
        super().__init__(module)
        self.x_layout, self.dy_layout = x_layout, dy_layout
        self.derivation = Derivation("layout", (self.name,))
        self.name += f".x_{x_layout}.dy_{dy_layout}"

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "layouts": f"x {self.x_layout}, dy {self.dy_layout}"}

    def build(self, spec: LayerSpec) -> LaidOutLayer:
        return LaidOutLayer(spec, self.module, self.x_layout, self.dy_layout)


# Each module in every combination of layouts but those an eager adapter runs (both contiguous; both channels-last
# where the module has a channels-last variant, torch.BatchNorm2d.channels_last and 3d's).
_EAGER = {(i.module, layout) for i in torch_nn.IMPLEMENTATIONS if i.module
          for layout in ("contiguous", *(["channels_last"] if i.memory_format else []))}
IMPLEMENTATIONS = [
    LaidOut(module, x, dy)
    for module in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
    for x in LAYOUTS for dy in LAYOUTS if x != dy or (module, x) not in _EAGER
]
