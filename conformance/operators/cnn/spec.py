"""What an adapter builds the seeds' CNN from: :class:`NetworkSpec`, and the names of its state.

The network (seed ``002_d4beb0fb53713479.txt``): ``Conv(3 -> 16, 3x3, padding 1, no bias) -> BatchNorm ->
ReLU -> MaxPool(2)``, the same with 32 channels, then ``Linear(32 * H/4 * W/4 -> 10)`` on the flattened
features. Its state crosses the adapter protocol in PyTorch's layout (the canonical one): kernels
``(out, in, kh, kw)``, the classifier's weight ``(classes, features)`` with the features in ``(C, H, W)``
order, each BatchNorm's parameters and running fields (its convention's) per channel. A channels-last
framework's adapter permutes kernels to ``(kh, kw, in, out)`` and the classifier's inputs to ``(H, W, C)``
order in ``set_state``/``get_state`` (:func:`to_channels_last`, :func:`from_channels_last`): the porting
recipe this example exists for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference import Convention

__all__ = ["BLOCKS", "CLASSES", "IN_CHANNELS", "PARAMETERS", "NetworkSpec", "bn_field", "from_channels_last",
           "state_fields", "to_channels_last"]

IN_CHANNELS, BLOCKS, CLASSES = 3, (16, 32), 10
# The parameters in the order the gradients cross the protocol (``forward_backward``'s outputs after dx).
PARAMETERS = ("conv1", "bn1_gamma", "bn1_beta", "conv2", "bn2_gamma", "bn2_beta", "fc_weight", "fc_bias")


def bn_field(block: int, name: str) -> str:
    """The state field of BatchNorm ``block`` (1 or 2) named ``name`` in a BatchNorm's state."""
    return f"bn{block}_{name}"


def state_fields(convention: Convention) -> tuple[str, ...]:
    """Every field of the network's state: the parameters, then each BatchNorm's running fields."""
    return PARAMETERS + tuple(bn_field(b, f) for b in (1, 2) for f in convention.running_fields)


@dataclass(frozen=True)
class NetworkSpec:
    """What to build, in framework-neutral terms: the input's spatial size, the BatchNorms' ``eps`` and
    ``momentum`` (the framework's own constructor argument, in its convention, as for BatchNorm's
    ``LayerSpec``), the input's channel position (1: NCHW, -1: NHWC) and the dtype."""

    height: int
    width: int
    eps: float
    momentum: float | None
    channel_axis: int = 1
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def features(self) -> int:
        """The classifier's inputs: the last block's channels at a quarter of the input's height and width."""
        return BLOCKS[-1] * (self.height // 4) * (self.width // 4)

    def requirements(self) -> list[tuple[str, object, str]]:
        """What building it needs, as ``(capability, value, label)`` (see BatchNorm's ``LayerSpec``)."""
        needs = [("dtypes", self.dtype, f"dtype {self.dtype}"), ("ranks", 4, "rank 4 input"),
                 ("channel_axes", self.channel_axis, f"channel_axis={self.channel_axis}"),
                 ("devices", self.device, f"device {self.device}")]
        return needs + ([("features", "momentum_none", "momentum=None")] if self.momentum is None else [])


def to_channels_last(name: str, value: np.ndarray, spec: NetworkSpec) -> np.ndarray:
    """A parameter (or its gradient) from PyTorch's layout to a channels-last framework's: kernels
    ``(out, in, kh, kw) -> (kh, kw, in, out)``; the classifier ``(classes, C*h*w)`` in ``(C, h, w)`` order ->
    ``(h*w*C, classes)`` in ``(h, w, C)`` order (permuted, not just transposed); the rest as it is."""
    value = np.asarray(value)
    if name.startswith("conv"):
        return value.transpose(2, 3, 1, 0)
    if name == "fc_weight":
        h, w = spec.height // 4, spec.width // 4
        return value.reshape(CLASSES, BLOCKS[-1], h, w).transpose(2, 3, 1, 0).reshape(h * w * BLOCKS[-1], CLASSES)
    return value


def from_channels_last(name: str, value: np.ndarray, spec: NetworkSpec) -> np.ndarray:
    """The inverse of :func:`to_channels_last`."""
    value = np.asarray(value)
    if name.startswith("conv"):
        return value.transpose(3, 2, 0, 1)
    if name == "fc_weight":
        h, w = spec.height // 4, spec.width // 4
        return value.reshape(h, w, BLOCKS[-1], CLASSES).transpose(3, 2, 0, 1).reshape(CLASSES, -1)
    return value
