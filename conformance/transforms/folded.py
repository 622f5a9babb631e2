"""Folding: each BatchNorm of the seeds' CNN folded into the convolution before it, as models are prepared
for deployment, by each of PyTorch's tools (:data:`TOOLS`), checked by the generic checks against the
reference like any implementation.

The network trains eagerly, as users train before they fold; every inference call folds a copy of the
module in eval mode with its current state (the tools fold running statistics, so only inference has a
folded form) and runs the copy in the module's dtype. The folded network must compute what the reference
computes within the CNN's tolerance model, and the eager module's state and mode must be what they were:
a tool that folds in place, or changes the statistics, fails the running-statistics and state checks.

What the tool left is checked through the Mirror's hyperparameter comparison, as for an exported graph:
the layer reports how many BatchNorm and convolution modules the last folded copy holds, and the reference
side states no BatchNorm and the two convolutions, so a tool that silently leaves a BatchNorm unfolded
(computing the right values the slow way) shows.

Which checks apply (``families``): forward, running statistics (train -> fold -> train), the contract and
random cases, in inference through the folded copy; not gradients (a folded network is inference-only; its
training is the eager module's, which ``torch.cnn`` checks) nor the constructor defaults (the eager
module's). Inference from the seeds' state also runs in float16 and bfloat16 (:meth:`Folded.cases`): every tool
folds in the network's dtype. QAT fusion is ``transforms/qat.py``, onnxruntime's own fusion
``transforms/ort_optimized.py``. Not here: Conv1d/3d, transposed, grouped and depthwise convolutions (the CNN
operator's reference network has the seeds' Conv2d only).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from ..adapters import cnn_torch
from ..adapters.base import Capabilities, Derivation, Implementation, Layer, State
from ..adapters.torch_nn import _output
from ..core.case import Case
from ..core.comparison import Expected
from ..operators import Delegating, ReferenceSide
from ..operators.cnn.cases import seeds

__all__ = ["HALF", "TOOLS", "Folded", "FoldedLayer", "FoldedReference", "InferencePath", "half_precision"]

_FACTS = ("batchnorm_nodes", "conv_nodes")  # as the exported graph's (transforms/exported.py)
_FAMILIES = frozenset({"forward", "running_stats", "contract", "random"})
HALF = frozenset({"float16", "bfloat16"})  # folded where the tools accept them: in inference only
# The CNN's (Conv2d, BatchNorm2d, ReLU) triples in its nn.Sequential (adapters/cnn_torch.py).
_BLOCKS = (("0", "1", "2"), ("4", "5", "6"))


def _fuse_conv_bn_eval(module):
    """``torch.nn.utils.fusion.fuse_conv_bn_eval`` on each convolution and its BatchNorm."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for conv, bn, _ in _BLOCKS:
        transposed = isinstance(module[int(conv)], nn.modules.conv._ConvTransposeNd)  # its own weight layout
        module[int(conv)] = fuse_conv_bn_eval(module[int(conv)], module[int(bn)], transpose=transposed)
        module[int(bn)] = nn.Identity()
    return module


def _fx_fuse(module):
    """``torch.fx.experimental.optimization.fuse``: traces the network and folds every Conv-BatchNorm pair."""
    from torch.fx.experimental.optimization import fuse

    return fuse(module)


def _fuse_modules(module):
    """``torch.ao.quantization.fuse_modules`` on the (Conv2d, BatchNorm2d, ReLU) triples, as quantization
    preparation does in eval mode."""
    from torch.ao.quantization import fuse_modules

    return fuse_modules(module, [list(block) for block in _BLOCKS])


# The implementation's suffix -> (the tool, the fold of an eval-mode copy with it).
TOOLS: dict[str, tuple[str, Callable]] = {
    "fuse_conv_bn_eval": ("torch.nn.utils.fusion.fuse_conv_bn_eval", _fuse_conv_bn_eval),
    "fx": ("torch.fx.experimental.optimization.fuse", _fx_fuse),
    "fuse_modules": ("torch.ao.quantization.fuse_modules", _fuse_modules),
}


def half_precision(grid: list[tuple[str, Case]], check: str, checks: tuple[str, ...]) -> list[tuple[str, Case]]:
    """``grid``, and for the ``checks`` named the seeds' batch from their state in float16 and bfloat16."""
    return grid + [(case.id, case) for case in seeds(tuple(sorted(HALF)))] if check in checks else grid


