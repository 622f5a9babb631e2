"""The GroupNorm half of the mutation self-test: a correct NumPy GroupNorm (the baseline) written as a framework
would write one, every step a method, and one subclass per bug class a real GroupNorm or InstanceNorm has had.

The baseline follows the reference's contract as ``torch.nn.GroupNorm`` does: float16/bfloat16 inputs are
computed with float32 arithmetic and returned in the input's dtype, float32 in float32, float64 in float64;
the scale and offset are held in float64, one per channel (what crosses the adapter protocol); statistics are
two-pass, per (sample, group of consecutive channels); bad input raises before anything changes. Work happens
in the input's own layout, each (sample, group) one row of a ``(N, G, M)`` view (:meth:`GroupNorm.rows`).

The baseline must pass every check of the suite without a single deviation; ``mutants.verdict`` fails the run
otherwise. Plug in the baseline and its mutants alone as any third party would (``tox -e mutants`` runs them
with the BatchNorm ones, through ``mutants.catalogue:IMPLEMENTATIONS``):

    pytest conformance --impl mutants.groupnorm:IMPLEMENTATIONS
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import State
from conformance.operators.groupnorm import GroupNormSpec

from .implementation import GroupNormImplementation

__all__ = ["IMPLEMENTATIONS", "MUTANTS", "GroupNorm"]


class GroupNorm:
    """A GroupNorm layer behind the adapter protocol (:class:`conformance.adapters.base.Layer`); an InstanceNorm
    is the same layer with one group per channel.

    Hooks, in the order a call meets them: construction (:meth:`initial_state`); input checks (:meth:`validate`,
    :meth:`validate_dy`); the dtype policy (:meth:`compute_dtype`, :meth:`output_dtype`); the grouping
    (:meth:`rows`, :meth:`unrows`); :meth:`statistics` (means by :meth:`group_mean` over
    :attr:`statistic_axes`), :meth:`normalize`; the parameters per channel (:meth:`per_channel`) and their
    gradients (:meth:`parameter_gradient`); gradients (:meth:`backward`) and second order
    (:meth:`hessian_vector_product` with :meth:`tangents`).
    """

    # Axes of the (N, G, M) rows that the statistics reduce over: each (sample, group) on its own.
    statistic_axes = (2,)

    def __init__(self, spec: GroupNormSpec) -> None:
        self.spec = spec
        state = self.initial_state(spec)
        self.gamma, self.beta = state.gamma, state.beta

    # -- construction ----------------------------------------------------------------------------
    def initial_state(self, spec: GroupNormSpec) -> State:
        """Scale 1 and offset 0, one per channel, where the layer has them."""
        return State(gamma=np.ones(spec.num_channels) if spec.affine else None,
                     beta=np.zeros(spec.num_channels) if spec.bias else None)

    # -- the adapter protocol --------------------------------------------------------------------
    def set_state(self, state: State) -> None:
        for name, value in state.assigned().items():
            setattr(self, name, np.array(value, dtype=np.float64))

    def get_state(self) -> State:
        return State(gamma=None if self.gamma is None else self.gamma.copy(),
                     beta=None if self.beta is None else self.beta.copy(), eps=self.spec.eps)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._forward(self.validate(x))[0]

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        self.validate_dy(dy, self.validate(x))
        y, xhat, r = self._forward(x)
        dyc = self._compute(dy, xhat.dtype)
        g = self.rows(dyc * self._broadcast(self.scale(), x, xhat.dtype))
        dx = self.unrows(self.backward(g, self.rows(xhat), r), x.shape)
        dgamma = None if self.gamma is None else self.parameter_gradient(dyc * xhat)
        dbeta = None if self.beta is None else self.parameter_gradient(dyc)
        return y, dx.astype(self.output_dtype(x.dtype)), dgamma, dbeta

    def double_backward(self, x: np.ndarray, dy: np.ndarray, vx: np.ndarray, vgamma, vbeta) -> tuple:
        x = self.validate(x)
        dtype = self.compute_dtype(x.dtype)
        xc, dyc, vxc = (self._compute(a, dtype) for a in (x, self.validate_dy(dy, x), self.validate_dy(vx, x)))
        rows = self.rows(xc)
        xhat, r = self.normalize(rows, *self.statistics(rows))
        g = self.rows(dyc * self._broadcast(self.scale(), x, dtype))
        dg = self.rows(dyc * self._broadcast(np.zeros(x.shape[self.spec.channel_axis]) if vgamma is None else vgamma,
                                             x, dtype))
        hx, t = self.hessian_vector_product(g, dg, xhat, r, self.rows(vxc))
        hx = self.unrows(hx, x.shape).astype(self.output_dtype(x.dtype))
        hgamma = None if self.gamma is None else self.parameter_gradient(dyc * self.unrows(t, x.shape))
        hbeta = None if self.beta is None else np.zeros_like(self.beta)
        return hx, hgamma, hbeta

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y, xhat, r)``: the output in the output dtype, ``xhat`` in the input's layout in the compute dtype,
        and ``r = 1 / sqrt(var + eps)`` per row."""
        xc = self._compute(x, self.compute_dtype(x.dtype))
        rows = self.rows(xc)
        xhat_rows, r = self.normalize(rows, *self.statistics(rows))
        xhat = self.unrows(xhat_rows, x.shape)
        y = xhat * self._broadcast(self.scale(), x, xc.dtype)
        if self.beta is not None:
            y = y + self._broadcast(self.per_channel(self.beta), x, xc.dtype)
        return y.astype(self.output_dtype(x.dtype)), xhat, r

    # -- input checks ----------------------------------------------------------------------------
    def validate(self, x: np.ndarray) -> np.ndarray:
        """``x`` itself, or an error naming what is wrong with it."""
        if not (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        spec = self.spec
        if x.ndim != spec.rank:
            raise ValueError(f"expected a rank {spec.rank} input, got shape {x.shape}")
        if x.shape[spec.channel_axis] != spec.num_channels:
            raise ValueError(f"expected {spec.num_channels} channels on axis {spec.channel_axis}, got {x.shape}")
        return x

    def validate_dy(self, dy: np.ndarray, x: np.ndarray) -> np.ndarray:
        """A cotangent (or tangent) of the input ``x``: floating, of its shape."""
        if not (dy.dtype.kind == "f" or dy.dtype.name == "bfloat16"):
            raise TypeError(f"dy must have a floating dtype, got {dy.dtype}")
        if dy.shape != x.shape:
            raise ValueError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
        return dy

    # -- numerics --------------------------------------------------------------------------------
    def compute_dtype(self, dtype: np.dtype) -> np.dtype:
        """float64 stays float64; float32 and narrower compute in float32."""
        return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def rows(self, a: np.ndarray) -> np.ndarray:
        """``a`` (the input's layout) as ``(N, G, M)``: each sample's group of consecutive channels one row."""
        moved = np.ascontiguousarray(np.moveaxis(a, self.spec.channel_axis, 1))
        return moved.reshape(a.shape[0], self.spec.groups, moved[0:1].size // self.spec.groups)  # -1: not for size 0

    def unrows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of :meth:`rows`, back to an input of ``shape``."""
        moved = list(shape)
        moved.insert(1, moved.pop(self.spec.channel_axis))
        return np.moveaxis(rows.reshape(moved), 1, self.spec.channel_axis)

    def group_mean(self, a: np.ndarray) -> np.ndarray:
        """The mean of rows over :attr:`statistic_axes`, kept as axes of one."""
        return a.mean(axis=self.statistic_axes, keepdims=True)

    def statistics(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and biased variance of each row, two-pass."""
        mean = self.group_mean(rows)
        return mean, self.group_mean((rows - mean) ** 2)

    def normalize(self, rows: np.ndarray, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``xhat`` and ``r = 1 / sqrt(var + eps)``."""
        r = 1 / np.sqrt(var + rows.dtype.type(self.spec.eps))
        return (rows - mean) * r, r

    def per_channel(self, parameter: np.ndarray) -> np.ndarray:
        """A held parameter as the one value per channel it multiplies or adds."""
        return parameter

    def scale(self) -> np.ndarray:
        """The scale per channel (ones without one)."""
        return np.ones(self.spec.num_channels) if self.gamma is None else self.per_channel(self.gamma)

    def parameter_gradient(self, a: np.ndarray) -> np.ndarray:
        """``a`` summed to one value per held parameter (per channel), in float64."""
        axis = self.spec.channel_axis % a.ndim
        return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).sum(axis=1, dtype=np.float64)

    def backward(self, g: np.ndarray, xhat: np.ndarray, r: np.ndarray) -> np.ndarray:
        """dx from ``g`` (the gradient of ``xhat``: dy times the scale), in rows."""
        mean = self.group_mean
        return r * (g - mean(g) - xhat * mean(g * xhat))

    def hessian_vector_product(self, g: np.ndarray, dg: np.ndarray, xhat: np.ndarray, r: np.ndarray,
                               vx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The derivative of :meth:`backward` along ``vx`` (through ``xhat`` and ``r``) and along the scale
        (``dg``: dy times its direction), in rows, and the tangent of ``xhat`` (hgamma's)."""
        mean = self.group_mean
        t, dr = self.tangents(r, xhat, vx)
        hx = (dr * (g - mean(g) - xhat * mean(g * xhat))
              + r * (dg - mean(dg) - xhat * mean(dg * xhat) - t * mean(g * xhat) - xhat * mean(g * t)))
        return hx, t

    def tangents(self, r: np.ndarray, xhat: np.ndarray, vx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The derivatives of ``xhat`` and of ``r`` along ``vx``, through the statistics."""
        xhat_vx = self.group_mean(xhat * vx)
        return r * (vx - self.group_mean(vx) - xhat * xhat_vx), -(r**2) * xhat_vx

    # -- layout ----------------------------------------------------------------------------------
    def _broadcast(self, v: np.ndarray, like: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Per-channel values shaped to broadcast along the channel axis of ``like``."""
        shape = [1] * like.ndim
        shape[self.spec.channel_axis] = -1
        return np.asarray(v, dtype=dtype).reshape(shape)

    @staticmethod
    def _compute(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """A copy in the compute dtype (the caller's array is never written)."""
        return a.astype(dtype, order="C")


# -- mutants: each overrides one hook and says, as class attributes, the bug, where it happened and the link --

class ChannelsLastGroupedAsChannelsFirst(GroupNorm):
    """A channels-last input ``(N, ..., C)`` reshaped into groups as if it were channels first, with no
    transpose: each group is a run of the sample's memory, mixing positions and channels (TensorFlow Addons'
    GroupNormalization reshaped ``[N, H, W, C]`` to ``[N, G, H, W, C // G]``; Keras-Group-Normalization #6)."""

    bug = "channels-last input grouped by memory order, as if channels first"
    origin = "TensorFlow Addons GroupNormalization (#751), titu1994/Keras-Group-Normalization (#6)"
    link = "https://github.com/tensorflow/addons/issues/751"

    def rows(self, a):
        return np.ascontiguousarray(a).reshape(a.shape[0], self.spec.groups, a[0:1].size // self.spec.groups)

    def unrows(self, rows, shape):
        return rows.reshape(shape)


class EpsOutsideSqrt(GroupNorm):
    """``(x - mean) / (std + eps)`` instead of ``/ sqrt(var + eps)``: an early PyTorch GroupNorm
    (taokong/group_normalization), its author answering the report that "the implementation is equivalent"."""

    bug = "eps added outside the square root"
    origin = "taokong/group_normalization (#1)"
    link = "https://github.com/taokong/group_normalization/issues/1"

    def normalize(self, rows, mean, var):
        r = 1 / (np.sqrt(var) + rows.dtype.type(self.spec.eps))
        return (rows - mean) * r, r


class UnbiasedVariance(GroupNorm):
    """The variance with Bessel's correction, ``torch.var``'s default: the hand-written GroupNorm of pytorch
    #111824 calls ``x.var(dim=[2, 3, 4])``; pytorch #22617 is the same confusion the other way round."""

    bug = "variance with Bessel's correction (n - 1)"
    origin = "hand-written GroupNorm with torch.var (pytorch #111824, #22617)"
    link = "https://github.com/pytorch/pytorch/issues/111824"

    def statistics(self, rows):
        mean, var = super().statistics(rows)
        n = rows.shape[2]
        return mean, var * n / max(n - 1, 1)


class HalfPrecisionAccumulation(GroupNorm):
    """float16/bfloat16 input reduced in its own precision: ExecuTorch's portable ``native_group_norm`` summed
    ``x`` and ``x**2`` in the input's type until PR #16727 moved the accumulation to float32."""

    bug = "float16/bfloat16 statistics accumulated in the input precision"
    origin = "ExecuTorch portable/optimized group_norm (PR #16727)"
    link = "https://github.com/pytorch/executorch/pull/16727"

    def compute_dtype(self, dtype):
        return np.dtype(dtype)


class ParametersPerGroup(GroupNorm):
    """One scale and one offset per group instead of per channel: ONNX GroupNormalization-18 as specified
    (onnx #5466), which opset 21 replaced (PR #5808) and deprecated; ONNX Runtime implemented it so. Its
    initial parameters have the wrong shape, and a per-channel state cannot be applied."""

    bug = "scale and offset held per group instead of per channel"
    origin = "ONNX GroupNormalization-18 (onnx #5466, fixed by opset 21 in PR #5808)"
    link = "https://github.com/onnx/onnx/issues/5466"

    def initial_state(self, spec):
        return State(gamma=np.ones(spec.groups) if spec.affine else None,
                     beta=np.zeros(spec.groups) if spec.bias else None)

    def per_channel(self, parameter):
        # A per-channel state assigned to it repeats into C * C / G values, which fail to broadcast.
        return np.repeat(parameter, self.spec.num_channels // self.spec.groups)

    def parameter_gradient(self, a):
        return super().parameter_gradient(a).reshape(self.spec.groups, -1).sum(axis=1)


class StatisticsAcrossTheBatch(GroupNorm):
    """The statistics reduced over the batch axis too, shared by every sample: tract's ONNX InstanceNorm until
    PR #2863 ("with a batch of more than one the mean and variance were shared across samples")."""

    bug = "statistics shared across the samples of a batch"
    origin = "sonos/tract ONNX InstanceNormalization (PR #2863)"
    link = "https://github.com/sonos/tract/pull/2863"
    statistic_axes = (0, 2)


MUTANTS: dict[str, tuple[type[GroupNorm], str]] = {
    "groupnorm.channels_last_grouped_as_channels_first": (ChannelsLastGroupedAsChannelsFirst, "torch_groupnorm"),
    "groupnorm.eps_outside_sqrt": (EpsOutsideSqrt, "torch_groupnorm"),
    "groupnorm.unbiased_variance": (UnbiasedVariance, "torch_groupnorm"),
    "groupnorm.half_precision_accumulation": (HalfPrecisionAccumulation, "torch_groupnorm"),
    "groupnorm.parameters_per_group": (ParametersPerGroup, "torch_groupnorm"),
    "instancenorm.statistics_across_the_batch": (StatisticsAcrossTheBatch, "torch_instancenorm"),
}

IMPLEMENTATIONS = [GroupNormImplementation(GroupNorm, "torch_groupnorm"),
                   GroupNormImplementation(GroupNorm, "torch_instancenorm")] + [
    GroupNormImplementation(layer, convention, name) for name, (layer, convention) in MUTANTS.items()
]
