"""Folding BatchNorm into other kinds of convolution: the seeds' CNN with its second convolution grouped
(4 groups), depthwise (16 groups, two filters per channel) or transposed (``ConvTranspose2d``), folded by each
of PyTorch's tools (``transforms/folded.py``) and checked against the same reference network.

Each kind is a dense 3x3 convolution in disguise, which the reference network (im2col) computes exactly: a
grouped or depthwise kernel is the dense kernel that is zero outside its groups' blocks, and a transposed
convolution with stride 1 and padding 1 is the dense convolution whose kernel is the transposed one's with
input and output swapped and flipped in both spatial axes (``K = W.transpose(0, 1).flip(2, 3)``). So the
layer's state crosses the protocol dense (PyTorch's ``(out, in, kh, kw)``): ``set_state`` keeps what the kind
can hold (a grouped kernel its blocks), ``get_state`` reports the dense kernel it computes with (zeros outside
the blocks), and the reference side, which starts from the state the layer holds, computes the same network.
Gradients are not compared (the dense kernel's gradient has entries a grouped kernel does not; the folded
network is inference-only anyway).

What the tool left is compared as in ``folded.py``: no BatchNorm module, two convolutions (a transposed one
counts). Family ``torch.cnn.kinds``: ``tox -e report`` runs it, ``tox -e torch`` does not (alone:
``--impl torch.cnn.kinds``).
"""

from __future__ import annotations

import numpy as np

from ..adapters import cnn_torch
from ..adapters.base import State
from ..operators.cnn.spec import BLOCKS, NetworkSpec
from .folded import TOOLS, Folded

__all__ = ["KINDS", "KindLayer", "KindNetwork", "to_dense", "to_kind"]

# The kind -> (groups of the second convolution, transposed).
KINDS = {"grouped": (4, False), "depthwise": (BLOCKS[0], False), "transposed": (1, True)}
_CONV2 = 4  # the second convolution's index in the Sequential (adapters/cnn_torch.py)


def _block_mask(groups: int) -> np.ndarray:
    """Which entries of the dense ``(out, in)`` kernel a grouped convolution holds."""
    out, inputs = BLOCKS[1], BLOCKS[0]
    return np.equal.outer(np.arange(out) // (out // groups), np.arange(inputs) // (inputs // groups))


def to_kind(dense: np.ndarray, kind: str) -> np.ndarray:
    """The kind's weight for the dense ``(out, in, 3, 3)`` kernel (a grouped one: its blocks)."""
    groups, transposed = KINDS[kind]
    if transposed:
        return np.ascontiguousarray(np.flip(dense, (2, 3)).transpose(1, 0, 2, 3))
    return dense[_block_mask(groups)].reshape(BLOCKS[1], BLOCKS[0] // groups, 3, 3)


def to_dense(weight: np.ndarray, kind: str) -> np.ndarray:
    """The dense kernel the kind's ``weight`` computes with."""
    groups, transposed = KINDS[kind]
    if transposed:
        return np.flip(weight.transpose(1, 0, 2, 3), (2, 3)).copy()
    dense = np.zeros((BLOCKS[1], BLOCKS[0], 3, 3))
    dense[_block_mask(groups)] = weight.reshape(-1, 3, 3)
    return dense


class KindLayer(cnn_torch.TorchNetworkLayer):
    """The CNN's PyTorch layer with its second convolution of another kind; its kernel crosses dense."""

    def __init__(self, spec: NetworkSpec, kind: str) -> None:
        super().__init__(spec)
        from torch import nn

        self.kind, (groups, transposed) = kind, KINDS[kind]
        conv = (nn.ConvTranspose2d(BLOCKS[0], BLOCKS[1], 3, padding=1, bias=False) if transposed
                else nn.Conv2d(BLOCKS[0], BLOCKS[1], 3, padding=1, bias=False, groups=groups))
        self.module[_CONV2] = conv.to(self.dtype)
        self.tensors["conv2"] = conv.weight

    def set_state(self, state: State) -> None:
        if state.conv2 is not None:
            state = state.replace(conv2=to_kind(np.asarray(state.conv2, np.float64), self.kind))
        super().set_state(state)

    def get_state(self) -> State:
        state = super().get_state()
        return state.replace(conv2=to_dense(state.conv2, self.kind))


class KindNetwork(cnn_torch.TorchNetwork):
    """The eager network of one kind: what the fold transform wraps (not checked alone: its dense kernel's
    gradients are not the kind's)."""

    family = "torch.cnn.kinds"

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.name = kind, f"torch.cnn.kinds.{kind}"

    def build(self, spec: NetworkSpec) -> KindLayer:
        return KindLayer(spec, self.kind)


IMPLEMENTATIONS = [Folded(KindNetwork(kind), tool) for kind in KINDS for tool in TOOLS]