def _counts(module) -> dict[str, int]:
    from torch import nn

    modules = list(module.modules())
    return {"batchnorm_nodes": sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules),
            "conv_nodes": sum(isinstance(m, nn.modules.conv._ConvNd) for m in modules)}  # transposed ones too


class InferencePath:
    """A path's layer over an eager PyTorch layer (it has ``module``): training and state are the eager layer's,
    every inference call goes through the path (:meth:`infer`), and what the last one reported (``held``, its
    fields named in ``FACTS``) joins the state. Inference-only: no gradients."""

    FACTS: tuple[str, ...] = ()
    what = "the path"  # for the gradients' refusal

    def __init__(self, eager: Layer) -> None:
        self.eager, self.held = eager, {}

    def set_state(self, state: State) -> None:
        self.eager.set_state(State(**{k: v for k, v in state.items() if k not in self.FACTS}))

    def get_state(self) -> State:
        """The eager module's state; what the last inference reported (nothing before the first)."""
        return self.eager.get_state().replace(**self.held)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.eager.forward(x, True) if training else self.infer(x)

    def infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        raise NotImplementedError(f"{self.what} is inference-only")


class FoldedLayer(InferencePath):
    """The eager network (``torch.cnn``'s layer) for training and state; every inference call through a folded
    copy."""

    FACTS = _FACTS
    what = "a folded network"

    def __init__(self, eager: Layer, fold: Callable) -> None:
        super().__init__(eager)
        self.fold = fold

    def infer(self, x: np.ndarray) -> np.ndarray:
        folded = self.fold(copy.deepcopy(self.eager.module).eval())
        self.held = _counts(folded)
        with self.eager.torch.no_grad():
            return _output(folded(self.eager.tensor(x)))


class FoldedReference(Delegating):
    """The CNN's reference side, with what the folded copy must hold as its hyperparameters."""

    def __init__(self, side: ReferenceSide) -> None:
        self.side = side

    def hyperparameters(self) -> dict[str, Expected]:
        return {"batchnorm_nodes": Expected(0.0), "conv_nodes": Expected(2.0)}


class Folded(Implementation):
    """``eager``'s network, inference through a copy folded by ``tool`` (see the module docstring)."""

    families = _FAMILIES

    def __init__(self, eager: Implementation, tool: str) -> None:
        self.eager, self.tool = eager, tool
        self.name = f"{eager.name}.folded.{tool}"
        self.family, self.framework, self.operator = eager.family, eager.framework, eager.operator
        self.convention, self.device, self.benchmarked = eager.convention, eager.device, False
        self.requires = eager.requires
        self.derivation = Derivation("fold", (eager.name,))
        caps = eager.capabilities
        self.capabilities = Capabilities(
            dtypes=caps.dtypes | HALF, ranks=caps.ranks, channel_axes=caps.channel_axes, devices=caps.devices,
            features=caps.features, options=caps.options,
            no_gradients="a folded network is inference-only (its training is the eager module's)")

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """The CNN's grids; inference from the seeds' state also in float16 and bfloat16, folded in the network's
        dtype as the tools fold it (the extreme state's folded kernels, up to 1e3 / sqrt(eps), overflow half
        precision, as the network's own activations do)."""
        return half_precision(self.operator.cases(check), check, ("inference_output",))

    def reference(self, case: Case, spec) -> FoldedReference:
        return FoldedReference(self.operator.reference(case, self.convention, spec))

    def deviation_names(self) -> tuple[str, ...]:
        """Its own name, then the eager implementation's, whose deviations in training it inherits."""
        return (self.name, self.eager.name)

    def environment(self) -> dict[str, str]:
        return {**self.eager.environment(), "fold": TOOLS[self.tool][0]}

    def defaults(self) -> dict[str, object]:
        return self.eager.defaults()

    def output_dtype(self, spec) -> str:
        return self.eager.output_dtype(spec)

    def build(self, spec) -> FoldedLayer:
        return FoldedLayer(self.eager.build(spec), TOOLS[self.tool][1])


IMPLEMENTATIONS = [Folded(impl, tool) for impl in cnn_torch.IMPLEMENTATIONS for tool in TOOLS]
