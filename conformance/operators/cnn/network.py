"""The seeds' CNN as a float64 NumPy reference: :class:`Network`, forward and analytic backward for every
parameter, built on :class:`reference.BatchNorm` in any convention record.

Everything runs in PyTorch's layout (NCHW, kernels ``(out, in, kh, kw)``, the classifier's inputs in ``(C, H,
W)`` order; :mod:`.spec`). The stages are textbook: a 3x3 convolution with padding 1 as an im2col product
(:func:`patches`), the BatchNorm of :mod:`reference` (batch statistics in training, the convention's running
statistics in inference, the running state updated as the convention says), ``max(y, 0)``, a 2x2 max-pool
with stride 2 (the gradient goes to the window's maximum) and ``f @ W.T + b``. ``forward`` keeps what
``backward`` and the tolerance model (:mod:`.tolerances`) need in :attr:`Network.trace`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import reference
from reference import Convention

from .spec import BLOCKS, CLASSES, IN_CHANNELS, PARAMETERS, NetworkSpec, bn_field

__all__ = ["Block", "Network", "kernel_gradient", "input_gradient", "convolve", "patches", "pool", "unpool"]


def patches(a: np.ndarray) -> np.ndarray:
    """The 3x3 neighbourhoods of every position of ``a`` (N, C, H, W), zero-padded by one: (N, H, W, C*9) in
    the order of a kernel's ``(C, kh, kw)``."""
    n, c, h, w = a.shape
    windows = sliding_window_view(np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, h, w, c * 9)


