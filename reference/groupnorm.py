"""GroupNorm and InstanceNorm: the specification's functions and their conventions as records.

GroupNorm (Wu & He, arXiv:1803.08494) splits the channels into ``groups`` groups of ``C / groups``
consecutive channels and normalizes each (sample, group) over its channels and spatial positions, with one
mean and one biased variance per (sample, group) and eps inside the root; the scale and offset are per
channel. InstanceNorm (Ulyanov et al., arXiv:1607.08022) is the case ``groups = C``: each (sample, channel)
alone; one group is LayerNorm over the channels and space, with a per-channel affine.

So each (sample, group) is a row of LayerNorm without parameters (:mod:`reference.layernorm`, whose
functions compute here in bounded memory), and the affine is applied per channel after it. With
``g = gamma dy`` (gamma broadcast over the channel axis) and ``xhat`` the normalized input:

    y      = gamma xhat + beta
    dx     = layer_norm_backward(g)                      per row
    dgamma = sum dy xhat,   dbeta = sum dy              over every axis but the channel axis

and the second order along ``(vx, vgamma)``: ``hvp_x = layer_norm_hvp(g, vx) + layer_norm_backward(vgamma dy)``
(the backward is linear in ``g``), ``hvp_gamma = sum dy layer_norm_jvp(vx)`` (the tangent of ``xhat``),
``hvp_beta = 0``. :mod:`reference.groupnorm_textbook` writes the same as the paper does, independently.

:class:`GroupNormConvention` holds what differs between frameworks: the eps default, the groups default
(InstanceNorm's are its channels: :data:`INSTANCE`), the channel axis, the affine parameters' defaults and
whether the scale and offset are per channel or per group (ONNX GroupNormalization before opset 21).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np

from .conventions import REQUIRED
from .layernorm import layer_norm, layer_norm_backward, layer_norm_hvp, layer_norm_jvp, layer_norm_statistics

__all__ = ["GROUPNORM_CONVENTIONS", "INSTANCE", "PARAMETER_SHAPES", "GroupNormConvention", "group_norm",
           "group_norm_backward", "group_norm_hvp", "group_norm_statistics", "groups_of", "per_channel",
           "per_group"]

# The groups of InstanceNorm: one per channel (Keras' ``groups=-1``), a word so that it reads as it crosses
# processes and reports.
INSTANCE = "per channel"

# What the scale and offset are indexed by: each channel (every framework here, ONNX GroupNormalization from
# opset 21) or each group (ONNX GroupNormalization opset 18, deprecated by 21 for that reason).
PARAMETER_SHAPES = ("channel", "group")


@dataclass(frozen=True)
class GroupNormConvention:
    """How one framework's GroupNorm or InstanceNorm is built by default; checked on construction
    (``ValueError`` naming the field).

    Attributes:
        name: an identifier, unique among the conventions of a run.
        default_eps: the constructor's eps (:data:`REQUIRED` where it has none).
        default_groups: the number of groups by default: a positive int, :data:`REQUIRED` (PyTorch's
            ``num_groups``, ONNX's ``num_groups``) or :data:`INSTANCE` (InstanceNorm: one per channel).
        channel_axis: 1 (channels first: PyTorch, ONNX) or -1 (channels last: Keras, Flax).
        default_affine: a learnable scale by default (PyTorch ``affine``, Keras ``scale``, Flax ``use_scale``).
        default_bias: a learnable offset by default (PyTorch ``bias`` with ``affine``, Keras ``center``, Flax
            ``use_bias``).
        parameter_shape: one of :data:`PARAMETER_SHAPES`: the scale and offset per channel or per group.
        frameworks: who uses it, for the report.
    """

    name: str
    default_eps: float | object
    default_groups: int | object
    channel_axis: int = 1
    default_affine: bool = True
    default_bias: bool = True
    parameter_shape: str = "channel"
    frameworks: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"GroupNormConvention name must be an identifier, got {self.name!r}")
        if self.default_eps is not REQUIRED and not (
                isinstance(self.default_eps, numbers.Real) and not isinstance(self.default_eps, bool)
                and self.default_eps > 0):
            raise ValueError(f"GroupNormConvention default_eps must be a positive number or REQUIRED, "
                             f"got {self.default_eps!r}")
        if self.default_groups is not REQUIRED and self.default_groups != INSTANCE and not (
                isinstance(self.default_groups, int) and not isinstance(self.default_groups, bool)
                and self.default_groups > 0):
            raise ValueError(f"GroupNormConvention default_groups must be a positive int, REQUIRED or INSTANCE, "
                             f"got {self.default_groups!r}")
        if self.channel_axis not in (1, -1):
            raise ValueError(f"GroupNormConvention channel_axis must be 1 or -1, got {self.channel_axis!r}")
        if self.parameter_shape not in PARAMETER_SHAPES:
            raise ValueError(f"GroupNormConvention parameter_shape must be one of {PARAMETER_SHAPES}, "
                             f"got {self.parameter_shape!r}")
        for name in ("default_affine", "default_bias"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"GroupNormConvention {name} must be a bool, got {getattr(self, name)!r}")

    @property
    def instance(self) -> bool:
        """InstanceNorm: its groups are its channels, whatever it is given."""
        return self.default_groups == INSTANCE

    def defaults(self) -> dict[str, object]:
        """What the constructor has by default, as an implementation's ``defaults()`` reports it."""
        return {"eps": self.default_eps, "groups": self.default_groups, "affine": self.default_affine,
                "bias": self.default_bias}

    def as_dict(self) -> dict:
        """For the report's JSON: a missing default is ``"required"``."""
        return {k: "required" if v is REQUIRED else v for k, v in asdict(self).items()}


# Each read in the framework's source (docs/groupnorm.md cites them).
GROUPNORM_CONVENTIONS = {c.name: c for c in (
    GroupNormConvention("torch_groupnorm", 1e-5, REQUIRED,
                        frameworks="PyTorch nn.GroupNorm (num_groups required)"),
    GroupNormConvention("torch_instancenorm", 1e-5, INSTANCE, default_affine=False, default_bias=False,
                        frameworks="PyTorch nn.InstanceNorm1d/2d/3d (affine=False, track_running_stats=False)"),
    GroupNormConvention("keras_groupnorm", 1e-3, 32, channel_axis=-1,
                        frameworks="Keras 3 and tf-keras GroupNormalization (groups=32, axis=-1; -1: InstanceNorm)"),
    GroupNormConvention("flax_groupnorm", 1e-6, 32, channel_axis=-1,
                        frameworks="flax.linen.GroupNorm, flax.nnx.GroupNorm (num_groups=32)"),
    GroupNormConvention("flax_instancenorm", 1e-6, INSTANCE, channel_axis=-1,
                        frameworks="flax.linen.InstanceNorm, flax.nnx.InstanceNorm"),
    GroupNormConvention("onnx_instancenorm", 1e-5, INSTANCE,
                        frameworks="ONNX InstanceNormalization (scale and B required)"),
    GroupNormConvention("onnx_groupnorm", 1e-5, REQUIRED,
                        frameworks="ONNX GroupNormalization opset 21 (num_groups, scale and bias required)"),
    GroupNormConvention("onnx_groupnorm_opset18", 1e-5, REQUIRED, parameter_shape="group",
                        frameworks="ONNX GroupNormalization opset 18 (scale and bias per group)"),
)}


def groups_of(x_shape: tuple[int, ...], groups: int, channel_axis: int = 1) -> tuple[int, int]:
    """``(channels, groups)`` of an input of ``x_shape``; ``ValueError`` unless ``groups`` divides the channels."""
    if len(x_shape) < 2:
        raise ValueError(f"GroupNorm needs a batch and a channel axis, got an input of shape {x_shape}")
    if channel_axis not in (1, -1):
        raise ValueError(f"channel_axis must be 1 or -1, got {channel_axis!r}")
    channels = x_shape[channel_axis]
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1 or channels % groups:
        raise ValueError(f"groups must be a positive divisor of the {channels} channels, got {groups!r}")
    return channels, int(groups)


def per_channel(value: np.ndarray | None, channels: int) -> np.ndarray | None:
    """Parameters per group as the per-channel ones they act as: each repeated over its group's channels."""
    return None if value is None else np.repeat(np.asarray(value, dtype=np.float64), channels // len(value))


def per_group(gradient: np.ndarray, groups: int) -> np.ndarray:
    """A per-channel gradient as parameters per group take it: summed over each group's channels."""
    return gradient.reshape(groups, -1).sum(axis=1)


def _check(x: object, groups: int, channel_axis: int, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    groups_of(x.shape, groups, channel_axis)
    return x


def _rows(a: np.ndarray, groups: int, channel_axis: int) -> np.ndarray:
    """``a`` as (N, groups, H): channels first, each group's channels and positions one row (a view where
    ``a`` is channels first and contiguous)."""
    a = np.moveaxis(a, channel_axis, 1)
    return a.reshape(a.shape[0], groups, a[0:1].size // groups)  # not -1: an input without samples has size 0


def _unrows(rows: np.ndarray, shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    rest = [size for axis, size in enumerate(shape) if axis not in (0, channel_axis % len(shape))]
    moved = (shape[0], shape[channel_axis], *rest)
    return np.moveaxis(rows.reshape(moved), 1, channel_axis)


def _per_channel(v: object | None, x: np.ndarray, channel_axis: int, name: str) -> np.ndarray | None:
    """A parameter of shape (C,), shaped to broadcast against ``x`` along its channel axis."""
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float64)
    channels = x.shape[channel_axis]
    if v.shape != (channels,):
        raise ValueError(f"{name} must have one value per channel, shape ({channels},), got {v.shape}")
    shape = [1] * x.ndim
    shape[channel_axis] = channels
    return v.reshape(shape)


def _channel_sum(a: np.ndarray, channel_axis: int) -> np.ndarray:
    return np.moveaxis(a, channel_axis, 0).reshape(a.shape[channel_axis], -1).sum(axis=1)


def _xhat(x: np.ndarray, eps: float, groups: int, channel_axis: int) -> np.ndarray:
    return _unrows(layer_norm(_rows(x, groups, channel_axis), eps=eps), x.shape, channel_axis)


def group_norm_statistics(x: np.ndarray, groups: int, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The mean and biased variance of each (sample, group), shape (N, groups)."""
    x = _check(x, groups, channel_axis)
    return layer_norm_statistics(_rows(x, groups, channel_axis))


def group_norm(x: np.ndarray, gamma: np.ndarray | None = None, beta: np.ndarray | None = None, eps: float = 1e-5,
               groups: int = 1, channel_axis: int = 1) -> np.ndarray:
    """``y`` in float64, of the shape of ``x``; gamma and beta (``None``: none) per channel, shape (C,)."""
    x = _check(x, groups, channel_axis)
    g, b = _per_channel(gamma, x, channel_axis, "gamma"), _per_channel(beta, x, channel_axis, "beta")
    y = _xhat(x, eps, groups, channel_axis)
    if g is not None:
        y *= g
    if b is not None:
        y += b
    return y


def group_norm_backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None = None, eps: float = 1e-5,
                        groups: int = 1, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of ``sum(y * dy)``; the parameters' gradients per channel (whether or not the
    layer has them: the caller drops what it lacks)."""
    x, dy = _check(x, groups, channel_axis), _check(dy, groups, channel_axis, "dy")
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
    g = _per_channel(gamma, x, channel_axis, "gamma")
    scaled = dy * g if g is not None else np.asarray(dy, dtype=np.float64)
    rows = _rows(x, groups, channel_axis)
    dx = _unrows(layer_norm_backward(_rows(scaled, groups, channel_axis), rows, eps=eps)[0], x.shape, channel_axis)
    xhat = _xhat(x, eps, groups, channel_axis)
    return dx, _channel_sum(dy * xhat, channel_axis), _channel_sum(np.asarray(dy, dtype=np.float64), channel_axis)


def group_norm_hvp(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float, vx: np.ndarray,
                   vgamma: np.ndarray | None = None, groups: int = 1, channel_axis: int = 1
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The derivative of ``(dx, dgamma, dbeta)`` along ``(vx, vgamma)``: ``(hvp_x, hvp_gamma, hvp_beta)`` (see
    the module docstring)."""
    x = _check(x, groups, channel_axis)
    dy, vx = _check(dy, groups, channel_axis, "dy"), _check(vx, groups, channel_axis, "vx")
    if dy.shape != x.shape or vx.shape != x.shape:
        raise ValueError(f"dy and vx must have the shape of x {x.shape}, got {dy.shape} and {vx.shape}")
    g, vg = _per_channel(gamma, x, channel_axis, "gamma"), _per_channel(vgamma, x, channel_axis, "vgamma")
    dy64 = np.asarray(dy, dtype=np.float64)
    rows = _rows(x, groups, channel_axis)
    as_rows = lambda a: _rows(a, groups, channel_axis)  # noqa: E731
    hx = layer_norm_hvp(as_rows(dy64 * g if g is not None else dy64), rows, None, eps, as_rows(vx))[0]
    if vg is not None:
        hx = hx + layer_norm_backward(as_rows(dy64 * vg), rows, eps=eps)[0]
    tangent = _unrows(layer_norm_jvp(rows, as_rows(vx), eps), x.shape, channel_axis)
    return (_unrows(hx, x.shape, channel_axis), _channel_sum(dy64 * tangent, channel_axis),
            np.zeros(x.shape[channel_axis]))
