"""The seeds' CNN in PyTorch (``nn.Sequential`` of ``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``MaxPool2d``,
``Flatten``, ``Linear``), as the seed builds it: PyTorch's layout is the CNN operator's own, so its state
crosses unpermuted. The layer keeps its module as ``module``, which the export transform exports."""

from __future__ import annotations

import numpy as np

from ..operators.cnn import CNN, NetworkSpec
from ..operators.cnn.spec import BLOCKS, CLASSES, IN_CHANNELS, PARAMETERS, bn_field
from .base import Capabilities, State, framework_input
from .torch_nn import TorchImplementation, _output, _to_numpy

# State fields -> (index in the Sequential, attribute).
_WEIGHTS = {"conv1": (0, "weight"), "conv2": (4, "weight"), "fc_weight": (9, "weight"), "fc_bias": (9, "bias")}
_BATCHNORM = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var",
              "num_batches_tracked": "num_batches_tracked"}


class TorchNetworkLayer:
    def __init__(self, spec: NetworkSpec) -> None:
        import torch
        from torch import nn

        self.torch, self.dtype = torch, getattr(torch, spec.dtype)
        bn = lambda c: nn.BatchNorm2d(c, eps=spec.eps, momentum=spec.momentum)  # noqa: E731
        self.module = nn.Sequential(
            nn.Conv2d(IN_CHANNELS, BLOCKS[0], 3, padding=1, bias=False), bn(BLOCKS[0]), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(BLOCKS[0], BLOCKS[1], 3, padding=1, bias=False), bn(BLOCKS[1]), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(spec.features, CLASSES),
        ).to(self.dtype)
        self.tensors = {name: getattr(self.module[i], attr) for name, (i, attr) in _WEIGHTS.items()}
        for block, index in ((1, 1), (2, 5)):
            self.tensors |= {bn_field(block, f): getattr(self.module[index], a) for f, a in _BATCHNORM.items()}

    def tensor(self, x: np.ndarray, requires_grad: bool = False):
        x, cast = framework_input(x)
        t = self.torch.from_numpy(x)
        return (t.to(self.dtype) if cast else t).requires_grad_(requires_grad)

    def set_state(self, state: State) -> None:
        with self.torch.no_grad():
            for name, value in state.assigned().items():
                t = self.tensors[name]
                t.fill_(value) if t.ndim == 0 else t.copy_(self.torch.from_numpy(np.asarray(value, np.float64)))

    def get_state(self) -> State:
        return State(**{name: int(t) if t.ndim == 0 else _to_numpy(t) for name, t in self.tensors.items()})

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.module.train(training)
        with self.torch.no_grad():
            return _output(self.module(self.tensor(x)))

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        self.module.train(training)
        xt = self.tensor(x, requires_grad=True)
        params = [self.tensors[name] for name in PARAMETERS]
        y = self.module(xt)
        dx, *grads = self.torch.autograd.grad(y, [xt, *params], self.tensor(dy))
        return _output(y), _to_numpy(dx), *map(_to_numpy, grads)


class TorchNetwork(TorchImplementation):
    """The CNN on PyTorch's BatchNorm2d: its environment and constructor defaults are the eager adapter's."""

    operator = CNN
    # Its checks are the CNN operator's grids in these families (and no transform derives from it but export).
    families = frozenset({"forward", "gradients", "running_stats", "contract", "conventions", "random"})

    def __init__(self) -> None:
        super().__init__("BatchNorm2d")
        self.name, self.benchmarked = "torch.cnn", False
        self.capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}), ranks=frozenset({4}),
                                         channel_axes=frozenset({1}), features=frozenset({"momentum_none"}))

    def build(self, spec: NetworkSpec) -> TorchNetworkLayer:
        return TorchNetworkLayer(spec)


IMPLEMENTATIONS = [TorchNetwork()]
