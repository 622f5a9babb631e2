"""Quantization-aware training: the seeds' CNN with each (Conv2d, BatchNorm2d, ReLU) fused for QAT, as
``torch.ao.quantization.fuse_modules_qat`` and ``prepare_qat`` make it (``torch.ao.nn.intrinsic.qat.
ConvBnReLU2d``), trained and run like the eager network and checked against the same reference.

What the fused module promises (``torch/ao/nn/intrinsic/qat/modules/conv_fused.py``, ``_forward_approximate``,
its default): it convolves with the kernel scaled by ``gamma / sqrt(running_var + eps)`` (the folded kernel
that quantization will see), divides the output by the same factor and runs its BatchNorm on that. Without
fake quantization the scaling cancels: in train mode the output is the convolution followed by BatchNorm with
the batch's statistics, the running statistics are updated as BatchNorm updates them, and the gradients are
BatchNorm's; in eval mode BatchNorm with the running statistics. So the reference is the CNN's own, in
PyTorch's convention, within its tolerance model (the scaling's two extra roundings per element are far
inside the convolution's). Fake quantization and its observers are disabled (``disable_fake_quant``,
``disable_observer``): what is checked is the BatchNorm inside QAT, not the quantization grid.

``torch.ao.nn.intrinsic.qat.freeze_bn_stats`` (the ``.freeze_bn_stats`` variant, applied after the first
training step, as QAT recipes freeze after some epochs) makes later training steps normalize with the running
statistics and leave them alone: a training step is then the network in inference mode, and its gradients
are inference-mode gradients. Its reference side (:class:`QatReference`) answers those steps as inference.

What the fusion left is compared as the layer's hyperparameters: two QAT Conv-BatchNorm modules, and as many
with frozen statistics as the reference expects (none before the freeze, both after).

Which checks apply: the CNN's forward, gradients, running statistics (train, eval, train), the contract and
random cases, in float32 and float64, and a training step and inference from the seeds' state in float16 and
bfloat16, which the fused modules take. The extreme state's zero scale divides zero by zero in
``conv / scale_factor``: its channels are NaN in eval mode (registered; pytorch/pytorch#77434 added the slower
``_forward_slow`` that handles it, off unless a private flag is set).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..adapters import cnn_torch
from ..adapters.base import Derivation, State
from ..core.case import Case
from ..core.comparison import Expected
from ..operators import Delegating, ReferenceSide
from ..operators.cnn import NetworkCase, NetworkSpec
from .folded import HALF, half_precision

__all__ = ["Qat", "QatLayer", "QatReference"]

_BLOCKS = [["0", "1", "2"], ["4", "5", "6"]]  # the (Conv2d, BatchNorm2d, ReLU) triples (adapters/cnn_torch.py)
_FACTS = ("qat_blocks", "frozen_blocks")
FREEZE_AFTER = 1  # training steps before freeze_bn_stats, in the .freeze_bn_stats variant


def prepare(module) -> None:
    """Fuse ``module``'s triples for QAT and swap in the QAT modules, in place (the parameters and running
    statistics stay the same tensors, so the eager layer's state reads them), fake quantization off."""
    from torch.ao import quantization

    module.train()
    quantization.fuse_modules_qat(module, _BLOCKS, inplace=True)
    for conv, _, _ in _BLOCKS:  # only the fused blocks are prepared: the classifier stays float
        module[int(conv)].qconfig = quantization.get_default_qat_qconfig("x86")
    quantization.prepare_qat(module, inplace=True)
    module.apply(quantization.disable_fake_quant)
    module.apply(quantization.disable_observer)


class QatLayer(cnn_torch.TorchNetworkLayer):
    """The CNN's PyTorch layer, its triples fused for QAT; with ``freeze_after``, ``freeze_bn_stats`` applied
    before the training call that follows that many training steps."""

    def __init__(self, spec: NetworkSpec, freeze_after: int | None) -> None:
        super().__init__(spec)
        prepare(self.module)
        self.freeze_after, self.steps = freeze_after, 0

    def _step(self, training: bool) -> None:
        if not training:
            return
        if self.steps == self.freeze_after:
            from torch.ao.nn.intrinsic.qat import freeze_bn_stats

            self.module.apply(freeze_bn_stats)
        self.steps += 1

    def _fused(self) -> list:
        from torch.ao.nn.intrinsic.qat import ConvBnReLU2d

        return [m for m in self.module.modules() if isinstance(m, ConvBnReLU2d)]

    def set_state(self, state: State) -> None:
        super().set_state(State(**{k: v for k, v in state.items() if k not in _FACTS}))

    def get_state(self) -> State:
        fused = self._fused()
        return super().get_state().replace(qat_blocks=len(fused), frozen_blocks=sum(m.freeze_bn for m in fused))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._step(training)
        return super().forward(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        self._step(training)
        return super().forward_backward(x, dy, training)


class QatReference(Delegating):
    """The CNN's reference side; training calls after ``freeze_after`` training steps answered as inference
    (frozen statistics), and what the fused network must hold as its hyperparameters."""

    def __init__(self, side: ReferenceSide, freeze_after: int | None) -> None:
        self.side, self.freeze_after, self.steps = side, freeze_after, 0

    def _mode(self, training: bool) -> bool:
        if not training:
            return False
        self.steps += 1
        return self.freeze_after is None or self.steps <= self.freeze_after

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return self.side.forward(x, self._mode(training))

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        return self.side.forward_backward(x, dy, self._mode(training))

    def hyperparameters(self) -> dict[str, Expected]:
        frozen = self.freeze_after is not None and self.steps > self.freeze_after
        return {"qat_blocks": Expected(2.0), "frozen_blocks": Expected(2.0 if frozen else 0.0)}


class Qat(cnn_torch.TorchNetwork):
    """``torch.cnn`` fused for QAT (see the module docstring); ``freeze_after``: steps before the freeze."""

    families = frozenset({"forward", "gradients", "running_stats", "contract", "random"})

    def __init__(self, freeze_after: int | None) -> None:
        super().__init__()
        self.freeze_after = freeze_after
        self.name = "torch.cnn.qat." + ("fuse_modules_qat" if freeze_after is None else "freeze_bn_stats")
        self.derivation = Derivation("qat", ("torch.cnn",))
        self.capabilities = replace(self.capabilities, dtypes=self.capabilities.dtypes | HALF)

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The CNN's grids; a training step and inference from the seeds' state also in float16 and bfloat16,
        which the fused modules take."""
        return half_precision(super().cases(check), check, ("training_output", "inference_output"))

    def reference(self, case: NetworkCase, spec: NetworkSpec) -> QatReference:
        return QatReference(super().reference(case, spec), self.freeze_after)

    def deviation_names(self) -> tuple[str, ...]:
        """Its own name, then the eager network's, whose deviations it shares."""
        return (self.name, "torch.cnn")

    def environment(self) -> dict[str, str]:
        freeze = "" if self.freeze_after is None else f", freeze_bn_stats after {self.freeze_after} step(s)"
        return {**super().environment(),
                "qat": f"fuse_modules_qat + prepare_qat (x86 qconfig, fake quantization disabled){freeze}"}

    def build(self, spec: NetworkSpec) -> QatLayer:
        return QatLayer(spec, self.freeze_after)


IMPLEMENTATIONS = [Qat(None), Qat(FREEZE_AFTER)]