def convolve(cols: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The convolution of the input whose :func:`patches` are ``cols`` with ``kernel``: (N, out, H, W)."""
    return (cols @ kernel.reshape(kernel.shape[0], -1).T).transpose(0, 3, 1, 2)


def kernel_gradient(dz: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The gradient of ``sum(convolve(cols, kernel) * dz)`` with respect to the kernel: (out, C*9) flattened
    as the kernel is; the caller reshapes."""
    return dz.transpose(1, 0, 2, 3).reshape(dz.shape[1], -1) @ cols.reshape(-1, cols.shape[-1])


def input_gradient(dz: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The gradient of ``sum(convolve(patches(a), kernel) * dz)`` with respect to ``a``: every position
    collects its share of the 3x3 neighbourhoods it belongs to."""
    n, _, h, w = dz.shape
    c = kernel.shape[1]
    dcols = (dz.transpose(0, 2, 3, 1) @ kernel.reshape(kernel.shape[0], -1)).reshape(n, h, w, c, 3, 3)
    da = np.zeros((n, c, h + 2, w + 2))
    for i in range(3):
        for j in range(3):
            da[:, :, i:i + h, j:j + w] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return da[:, :, 1:-1, 1:-1]


def pool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max-pool with stride 2: ``(pooled, windows)``, the windows (N, C, H/2, W/2, 4) in row-major order."""
    n, c, h, w = a.shape
    windows = a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    return windows.max(axis=-1), windows


def unpool(d: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``d`` (N, C, H/2, W/2) spread over the windows by ``where`` (N, C, H/2, W/2, 4): d times each window
    position's weight, back in the pooled input's layout (N, C, H, W)."""
    n, c, h, w, _ = where.shape
    spread = (d[..., None] * where).reshape(n, c, h, w, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return spread.reshape(n, c, 2 * h, 2 * w)


@dataclass
class Block:
    """What one block's forward computed: its input ``a`` and ``cols = patches(a)``, the convolution ``z``,
    the BatchNorm's output ``y`` with the statistics it normalized with (``mean``, ``var``, per channel;
    ``batch``: the batch's, else the running ones), ``r = max(y, 0)``, the pool's ``windows`` of ``r`` and its
    output ``p``; and what the last backward computed: the gradients at the pool's output (``dp``), at the
    BatchNorm's output (``g``) and at the convolution's (``dz``)."""

    a: np.ndarray
    cols: np.ndarray
    z: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    batch: bool
    y: np.ndarray
    r: np.ndarray
    windows: np.ndarray
    p: np.ndarray
    dp: np.ndarray | None = None
    g: np.ndarray | None = None
    dz: np.ndarray | None = None

    @property
    def argmax(self) -> np.ndarray:
        """Which position of each window the forward took (the first maximum), one-hot (N, C, H/2, W/2, 4)."""
        return np.eye(4)[self.windows.argmax(axis=-1)]


class Network:
    """The seeds' CNN in one convention record: ``spec``'s eps and momentum (in the record's own meaning) for
    both BatchNorms. Its state is named as :func:`.spec.state_fields` names it; parameters start at zero
    (they are always assigned: the case's state) and the running state as the convention starts it."""

    def __init__(self, spec: NetworkSpec, convention: Convention) -> None:
        self.spec, self.convention = spec, convention
        self.bn = [reference.BatchNorm(c, convention=convention, momentum=spec.momentum, eps=spec.eps, channel_axis=1)
                   for c in BLOCKS]
        self.weights = {"conv1": np.zeros((BLOCKS[0], IN_CHANNELS, 3, 3)),
                        "conv2": np.zeros((BLOCKS[1], BLOCKS[0], 3, 3)),
                        "fc_weight": np.zeros((CLASSES, spec.features)), "fc_bias": np.zeros(CLASSES)}
        self.trace: list[Block] = []
        self.features: np.ndarray | None = None

    # -- the state ---------------------------------------------------------------------------------
    def _owner(self, name: str) -> tuple[object, str]:
        """The object holding field ``name`` and its name there."""
        if name in self.weights:
            return self.weights, name
        block, _, field = name.partition("_")
        return self.bn[int(block.removeprefix("bn")) - 1], field

    @property
    def state(self) -> dict[str, np.ndarray | int]:
        """A copy of every field: the parameters, then each BatchNorm's running fields."""
        out = {name: self.get(name) for name in PARAMETERS}
        running = self.convention.running_fields
        return out | {bn_field(b + 1, f): bn.state[f] for b, bn in enumerate(self.bn) for f in running}

    def get(self, name: str) -> np.ndarray | int:
        owner, field = self._owner(name)
        value = owner[field] if isinstance(owner, dict) else getattr(owner, field)
        return value.copy() if isinstance(value, np.ndarray) else value

    def set(self, name: str, value: object) -> None:
        owner, field = self._owner(name)
        if isinstance(owner, dict):
            if np.shape(value) != owner[field].shape:
                raise ValueError(f"{name} must have shape {owner[field].shape}, got {np.shape(value)}")
            owner[field] = np.array(value, dtype=np.float64)
        else:
            setattr(owner, field, value)

    # -- the calls ---------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """The logits (N, classes) of ``x`` (N, C, H, W); in training mode the BatchNorms normalize with the
        batch statistics and update their running state."""
        x = np.asarray(x, dtype=np.float64)
        want = (IN_CHANNELS, self.spec.height, self.spec.width)
        if x.ndim != 4 or x.shape[1:] != want:
            raise ValueError(f"expected input of shape (N, {', '.join(map(str, want))}), got {x.shape}")
        self.trace, a = [], x
        for kernel, bn in zip((self.weights["conv1"], self.weights["conv2"]), self.bn):
            cols = patches(a)
            z = convolve(cols, kernel)
            batch = training or not bn.track_running_stats
            mean, var = (reference.batch_statistics(z, 1) if batch else
                         reference.running_statistics(bn.state, bn.momentum, self.convention))
            y = bn.forward(z, training)
            r = np.maximum(y, 0.0)
            p, windows = pool(r)
            self.trace.append(Block(a, cols, z, mean, var, batch, y, r, windows, p))
            a = p
        self.features = a.reshape(a.shape[0], -1)
        return self.features @ self.weights["fc_weight"].T + self.weights["fc_bias"]

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(dx, gradients)`` of ``sum(logits * dy)`` for the last forward: ``dx`` (N, C, H, W) and every
        parameter's gradient by its name (:data:`.spec.PARAMETERS`)."""
        if not self.trace:
            raise ValueError("backward() called before forward()")
        dy = np.asarray(dy, dtype=np.float64)
        grads = {"fc_weight": dy.T @ self.features, "fc_bias": dy.sum(axis=0)}
        d = (dy @ self.weights["fc_weight"]).reshape(self.trace[-1].p.shape)
        for index in (1, 0):
            block, bn, kernel = self.trace[index], self.bn[index], self.weights[f"conv{index + 1}"]
            block.dp, block.g = d, unpool(d, block.argmax) * (block.y > 0)
            block.dz = dz = bn.backward(block.g)
            grads |= {f"bn{index + 1}_gamma": bn.dgamma, f"bn{index + 1}_beta": bn.dbeta,
                      f"conv{index + 1}": kernel_gradient(dz, block.cols).reshape(kernel.shape)}
            d = input_gradient(dz, kernel)
        return d, {name: grads[name] for name in PARAMETERS}
